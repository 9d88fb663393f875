//! One module per resource kind, each a pure `render` and a `reconcile` that
//! applies it through the shared Swarm layer.

pub mod common;
pub mod redis;
pub mod stack;
pub mod volume;
