//! RedisSentinelGroup: Redis data instances (one master, the rest replicas)
//! watched by Redis Sentinels that fail over, all sharing one password.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Network, Placement, Resources, SecretRef, Storage};
use crate::meta::{CommonStatus, ObjectMeta};
use crate::quantity::{ByteQuantity, Duration, ScalarString};
use crate::validate::{self, Catalog, FieldPath, Report};
use crate::{defaults, Kind};

/// Desired state of a Redis master/replica group with Sentinel failover.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisSentinelGroupSpec {
    /// Redis data instances (1 to 9): one master and `instances - 1` replicas,
    /// each its own Swarm service `<name>-redis-<i>`, pinned to a node. With 1
    /// there is nothing to fail over to.
    #[serde(default = "defaults::redis_instances")]
    #[schemars(range(min = 1, max = 9))]
    pub instances: u8,
    /// Image of the data instances and the sentinels. The default,
    /// `haswarm/redis:bookworm`, is built from Debian's packages (Redis 7.0)
    /// by `tests/testbed/prepare.sh`: load it on every node, or push it to
    /// your registry and name it here. Another image needs `redis-server`,
    /// `redis-sentinel` and `redis-cli` 7.0 or newer (older sentinels read
    /// replicas every 10 s, not every second), and `sh` with coreutils,
    /// `grep`, `sed`, `awk` and `hostname`; without `bash` and `nft` its
    /// instances run unfenced (the official `redis` images).
    #[serde(default = "defaults::redis_image")]
    pub image: String,
    /// The name the sentinels monitor the master under, which applications ask
    /// them for (`REDIS_SENTINEL_SERVICE_NAME`), e.g. `dify-master-group`.
    /// Defaults to the resource name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_group_name: Option<String>,
    /// The sentinels: how many, quorum, and failover timing.
    #[serde(default)]
    pub sentinels: SentinelSettings,
    /// Replicas that must be in sync for the master to take a write: it
    /// refuses writes (`NOREPLICAS`) unless this many replicas acknowledged
    /// its stream within the last `sentinels.downAfter` less a second (at
    /// least 1 s). Redis's `min-replicas-to-write` and `min-replicas-max-lag`.
    ///
    /// This is the fence for a master cut off from its replicas: one whose
    /// node was lost, then comes back after the sentinels promoted another,
    /// refuses writes the new master would never see, instead of taking
    /// them until the sentinels demote it. The price: with fewer replicas in
    /// sync than this, the master takes no writes.
    ///
    /// Defaults to 1 with 3 or more instances (a replica can be down and
    /// writes go on) and 0 with fewer (the only replica's restart would stop
    /// every write). At most `instances - 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas_to_write: Option<u8>,
    /// Existing Swarm secret holding the password. Left out, a password is
    /// generated once. The same password is used for the default user of
    /// every instance and sentinel, `masterauth` and `sentinel auth-pass`.
    /// Pointing it at another secret rotates the password without a wrong
    /// one anywhere (the members accept both, then use the new, then forget
    /// the old).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretRef>,
    /// Durability of each data instance.
    #[serde(default)]
    pub persistence: Persistence,
    /// Where each data instance keeps its data.
    #[serde(default)]
    pub storage: Storage,
    /// Most memory Redis uses for data (`maxmemory`), e.g. `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<ByteQuantity>,
    /// Further `redis.conf` directives, e.g. `maxmemory-policy: allkeys-lru`.
    /// Directives haswarm manages (password, replication, ports, paths,
    /// persistence) are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, ScalarString>,
    /// Which nodes may run data instances and sentinels.
    #[serde(default)]
    pub placement: Placement,
    /// CPU and memory of each data instance.
    #[serde(default)]
    pub resources: Resources,
    /// The overlay network applications join to reach the group.
    #[serde(default)]
    pub network: Network,
}

/// The sentinels that watch the master and elect a new one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SentinelSettings {
    /// Number of sentinels: odd and at least 3, so a majority can authorise a
    /// failover and a partition cannot produce two.
    #[serde(default = "defaults::sentinel_count")]
    #[schemars(range(min = 3, max = 9))]
    pub count: u8,
    /// Sentinels that must agree the master is down before a failover starts.
    /// Defaults to a majority (`count/2 + 1`); at most `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u8>,
    /// How long the master must be unreachable before a sentinel considers it
    /// down (`down-after-milliseconds`).
    #[serde(default = "defaults::down_after")]
    pub down_after: Duration,
    /// Failover timeout (`failover-timeout`).
    #[serde(default = "defaults::failover_timeout")]
    pub failover_timeout: Duration,
    /// Replicas resynchronised with a new master at the same time (`parallel-syncs`).
    #[serde(default = "defaults::parallel_syncs")]
    pub parallel_syncs: u8,
    /// Fail over without waiting for `downAfter` when the master's container
    /// is proven dead: its own node's engine reports it ended and no new one
    /// runs yet. haswarm then asks one sentinel, not in TILT, for `SENTINEL
    /// FAILOVER`, but only while the sentinels it reads neither flag the
    /// master down nor fail it over yet (their own failover is not raced),
    /// none was asked for this master already, and every replica Sentinel
    /// could promote holds every write any replica received. A master on a
    /// node that does not answer is left to the sentinels.
    #[serde(default = "defaults::yes")]
    pub fast_failover: bool,
    /// CPU and memory of each sentinel.
    #[serde(default)]
    pub resources: Resources,
}

impl Default for SentinelSettings {
    fn default() -> Self {
        Self {
            count: defaults::sentinel_count(),
            quorum: None,
            down_after: defaults::down_after(),
            failover_timeout: defaults::failover_timeout(),
            parallel_syncs: defaults::parallel_syncs(),
            fast_failover: true,
            resources: Resources::default(),
        }
    }
}

/// Which persistence Redis uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PersistenceMode {
    /// Append-only file: every write is logged (default).
    #[default]
    Aof,
    /// Point-in-time snapshots on the `rdbSave` schedule.
    Rdb,
    /// Both AOF and RDB snapshots.
    AofAndRdb,
    /// No persistence: a restarted instance starts empty and resyncs from the master.
    None,
}

/// How often the AOF is fsynced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AppendFsync {
    /// Once a second: at most a second of writes lost on power failure (default).
    #[default]
    EverySec,
    /// On every write: slowest, safest.
    Always,
    /// Left to the OS.
    No,
}

/// An RDB snapshot rule: save after `seconds` if at least `changes` keys changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SaveRule {
    /// Seconds since the last save.
    pub seconds: u32,
    /// Keys changed since the last save.
    pub changes: u32,
}

/// Durability settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Persistence {
    /// `Aof` (default), `Rdb`, `AofAndRdb` or `None`.
    #[serde(default)]
    pub mode: PersistenceMode,
    /// AOF fsync policy: `EverySec` (default), `Always`, `No`.
    #[serde(default)]
    pub append_fsync: AppendFsync,
    /// RDB snapshot schedule; empty means Redis's defaults (3600/1, 300/100, 60/10000).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rdb_save: Vec<SaveRule>,
}

/// A replica as the master reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisReplicaStatus {
    /// Instance (service) name.
    pub name: String,
    /// Whether the replication link to the master is up.
    pub link_up: bool,
    /// Bytes behind the master's replication offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
}

pub use crate::common::ROTATE_PASSWORD_ANNOTATION;

/// Where a password rotation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RotationPhase {
    /// Every member learns to accept the new password besides the old one.
    Accept,
    /// Every member uses the new password (both still accepted).
    Use,
    /// Every member forgets the old password.
    Forget,
}

/// A password rotation in progress, or the last one requested.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordRotation {
    /// The value of the `haswarm.io/rotate-password` annotation last acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    /// The phase of the rotation in progress; absent when none is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RotationPhase>,
    /// When `spec.passwordSecret` changed: the secret the group moves away from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_secret: Option<String>,
}

/// Observed state of a RedisSentinelGroup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisSentinelGroupStatus {
    /// Generation, conditions and owned objects.
    #[serde(flatten)]
    pub common: CommonStatus,
    /// The master as the sentinels report it (its service name), while it
    /// answers: absent while they flag it down or cannot reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// The last master, while the sentinels flag it down (or cannot reach
    /// it) and no other has taken over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_master: Option<String>,
    /// Each replica's link state and lag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<RedisReplicaStatus>,
    /// Sentinels that answered at the last check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinels_seen: Option<u8>,
    /// Name of the Swarm secret holding the password (mount it as a file; the value is never shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<String>,
    /// The overlay network applications join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Password rotation (generated passwords only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_rotation: Option<PasswordRotation>,
    /// Data instances that run but do not replicate from the master, and
    /// since when haswarm has seen them so: one still detached 30 seconds
    /// later is restarted, and its start script asks the sentinels for the
    /// master.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub detached_since: BTreeMap<String, chrono::DateTime<chrono::Utc>>,
    /// The fast failover haswarm asked for (see `spec.sentinels.fastFailover`),
    /// kept until the sentinels follow another master or twice the failover
    /// timeout has passed: none is asked again meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_failover: Option<FastFailover>,
}

/// A fast failover haswarm asked of a sentinel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FastFailover {
    /// The master whose container was proven dead.
    pub master: String,
    /// The sentinel asked.
    pub sentinel: String,
    /// When.
    pub asked: chrono::DateTime<chrono::Utc>,
}

/// Directives haswarm renders itself; set through other fields or not at all.
const MANAGED_DIRECTIVES: &[&str] = &[
    "port",
    "bind",
    "dir",
    "requirepass",
    "masterauth",
    "masteruser",
    "replicaof",
    "slaveof",
    "appendonly",
    "appendfsync",
    "save",
    "maxmemory",
    "protected-mode",
    "daemonize",
    "include",
    "rename-command",
    "replica-announce-ip",
    "replica-announce-port",
    "aclfile",
    "user",
    "min-replicas-to-write",
    "min-replicas-max-lag",
    "min-slaves-to-write",
    "min-slaves-max-lag",
];

impl RedisSentinelGroupSpec {
    /// The master group name (after defaults it is always set).
    pub fn master_group(&self, meta: &ObjectMeta) -> String {
        self.master_group_name
            .clone()
            .unwrap_or_else(|| defaults::master_group_name(meta))
    }

    /// Replicas in sync needed for a write (after defaults it is always set).
    pub fn min_replicas_to_write(&self) -> u8 {
        self.min_replicas_to_write
            .unwrap_or_else(|| defaults::min_replicas_to_write(self.instances))
    }

    /// The quorum (after defaults it is always set).
    pub fn quorum(&self) -> u8 {
        self.sentinels
            .quorum
            .unwrap_or_else(|| defaults::quorum_for(self.sentinels.count))
    }
}

impl Kind for RedisSentinelGroupSpec {
    const KIND: &'static str = "RedisSentinelGroup";
    const PLURAL: &'static str = "redissentinelgroups";
    const SHORT_NAMES: &'static [&'static str] = &["rsg"];
    type Status = RedisSentinelGroupStatus;

    fn apply_defaults(&mut self, meta: &ObjectMeta) {
        if self.master_group_name.is_none() {
            self.master_group_name = Some(defaults::master_group_name(meta));
        }
        if self.sentinels.quorum.is_none() {
            self.sentinels.quorum = Some(defaults::quorum_for(self.sentinels.count));
        }
        if self.min_replicas_to_write.is_none() {
            self.min_replicas_to_write = Some(defaults::min_replicas_to_write(self.instances));
        }
    }

    fn validate(&self, meta: &ObjectMeta, report: &mut Report, catalog: &dyn Catalog) {
        let spec = FieldPath::root().key("spec");
        self.validate_instances(&spec, report);
        self.validate_master_group(&spec, meta, report);
        self.sentinels.validate(&spec.key("sentinels"), report);
        if let Some(s) = &self.password_secret {
            s.validate(&spec.key("passwordSecret"), report);
        }
        self.validate_config(&spec, report);
        self.storage.validate(&spec.key("storage"), report, catalog);
        self.placement.validate(&spec.key("placement"), report);
        self.resources.validate(&spec.key("resources"), report);
        self.validate_max_memory(&spec, report);
    }
}

// The checks of each part of the spec, in the order `validate` runs them:
// reports list errors in that order, so moving a check changes the output.

impl RedisSentinelGroupSpec {
    fn validate_instances(&self, spec: &FieldPath, report: &mut Report) {
        report.check(
            (1..=9).contains(&self.instances),
            || spec.key("instances"),
            "instances-range",
            || {
                format!(
                    "{} instances: a group has 1 to 9 data instances (1 master + replicas)",
                    self.instances
                )
            },
        );
        validate::check_image(report, spec.key("image"), &self.image);
        if let Some(n) = self.min_replicas_to_write {
            report.check(
                n < self.instances.max(1),
                || spec.key("minReplicasToWrite"),
                "min-replicas-below-instances",
                || format!("minReplicasToWrite {n} with {} instances: the master has at most {} replicas, so it would refuse every write", self.instances, self.instances.saturating_sub(1)),
            );
        }
    }

    fn validate_master_group(&self, spec: &FieldPath, meta: &ObjectMeta, report: &mut Report) {
        let group = self.master_group(meta);
        report.check(
            !group.is_empty()
                && group.len() <= 64
                && group
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
            || spec.key("masterGroupName"),
            "master-group-name",
            || format!("{group:?} cannot be a sentinel master name: 1-64 letters, digits, '-', '_' or '.' (it is written unquoted into sentinel.conf)"),
        );
    }

    /// Persistence rules and free-form directives, both written into redis.conf.
    fn validate_config(&self, spec: &FieldPath, report: &mut Report) {
        for (i, r) in self.persistence.rdb_save.iter().enumerate() {
            report.check(
                r.seconds > 0 && r.changes > 0,
                || spec.key("persistence").key("rdbSave").index(i),
                "save-rule-positive",
                || "seconds and changes must both be above 0".into(),
            );
        }
        for key in self.config.keys() {
            report.check(
                !MANAGED_DIRECTIVES.contains(&key.to_ascii_lowercase().as_str()),
                || spec.key("config").key(key),
                "directive-managed",
                || format!("{key} is managed by haswarm (password, replication, ports, paths and persistence come from their own fields); remove it"),
            );
        }
    }

    fn validate_max_memory(&self, spec: &FieldPath, report: &mut Report) {
        if let (Some(max), Some(limit)) = (&self.max_memory, &self.resources.limits.memory) {
            report.check(
                max.bytes() < limit.bytes(),
                || spec.key("maxMemory"),
                "maxmemory-below-limit",
                || format!("maxMemory {max} must stay below the memory limit {limit}: Redis needs headroom for buffers and forks, or the kernel kills it"),
            );
        }
    }
}

impl SentinelSettings {
    fn validate(&self, sp: &FieldPath, report: &mut Report) {
        let count = self.count;
        report.check(
            count >= 3,
            || sp.key("count"),
            "sentinels-minimum",
            || format!("{count} sentinels: at least 3 are needed so that one can fail and a majority still agrees on a failover"),
        );
        report.check(
            count % 2 == 1,
            || sp.key("count"),
            "sentinels-odd",
            || format!("{count} sentinels is even: use an odd number (3, 5, 7) so a partition cannot split them into two equal halves that each lack a majority"),
        );
        report.check(
            count <= 9,
            || sp.key("count"),
            "sentinels-maximum",
            || format!("{count} sentinels: at most 9"),
        );
        if let Some(q) = self.quorum {
            report.check(
                q >= 1 && q <= count,
                || sp.key("quorum"),
                "quorum-within-sentinels",
                || format!("quorum {q} with {count} sentinels: the quorum must be between 1 and the sentinel count, or no failover could ever be agreed"),
            );
        }
        self.validate_timing(sp, report);
        self.resources.validate(&sp.key("resources"), report);
    }

    fn validate_timing(&self, sp: &FieldPath, report: &mut Report) {
        report.check(
            self.down_after.as_millis() >= 100,
            || sp.key("downAfter"),
            "down-after-minimum",
            || {
                format!(
                    "downAfter {} is too short: below 100ms every network hiccup causes a failover",
                    self.down_after
                )
            },
        );
        report.check(
            self.failover_timeout.as_millis() > self.down_after.as_millis(),
            || sp.key("failoverTimeout"),
            "failover-timeout-above-down-after",
            || {
                format!(
                    "failoverTimeout {} must be longer than downAfter {}",
                    self.failover_timeout, self.down_after
                )
            },
        );
        report.check(
            self.parallel_syncs >= 1,
            || sp.key("parallelSyncs"),
            "parallel-syncs-minimum",
            || "parallelSyncs must be at least 1".into(),
        );
    }
}
