//! Every default value, in one place. Serde calls the functions here for
//! fields a manifest leaves out; [`crate::Kind::apply_defaults`] fills the few
//! defaults that depend on other fields (quorum from the sentinel count, the
//! master group name from the resource name). After both, `get -o yaml` shows
//! every value the controller acts on.

/// Docker refuses memory limits below 6 MiB.
pub const MIN_MEMORY_LIMIT_BYTES: u64 = 6 << 20;

pub(crate) fn volume_driver() -> String {
    "local".into()
}

// PostgresCluster
pub(crate) fn pg_instances() -> u8 {
    3
}
pub(crate) fn pg_version() -> u8 {
    15
}
/// haswarm's PostgreSQL image (see [`pg_image`]).
pub const PG_IMAGE: &str = "haswarm/postgres:15";
/// haswarm's Redis image (see [`redis_image`]).
pub const REDIS_IMAGE: &str = "haswarm/redis:bookworm";
/// The default images haswarm builds itself (`tests/testbed/prepare.sh`)
/// rather than pulls: no registry serves them.
pub const OWN_IMAGES: [&str; 2] = [PG_IMAGE, REDIS_IMAGE];

/// No official image carries Patroni; haswarm's image holds every part of a
/// cluster (PostgreSQL 15, Patroni, etcd, HAProxy) from Debian's packages,
/// built by `tests/testbed/build-images.sh`. Its etcd and HAProxy are the
/// defaults of the other parts too, so one image runs a whole cluster.
pub(crate) fn pg_image() -> String {
    PG_IMAGE.into()
}
pub(crate) fn patroni_ttl() -> u32 {
    30
}
pub(crate) fn patroni_loop_wait() -> u32 {
    10
}
pub(crate) fn patroni_retry_timeout() -> u32 {
    10
}
pub(crate) fn patroni_maximum_lag_on_failover() -> u64 {
    1 << 20
}
pub(crate) fn etcd_members() -> u8 {
    3
}
/// Not the official `quay.io/coreos/etcd`: since v3.5.7 it has no shell, and
/// membership changes run `etcdctl` scripts in the etcd image.
pub(crate) fn etcd_image() -> String {
    pg_image()
}
pub(crate) fn router_replicas() -> u8 {
    2
}
pub(crate) fn router_image() -> String {
    pg_image()
}
pub(crate) fn pg_database() -> String {
    "app".into()
}
pub(crate) fn pg_owner() -> String {
    "app".into()
}

// RedisSentinelGroup
pub(crate) fn redis_instances() -> u8 {
    3
}
/// haswarm's image, built by `tests/testbed/build-images.sh` from Debian's
/// packages (Redis 7.0), like PostgreSQL's: it carries the fence's bash and
/// nft, which the official images lack (they run unfenced).
pub(crate) fn redis_image() -> String {
    REDIS_IMAGE.into()
}
/// The sentinel master group is named after the resource.
pub(crate) fn master_group_name(meta: &crate::meta::ObjectMeta) -> String {
    meta.name.to_string()
}
/// One replica in sync when a group has two to spare: a master cut off
/// from its replicas refuses writes, and one replica down stops nothing.
pub(crate) fn min_replicas_to_write(instances: u8) -> u8 {
    u8::from(instances >= 3)
}
pub(crate) fn sentinel_count() -> u8 {
    3
}
pub(crate) fn down_after() -> crate::quantity::Duration {
    crate::quantity::Duration::parse("5s").unwrap_or_else(|_| unreachable!("constant parses"))
}
pub(crate) fn failover_timeout() -> crate::quantity::Duration {
    crate::quantity::Duration::parse("60s").unwrap_or_else(|_| unreachable!("constant parses"))
}
pub(crate) fn parallel_syncs() -> u8 {
    1
}

/// Majority of `count` sentinels: the smallest quorum that cannot be met by two
/// disjoint halves of a partition.
pub(crate) fn quorum_for(count: u8) -> u8 {
    count / 2 + 1
}

// SharedVolume
pub(crate) fn nfs_version() -> String {
    "4".into()
}

pub(crate) fn yes() -> bool {
    true
}

// GitSource
pub(crate) fn git_ref() -> crate::gitops::GitRef {
    crate::gitops::GitRef::Branch("main".into())
}
pub(crate) fn git_path() -> String {
    ".".into()
}
pub(crate) fn git_interval() -> crate::quantity::Duration {
    crate::quantity::Duration::parse("1m").unwrap_or_else(|_| unreachable!("constant parses"))
}
