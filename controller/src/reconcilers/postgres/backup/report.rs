//! What a backup job printed, read back, pure: pgBackRest's `info` (the
//! backups in each repository), the primary's archiver statistics, and
//! the error a failed step ended with. The job marks each line it means
//! for haswarm with [`MARK`]; everything else is pgBackRest's own log.

use chrono::{DateTime, TimeZone, Utc};
use haswarm_crds::postgres::{BackupRecord, BackupSettings, BackupType};
use serde_json::Value;

/// The prefix of the lines a job prints for haswarm.
pub const MARK: &str = "::haswarm::";

/// The primary's `pg_stat_archiver`, as the job read it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Archiver {
    /// The last segment archived, and when.
    pub last_archived: Option<(String, DateTime<Utc>)>,
    /// The last segment that failed, and when.
    pub last_failed: Option<(String, DateTime<Utc>)>,
    /// The primary's count of failed attempts.
    pub failed_count: u64,
    /// The instance it was read on.
    pub primary: String,
}

impl Archiver {
    /// Whether archiving works: a segment arrived, and none failed since.
    pub fn healthy(&self) -> bool {
        match (&self.last_archived, &self.last_failed) {
            (Some(_), None) => true,
            (Some((_, ok)), Some((_, failed))) => ok >= failed,
            (None, _) => false,
        }
    }
}

/// What one job's output says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobReport {
    /// Every backup in the repositories, oldest first (`info` ran).
    pub backups: Option<Vec<BackupRecord>>,
    /// The archiver's statistics (the status step ran).
    pub archiver: Option<Archiver>,
    /// The step that failed and pgBackRest's error (its `ERROR:` line), or
    /// the last line printed.
    pub failed: Option<(String, String)>,
    /// The stanza's status in `info`: pgBackRest's code (0 is ok) and words.
    pub stanza_status: Option<(i64, String)>,
    /// The WAL position the oldest backup ended at (`info`'s `lsn.stop`).
    pub first_stop_lsn: Option<String>,
    /// Repositories `info` could not read (status 99, pgBackRest's "other":
    /// an endpoint that does not answer): name and pgBackRest's words.
    /// `info` itself still ends well then.
    pub unreadable: Vec<(String, String)>,
}

/// pgBackRest's `info` status for an error it has no code of its own for
/// (a repository that does not answer is one).
pub const STATUS_OTHER: i64 = 99;

impl JobReport {
    /// The repositories `info` could not read, as one reason.
    pub fn unreadable_reason(&self) -> Option<String> {
        (!self.unreadable.is_empty()).then(|| {
            self.unreadable
                .iter()
                .map(|(repo, why)| format!("repository {repo}: {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

/// Reads a job's output.
pub fn read(output: &str, backup: &BackupSettings) -> JobReport {
    let mut report = JobReport::default();
    let mut last_error: Option<String> = None;
    let mut last_line: Option<&str> = None;
    for line in output.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix(MARK) {
            let (what, value) = rest
                .trim_start()
                .split_once(' ')
                .unwrap_or((rest.trim(), ""));
            match what {
                "info" => {
                    report.backups = Some(backups(value, backup));
                    (report.stanza_status, report.first_stop_lsn) = stanza(value);
                    report.unreadable = unreadable(value, backup);
                }
                "archiver" => report.archiver = Some(archiver(value)),
                "failed" => {
                    let why = last_error
                        .take()
                        .or_else(|| last_line.map(str::to_owned))
                        .unwrap_or_else(|| "it printed nothing".into());
                    report.failed = Some((value.to_owned(), why));
                }
                _ => {}
            }
        } else if !line.is_empty() {
            if let Some(i) = line.find("ERROR: [") {
                last_error = Some(line[i..].to_owned());
            }
            last_line = Some(line);
        }
    }
    report
}

fn at(secs: &Value) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(secs.as_i64()?, 0).single()
}

/// `pgbackrest info --output=json` (one stanza) as records.
fn backups(json: &str, settings: &BackupSettings) -> Vec<BackupRecord> {
    let Ok(v) = serde_json::from_str::<Value>(json) else {
        return Vec::new();
    };
    let stanzas = v.as_array().cloned().unwrap_or_default();
    let mut out: Vec<BackupRecord> = stanzas
        .iter()
        .flat_map(|s| s["backup"].as_array().cloned().unwrap_or_default())
        .filter(|b| !b["error"].as_bool().unwrap_or(false))
        .filter_map(|b| {
            let key = usize::try_from(b.pointer("/database/repo-key")?.as_u64()?).ok()?;
            Some(BackupRecord {
                label: b["label"].as_str()?.to_owned(),
                kind: b["type"].as_str()?.parse::<BackupType>().ok()?,
                repository: settings
                    .repositories
                    .get(key.checked_sub(1)?)
                    .map_or_else(|| format!("repo{key}"), |r| r.name.clone()),
                start: at(b.pointer("/timestamp/start")?)?,
                stop: at(b.pointer("/timestamp/stop")?)?,
                size_bytes: b.pointer("/info/size").and_then(Value::as_u64).unwrap_or(0),
                repository_size_bytes: b
                    .pointer("/info/repository/delta")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                wal_start: b.pointer("/archive/start")?.as_str()?.to_owned(),
                wal_stop: b.pointer("/archive/stop")?.as_str()?.to_owned(),
            })
        })
        .collect();
    out.sort_by(|a, b| (a.stop, &a.label).cmp(&(b.stop, &b.label)));
    out
}

/// The first stanza's status in `info`, and the stop LSN of its oldest
/// backup.
fn stanza(json: &str) -> (Option<(i64, String)>, Option<String>) {
    let Ok(v) = serde_json::from_str::<Value>(json) else {
        return (None, None);
    };
    let s = &v[0];
    let status = s["status"]["code"].as_i64().map(|c| {
        let words = s["status"]["message"].as_str().unwrap_or_default();
        (c, words.to_owned())
    });
    let oldest = s["backup"]
        .as_array()
        .and_then(|b| {
            b.iter()
                .filter(|b| !b["error"].as_bool().unwrap_or(false))
                .min_by_key(|b| b.pointer("/timestamp/stop").and_then(Value::as_i64))
        })
        .and_then(|b| b.pointer("/lsn/stop")?.as_str().map(str::to_owned));
    (status, oldest)
}

/// The repositories of the first stanza whose status is
/// [`STATUS_OTHER`], by name.
fn unreadable(json: &str, settings: &BackupSettings) -> Vec<(String, String)> {
    let Ok(v) = serde_json::from_str::<Value>(json) else {
        return Vec::new();
    };
    v[0]["repo"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["status"]["code"].as_i64() == Some(STATUS_OTHER))
        .map(|r| {
            let key = r["key"]
                .as_u64()
                .and_then(|k| usize::try_from(k).ok())
                .unwrap_or(0);
            let name = settings
                .repositories
                .get(key.wrapping_sub(1))
                .map_or_else(|| format!("repo{key}"), |r| r.name.clone());
            let why = r["status"]["message"].as_str().unwrap_or("unreadable");
            (name, why.trim().to_owned())
        })
        .collect()
}

/// `wal|epoch|wal|epoch|failed count|instance` as the job prints
/// `pg_stat_archiver` (empty fields where PostgreSQL has none).
fn archiver(value: &str) -> Archiver {
    let f: Vec<&str> = value.split('|').map(str::trim).collect();
    let pair = |wal: Option<&&str>, t: Option<&&str>| -> Option<(String, DateTime<Utc>)> {
        let wal = wal.filter(|w| !w.is_empty())?;
        let secs = t?.split('.').next()?.parse::<i64>().ok()?;
        Some(((*wal).to_owned(), Utc.timestamp_opt(secs, 0).single()?))
    };
    Archiver {
        last_archived: pair(f.first(), f.get(1)),
        last_failed: pair(f.get(2), f.get(3)),
        failed_count: f.get(4).and_then(|c| c.parse().ok()).unwrap_or(0),
        primary: f.get(5).map_or_else(String::new, |p| (*p).to_owned()),
    }
}

/// The first point a restore can reach, and the end of the newest backup.
pub fn recoverability(backups: &[BackupRecord]) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    (
        backups.iter().map(|b| b.stop).min(),
        backups.iter().map(|b| b.stop).max(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BackupSettings {
        serde_json::from_value(serde_json::json!({
            "repositories": [{"name": "s3", "s3": {"endpoint": "s3", "bucket": "backups",
              "credentialsSecret": {"name": "c"}}}]
        }))
        .expect("settings")
    }

    const INFO: &str = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"000000010000000000000007","min":"000000010000000000000001"}],"backup":[{"archive":{"start":"000000010000000000000005","stop":"000000010000000000000005"},"database":{"id":1,"repo-key":1},"error":false,"info":{"delta":40,"repository":{"delta":5,"size":5},"size":40},"label":"20261206-101502F_20261206-102000D","timestamp":{"start":1765015200,"stop":1765015210},"type":"diff"},{"archive":{"start":"000000010000000000000003","stop":"000000010000000000000003"},"database":{"id":1,"repo-key":1},"error":false,"info":{"delta":100,"repository":{"delta":12,"size":12},"size":100},"label":"20261206-101502F","lsn":{"start":"0/3000028","stop":"0/3000100"},"timestamp":{"start":1765015000,"stop":1765015010},"type":"full"}],"name":"db","status":{"code":0,"message":"ok"}}]"#;

    #[test]
    fn info_becomes_records_oldest_first() {
        let out = format!("P00 INFO: backup command end\n{MARK} info {INFO}\n");
        let r = read(&out, &settings());
        let b = r.backups.clone().expect("info read");
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].label, "20261206-101502F");
        assert_eq!(b[0].kind, BackupType::Full);
        assert_eq!(b[0].repository, "s3");
        assert_eq!(b[0].size_bytes, 100);
        assert_eq!(b[0].repository_size_bytes, 12);
        assert_eq!(b[1].kind, BackupType::Diff);
        assert_eq!(b[1].wal_start, "000000010000000000000005");
        let (first, last) = recoverability(&b);
        assert_eq!(first, at(&serde_json::json!(1_765_015_010)));
        assert_eq!(last, at(&serde_json::json!(1_765_015_210)));
        assert_eq!(r.failed, None);
        assert_eq!(r.stanza_status, Some((0, "ok".into())));
        assert_eq!(r.first_stop_lsn.as_deref(), Some("0/3000100"));
        let missing = read(
            &format!("{MARK} info [{{\"backup\":[],\"name\":\"db\",\"status\":{{\"code\":1,\"message\":\"missing stanza path\"}}}}]\n"),
            &settings(),
        );
        assert_eq!(
            missing.stanza_status,
            Some((1, "missing stanza path".into()))
        );
        assert_eq!(missing.backups, Some(vec![]));
        // The S3 server down: info ends well (after about 4 × io-timeout), its
        // repository says 99 (pgBackRest 2.45's words).
        let down = read(
            &format!("{MARK} info [{{\"archive\":[],\"backup\":[],\"name\":\"db\",\"repo\":[{{\"cipher\":\"none\",\"key\":1,\"status\":{{\"code\":99,\"message\":\"[HostConnectError] unable to get address for 's3': [-3] Temporary failure in name resolution\"}}}}],\"status\":{{\"code\":99,\"lock\":{{\"backup\":{{\"held\":false}}}},\"message\":\"other\"}}}}]\n"),
            &settings(),
        );
        let why = down.unreadable_reason().expect("unreadable");
        assert!(
            why.starts_with("repository s3: [HostConnectError] unable to get address"),
            "{why}"
        );
        assert_eq!(r.unreadable_reason(), None);
    }

    #[test]
    fn a_failed_step_quotes_pgbackrests_error() {
        let out = format!(
            "P00 INFO: check command begin\nP00 ERROR: [039]: HTTP request failed with 503\nP00 INFO: check command end: aborted with exception [039]\n{MARK} failed check\n"
        );
        let r = read(&out, &settings());
        assert_eq!(
            r.failed,
            Some((
                "check".into(),
                "ERROR: [039]: HTTP request failed with 503".into()
            ))
        );
        let quiet = read(
            &format!("sh: psql: not found\n{MARK} failed archiver\n"),
            &settings(),
        );
        assert_eq!(
            quiet.failed,
            Some(("archiver".into(), "sh: psql: not found".into()))
        );
    }

    #[test]
    fn archiving_is_healthy_once_a_segment_arrived_after_the_last_failure() {
        let table = [
            ("||||", false),
            ("000000010000000000000003|1765015000|||0|db-pg-0", true),
            (
                "000000010000000000000003|1765015000|000000010000000000000004|1765015100",
                false,
            ),
            (
                "000000010000000000000004|1765015200.123|000000010000000000000004|1765015100",
                true,
            ),
        ];
        for (line, healthy) in table {
            let r = read(&format!("{MARK} archiver {line}\n"), &settings());
            assert_eq!(r.archiver.expect("read").healthy(), healthy, "{line}");
        }
        let a = read(
            &format!("{MARK} archiver 000000010000000000000004|1765015200|000000010000000000000004|1765015100|7|db-pg-1\n"),
            &settings(),
        )
        .archiver
        .expect("read");
        assert_eq!((a.failed_count, a.primary.as_str()), (7, "db-pg-1"));
    }
}
