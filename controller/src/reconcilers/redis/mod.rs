//! RedisSentinelGroup.

pub mod observe;
pub mod reconcile;
pub mod render;

pub use reconcile::RedisGroups;
