//! One-shot tasks on a chosen node: the only way to act on a worker node's
//! local state (its volumes) through a manager's API.

use std::time::Duration;

use bollard::models::{
    Mount, NetworkAttachmentConfig, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicatedJob,
    TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecSecrets, TaskSpecPlacement,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};

use super::labels::Owner;
use super::{Swarm, SwarmError};

/// A command to run once, to its end, on one node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeJob {
    /// Name of the job's service (removed once it has run).
    pub name: String,
    /// Swarm node id.
    pub node: String,
    /// Image, which should already be on that node: jobs are run where the
    /// owner's services ran, with their image, so nothing is pulled.
    pub image: String,
    /// `sh -c` script.
    pub script: String,
    /// Mounts.
    pub mounts: Vec<Mount>,
    /// Swarm secrets, with their ids filled in.
    pub secrets: Vec<TaskSpecContainerSpecSecrets>,
    /// Networks to attach the job to.
    pub networks: Vec<NetworkAttachmentConfig>,
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// Exited 0.
    Completed,
    /// Failed, was rejected, or did not end in time; why.
    Failed(String),
}

/// A job's service spec: one completion, no retries, pinned to its node.
pub fn job_spec(owner: &Owner, job: &NodeJob) -> ServiceSpec {
    ServiceSpec {
        name: Some(job.name.clone()),
        labels: Some(owner.labels()),
        mode: Some(ServiceSpecMode {
            replicated_job: Some(ServiceSpecModeReplicatedJob {
                max_concurrent: Some(1),
                total_completions: Some(1),
            }),
            ..Default::default()
        }),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(job.image.clone()),
                labels: Some(owner.labels()),
                command: Some(vec!["sh".into(), "-c".into(), job.script.clone()]),
                mounts: Some(job.mounts.clone()),
                secrets: (!job.secrets.is_empty()).then(|| job.secrets.clone()),
                ..Default::default()
            }),
            networks: (!job.networks.is_empty()).then(|| job.networks.clone()),
            placement: Some(TaskSpecPlacement {
                constraints: Some(vec![format!("node.id=={}", job.node)]),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Swarm {
    /// Runs `job` and waits until its task ends or `limit` passes; the job's
    /// service is removed either way. Needs API 1.41 (Docker 20.10).
    ///
    /// # Errors
    /// Engine errors (creating, inspecting or removing the job's service).
    pub async fn run_job(
        &self,
        owner: &Owner,
        job: &NodeJob,
        limit: Duration,
    ) -> Result<JobOutcome, SwarmError> {
        // A job left behind by an interrupted run would hold the name.
        self.remove_job(&job.name).await?;
        self.docker()?
            .create_service(job_spec(owner, job), None)
            .await
            .map_err(|e| SwarmError::from_bollard(e, || format!("job {}", job.name)))?;
        let started = tokio::time::Instant::now();
        let outcome = loop {
            let tasks = self.tasks(&job.name).await?;
            let ended = ended(&tasks);
            if let Some(o) = ended {
                break o;
            }
            if started.elapsed() >= limit {
                break JobOutcome::Failed(format!(
                    "did not finish within {}s (is node {} up?)",
                    limit.as_secs(),
                    job.node
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        self.remove_job(&job.name).await?;
        Ok(outcome)
    }

    /// Removes a one-shot job's service and its ended containers on this
    /// engine's node. Swarm leaves the exited container of a task that had
    /// completed when its service was removed (one per job ever run, seen
    /// on `docker ps -a`); a job on another node leaves its container there,
    /// which only that node's engine could remove.
    ///
    /// # Errors
    /// Engine errors.
    pub async fn remove_job(&self, name: &str) -> Result<(), SwarmError> {
        let containers: Vec<String> = self
            .tasks(name)
            .await?
            .iter()
            .filter_map(|t| super::container_of(t).map(str::to_owned))
            .collect();
        self.remove_service(name).await?;
        for id in containers {
            let options = bollard::query_parameters::RemoveContainerOptions {
                force: true,
                ..Default::default()
            };
            match self.docker()?.remove_container(&id, Some(options)).await {
                Ok(()) => {}
                Err(e) => match SwarmError::from_bollard(e, || format!("container {id}")) {
                    // Removed with its task already, or on another node.
                    SwarmError::NotFound(_) => {}
                    other => return Err(other),
                },
            }
        }
        Ok(())
    }
}

/// A detached job as it stands: its labels and, once its task ended, how.
#[derive(Clone, Debug, PartialEq)]
pub struct JobState {
    /// The service's labels.
    pub labels: std::collections::HashMap<String, String>,
    /// `None` while its task has not ended.
    pub ended: Option<JobOutcome>,
}

fn ended(tasks: &[bollard::models::Task]) -> Option<JobOutcome> {
    tasks.iter().find_map(|t| {
        let status = t.status.as_ref()?;
        match status.state? {
            TaskState::COMPLETE => Some(JobOutcome::Completed),
            TaskState::FAILED | TaskState::REJECTED | TaskState::ORPHANED => {
                Some(JobOutcome::Failed(
                    status
                        .err
                        .clone()
                        .or_else(|| status.message.clone())
                        .unwrap_or_else(|| "the task failed".into()),
                ))
            }
            _ => None,
        }
    })
}

impl Swarm {
    /// Starts `job` with `labels` added to its service's, and returns at
    /// once: the service is the record that it runs ([`Swarm::job_state`]).
    ///
    /// # Errors
    /// Engine errors.
    pub async fn start_job(
        &self,
        owner: &Owner,
        job: &NodeJob,
        labels: &[(&str, String)],
    ) -> Result<(), SwarmError> {
        let mut spec = job_spec(owner, job);
        if let Some(l) = spec.labels.as_mut() {
            l.extend(labels.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        }
        self.docker()?
            .create_service(spec, None)
            .await
            .map_err(|e| SwarmError::from_bollard(e, || format!("job {}", job.name)))?;
        Ok(())
    }

    /// The job service `name` owned by `owner`, if there is one.
    ///
    /// # Errors
    /// Engine errors.
    pub async fn job_state(
        &self,
        owner: &Owner,
        name: &str,
    ) -> Result<Option<JobState>, SwarmError> {
        let service = match self.docker()?.inspect_service(name, None).await {
            Ok(s) => s,
            Err(e) => match SwarmError::from_bollard(e, || format!("job {name}")) {
                SwarmError::NotFound(_) => return Ok(None),
                other => return Err(other),
            },
        };
        let labels = service.spec.and_then(|s| s.labels).unwrap_or_default();
        if !owner.owns(Some(&labels)) {
            return Ok(None);
        }
        let tasks = self.tasks(name).await?;
        Ok(Some(JobState {
            labels,
            ended: ended(&tasks),
        }))
    }

    /// What job `name` printed (stdout and stderr), its last `tail` lines.
    ///
    /// # Errors
    /// Engine errors.
    pub async fn job_output(&self, name: &str, tail: usize) -> Result<String, SwarmError> {
        use futures::StreamExt;
        let options = bollard::query_parameters::LogsOptions {
            stdout: true,
            stderr: true,
            tail: tail.to_string(),
            ..Default::default()
        };
        let mut stream = self.docker()?.service_logs(name, Some(options));
        let mut out = String::new();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| SwarmError::from_bollard(e, || format!("logs of job {name}")))?;
            out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_runs_once_on_its_node_and_is_owned() {
        let owner = Owner {
            kind: "RedisSentinelGroup".into(),
            name: "cache".into(),
            uid: "u".into(),
            instance: "i".into(),
        };
        let spec = job_spec(
            &owner,
            &NodeJob {
                name: "cache-reclaim-0".into(),
                node: "n1".into(),
                image: "img".into(),
                script: "true".into(),
                mounts: Vec::new(),
                secrets: Vec::new(),
                networks: Vec::new(),
            },
        );
        let job = spec
            .mode
            .as_ref()
            .and_then(|m| m.replicated_job.as_ref())
            .expect("a replicated job");
        assert_eq!(job.total_completions, Some(1));
        let task = spec.task_template.as_ref().expect("task");
        assert_eq!(
            task.placement.as_ref().and_then(|p| p.constraints.clone()),
            Some(vec!["node.id==n1".to_owned()])
        );
        assert_eq!(
            task.restart_policy.as_ref().and_then(|r| r.condition),
            Some(TaskSpecRestartPolicyConditionEnum::NONE)
        );
        assert!(owner.owns(spec.labels.as_ref()));
    }
}
