//! Why Swarm does not run a service's tasks, sorted by cause and quoting
//! the task's own error: a missing image, no node that fits, a failing
//! health check, the memory limit, a crash loop, a rejection. Pure: read
//! from Swarm's task list (and what the engine's node says of its own ended
//! containers), so that every kind reports it the same way.
//!
//! Two causes only the container itself records, and only its own node's
//! engine can inspect it; elsewhere such ends count as plain exits:
//! - Swarm stops an unhealthy container with SIGTERM: one that exits 0 on
//!   it (redis-server, postgres) leaves a task `complete` with no error.
//! - The kernel's OOM killer leaves a task that says only "non-zero exit
//!   (137)", like any SIGKILL; the container's `OOMKilled` says why.

use std::collections::BTreeMap;
use std::time::Duration;

use bollard::models::{Task, TaskState};
use chrono::{DateTime, Utc};

/// What keeps a service's tasks from running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TaskFault {
    /// The node has no such image and cannot pull it.
    ImageMissing,
    /// No node meets the constraints (placement, resources, spread).
    NoSuitableNode,
    /// Swarm killed the container for a failing health check.
    HealthCheckFailing,
    /// The container was killed for going over its memory limit.
    OutOfMemory,
    /// The container keeps exiting soon after it starts ([`LOOP_FAILURES`]
    /// tasks that ran less than [`LOOP_RUN`], within [`LOOP_WINDOW`]).
    CrashLoop,
    /// The node refused the task for another reason (a mount, a network).
    Rejected,
}

impl TaskFault {
    /// The condition reason and event reason: CamelCase.
    #[must_use]
    pub const fn reason(self) -> &'static str {
        match self {
            Self::ImageMissing => "ImageMissing",
            Self::NoSuitableNode => "NoSuitableNode",
            Self::HealthCheckFailing => "HealthCheckFailing",
            Self::OutOfMemory => "OutOfMemory",
            Self::CrashLoop => "CrashLoop",
            Self::Rejected => "TaskRejected",
        }
    }
}

/// A service whose tasks Swarm rejects or fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskTrouble {
    /// The service (the member).
    pub service: String,
    /// The cause.
    pub fault: TaskFault,
    /// The newest such task's own error, as `docker service ps` shows it.
    pub error: String,
}

impl std::fmt::Display for TaskTrouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.fault {
            TaskFault::ImageMissing | TaskFault::Rejected => "task rejected",
            TaskFault::NoSuitableNode => "task pending",
            TaskFault::HealthCheckFailing => "health check failing",
            TaskFault::OutOfMemory => "out of memory",
            TaskFault::CrashLoop => "crash loop",
        };
        write!(f, "{}: {what}: {}", self.service, self.error)
    }
}

/// Failed tasks this recent count towards a crash loop: long enough for a
/// data instance that waits up to a minute for the sentinels at each start
/// (redis-start.sh) before it fails again.
pub const LOOP_WINDOW: Duration = Duration::from_secs(600);
/// This many short-lived failed tasks within [`LOOP_WINDOW`] make a crash
/// loop. One or two are a member killed (a SIGKILL, a lost node) and
/// restarted.
pub const LOOP_FAILURES: usize = 3;
/// A failed task that ran less than this counts towards a crash loop, and
/// a task that has run this long ends one (and a failing health check's
/// report): a member that served for a while and was then killed is not
/// looping.
pub const LOOP_RUN: Duration = Duration::from_secs(120);

/// The errors of a node that has no image and cannot pull it (Docker's
/// words across 20.10 to 28).
const NO_IMAGE: [&str; 4] = [
    "No such image",
    "pull access denied",
    "manifest unknown",
    "repository does not exist",
];

/// Whether a task ended as a meant-to-run task should not: failed, or
/// completed (exited 0).
fn ended(t: &Task) -> bool {
    matches!(
        t.status.as_ref().and_then(|s| s.state),
        Some(TaskState::FAILED | TaskState::COMPLETE)
    )
}

/// How to get haswarm's own images (the kinds' defaults), which no
/// registry serves.
const HASWARM_IMAGES: &str = "haswarm's images are built by tests/testbed/prepare.sh; load them on every node (docker save | docker load) or push them to a registry and name them in the spec";

/// A missing image's error, with how to get it when it is one of
/// haswarm's own ([`haswarm_crds::defaults::OWN_IMAGES`]).
fn with_image_hint(err: String) -> String {
    if haswarm_crds::defaults::OWN_IMAGES
        .iter()
        .any(|i| err.contains(i))
    {
        format!("{err} ({HASWARM_IMAGES})")
    } else {
        err
    }
}

/// Whether Swarm is still bringing a task up (from `new` to `starting`,
/// no error yet): it runs or is refused within seconds, and no Docker event
/// says which.
fn on_its_way(t: &Task) -> bool {
    let Some(status) = t.status.as_ref() else {
        return false;
    };
    status.err.as_deref().unwrap_or_default().is_empty()
        && matches!(
            status.state,
            Some(
                TaskState::NEW
                    | TaskState::ALLOCATED
                    | TaskState::PENDING
                    | TaskState::ASSIGNED
                    | TaskState::ACCEPTED
                    | TaskState::READY
                    | TaskState::PREPARING
                    | TaskState::STARTING
            )
        )
}

/// Whether any of the services named by id (`services`) has a task meant
/// to run that Swarm is still bringing up: the pass after it should come
/// soon, to report a refusal (a missing image) within seconds.
#[must_use]
pub fn starting(services: &BTreeMap<String, String>, tasks: &[Task]) -> bool {
    tasks.iter().any(|t| {
        t.desired_state == Some(TaskState::RUNNING)
            && t.service_id
                .as_ref()
                .is_some_and(|id| services.contains_key(id))
            && on_its_way(t)
    })
}

/// What an ended container on the engine's node says of its end, where its
/// task's record does not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerEnd {
    /// Stopped for its health check; the last check's output.
    Unhealthy(String),
    /// Killed for going over its memory limit.
    OutOfMemory,
}

/// The containers of the tasks that ended within [`LOOP_RUN`]: those whose
/// inspection can say they were stopped as unhealthy or ran out of memory.
#[must_use]
pub fn to_inspect(tasks: &[Task], now: DateTime<Utc>) -> Vec<String> {
    let recent = chrono::Duration::from_std(LOOP_RUN).unwrap_or(chrono::Duration::MAX);
    tasks
        .iter()
        .filter(|t| ended(t))
        .filter(|t| since(t).is_some_and(|at| now - at <= recent))
        .filter_map(|t| super::container_of(t).map(str::to_owned))
        .collect()
}

/// When a task last changed state.
fn since(t: &Task) -> Option<DateTime<Utc>> {
    t.status
        .as_ref()
        .and_then(|s| s.timestamp.as_deref())
        .and_then(super::parse_time)
}

/// What keeps each service's tasks from running, for the services named
/// by id (`services`: id → name), in name order; `tasks` may list others'.
/// `ends` holds what the engine's node said of its ended containers (see
/// [`ContainerEnd`]).
#[must_use]
pub fn troubles(
    services: &BTreeMap<String, String>,
    tasks: &[Task],
    ends: &BTreeMap<String, ContainerEnd>,
    now: DateTime<Utc>,
) -> Vec<TaskTrouble> {
    let mut by_slot: BTreeMap<(&str, String), Vec<&Task>> = BTreeMap::new();
    for t in tasks {
        let Some(name) = t.service_id.as_ref().and_then(|id| services.get(id)) else {
            continue;
        };
        // A replicated service's tasks share a slot; a global one's a node.
        let slot = t
            .slot
            .map_or_else(|| t.node_id.clone().unwrap_or_default(), |s| s.to_string());
        by_slot.entry((name.as_str(), slot)).or_default().push(t);
    }
    let mut out: Vec<TaskTrouble> = Vec::new();
    for ((name, _), tasks) in by_slot {
        if out.iter().any(|t| t.service == name) {
            continue;
        }
        if let Some((fault, error)) = fault(&tasks, ends, now) {
            out.push(TaskTrouble {
                service: name.to_owned(),
                fault,
                error,
            });
        }
    }
    out
}

/// The fault of one slot's tasks, with the error to quote.
fn fault(
    tasks: &[&Task],
    ends: &BTreeMap<String, ContainerEnd>,
    now: DateTime<Utc>,
) -> Option<(TaskFault, String)> {
    let created = |t: &Task| t.created_at.as_deref().and_then(super::parse_time);
    // A task still on its way up has no verdict yet: the one before it
    // says why the slot does not run (a missing image stays missing while
    // Swarm retries the task).
    let newest = tasks
        .iter()
        .copied()
        .filter(|t| !on_its_way(t))
        .max_by_key(|t| created(t))
        .or_else(|| tasks.iter().copied().max_by_key(|t| created(t)))?;
    let status = newest.status.as_ref()?;
    let err = status.err.clone().unwrap_or_default();
    match status.state {
        Some(TaskState::PENDING) if err.contains("no suitable node") => {
            return Some((TaskFault::NoSuitableNode, err));
        }
        Some(TaskState::REJECTED) if NO_IMAGE.iter().any(|e| err.contains(e)) => {
            return Some((TaskFault::ImageMissing, with_image_hint(err)));
        }
        Some(TaskState::REJECTED) => return Some((TaskFault::Rejected, err)),
        _ => {}
    }
    let running_for = (status.state == Some(TaskState::RUNNING))
        .then(|| since(newest))
        .flatten()
        .map(|at| (now - at).to_std().unwrap_or_default());
    if running_for.is_some_and(|d| d >= LOOP_RUN) {
        return None;
    }
    let span = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    let (window, short) = (span(LOOP_WINDOW), span(LOOP_RUN));
    let mut failed: Vec<(DateTime<Utc>, Option<TaskFault>, String)> = tasks
        .iter()
        .filter(|t| ended(t))
        .filter_map(|t| {
            let at = since(t).filter(|at| now - *at <= window)?;
            // How long it lived, its restart delay included.
            let lived = created(t).map_or(chrono::Duration::zero(), |c| at - c);
            let (cause, err) = why_ended(t, ends);
            (lived < short || cause.is_some()).then_some((at, cause, err))
        })
        .collect();
    failed.sort();
    let (_, cause, last) = failed.last()?;
    if let Some(cause) = cause {
        // Stopped for its health check, or out of memory: one such end
        // already says why the member does not serve.
        Some((*cause, last.clone()))
    } else if failed.len() >= LOOP_FAILURES {
        Some((TaskFault::CrashLoop, last.clone()))
    } else {
        None
    }
}

/// Whether an ended task was stopped for its health check or ran out of
/// memory (a fault one end already proves), and the words that say why it
/// ended: Swarm's error, else the last health check's output, else its exit.
fn why_ended(t: &Task, ends: &BTreeMap<String, ContainerEnd>) -> (Option<TaskFault>, String) {
    let status = t.status.as_ref();
    let err = status.and_then(|s| s.err.clone()).unwrap_or_default();
    let end = super::container_of(t).and_then(|c| ends.get(c));
    if end == Some(&ContainerEnd::OutOfMemory) {
        let exit = if err.is_empty() {
            "ended"
        } else {
            err.as_str()
        };
        return (
            Some(TaskFault::OutOfMemory),
            format!("{exit}: the container went over its memory limit and was killed (OOMKilled)"),
        );
    }
    // Swarm's stop of an unhealthy container that then exits 0 leaves no
    // error. One that exits non-zero says so itself; without those words it
    // exited on its own, whatever its health (a crash while it starts is
    // unhealthy too).
    if err.contains("unhealthy container") {
        return (Some(TaskFault::HealthCheckFailing), err);
    }
    if err.is_empty() {
        if let Some(ContainerEnd::Unhealthy(output)) = end {
            return (
                Some(TaskFault::HealthCheckFailing),
                format!("stopped as unhealthy, the last check said: {output}"),
            );
        }
        let code = status
            .and_then(|s| s.container_status.as_ref())
            .and_then(|c| c.exit_code)
            .unwrap_or_default();
        return (None, format!("exited with code {code}"));
    }
    (None, err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::TaskStatus;

    const NOW: &str = "2026-12-07T12:00:00Z";

    /// A task of service `s1` in slot 1, created and last changed `ago`
    /// seconds before [`NOW`].
    fn task(ago: i64, state: TaskState, err: &str) -> Task {
        lived(ago, ago, state, err)
    }

    /// A task created `born` and last changed `ago` seconds before [`NOW`].
    fn lived(born: i64, ago: i64, state: TaskState, err: &str) -> Task {
        let at = |s: i64| {
            (DateTime::parse_from_rfc3339(NOW).expect("now") - chrono::Duration::seconds(s))
                .to_rfc3339()
        };
        Task {
            service_id: Some("s1".into()),
            slot: Some(1),
            created_at: Some(at(born)),
            status: Some(TaskStatus {
                timestamp: Some(at(ago)),
                state: Some(state),
                err: (!err.is_empty()).then(|| err.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(NOW)
            .expect("now")
            .with_timezone(&Utc)
    }

    fn look(tasks: &[Task]) -> Option<(TaskFault, String)> {
        look_with(tasks, &BTreeMap::new())
    }

    fn look_with(
        tasks: &[Task],
        ends: &BTreeMap<String, ContainerEnd>,
    ) -> Option<(TaskFault, String)> {
        let services = BTreeMap::from([("s1".to_owned(), "c-redis-0".to_owned())]);
        let found = troubles(&services, tasks, ends, now());
        assert!(found.len() <= 1);
        found.first().map(|t| {
            assert_eq!(t.service, "c-redis-0");
            (t.fault, t.error.clone())
        })
    }

    /// (case, a slot's tasks, the fault and the error it quotes)
    type Row<'a> = (&'a str, Vec<Task>, Option<(TaskFault, &'a str)>);

    #[test]
    fn each_cause_is_told_from_swarm_s_own_words() {
        use TaskState::{FAILED, PENDING, PREPARING, REJECTED, RUNNING, STARTING};
        let exit = "task: non-zero exit (3)";
        let killed = "task: non-zero exit (137)";
        let unhealthy = "task: non-zero exit (137): dockerexec: unhealthy container";
        let no_node = "no suitable node (scheduling constraints not satisfied on 1 node)";
        let no_image = "No such image: redis:7.2";
        let table: Vec<Row<'_>> = vec![
            ("running", vec![task(60, RUNNING, "")], None),
            ("starting", vec![task(1, STARTING, "")], None),
            ("no tasks", vec![], None),
            (
                "no image",
                vec![task(6, REJECTED, no_image), task(1, REJECTED, no_image)],
                Some((TaskFault::ImageMissing, no_image)),
            ),
            (
                "a pull refused",
                vec![task(
                    1,
                    REJECTED,
                    "pull access denied for x, repository does not exist",
                )],
                Some((
                    TaskFault::ImageMissing,
                    "pull access denied for x, repository does not exist",
                )),
            ),
            (
                "no image of haswarm's own: how to get it",
                vec![task(1, REJECTED, "No such image: haswarm/redis:bookworm")],
                Some((
                    TaskFault::ImageMissing,
                    "No such image: haswarm/redis:bookworm (haswarm's images are built by tests/testbed/prepare.sh; load them on every node (docker save | docker load) or push them to a registry and name them in the spec)",
                )),
            ),
            (
                "another missing image: no hint",
                vec![task(1, REJECTED, "No such image: haswarm/absent:1")],
                Some((TaskFault::ImageMissing, "No such image: haswarm/absent:1")),
            ),
            (
                "another rejection",
                vec![task(1, REJECTED, "invalid mount config")],
                Some((TaskFault::Rejected, "invalid mount config")),
            ),
            (
                "no node fits",
                vec![task(20, PENDING, no_node)],
                Some((TaskFault::NoSuitableNode, no_node)),
            ),
            ("pending without an error", vec![task(1, PENDING, "")], None),
            (
                "no image, retried",
                vec![task(6, REJECTED, no_image), task(1, PREPARING, "")],
                Some((TaskFault::ImageMissing, no_image)),
            ),
            (
                "no image, then pulled",
                vec![task(6, REJECTED, no_image), task(1, RUNNING, "")],
                None,
            ),
            (
                "killed once, restarted",
                vec![task(5, FAILED, killed), task(3, RUNNING, "")],
                None,
            ),
            (
                "killed twice",
                vec![
                    task(9, FAILED, killed),
                    task(5, FAILED, killed),
                    task(1, STARTING, ""),
                ],
                None,
            ),
            (
                "a crash loop a minute a turn",
                vec![
                    lived(270, 200, FAILED, exit),
                    lived(200, 130, FAILED, exit),
                    lived(130, 60, FAILED, exit),
                    lived(60, 50, RUNNING, ""),
                ],
                Some((TaskFault::CrashLoop, exit)),
            ),
            (
                "killed three times, each after serving a while",
                vec![
                    lived(590, 400, FAILED, killed),
                    lived(400, 200, FAILED, killed),
                    lived(200, 10, FAILED, killed),
                    lived(10, 3, STARTING, ""),
                ],
                None,
            ),
            (
                "a crash loop",
                vec![
                    task(9, FAILED, exit),
                    task(6, FAILED, exit),
                    task(3, FAILED, exit),
                    task(1, STARTING, ""),
                ],
                Some((TaskFault::CrashLoop, exit)),
            ),
            (
                "a crash loop, running for a moment",
                vec![
                    task(9, FAILED, exit),
                    task(6, FAILED, exit),
                    task(3, FAILED, exit),
                    task(1, RUNNING, ""),
                ],
                Some((TaskFault::CrashLoop, exit)),
            ),
            (
                "a crash loop that ended: running two minutes",
                vec![
                    task(139, FAILED, exit),
                    task(136, FAILED, exit),
                    task(133, FAILED, exit),
                    lived(130, 120, RUNNING, ""),
                ],
                None,
            ),
            (
                "old failures are forgotten",
                vec![
                    task(900, FAILED, exit),
                    task(800, FAILED, exit),
                    task(700, FAILED, exit),
                    task(5, STARTING, ""),
                ],
                None,
            ),
            (
                "a failing health check, once",
                vec![task(4, FAILED, unhealthy), task(2, STARTING, "")],
                Some((TaskFault::HealthCheckFailing, unhealthy)),
            ),
            (
                "the health check is the newest failure",
                vec![
                    task(9, FAILED, exit),
                    task(6, FAILED, exit),
                    task(3, FAILED, unhealthy),
                    task(1, STARTING, ""),
                ],
                Some((TaskFault::HealthCheckFailing, unhealthy)),
            ),
        ];
        for (case, tasks, want) in table {
            let want = want.map(|(f, e)| (f, e.to_owned()));
            assert_eq!(look(&tasks), want, "{case}");
        }
    }

    /// `t` run in container `id`, which exited 0.
    fn in_container(mut t: Task, id: &str) -> Task {
        if let Some(s) = t.status.as_mut() {
            s.container_status = Some(bollard::models::ContainerStatus {
                container_id: Some(id.into()),
                exit_code: Some(0),
                ..Default::default()
            });
        }
        t
    }

    #[test]
    fn a_container_stopped_as_unhealthy_is_told_by_its_health_log() {
        use TaskState::{COMPLETE, RUNNING, STARTING};
        // Swarm's SIGTERM ended it with 0: the task says only "complete".
        let stopped = in_container(lived(300, 5, COMPLETE, ""), "c1");
        let tasks = [stopped, task(4, STARTING, "")];
        assert_eq!(to_inspect(&tasks, now()), ["c1"]);
        let said = BTreeMap::from([(
            "c1".to_owned(),
            ContainerEnd::Unhealthy("Health check exceeded timeout (2s)".to_owned()),
        )]);
        assert_eq!(
            look_with(&tasks, &said),
            Some((
                TaskFault::HealthCheckFailing,
                "stopped as unhealthy, the last check said: Health check exceeded timeout (2s)"
                    .to_owned()
            ))
        );
        // Without the log (another node's container): a lone exit.
        assert_eq!(look(&tasks), None);
        // A container that exited non-zero on its own while it was
        // unhealthy (it crashed as it started): an exit, not a health stop.
        let mut crashed = in_container(lived(300, 5, TaskState::FAILED, ""), "c1");
        if let Some(s) = crashed.status.as_mut() {
            s.err = Some("task: non-zero exit (1)".into());
        }
        assert_eq!(look_with(&[crashed, task(4, STARTING, "")], &said), None);
        // Long since ended: nothing to inspect.
        let old = [in_container(lived(900, 300, COMPLETE, ""), "c0")];
        assert!(to_inspect(&old, now()).is_empty());
        // Exits with 0 loop as well as failures.
        let quick = |ago| in_container(task(ago, COMPLETE, ""), "cx");
        let looping = [quick(9), quick(6), quick(3), task(1, RUNNING, "")];
        assert_eq!(
            look(&looping),
            Some((TaskFault::CrashLoop, "exited with code 0".to_owned()))
        );
    }

    #[test]
    fn a_container_killed_for_its_memory_is_told_at_its_first_end() {
        use TaskState::{FAILED, RUNNING, STARTING};
        let killed = "task: non-zero exit (137)";
        // It ran for five minutes, so it is no crash loop: one OOM kill says
        // why the member is not serving.
        let mut oom = in_container(lived(300, 5, FAILED, killed), "c1");
        let ends = BTreeMap::from([("c1".to_owned(), ContainerEnd::OutOfMemory)]);
        let cases: Vec<(&str, Vec<Task>, Option<TaskFault>)> = vec![
            (
                "OOM, restarting",
                vec![oom.clone(), task(2, STARTING, "")],
                Some(TaskFault::OutOfMemory),
            ),
            // Once its successor has run long enough, the member serves.
            (
                "OOM, since replaced",
                vec![
                    in_container(lived(600, 300, FAILED, killed), "c1"),
                    task(200, RUNNING, ""),
                ],
                None,
            ),
        ];
        for (case, tasks, want) in cases {
            assert_eq!(look_with(&tasks, &ends).map(|(f, _)| f), want, "{case}");
        }
        let (_, said) = look_with(&[oom.clone(), task(2, STARTING, "")], &ends).expect("a fault");
        assert!(
            said.starts_with(killed) && said.contains("OOMKilled"),
            "{said}"
        );
        // The same end on another node (not inspected): a lone SIGKILL.
        assert_eq!(look(&[oom.clone(), task(2, STARTING, "")]), None);
        // An OOM kill outweighs a health check that failed as memory ran out.
        let both = BTreeMap::from([("c1".to_owned(), ContainerEnd::OutOfMemory)]);
        if let Some(st) = oom.status.as_mut() {
            st.err = None;
        }
        assert_eq!(
            look_with(&[oom, task(2, STARTING, "")], &both).map(|(f, _)| f),
            Some(TaskFault::OutOfMemory)
        );
    }

    #[test]
    fn only_the_named_services_count_each_once() {
        let mut other = task(1, TaskState::REJECTED, "No such image: x");
        other.service_id = Some("s2".into());
        assert_eq!(look(&[other]), None);
        let mut second_slot = task(1, TaskState::REJECTED, "No such image: x");
        second_slot.slot = Some(2);
        let both = [
            task(1, TaskState::REJECTED, "No such image: x"),
            second_slot,
        ];
        assert!(look(&both).is_some(), "one trouble for the service");
    }

    #[test]
    fn a_task_on_its_way_up_calls_for_a_look_soon() {
        let services = BTreeMap::from([("s1".to_owned(), "c-redis-0".to_owned())]);
        let meant = |mut t: Task| {
            t.desired_state = Some(TaskState::RUNNING);
            t
        };
        let table = [
            ("preparing", meant(task(1, TaskState::PREPARING, "")), true),
            ("starting", meant(task(1, TaskState::STARTING, "")), true),
            ("running", meant(task(1, TaskState::RUNNING, "")), false),
            (
                "pending, no node fits",
                meant(task(1, TaskState::PENDING, "no suitable node")),
                false,
            ),
            ("being shut down", task(1, TaskState::STARTING, ""), false),
        ];
        for (case, t, soon) in table {
            assert_eq!(
                starting(&services, std::slice::from_ref(&t)),
                soon,
                "{case}"
            );
            let other = BTreeMap::from([("s2".to_owned(), "c-redis-1".to_owned())]);
            assert!(!starting(&other, &[t]), "{case}: another owner's task");
        }
    }

    #[test]
    fn a_trouble_names_the_member_and_quotes_the_task() {
        let t = TaskTrouble {
            service: "c-redis-0".into(),
            fault: TaskFault::ImageMissing,
            error: "No such image: redis:7.2".into(),
        };
        assert_eq!(
            t.to_string(),
            "c-redis-0: task rejected: No such image: redis:7.2"
        );
        let reasons: std::collections::BTreeSet<_> = [
            TaskFault::ImageMissing,
            TaskFault::NoSuitableNode,
            TaskFault::HealthCheckFailing,
            TaskFault::CrashLoop,
            TaskFault::Rejected,
        ]
        .iter()
        .map(|f| f.reason())
        .collect();
        assert_eq!(reasons.len(), 5);
    }
}
