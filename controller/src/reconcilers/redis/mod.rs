//! RedisSentinelGroup.

pub mod render;
