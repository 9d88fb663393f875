//! pgBackRest's configuration, pure: the file the instances share (WAL
//! archiving, the TLS server a backup reaches them through), the file a
//! backup job writes for itself (the instances as TLS hosts), and the
//! PostgreSQL parameters that archive into the repositories.

use std::fmt::Write as _;

use haswarm_crds::postgres::{BackupSettings, RepositoryKind, UriStyle};

use crate::reconcilers::postgres::render::PG_PORT;

/// Where the instances and jobs find the shared file (a Swarm config).
pub const CONF_PATH: &str = "/etc/haswarm/pgbackrest.conf";
/// Where the start script (instances) or the job script writes what may
/// not be in a Swarm config: the repositories' S3 keys, in a file only
/// the user running pgBackRest reads.
pub const INCLUDE_DIR: &str = "/var/lib/postgresql/pgbackrest/conf.d";
/// The TLS server's port on every instance (pgBackRest's default).
pub const TLS_PORT: u16 = 8432;
/// Where the instance's copies of the TLS files are, owned by postgres.
const TLS_DIR: &str = "/var/lib/postgresql/pgbackrest/tls";
/// The data directory (Patroni's `data_dir`).
pub const PG_DATA: &str = "/var/lib/postgresql/data";
/// Where a SharedVolume repository is mounted: `<dir>/<repository name>`.
pub const VOLUME_DIR: &str = "/var/lib/haswarm-backup";
/// The common name of the one certificate every instance and job shows:
/// the TLS server lets only it in (`tls-server-auth`).
pub const TLS_CLIENT: &str = "haswarm";

/// The secret file names the instances and jobs mount.
pub mod files {
    /// The CA that signed [`super::TLS_CLIENT`]'s certificate.
    pub const TLS_CA: &str = "pgbackrest-tls-ca.crt";
    /// The certificate.
    pub const TLS_CERT: &str = "pgbackrest-tls.crt";
    /// Its key.
    pub const TLS_KEY: &str = "pgbackrest-tls.key";

    /// The S3 credentials of repository `n` (1-based).
    pub fn s3_credentials(n: usize) -> String {
        format!("pgbackrest-repo{n}-s3-credentials")
    }

    /// The CA of repository `n`'s endpoint.
    pub fn s3_ca(n: usize) -> String {
        format!("pgbackrest-repo{n}-ca.crt")
    }
}

/// The `[global]` lines of every repository (1-based as pgBackRest counts).
fn repositories(backup: &BackupSettings, out: &mut String) {
    for (i, r) in backup.repositories.iter().enumerate() {
        let n = i + 1;
        match r.kind() {
            Some(RepositoryKind::S3(s3)) => {
                let (host, port) = match s3.endpoint.rsplit_once(':') {
                    Some((h, p)) => (h, p),
                    None => (s3.endpoint.as_str(), "443"),
                };
                let style = match s3.uri_style {
                    UriStyle::Host => "host",
                    UriStyle::Path => "path",
                };
                let _ = writeln!(out, "repo{n}-type=s3");
                let _ = writeln!(out, "repo{n}-path={}", s3.path);
                let _ = writeln!(out, "repo{n}-s3-bucket={}", s3.bucket);
                let _ = writeln!(out, "repo{n}-s3-endpoint={host}");
                let _ = writeln!(out, "repo{n}-storage-port={port}");
                let _ = writeln!(out, "repo{n}-s3-region={}", s3.region);
                let _ = writeln!(out, "repo{n}-s3-uri-style={style}");
                let verify = if s3.verify_tls { "y" } else { "n" };
                let _ = writeln!(out, "repo{n}-storage-verify-tls={verify}");
                if s3.ca_secret.is_some() {
                    // prepare.sh's copy: the secret is root's, pgBackRest runs as postgres.
                    let _ = writeln!(out, "repo{n}-storage-ca-file={TLS_DIR}/{}", files::s3_ca(n));
                }
            }
            Some(RepositoryKind::Volume(_)) => {
                let _ = writeln!(out, "repo{n}-type=posix");
                // A folder prepare.sh makes postgres's, inside the volume.
                let _ = writeln!(out, "repo{n}-path={VOLUME_DIR}/{}/pgbackrest", r.name);
            }
            None => {}
        }
        // Small files go into bundles: half the requests to an object store
        // (a full backup took 11 s without, 5.3 with, in the proof runs).
        let _ = writeln!(out, "repo{n}-bundle=y");
        if let Some(c) = r.retention.full_count {
            let _ = writeln!(out, "repo{n}-retention-full-type=count");
            let _ = writeln!(out, "repo{n}-retention-full={c}");
        } else if let Some(d) = r.retention.full_days {
            let _ = writeln!(out, "repo{n}-retention-full-type=time");
            let _ = writeln!(out, "repo{n}-retention-full={d}");
        }
    }
}

/// The file every instance of cluster `stanza` shares: the repositories,
/// the local data directory, and the TLS server a backup job reaches the
/// instance through (only a client showing haswarm's certificate gets in,
/// and only to this stanza). No credential: those are in [`INCLUDE_DIR`].
pub fn instance_conf(stanza: &str, backup: &BackupSettings) -> String {
    let mut out = String::from("[global]\n");
    repositories(backup, &mut out);
    out.push_str(&common_global());
    let _ = writeln!(out, "tls-server-address=*");
    let _ = writeln!(out, "tls-server-port={TLS_PORT}");
    let _ = writeln!(out, "tls-server-ca-file={TLS_DIR}/ca.crt");
    let _ = writeln!(out, "tls-server-cert-file={TLS_DIR}/tls.crt");
    let _ = writeln!(out, "tls-server-key-file={TLS_DIR}/tls.key");
    let _ = writeln!(out, "tls-server-auth={TLS_CLIENT}={stanza}");
    let _ = writeln!(out, "\n[{stanza}]");
    let _ = writeln!(out, "pg1-path={PG_DATA}");
    let _ = writeln!(out, "pg1-port={PG_PORT}");
    let _ = writeln!(out, "pg1-socket-path=/var/run/postgresql");
    out
}

/// Settings of every pgBackRest run: logs to stderr only (the container's
/// log), no log files in the data volume, locks in `/tmp`.
fn common_global() -> String {
    [
        "log-level-console=info",
        "log-level-stderr=off",
        "log-level-file=off",
        "lock-path=/tmp/pgbackrest",
        "start-fast=y",
        "process-max=2",
        "compress-type=lz4",
        // A repository that does not answer fails an operation after about
        // four of these: archiving shows False within a minute.
        "io-timeout=5",
        "db-timeout=60",
        "archive-timeout=30",
        "",
    ]
    .join("\n")
}

/// The file a backup job writes: the repositories, and the instances it
/// backs up from as TLS hosts: `hosts[0]` the leader, the rest standbys
/// (with one, the backup copies from it: `backup-standby`).
pub fn job_conf(stanza: &str, backup: &BackupSettings, hosts: &[String]) -> String {
    let mut out = String::from("[global]\n");
    repositories(backup, &mut out);
    out.push_str(&common_global());
    let standby = if hosts.len() > 1 { "y" } else { "n" };
    let _ = writeln!(out, "backup-standby={standby}");
    let _ = writeln!(out, "\n[{stanza}]");
    for (i, h) in hosts.iter().enumerate() {
        let n = i + 1;
        let _ = writeln!(out, "pg{n}-host={h}");
        let _ = writeln!(out, "pg{n}-host-type=tls");
        let _ = writeln!(out, "pg{n}-host-port={TLS_PORT}");
        let _ = writeln!(out, "pg{n}-host-ca-file={TLS_DIR}/ca.crt");
        let _ = writeln!(out, "pg{n}-host-cert-file={TLS_DIR}/tls.crt");
        let _ = writeln!(out, "pg{n}-host-key-file={TLS_DIR}/tls.key");
        let _ = writeln!(out, "pg{n}-path={PG_DATA}");
        let _ = writeln!(out, "pg{n}-port={PG_PORT}");
    }
    out
}

/// The pgBackRest command line with the shared file and the credentials.
pub fn command(stanza: &str) -> String {
    command_with(CONF_PATH, stanza)
}

/// The same with another config file (a job's own).
pub fn command_with(conf: &str, stanza: &str) -> String {
    format!("pgbackrest --config={conf} --config-include-path={INCLUDE_DIR} --stanza={stanza}")
}

/// The PostgreSQL parameters that archive every WAL segment into the
/// repositories (Patroni's dynamic configuration). `archive_timeout`
/// bounds what a restore can miss on a quiet cluster.
pub fn archive_parameters(stanza: &str) -> [(&'static str, String); 3] {
    [
        ("archive_mode", "on".to_owned()),
        (
            "archive_command",
            format!("{} archive-push %p", command(stanza)),
        ),
        ("archive_timeout", "60".to_owned()),
    ]
}

/// The command Patroni bootstraps a restored cluster with
/// (`spec.bootstrap.recovery`): pgBackRest restores the source's backup
/// from the repository and writes the recovery settings (the source's WAL
/// through `restore_command`, the target, promotion at the target), and
/// PostgreSQL replays up to it. `None` without a recovery.
pub fn restore_command(pgc: &haswarm_crds::PostgresCluster) -> Option<String> {
    let r = pgc.spec.bootstrap.recovery.as_ref()?;
    let backup = pgc.spec.backup.as_ref()?;
    let (index, _) = backup.repository(&r.repository)?;
    let target = if let Some(t) = r.target_time {
        format!(
            " --type=time --target=\"{}\" --target-action=promote",
            t.format("%Y-%m-%d %H:%M:%S%.6f+00")
        )
    } else if let Some(lsn) = &r.target_lsn {
        format!(" --type=lsn --target={lsn} --target-action=promote")
    } else if let Some(name) = &r.target_name {
        format!(" --type=name --target=\"{name}\" --target-action=promote")
    } else {
        String::new()
    };
    Some(format!(
        "mkdir -p -m 0700 {PG_DATA} && exec {} --pg1-path={PG_DATA} --repo={}{target} restore",
        command(&r.source),
        index + 1
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use haswarm_crds::postgres::BackupSettings;

    fn settings() -> BackupSettings {
        serde_json::from_value(serde_json::json!({
            "repositories": [
                {"name": "s3", "s3": {"endpoint": "s3.haswarm.test:8333", "bucket": "backups",
                  "uriStyle": "path", "credentialsSecret": {"name": "s3-creds"},
                  "caSecret": {"name": "s3-ca"}},
                 "retention": {"fullCount": 2}},
                {"name": "nfs", "volume": {"sharedVolume": "backups"}, "retention": {"fullDays": 14}},
            ]
        }))
        .expect("settings")
    }

    #[test]
    fn instances_archive_into_every_repository_and_serve_tls_to_haswarm_only() {
        let c = instance_conf("db", &settings());
        for line in [
            "repo1-type=s3",
            "repo1-s3-endpoint=s3.haswarm.test",
            "repo1-storage-port=8333",
            "repo1-s3-uri-style=path",
            "repo1-storage-verify-tls=y",
            "repo1-storage-ca-file=/var/lib/postgresql/pgbackrest/tls/pgbackrest-repo1-ca.crt",
            "repo1-retention-full-type=count",
            "repo1-retention-full=2",
            "repo2-type=posix",
            "repo2-path=/var/lib/haswarm-backup/nfs/pgbackrest",
            "repo2-retention-full-type=time",
            "repo2-retention-full=14",
            "tls-server-auth=haswarm=db",
            "[db]",
            "pg1-path=/var/lib/postgresql/data",
        ] {
            assert!(c.lines().any(|l| l == line), "{line} missing from\n{c}");
        }
        assert!(
            !c.contains("s3-key"),
            "no credential in a Swarm config:\n{c}"
        );
    }

    #[test]
    fn a_job_backs_up_from_a_standby_when_it_names_one() {
        let hosts = ["db-pg-1".to_owned(), "db-pg-0".to_owned()];
        let c = job_conf("db", &settings(), &hosts);
        assert!(c.contains("backup-standby=y\n"), "{c}");
        assert!(
            c.contains("pg1-host=db-pg-1\n") && c.contains("pg2-host=db-pg-0\n"),
            "{c}"
        );
        assert!(c.contains("pg2-host-type=tls\n"), "{c}");
        let alone = job_conf("db", &settings(), &hosts[..1]);
        assert!(alone.contains("backup-standby=n\n"), "{alone}");
    }

    #[test]
    fn a_restore_reads_the_sources_stanza_up_to_its_one_target() {
        let mut pgc: haswarm_crds::PostgresCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "haswarm.io/v1alpha1", "kind": "PostgresCluster",
            "metadata": {"name": "db2"},
            "spec": {"bootstrap": {"recovery": {"source": "db", "repository": "nfs",
                "targetTime": "2026-12-06T10:15:00.25Z"}}}
        }))
        .expect("pgc");
        assert_eq!(restore_command(&pgc), None, "no repository, no restore");
        pgc.spec.backup = Some(settings());
        let c = restore_command(&pgc).expect("a command");
        assert!(c.contains("--stanza=db --pg1-path=/var/lib/postgresql/data --repo=2 --type=time --target=\"2026-12-06 10:15:00.250000+00\" --target-action=promote restore"), "{c}");
        if let Some(r) = pgc.spec.bootstrap.recovery.as_mut() {
            r.target_time = None;
        }
        let all = restore_command(&pgc).expect("a command");
        assert!(
            all.ends_with("--stanza=db --pg1-path=/var/lib/postgresql/data --repo=2 restore"),
            "{all}"
        );
    }

    #[test]
    fn archiving_runs_pgbackrest_with_the_credentials_folder() {
        let p = archive_parameters("db");
        assert_eq!(p[0], ("archive_mode", "on".to_owned()));
        assert_eq!(
            p[1].1,
            "pgbackrest --config=/etc/haswarm/pgbackrest.conf --config-include-path=/var/lib/postgresql/pgbackrest/conf.d --stanza=db archive-push %p"
        );
    }
}
