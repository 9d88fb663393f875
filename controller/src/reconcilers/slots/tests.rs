//! Unit tests of slot pinning: families, stays, node events, down times.

use super::*;

#[test]
fn only_reclaim_policy_delete_takes_a_leaving_members_volume() {
    let storage = Storage::default();
    assert!(Retire::of(ReclaimPolicy::Retain, "img", &storage).is_none());
    assert!(Retire::of(ReclaimPolicy::Delete, "img", &storage).is_some_and(|r| r.image == "img"));
}

#[test]
fn a_node_holding_members_is_reported_once_down_and_once_back() {
    let families = [Family {
        count: 2,
        slot: Box::new(|i| format!("io.haswarm.x.db.pg.slot-{i}")),
        service: Box::new(|i| format!("db-pg-{i}")),
        retire: None,
    }];
    let since = Utc::now();
    let down = NodeInfo {
        id: "n2".into(),
        hostname: "node2".into(),
        labels: HashMap::from([("io.haswarm.x.db.pg.slot-1".to_owned(), "true".to_owned())]),
        ready: false,
        role: "worker".into(),
        down_since: Some(since),
        drained: false,
        leaving: false,
    };
    let empty_down = NodeInfo {
        id: "n3".into(),
        hostname: "node3".into(),
        labels: HashMap::new(),
        ..down.clone()
    };
    let now = unavailable(&[down.clone(), empty_down.clone()], &families, &[]);
    assert_eq!(
        now,
        [UnavailableNode {
            node: "node2".into(),
            since: Some(since),
            members: vec!["db-pg-1".into()],
        }],
        "a node holding nothing of this resource is not its business"
    );
    let grace = std::time::Duration::from_secs(30);
    let events = node_events(&[], &now, grace);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1, "NodeDown");
    assert!(
        events[0].2.contains("node node2 is down") && events[0].2.contains("within 30s"),
        "{events:?}"
    );
    assert!(node_events(&now, &now, grace).is_empty(), "said once");
    // Its slots moved away while it is down: still listed, no return.
    let moved = NodeInfo {
        labels: HashMap::new(),
        ..down.clone()
    };
    assert_eq!(unavailable(&[moved], &families, &now), now);
    assert!(
        unavailable(&[empty_down], &families, &now).is_empty(),
        "another node"
    );
    let back = node_events(&now, &[], grace);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].1, "NodeReturned");
    assert!(back[0].2.contains("db-pg-1"), "{back:?}");
    let drained = NodeInfo {
        ready: true,
        down_since: None,
        drained: true,
        leaving: false,
        ..down
    };
    let d = unavailable(std::slice::from_ref(&drained), &families, &[]);
    assert!(node_events(&[], &d, grace)[0].2.contains("is drained"));
    // Marked by haswarmctl node drain (Swarm's availability still active):
    // listed the same way, with no down time.
    let marked = NodeInfo {
        drained: false,
        leaving: true,
        ..drained
    };
    let d = unavailable(&[marked], &families, &[]);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].since, None);
    assert!(node_events(&[], &d, grace)[0].2.contains("is drained"));
}

#[test]
fn a_node_keeps_the_down_time_first_recorded_when_haswarm_edits_it() {
    let first = Utc::now() - chrono::Duration::seconds(40);
    let edited = Utc::now() - chrono::Duration::seconds(5);
    let node = |hostname: &str, down_since: Option<chrono::DateTime<Utc>>| NodeInfo {
        id: hostname.into(),
        hostname: hostname.into(),
        labels: HashMap::new(),
        ready: down_since.is_none(),
        role: "worker".into(),
        down_since,
        drained: false,
        leaving: false,
    };
    let recorded = |node: &str| UnavailableNode {
        node: node.into(),
        since: Some(first),
        members: vec!["db-pg-1".into()],
    };
    let grace = std::time::Duration::from_secs(30);
    let nodes = [
        node("node2", Some(edited)),
        node("node3", Some(edited)),
        node("node4", None),
    ];
    let seen = down_since_first_seen(&nodes, &[recorded("node2"), recorded("node4")]);
    // The label edit 5 s ago does not restart node2's 30 s grace.
    assert_eq!(seen[0].down_since, Some(first));
    assert!(seen[0].lost(Utc::now(), grace));
    // A node no status recorded: Swarm's time.
    assert_eq!(seen[1].down_since, Some(edited));
    assert!(!seen[1].lost(Utc::now(), grace));
    // A node that answers is not down, whatever status said.
    assert_eq!(seen[2].down_since, None);
}

/// Instances `db-pg-<i>` pinned by `io.haswarm.x.db.pg.slot-<i>`.
fn pg_family(count: usize) -> Family<'static> {
    Family {
        count,
        slot: Box::new(|i| format!("io.haswarm.x.db.pg.slot-{i}")),
        service: Box::new(|i| format!("db-pg-{i}")),
        retire: None,
    }
}

#[test]
fn a_family_knows_its_labels() {
    let f = pg_family(3);
    assert_eq!(f.prefix(), "io.haswarm.x.db.pg.slot-");
    assert_eq!(f.index("io.haswarm.x.db.pg.slot-12"), Some(12));
    assert_eq!(f.index("io.haswarm.x.db.etcd.slot-1"), None);
    let node = NodeInfo {
        id: "n".into(),
        hostname: "h".into(),
        labels: HashMap::from([
            ("io.haswarm.x.db.pg.slot-1".to_owned(), "true".to_owned()),
            ("other".to_owned(), "true".to_owned()),
        ]),
        ready: true,
        role: "worker".into(),
        down_since: None,
        drained: false,
        leaving: false,
    };
    assert_eq!(f.volume(4), "db-pg-4-data");
    assert_eq!(stay(&f, Some("db-pg-1")), ["io.haswarm.x.db.pg.slot-1"]);
    assert_eq!(stay(&f, None).len(), 3);
    let v = slot_volumes(&[node], &[f]);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].volume, "db-pg-1-data");
}

#[test]
fn on_a_node_haswarm_drains_only_the_primary_and_quorum_stay() {
    let f = Family {
        count: 3,
        slot: Box::new(|i| format!("io.haswarm.x.db.pg.slot-{i}")),
        service: Box::new(|i| format!("db-pg-{i}")),
        retire: None,
    };
    let node = |id: &str, slots: &[usize], ready: bool, leaving: bool| NodeInfo {
        id: id.into(),
        hostname: format!("host-{id}"),
        labels: slots
            .iter()
            .map(|i| ((f.slot)(*i), "1".to_owned()))
            .collect(),
        ready,
        role: "worker".into(),
        down_since: (!ready).then(Utc::now),
        drained: false,
        leaving,
    };
    // Slot 0 on a node haswarm drains, 1 on a node whose engine stopped.
    let nodes = [node("a", &[0], true, true), node("b", &[1], false, false)];
    assert!(nodes[0].draining() && !nodes[0].takes_members());
    assert!(nodes[0].lost(Utc::now(), std::time::Duration::from_secs(600)));
    assert!(!nodes[1].draining());
    let all = vec![(f.slot)(0), (f.slot)(1)];
    let seen_serving = Stay {
        always: Vec::new(),
        serving: all.clone(),
    };
    // Serving keeps a member on a node that stopped answering Swarm, not
    // on one being drained; a running task counts the same way.
    assert_eq!(kept(&nodes, &seen_serving, Vec::new()), [(f.slot)(1)]);
    assert_eq!(kept(&nodes, &Stay::default(), all.clone()), [(f.slot)(1)]);
    // The primary (or a quorum's member) stays wherever it is.
    let primary = Stay {
        always: vec![(f.slot)(0)],
        serving: Vec::new(),
    };
    assert_eq!(kept(&nodes, &primary, Vec::new()), [(f.slot)(0)]);
    assert_eq!(
        draining(&nodes, &f),
        BTreeMap::from([("db-pg-0".to_owned(), "host-a".to_owned())])
    );
    // A node marked for draining that is down is simply down.
    let down_marked = [node("c", &[2], false, true)];
    assert!(draining(&down_marked, &f).is_empty());
    assert_eq!(
        kept(&down_marked, &Stay::default(), vec![(f.slot)(2)]),
        [(f.slot)(2)]
    );
}

#[test]
fn a_moved_members_volume_is_stale_on_the_node_it_left_until_the_slot_returns() {
    let moved = |service: &str, from: &str, to: &str| {
        (
            service.to_owned(),
            SlotMove {
                label: format!("slot-of-{service}"),
                from: from.into(),
                to: to.into(),
                incarnation: 1,
            },
        )
    };
    let left = |volume: &str, node: &str| LeftVolume {
        volume: volume.into(),
        node: node.into(),
    };
    let after = left_after_moves(&[], &[moved("db-pg-1", "node2", "node4")]);
    assert_eq!(after, [left("db-pg-1-data", "node2")]);
    // Recorded once, however often the pass repeats.
    let again = left_after_moves(&after, &[moved("db-pg-1", "node2", "node4")]);
    assert_eq!(again, after);
    // It moves on, then back to node2: stale on node4, current on node2.
    let back = left_after_moves(&after, &[moved("db-pg-1", "node4", "node2")]);
    assert_eq!(back, [left("db-pg-1-data", "node4")]);
}

#[test]
fn stale_copies_are_those_of_the_family_not_on_the_slots_node() {
    let family = pg_family(3);
    let node = |host: &str| NodeInfo {
        id: host.into(),
        hostname: host.into(),
        labels: HashMap::new(),
        ready: true,
        role: "worker".into(),
        down_since: None,
        drained: false,
        leaving: false,
    };
    let (node2, node4) = (node("node2"), node("node4"));
    let current = SlotVolume {
        volume: "db-pg-1-data".into(),
        slot: "io.haswarm.x.db.pg.slot-1".into(),
    };
    let left = |volume: &str, node: &str| LeftVolume {
        volume: volume.into(),
        node: node.into(),
    };
    let recorded = [
        left("db-pg-1-data", "node2"),
        left("db-pg-1-data", "node4"),
        left("db-etcd-1-data", "node2"),
    ];
    // The slot is on node4 now: its volume there is the member's.
    let stale = stale_copies(&recorded, &family, &[(&current, Some(&node4))]);
    assert_eq!(stale, [left("db-pg-1-data", "node2")]);
    let stale = stale_copies(&recorded, &family, &[(&current, Some(&node2))]);
    assert_eq!(stale, [left("db-pg-1-data", "node4")]);
}

#[test]
fn what_a_pin_changed_is_said_as_notices_and_recorded_in_status() {
    let lost = |node: &str, since: bool| UnavailableNode {
        node: node.into(),
        since: since.then(Utc::now),
        members: vec!["db-pg-1".into()],
    };
    let moved = |from: &str| {
        (
            "db-pg-1".to_owned(),
            SlotMove {
                label: "io.haswarm.x.db.pg.slot-1".into(),
                from: from.into(),
                to: "node4".into(),
                incarnation: 1,
            },
        )
    };
    // (nodes unavailable before, now, moves, erased) -> reasons, in order
    type Row = (
        Vec<UnavailableNode>,
        Vec<UnavailableNode>,
        Vec<(String, SlotMove)>,
        Vec<String>,
        &'static [&'static str],
    );
    let table: [Row; 5] = [
        (vec![], vec![], vec![], vec![], &[]),
        (
            vec![],
            vec![lost("node2", true)],
            vec![],
            vec![],
            &["NodeDown"],
        ),
        (
            vec![lost("node2", true)],
            vec![lost("node2", true)],
            vec![moved("node2")],
            vec![],
            &["SlotMoved"],
        ),
        (
            vec![lost("node2", true)],
            vec![],
            vec![],
            vec![],
            &["NodeReturned"],
        ),
        (
            vec![],
            vec![],
            vec![],
            vec!["db-pg-3-data".into()],
            &["VolumesReclaimed"],
        ),
    ];
    for (before, now, moves, erased, want) in table {
        let mut common = CommonStatus {
            unavailable_nodes: before.clone(),
            ..Default::default()
        };
        let placed = Placed {
            unassigned: vec!["io.haswarm.x.db.pg.slot-2".into()],
            reclaimed: Reclaimed {
                erased,
                ..Default::default()
            },
            moved: moves.clone(),
            unavailable: now.clone(),
            ..Default::default()
        };
        let mut notices = Vec::new();
        let (unassigned, _) = placed.report(
            std::time::Duration::from_secs(30),
            &mut common,
            &mut notices,
        );
        let reasons: Vec<&str> = notices.iter().map(|n| n.reason).collect();
        assert_eq!(reasons, want, "{before:?} -> {now:?}");
        assert_eq!(unassigned, ["io.haswarm.x.db.pg.slot-2"]);
        assert_eq!(common.unavailable_nodes, now);
        if !moves.is_empty() {
            // The moved member's volume stays on the node it left, named.
            assert_eq!(common.left_volumes.len(), 1);
            assert!(notices[0]
                .message
                .contains("left the lost node node2 for node4"));
        }
    }
}
