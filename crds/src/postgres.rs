//! PostgresCluster: PostgreSQL run by Patroni, an etcd cluster as Patroni's
//! consensus store, and an HAProxy router giving read-write and read-only
//! endpoints.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Network, Placement, Resources, SecretRef, Storage};
use crate::meta::ObjectMeta;
use crate::quantity::ScalarString;
use crate::validate::{self, Catalog, FieldPath, Report};
use crate::{defaults, Kind};

mod backup;
mod status;
pub use backup::*;
pub use status::*;

/// Desired state of a highly available PostgreSQL cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresClusterSpec {
    /// Number of PostgreSQL instances (1 to 9): one primary, the rest streaming
    /// replicas. Each runs as its own Swarm service `<name>-pg-<i>`, pinned to a node.
    #[serde(default = "defaults::pg_instances")]
    #[schemars(range(min = 1, max = 9))]
    pub instances: u8,
    /// PostgreSQL server settings and image.
    #[serde(default)]
    pub postgres: PostgresSettings,
    /// Patroni, which runs PostgreSQL on each instance and handles failover.
    #[serde(default)]
    pub patroni: PatroniSettings,
    /// The etcd cluster Patroni keeps its leader key in: managed by haswarm, or external.
    #[serde(default)]
    pub etcd: EtcdSettings,
    /// The HAProxy router that gives `<name>-rw` (primary) and `<name>-ro` (replicas) endpoints.
    #[serde(default)]
    pub router: RouterSettings,
    /// Where each instance keeps its data.
    #[serde(default)]
    pub storage: Storage,
    /// Which nodes may run instances.
    #[serde(default)]
    pub placement: Placement,
    /// CPU and memory of each PostgreSQL instance.
    #[serde(default)]
    pub resources: Resources,
    /// The database and users created when the cluster is first initialised.
    #[serde(default)]
    pub bootstrap: Bootstrap,
    /// Passwords. Each one left out is generated once and kept in a Swarm secret.
    #[serde(default)]
    pub credentials: PostgresCredentials,
    /// The overlay network applications join to reach the cluster.
    #[serde(default)]
    pub network: Network,
    /// Backups and continuous WAL archiving (pgBackRest). Left out, the
    /// cluster archives nothing and takes no backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSettings>,
    /// Instance index (0-based) that should be primary. Changing it performs a
    /// switchover; leave it out to let Patroni choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_primary: Option<u8>,
}

/// PostgreSQL server settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresSettings {
    /// Major version of PostgreSQL (13 to 17). Must match the image.
    #[serde(default = "defaults::pg_version")]
    #[schemars(range(min = 13, max = 17))]
    pub version: u8,
    /// Image holding `postgres` and `patroni` 3.0.3 or newer (the image's
    /// `/usr/lib/postgresql/<version>/bin` is used), plus `/bin/sh`, `psql`
    /// and `python3` for the one-shot jobs that set passwords. The default,
    /// `haswarm/postgres:15`, is built from Debian's packages by
    /// `tests/testbed/build-images.sh` (no public image carries Patroni),
    /// with Patroni 3.0.4 from PyPI: bookworm's 3.0.2 lets a leader that was
    /// frozen past its ttl take the leader key back from its successor. It
    /// holds etcd and HAProxy too, and is the default of those parts.
    #[serde(default = "defaults::pg_image")]
    pub image: String,
    /// `postgresql.conf` parameters, e.g. `max_connections: 200`. Settings that
    /// haswarm or Patroni manage (ports, paths, replication wiring) are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, ScalarString>,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            version: defaults::pg_version(),
            image: defaults::pg_image(),
            parameters: BTreeMap::new(),
        }
    }
}

/// Patroni's synchronous replication mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SynchronousMode {
    /// Asynchronous replication: fastest commits; a failover may lose the last
    /// commits the primary acknowledged.
    #[default]
    Off,
    /// A commit waits for one synchronous standby while one is available; no
    /// acknowledged commit is lost on failover.
    On,
    /// As `On`, and writes stop when no synchronous standby is available.
    Strict,
}

/// Patroni's timing and replication settings (Patroni's own names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatroniSettings {
    /// Seconds the leader key lives in etcd without renewal; a dead leader is
    /// replaced after at most this long. Must be at least `loopWait + 2*retryTimeout`.
    #[serde(default = "defaults::patroni_ttl")]
    #[schemars(range(min = 10, max = 3600))]
    pub ttl: u32,
    /// Seconds between Patroni's checks of the cluster.
    #[serde(default = "defaults::patroni_loop_wait")]
    #[schemars(range(min = 1, max = 600))]
    pub loop_wait: u32,
    /// Seconds Patroni retries etcd and PostgreSQL operations before demoting the leader.
    #[serde(default = "defaults::patroni_retry_timeout")]
    #[schemars(range(min = 1, max = 600))]
    pub retry_timeout: u32,
    /// Synchronous replication: `Off` (default), `On` or `Strict`.
    #[serde(default)]
    pub synchronous_mode: SynchronousMode,
    /// Bytes a replica may lag and still be promoted on failover.
    #[serde(default = "defaults::patroni_maximum_lag_on_failover")]
    pub maximum_lag_on_failover: u64,
    /// Fail over without waiting for `ttl` when the leader's container is
    /// proven dead: its own node's engine reports it ended and no new one
    /// runs yet. haswarm then releases the leader key in the managed etcd so
    /// a replica takes over at once. A leader on a node that does not answer
    /// is never released: the TTL decides. Needs the managed etcd.
    #[serde(default = "defaults::yes")]
    pub fast_failover: bool,
}

impl Default for PatroniSettings {
    fn default() -> Self {
        Self {
            ttl: defaults::patroni_ttl(),
            loop_wait: defaults::patroni_loop_wait(),
            retry_timeout: defaults::patroni_retry_timeout(),
            synchronous_mode: SynchronousMode::Off,
            maximum_lag_on_failover: defaults::patroni_maximum_lag_on_failover(),
            fast_failover: true,
        }
    }
}

/// The etcd cluster Patroni uses. Managed (haswarm runs `members` etcd
/// services) unless `endpoints` lists an existing cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdSettings {
    /// Members of the managed etcd cluster: 1, 3, 5 or 7 (odd, so a majority
    /// survives a partition). 1 has no fault tolerance. A later change is
    /// made one member at a time: a new member joins as a learner and
    /// votes once it has caught up; the highest member leaves first.
    #[serde(default = "defaults::etcd_members")]
    pub members: u8,
    /// Image of the managed etcd members: `etcd`, `etcdctl` and `/bin/sh`
    /// (membership changes run `etcdctl` scripts in it), and `python3` to
    /// relay the controller's calls to Patroni when no instance runs on the
    /// controller's node. The official `quay.io/coreos/etcd` images since
    /// v3.5.7 have no shell: with them a membership change fails (event
    /// `EtcdMembershipFailed`) and nothing relays.
    #[serde(default = "defaults::etcd_image")]
    pub image: String,
    /// Client URLs of an external etcd cluster (`http://host:2379`). When set,
    /// haswarm runs no etcd of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// Where each managed member keeps its data. Its `reclaimPolicy` is not
    /// read: `spec.storage.reclaimPolicy` decides for every volume of the
    /// cluster, etcd's included.
    #[serde(default)]
    pub storage: Storage,
    /// CPU and memory of each managed member.
    #[serde(default)]
    pub resources: Resources,
}

impl Default for EtcdSettings {
    fn default() -> Self {
        Self {
            members: defaults::etcd_members(),
            image: defaults::etcd_image(),
            endpoints: Vec::new(),
            storage: Storage::default(),
            resources: Resources::default(),
        }
    }
}

/// The HAProxy router in front of the instances.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouterSettings {
    /// Router tasks (0 to 9); 2 survive the loss of one node. 0 means no router:
    /// applications then follow the primary through Patroni themselves.
    #[serde(default = "defaults::router_replicas")]
    #[schemars(range(max = 9))]
    pub replicas: u8,
    /// Image holding `haproxy` on the `PATH` (`haproxy:2.8` works as well as
    /// the default).
    #[serde(default = "defaults::router_image")]
    pub image: String,
    /// CPU and memory of each router task.
    #[serde(default)]
    pub resources: Resources,
}

impl Default for RouterSettings {
    fn default() -> Self {
        Self {
            replicas: defaults::router_replicas(),
            image: defaults::router_image(),
            resources: Resources::default(),
        }
    }
}

/// A further role, created when it appears in `bootstrap.users`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapUser {
    /// Role name (a PostgreSQL identifier: lowercase letters, digits, '_').
    pub name: String,
    /// Role attributes, e.g. `CREATEDB`, `NOLOGIN`: the role has exactly
    /// these, each left out taking its default (LOGIN, INHERIT, and NO of
    /// SUPERUSER, CREATEDB, CREATEROLE, REPLICATION, BYPASSRLS). A change is
    /// made to the role (`ALTER ROLE`) by the job that sets passwords.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Existing Swarm secret with the password; generated when left out.
    /// Naming another secret later sets the role's password to its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretRef>,
}

/// The role attributes `bootstrap.users[].options` may name: each as
/// `(attribute, what a role has when neither it nor NO<attribute> is
/// given)`, in the order haswarm writes them. `true` means the attribute.
pub const ROLE_ATTRIBUTES: [(&str, &str, bool); 7] = [
    ("LOGIN", "a bootstrap user logs in unless NOLOGIN", true),
    ("SUPERUSER", "PostgreSQL's default", false),
    ("CREATEDB", "PostgreSQL's default", false),
    ("CREATEROLE", "PostgreSQL's default", false),
    ("INHERIT", "PostgreSQL's default", true),
    ("REPLICATION", "PostgreSQL's default", false),
    ("BYPASSRLS", "PostgreSQL's default", false),
];

/// The database, its owner and further roles.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bootstrap {
    /// The application database, created when the cluster is first initialised.
    #[serde(default = "defaults::pg_database")]
    pub database: String,
    /// The application user, owner of `database` (at most 59 characters:
    /// password rotations alternate between it and `<owner>_alt`, a login
    /// role that acts as the owner); its password is
    /// `credentials.appUserSecret` or generated.
    #[serde(default = "defaults::pg_owner")]
    pub owner: String,
    /// Further roles. Each is created when it appears here, at bootstrap
    /// or later, with its password set from its secret and its options as
    /// its attributes; a later change of either is made to the role. A
    /// role removed from the list stays in PostgreSQL (it may own data):
    /// drop it yourself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<BootstrapUser>,
    /// Start the cluster from another cluster's backups, to a point in
    /// time, instead of an empty database. Read only when the cluster is
    /// first created. `database`, `owner` and `users` are then whatever the
    /// source had; their passwords are still set from this cluster's secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recovery>,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self {
            database: defaults::pg_database(),
            owner: defaults::pg_owner(),
            users: Vec::new(),
            recovery: None,
        }
    }
}

/// Existing Swarm secrets to take passwords from. Each left out is generated
/// once, stored in a Swarm secret named `<name>-<purpose>-<hash>`, and never shown.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresCredentials {
    /// Password of the `postgres` superuser. Naming another secret later
    /// rotates it: PostgreSQL takes the new secret's password, then the
    /// instances move to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superuser_secret: Option<SecretRef>,
    /// Password of the `replicator` role replicas connect with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_secret: Option<SecretRef>,
    /// Password of the application user (`bootstrap.owner`). Naming another
    /// secret later rotates it without a window: the other of the two
    /// application logins (`<owner>` and `<owner>_alt`) takes the new
    /// password, and the login in use keeps its own until the next rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_user_secret: Option<SecretRef>,
}

/// Parameters Patroni or haswarm set themselves; a user value would be
/// overwritten or would break replication, so it is refused up front.
const MANAGED_PARAMETERS: &[&str] = &[
    "port",
    "listen_addresses",
    "data_directory",
    "hba_file",
    "ident_file",
    "config_file",
    "hot_standby",
    "wal_level",
    "max_wal_senders",
    "max_replication_slots",
    "wal_log_hints",
    "synchronous_standby_names",
    "primary_conninfo",
    "restore_command",
    "archive_cleanup_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_action",
    "archive_mode",
    "archive_command",
];

fn is_pg_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Kind for PostgresClusterSpec {
    const KIND: &'static str = "PostgresCluster";
    const PLURAL: &'static str = "postgresclusters";
    const SHORT_NAMES: &'static [&'static str] = &["pgc", "pg"];
    type Status = PostgresClusterStatus;

    fn apply_defaults(&mut self, _meta: &ObjectMeta) {}

    fn validate(&self, meta: &ObjectMeta, report: &mut Report, catalog: &dyn Catalog) {
        let spec = FieldPath::root().key("spec");
        self.validate_instances(&spec, report);
        self.postgres.validate(&spec.key("postgres"), report);
        self.patroni
            .validate(&spec.key("patroni"), self.instances, report);
        self.etcd.validate(&spec.key("etcd"), report, catalog);
        self.router.validate(&spec.key("router"), report);
        self.storage.validate(&spec.key("storage"), report, catalog);
        self.placement.validate(&spec.key("placement"), report);
        self.resources.validate(&spec.key("resources"), report);
        self.bootstrap.validate(&spec.key("bootstrap"), report);
        if let Some(r) = &self.bootstrap.recovery {
            r.validate(
                &spec.key("bootstrap").key("recovery"),
                meta.name.as_str(),
                self.backup.as_ref(),
                report,
            );
        }
        if let Some(b) = &self.backup {
            b.validate(&spec.key("backup"), report, catalog);
        }
        self.credentials.validate(&spec.key("credentials"), report);
        self.validate_target_primary(&spec, report);
    }
}

// The checks of each part of the spec, in the order `validate` runs them:
// reports list errors in that order, so moving a check changes the output.

impl PostgresClusterSpec {
    fn validate_instances(&self, spec: &FieldPath, report: &mut Report) {
        report.check(
            (1..=9).contains(&self.instances),
            || spec.key("instances"),
            "instances-range",
            || {
                format!(
                    "{} instances: a cluster has 1 to 9 instances",
                    self.instances
                )
            },
        );
    }

    fn validate_target_primary(&self, spec: &FieldPath, report: &mut Report) {
        if let Some(t) = self.target_primary {
            report.check(
                t < self.instances,
                || spec.key("targetPrimary"),
                "target-primary-exists",
                || {
                    format!(
                        "instance {t} does not exist: instances are numbered 0 to {}",
                        self.instances.saturating_sub(1)
                    )
                },
            );
        }
    }
}

impl PostgresSettings {
    fn validate(&self, pg: &FieldPath, report: &mut Report) {
        report.check(
            (13..=17).contains(&self.version),
            || pg.key("version"),
            "postgres-version",
            || format!("PostgreSQL {} is not supported: use 13 to 17", self.version),
        );
        validate::check_image(report, pg.key("image"), &self.image);
        for key in self.parameters.keys() {
            let path = pg.key("parameters").key(key);
            if MANAGED_PARAMETERS.contains(&key.as_str()) {
                report.push(
                    path,
                    "parameter-managed",
                    format!("{key} is set by haswarm and Patroni to keep replication and the router working; remove it"),
                );
            } else if !key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
            {
                report.push(
                    path,
                    "parameter-name",
                    format!("{key:?} is not a PostgreSQL parameter name (lowercase letters, digits, '_' and '.')"),
                );
            }
        }
    }
}

impl PatroniSettings {
    /// `instances` because synchronous replication needs a replica to wait for.
    fn validate(&self, pp: &FieldPath, instances: u8, report: &mut Report) {
        let needed = u64::from(self.loop_wait) + 2 * u64::from(self.retry_timeout);
        report.check(
            needed <= u64::from(self.ttl),
            || pp.key("ttl"),
            "patroni-timing",
            || {
                format!(
                    "loopWait + 2*retryTimeout = {} + 2*{} = {needed} exceeds ttl = {}: the leader key could expire while a healthy leader is still retrying, causing needless failovers; raise ttl or lower loopWait/retryTimeout",
                    self.loop_wait, self.retry_timeout, self.ttl
                )
            },
        );
        report.check(
            self.ttl >= 10,
            || pp.key("ttl"),
            "patroni-ttl-minimum",
            || format!("ttl {} is below Patroni's minimum of 10 seconds", self.ttl),
        );
        report.check(
            self.loop_wait >= 1,
            || pp.key("loopWait"),
            "patroni-loop-wait-minimum",
            || "loopWait must be at least 1 second".into(),
        );
        report.check(
            !(self.synchronous_mode != SynchronousMode::Off && instances < 2),
            || pp.key("synchronousMode"),
            "synchronous-needs-replica",
            || "synchronous replication needs a replica: set instances to 2 or more, or synchronousMode: Off".into(),
        );
    }
}

impl EtcdSettings {
    /// The managed members' settings are only checked when haswarm runs them:
    /// with `endpoints` they are unused.
    fn validate(&self, ep: &FieldPath, report: &mut Report, catalog: &dyn Catalog) {
        if self.endpoints.is_empty() {
            report.check(
                matches!(self.members, 1 | 3 | 5 | 7),
                || ep.key("members"),
                "etcd-members-odd",
                || format!("{} etcd members: use 1, 3, 5 or 7 (an odd number keeps a majority through a partition; 1 has no fault tolerance)", self.members),
            );
            validate::check_image(report, ep.key("image"), &self.image);
            self.storage.validate(&ep.key("storage"), report, catalog);
            self.resources.validate(&ep.key("resources"), report);
        } else {
            for (i, e) in self.endpoints.iter().enumerate() {
                let ok = (e.starts_with("http://") || e.starts_with("https://"))
                    && e.split_once("://").is_some_and(|(_, rest)| {
                        !rest.is_empty() && !rest.contains(char::is_whitespace)
                    });
                report.check(
                    ok,
                    || ep.key("endpoints").index(i),
                    "etcd-endpoint-url",
                    || format!("{e:?} is not an etcd client URL: write http://HOST:PORT or https://HOST:PORT"),
                );
            }
        }
    }
}

impl RouterSettings {
    fn validate(&self, rp: &FieldPath, report: &mut Report) {
        report.check(
            self.replicas <= 9,
            || rp.key("replicas"),
            "router-replicas-range",
            || format!("{} router replicas: use 0 to 9", self.replicas),
        );
        validate::check_image(report, rp.key("image"), &self.image);
        self.resources.validate(&rp.key("resources"), report);
    }
}

impl Bootstrap {
    fn validate(&self, bp: &FieldPath, report: &mut Report) {
        for (path, ident) in [
            (bp.key("database"), &self.database),
            (bp.key("owner"), &self.owner),
        ] {
            report.check(
                is_pg_identifier(ident),
                || path,
                "postgres-identifier",
                || format!("{ident:?} is not a plain PostgreSQL identifier: lowercase letters, digits and '_', starting with a letter or '_', at most 63 characters"),
            );
        }
        report.check(
            self.owner.len() <= 63 - 1 - ALTERNATE_SUFFIX.len(),
            || bp.key("owner"),
            "owner-length",
            || format!("{:?} is longer than 59 characters: password rotations also need the login {:?}, and PostgreSQL names have at most 63", self.owner, alternate_login(&self.owner)),
        );
        for (i, u) in self.users.iter().enumerate() {
            u.validate(&bp.key("users").index(i), &self.owner, report);
        }
    }
}

impl BootstrapUser {
    /// `owner` because the owner's two logins are taken already.
    fn validate(&self, up: &FieldPath, owner: &str, report: &mut Report) {
        report.check(
            is_pg_identifier(&self.name),
            || up.key("name"),
            "postgres-identifier",
            || format!("{:?} is not a plain PostgreSQL identifier: lowercase letters, digits and '_', starting with a letter or '_', at most 63 characters", self.name),
        );
        report.check(
            !matches!(self.name.as_str(), "postgres" | "replicator")
                && self.name != owner
                && self.name != alternate_login(owner),
            || up.key("name"),
            "user-reserved",
            || format!("{:?} is created by haswarm already (superuser, replication user, bootstrap.owner or its alternate login)", self.name),
        );
        self.validate_options(&up.key("options"), report);
        if let Some(s) = &self.password_secret {
            s.validate(&up.key("passwordSecret"), report);
        }
    }

    fn validate_options(&self, op: &FieldPath, report: &mut Report) {
        for (j, o) in self.options.iter().enumerate() {
            let o = o.to_ascii_uppercase();
            let pair = ROLE_ATTRIBUTES
                .iter()
                .find(|(on, _, _)| o == *on || o.strip_prefix("NO") == Some(on));
            report.check(
                pair.is_some(),
                || op.index(j),
                "role-option",
                || format!("{o:?} is not a role attribute: use e.g. CREATEDB, CREATEROLE, NOLOGIN, REPLICATION"),
            );
            let opposite = pair.map(|(on, _, _)| {
                if o == *on {
                    format!("NO{on}")
                } else {
                    (*on).to_owned()
                }
            });
            report.check(
                opposite.is_none_or(|x| {
                    !self
                        .options
                        .iter()
                        .any(|other| other.eq_ignore_ascii_case(&x))
                }),
                || op.index(j),
                "role-option-conflict",
                || format!("{o} and its opposite are both given"),
            );
        }
    }
}

impl PostgresCredentials {
    fn validate(&self, cp: &FieldPath, report: &mut Report) {
        for (field, s) in [
            ("superuserSecret", &self.superuser_secret),
            ("replicationSecret", &self.replication_secret),
            ("appUserSecret", &self.app_user_secret),
        ] {
            if let Some(s) = s {
                s.validate(&cp.key(field), report);
            }
        }
    }
}
