//! What goes over the wire between haswarmd and its clients. Shared by the
//! server and [`crate::client`], so the two cannot drift apart.

use haswarm_crds::EventType;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::Outcome;

/// Path prefix of every resource route.
pub const API_PREFIX: &str = "/apis/haswarm.io/v1alpha1";

/// Machine-readable cause of an API error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// The request body or query is malformed.
    BadRequest,
    /// A manifest is well-formed but invalid; `details` lists every problem.
    Invalid,
    /// No such kind or object.
    NotFound,
    /// Create of an existing object.
    AlreadyExists,
    /// The object changed since the client read it (stale resourceVersion).
    Conflict,
    /// The object is being deleted.
    Terminating,
    /// A watch asked for history the log no longer holds: relist.
    Gone,
    /// Missing or wrong bearer token.
    Unauthorized,
    /// The store could not make a write durable in time.
    Unavailable,
    /// A bug or an I/O failure.
    Internal,
}

/// One problem in one manifest of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// 0-based index of the manifest in the request.
    pub index: usize,
    /// Its kind, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Its name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Field path, e.g. `spec.sentinels.count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Rule id, for validation errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Machine-readable cause.
    pub reason: Reason,
    /// The message the CLI prints.
    pub message: String,
    /// Per-manifest problems, for `Invalid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<ErrorDetail>,
}

/// `POST /apply`: manifests written as one unit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApplyRequest {
    /// Manifests as JSON, in order.
    pub items: Vec<Value>,
}

/// What apply did to one manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApplyResult {
    /// The kind.
    pub kind: String,
    /// The name.
    pub name: String,
    /// created, configured or unchanged.
    pub result: Outcome,
    /// The stored object after the write (or as it would be, on a dry run).
    pub object: Value,
}

/// `POST /apply` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResponse {
    /// One result per manifest, in request order.
    pub results: Vec<ApplyResult>,
    /// Whether this was a dry run (nothing written).
    pub dry_run: bool,
}

/// A list response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct List {
    /// The objects, sorted by name.
    pub items: Vec<Value>,
    /// Store version at the time of the list; watch from it to miss nothing.
    pub resource_version: u64,
}

/// `PUT .../status` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusUpdate {
    /// The new status.
    pub status: Value,
    /// Write only if the object is at this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<u64>,
}

/// `PUT .../finalizers` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FinalizersUpdate {
    /// The new finalizers.
    pub finalizers: Vec<String>,
    /// Write only if the object is at this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<u64>,
}

/// `POST .../events` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewEvent {
    /// Normal or Warning.
    #[serde(rename = "type")]
    pub type_: EventType,
    /// CamelCase cause.
    pub reason: String,
    /// What happened.
    pub message: String,
}

/// Query of delete requests.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteQuery {
    /// Delete only if the object is at this version.
    pub resource_version: Option<u64>,
}

/// Query of list and watch requests.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    /// Label selector, e.g. `app=dify,tier!=cache`.
    pub label_selector: Option<String>,
    /// Stream changes as JSON lines instead of listing.
    pub watch: Option<bool>,
    /// With `watch`: resume after this version (else: current objects as ADDED first).
    pub resource_version: Option<u64>,
}

/// Query of writes.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteQuery {
    /// Validate and compute the result, write nothing.
    pub dry_run: Option<bool>,
}

/// A Swarm node as `haswarmctl node` shows it (`GET /nodes`, and the answer
/// of `POST /nodes/{node}/drain` and `/uncordon`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    /// Host name.
    pub name: String,
    /// Node id.
    pub id: String,
    /// `manager` or `worker`.
    pub role: String,
    /// Whether Swarm sees it ready.
    pub ready: bool,
    /// Swarm's availability: `active`, `pause` or `drain`.
    pub availability: String,
    /// Whether `haswarmctl node drain` is moving haswarm's members off it.
    pub draining: bool,
    /// The member slots it holds (`<kind>/<name> <family> <index>`).
    pub members: Vec<String>,
}
