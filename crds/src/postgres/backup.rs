//! PostgresCluster backups: the repositories pgBackRest archives WAL and
//! takes backups into, their schedules and retention, the restore a new
//! cluster starts from, and what the status reports of them.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::SecretRef;
use crate::validate::{self, Catalog, FieldPath, Report};

/// Annotation asking for a backup now: `<token>`, `<token> type=full|diff|incr`
/// and/or `repository=<name>` (`haswarmctl pg backup` sets it; a new token
/// is a new request).
pub const BACKUP_ANNOTATION: &str = "haswarm.io/backup";

/// pgBackRest numbers repositories 1 to 4.
pub const MAX_REPOSITORIES: usize = 4;

/// Backups and continuous WAL archiving, by pgBackRest. With a repository,
/// every WAL segment the primary completes is archived into each
/// repository, and backups are taken from a healthy replica where there is
/// one (the primary only starts and stops them), so the primary carries
/// no copy load.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupSettings {
    /// Where backups and archived WAL go: 1 to 4 repositories. Each keeps
    /// this cluster's under the stanza `<cluster name>`, so clusters may
    /// share a repository.
    pub repositories: Vec<BackupRepository>,
    /// Backups taken on a schedule. Each runs in the repository it names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<BackupSchedule>,
}

/// One repository: exactly one of `s3` and `volume`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupRepository {
    /// The repository's name (lowercase letters, digits and '-'), by which
    /// schedules, `haswarmctl pg backup --repository` and restores name it.
    pub name: String,
    /// An S3-compatible object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Repository>,
    /// A SharedVolume every node mounts (NFS or another network path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeRepository>,
    /// How many backups, or how many days of them, to keep. Left out,
    /// nothing is expired.
    #[serde(default, skip_serializing_if = "Retention::is_empty")]
    pub retention: Retention,
}

/// The kind of a repository, once validation made sure there is one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RepositoryKind<'a> {
    /// An S3-compatible object store.
    S3(&'a S3Repository),
    /// A SharedVolume.
    Volume(&'a VolumeRepository),
}

impl BackupRepository {
    /// The repository's kind; `None` when it names none or both (which
    /// validation refuses).
    pub fn kind(&self) -> Option<RepositoryKind<'_>> {
        match (&self.s3, &self.volume) {
            (Some(s3), None) => Some(RepositoryKind::S3(s3)),
            (None, Some(v)) => Some(RepositoryKind::Volume(v)),
            _ => None,
        }
    }
}

/// How an S3 endpoint addresses a bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UriStyle {
    /// `https://<bucket>.<endpoint>/...`: AWS's style.
    #[default]
    Host,
    /// `https://<endpoint>/<bucket>/...`: MinIO, SeaweedFS and most servers
    /// run on premises.
    Path,
}

/// An S3-compatible object store, reached over HTTPS (pgBackRest speaks
/// nothing else to S3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Repository {
    /// Host name of the endpoint, with `:port` when it is not 443, e.g.
    /// `s3.eu-west-1.amazonaws.com` or `minio.internal:9000`.
    pub endpoint: String,
    /// The bucket, which must exist (pgBackRest does not create it).
    pub bucket: String,
    /// Folder in the bucket the repository lives under.
    #[serde(default = "default_s3_path")]
    pub path: String,
    /// Region of the bucket.
    #[serde(default = "default_region")]
    pub region: String,
    /// `host` (default) or `path`: see [`UriStyle`].
    #[serde(default)]
    pub uri_style: UriStyle,
    /// Swarm secret holding the credentials as two lines,
    /// `AWS_ACCESS_KEY_ID=...` and `AWS_SECRET_ACCESS_KEY=...`. They are
    /// read from the secret file inside the containers only: never in a
    /// service spec, a log, an event or the status.
    pub credentials_secret: SecretRef,
    /// Verify the endpoint's TLS certificate (on by default). Turn off only
    /// for a test server.
    #[serde(default = "crate::defaults::yes")]
    pub verify_tls: bool,
    /// Swarm secret holding the CA certificate(s), PEM, that signed the
    /// endpoint's certificate, for a private CA. Left out, the image's
    /// system CAs are trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<SecretRef>,
}

fn default_s3_path() -> String {
    "/haswarm".into()
}

fn default_region() -> String {
    "us-east-1".into()
}

/// A SharedVolume as a repository.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeRepository {
    /// The SharedVolume's name. Every node that may run an instance, or a
    /// backup, must reach it: use an NFS or other network volume.
    pub shared_volume: String,
}

/// Retention by the count of full backups, or by their age. pgBackRest
/// expires by one rule per repository, so at most one is given. A
/// differential or incremental backup goes with the full one it depends
/// on; archived WAL is kept from the oldest backup kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retention {
    /// Keep this many full backups (1 to 9999).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_count: Option<u32>,
    /// Keep the full backups needed to restore to any time in the last
    /// this many days (1 to 9999).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_days: Option<u32>,
}

impl Retention {
    fn is_empty(&self) -> bool {
        self.full_count.is_none() && self.full_days.is_none()
    }
}

/// pgBackRest's backup types.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    /// Every file of the cluster.
    #[default]
    Full,
    /// Files changed since the last full backup.
    Diff,
    /// Files changed since the last backup of any type.
    Incr,
}

impl BackupType {
    /// pgBackRest's name (`--type`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Diff => "diff",
            Self::Incr => "incr",
        }
    }
}

impl FromStr for BackupType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(Self::Full),
            "diff" => Ok(Self::Diff),
            "incr" => Ok(Self::Incr),
            other => Err(format!(
                "{other:?} is not a backup type: use full, diff or incr"
            )),
        }
    }
}

/// A backup taken on a schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupSchedule {
    /// When, in cron syntax with five fields (minute hour day month
    /// weekday), in UTC: `0 3 * * 0` is Sundays at 03:00. A time missed
    /// while haswarmd was down is made up once when it is back.
    pub schedule: String,
    /// `full` (default), `diff` or `incr`. A `diff` or `incr` with no full
    /// backup to build on is taken as a full one (pgBackRest's rule).
    #[serde(rename = "type", default)]
    pub kind: BackupType,
    /// The repository's name; left out, the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

/// Parses a schedule: five cron fields, or an error that says what is wrong.
pub fn parse_schedule(s: &str) -> Result<croner::Cron, String> {
    let fields = s.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "{s:?} has {fields} fields: write five, minute hour day-of-month month day-of-week (e.g. \"0 3 * * 0\")"
        ));
    }
    croner::Cron::from_str(s).map_err(|e| format!("{s:?} is not a cron schedule: {e}"))
}

/// A new cluster started from another's backups (`spec.bootstrap.recovery`).
/// Only read when the cluster is first created: it never overwrites a
/// cluster that runs. The restored cluster then archives under its own
/// name, never into its source's stanza.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Recovery {
    /// The cluster whose backups to restore: its name (the stanza in the
    /// repository). It may have been deleted.
    pub source: String,
    /// The repository, one of `spec.backup.repositories` by name, that
    /// holds the source's backups and WAL: where the source archived (same
    /// endpoint, bucket and path, or the same SharedVolume).
    pub repository: String,
    /// Replay WAL up to this time (RFC 3339, e.g.
    /// `2026-12-06T10:15:00Z`) and stop there. At most one target is
    /// given; with none, all the WAL there is is replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_time: Option<DateTime<Utc>>,
    /// Replay up to this WAL position, e.g. `0/3000060`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_lsn: Option<String>,
    /// Replay up to the restore point made with `pg_create_restore_point(name)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_name: Option<String>,
}

/// What pgBackRest reports of one backup in a repository.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupRecord {
    /// pgBackRest's label, e.g. `20261206-101500F`.
    pub label: String,
    /// full, diff or incr.
    #[serde(rename = "type")]
    pub kind: BackupType,
    /// The repository's name.
    pub repository: String,
    /// When it started.
    pub start: DateTime<Utc>,
    /// When it ended.
    pub stop: DateTime<Utc>,
    /// Size of the database it copied, in bytes.
    pub size_bytes: u64,
    /// Size in the repository (compressed, only what this backup stores).
    pub repository_size_bytes: u64,
    /// First WAL segment a restore of it needs.
    pub wal_start: String,
    /// Last WAL segment a restore of it needs.
    pub wal_stop: String,
}

/// The backups and archiving as haswarm last saw them (flattened into the
/// cluster's status).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The repositories, by name, that haswarm created the cluster's
    /// stanza in (a repository added later gets it on the next job).
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub stanzas: std::collections::BTreeSet<String>,
    /// Every backup in the repositories, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<BackupRecord>,
    /// The earliest time a restore can reach: the end of the oldest backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_recoverability_point: Option<DateTime<Utc>>,
    /// When the newest backup that succeeded ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<DateTime<Utc>>,
    /// The last `haswarm.io/backup` request handled (taken or failed; the
    /// events say which).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_request_handled: Option<String>,
    /// When haswarm last read the archiver and the repositories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups_checked: Option<DateTime<Utc>>,
    /// When each schedule (by index in `spec.backup.schedules`, as
    /// `<index>:<schedule>`) last fired: the next time is after it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub schedules_fired: std::collections::BTreeMap<String, DateTime<Utc>>,
    /// The primary's WAL archiver, as last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archiver: Option<ArchiverStatus>,
    /// A restored cluster (`spec.bootstrap.recovery`): what haswarm found
    /// in the repository before it created any instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_check: Option<RestoreCheck>,
}

/// The look into the source's repository that comes before a restore: the
/// instances are created only once it says the target can be reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreCheck {
    /// The recovery it judged (source, repository, target): a recovery
    /// edited before the restore started is judged again.
    pub recovery: String,
    /// What it found.
    pub verdict: RestoreVerdict,
    /// Why, in words (pgBackRest's own where it failed).
    pub message: String,
    /// When.
    pub checked: DateTime<Utc>,
}

/// Whether a restore can reach its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RestoreVerdict {
    /// The source's backups reach the target: the restore goes ahead.
    Possible,
    /// They cannot (no stanza at that path, no backup, a target before
    /// the first recoverability point): nothing is created until the
    /// recovery is edited.
    Impossible,
    /// The repository did not answer: looked at again every 30 s.
    Unknown,
}

/// The primary's WAL archiver (PostgreSQL's `pg_stat_archiver`), and the
/// failures counted across primaries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArchiverStatus {
    /// The instance that was primary when it was read.
    pub primary: String,
    /// The last WAL segment archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_wal: Option<String>,
    /// When it was archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_time: Option<DateTime<Utc>>,
    /// The last WAL segment whose archiving failed (PostgreSQL retries it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_wal: Option<String>,
    /// When it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_time: Option<DateTime<Utc>>,
    /// That primary's own count of failed attempts.
    pub failed_count: u64,
    /// Failed attempts counted across every primary haswarm read (the
    /// metric `haswarm_wal_archive_failures_total`): it only grows.
    pub failures_total: u64,
}

impl ArchiverStatus {
    /// The total once `primary` reports `failed_count`: the same primary's
    /// rise adds to it; another primary's (or a reset's) count adds whole,
    /// as it counted from zero.
    pub fn total_after(&self, primary: &str, failed_count: u64) -> u64 {
        let rise = if primary == self.primary && failed_count >= self.failed_count {
            failed_count - self.failed_count
        } else {
            failed_count
        };
        self.failures_total.saturating_add(rise)
    }
}

fn is_repository_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

impl BackupSettings {
    /// The repository named `name`.
    pub fn repository(&self, name: &str) -> Option<(usize, &BackupRepository)> {
        self.repositories
            .iter()
            .enumerate()
            .find(|(_, r)| r.name == name)
    }

    pub(crate) fn validate(&self, bp: &FieldPath, report: &mut Report, catalog: &dyn Catalog) {
        let rp = bp.key("repositories");
        report.check(
            (1..=MAX_REPOSITORIES).contains(&self.repositories.len()),
            || rp.clone(),
            "backup-repositories-count",
            || {
                format!(
                    "{} repositories: give 1 to {MAX_REPOSITORIES} (pgBackRest's repo1 to repo{MAX_REPOSITORIES})",
                    self.repositories.len()
                )
            },
        );
        for (i, r) in self.repositories.iter().enumerate() {
            report.check(
                !self.repositories[..i].iter().any(|o| o.name == r.name),
                || rp.index(i).key("name"),
                "backup-repository-unique",
                || format!("repository {:?} is named twice", r.name),
            );
            r.validate(&rp.index(i), report, catalog);
        }
        for (i, s) in self.schedules.iter().enumerate() {
            let sp = bp.key("schedules").index(i);
            if let Err(e) = parse_schedule(&s.schedule) {
                report.push(sp.key("schedule"), "backup-schedule", e);
            }
            if let Some(name) = &s.repository {
                report.check(
                    self.repository(name).is_some(),
                    || sp.key("repository"),
                    "backup-repository-exists",
                    || format!("no repository is named {name:?} in spec.backup.repositories"),
                );
            }
        }
    }
}

impl BackupRepository {
    fn validate(&self, rp: &FieldPath, report: &mut Report, catalog: &dyn Catalog) {
        report.check(
            is_repository_name(&self.name),
            || rp.key("name"),
            "backup-repository-name",
            || format!("{:?} is not a repository name: lowercase letters, digits and '-', starting with a letter, at most 32", self.name),
        );
        report.check(
            self.kind().is_some(),
            || rp.clone(),
            "backup-repository-kind",
            || "give exactly one of s3 and volume".into(),
        );
        if let Some(s3) = &self.s3 {
            s3.validate(&rp.key("s3"), report);
        }
        if let Some(v) = &self.volume {
            report.check(
                catalog.contains("SharedVolume", &v.shared_volume),
                || rp.key("volume").key("sharedVolume"),
                "shared-volume-exists",
                || {
                    format!(
                        "SharedVolume {:?} not found {}: apply it first, or in the same batch",
                        v.shared_volume,
                        catalog.scope()
                    )
                },
            );
        }
        let ret = rp.key("retention");
        report.check(
            self.retention.full_count.is_none() || self.retention.full_days.is_none(),
            || ret.clone(),
            "retention-one-rule",
            || "give fullCount or fullDays, not both: pgBackRest expires by one rule per repository".into(),
        );
        for (field, v) in [
            ("fullCount", self.retention.full_count),
            ("fullDays", self.retention.full_days),
        ] {
            if let Some(v) = v {
                report.check(
                    (1..=9999).contains(&v),
                    || ret.key(field),
                    "retention-range",
                    || format!("{v}: use 1 to 9999"),
                );
            }
        }
    }
}

impl S3Repository {
    fn validate(&self, sp: &FieldPath, report: &mut Report) {
        let host = self
            .endpoint
            .rsplit_once(':')
            .map_or(self.endpoint.as_str(), |(h, _)| h);
        let port_ok = self
            .endpoint
            .rsplit_once(':')
            .is_none_or(|(_, p)| p.parse::<u16>().is_ok_and(|p| p > 0));
        report.check(
            !host.is_empty()
                && !self.endpoint.contains("://")
                && !self.endpoint.contains(['/', ' '])
                && port_ok,
            || sp.key("endpoint"),
            "s3-endpoint",
            || {
                format!(
                    "{:?} is not an endpoint: write HOST or HOST:PORT, without https://",
                    self.endpoint
                )
            },
        );
        report.check(
            (3..=63).contains(&self.bucket.len())
                && self
                    .bucket
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'),
            || sp.key("bucket"),
            "s3-bucket",
            || {
                format!(
                    "{:?} is not an S3 bucket name: 3 to 63 lowercase letters, digits, '-' and '.'",
                    self.bucket
                )
            },
        );
        report.check(
            self.path.starts_with('/') && !self.path.contains(char::is_whitespace),
            || sp.key("path"),
            "s3-path",
            || {
                format!(
                    "{:?} is not a path: start it with '/', no spaces",
                    self.path
                )
            },
        );
        report.check(
            !self.region.is_empty() && !self.region.contains(char::is_whitespace),
            || sp.key("region"),
            "s3-region",
            || format!("{:?} is not a region", self.region),
        );
        self.credentials_secret
            .validate(&sp.key("credentialsSecret"), report);
        if let Some(ca) = &self.ca_secret {
            ca.validate(&sp.key("caSecret"), report);
        }
    }
}

impl Recovery {
    /// `own`: the cluster's own name; `backup`: its `spec.backup`.
    pub(crate) fn validate(
        &self,
        rp: &FieldPath,
        own: &str,
        backup: Option<&BackupSettings>,
        report: &mut Report,
    ) {
        validate::check_swarm_object_name(report, rp.key("source"), &self.source);
        report.check(
            self.source != own,
            || rp.key("source"),
            "recovery-source-other",
            || "a cluster cannot be restored from its own stanza: a restore makes a NEW cluster; give it another name".into(),
        );
        report.check(
            backup.is_some_and(|b| b.repository(&self.repository).is_some()),
            || rp.key("repository"),
            "backup-repository-exists",
            || format!("no repository is named {:?} in spec.backup.repositories: the restore reads from it, and the new cluster archives into it under its own name", self.repository),
        );
        let targets = [
            self.target_time.is_some(),
            self.target_lsn.is_some(),
            self.target_name.is_some(),
        ];
        report.check(
            targets.iter().filter(|t| **t).count() <= 1,
            || rp.clone(),
            "recovery-one-target",
            || "give at most one of targetTime, targetLsn and targetName".into(),
        );
        if let Some(lsn) = &self.target_lsn {
            let ok = lsn.split_once('/').is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && a.len() <= 8
                    && b.len() <= 8
                    && a.chars().chain(b.chars()).all(|c| c.is_ascii_hexdigit())
            });
            report.check(
                ok,
                || rp.key("targetLsn"),
                "recovery-lsn",
                || format!("{lsn:?} is not a WAL position: write it as PostgreSQL does, e.g. 0/3000060"),
            );
        }
        if let Some(n) = &self.target_name {
            report.check(
                !n.is_empty() && n.len() < 64 && !n.contains(['\'', '"', '\n']),
                || rp.key("targetName"),
                "recovery-name",
                || format!("{n:?} is not a restore point name (1 to 63 characters, no quotes)"),
            );
        }
    }
}

#[cfg(test)]
mod tests;
