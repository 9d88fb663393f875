//! The backup flow's choices, as a table.

use std::collections::BTreeMap;

use chrono::TimeZone;

use super::*;

fn settings(schedules: &[(&str, &str)]) -> BackupSettings {
    serde_json::from_value(serde_json::json!({
        "repositories": [
            {"name": "s3", "s3": {"endpoint": "s3", "bucket": "backups", "credentialsSecret": {"name": "c"}}},
            {"name": "nfs", "volume": {"sharedVolume": "v"}},
        ],
        "schedules": schedules.iter().map(|(s, t)| serde_json::json!({"schedule": s, "type": t, "repository": "nfs"})).collect::<Vec<_>>(),
    }))
    .expect("settings")
}

fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 6, h, m, s)
        .single()
        .expect("time")
}

fn made() -> BackupStatus {
    BackupStatus {
        stanzas: ["s3", "nfs"].into_iter().map(str::to_owned).collect(),
        ..BackupStatus::default()
    }
}

struct Row {
    what: &'static str,
    status: BackupStatus,
    request: Option<&'static str>,
    running: Option<Running>,
    settled: bool,
    verify_restore: bool,
    checked: Option<DateTime<Utc>>,
    want: Step,
}

fn row(what: &'static str, want: Step) -> Row {
    Row {
        what,
        status: made(),
        request: None,
        running: None,
        settled: true,
        verify_restore: false,
        checked: Some(t(10, 0, 0)),
        want,
    }
}

#[test]
fn the_flow_runs_one_job_at_a_time_in_this_order() {
    let b = settings(&[("*/5 * * * *", "diff")]);
    let mut fired = made();
    fired.schedules_fired = BTreeMap::from([(schedule_key(0, "*/5 * * * *"), t(9, 55, 0))]);
    let mut handled = made();
    handled.backup_request_handled = Some("tok".into());
    let rows = [
        row("a job that ended is read first", Step::Collect),
        row("a running job is waited for", Step::Running),
        row(
            "nothing starts while the cluster is not settled",
            Step::Idle,
        ),
        row("the stanzas come first", Step::Start(JobKind::Stanza)),
        row(
            "then a request",
            Step::Start(JobKind::Backup {
                repository: 1,
                kind: BackupType::Incr,
                cause: Cause::Request("tok type=incr repository=nfs".into()),
            }),
        ),
        row("a request handled is not taken again", Step::Idle),
        row(
            "then a schedule that is due",
            Step::Start(JobKind::Backup {
                repository: 1,
                kind: BackupType::Diff,
                cause: Cause::Schedule(schedule_key(0, "*/5 * * * *")),
            }),
        ),
        row("then a check every 30 s", Step::Start(JobKind::Check)),
        row("a check never made is made", Step::Start(JobKind::Check)),
        row(
            "a restore's look into its repository needs no leader",
            Step::Start(JobKind::VerifyRestore),
        ),
    ];
    let mut rows = rows;
    rows[0].running = Some(Running {
        kind: JobKind::Check,
        ended: true,
    });
    rows[1].running = Some(Running {
        kind: JobKind::Stanza,
        ended: false,
    });
    rows[2].settled = false;
    rows[3].status = BackupStatus::default();
    rows[3].request = Some("tok");
    rows[4].request = Some("tok type=incr repository=nfs");
    rows[4].status = fired.clone();
    rows[5].request = Some("tok");
    rows[5].status = handled;
    rows[6].status = fired;
    rows[7].checked = Some(t(9, 59, 30));
    rows[8].checked = None;
    rows[9].settled = false;
    rows[9].verify_restore = true;
    for r in &rows {
        let f = Facts {
            backup: &b,
            status: &r.status,
            request: r.request,
            running: r.running.as_ref(),
            settled: r.settled,
            verify_restore: r.verify_restore,
            checked: r.checked,
            now: t(10, 0, 0),
        };
        assert_eq!(next(&f), r.want, "{}", r.what);
    }
}

#[test]
fn a_schedule_fires_once_per_time_and_makes_up_one_missed() {
    let b = settings(&[("0 * * * *", "full"), ("* * * * *", "incr")]);
    let mut s = made();
    assert_eq!(
        baselines(&b, &s),
        [schedule_key(0, "0 * * * *"), schedule_key(1, "* * * * *")]
    );
    assert!(due(&b, &s, t(10, 0, 0)).is_empty(), "never seen: not due");
    s.schedules_fired
        .insert(schedule_key(0, "0 * * * *"), t(9, 0, 0));
    s.schedules_fired
        .insert(schedule_key(1, "* * * * *"), t(9, 59, 59));
    assert_eq!(due(&b, &s, t(9, 59, 59)), []);
    assert_eq!(
        due(&b, &s, t(10, 0, 0)),
        [
            (schedule_key(0, "0 * * * *"), 0),
            (schedule_key(1, "* * * * *"), 1)
        ]
    );
    // Down from 09:00 to 13:30: the hourly one fires once, not four times.
    s.schedules_fired
        .insert(schedule_key(0, "0 * * * *"), t(9, 0, 0));
    assert_eq!(due(&b, &s, t(13, 30, 0))[0].0, schedule_key(0, "0 * * * *"));
    s.schedules_fired
        .insert(schedule_key(0, "0 * * * *"), t(13, 30, 0));
    s.schedules_fired
        .insert(schedule_key(1, "* * * * *"), t(13, 30, 0));
    assert!(due(&b, &s, t(13, 30, 30)).is_empty());
}

#[test]
fn requests_read_type_and_repository() {
    assert_eq!(parse_request("tok"), (None, None));
    assert_eq!(
        parse_request("tok type=diff repository=nfs"),
        (Some(BackupType::Diff), Some("nfs"))
    );
    assert_eq!(parse_request("tok type=weekly"), (None, None));
}
