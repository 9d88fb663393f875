//! Kubernetes-style object metadata and status conditions, shared by every kind.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::name::Name;

/// Identity and bookkeeping of a resource. Users set `name`, `labels` and
/// `annotations`; the store sets the rest, and ignores what a client sends there
/// except `resourceVersion`, which makes a write conditional.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// Name of the resource, unique per kind. It prefixes every Swarm object
    /// haswarm creates for it (services, secrets, configs, networks, volumes).
    pub name: Name,
    /// Key/value pairs to select resources with (`haswarmctl get -l key=value`).
    /// Checked as Kubernetes checks them: keys are `[PREFIX/]NAME`, NAME 1-63
    /// letters, digits, `-`, `_` or `.` that start and end with a letter or
    /// digit, PREFIX a lowercase DNS subdomain (`example.com`); values are
    /// empty or written as a NAME is.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form key/value notes. `haswarm.io/paused: "true"` stops every change
    /// to this resource's Swarm objects while status keeps being reported.
    /// Keys are checked as label keys are; values are free.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Unique id given by the store when the resource is created. Read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Counter bumped by the store on every change of `spec`. Read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Version of the stored object, from a global counter. Sent back on a write,
    /// it makes the write fail with a conflict if someone else wrote in between.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<u64>,
    /// When the store created the resource (RFC 3339). Read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<DateTime<Utc>>,
    /// When deletion was requested (RFC 3339); the resource stays until its
    /// finalizers have cleaned up. Read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<DateTime<Utc>>,
    /// Cleanup steps that must finish before the record is removed. Set by the controller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
}

impl ObjectMeta {
    /// Metadata holding only a name, as a user would write it.
    pub fn named(name: Name) -> Self {
        Self {
            name,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            uid: None,
            generation: None,
            resource_version: None,
            creation_timestamp: None,
            deletion_timestamp: None,
            finalizers: Vec::new(),
        }
    }
}

/// The value of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The controller cannot tell (yet).
    Unknown,
}

/// One aspect of a resource's state, as the controller last observed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// What the condition is about: `Ready`, `Reconciling`, `Stalled`, `Paused`,
    /// `TasksHealthy` (whether Swarm runs every member's tasks, or which it
    /// rejects or fails, quoting the task's error), or a kind-specific one
    /// such as `PrimaryAvailable`, `QuorumHealthy`, `MountedOnAllNodes`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// Machine-readable CamelCase cause of the last transition.
    pub reason: String,
    /// Human-readable details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: DateTime<Utc>,
    /// The `metadata.generation` this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<u64>,
}

/// A Swarm object the controller created for a resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OwnedObject {
    /// Swarm object type: `service`, `secret`, `config`, `network`, `volume` or `nodeLabel`.
    pub kind: String,
    /// The Swarm object's name.
    pub name: String,
    /// The object's version index after haswarm last wrote it; a different
    /// index on the engine means someone else changed it (drift).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// Status fields every kind shares.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommonStatus {
    /// The `metadata.generation` the controller last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<u64>,
    /// Current conditions (`Ready`, `Reconciling`, `Stalled`, `Paused`, kind-specific ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Swarm objects the controller created for this resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owned_objects: Vec<OwnedObject>,
    /// Nodes holding a member of this resource that are down or drained.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable_nodes: Vec<UnavailableNode>,
    /// Data volumes that members left on a node when their slot moved away
    /// (a lost or drained node): stale copies, not erased then. Deleting
    /// the resource with `reclaimPolicy: Delete` erases those on nodes that
    /// answer and names the rest. An entry goes when its slot comes back to
    /// that node (the volume is the member's again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_volumes: Vec<LeftVolume>,
}

/// A data volume a member left on a node its slot moved away from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeftVolume {
    /// The volume's name.
    pub volume: String,
    /// The host name of the node it is on.
    pub node: String,
}

/// A node that holds members of a resource and is down or drained: past
/// the daemon's node-loss grace (or at once when drained) its members move
/// to other nodes, each as a new member.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnavailableNode {
    /// The node's host name.
    pub node: String,
    /// When it went down; absent for a node drained while it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// The members pinned there (their services).
    pub members: Vec<String>,
}

/// A kind's status, which holds the [`CommonStatus`] every kind shares
/// (flattened into it).
pub trait HasCommon {
    /// The common part.
    fn common(&self) -> &CommonStatus;
    /// The common part, to change.
    fn common_mut(&mut self) -> &mut CommonStatus;
}

impl CommonStatus {
    /// The condition of the given type, if reported.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// Whether an event is routine or needs attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EventType {
    /// Routine progress.
    Normal,
    /// Something needs attention.
    Warning,
}

/// Something that happened to a resource, for people reading `describe`.
/// Repeats of the same type, reason and message are counted, not stored again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: EventType,
    /// CamelCase cause, e.g. `Created`, `Failover`, `MountFailed`.
    pub reason: String,
    /// What happened, for people.
    pub message: String,
    /// How many times it happened.
    pub count: u32,
    /// When it first happened.
    pub first_timestamp: DateTime<Utc>,
    /// When it last happened.
    pub last_timestamp: DateTime<Utc>,
}

impl CommonStatus {
    /// Sets a condition, keeping its `lastTransitionTime` when the status
    /// does not change (so "since when" stays true).
    pub fn set_condition(
        &mut self,
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
        generation: Option<u64>,
        now: DateTime<Utc>,
    ) {
        let message = message.into();
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now;
                }
                c.status = status;
                c.reason = reason.to_owned();
                c.message = message;
                c.observed_generation = generation;
            }
            None => self.conditions.push(Condition {
                type_: type_.to_owned(),
                status,
                reason: reason.to_owned(),
                message,
                last_transition_time: now,
                observed_generation: generation,
            }),
        }
    }

    /// Removes a condition.
    pub fn remove_condition(&mut self, type_: &str) {
        self.conditions.retain(|c| c.type_ != type_);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .expect("t")
            .with_timezone(&Utc);
        let t1 = DateTime::parse_from_rfc3339("2026-01-01T00:01:00Z")
            .expect("t")
            .with_timezone(&Utc);
        let mut s = CommonStatus::default();
        s.set_condition("Ready", ConditionStatus::False, "Creating", "", Some(1), t0);
        s.set_condition("Ready", ConditionStatus::False, "Waiting", "x", Some(1), t1);
        assert_eq!(
            s.condition("Ready").map(|c| c.last_transition_time),
            Some(t0)
        );
        assert_eq!(
            s.condition("Ready").map(|c| c.reason.as_str()),
            Some("Waiting")
        );
        s.set_condition("Ready", ConditionStatus::True, "Mounted", "", Some(2), t1);
        assert_eq!(
            s.condition("Ready").map(|c| c.last_transition_time),
            Some(t1)
        );
        assert_eq!(
            s.condition("Ready").and_then(|c| c.observed_generation),
            Some(2)
        );
        s.remove_condition("Ready");
        assert!(s.conditions.is_empty());
    }
}
