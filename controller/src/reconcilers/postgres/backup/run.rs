//! The backup flow's acting part: finds the cluster's job, reads one that
//! ended into status, conditions and events, and starts the job the plan
//! chose (see `plan`).

use chrono::Utc;
use haswarm_crds::postgres::{PostgresClusterStatus, RestoreVerdict, BACKUP_ANNOTATION};
use haswarm_crds::{EventType, PostgresCluster};

use super::conf;
use super::plan::{self, Cause, JobKind, Running, Step};
use super::report::{self, MARK};
use super::restore;
use super::{BackupSecrets, PREPARE};
use crate::reconcilers::common::secret_ref;
use crate::reconcilers::postgres::render::{self, PG_PORT};
use crate::reconcilers::status::{self, Notice};
use crate::runtime::{Context, ReconcileError};
use crate::swarm::jobs::{JobOutcome, JobState, NodeJob};
use crate::swarm::Owner;

/// The label holding what a job is for.
const JOB_LABEL: &str = "io.haswarm.backup-job";
/// Condition: WAL segments reach the repositories.
pub const ARCHIVING: &str = "ContinuousArchiving";
/// Condition: the last backup job worked and backups exist.
pub const HEALTHY: &str = "BackupsHealthy";
/// Where the superuser's password is, in a job.
const SUPERUSER_FILE: &str = "pg-superuser-password";
/// The job's own pgBackRest file.
const JOB_CONF: &str = "/tmp/pgbackrest-job.conf";

/// `<name>-backup`: the cluster's one backup job.
pub fn job_name(name: &str) -> String {
    format!("{name}-backup")
}

/// Who a job reaches: the leader, and the standby it copies from.
#[derive(Clone, Copy, Debug)]
pub struct Hosts<'a> {
    /// The running leader.
    pub leader: &'a str,
    /// A streaming replica in sync, if any.
    pub standby: Option<&'a str>,
}

/// The job's shell script, pure: prepare the credentials, run the step as
/// postgres, then read the archiver (on the leader) and the repositories.
pub fn script(pgc: &PostgresCluster, kind: &JobKind, hosts: Hosts<'_>) -> String {
    let name = pgc.metadata.name.as_str();
    let Some(backup) = &pgc.spec.backup else {
        return "echo 'haswarm: no spec.backup'; exit 1".into();
    };
    if *kind == JobKind::VerifyRestore {
        return verify_script(pgc);
    }
    let mut list = vec![hosts.leader.to_owned()];
    list.extend(hosts.standby.map(str::to_owned));
    let job_conf = conf::job_conf(name, backup, &list);
    let pgbr = format!(
        "runuser -u postgres -- {}",
        conf::command_with(JOB_CONF, name)
    );
    let step = match kind {
        // `check` switches WAL and waits for it in the repositories: the
        // archiver retries a segment that failed before the stanza existed
        // at once, not a minute later. Its failure is the next check's news.
        JobKind::Stanza => {
            format!("run stanza-create {pgbr} stanza-create\n{pgbr} check 2>&1 || true")
        }
        JobKind::Backup {
            repository, kind, ..
        } => format!(
            // A copy may wait on a busy store longer than archiving should.
            "run backup {pgbr} --io-timeout=60 --repo={} --type={} backup",
            repository + 1,
            kind.as_str()
        ),
        JobKind::Check | JobKind::VerifyRestore => String::new(),
    };
    let archiver = format!(
        "PGPASSWORD=\"$(cat /run/secrets/{SUPERUSER_FILE})\" psql -h {leader} -p {PG_PORT} -U postgres -d postgres -X -A -t -c \"select coalesce(last_archived_wal,''), coalesce(extract(epoch from last_archived_time)::bigint::text,''), coalesce(last_failed_wal,''), coalesce(extract(epoch from last_failed_time)::bigint::text,''), failed_count from pg_stat_archiver\"",
        leader = hosts.leader
    );
    format!(
        "set -u\n{PREPARE}\nrun() {{ what=$1; shift; \"$@\" 2>&1 || {{ echo \"{MARK} failed $what\"; exit 1; }}; }}\npgbackrest_prepare || {{ echo \"{MARK} failed prepare\"; exit 1; }}\ncat >{JOB_CONF} <<'CONF'\n{job_conf}CONF\nchmod 0644 {JOB_CONF}\n{step}\na=$({archiver} 2>&1) || {{ echo \"$a\"; echo \"{MARK} failed archiver\"; exit 1; }}\necho \"{MARK} archiver $a|{leader}\"\ni=$({pgbr} --output=json info 2>&1) || {{ echo \"$i\"; echo \"{MARK} failed info\"; exit 1; }}\necho \"{MARK} info $(echo \"$i\" | tr -d '\\n')\"\n",
        leader = hosts.leader
    )
}

/// A restore's look into its repository, pure: `info` of the source's
/// stanza in that repository alone (no instance to reach).
pub fn verify_script(pgc: &PostgresCluster) -> String {
    let (Some(backup), Some(r)) = (&pgc.spec.backup, &pgc.spec.bootstrap.recovery) else {
        return "echo 'haswarm: no spec.backup or recovery'; exit 1".into();
    };
    let Some((index, _)) = backup.repository(&r.repository) else {
        return format!("echo 'haswarm: no repository {}'; exit 1", r.repository);
    };
    let job_conf = conf::job_conf(&r.source, backup, &[]);
    let pgbr = format!(
        "runuser -u postgres -- {} --repo={}",
        conf::command_with(JOB_CONF, &r.source),
        index + 1
    );
    format!(
        "set -u\n{PREPARE}\npgbackrest_prepare || {{ echo \"{MARK} failed prepare\"; exit 1; }}\ncat >{JOB_CONF} <<'CONF'\n{job_conf}CONF\nchmod 0644 {JOB_CONF}\ni=$({pgbr} --output=json info 2>&1) || {{ echo \"$i\"; echo \"{MARK} failed info\"; exit 1; }}\necho \"{MARK} info $(echo \"$i\" | tr -d '\\n')\"\n"
    )
}

/// Moves the backup flow on by one step; nothing without `spec.backup`.
///
/// # Errors
/// Engine errors.
pub async fn advance(
    ctx: &Context,
    (owner, pgc): (&Owner, &PostgresCluster),
    status: &mut PostgresClusterStatus,
    (hosts, secrets, superuser): (Option<Hosts<'_>>, Option<&BackupSecrets>, &str),
    (members, nodes): (bool, &[crate::swarm::NodeInfo]),
    notices: &mut Vec<Notice>,
) -> Result<(), ReconcileError> {
    let (Some(backup), Some(secrets)) = (&pgc.spec.backup, secrets) else {
        return Ok(());
    };
    let name = pgc.metadata.name.as_str();
    let job = job_name(name);
    let state = ctx.swarm.job_state(owner, &job).await?;
    let running = state.as_ref().and_then(|s| {
        let kind = serde_json::from_str::<JobKind>(s.labels.get(JOB_LABEL)?).ok()?;
        Some(Running {
            kind,
            ended: s.ended.is_some(),
        })
    });
    if state.is_some() && running.is_none() {
        // A job of ours without a readable label: from another version.
        ctx.swarm.remove_job(&job).await?;
        return Ok(());
    }
    for key in plan::baselines(backup, &status.backup) {
        status.backup.schedules_fired.insert(key, Utc::now());
    }
    let request = pgc
        .metadata
        .annotations
        .get(BACKUP_ANNOTATION)
        .map(String::as_str);
    let facts = plan::Facts {
        backup,
        status: &status.backup,
        request,
        running: running.as_ref(),
        settled: hosts.is_some(),
        verify_restore: restore::wanted(pgc, status, members, Utc::now()),
        checked: status.backup.backups_checked,
        now: Utc::now(),
    };
    match plan::next(&facts) {
        Step::Idle | Step::Running => Ok(()),
        Step::Collect => {
            let (
                Some(r),
                Some(JobState {
                    ended: Some(end), ..
                }),
            ) = (running, state)
            else {
                return Ok(());
            };
            let output = ctx.swarm.job_output(&job, 400).await?;
            if r.kind == JobKind::VerifyRestore {
                collect_verify(pgc, status, (&end, &output), notices);
            } else {
                collect(pgc, status, (&r.kind, &end, &output), notices);
            }
            ctx.swarm.remove_job(&job).await?;
            Ok(())
        }
        Step::Start(JobKind::VerifyRestore) => {
            // Where instance 0 is pinned (its image goes there anyway), or
            // any node that can run it.
            let slot = render::instance_slot(name, 0);
            let node = nodes
                .iter()
                .filter(|n| n.ready && !n.drained)
                .max_by_key(|n| n.labels.contains_key(&slot))
                .map(|n| n.id.clone());
            let Some(node) = node else { return Ok(()) };
            let script = verify_script(pgc);
            let kind = JobKind::VerifyRestore;
            launch(ctx, (owner, pgc), (node, script, &kind), (secrets, None)).await
        }
        Step::Start(kind) => {
            let Some(hosts) = hosts else { return Ok(()) };
            start(
                ctx,
                (owner, pgc),
                status,
                (&kind, hosts),
                (secrets, superuser),
                notices,
            )
            .await
        }
    }
}

async fn start(
    ctx: &Context,
    (owner, pgc): (&Owner, &PostgresCluster),
    status: &mut PostgresClusterStatus,
    (kind, hosts): (&JobKind, Hosts<'_>),
    (secrets, superuser): (&BackupSecrets, &str),
    notices: &mut Vec<Notice>,
) -> Result<(), ReconcileError> {
    // On the node of the instance it copies from: the image is there.
    let from = hosts.standby.unwrap_or(hosts.leader);
    let node = ctx
        .swarm
        .tasks(from)
        .await?
        .iter()
        .find(|t| {
            t.status.as_ref().and_then(|s| s.state) == Some(bollard::models::TaskState::RUNNING)
        })
        .and_then(|t| t.node_id.clone());
    let Some(node) = node else { return Ok(()) };
    let script = script(pgc, kind, hosts);
    launch(
        ctx,
        (owner, pgc),
        (node, script, kind),
        (secrets, Some(superuser)),
    )
    .await?;
    match kind {
        JobKind::Backup {
            kind: t,
            cause,
            repository,
        } => {
            if let Cause::Schedule(key) = cause {
                status
                    .backup
                    .schedules_fired
                    .insert(key.clone(), Utc::now());
            }
            let repo = pgc
                .spec
                .backup
                .as_ref()
                .and_then(|b| b.repositories.get(*repository));
            notices.push(Notice::new(
                EventType::Normal,
                "BackupStarted",
                format!(
                    "{} backup into repository {} started ({}), copied from {}",
                    t.as_str(),
                    repo.map_or("?", |r| r.name.as_str()),
                    match cause {
                        Cause::Request(_) => "requested",
                        Cause::Schedule(_) => "scheduled",
                    },
                    hosts.standby.unwrap_or(hosts.leader)
                ),
            ));
        }
        JobKind::Stanza | JobKind::Check | JobKind::VerifyRestore => {}
    }
    Ok(())
}

/// Starts the cluster's job on `node`, with the backups' secrets and
/// volumes (and the superuser's password where it reads the archiver).
async fn launch(
    ctx: &Context,
    (owner, pgc): (&Owner, &PostgresCluster),
    (node, script, kind): (String, String, &JobKind),
    (secrets, superuser): (&BackupSecrets, Option<&str>),
) -> Result<(), ReconcileError> {
    let name = pgc.metadata.name.as_str();
    let mut mounts = secrets.mounts();
    if let Some(superuser) = superuser {
        mounts.push(secret_ref(superuser, SUPERUSER_FILE, 0o400));
    }
    for m in &mut mounts {
        if let Some(n) = m.secret_name.as_deref() {
            m.secret_id = ctx.swarm.secret_id(n).await?;
        }
    }
    let job = NodeJob {
        name: job_name(name),
        node,
        image: pgc.spec.postgres.image.clone(),
        script,
        mounts: secrets.volumes.clone(),
        secrets: mounts,
        networks: vec![bollard::models::NetworkAttachmentConfig {
            target: Some(render::network_name(name)),
            ..Default::default()
        }],
    };
    let label = serde_json::to_string(kind).unwrap_or_default();
    ctx.swarm
        .start_job(owner, &job, &[(JOB_LABEL, label)])
        .await?;
    Ok(())
}

/// Records what a restore's look into its repository found, with an
/// event when it refuses (see `restore::judge`). Pure.
pub fn collect_verify(
    pgc: &PostgresCluster,
    status: &mut PostgresClusterStatus,
    (end, output): (&JobOutcome, &str),
    notices: &mut Vec<Notice>,
) {
    let (Some(backup), Some(r)) = (&pgc.spec.backup, &pgc.spec.bootstrap.recovery) else {
        return;
    };
    let read = report::read(output, backup);
    let failed = failure(&read, end);
    let check = restore::judge(r, &read, failed.as_deref(), Utc::now());
    let seen_before = status.backup.restore_check.as_ref().is_some_and(|c| {
        (c.recovery.as_str(), c.verdict) == (check.recovery.as_str(), check.verdict)
    });
    if check.verdict == RestoreVerdict::Impossible && !seen_before {
        notices.push(Notice::new(
            EventType::Warning,
            "RestoreRefused",
            check.message.clone(),
        ));
    }
    status.backup.restore_check = Some(check);
}

/// Records what an ended job says. Pure.
pub fn collect(
    pgc: &PostgresCluster,
    status: &mut PostgresClusterStatus,
    (kind, end, output): (&JobKind, &JobOutcome, &str),
    notices: &mut Vec<Notice>,
) {
    let Some(backup) = &pgc.spec.backup else {
        return;
    };
    let generation = None;
    let r = report::read(output, backup);
    status.backup.backups_checked = Some(Utc::now());
    // A repository info could not read lists no backup: keep what it had.
    if let Some(b) = r.backups.clone().filter(|_| r.unreadable.is_empty()) {
        let (first, last) = report::recoverability(&b);
        status.backup.first_recoverability_point = first;
        status.backup.last_successful_backup = last;
        status.backup.backups = b;
    }
    if let Some(a) = &r.archiver {
        record_archiver(&mut status.backup, a);
    }
    let failed = failure(&r, end);
    match (&r.archiver, &failed) {
        (Some(a), None) if a.healthy() => status::set(
            &mut status.common,
            ARCHIVING,
            Some(true),
            "Archiving",
            format!(
                "WAL segments reach the repositories (last {})",
                a.last_archived.as_ref().map_or("", |(w, _)| w.as_str())
            ),
            generation,
        ),
        (Some(a), f) => {
            let why = match (&a.last_failed, f) {
                (_, Some(f)) => f.clone(),
                (Some((w, t)), None) => {
                    format!("archiving {w} failed at {t} (the leader's log has pgBackRest's error)")
                }
                (None, None) => "no WAL segment archived yet".into(),
            };
            status::set(
                &mut status.common,
                ARCHIVING,
                Some(false),
                "ArchiveFailing",
                why,
                generation,
            );
        }
        (None, Some(f)) => status::set(
            &mut status.common,
            ARCHIVING,
            Some(false),
            "ArchiveUnknown",
            f.clone(),
            generation,
        ),
        (None, None) => {}
    }
    match kind {
        JobKind::Stanza => match &failed {
            None => {
                for repo in &backup.repositories {
                    status.backup.stanzas.insert(repo.name.clone());
                }
                notices.push(Notice::new(
                    EventType::Normal,
                    "StanzaCreated",
                    format!(
                        "stanza {} ready in every repository",
                        pgc.metadata.name.as_str()
                    ),
                ));
            }
            Some(f) => notices.push(Notice::new(EventType::Warning, "StanzaFailed", f.clone())),
        },
        JobKind::Backup { cause, .. } => {
            if let Cause::Request(v) = cause {
                status.backup.backup_request_handled = Some(v.clone());
            }
            match &failed {
                None => {
                    let last = status.backup.backups.last();
                    notices.push(Notice::new(
                        EventType::Normal,
                        "BackupCompleted",
                        last.map_or_else(
                            || "backup completed".into(),
                            |b| {
                                format!(
                                    "backup {} ({}, {} bytes) completed",
                                    b.label,
                                    b.kind.as_str(),
                                    b.size_bytes
                                )
                            },
                        ),
                    ));
                }
                Some(f) => notices.push(Notice::new(EventType::Warning, "BackupFailed", f.clone())),
            }
        }
        JobKind::Check | JobKind::VerifyRestore => {}
    }
    let healthy = failed.is_none() && !status.backup.backups.is_empty();
    let why = match (&failed, status.backup.backups.last()) {
        (Some(f), _) => f.clone(),
        (None, Some(b)) => format!(
            "{} backups; the last, {}, ended {}",
            status.backup.backups.len(),
            b.label,
            b.stop
        ),
        (None, None) => "no backup yet".into(),
    };
    status::set(
        &mut status.common,
        HEALTHY,
        Some(healthy),
        if healthy {
            "BackupsAvailable"
        } else if failed.is_some() {
            "BackupJobFailed"
        } else {
            "NoBackup"
        },
        why,
        generation,
    );
}

/// Why a job failed: the step that failed, the job's own end, or a
/// repository `info` could not read (archiving into it fails as well, but
/// the archiver tells only after its own timeouts).
fn failure(r: &report::JobReport, end: &JobOutcome) -> Option<String> {
    match (&r.failed, end) {
        (Some((step, why)), _) => Some(format!("{step}: {why}")),
        (None, JobOutcome::Failed(why)) => Some(format!("the job failed: {why}")),
        (None, JobOutcome::Completed) => r.unreadable_reason(),
    }
}

/// Keeps what the job read of the primary's archiver, its failures added
/// to the total across primaries.
fn record_archiver(backup: &mut haswarm_crds::postgres::BackupStatus, a: &report::Archiver) {
    let total = backup.archiver.as_ref().map_or(a.failed_count, |seen| {
        seen.total_after(&a.primary, a.failed_count)
    });
    backup.archiver = Some(haswarm_crds::postgres::ArchiverStatus {
        primary: a.primary.clone(),
        last_archived_wal: a.last_archived.as_ref().map(|(w, _)| w.clone()),
        last_archived_time: a.last_archived.as_ref().map(|(_, t)| *t),
        last_failed_wal: a.last_failed.as_ref().map(|(w, _)| w.clone()),
        last_failed_time: a.last_failed.as_ref().map(|(_, t)| *t),
        failed_count: a.failed_count,
        failures_total: total,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> PostgresCluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "haswarm.io/v1alpha1", "kind": "PostgresCluster",
            "metadata": {"name": "db"},
            "spec": {"backup": {"repositories": [{"name": "s3", "s3": {"endpoint": "s3:8333",
              "bucket": "backups", "credentialsSecret": {"name": "creds"}}}]}}
        }))
        .expect("pgc")
    }

    #[test]
    fn a_backup_job_copies_from_the_standby_and_reads_back_its_result() {
        let kind = JobKind::Backup {
            repository: 0,
            kind: haswarm_crds::postgres::BackupType::Diff,
            cause: Cause::Request("t".into()),
        };
        let s = script(
            &db(),
            &kind,
            Hosts {
                leader: "db-pg-0",
                standby: Some("db-pg-2"),
            },
        );
        assert!(
            s.contains("pg1-host=db-pg-0\n") && s.contains("pg2-host=db-pg-2\n"),
            "{s}"
        );
        assert!(s.contains("--repo=1 --type=diff backup"), "{s}");
        assert!(s.contains("psql -h db-pg-0"), "{s}");
        assert!(!s.contains("creds"), "the script names no secret's content");
    }

    #[test]
    fn an_archive_failure_turns_the_condition_false_with_pgbackrests_words() {
        let pgc = db();
        let mut st = PostgresClusterStatus::default();
        let mut n = Vec::new();
        let out = format!("{MARK} archiver 000000010000000000000003|1765015000|000000010000000000000004|1765015010|3|db-pg-0\nP00 ERROR: [049]: unable to get address for 's3': [-2] Name or service not known\n{MARK} failed info\n");
        collect(
            &pgc,
            &mut st,
            (
                &JobKind::Check,
                &JobOutcome::Failed("non-zero exit".into()),
                &out,
            ),
            &mut n,
        );
        let c = st.common.condition(ARCHIVING).expect("condition");
        assert_eq!(c.status, haswarm_crds::meta::ConditionStatus::False);
        assert!(c.message.contains("unable to get address"), "{}", c.message);
        let ok = format!("{MARK} archiver 000000010000000000000004|1765015100|000000010000000000000004|1765015010|3|db-pg-0\n{MARK} info []\n");
        collect(
            &pgc,
            &mut st,
            (&JobKind::Check, &JobOutcome::Completed, &ok),
            &mut n,
        );
        let c = st.common.condition(ARCHIVING).expect("condition");
        assert_eq!(c.status, haswarm_crds::meta::ConditionStatus::True);
        assert!(n.is_empty(), "a check says nothing: {n:?}");
        // Read twice at 3 failures: counted once. A new primary counts
        // from its own zero.
        let a = st.backup.archiver.as_ref().expect("archiver");
        assert_eq!((a.failed_count, a.failures_total), (3, 3));
        let promoted = format!(
            "{MARK} archiver 000000020000000000000005|1765015200|||2|db-pg-1\n{MARK} info []\n"
        );
        collect(
            &pgc,
            &mut st,
            (&JobKind::Check, &JobOutcome::Completed, &promoted),
            &mut n,
        );
        let a = st.backup.archiver.as_ref().expect("archiver");
        assert_eq!((a.primary.as_str(), a.failures_total), ("db-pg-1", 5));
    }
}
