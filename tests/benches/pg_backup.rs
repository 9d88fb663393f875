//! Backup and restore throughput of a PostgresCluster with pgBackRest into
//! S3, beside `pg_basebackup` of the same database in the same run: seconds,
//! MB/s and the time as a multiple of `pg_basebackup`'s (issue 15).
//!
//! The cluster has 2 instances, 1 etcd member, 1 router, Patroni's `ttl: 20,
//! loopWait: 2, retryTimeout: 4`, and one repository: the S3 server of
//! `tests/tests/backup.rs` (SeaweedFS, image `haswarm/s3:latest`, over HTTPS
//! with a test CA) on the cluster's network. The app user fills the table
//! `big` (`g`, `repeat(md5(g::text), 8)`) in batches of 100,000 rows until
//! `pg_database_size('app')` reaches `HASWARM_BENCH_MB` (default 1024; MB
//! here is 2^20 bytes), then the superuser runs `CHECKPOINT` and switches
//! WAL, and the bench waits until that segment is archived and the replica
//! has replayed it, so no figure includes the load's archiving backlog or
//! replication lag. Every MB/s is the size of all the cluster's databases
//! (the sum of `pg_database_size`, what a physical backup copies apart from
//! WAL) over the time, so the MB/s of two rows compare as their times do.
//!
//! The rows, in the order they run (all reads come from the replica, whose
//! files the load's replay left in the page cache):
//!
//! - `pg_basebackup`, the baseline: `pg_basebackup -h <name>-pg-N -D - -Ft
//!   -X fetch -c fast | wc -c` against the replica, as the `replicator`
//!   role (the rendered `pg_hba` admits replication connections for it
//!   alone), in a client container (the cluster's image) on the cluster's
//!   network. Uncompressed, one connection, the tar stream thrown away.
//!   Timed from the host, from `docker run` to its end, so it includes the
//!   container's start (a second row, "in its container", is the time
//!   between two `date` calls around it). The stream's size is printed: it
//!   is larger than the databases (1616 MB for 1071 MB in one run), we take
//!   it for the WAL that `-X fetch` adds, and its MB/s, like every row's,
//!   counts the databases' size only.
//! - pgBackRest's full backup: `haswarmctl pg backup NAME --type full
//!   --wait`, timed from the host. It includes the annotation, the next
//!   reconcile, the Swarm job's creation and start, pgBackRest's
//!   `backup-standby` copy (`process-max=2`, lz4, `start-fast`, over TLS
//!   from the replica's pgBackRest server, into S3 over HTTPS), its wait for
//!   the backup's last WAL segment to be archived, the job reading the
//!   repository back into the status, and haswarmctl noticing. A second row
//!   is the backup's own start to stop as the status lists it
//!   (`status.backups[]`, pgBackRest's times, whole seconds). The data
//!   compresses well (the pad repeats one md5 8 times), so the repository
//!   holds much less than the database: both sizes are printed.
//! - The restore: a NEW cluster (1 instance: `Restored` turns True with the
//!   first leader, and a second instance would only copy the data again
//!   while the bench tears down) with `spec.bootstrap.recovery` from the
//!   source's stanza in the same repository path and no target, so all the
//!   archived WAL is replayed. Timed from the host from `haswarmctl apply`
//!   to the condition `Restored` True as `haswarmctl wait` (a watch) sees
//!   it. It includes the job that looks into the repository first, adding
//!   the new cluster's network to the S3 service (which restarts the S3
//!   server: a look that finds it down is repeated 30 s later, which the
//!   printed timeline of the new cluster's events shows), creating its
//!   services, Patroni's bootstrap (pgBackRest's restore, PostgreSQL's
//!   replay of the WAL after the backup and its promotion), and the
//!   reconcile that sees the leader run (`--resync 5s`). A second row is
//!   pgBackRest's own duration of its `restore` command, from the first
//!   instance's log: the files only, no replay.
//!
//! Run with `cargo bench -p haswarm-testbed --bench pg_backup` after
//! `tests/testbed/prepare.sh` (it needs the images `haswarm/postgres:15` and
//! `haswarm/s3:latest` and an active swarm). With 1024 MB it took four to
//! six minutes on a 2-core machine, most of it creating and deleting the
//! clusters; `HASWARM_BENCH_MB=256` is quicker. Benchmarks print
//! figures: none is asserted (the restored row count is printed beside
//! the source's).
//!
//! Everything it creates goes when it ends, also on a panic: both clusters'
//! services, networks, configs, secrets and data volumes, the S3 service
//! and its data volume, the two secrets of the repository, and the
//! `pg_basebackup` client container.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use haswarm_testbed::bench::secs;
use haswarm_testbed::docker::{eventually, require_image, require_swarm, service_logs, Cleanup};
use haswarm_testbed::pg::{client, run_client_as, secret, At, IMAGE};
use haswarm_testbed::{assert_code, s3, Daemon};
use serde_json::Value;

/// Rows per batch of the load (about 29 MB each): the database overshoots
/// its target by less than one batch.
const BATCH: u64 = 100_000;
/// 2^20 bytes.
const MB: f64 = 1_048_576.0;
/// How long the restore may take before the bench gives up.
const RESTORE_LIMIT: Duration = Duration::from_secs(1800);

/// Cluster `name` of `instances` instances with the one S3 repository,
/// under `/bench/<source>` (a restored cluster reads its source's), and
/// `extra` appended under `spec:` (indented by two).
fn manifest(name: &str, source: &str, instances: u8, secrets: (&str, &str), extra: &str) -> String {
    s3::cluster(
        name,
        instances,
        (&format!("/bench/{source}"), secrets),
        extra,
    )
}

/// Unix time in seconds (the daemon's events use the same clock).
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Seconds between two RFC 3339 times of the status.
fn between(start: &Value, stop: &Value) -> Option<f64> {
    let t = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str()?).ok();
    let (a, b) = (t(start)?, t(stop)?);
    Some((b - a).num_milliseconds() as f64 / 1e3)
}

/// pgBackRest's own duration of its `restore` command, from the lines it
/// logged in the first instance's container (`restore command end:
/// completed successfully (12345ms)`).
fn restore_command_ms(logs: &str) -> Option<f64> {
    let line = logs
        .lines()
        .rev()
        .find(|l| l.contains("restore command end: completed successfully"))?;
    let ms = line.trim_end().rsplit_once('(')?.1.strip_suffix("ms)")?;
    ms.trim().parse().ok()
}

/// What the load left: its row count and sizes, and who replicates.
struct Loaded {
    big_rows: String,
    cluster_bytes: u64,
    replica: String,
}

/// The superuser's query `q` on `host` (psql in a client container).
fn as_su(name: &str, su: &str, host: &str, q: &str) -> String {
    run_client_as(
        At::Local,
        name,
        &["--rm"],
        ("postgres", su),
        &format!("psql -h {host} -d postgres -v ON_ERROR_STOP=1 -At -c \"{q}\" 2>&1"),
    )
    .trim()
    .to_owned()
}

fn main() {
    // `cargo test --benches` runs bench targets without `--bench`: this one
    // needs many minutes and the Swarm, so it only runs under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "pg_backup: skipped (run it with `cargo bench -p haswarm-testbed --bench pg_backup`)"
        );
        return;
    }
    haswarm_testbed::no_budget();
    let target_mb: u64 = std::env::var("HASWARM_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&m| m > 0)
        .unwrap_or(1024);
    require_swarm();
    require_image(IMAGE);
    require_image(s3::IMAGE);

    let name = format!("bench-bk-{}", std::process::id());
    let restored = format!("{name}-r");
    let mut cleanup = Cleanup::default();
    cleanup.owner("PostgresCluster", &name);
    cleanup.owner("PostgresCluster", &restored);
    let basebackup = format!("{name}-basebackup");
    cleanup.named("container", &basebackup);
    let (creds, ca) = s3::secrets(&name, &mut cleanup);

    // The daemon goes before the Cleanup guard does its work, so it cannot
    // put back what the guard removes.
    let d = Daemon::start_with_controllers(&["--resync", "5s"]);
    d.apply("pgc.yaml", &manifest(&name, &name, 2, (&creds, &ca), ""));
    let server = s3::start(&name);
    d.wait_for(&format!("pgc/{name}"), "condition=Ready", "300s");
    d.wait_for(
        &format!("pgc/{name}"),
        "condition=ContinuousArchiving",
        "180s",
    );
    let loaded = load(&d, &name, target_mb);
    let (base_host, base_inside) = baseline(&name, &basebackup, &loaded.replica);
    let (backup_host, backup_own) = backup(&d, &name);
    let (restore_host, restore_own) = restore(&d, (&name, &restored), (&creds, &ca), &server);
    print_table(
        loaded.cluster_bytes,
        [
            base_host,
            base_inside,
            backup_host,
            backup_own,
            restore_host,
            restore_own,
        ],
    );
    check_rows(&d, &restored, &loaded.big_rows);

    // The S3 server is on the restored cluster's network: it goes first,
    // so that the network can go with its cluster.
    s3::stop(&server);
    for cluster in [&restored, &name] {
        let o = d.ctl(&["delete", "pgc", cluster, "--wait", "--timeout=180s"]);
        if !o.status.success() {
            eprintln!(
                "pg_backup: delete of {cluster} did not finish (the cleanup removes what is left): {}",
                haswarm_testbed::stderr(&o)
            );
        }
    }
}

/// Fills `big` up to `target_mb`, then waits until its WAL is archived
/// and the replica replayed it.
fn load(d: &Daemon, name: &str, target_mb: u64) -> Loaded {
    let at = At::Local;
    let name = name.to_owned();
    let su = secret(at, &name, "pg-superuser-password");
    let as_su = |host: &str, q: &str| as_su(&name, &su, host, q);
    let rw = format!("{name}-rw");

    // The load, committed batch by batch so that WAL is archived and
    // checkpoints run as they would under a real load.
    let target = target_mb * 1_048_576;
    println!("pg_backup: loading {target_mb} MB into {name} (database app, table big)");
    let loading = Instant::now();
    let out = client(
        d,
        at,
        &name,
        &format!(
            "psql -h {rw} -v ON_ERROR_STOP=1 -c 'CREATE TABLE big(g bigint, pad text)' -c 'DO $$
DECLARE n bigint := 0;
BEGIN
  WHILE pg_database_size(current_database()) < {target} LOOP
    INSERT INTO big SELECT g, repeat(md5(g::text), 8) FROM generate_series(n + 1, n + {BATCH}) g;
    n := n + {BATCH};
    COMMIT;
  END LOOP;
END $$' 2>&1"
        ),
    );
    assert!(out.contains("DO"), "the load failed: {out}");
    let loaded = loading.elapsed().as_secs_f64();
    let out = as_su(&rw, "checkpoint");
    assert!(out.contains("CHECKPOINT"), "the checkpoint failed: {out}");
    let switched = as_su(
        &rw,
        "select pg_walfile_name(l) || ' ' || l from pg_switch_wal() l",
    );
    let Some((segment, lsn)) = switched.split_once(' ') else {
        panic!("the WAL switch failed: {switched}");
    };
    assert_eq!(segment.len(), 24, "a WAL file name: {segment}");
    let archived = eventually(Duration::from_secs(900), || {
        let last = as_su(
            &rw,
            "select coalesce(last_archived_wal, '') from pg_stat_archiver",
        );
        last.len() == 24 && last.as_str() >= segment
    });
    assert!(archived, "{segment} was not archived within 15 minutes");
    let caught_up = loading.elapsed().as_secs_f64();

    let leader = haswarm_testbed::pg::leader(d, &name);
    let replica = (0..2)
        .map(|i| format!("{name}-pg-{i}"))
        .find(|m| *m != leader)
        .expect("two instances");
    let replayed = eventually(Duration::from_secs(300), || {
        as_su(
            &replica,
            &format!("select pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"),
        ) == "t"
    });
    assert!(replayed, "{replica} did not replay up to {lsn}");
    let sizes = as_su(
        &rw,
        "select pg_database_size('app') || ' ' || (select sum(pg_database_size(datname)) from pg_database)",
    );
    let mut f = sizes.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(app_bytes)), Some(Ok(cluster_bytes))) = (f.next(), f.next()) else {
        panic!("sizes: {sizes}");
    };
    let big_rows = client(
        d,
        at,
        &name,
        &format!("psql -h {rw} -At -c 'select count(*) from big' 2>&1"),
    )
    .trim()
    .to_owned();
    println!(
        "pg_backup: loaded {big_rows} rows in {}, WAL archived up to {segment} {} after the load began; \
         pg_database_size('app') {:.1} MB, all databases {:.1} MB; leader {leader}, replica {replica}",
        secs(loaded),
        secs(caught_up),
        app_bytes as f64 / MB,
        cluster_bytes as f64 / MB,
    );

    Loaded {
        big_rows,
        cluster_bytes,
        replica,
    }
}

/// `pg_basebackup` of the replica, thrown away: the time from the host and
/// inside its container.
fn baseline(name: &str, container: &str, replica: &str) -> (Option<f64>, Option<f64>) {
    let at = At::Local;
    let replication = secret(at, name, "pg-replication-password");
    let started = Instant::now();
    let out = run_client_as(
        at,
        name,
        &["--rm", "--name", container],
        ("replicator", &replication),
        &format!(
            "s=$(date +%s.%N)
{{ /usr/lib/postgresql/15/bin/pg_basebackup -h {replica} -D - -Ft -X fetch -c fast -w 2>/tmp/err; echo $? >/tmp/rc; }} | wc -c >/tmp/bytes
e=$(date +%s.%N)
echo \"basebackup $(cat /tmp/rc) $(cat /tmp/bytes) $s $e\"
cat /tmp/err"
        ),
    );
    let base_host = started.elapsed().as_secs_f64();
    let result: Vec<&str> = out
        .lines()
        .find_map(|l| l.strip_prefix("basebackup "))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let [rc, bytes, s, e] = result.as_slice() else {
        panic!("pg_basebackup printed no result: {out}");
    };
    assert_eq!(*rc, "0", "pg_basebackup failed: {out}");
    let base_bytes: u64 = bytes.parse().expect("a byte count");
    let base_inside = match (s.parse::<f64>(), e.parse::<f64>()) {
        (Ok(s), Ok(e)) => Some(e - s),
        _ => None,
    };
    println!(
        "pg_basebackup: {:.1} MB of tar from {replica} in {} ({} in its container)",
        base_bytes as f64 / MB,
        secs(base_host),
        base_inside.map_or_else(|| "?".to_owned(), secs)
    );

    (Some(base_host), base_inside)
}

/// `haswarmctl pg backup --type full --wait`: the time from the host and
/// the backup's own start to stop.
fn backup(d: &Daemon, name: &str) -> (Option<f64>, Option<f64>) {
    let started = Instant::now();
    let o = d.ctl(&[
        "pg",
        "backup",
        name,
        "--type",
        "full",
        "--wait",
        "--timeout",
        "20m",
    ]);
    let backup_host = started.elapsed().as_secs_f64();
    assert_code(&o, 0);
    let status = d.get_json("pgc", name)["status"].clone();
    let last = status["backups"]
        .as_array()
        .and_then(|b| b.last())
        .cloned()
        .unwrap_or(Value::Null);
    let backup_own = between(&last["start"], &last["stop"]);
    let copied_from = d
        .events("postgresclusters", name)
        .into_iter()
        .rev()
        .find(|(r, _)| r == "BackupStarted")
        .map(|(_, m)| m)
        .unwrap_or_default();
    println!(
        "pgBackRest: backup {} in {} ({}); start {} stop {}; sizeBytes {:.1} MB, repositorySizeBytes {:.1} MB",
        last["label"].as_str().unwrap_or("?"),
        secs(backup_host),
        copied_from,
        last["start"].as_str().unwrap_or("?"),
        last["stop"].as_str().unwrap_or("?"),
        last["sizeBytes"].as_f64().unwrap_or(0.0) / MB,
        last["repositorySizeBytes"].as_f64().unwrap_or(0.0) / MB,
    );

    (Some(backup_host), backup_own)
}

/// A new cluster restored from the backup to the end of the WAL: the time
/// from its apply to `Restored`, and pgBackRest's own restore command's.
fn restore(
    d: &Daemon,
    (name, restored): (&str, &str),
    secrets: (&str, &str),
    server: &str,
) -> (Option<f64>, Option<f64>) {
    let recovery =
        format!("  bootstrap:\n    recovery:\n      source: {name}\n      repository: s3\n");
    let applied_at = now();
    let started = Instant::now();
    d.apply(
        "restored.yaml",
        &manifest(restored, name, 1, secrets, &recovery),
    );
    s3::join(server, &[restored]);
    // In steps, so that a refused restore ends the bench at once rather
    // than after the whole limit.
    loop {
        let o = d.ctl(&[
            "wait",
            &format!("pgc/{restored}"),
            "--for=condition=Restored",
            "--timeout=60s",
        ]);
        if o.status.success() {
            break;
        }
        let v = d.get_json("pgc", restored);
        let refused = v["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Restored" && c["reason"] == "RestoreRefused")
        });
        assert!(
            !refused && started.elapsed() < RESTORE_LIMIT,
            "the restore did not end: {}",
            v["status"]
        );
    }
    let restore_host = started.elapsed().as_secs_f64();
    let restore_own =
        restore_command_ms(&service_logs(&format!("{restored}-pg-0"))).map(|ms| ms / 1e3);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut events = rt
        .block_on(d.client().events("postgresclusters", restored))
        .unwrap_or_default();
    events.sort_by_key(|e| e.first_timestamp);
    println!(
        "restore: {restored} Restored {} after its apply; its events:",
        secs(restore_host)
    );
    for e in &events {
        let offset = e.first_timestamp.timestamp_micros() as f64 / 1e6 - applied_at;
        let mut message = e.message.clone();
        if message.len() > 140 {
            let cut = (0..=140)
                .rev()
                .find(|&i| message.is_char_boundary(i))
                .unwrap_or(0);
            message.truncate(cut);
            message.push_str("...");
        }
        println!("  {:>9}  {}: {message}", secs(offset), e.reason);
    }
    (Some(restore_host), restore_own)
}

/// The table: each row's seconds, MB/s of the databases' size, and its
/// time over the baseline's.
fn print_table(cluster_bytes: u64, seconds: [Option<f64>; 6]) {
    let what = [
        "pg_basebackup from the replica (host)",
        "pg_basebackup (in its container)",
        "pgBackRest full backup (haswarmctl --wait)",
        "pgBackRest full backup (status start..stop)",
        "restore (apply to Restored True)",
        "restore (pgBackRest restore command)",
    ];
    let base_host = seconds[0].unwrap_or(f64::NAN);
    println!(
        "pg_backup: all databases {:.1} MB (MB = 2^20 bytes; MB/s is that size over the time)",
        cluster_bytes as f64 / MB
    );
    println!(
        "  {:<46} {:>9} {:>8} {:>17}",
        "what", "seconds", "MB/s", "x pg_basebackup"
    );
    for (what, seconds) in what.iter().zip(seconds) {
        match seconds {
            Some(t) if t > 0.0 => println!(
                "  {:<46} {:>9.3} {:>8.1} {:>16.2}x",
                what,
                t,
                cluster_bytes as f64 / MB / t,
                t / base_host
            ),
            _ => println!("  {:<46} {:>9} {:>8} {:>17}", what, "?", "?", "?"),
        }
    }
    println!("  (x pg_basebackup: the row's time over the first row's)");
}

/// Prints the restored cluster's rows in `big` beside the source's.
fn check_rows(d: &Daemon, restored: &str, big_rows: &str) {
    let at = At::Local;
    // The restored cluster's app login is named in its status a little
    // after Restored, and its password set after the restore brought the
    // source's: the first tries may find neither.
    let named = eventually(Duration::from_secs(120), || {
        d.get_json("pgc", restored)["status"]["appPasswordSecret"].is_string()
    });
    let mut restored_rows = String::new();
    if named {
        eventually(Duration::from_secs(120), || {
            restored_rows = client(
                d,
                at,
                restored,
                &format!("psql -h {restored}-rw -At -c 'select count(*) from big' 2>&1"),
            )
            .trim()
            .to_owned();
            restored_rows.parse::<u64>().is_ok()
        });
    }
    println!("restore: {restored} has {restored_rows:?} rows in big (the source {big_rows})");
}
