//! Table tests of when a fast failover is asked.

use super::*;
use crate::reconcilers::redis::observe::ReplicaView;

fn rsg(fast: bool) -> RedisSentinelGroup {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "haswarm.io/v1alpha1", "kind": "RedisSentinelGroup",
        "metadata": {"name": "c"},
        "spec": {"sentinels": {"fastFailover": fast, "failoverTimeout": "10s"}}
    }))
    .expect("group")
}

fn at(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + s, 0).expect("time")
}

fn asked(master: &str, s: i64) -> Option<FastFailover> {
    Some(FastFailover {
        master: master.into(),
        sentinel: "c-sentinel-0".into(),
        asked: at(s),
    })
}

#[test]
fn a_failover_is_due_once_per_master_while_status_names_it() {
    // (fast failover on, status.master, asked before) at 100 s →
    // (the master due, what stays recorded)
    type Row = (
        &'static str,
        bool,
        Option<&'static str>,
        Option<FastFailover>,
        Option<&'static str>,
        Option<FastFailover>,
    );
    let table: Vec<Row> = vec![
        (
            "a master that answered",
            true,
            Some("c-redis-0"),
            None,
            Some("c-redis-0"),
            None,
        ),
        ("turned off", false, Some("c-redis-0"), None, None, None),
        (
            "no master (flagged down already, or none yet)",
            true,
            None,
            None,
            None,
            None,
        ),
        (
            "asked for it already",
            true,
            Some("c-redis-0"),
            asked("c-redis-0", 95),
            None,
            asked("c-redis-0", 95),
        ),
        (
            "asked for the one before: the sentinels follow another now",
            true,
            Some("c-redis-1"),
            asked("c-redis-0", 95),
            Some("c-redis-1"),
            None,
        ),
        (
            "asked twice the failover timeout ago (20 s): again",
            true,
            Some("c-redis-0"),
            asked("c-redis-0", 79),
            Some("c-redis-0"),
            None,
        ),
        (
            "while the failover runs, status names no master: kept",
            true,
            None,
            asked("c-redis-0", 95),
            None,
            asked("c-redis-0", 95),
        ),
    ];
    for (case, fast, master, before, want, kept) in table {
        let mut status = RedisSentinelGroupStatus {
            master: master.map(Into::into),
            fast_failover: before,
            ..Default::default()
        };
        let got = due(&rsg(fast), &mut status, at(100));
        assert_eq!(got.as_deref(), want, "{case}");
        assert_eq!(status.fast_failover, kept, "{case}");
    }
}

#[test]
fn a_master_that_stopped_answering_is_still_due() {
    // (status.unreachable_master, asked before) at 100 s, status naming no
    // answering master → (the master due, what stays recorded)
    type Row = (
        &'static str,
        Option<&'static str>,
        Option<FastFailover>,
        Option<&'static str>,
        Option<FastFailover>,
    );
    let table: Vec<Row> = vec![
        (
            "the pass in flight at the kill saw its link drop",
            Some("c-redis-0"),
            None,
            Some("c-redis-0"),
            None,
        ),
        (
            "asked for it already",
            Some("c-redis-0"),
            asked("c-redis-0", 95),
            None,
            asked("c-redis-0", 95),
        ),
        (
            "the sentinels follow the promoted one, not answering yet",
            Some("c-redis-1"),
            asked("c-redis-0", 95),
            Some("c-redis-1"),
            None,
        ),
    ];
    for (case, unreachable, before, want, kept) in table {
        let mut status = RedisSentinelGroupStatus {
            unreachable_master: unreachable.map(Into::into),
            fast_failover: before,
            ..Default::default()
        };
        let got = due(&rsg(true), &mut status, at(100));
        assert_eq!(got.as_deref(), want, "{case}");
        assert_eq!(status.fast_failover, kept, "{case}");
    }
}

fn replica(host: &str, flags: &str, priority: u32) -> ReplicaView {
    ReplicaView {
        host: host.into(),
        link_up: false,
        offset: Some(100),
        flags: flags.into(),
        priority: Some(priority),
    }
}

fn view(tilt: bool, master: &str, flags: &str, replicas: Vec<ReplicaView>) -> SentinelView {
    SentinelView {
        tilt,
        master: Some(master.into()),
        master_flags: flags.into(),
        replicas,
        ..SentinelView::default()
    }
}

fn offsets(rows: &[(&str, &str, u64)]) -> BTreeMap<String, (String, u64)> {
    rows.iter()
        .map(|(h, r, o)| ((*h).to_owned(), ((*r).to_owned(), *o)))
        .collect()
}

/// (case, the sentinel's view, each replica's role and offset) → verdict
type VerdictRow = (
    &'static str,
    SentinelView,
    BTreeMap<String, (String, u64)>,
    Result<(), &'static str>,
);

#[test]
fn a_sentinel_is_asked_only_when_every_replica_it_could_promote_is_complete() {
    let both = || {
        vec![
            replica("c-redis-1", "slave", 100),
            replica("c-redis-2", "slave", 100),
        ]
    };
    let even = offsets(&[("c-redis-1", "slave", 500), ("c-redis-2", "slave", 500)]);
    let table: Vec<VerdictRow> = vec![
        (
            "both replicas complete",
            view(false, "c-redis-0", "master", both()),
            even.clone(),
            Ok(()),
        ),
        (
            "the master's incarnation named as announced",
            view(false, "c-redis-0-i2", "master", both()),
            even.clone(),
            Ok(()),
        ),
        (
            "in TILT: it would act only after",
            view(true, "c-redis-0", "master", both()),
            even.clone(),
            Err("it is in TILT mode"),
        ),
        (
            "it follows another master",
            view(false, "c-redis-1", "master", both()),
            even.clone(),
            Err("it follows c-redis-1"),
        ),
        (
            "it flags the master down: its own failover is near",
            view(false, "c-redis-0", "master,s_down", both()),
            even.clone(),
            Err("the sentinels act already (master,s_down)"),
        ),
        (
            "a failover runs",
            view(false, "c-redis-0", "master,failover_in_progress", both()),
            even.clone(),
            Err("the sentinels act already (master,failover_in_progress)"),
        ),
        (
            "a replica behind the other",
            view(false, "c-redis-0", "master", both()),
            offsets(&[("c-redis-1", "slave", 500), ("c-redis-2", "slave", 420)]),
            Err("replica c-redis-2 is 80 bytes behind another"),
        ),
        (
            "a replica that did not answer may hold more",
            view(false, "c-redis-0", "master", both()),
            offsets(&[("c-redis-1", "slave", 500)]),
            Err("replica c-redis-2 did not answer"),
        ),
        (
            "a replica down to the sentinel, behind: not a candidate",
            view(
                false,
                "c-redis-0",
                "master",
                vec![
                    replica("c-redis-1", "slave", 100),
                    replica("c-redis-2", "slave,s_down", 100),
                ],
            ),
            offsets(&[("c-redis-1", "slave", 500), ("c-redis-2", "slave", 420)]),
            Ok(()),
        ),
        (
            "the complete one has priority 0: never promoted",
            view(
                false,
                "c-redis-0",
                "master",
                vec![
                    replica("c-redis-1", "slave", 0),
                    replica("c-redis-2", "slave", 100),
                ],
            ),
            offsets(&[("c-redis-1", "slave", 500), ("c-redis-2", "slave", 420)]),
            Err("replica c-redis-2 is 80 bytes behind another"),
        ),
        (
            "a replica that says it is master",
            view(false, "c-redis-0", "master", both()),
            offsets(&[("c-redis-1", "master", 500), ("c-redis-2", "slave", 500)]),
            Err("replica c-redis-1 is master"),
        ),
        (
            "no replica known",
            view(false, "c-redis-0", "master", vec![]),
            offsets(&[]),
            Err("it knows no replica it could promote"),
        ),
    ];
    for (case, v, o, want) in table {
        assert_eq!(
            verdict(&v, &o, "c-redis-0"),
            want.map_err(String::from),
            "{case}"
        );
    }
}

#[test]
fn the_probe_prints_what_the_verdict_reads() {
    let out =
        "#sentinel\r\nsentinel_tilt:0\r\n#master\nname\nc-master\nip\nc-redis-0\nflags\nmaster\n\
               #replicas\nname\nc-redis-1:6379\nip\nc-redis-1\nflags\nslave\nslave-priority\n100\n\
               name\nc-redis-2:6379\nip\nc-redis-2\nflags\nslave\nslave-priority\n0\n\
               #offsets\nc-redis-2 slave 480\nc-redis-1 slave 500\nnot a line\n";
    let (v, o) = parse_probe(out);
    assert!(!v.tilt);
    assert_eq!(v.master.as_deref(), Some("c-redis-0"));
    assert_eq!(v.replicas.len(), 2);
    assert_eq!(v.replicas[1].priority, Some(0));
    assert_eq!(
        o,
        offsets(&[("c-redis-1", "slave", 500), ("c-redis-2", "slave", 480)])
    );
    // c-redis-2 is behind but never promoted: c-redis-1 holds everything.
    assert_eq!(verdict(&v, &o, "c-redis-0"), Ok(()));
}

#[test]
fn the_probe_script_is_valid_shell_and_reads_every_replica() {
    let script = probe_script("c-master", observe::OWN_SENTINEL);
    observe::assert_valid_shell(&script);
    assert!(script.contains("SENTINEL replicas c-master"));
    assert!(script.contains("slave_repl_offset"));
    // Every replica at once: one that does not answer costs its timeout once.
    assert!(script.contains(") & done; wait"));
}

#[test]
fn a_sentinel_that_flags_the_master_down_or_fails_it_over_stops_the_asking() {
    for (flags, want) in [
        ("master", false),
        ("master,s_down", true),
        ("master,s_down,o_down", true),
        (
            "master,disconnected,failover_in_progress,force_failover",
            true,
        ),
    ] {
        assert_eq!(
            acting(&view(false, "c-redis-0", flags, vec![])),
            want,
            "{flags}"
        );
    }
}
