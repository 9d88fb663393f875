//! RedisSentinelGroup: Redis instances replicated from one master, and
//! the Sentinels that watch them and fail over.

mod fast_failover;
pub mod observe;
mod passwords;
pub mod reconcile;
pub mod render;
pub mod report;
mod sentinels;

pub use reconcile::RedisGroups;

/// The kind's name, as stores, events and credentials key it.
const KIND: &str = <haswarm_crds::RedisSentinelGroupSpec as haswarm_crds::Kind>::KIND;
