//! haswarm's API: the resource kinds users declare, their defaults and
//! validation, their JSON Schemas, and manifest parsing with source positions.
//!
//! This crate does no I/O: callers hand it text and get typed, defaulted,
//! validated resources or errors that name file, line, column and field path.

pub mod common;
pub mod defaults;
pub mod gitops;
pub mod manifest;
pub mod meta;
pub mod name;
pub mod postgres;
pub mod quantity;
pub mod redis;
pub mod schema;
pub mod selector;
pub mod validate;
pub mod volume;

mod resource;

pub use gitops::GitSourceSpec;
pub use meta::{Condition, ConditionStatus, Event, EventType, ObjectMeta};
pub use name::Name;
pub use postgres::PostgresClusterSpec;
pub use redis::RedisSentinelGroupSpec;
pub use resource::{AnyResource, Kind, KindInfo, Resource, KINDS};
pub use volume::SharedVolumeSpec;

/// The API group and version of every kind in this crate.
pub const API_VERSION: &str = "haswarm.io/v1alpha1";

/// A PostgreSQL cluster run by Patroni.
pub type PostgresCluster = Resource<PostgresClusterSpec>;
/// Redis master/replicas with Sentinel failover.
pub type RedisSentinelGroup = Resource<RedisSentinelGroupSpec>;
/// A volume available on every eligible node.
pub type SharedVolume = Resource<SharedVolumeSpec>;
/// A git folder of manifests applied continuously.
pub type GitSource = Resource<GitSourceSpec>;

/// Implements [`meta::HasCommon`] for statuses whose common part is their
/// field `common`.
macro_rules! has_common {
    ($($status:ty),+) => {$(
        impl meta::HasCommon for $status {
            fn common(&self) -> &meta::CommonStatus {
                &self.common
            }
            fn common_mut(&mut self) -> &mut meta::CommonStatus {
                &mut self.common
            }
        }
    )+};
}

has_common!(
    postgres::PostgresClusterStatus,
    redis::RedisSentinelGroupStatus,
    volume::SharedVolumeStatus,
    gitops::GitSourceStatus
);
