//! The look before a restore, pure: a restored cluster's instances are
//! created only once a job found that the source's backups in the
//! repository reach the target. A restore that cannot work (no stanza at
//! that path, no backup, a target before the first recoverability point)
//! is refused with a condition instead of an instance that crash-loops.

use chrono::{DateTime, Utc};
use haswarm_crds::postgres::{
    BackupRecord, PostgresClusterStatus, Recovery, RestoreCheck, RestoreVerdict,
};
use haswarm_crds::PostgresCluster;

use super::plan::CHECK_EVERY;
use super::report::JobReport;

/// pgBackRest's `info` status of a stanza without a valid backup.
const NO_BACKUP: i64 = 2;

/// The recovery as one string: a changed one is judged again.
pub fn key(r: &Recovery) -> String {
    let target = match (&r.target_time, &r.target_lsn, &r.target_name) {
        (Some(t), _, _) => format!("time {}", t.to_rfc3339()),
        (_, Some(lsn), _) => format!("lsn {lsn}"),
        (_, _, Some(n)) => format!("name {n}"),
        _ => "end".to_owned(),
    };
    format!("{} in {} to {target}", r.source, r.repository)
}

/// Whether the restore has begun: the check said yes once, or it is done.
/// From then on nothing holds the instances (an edit after that is not
/// judged: the data is being restored already).
fn begun(status: &PostgresClusterStatus) -> bool {
    let restored = status
        .common
        .condition(crate::reconcilers::postgres::report::RESTORED)
        .is_some_and(|c| c.status == haswarm_crds::meta::ConditionStatus::True);
    restored
        || status
            .backup
            .restore_check
            .as_ref()
            .is_some_and(|c| c.verdict == RestoreVerdict::Possible)
}

/// Whether the instances wait for the check: a restore not begun, with no
/// member Patroni knows of (a cluster that has some restores already).
pub fn holds_instances(
    pgc: &PostgresCluster,
    status: &PostgresClusterStatus,
    members: bool,
) -> bool {
    pgc.spec.bootstrap.recovery.is_some() && !members && !begun(status)
}

/// Whether a check job is to run now: the instances wait, and the
/// recovery was not judged yet, was edited, or its repository did not
/// answer at the last look.
pub fn wanted(
    pgc: &PostgresCluster,
    status: &PostgresClusterStatus,
    members: bool,
    now: DateTime<Utc>,
) -> bool {
    let Some(r) = &pgc.spec.bootstrap.recovery else {
        return false;
    };
    if !holds_instances(pgc, status, members) {
        return false;
    }
    match &status.backup.restore_check {
        None => true,
        Some(c) if c.recovery != key(r) => true,
        Some(c) => c.verdict == RestoreVerdict::Unknown && now - c.checked >= CHECK_EVERY,
    }
}

/// `0/3000060` as a number.
fn lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// The verdict on what the check job found (`failed`: the step that
/// failed and why, e.g. the repository did not answer).
pub fn judge(
    r: &Recovery,
    report: &JobReport,
    failed: Option<&str>,
    now: DateTime<Utc>,
) -> RestoreCheck {
    let check = |verdict, message: String| RestoreCheck {
        recovery: key(r),
        verdict,
        message,
        checked: now,
    };
    let (source, repo) = (&r.source, &r.repository);
    let unreadable = report.unreadable_reason();
    if let Some(f) = failed.or(unreadable.as_deref()) {
        return check(
            RestoreVerdict::Unknown,
            format!("could not read repository {repo}: {f}"),
        );
    }
    if let Some((code, message)) = &report.stanza_status {
        // 2: no valid backup, said below.
        if *code != 0 && *code != NO_BACKUP {
            return check(
                RestoreVerdict::Impossible,
                format!("repository {repo} has no usable stanza {source} ({message}): is the repository's path the one {source} archived into?"),
            );
        }
    }
    let Some(backups) = report.backups.as_ref().filter(|b| !b.is_empty()) else {
        return check(
            RestoreVerdict::Impossible,
            format!("repository {repo} holds no backup of {source}"),
        );
    };
    let first = backups.iter().map(|b: &BackupRecord| b.stop).min();
    if let (Some(t), Some(first)) = (r.target_time, first) {
        if t < first {
            return check(
                RestoreVerdict::Impossible,
                format!("targetTime {} is before the first recoverability point of {source} in {repo}, {} (the end of its oldest backup)", t.to_rfc3339(), first.to_rfc3339()),
            );
        }
    }
    if let (Some(target), Some(first)) = (
        r.target_lsn.as_deref().and_then(lsn),
        report.first_stop_lsn.as_deref().and_then(lsn),
    ) {
        if target < first {
            return check(
                RestoreVerdict::Impossible,
                format!(
                    "targetLsn {} is before the end of {source}'s oldest backup in {repo}, {}",
                    r.target_lsn.as_deref().unwrap_or_default(),
                    report.first_stop_lsn.as_deref().unwrap_or_default()
                ),
            );
        }
    }
    check(
        RestoreVerdict::Possible,
        format!(
            "{} backup(s) of {source} in {repo}; the first recoverability point is {}",
            backups.len(),
            first.map_or_else(String::new, |f| f.to_rfc3339())
        ),
    )
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn recovery(target: serde_json::Value) -> Recovery {
        let mut v = serde_json::json!({"source": "db", "repository": "s3"});
        if let (Some(o), Some(t)) = (v.as_object_mut(), target.as_object()) {
            o.extend(t.clone());
        }
        serde_json::from_value(v).expect("recovery")
    }

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 6, h, m, 0)
            .single()
            .expect("time")
    }

    fn backup(stop: DateTime<Utc>) -> BackupRecord {
        BackupRecord {
            label: "20261206-100000F".into(),
            kind: haswarm_crds::postgres::BackupType::Full,
            repository: "s3".into(),
            start: stop,
            stop,
            size_bytes: 1,
            repository_size_bytes: 1,
            wal_start: String::new(),
            wal_stop: String::new(),
        }
    }

    fn found(backups: Option<Vec<BackupRecord>>, stanza: Option<(i64, &str)>) -> JobReport {
        JobReport {
            backups,
            stanza_status: stanza.map(|(c, m)| (c, m.to_owned())),
            first_stop_lsn: Some("0/3000100".into()),
            ..JobReport::default()
        }
    }

    /// (what, target, found, failed step) -> verdict, words in the message
    type Row = (
        &'static str,
        serde_json::Value,
        JobReport,
        Option<&'static str>,
        RestoreVerdict,
        &'static str,
    );

    #[test]
    fn the_verdict_follows_what_the_repository_holds() {
        use RestoreVerdict::{Impossible, Possible, Unknown};
        let ok = found(
            Some(vec![backup(t(10, 0)), backup(t(11, 0))]),
            Some((0, "ok")),
        );
        let at = |h| serde_json::json!({"targetTime": t(h, 30).to_rfc3339()});
        let table: Vec<Row> = vec![
            (
                "a target after the first backup",
                at(10),
                ok.clone(),
                None,
                Possible,
                "2 backup(s)",
            ),
            (
                "no target: the end of the WAL",
                serde_json::json!({}),
                ok.clone(),
                None,
                Possible,
                "first recoverability point",
            ),
            (
                "a target before the first backup ended",
                at(9),
                ok.clone(),
                None,
                Impossible,
                "before the first recoverability point",
            ),
            (
                "a wrong path: no stanza",
                at(10),
                found(Some(vec![]), Some((1, "missing stanza path"))),
                None,
                Impossible,
                "missing stanza path",
            ),
            (
                "a stanza without backups",
                at(10),
                found(Some(vec![]), Some((2, "no valid backups"))),
                None,
                Impossible,
                "holds no backup",
            ),
            (
                "info ended well, its repository unreadable",
                at(10),
                JobReport {
                    unreadable: vec![("s3".into(), "other: HostConnectError".into())],
                    ..ok.clone()
                },
                None,
                Unknown,
                "HostConnectError",
            ),
            (
                "an unreachable repository",
                at(10),
                JobReport::default(),
                Some("info: ERROR: [049]"),
                Unknown,
                "ERROR: [049]",
            ),
            (
                "an LSN before the oldest backup",
                serde_json::json!({"targetLsn": "0/2000000"}),
                ok.clone(),
                None,
                Impossible,
                "targetLsn 0/2000000",
            ),
            (
                "an LSN after it",
                serde_json::json!({"targetLsn": "1/0"}),
                ok,
                None,
                Possible,
                "",
            ),
        ];
        for (what, target, report, failed, verdict, words) in table {
            let c = judge(&recovery(target), &report, failed, t(12, 0));
            assert_eq!(c.verdict, verdict, "{what}: {}", c.message);
            assert!(c.message.contains(words), "{what}: {}", c.message);
        }
    }

    fn cluster(recovery: bool) -> PostgresCluster {
        let mut spec = serde_json::json!({});
        if recovery {
            spec = serde_json::json!({"bootstrap": {"recovery": {"source": "db", "repository": "s3", "targetTime": t(10, 30).to_rfc3339()}}});
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "haswarm.io/v1alpha1", "kind": "PostgresCluster",
            "metadata": {"name": "db-r"}, "spec": spec
        }))
        .expect("cluster")
    }

    #[test]
    fn instances_wait_for_a_yes_and_a_check_runs_when_it_is_due() {
        let pgc = cluster(true);
        let r = pgc.spec.bootstrap.recovery.clone().expect("recovery");
        let checked = |verdict, recovery: &str, at| {
            let mut s = PostgresClusterStatus::default();
            s.backup.restore_check = Some(RestoreCheck {
                recovery: recovery.to_owned(),
                verdict,
                message: String::new(),
                checked: at,
            });
            s
        };
        let k = key(&r);
        let now = t(12, 0);
        // (what, recovery set, status, Patroni has members) -> (held, check wanted)
        let table = [
            (
                "not a restore",
                false,
                PostgresClusterStatus::default(),
                false,
                (false, false),
            ),
            (
                "never looked",
                true,
                PostgresClusterStatus::default(),
                false,
                (true, true),
            ),
            (
                "members exist (an older restore)",
                true,
                PostgresClusterStatus::default(),
                true,
                (false, false),
            ),
            (
                "refused: waits for an edit",
                true,
                checked(RestoreVerdict::Impossible, &k, now),
                false,
                (true, false),
            ),
            (
                "refused, then edited",
                true,
                checked(RestoreVerdict::Impossible, "db in s3 to end", now),
                false,
                (true, true),
            ),
            (
                "no answer 10 s ago",
                true,
                checked(
                    RestoreVerdict::Unknown,
                    &k,
                    now - chrono::Duration::seconds(10),
                ),
                false,
                (true, false),
            ),
            (
                "no answer 40 s ago",
                true,
                checked(
                    RestoreVerdict::Unknown,
                    &k,
                    now - chrono::Duration::seconds(40),
                ),
                false,
                (true, true),
            ),
            (
                "possible: goes ahead",
                true,
                checked(RestoreVerdict::Possible, &k, now),
                false,
                (false, false),
            ),
            (
                "possible, then edited: never held again",
                true,
                checked(RestoreVerdict::Possible, "other", now),
                false,
                (false, false),
            ),
        ];
        for (what, rec, status, members, want) in table {
            let pgc = cluster(rec);
            let got = (
                holds_instances(&pgc, &status, members),
                wanted(&pgc, &status, members, now),
            );
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn lsns_compare_as_numbers() {
        assert!(lsn("0/2000000") < lsn("0/3000100"));
        assert!(lsn("0/FFFFFFFF") < lsn("1/0"));
        assert_eq!(lsn("nope"), None);
    }
}
