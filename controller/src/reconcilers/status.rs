//! Conditions every replicated kind reports the same way (`Ready`,
//! `Progressing`), how soon it looks again, and the removal of what a
//! resource owns on the Swarm: shared so that kinds differ only in what
//! their data plane says.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use haswarm_crds::meta::CommonStatus;
use haswarm_crds::{ConditionStatus, EventType};

use super::wait::Wait;
use crate::runtime::controller::{event, report_services, Context, ReconcileError};
use crate::runtime::Action;
use crate::store::Record;
use crate::swarm::objects::ContentKind;
use crate::swarm::{Owner, TaskTrouble};

/// An event a pure step decided on, recorded by the reconcile ([`emit`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// `Normal` or `Warning`.
    pub type_: EventType,
    /// CamelCase cause.
    pub reason: &'static str,
    /// What happened, for people.
    pub message: String,
}

impl Notice {
    /// A notice of `reason`.
    #[must_use]
    pub fn new(type_: EventType, reason: &'static str, message: String) -> Self {
        Self {
            type_,
            reason,
            message,
        }
    }
}

/// Records the events a pure step returned (best effort, as every event).
pub fn emit(ctx: &Context, obj: &Record, notices: &[Notice]) {
    for n in notices {
        event(ctx, obj, n.type_, n.reason, &n.message);
    }
}

/// Sets a condition: `Some(true)` True, `Some(false)` False, `None` Unknown.
pub fn set(
    common: &mut CommonStatus,
    type_: &str,
    ok: Option<bool>,
    reason: &str,
    message: String,
    generation: Option<u64>,
) {
    let s = match ok {
        Some(true) => ConditionStatus::True,
        Some(false) => ConditionStatus::False,
        None => ConditionStatus::Unknown,
    };
    common.set_condition(type_, s, reason, message, generation, Utc::now());
}

/// The conditions while the data plane does not answer: each of `types`
/// Unknown with `reason`, and Ready False (`Starting`). They say why: the
/// slots no node can take (`unassigned`), or else `silent`.
pub fn no_answer(
    common: &mut CommonStatus,
    (types, reason): (&[&str], &str),
    silent: &str,
    unassigned: &[String],
    generation: Option<u64>,
) {
    let why = if unassigned.is_empty() {
        silent.to_owned()
    } else {
        format!(
            "no node can take {}: check spec.placement and node availability",
            unassigned.join(", ")
        )
    };
    for type_ in types {
        set(common, type_, None, reason, why.clone(), generation);
    }
    set(common, "Ready", Some(false), "Starting", why, generation);
}

/// `ReplicasInSync`: whether every replica follows closely, and `message`.
pub fn replicas_in_sync(
    common: &mut CommonStatus,
    ok: bool,
    message: String,
    generation: Option<u64>,
) {
    let reason = if ok { "InSync" } else { "ReplicasBehind" };
    set(
        common,
        "ReplicasInSync",
        Some(ok),
        reason,
        message,
        generation,
    );
}

/// Ends a pass of a stateful kind: records the events its look called
/// for, stamps the generation acted on, writes the status only when it
/// changed (the runtime's only status write of a pass), and says when to
/// look again.
///
/// # Errors
/// Store errors.
pub async fn finish<S: serde::Serialize + PartialEq>(
    ctx: &Context,
    obj: &Record,
    (old, status): (&S, &mut S),
    common: impl Fn(&mut S) -> &mut CommonStatus,
    (notices, under_way): (&[Notice], UnderWay),
) -> Result<Action, ReconcileError> {
    emit(ctx, obj, notices);
    common(status).observed_generation = obj.metadata.generation;
    if status != old {
        crate::runtime::controller::write_status(ctx, obj, status).await?;
    }
    Ok(requeue(common(status), under_way))
}

/// What a pass left under way, for when to look again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnderWay {
    /// A flow holds changes back.
    pub holding: bool,
    /// Swarm is still bringing up a task ([`crate::swarm::tasks::starting`]).
    pub starting: bool,
}

/// `Progressing` while a flow holds changes back (its reason names the
/// flow, its message what waits for what), gone otherwise.
pub fn progressing(common: &mut CommonStatus, holding: Option<&Wait>, generation: Option<u64>) {
    match holding {
        Some(w) => set(
            common,
            "Progressing",
            Some(true),
            w.flow.reason(),
            w.why.clone(),
            generation,
        ),
        None => common.remove_condition("Progressing"),
    }
}

/// The reason `Ready` has while the first healthy look waits for the next.
pub const CONFIRMING: &str = "Confirming";

/// `Ready`: the data plane is `healthy`, the group passes the rollout's
/// health check (`group`), and no change waits. The message is the first
/// reason it is not, else `summary`. A resource that was not Ready becomes
/// Ready only when two looks in a row find it so (reason `Confirming` in
/// between): a member that starts and crashes again, or one that Swarm
/// reports running a moment before its node is found lost, does not make
/// it Ready for the few seconds one look lasts.
pub fn ready(
    common: &mut CommonStatus,
    healthy: bool,
    group: &Result<(), String>,
    holding: Option<&Wait>,
    summary: String,
    generation: Option<u64>,
) {
    let healthy = healthy && group.is_ok();
    let mut ready = healthy && holding.is_none();
    let was = common
        .condition("Ready")
        .map(|c| (c.status, c.reason.as_str()));
    let confirming = ready
        && !matches!(
            was,
            Some((ConditionStatus::True, _) | (ConditionStatus::False, CONFIRMING))
        );
    if confirming {
        ready = false;
    }
    set(
        common,
        "Ready",
        Some(ready),
        if ready {
            "Healthy"
        } else if confirming {
            CONFIRMING
        } else if let (true, Some(w)) = (healthy, holding) {
            w.flow.reason()
        } else {
            "Degraded"
        },
        match (holding, group) {
            (_, Err(why)) => why.clone(),
            (Some(w), _) => w.why.clone(),
            _ if confirming => format!("{summary}; Ready once the next look agrees"),
            _ => summary,
        },
        generation,
    );
}

/// `TasksHealthy`: whether Swarm runs every member's tasks, or which
/// members' it rejects or fails, quoting each one's newest error (see
/// [`crate::swarm::tasks`]). While `Ready` is False, its message says that
/// first: it is why. A Warning event, named by the first cause, each time
/// the set of troubles changes. Pure.
pub fn tasks(
    common: &mut CommonStatus,
    troubles: &[TaskTrouble],
    generation: Option<u64>,
) -> Vec<Notice> {
    const TYPE: &str = "TasksHealthy";
    let Some(first) = troubles.first() else {
        set(
            common,
            TYPE,
            Some(true),
            "TasksRunning",
            "Swarm reports no rejected or failing task".to_owned(),
            generation,
        );
        return Vec::new();
    };
    let message = troubles
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let reason = first.fault.reason();
    let known = common
        .condition(TYPE)
        .is_some_and(|c| c.status == ConditionStatus::False && c.message == message);
    set(
        common,
        TYPE,
        Some(false),
        reason,
        message.clone(),
        generation,
    );
    if let Some(ready) = common
        .condition("Ready")
        .filter(|c| c.status == ConditionStatus::False && !c.message.starts_with(&message))
    {
        let (reason, was) = (ready.reason.clone(), ready.message.clone());
        set(
            common,
            "Ready",
            Some(false),
            &reason,
            format!("{message}; {was}"),
            generation,
        );
    }
    if known {
        Vec::new()
    } else {
        vec![Notice::new(EventType::Warning, reason, message)]
    }
}

/// When to look again: the data plane changes without Swarm events
/// (failovers), so it is polled; a rollout moves on as soon as its last step
/// settles.
pub fn requeue(common: &CommonStatus, under_way: UnderWay) -> Action {
    let ready = common.condition("Ready");
    let confirming = ready.is_some_and(|c| c.reason == CONFIRMING);
    let ready = ready.is_some_and(|c| c.status == ConditionStatus::True);
    Action::requeue(if confirming || under_way.starting {
        // The second look of `ready`: a second is enough for a member that
        // crashed again, or a node found lost, to show. A task on its way
        // up runs or is refused within seconds, and only a look tells which.
        Duration::from_secs(1)
    } else if under_way.holding {
        Duration::from_secs(2)
    } else if ready {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(3)
    })
}

/// The members stuck in a state a pass can see (`stuck`) that stayed so for
/// `grace`: each is recorded in `since` when first seen stuck, forgotten once
/// it is not, and due once `grace` has passed. `since` lives in the status,
/// so a restarted haswarmd keeps counting. Pure.
pub fn overdue(
    stuck: &[String],
    since: &mut BTreeMap<String, chrono::DateTime<Utc>>,
    now: chrono::DateTime<Utc>,
    grace: Duration,
) -> Vec<String> {
    since.retain(|s, _| stuck.contains(s));
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    stuck
        .iter()
        .filter(|s| now - *since.entry((*s).clone()).or_insert(now) >= grace)
        .cloned()
        .collect()
}

/// Removes an owner's services, networks, configs and secrets (not its
/// volumes, nor its slot labels: they say where the volumes are).
///
/// # Errors
/// Engine errors.
pub async fn remove_owned(
    ctx: &Context,
    obj: &Record,
    owner: &Owner,
) -> Result<(), ReconcileError> {
    let report = ctx
        .swarm
        .converge_services(owner, &[], &BTreeMap::new())
        .await?;
    report_services(ctx, obj, &report);
    // A job still running (a backup, say) holds the network.
    for job in ctx.swarm.owned_jobs(owner).await? {
        ctx.swarm.remove_job(&job).await?;
    }
    ctx.swarm.remove_networks(owner).await?;
    for kind in [ContentKind::Config, ContentKind::Secret] {
        ctx.swarm.prune_content_objects(kind, owner, &[]).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcilers::wait::Flow;

    #[test]
    fn task_troubles_are_a_condition_lead_ready_s_message_and_warn_once() {
        use crate::swarm::tasks::TaskFault;
        let trouble = |service: &str, fault, error: &str| TaskTrouble {
            service: service.into(),
            fault,
            error: error.into(),
        };
        let image = trouble("c-redis-0", TaskFault::ImageMissing, "No such image: r:1");
        let mut c = CommonStatus::default();
        set(
            &mut c,
            "Ready",
            Some(false),
            "Starting",
            "no sentinel answers yet".into(),
            None,
        );
        let n = tasks(&mut c, std::slice::from_ref(&image), None);
        assert_eq!(
            n,
            [Notice::new(
                EventType::Warning,
                "ImageMissing",
                "c-redis-0: task rejected: No such image: r:1".into()
            )]
        );
        let t = c.condition("TasksHealthy").expect("condition");
        assert_eq!(
            (t.status, t.reason.as_str()),
            (ConditionStatus::False, "ImageMissing")
        );
        let ready = c.condition("Ready").expect("ready");
        assert_eq!(ready.reason, "Starting");
        assert_eq!(
            ready.message,
            "c-redis-0: task rejected: No such image: r:1; no sentinel answers yet"
        );
        // The next pass: the same trouble, no second event, no second prefix.
        assert!(tasks(&mut c, std::slice::from_ref(&image), None).is_empty());
        assert_eq!(
            c.condition("Ready").expect("ready").message,
            "c-redis-0: task rejected: No such image: r:1; no sentinel answers yet"
        );
        // Another member joins the trouble: a new event.
        let both = [
            image,
            trouble("c-redis-1", TaskFault::CrashLoop, "task: non-zero exit (3)"),
        ];
        assert_eq!(tasks(&mut c, &both, None).len(), 1);
        // A Ready resource keeps its message; no trouble: True.
        set(&mut c, "Ready", Some(true), "Healthy", "fine".into(), None);
        assert!(tasks(&mut c, &[], None).is_empty());
        let t = c.condition("TasksHealthy").expect("condition");
        assert_eq!(
            (t.status, t.reason.as_str()),
            (ConditionStatus::True, "TasksRunning")
        );
        assert_eq!(c.condition("Ready").expect("ready").message, "fine");
    }

    #[test]
    fn a_member_is_due_once_it_stayed_stuck_for_the_grace() {
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
            .expect("time")
            .with_timezone(&chrono::Utc);
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        let both = ["m-1".to_owned(), "m-2".to_owned()];
        let mut since = BTreeMap::new();
        // (seconds, stuck now) -> due, and who is recorded after
        type Row<'a> = (i64, &'a [String], &'a [&'a str], &'a [&'a str]);
        let table: [Row; 5] = [
            (0, &both[..1], &[], &["m-1"]),
            (10, &both, &[], &["m-1", "m-2"]),
            (30, &both, &["m-1"], &["m-1", "m-2"]),
            // m-2 replicates again: forgotten, its clock starts over.
            (35, &both[..1], &["m-1"], &["m-1"]),
            (50, &both[1..], &[], &["m-2"]),
        ];
        for (secs, stuck, due, recorded) in table {
            assert_eq!(
                overdue(stuck, &mut since, at(secs), Duration::from_secs(30)),
                due,
                "at {secs}s"
            );
            assert_eq!(
                since.keys().map(String::as_str).collect::<Vec<_>>(),
                recorded,
                "at {secs}s"
            );
        }
        assert_eq!(since.get("m-2"), Some(&at(50)));
    }

    fn ready_of(c: &CommonStatus) -> (ConditionStatus, String, String) {
        let r = c.condition("Ready").expect("Ready");
        (r.status, r.reason.clone(), r.message.clone())
    }

    #[test]
    fn the_second_look_comes_sooner_than_any_other() {
        let after = |c: &CommonStatus, holding, starting| match requeue(
            c,
            UnderWay { holding, starting },
        ) {
            Action::Requeue(d) => d.as_secs(),
            other => panic!("{other:?}"),
        };
        let mut c = CommonStatus::default();
        assert_eq!(after(&c, false, false), 3, "not Ready: polled");
        assert_eq!(after(&c, false, true), 1, "a task on its way up");
        assert_eq!(after(&c, true, true), 1);
        ready(&mut c, true, &Ok(()), None, "all good".into(), Some(1));
        assert_eq!(after(&c, false, false), 1, "Confirming: the second look");
        assert_eq!(after(&c, true, false), 1);
        ready(&mut c, true, &Ok(()), None, "all good".into(), Some(1));
        assert_eq!(after(&c, false, false), 10, "Ready");
        assert_eq!(after(&c, true, false), 2, "a flow under way");
        assert_eq!(after(&c, false, true), 1, "a rolled member starting");
    }

    #[test]
    fn ready_says_the_first_reason_it_is_not() {
        let mut c = CommonStatus::default();
        ready(&mut c, true, &Ok(()), None, "all good".into(), Some(1));
        assert_eq!(ready_of(&c).1, CONFIRMING, "one healthy look is not enough");
        ready(&mut c, true, &Ok(()), None, "all good".into(), Some(1));
        assert_eq!(
            ready_of(&c),
            (ConditionStatus::True, "Healthy".into(), "all good".into())
        );
        let rotating = Wait::new(Flow::PasswordRotation, "password rotation, phase Use");
        ready(
            &mut c,
            true,
            &Ok(()),
            Some(&rotating),
            "all good".into(),
            Some(1),
        );
        assert_eq!(
            ready_of(&c),
            (
                ConditionStatus::False,
                "PasswordRotation".into(),
                rotating.why.clone()
            ),
            "a healthy resource names the flow that holds it"
        );
        let why = Wait::new(Flow::Rollout, "waiting for db-pg-1");
        ready(
            &mut c,
            true,
            &Ok(()),
            Some(&why),
            "all good".into(),
            Some(1),
        );
        assert_eq!(
            ready_of(&c),
            (
                ConditionStatus::False,
                "RollingUpdate".into(),
                why.why.clone()
            )
        );
        ready(
            &mut c,
            true,
            &Err("db-pg-2 is starting".into()),
            Some(&why),
            String::new(),
            Some(1),
        );
        assert_eq!(
            ready_of(&c),
            (
                ConditionStatus::False,
                "Degraded".into(),
                "db-pg-2 is starting".into()
            )
        );
        progressing(&mut c, Some(&rotating), Some(1));
        let p = c.condition("Progressing").expect("Progressing");
        assert_eq!(
            (p.reason.as_str(), p.message.as_str()),
            ("PasswordRotation", "password rotation, phase Use")
        );
        // Healthy again after Degraded: confirmed first, then Ready.
        ready(&mut c, true, &Ok(()), None, "back".into(), Some(1));
        assert_eq!(
            ready_of(&c),
            (
                ConditionStatus::False,
                CONFIRMING.into(),
                "back; Ready once the next look agrees".into()
            )
        );
        ready(&mut c, false, &Ok(()), None, "down".into(), Some(1));
        assert_eq!(
            ready_of(&c).1,
            "Degraded",
            "a look in between that fails starts over"
        );
        ready(&mut c, true, &Ok(()), None, "back".into(), Some(1));
        assert_eq!(ready_of(&c).1, CONFIRMING);
        ready(&mut c, true, &Ok(()), None, "back".into(), Some(1));
        assert_eq!(ready_of(&c).0, ConditionStatus::True);
        // Ready stays Ready without a second look.
        ready(&mut c, true, &Ok(()), None, "still".into(), Some(1));
        assert_eq!(ready_of(&c).0, ConditionStatus::True);
        progressing(&mut c, None, Some(1));
        assert!(c.condition("Progressing").is_none());
    }
}
