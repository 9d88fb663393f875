//! One module per resource kind, each a pure `render` and a `reconcile` that
//! applies it through the shared Swarm layer; the stateful kinds share one
//! outline (`outline`) and executor (`converge`).

pub mod common;
pub mod contents;
pub mod converge;
pub mod fence;
pub mod gitops;
pub mod outline;
pub mod postgres;
pub mod reclaim;
pub mod redis;
pub mod rollout;
pub mod slots;
pub mod stack;
pub mod status;
pub mod volume;
pub mod wait;
