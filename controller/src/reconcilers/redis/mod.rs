//! RedisSentinelGroup: Redis instances replicated from one master, and
//! the Sentinels that watch them and fail over.

pub mod observe;
pub mod reconcile;
pub mod render;
pub mod report;

pub use reconcile::RedisGroups;
