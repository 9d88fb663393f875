//! Ordered rollouts for replicated data stores: which planned service
//! changes to apply now, which to hold, and when to move the primary role
//! away first. Pure; shared by every kind with a primary (Redis master,
//! Postgres leader) so that they all roll the same way.
//!
//! The rules, in order:
//! 1. New services are created at once: they take nothing down.
//! 2. Members that are not serving (crashed, crash-looping, update paused)
//!    are changed at once: replacing them cannot reduce availability, and
//!    holding them would deadlock a fix for a broken configuration.
//! 3. Any other change waits until the whole group is healthy, and then
//!    only one member changes per step: replicas first, then witnesses
//!    (sentinels, consensus members), then the primary.
//! 4. The primary is never stopped while a healthy replica that stays could
//!    take over: the role is switched over first, and the former primary is
//!    changed on a later step, as a replica.

use std::collections::BTreeMap;

use super::wait::{Flow, Wait};
use crate::swarm::{ServiceChange, ServiceHealth, ServicePlan};

/// A member's part in the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Holds data and follows the primary.
    Replica,
    /// Votes or watches (sentinels, etcd members); holds no user data.
    Witness,
    /// The member writes go to.
    Primary,
}

/// A pending change to one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The service does not exist yet.
    Create,
    /// The service's spec changes (its task restarts).
    Update,
    /// The service goes away (scale down).
    Remove,
}

/// One member as the rollout sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its role now.
    pub role: Role,
    /// Whether it is serving.
    pub serving: bool,
    /// The change waiting for it, if any.
    pub change: Option<Change>,
}

/// What to do in this step.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Services whose change to apply now.
    pub apply: Vec<String>,
    /// Move the primary role away from this member before changing it.
    pub switchover: Option<String>,
    /// Why the remaining changes wait (`None` when nothing remains).
    pub holding: Option<Wait>,
}

impl Step {
    /// Whether changes remain after this step.
    pub fn pending(&self) -> bool {
        self.holding.is_some() || self.switchover.is_some()
    }
}

/// Decides the next step. `group` is `Ok` when the group as a whole is
/// healthy (every member serving, replicas in sync, primary known), or the
/// reason it is not.
pub fn next_step(members: &BTreeMap<String, Member>, group: Result<(), String>) -> Step {
    let mut step = Step::default();
    let mut held: Vec<(&String, &Member)> = Vec::new();
    for (name, m) in members {
        match m.change {
            None => {}
            Some(Change::Create) => step.apply.push(name.clone()),
            Some(_) if !m.serving => step.apply.push(name.clone()),
            Some(_) => held.push((name, m)),
        }
    }
    if held.is_empty() {
        if !step.apply.is_empty() {
            // What the group looked like before this step is no evidence of
            // how it is after: only a later pass that changes nothing may
            // call the rollout done.
            step.holding = Some(rolling(format!(
                "waiting for {} to settle",
                step.apply.join(", ")
            )));
        }
        return step;
    }
    if !step.apply.is_empty() {
        step.holding = Some(rolling(format!(
            "{} change(s) wait until {} settle",
            held.len(),
            step.apply.join(", ")
        )));
        return step;
    }
    if let Err(why) = group {
        step.holding = Some(rolling(format!("{} change(s) wait: {why}", held.len())));
        return step;
    }
    // Replicas first (highest name first: scale-down removes from the top),
    // then witnesses (updates before removals), then the primary.
    held.sort_by(|(an, a), (bn, b)| {
        (a.role, a.change == Some(Change::Remove))
            .cmp(&(b.role, b.change == Some(Change::Remove)))
            .then_with(|| bn.cmp(an))
    });
    let Some(&(name, first)) = held.first() else {
        return step;
    };
    let successor = members.iter().any(|(n, m)| {
        n != name && m.role == Role::Replica && m.serving && m.change != Some(Change::Remove)
    });
    if first.role == Role::Primary && successor {
        step.switchover = Some(name.clone());
        step.holding = Some(rolling(format!(
            "{name} is the primary: switching over before changing it"
        )));
        return step;
    }
    step.apply.push(name.clone());
    step.holding = Some(rolling(if held.len() > 1 {
        format!(
            "{} more change(s) follow one at a time, after {name}",
            held.len() - 1
        )
    } else {
        format!("waiting for {name} to settle")
    }));
    step
}

/// A wait of the rollout's own.
fn rolling(why: String) -> Wait {
    Wait::new(Flow::Rollout, why)
}

/// The first rule of a group's health, the same for every kind: every
/// service serves (a task runs, healthy, and no update is under way). The
/// first that does not is the reason.
pub fn serving(health: &BTreeMap<String, ServiceHealth>) -> Result<(), String> {
    health.iter().try_for_each(|(service, h)| match h {
        ServiceHealth::NotReady(why) => Err(format!("{service}: {why}")),
        ServiceHealth::Running => Ok(()),
    })
}

/// Every member that runs or is planned: data-bearing ones (`holds_data`)
/// are the primary or replicas, the rest witnesses; each with its health and
/// the change the plan holds for it.
pub fn members(
    plan: &ServicePlan,
    health: &BTreeMap<String, ServiceHealth>,
    holds_data: impl Fn(&str) -> bool,
    primary: Option<&str>,
) -> BTreeMap<String, Member> {
    let mut names: Vec<&String> = health.keys().chain(plan.changes.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| {
            let role = if !holds_data(n) {
                Role::Witness
            } else if Some(n.as_str()) == primary {
                Role::Primary
            } else {
                Role::Replica
            };
            let change = plan.changes.get(n).map(|c| match c {
                ServiceChange::Create(_) => Change::Create,
                ServiceChange::Update { .. } => Change::Update,
                ServiceChange::Remove => Change::Remove,
            });
            let member = Member {
                role,
                serving: health.get(n).is_some_and(ServiceHealth::is_running),
                change,
            };
            (n.clone(), member)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(role: Role, serving: bool, change: Option<Change>) -> Member {
        Member {
            role,
            serving,
            change,
        }
    }

    fn group(members: &[(&str, Member)]) -> BTreeMap<String, Member> {
        members
            .iter()
            .map(|(n, m)| ((*n).to_owned(), m.clone()))
            .collect()
    }

    #[test]
    fn a_new_group_is_created_at_once() {
        let g = group(&[
            ("r0", m(Role::Replica, false, Some(Change::Create))),
            ("r1", m(Role::Replica, false, Some(Change::Create))),
            ("s0", m(Role::Witness, false, Some(Change::Create))),
        ]);
        let s = next_step(&g, Err("starting".into()));
        assert_eq!(s.apply, ["r0", "r1", "s0"]);
        assert!(s.pending(), "done only once a pass changes nothing");
        let settled = group(&[("r0", m(Role::Primary, true, None))]);
        assert!(!next_step(&settled, Ok(())).pending());
    }

    #[test]
    fn an_update_goes_replicas_then_witnesses_then_switchover() {
        let all = |primary: &str| {
            group(&[
                (
                    "r0",
                    m(
                        if primary == "r0" {
                            Role::Primary
                        } else {
                            Role::Replica
                        },
                        true,
                        Some(Change::Update),
                    ),
                ),
                (
                    "r1",
                    m(
                        if primary == "r1" {
                            Role::Primary
                        } else {
                            Role::Replica
                        },
                        true,
                        Some(Change::Update),
                    ),
                ),
                ("r2", m(Role::Replica, true, Some(Change::Update))),
                ("s0", m(Role::Witness, true, Some(Change::Update))),
                ("s1", m(Role::Witness, true, Some(Change::Update))),
            ])
        };
        let mut g = all("r0");
        let mut order = Vec::new();
        for _ in 0..10 {
            let s = next_step(&g, Ok(()));
            if let Some(from) = &s.switchover {
                assert!(
                    s.apply.is_empty(),
                    "nothing else changes during a switchover"
                );
                order.push(format!("switchover {from}"));
                if let Some(x) = g.get_mut("r0") {
                    x.role = Role::Replica;
                }
                if let Some(x) = g.get_mut("r1") {
                    x.role = Role::Primary;
                }
                continue;
            }
            assert!(s.apply.len() <= 1, "one member at a time: {s:?}");
            let Some(n) = s.apply.first() else { break };
            order.push(n.clone());
            if let Some(x) = g.get_mut(n) {
                x.change = None;
            }
        }
        assert_eq!(order, ["r2", "r1", "s1", "s0", "switchover r0", "r0"]);
        assert!(g.values().all(|x| x.change.is_none()));
    }

    #[test]
    fn a_group_serves_only_when_every_service_does() {
        let mut h: BTreeMap<String, ServiceHealth> = ["c-redis-0", "c-sentinel-0"]
            .into_iter()
            .map(|n| (n.to_owned(), ServiceHealth::Running))
            .collect();
        assert_eq!(serving(&h), Ok(()));
        assert_eq!(serving(&BTreeMap::new()), Ok(()));
        h.insert(
            "c-sentinel-0".into(),
            ServiceHealth::NotReady("update in progress".into()),
        );
        assert_eq!(
            serving(&h),
            Err("c-sentinel-0: update in progress".to_owned())
        );
    }

    #[test]
    fn nothing_disruptive_happens_while_the_group_is_unhealthy() {
        let g = group(&[
            ("r0", m(Role::Primary, true, Some(Change::Update))),
            ("r1", m(Role::Replica, true, Some(Change::Update))),
        ]);
        let s = next_step(&g, Err("replica r1 is 5 MB behind".into()));
        assert!(s.apply.is_empty() && s.switchover.is_none());
        assert!(s
            .holding
            .as_ref()
            .is_some_and(|h| h.flow == Flow::Rollout && h.why.contains("5 MB behind")));
    }

    #[test]
    fn broken_members_are_fixed_at_once_and_the_rest_waits() {
        let g = group(&[
            ("r0", m(Role::Primary, true, Some(Change::Update))),
            ("s0", m(Role::Witness, false, Some(Change::Update))),
            ("s1", m(Role::Witness, false, Some(Change::Update))),
        ]);
        let s = next_step(&g, Err("sentinels down".into()));
        assert_eq!(s.apply, ["s0", "s1"]);
        assert!(s.pending());
    }

    #[test]
    fn a_lone_primary_is_changed_in_place() {
        let g = group(&[("r0", m(Role::Primary, true, Some(Change::Update)))]);
        let s = next_step(&g, Ok(()));
        assert_eq!(s.apply, ["r0"]);
        assert!(s.switchover.is_none());
    }

    #[test]
    fn scale_down_removes_replicas_from_the_top_and_moves_a_departing_primary() {
        let g = group(&[
            ("r0", m(Role::Replica, true, None)),
            ("r3", m(Role::Replica, true, Some(Change::Remove))),
            ("r4", m(Role::Replica, true, Some(Change::Remove))),
            ("r2", m(Role::Primary, true, Some(Change::Remove))),
        ]);
        assert_eq!(next_step(&g, Ok(())).apply, ["r4"]);
        let g = group(&[
            ("r0", m(Role::Replica, true, None)),
            ("r2", m(Role::Primary, true, Some(Change::Remove))),
        ]);
        assert_eq!(next_step(&g, Ok(())).switchover.as_deref(), Some("r2"));
        // A departing replica is no successor.
        let g = group(&[
            ("r1", m(Role::Replica, true, Some(Change::Remove))),
            ("r0", m(Role::Primary, true, Some(Change::Update))),
        ]);
        let s = next_step(&g, Ok(()));
        assert_eq!(s.apply, ["r1"]);
        assert!(s.switchover.is_none());
    }

    #[test]
    fn witness_updates_come_before_witness_removals() {
        let g = group(&[
            ("s0", m(Role::Witness, true, Some(Change::Update))),
            ("s4", m(Role::Witness, true, Some(Change::Remove))),
        ]);
        assert_eq!(next_step(&g, Ok(())).apply, ["s0"]);
    }
}
