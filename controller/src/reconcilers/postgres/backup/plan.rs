//! The backup flow's choice, pure: which job to start (one at a time per
//! cluster), or that a finished one is to be read. A job is a Swarm job
//! service whose label says what it is for, so a haswarmd restarted while
//! one runs finds it and reads its end, and a request or schedule is never
//! run twice.

use chrono::{DateTime, Utc};
use haswarm_crds::postgres::{parse_schedule, BackupSettings, BackupStatus, BackupType};
use serde::{Deserialize, Serialize};

/// How often archiving and the repositories are looked at while nothing
/// else runs: a failing archiver shows within this and a job's run.
pub const CHECK_EVERY: chrono::Duration = chrono::Duration::seconds(30);

/// Why a backup is taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cause {
    /// A `haswarm.io/backup` request: its value.
    Request(String),
    /// A schedule: its key (`<index>:<schedule>`).
    Schedule(String),
}

/// What a job is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobKind {
    /// Create the stanza in every repository (pgBackRest's `stanza-create`,
    /// which changes nothing where it exists for this database already).
    Stanza,
    /// Take a backup into repository `repository` (0-based).
    Backup {
        /// Index in `spec.backup.repositories`.
        repository: usize,
        /// full, diff or incr.
        kind: BackupType,
        /// Why.
        cause: Cause,
    },
    /// Read the archiver and the repositories' backups.
    Check,
    /// Before a restore: read what the source's repository holds (see
    /// `restore`); no instance runs yet.
    VerifyRestore,
}

/// A job of the cluster's that exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    /// What it is for (its label).
    pub kind: JobKind,
    /// Whether its task ended.
    pub ended: bool,
}

/// What the flow sees.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    /// `spec.backup`.
    pub backup: &'a BackupSettings,
    /// What status recorded.
    pub status: &'a BackupStatus,
    /// The `haswarm.io/backup` annotation.
    pub request: Option<&'a str>,
    /// A job that exists.
    pub running: Option<&'a Running>,
    /// Whether the cluster is settled with a running leader (jobs need one).
    pub settled: bool,
    /// Whether a restore waits for a look into its repository
    /// (`restore::wanted`): the one job that needs no instance.
    pub verify_restore: bool,
    /// When archiving was last looked at.
    pub checked: Option<DateTime<Utc>>,
    /// Now.
    pub now: DateTime<Utc>,
}

/// The flow's next step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do.
    Idle,
    /// A job runs: wait for it.
    Running,
    /// A job ended: read its output, record it, remove it.
    Collect,
    /// Start a job.
    Start(JobKind),
}

/// The type and repository a request's value names: `<token>`, then
/// optional `type=full|diff|incr` and `repository=<name>`. One not given,
/// or not one of those, is the default (full, the first repository).
pub fn parse_request(value: &str) -> (Option<BackupType>, Option<&str>) {
    let mut kind = None;
    let mut repository = None;
    for word in value.split_whitespace().skip(1) {
        if let Some(t) = word.strip_prefix("type=") {
            kind = t.parse().ok();
        } else if let Some(r) = word.strip_prefix("repository=") {
            repository = Some(r);
        }
    }
    (kind, repository)
}

/// The schedules that are due, each as `(key, index)`: the first time after
/// it last fired has come. A schedule never seen fires from its next time
/// (its baseline is recorded first, see [`baselines`]).
pub fn due(
    backup: &BackupSettings,
    status: &BackupStatus,
    now: DateTime<Utc>,
) -> Vec<(String, usize)> {
    backup
        .schedules
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let key = schedule_key(i, &s.schedule);
            let last = status.schedules_fired.get(&key)?;
            let cron = parse_schedule(&s.schedule).ok()?;
            let next = cron.find_next_occurrence(last, false).ok()?;
            (next <= now).then_some((key, i))
        })
        .collect()
}

/// The schedules not seen before: their time starts now.
pub fn baselines(backup: &BackupSettings, status: &BackupStatus) -> Vec<String> {
    backup
        .schedules
        .iter()
        .enumerate()
        .map(|(i, s)| schedule_key(i, &s.schedule))
        .filter(|k| !status.schedules_fired.contains_key(k))
        .collect()
}

/// A schedule's key: a changed schedule is a new one.
pub fn schedule_key(i: usize, schedule: &str) -> String {
    format!("{i}:{schedule}")
}

/// The next step.
pub fn next(f: &Facts<'_>) -> Step {
    match f.running {
        Some(r) if r.ended => return Step::Collect,
        Some(_) => return Step::Running,
        None => {}
    }
    if f.verify_restore {
        return Step::Start(JobKind::VerifyRestore);
    }
    if !f.settled {
        return Step::Idle;
    }
    let stanzas_made = f
        .backup
        .repositories
        .iter()
        .all(|r| f.status.stanzas.contains(&r.name));
    if !stanzas_made {
        return Step::Start(JobKind::Stanza);
    }
    if let Some(value) = f.request {
        if f.status.backup_request_handled.as_deref() != Some(value) {
            let (kind, repository) = parse_request(value);
            let repository = repository
                .and_then(|n| f.backup.repository(n).map(|(i, _)| i))
                .unwrap_or(0);
            return Step::Start(JobKind::Backup {
                repository,
                kind: kind.unwrap_or_default(),
                cause: Cause::Request(value.to_owned()),
            });
        }
    }
    if let Some((key, i)) = due(f.backup, f.status, f.now).into_iter().next() {
        let s = &f.backup.schedules[i];
        let repository = s
            .repository
            .as_deref()
            .and_then(|n| f.backup.repository(n).map(|(i, _)| i))
            .unwrap_or(0);
        return Step::Start(JobKind::Backup {
            repository,
            kind: s.kind,
            cause: Cause::Schedule(key),
        });
    }
    if f.checked.is_none_or(|c| f.now - c >= CHECK_EVERY) {
        return Step::Start(JobKind::Check);
    }
    Step::Idle
}

#[cfg(test)]
mod tests;
