//! The Swarm layer over bollard: one place that talks to the Docker Engine.
//!
//! # Guarantees
//! - Only objects carrying haswarm's ownership labels are updated or removed;
//!   a name taken by a foreign object is reported, never touched.
//! - Service updates send the inspected version index and retry on "update
//!   out of sequence" after inspecting again.
//! - The API version is negotiated with the engine (20.10 / API 1.41 and newer).

pub mod death;
pub mod jobs;
pub mod labels;
mod lease;
mod mirror;
pub mod objects;
mod services;
pub mod tasks;

use std::collections::HashMap;

use bollard::models::{Node, NodeState, SystemInfo, Task};
use bollard::query_parameters::{ListNodesOptions, ListTasksOptions};
use bollard::Docker;

pub use labels::Owner;
pub use objects::DRAIN_LABEL;
/// How long a script run in a service's container may take, from start to
/// the end of its output.
const EXEC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

pub use services::{
    DesiredService, ServiceChange, ServiceHealth, ServicePlan, ServiceReport, ServicesHealth,
};
pub use tasks::TaskTrouble;

/// Why a Swarm call failed.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    /// The engine does not answer.
    #[error("the Docker engine is unreachable: {0}")]
    Unreachable(String),
    /// The engine answers but is not a swarm manager.
    #[error("this Docker engine is not a swarm manager (run `docker swarm init`, or point DOCKER_HOST at a manager)")]
    NotManager,
    /// The object is gone.
    #[error("{0} not found")]
    NotFound(String),
    /// An update raced another writer and kept losing.
    #[error("{0} kept changing under haswarm's updates (update out of sequence); will retry")]
    OutOfSequence(String),
    /// The name is taken by an object haswarm does not own.
    #[error("{what} {name:?} exists but is not managed by haswarm; it is left alone: rename the resource or remove that object")]
    NameTaken {
        /// Object type.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A call that started never finished in time.
    #[error("{0} timed out; will retry")]
    TimedOut(String),
    /// Any other engine answer.
    #[error("Docker engine: {0}")]
    Api(String),
    /// This process may not act: it does not hold the store's lease.
    #[error(transparent)]
    Fenced(crate::lease::Fenced),
}

impl SwarmError {
    pub(crate) fn from_bollard(e: bollard::errors::Error, what: impl FnOnce() -> String) -> Self {
        use bollard::errors::Error as E;
        match e {
            E::DockerResponseServerError {
                status_code: 404, ..
            } => Self::NotFound(what()),
            E::DockerResponseServerError {
                status_code: 503,
                message,
            } if message.contains("not a swarm manager")
                || message.contains("not part of a swarm") =>
            {
                Self::NotManager
            }
            E::DockerResponseServerError { message, .. }
                if message.contains("update out of sequence") =>
            {
                Self::OutOfSequence(what())
            }
            E::DockerResponseServerError { message, .. } => Self::Api(message),
            E::IOError { err } => Self::Unreachable(err.to_string()),
            E::HyperResponseError { err } => Self::Unreachable(err.to_string()),
            E::HyperLegacyError { err } => Self::Unreachable(err.to_string()),
            E::RequestTimeoutError => Self::Unreachable("the request timed out".into()),
            E::SocketNotFoundError(path) => Self::Unreachable(format!("no socket at {path}")),
            other => {
                let text = other.to_string();
                if text.contains("connect")
                    || text.contains("No such file")
                    || text.contains("refused")
                {
                    Self::Unreachable(text)
                } else {
                    Self::Api(text)
                }
            }
        }
    }

    /// Whether the engine could not be reached at all (as opposed to refusing).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable(_))
    }
}

/// What the engine says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineInfo {
    /// Engine version, e.g. `20.10.24`.
    pub version: String,
    /// Negotiated API version, e.g. `1.41`.
    pub api_version: String,
    /// This node's swarm id.
    pub node_id: String,
    /// Whether this engine is a swarm manager.
    pub is_manager: bool,
}

/// A node as placement and status need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// Host name.
    pub hostname: String,
    /// Node labels.
    pub labels: HashMap<String, String>,
    /// Whether the node is `Ready`.
    pub ready: bool,
    /// `manager` or `worker`.
    pub role: String,
    /// When the node stopped being ready (the node object's last update,
    /// which Swarm makes when its status changes); `None` while ready.
    pub down_since: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether the operator drained or paused it (availability not active).
    pub drained: bool,
    /// Whether `haswarmctl node drain` is moving haswarm's members off it
    /// (the [`DRAIN_LABEL`] node label): it takes no new members, and its
    /// members move one role at a time, leaders and masters switched over
    /// first, while Swarm's availability stays active until they have gone.
    pub leaving: bool,
}

/// A handle on the engine; cheap to clone.
#[derive(Clone, Debug)]
pub struct Swarm {
    docker: Docker,
    /// The store's lease, when one is kept: no call passes while it is not held.
    fence: Option<crate::lease::Fence>,
}

impl Swarm {
    /// Connects as the docker CLI would (`DOCKER_HOST`, else the local socket)
    /// and negotiates the API version.
    ///
    /// # Errors
    /// [`SwarmError::Unreachable`] when no engine answers.
    pub async fn connect() -> Result<Self, SwarmError> {
        let docker = Docker::connect_with_defaults()
            .map_err(|e| SwarmError::Unreachable(e.to_string()))?
            .negotiate_version()
            .await
            .map_err(|e| SwarmError::Unreachable(e.to_string()))?;
        Ok(Self {
            docker,
            fence: None,
        })
    }

    /// The bollard client, for the modules of this layer.
    /// The engine, once the fence (when there is one) lets this process act.
    pub(crate) fn docker(&self) -> Result<&Docker, SwarmError> {
        if let Some(f) = &self.fence {
            f.check().map_err(SwarmError::Fenced)?;
        }
        Ok(&self.docker)
    }

    /// The same connection, gated by `fence`.
    #[must_use]
    pub fn fenced(mut self, fence: crate::lease::Fence) -> Self {
        self.fence = Some(fence);
        self
    }

    /// Engine and swarm facts.
    ///
    /// # Errors
    /// [`SwarmError`].
    pub async fn info(&self) -> Result<EngineInfo, SwarmError> {
        let info: SystemInfo = self
            .docker
            .info()
            .await
            .map_err(|e| SwarmError::from_bollard(e, || "engine".into()))?;
        let swarm = info.swarm.unwrap_or_default();
        Ok(EngineInfo {
            version: info.server_version.unwrap_or_default(),
            api_version: self.docker.client_version().to_string(),
            node_id: swarm.node_id.unwrap_or_default(),
            is_manager: swarm.control_available.unwrap_or(false),
        })
    }

    /// Whether the engine answers.
    pub async fn ping(&self) -> bool {
        self.docker.ping().await.is_ok()
    }

    /// Every swarm node.
    ///
    /// # Errors
    /// [`SwarmError`].
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, SwarmError> {
        let nodes: Vec<Node> = self
            .docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(|e| SwarmError::from_bollard(e, || "nodes".into()))?;
        Ok(nodes
            .into_iter()
            .map(|n| {
                let spec = n.spec.unwrap_or_default();
                let ready = n.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY);
                let labels = spec.labels.unwrap_or_default();
                NodeInfo {
                    id: n.id.unwrap_or_default(),
                    hostname: n.description.and_then(|d| d.hostname).unwrap_or_default(),
                    leaving: labels.contains_key(DRAIN_LABEL),
                    labels,
                    ready,
                    down_since: (!ready)
                        .then(|| n.updated_at.as_deref().and_then(parse_time))
                        .flatten(),
                    drained: spec
                        .availability
                        .is_some_and(|a| a != bollard::models::NodeSpecAvailabilityEnum::ACTIVE),
                    role: spec.role.map(|r| r.to_string()).unwrap_or_default(),
                }
            })
            .collect())
    }

    /// Tasks of a service.
    ///
    /// # Errors
    /// [`SwarmError`].
    pub async fn tasks(&self, service: &str) -> Result<Vec<Task>, SwarmError> {
        let filters = HashMap::from([("service".to_owned(), vec![service.to_owned()])]);
        match self
            .docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(|e| SwarmError::from_bollard(e, || format!("tasks of {service}")))
        {
            // No such service (not created yet, paused, removed by hand): no tasks.
            Err(SwarmError::NotFound(_)) => Ok(Vec::new()),
            other => other,
        }
    }
}

fn parse_time(t: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|d| d.with_timezone(&chrono::Utc))
}

/// The id of a task's container, once the node made one.
fn container_of(t: &Task) -> Option<&str> {
    t.status
        .as_ref()?
        .container_status
        .as_ref()?
        .container_id
        .as_deref()
        .filter(|c| !c.is_empty())
}

impl NodeInfo {
    /// Whether slots on this node should move elsewhere: drained by the
    /// operator (with Swarm or haswarm), or not ready for `grace` (a node
    /// that reboots keeps them).
    pub fn lost(&self, now: chrono::DateTime<chrono::Utc>, grace: std::time::Duration) -> bool {
        self.drained
            || self.leaving
            || self.down_since.is_some_and(|since| {
                now.signed_duration_since(since)
                    .to_std()
                    .is_ok_and(|d| d >= grace)
            })
    }

    /// Whether a member may be placed here: ready, active, not leaving.
    pub fn takes_members(&self) -> bool {
        self.ready && !self.drained && !self.leaving
    }

    /// Whether haswarm moves its members off this node on purpose (`haswarmctl
    /// node drain`) while the node still answers: its members serve until
    /// they have been replaced, so serving does not keep them there.
    pub fn draining(&self) -> bool {
        self.leaving && self.ready
    }
}

/// A Docker event reduced to what triggers reconciles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineEvent {
    /// Something happened to an object that names its owner in its labels.
    Owned(Owner),
    /// Something happened to a service (events carry its name, not its labels).
    Service(String),
    /// A node changed (joined, left, went down): placement may change for anyone.
    Node,
}

impl Swarm {
    /// Docker's event stream, reduced to [`EngineEvent`]s. Ends when the
    /// engine goes away; the caller reconnects.
    pub fn events(
        &self,
    ) -> impl futures::Stream<Item = Result<EngineEvent, SwarmError>> + Send + 'static {
        use futures::StreamExt;
        let filters = HashMap::from([(
            "type".to_owned(),
            vec![
                "service".to_owned(),
                "container".to_owned(),
                "node".to_owned(),
            ],
        )]);
        self.docker
            .events(Some(bollard::query_parameters::EventsOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .filter_map(|item| async move {
                let msg = match item {
                    Ok(m) => m,
                    Err(e) => return Some(Err(SwarmError::from_bollard(e, || "events".into()))),
                };
                // exec_create/exec_start/exec_die: haswarm's own status
                // queries and Swarm's health checks, not changes. Following
                // them made every reconcile's execs trigger the next one.
                if msg
                    .action
                    .as_deref()
                    .is_some_and(|a| a.starts_with("exec_"))
                {
                    return None;
                }
                let attrs = msg.actor.and_then(|a| a.attributes).unwrap_or_default();
                let typ = msg.typ.map(|t| t.to_string()).unwrap_or_default();
                match typ.as_str() {
                    "node" => Some(Ok(EngineEvent::Node)),
                    "service" => attrs
                        .get("name")
                        .cloned()
                        .map(|n| Ok(EngineEvent::Service(n))),
                    _ => labels::owner_of(Some(&attrs)).map(|o| Ok(EngineEvent::Owned(o))),
                }
            })
    }
}

impl Swarm {
    /// Runs `sh -c script` in a running task of `service` whose container is
    /// on this engine's node, and returns its standard output. `None` when no
    /// such task runs here (the engine can only exec into its own containers).
    ///
    /// Whatever the script reads stays in the container: used to query a data
    /// plane with credentials that only the container has.
    ///
    /// # Errors
    /// Engine errors.
    pub async fn exec_in_service(
        &self,
        service: &str,
        script: &str,
    ) -> Result<Option<String>, SwarmError> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        use futures::StreamExt;
        let me = self.info().await?.node_id;
        let tasks = self.tasks(service).await?;
        let container = tasks.iter().find_map(|t| {
            let running = t.status.as_ref().and_then(|s| s.state)
                == Some(bollard::models::TaskState::RUNNING);
            (running && t.node_id.as_deref() == Some(me.as_str()))
                .then(|| container_of(t).map(str::to_owned))
                .flatten()
        });
        let Some(container) = container else {
            return Ok(None);
        };
        let err = |e| SwarmError::from_bollard(e, || format!("exec in {service}"));
        let exec = match self
            .docker()?
            .create_exec(
                &container,
                CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(false),
                    cmd: Some(vec!["sh", "-c", script]),
                    ..Default::default()
                },
            )
            .await
            .map_err(err)
        {
            Ok(exec) => exec,
            // The task's state lags its container: one that just died is
            // as good as no task here.
            Err(SwarmError::Api(m)) if m.contains("is not running") => return Ok(None),
            // A frozen container (`docker pause`, a cgroup freezer) answers
            // nothing, as a hung one: callers ask the next member.
            Err(SwarmError::Api(m)) if m.contains("is paused") => {
                return Err(SwarmError::TimedOut(format!("exec in {service}: {m}")))
            }
            Err(e) => return Err(e),
        };
        // The output stream ends only when the script does: a script stuck on
        // an unresponsive peer (or an engine under load) must not stall the
        // reconcile that asked, so the whole exchange is bounded.
        let run = async {
            let mut out = String::new();
            if let StartExecResults::Attached { mut output, .. } = self
                .docker()?
                .start_exec(&exec.id, None)
                .await
                .map_err(err)?
            {
                while let Some(chunk) = output.next().await {
                    if let Ok(bollard::container::LogOutput::StdOut { message }) = chunk {
                        out.push_str(&String::from_utf8_lossy(&message));
                    }
                }
            }
            Ok(out)
        };
        match tokio::time::timeout(EXEC_TIMEOUT, run).await {
            Ok(out) => out.map(Some),
            Err(_) => Err(SwarmError::TimedOut(format!(
                "a script run in {service} (no answer within {}s)",
                EXEC_TIMEOUT.as_secs()
            ))),
        }
    }

    /// The id of a secret by exact name, if it exists.
    ///
    /// # Errors
    /// Engine errors.
    pub async fn secret_id(&self, name: &str) -> Result<Option<String>, SwarmError> {
        let filters = HashMap::from([("name".to_owned(), vec![name.to_owned()])]);
        let list = self
            .docker
            .list_secrets(Some(bollard::query_parameters::ListSecretsOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(|e| SwarmError::from_bollard(e, || format!("secret {name}")))?;
        Ok(list
            .into_iter()
            .find(|s| s.spec.as_ref().and_then(|sp| sp.name.as_deref()) == Some(name))
            .and_then(|s| s.id))
    }
}
