//! Pure slot planning: which node holds each slot of a family, and which
//! incarnation of its member runs there.
//!
//! A slot label's value is the incarnation of the member it pins: `true`
//! for the first one (as labels set before incarnations were counted say),
//! then `1`, `2`, ... each time the slot moves to another node. A member
//! started somewhere new starts empty, so it is a new member, and its
//! service's constraint names the incarnation: a label set on the new node
//! matches only the service rendered for that incarnation, never the old
//! one's spec, and the old node's label matches neither once it is gone.

use std::collections::{BTreeMap, HashMap, HashSet};

use haswarm_crds::common::{Placement, Spread};

use crate::reconcilers::common::{node_matches, user_constraints};
use crate::swarm::NodeInfo;

/// The incarnation a slot label's value names (`true` is the first, 0; a
/// value haswarm did not write counts as the first too).
pub fn incarnation_of(value: &str) -> u32 {
    value.parse().unwrap_or(0)
}

/// The label value of incarnation `n`.
pub fn label_value(n: u32) -> String {
    if n == 0 {
        "true".to_owned()
    } else {
        n.to_string()
    }
}

/// A slot that leaves a lost node for another one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotMove {
    /// The slot label.
    pub label: String,
    /// Host name of the lost node.
    pub from: String,
    /// Host name of the node that takes it.
    pub to: String,
    /// The new member's incarnation.
    pub incarnation: u32,
}

/// What to change on node labels so that every slot of a family is pinned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotPlan {
    /// (node id, label, value) to set. Applied before `remove`: a slot that
    /// moves is on its new node before it leaves the old one, so that an
    /// interrupted move leaves two labels (the higher incarnation wins),
    /// never none (its incarnation count would be lost).
    pub set: Vec<(String, String, String)>,
    /// (node id, label) to remove: slots that no longer exist, moved away,
    /// or stale copies of a slot another node holds at a higher incarnation.
    pub remove: Vec<(String, String)>,
    /// Slot labels no eligible node can take now (e.g. Required spread, too few nodes).
    pub unassigned: Vec<String>,
    /// Slot label -> node host name, after the plan.
    pub placed: BTreeMap<String, String>,
    /// Slot label -> incarnation of its member, after the plan.
    pub incarnations: BTreeMap<String, u32>,
    /// Slots that move off lost nodes.
    pub moved: Vec<SlotMove>,
}

/// Nodes whose slots move: lost (see [`NodeInfo::lost`]), and slots that
/// must stay where they are whatever the node's state.
#[derive(Clone, Debug, Default)]
pub struct Moves<'a> {
    /// Ids of lost nodes.
    pub lost: HashSet<String>,
    /// Slot labels that never move (a master the sentinels still follow:
    /// moving it would start it empty).
    pub stay: &'a [String],
}

/// The incarnation of every slot of a family that some node holds (the
/// highest, where an interrupted move left two).
pub fn incarnations(family: &str, nodes: &[NodeInfo]) -> BTreeMap<String, u32> {
    let mut out: BTreeMap<String, u32> = BTreeMap::new();
    for n in nodes {
        for (k, v) in &n.labels {
            if k.starts_with(family) {
                let e = out.entry(k.clone()).or_default();
                *e = (*e).max(incarnation_of(v));
            }
        }
    }
    out
}

/// Plans slot labels `label(0) .. label(count-1)` of one family (say, a
/// group's data instances): slots already on a node stay there, unless the
/// node is lost (`moves`); a new or moved slot goes to an eligible ready
/// node holding the fewest slots of the family, never one that holds another
/// when spread is `Required`; slots beyond `count` are removed. A moved slot
/// takes the next incarnation. A slot on a lost node that no node can take
/// stays (unassigned): its label keeps its incarnation. `family` is the
/// labels' common prefix.
pub fn plan_slots(
    family: &str,
    count: usize,
    label: impl Fn(usize) -> String,
    nodes: &[NodeInfo],
    placement: &Placement,
    // Node -> how many slots of the whole resource it holds (to balance roles too).
    load: &HashMap<String, usize>,
    moves: &Moves<'_>,
) -> SlotPlan {
    let mut plan = SlotPlan::default();
    // Label -> its holders, highest incarnation first, a node that is there
    // before a lost one.
    let mut holders: BTreeMap<String, Vec<(&NodeInfo, u32)>> = BTreeMap::new();
    for n in nodes {
        for (k, v) in &n.labels {
            let Some(index) = k.strip_prefix(family) else {
                continue;
            };
            match index.parse::<usize>() {
                Ok(i) if i < count => holders
                    .entry(k.clone())
                    .or_default()
                    .push((n, incarnation_of(v))),
                _ => plan.remove.push((n.id.clone(), k.clone())),
            }
        }
    }
    let mut held: HashMap<String, usize> = HashMap::new();
    let mut leaving = Vec::new();
    for (l, mut hs) in holders {
        hs.sort_by_key(|(n, inc)| (std::cmp::Reverse(*inc), moves.lost.contains(&n.id)));
        let (keep, stale) = hs.split_at(1);
        plan.remove
            .extend(stale.iter().map(|(n, _)| (n.id.clone(), l.clone())));
        let (n, inc) = keep[0];
        plan.incarnations.insert(l.clone(), inc);
        plan.placed.insert(l.clone(), n.hostname.clone());
        if moves.lost.contains(&n.id) && !moves.stay.contains(&l) {
            leaving.push((l, n, inc));
        } else {
            *held.entry(n.id.clone()).or_default() += 1;
        }
    }
    let constraints = user_constraints(placement);
    let candidate = |held: &HashMap<String, usize>| {
        nodes
            .iter()
            .filter(|n| n.takes_members() && node_matches(&constraints, n))
            .filter(|n| {
                placement.spread != Spread::Required || held.get(&n.id).copied().unwrap_or(0) == 0
            })
            .min_by_key(|n| {
                (
                    held.get(&n.id).copied().unwrap_or(0),
                    load.get(&n.id).copied().unwrap_or(0),
                    n.hostname.clone(),
                )
            })
    };
    for (l, from, inc) in leaving {
        match candidate(&held) {
            Some(to) => {
                *held.entry(to.id.clone()).or_default() += 1;
                plan.placed.insert(l.clone(), to.hostname.clone());
                plan.incarnations.insert(l.clone(), inc + 1);
                plan.set
                    .push((to.id.clone(), l.clone(), label_value(inc + 1)));
                plan.remove.push((from.id.clone(), l.clone()));
                plan.moved.push(SlotMove {
                    label: l,
                    from: from.hostname.clone(),
                    to: to.hostname.clone(),
                    incarnation: inc + 1,
                });
            }
            None => {
                *held.entry(from.id.clone()).or_default() += 1;
                plan.unassigned.push(l);
            }
        }
    }
    for i in 0..count {
        let l = label(i);
        if plan.placed.contains_key(&l) {
            continue;
        }
        match candidate(&held) {
            Some(n) => {
                *held.entry(n.id.clone()).or_default() += 1;
                plan.placed.insert(l.clone(), n.hostname.clone());
                plan.incarnations.insert(l.clone(), 0);
                plan.set.push((n.id.clone(), l, label_value(0)));
            }
            None => plan.unassigned.push(l),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn node(id: &str, labels: &[(&str, &str)], ready: bool) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            hostname: format!("host-{id}"),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            ready,
            down_since: None,
            drained: false,
            leaving: false,
            role: "worker".into(),
        }
    }

    const FAMILY: &str = "io.haswarm.x.r.slot-";

    fn label(i: usize) -> String {
        format!("{FAMILY}{i}")
    }

    fn set(node: &str, i: usize, value: &str) -> (String, String, String) {
        (node.to_owned(), label(i), value.to_owned())
    }

    fn lost(ids: &[&str]) -> Moves<'static> {
        Moves {
            lost: ids.iter().map(|s| (*s).to_owned()).collect(),
            stay: &[],
        }
    }

    #[test]
    fn label_values_name_incarnations_and_true_is_the_first() {
        assert_eq!(incarnation_of("true"), 0);
        assert_eq!(incarnation_of("3"), 3);
        assert_eq!(incarnation_of("yes"), 0);
        assert_eq!(label_value(0), "true");
        assert_eq!(label_value(2), "2");
    }

    #[test]
    fn slots_spread_keep_their_node_and_shrink() {
        let nodes = [
            node("a", &[("io.haswarm.x.r.slot-1", "true")], true),
            node("b", &[], true),
            node("c", &[], false),
            node("d", &[("disk", "hdd")], true),
        ];
        let mut p = Placement::default();
        p.constraints.push("node.labels.disk!=hdd".into());
        let none = Moves::default();
        let plan = plan_slots(FAMILY, 3, label, &nodes, &p, &HashMap::new(), &none);
        assert_eq!(
            plan.placed.get(&label(1)).map(String::as_str),
            Some("host-a"),
            "kept"
        );
        assert_eq!(plan.set, [set("b", 0, "true")]);
        assert_eq!(
            plan.unassigned,
            [label(2)],
            "c is down, d is excluded, a and b hold one each"
        );
        assert!(plan.moved.is_empty());

        p.spread = Spread::None;
        let plan = plan_slots(FAMILY, 3, label, &nodes, &p, &HashMap::new(), &none);
        assert!(plan.unassigned.is_empty(), "{plan:?}");

        let plan = plan_slots(FAMILY, 1, label, &nodes, &p, &HashMap::new(), &none);
        assert_eq!(plan.remove, [("a".to_owned(), label(1))], "scaled down");
    }

    #[test]
    fn a_slot_leaves_a_lost_node_with_the_next_incarnation_and_its_label_goes() {
        let mut gone = node("a", &[("io.haswarm.x.r.slot-0", "true")], false);
        gone.down_since = Some(chrono::Utc::now() - chrono::Duration::seconds(300));
        let nodes = [gone.clone(), node("b", &[], true)];
        let p = Placement::default();
        let grace = std::time::Duration::from_secs(60);
        assert!(gone.lost(chrono::Utc::now(), grace));
        assert!(!gone.lost(chrono::Utc::now(), std::time::Duration::from_secs(600)));
        let moves = lost(&["a"]);
        let plan = plan_slots(FAMILY, 1, label, &nodes, &p, &HashMap::new(), &moves);
        assert_eq!(plan.set, [set("b", 0, "1")], "set on the new node first");
        assert_eq!(
            plan.remove,
            [("a".to_owned(), label(0))],
            "then gone from a"
        );
        assert_eq!(plan.incarnations.get(&label(0)), Some(&1));
        assert_eq!(
            plan.moved,
            [SlotMove {
                label: label(0),
                from: "host-a".into(),
                to: "host-b".into(),
                incarnation: 1
            }]
        );
        let stay = [label(0)];
        let plan = plan_slots(
            FAMILY,
            1,
            label,
            &nodes,
            &p,
            &HashMap::new(),
            &Moves {
                stay: &stay,
                ..moves
            },
        );
        assert!(plan.remove.is_empty() && plan.set.is_empty(), "{plan:?}");
        assert_eq!(plan.incarnations.get(&label(0)), Some(&0));
        let mut drained = node("b", &[], true);
        drained.drained = true;
        assert!(drained.lost(chrono::Utc::now(), grace));
    }

    #[test]
    fn a_slot_no_node_can_take_stays_on_its_lost_node_keeping_its_incarnation() {
        let nodes = [
            node("a", &[("io.haswarm.x.r.slot-0", "2")], false),
            node("b", &[("io.haswarm.x.r.slot-1", "true")], true),
        ];
        let plan = plan_slots(
            FAMILY,
            2,
            label,
            &nodes,
            &Placement::default(),
            &HashMap::new(),
            &lost(&["a"]),
        );
        assert!(plan.set.is_empty() && plan.remove.is_empty(), "{plan:?}");
        assert_eq!(plan.unassigned, [label(0)]);
        assert_eq!(plan.incarnations.get(&label(0)), Some(&2));
    }

    #[test]
    fn an_interrupted_move_is_finished_the_highest_incarnation_wins() {
        // Set on b, crashed before the label left a: a's copy goes, whether
        // or not a is back.
        for a_ready in [false, true] {
            let nodes = [
                node("a", &[("io.haswarm.x.r.slot-0", "true")], a_ready),
                node("b", &[("io.haswarm.x.r.slot-0", "1")], true),
            ];
            let plan = plan_slots(
                FAMILY,
                1,
                label,
                &nodes,
                &Placement::default(),
                &HashMap::new(),
                &Moves::default(),
            );
            assert_eq!(plan.remove, [("a".to_owned(), label(0))], "{plan:?}");
            assert!(plan.set.is_empty() && plan.moved.is_empty());
            assert_eq!(
                plan.placed.get(&label(0)).map(String::as_str),
                Some("host-b")
            );
            assert_eq!(incarnations(FAMILY, &nodes).get(&label(0)), Some(&1));
        }
    }

    #[test]
    fn moved_slots_avoid_nodes_holding_one_under_required_spread() {
        let nodes = [
            node("a", &[("io.haswarm.x.r.slot-0", "true")], false),
            node("b", &[("io.haswarm.x.r.slot-1", "true")], true),
            node("c", &[("io.haswarm.x.r.slot-2", "true")], true),
            node("d", &[], true),
        ];
        let plan = plan_slots(
            FAMILY,
            3,
            label,
            &nodes,
            &Placement::default(),
            &HashMap::new(),
            &lost(&["a"]),
        );
        assert_eq!(plan.set, [set("d", 0, "1")]);
    }

    #[test]
    fn a_node_being_drained_gives_its_slot_up_and_takes_none() {
        let mut leaving = node("a", &[("io.haswarm.x.r.slot-0", "true")], true);
        leaving.leaving = true;
        let nodes = [leaving, node("b", &[], true), node("c", &[], true)];
        let plan = plan_slots(
            FAMILY,
            2,
            label,
            &nodes,
            &Placement::default(),
            &HashMap::new(),
            &lost(&["a"]),
        );
        assert!(
            plan.set.iter().all(|(n, _, _)| n != "a"),
            "nothing lands on the node being drained: {plan:?}"
        );
        assert_eq!(plan.remove, [("a".to_owned(), label(0))]);
        assert_eq!(plan.set.len(), 2, "{plan:?}");
    }
}
