//! What a PostgresCluster's status reports, and the requests and flows it
//! records: members, the leader, switchovers, password rotations, etcd
//! membership.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::CommonStatus;

/// Annotation asking for a switchover: `<token>` or `<token> to=<index>`
/// (`haswarmctl pg switchover` sets it; a new token is a new request).
pub const SWITCHOVER_ANNOTATION: &str = "haswarm.io/switchover";

/// A user whose password rotates: a generated one on request (`haswarmctl
/// rotate-password pgc/NAME --user USER`, annotation
/// `haswarm.io/rotate-password`: `<token> user=app|superuser`), or one taken
/// from `spec.credentials` when the spec names a new secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RotatedUser {
    /// The application user: its two logins alternate (`bootstrap.owner`
    /// and `<owner>_alt`), so the previous password keeps working until the
    /// next rotation.
    App,
    /// The `postgres` superuser.
    Superuser,
}

/// A switchover haswarm asked Patroni for, for a `haswarm.io/switchover`
/// request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SwitchoverStarted {
    /// The annotation's value.
    pub request: String,
    /// The leader asked to hand over: once another member leads, the
    /// request is done.
    pub from: String,
}

/// Where a password rotation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PgRotationPhase {
    /// The new password is in a new Swarm secret; PostgreSQL is told to
    /// take it (`ALTER ROLE` by a one-shot job that reads the passwords
    /// from secret files: no value on a command line or in a log). For the
    /// app user this is the whole rotation: the other login takes the new
    /// password and `status.appUser`/`appPasswordSecret` name it.
    Alter,
    /// Superuser only: PostgreSQL takes only the new password, and the
    /// instances switch to the new secret one at a time (replicas first,
    /// the leader after a switchover).
    Use,
}

/// A password rotation in progress, or the last one requested.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PgPasswordRotation {
    /// The value of the `haswarm.io/rotate-password` annotation last acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    /// The user whose password is rotating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<RotatedUser>,
    /// The phase of the rotation in progress; absent when none is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PgRotationPhase>,
    /// When `spec.credentials` named a new secret: the secret the instances
    /// used before (the rotation moves PostgreSQL and them to the new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_secret: Option<String>,
}

/// A login role and the Swarm secret holding its password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PgLogin {
    /// The role's name.
    pub user: String,
    /// The Swarm secret with its password.
    pub password_secret: String,
}

/// The login role that alternates with `owner` for password rotations.
pub fn alternate_login(owner: &str) -> String {
    format!("{owner}_{ALTERNATE_SUFFIX}")
}

/// What `alternate_login` appends (after a `_`).
pub(super) const ALTERNATE_SUFFIX: &str = "alt";

/// Role of a member as Patroni reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MemberRole {
    /// Holds the leader key: the primary.
    Leader,
    /// A synchronous standby.
    SyncStandby,
    /// An asynchronous replica.
    Replica,
    /// Not known (unreachable).
    Unknown,
}

/// One instance as Patroni reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresMember {
    /// The instance's service (`<name>-pg-<i>`).
    pub name: String,
    /// The member's incarnation: 0 for the first, one more each time its
    /// slot moved to another node and it started there anew. Patroni knows
    /// it as `<name>-pg-<i>` (the first) or `<name>-pg-<i>.<incarnation>`,
    /// so a member replaced elsewhere and the old one, should it come back,
    /// are never taken for each other.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub incarnation: u32,
    /// Leader, SyncStandby, Replica or Unknown.
    pub role: MemberRole,
    /// Patroni's state, e.g. `running`, `streaming`, `starting`.
    pub state: String,
    /// Timeline the member is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u64>,
    /// Replication lag in bytes (replicas only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    /// Swarm node the member runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// A changed setting takes effect only after a restart, which haswarm
    /// does one member at a time (replicas first, the leader after a switchover).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending_restart: bool,
}

/// Observed state of a PostgresCluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresClusterStatus {
    /// Generation, conditions and owned objects.
    #[serde(flatten)]
    pub common: CommonStatus,
    /// The current primary's member name; absent while none answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The last leader, while it does not answer (its node is down, its
    /// container gone) and no other has taken over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_leader: Option<String>,
    /// Every member with role, state, timeline and lag (as `patronictl list`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<PostgresMember>,
    /// Read-write endpoint (`host:port`) for applications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_write_endpoint: Option<String>,
    /// Read-only endpoint (`host:port`) for applications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_endpoint: Option<String>,
    /// The role applications log in as (`DB_USERNAME`): `bootstrap.owner`,
    /// or `<owner>_alt` after an odd number of rotations. Absent until its
    /// password is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_user: Option<String>,
    /// The Swarm secret holding `appUser`'s password (mount it in the
    /// application; the value is never shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_password_secret: Option<String>,
    /// The application login the last rotation moved away from: PostgreSQL
    /// still accepts it until the next rotation, so applications move to
    /// the new one at their own pace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_app_login: Option<PgLogin>,
    /// The Swarm secret holding each `bootstrap.users` role's password, by role.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_password_secrets: BTreeMap<String, String>,
    /// The attributes haswarm last gave each `bootstrap.users` role, by role
    /// (as written after `ALTER ROLE ... WITH`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_attributes: BTreeMap<String, String>,
    /// The overlay network applications join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The last `haswarm.io/switchover` request handled (done, or found
    /// unnecessary); see the events for what happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover_handled: Option<String>,
    /// A `haswarm.io/switchover` request haswarm asked Patroni to carry out,
    /// recorded before asking: a haswarmd restarted in the middle finishes
    /// that request once, instead of switching over a second time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover_started: Option<SwitchoverStarted>,
    /// The password rotation in progress, or the last one requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_rotation: Option<PgPasswordRotation>,
    /// How many managed etcd members the cluster ran, as haswarm recorded it
    /// before `etcdMembership` existed: read once to recover that count,
    /// then no longer written (`etcdMembership.members` says it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_members: Option<u8>,
    /// How the managed etcd cluster came to its members (what each member
    /// is started with depends on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_membership: Option<EtcdMembership>,
    /// Replicas on another timeline than the running leader's, and since
    /// when haswarm has seen them so. After a failover a replica follows
    /// the new timeline within seconds, or Patroni rewinds it; one still on
    /// another timeline two `patroni.ttl` later cannot follow (its WAL went
    /// past the point where the leader's timeline forked) and haswarm has
    /// Patroni rebuild it from the leader.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub diverged_since: BTreeMap<String, chrono::DateTime<chrono::Utc>>,
    /// Backups and archiving (`spec.backup`): the backups in the
    /// repositories, the first point a restore can reach, the last backup.
    #[serde(flatten)]
    pub backup: super::BackupStatus,
}

/// The managed etcd cluster's history, as far as starting its members needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdMembership {
    /// Members now (`0..members`), a learner included.
    pub members: u8,
    /// Members the etcd cluster was created with (they start as a new
    /// cluster listing each other).
    pub initial: u8,
    /// Members added later, by index, with the number of their join: a
    /// member joins an existing cluster, in a data directory of its own
    /// join (so a member removed and added again starts afresh).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub joined: BTreeMap<u8, u32>,
    /// A member added as a learner (no vote) that is not promoted yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learner: Option<u8>,
    /// Joins so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub joins: u32,
    /// Members that joined in place of another (their slot moved off a lost
    /// node), with how many members they were started to list; a member
    /// not here that joined lists the members up to itself.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub listed: BTreeMap<u8, u8>,
    /// The incarnation of each member in the cluster (absent: the first).
    /// A slot whose label names a newer one holds a member that must be
    /// replaced: the old one is removed from etcd and the new one joins as
    /// a learner before its service starts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub incarnations: BTreeMap<u8, u32>,
    /// A member being replaced, from its join as a learner until its vote:
    /// Patroni keeps every member on its list meanwhile (the members do not
    /// restart for a replacement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacing: Option<u8>,
}

impl EtcdMembership {
    /// A cluster created with `members` members.
    pub fn created(members: u8) -> Self {
        Self {
            members,
            initial: members,
            ..Self::default()
        }
    }

    /// Members with a vote: all but a learner.
    pub fn voters(&self) -> u8 {
        self.members - u8::from(self.learner.is_some())
    }

    /// How many members Patroni lists (`0..clients`): every one but a
    /// learner added on top. A member being replaced stays listed: its
    /// name is the same, and a list that changed would restart every
    /// instance.
    pub fn clients(&self) -> u8 {
        if self.replacing.is_some() {
            self.members
        } else {
            self.voters()
        }
    }

    /// The incarnation of member `j` in the cluster.
    pub fn incarnation(&self, j: u8) -> u32 {
        self.incarnations.get(&j).copied().unwrap_or(0)
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
