//! Whether a member's process is proven dead: the evidence fast failovers
//! (Patroni's leader key released, Sentinel asked to fail over) act on.

use bollard::models::{Task, TaskState};

use super::{container_of, NodeInfo, Swarm, SwarmError};

/// Whether the tasks of a member's service prove its container is gone:
/// none of them can have a live container (none starting or running, none
/// on a node that does not answer), and one ended on a node that answers.
/// Swarm learns a task's end from the node's own engine, so this is the
/// engine's word that the process is dead, not a guess from silence.
///
/// A task still running whose container is in `stopped` (containers this
/// engine reports not running, on its own node) counts as ended: the engine
/// knows at once, Swarm's record follows a moment later, and a fast
/// failover that waited for it would wait for the next trigger. Pure.
pub fn proven_dead(tasks: &[Task], node_ready: impl Fn(&str) -> bool, stopped: &[String]) -> bool {
    use TaskState as S;
    let mut ended = false;
    for t in tasks {
        let state = t.status.as_ref().and_then(|s| s.state);
        let node = t.node_id.as_deref().unwrap_or_default();
        let container = container_of(t);
        match state {
            Some(S::FAILED | S::SHUTDOWN | S::COMPLETE | S::REJECTED) if node_ready(node) => {
                ended = true;
            }
            Some(S::RUNNING) if container.is_some_and(|c| stopped.iter().any(|s| s == c)) => {
                ended = true;
            }
            // Not started yet; `READY` is the replacement waiting out the
            // restart delay, its container created but not started.
            Some(
                S::NEW
                | S::PENDING
                | S::ALLOCATED
                | S::ASSIGNED
                | S::ACCEPTED
                | S::PREPARING
                | S::READY,
            ) => {}
            // Starting, running, removing, orphaned, unknown, or ended on a
            // node that does not answer: a container may be alive.
            _ => return false,
        }
    }
    ended
}

impl Swarm {
    /// [`proven_dead`] for `service`, with the containers of its running
    /// tasks on this engine's node inspected.
    ///
    /// # Errors
    /// Engine errors.
    pub async fn proven_dead(&self, service: &str, nodes: &[NodeInfo]) -> Result<bool, SwarmError> {
        let tasks = self.tasks(service).await?;
        let me = self.info().await?.node_id;
        let mut stopped = Vec::new();
        for t in &tasks {
            let running = t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING);
            let Some(id) = container_of(t).filter(|_| running && t.node_id.as_deref() == Some(&me))
            else {
                continue;
            };
            match self.docker()?.inspect_container(id, None).await {
                Ok(c) => {
                    if c.state.and_then(|s| s.running) == Some(false) {
                        stopped.push(id.to_owned());
                    }
                }
                Err(e) => match SwarmError::from_bollard(e, || format!("container {id}")) {
                    // Removed already: gone, as surely as stopped.
                    SwarmError::NotFound(_) => stopped.push(id.to_owned()),
                    other => return Err(other),
                },
            }
        }
        let ready = |id: &str| nodes.iter().any(|n| n.id == id && n.ready);
        Ok(proven_dead(&tasks, ready, &stopped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(state: TaskState, node: &str) -> Task {
        Task {
            node_id: Some(node.into()),
            status: Some(bollard::models::TaskStatus {
                state: Some(state),
                container_status: Some(bollard::models::ContainerStatus {
                    container_id: Some(format!("c-{node}")),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_member_is_proven_dead_only_by_its_own_node() {
        use TaskState as S;
        let up = |n: &str| n != "down";
        let none: &[String] = &[];
        // (tasks, containers the engine reports stopped) → proven dead
        let table: &[(&str, Vec<Task>, &[&str], bool)] = &[
            (
                "killed, restart pending",
                vec![task(S::FAILED, "a"), task(S::PENDING, "a")],
                &[],
                true,
            ),
            (
                "the restarted container is starting (it may take its role back)",
                vec![task(S::FAILED, "a"), task(S::STARTING, "a")],
                &[],
                false,
            ),
            ("running", vec![task(S::RUNNING, "a")], &[], false),
            (
                "running to Swarm, stopped to this engine",
                vec![task(S::RUNNING, "a")],
                &["c-a"],
                true,
            ),
            (
                "another container stopped",
                vec![task(S::RUNNING, "a")],
                &["c-b"],
                false,
            ),
            (
                "its node does not answer: the TTL decides",
                vec![task(S::FAILED, "down")],
                &[],
                false,
            ),
            ("orphaned", vec![task(S::ORPHANED, "down")], &[], false),
            ("nothing ended", vec![task(S::PENDING, "a")], &[], false),
            ("no task", vec![], &[], false),
        ];
        for (case, tasks, stopped, want) in table {
            let stopped: Vec<String> = stopped.iter().map(|s| (*s).to_owned()).collect();
            assert_eq!(proven_dead(tasks, up, &stopped), *want, "{case}");
        }
        assert!(!proven_dead(&[task(S::RUNNING, "a")], up, none));
    }
}
