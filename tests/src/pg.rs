//! PostgresCluster test helpers shared by the end-to-end tests: where the
//! cluster's containers run, psql clients on its network with the app
//! user's login, a writer's acknowledged commits, and a leader killed under
//! that writer.

use std::collections::BTreeSet;

use std::time::{Duration, Instant};

use crate::dind::Bed;
use crate::docker::{docker, eventually, secret_value, service_container};
use crate::{stdout, Daemon};

/// The image with every part of a PostgresCluster (`prepare.sh` builds it).
pub const IMAGE: &str = "haswarm/postgres:15";

/// Where the cluster's containers run: the local engine, or the nodes of a
/// Docker-in-Docker bed (the test's clients then run on its manager).
#[derive(Clone, Copy, Debug)]
pub enum At<'a> {
    /// The local engine.
    Local,
    /// The nodes of a bed; clients run on its manager.
    Bed(&'a Bed),
    /// The nodes of a bed; clients run on node `i` (1-based): one whose
    /// engine the test does not restart.
    Node(&'a Bed, usize),
}

impl At<'_> {
    /// `docker ARGS` on the engine where the test's clients run.
    pub fn docker(self, args: &[&str]) -> String {
        match self {
            At::Local => docker(args),
            At::Bed(bed) => bed.docker_on(1, args),
            At::Node(bed, i) => bed.docker_on(i, args),
        }
    }

    /// `docker ARGS` on the manager's engine (a secret is read there, by a
    /// one-shot service).
    pub fn manager(self, args: &[&str]) -> String {
        match self {
            At::Local => docker(args),
            At::Bed(bed) | At::Node(bed, _) => bed.docker_on(1, args),
        }
    }

    /// `docker run` of `image` running `sh -c script` on `network`, on the
    /// engine where the test's clients run, with `env` (`NAME=value`) in its
    /// environment (a test's own container: never a command line of a
    /// member); `how` says how it runs (`--rm`, or `-d` and a name).
    pub fn run(
        self,
        how: &[&str],
        (network, env): (&str, &[String]),
        image: &str,
        script: &str,
    ) -> String {
        let mut args = vec!["run"];
        args.extend_from_slice(how);
        args.extend_from_slice(&["--network", network]);
        for e in env {
            args.extend_from_slice(&["-e", e]);
        }
        args.extend_from_slice(&[image, "sh", "-c", script]);
        self.docker(&args)
    }

    /// `docker ARGS` on the engine that runs `service`'s task; `args` gets
    /// that task's container.
    pub fn at_service(self, service: &str, args: impl FnOnce(&str) -> Vec<String>) -> String {
        match self {
            At::Local => {
                let a = args(&service_container(service));
                docker(&a.iter().map(String::as_str).collect::<Vec<_>>())
            }
            At::Bed(bed) | At::Node(bed, _) => {
                let Some(i) = bed.node_of(service) else {
                    return String::new();
                };
                let filter = format!("label=com.docker.swarm.service.name={service}");
                let ps = bed.docker_on(i, &["ps", "-q", "--filter", &filter]);
                let a = args(ps.lines().next().unwrap_or_default());
                bed.docker_on(i, &a.iter().map(String::as_str).collect::<Vec<_>>())
            }
        }
    }
}

/// A password as the instances read it (superuser, replication, REST API).
pub fn secret(at: At, name: &str, file: &str) -> String {
    at.at_service(&format!("{name}-pg-0"), |c| {
        vec![
            "exec".into(),
            c.into(),
            "cat".into(),
            format!("/run/secrets/{file}"),
        ]
    })
    .trim()
    .to_owned()
}

/// The value of the Swarm secret `secret`.
pub fn value_of(at: At, secret: &str) -> String {
    secret_value(&|args: &[&str]| at.manager(args), secret, IMAGE)
}

/// The app user's login as the status names it: (role, password).
pub fn app_login(d: &Daemon, at: At, name: &str) -> (String, String) {
    let v = d.get_json("pgc", name);
    let user = v["status"]["appUser"].as_str().unwrap_or("app").to_owned();
    let secret = v["status"]["appPasswordSecret"]
        .as_str()
        .unwrap_or_else(|| panic!("no app password secret: {v}"))
        .to_owned();
    (user, value_of(at, &secret))
}

/// Runs `sh -c script` in a throwaway container on the cluster's network,
/// as an application would, with the app user's login in PGUSER/PGPASSWORD.
pub fn client(d: &Daemon, at: At, name: &str, script: &str) -> String {
    run_client(d, at, name, &["--rm"], script)
}

/// `docker run` of a psql client container on the cluster's network with
/// the app user's credentials; `how` says how it runs (`--rm`, or `-d`
/// and a name).
pub fn run_client(d: &Daemon, at: At, name: &str, how: &[&str], script: &str) -> String {
    let (user, password) = app_login(d, at, name);
    run_client_as(at, name, how, (&user, &password), script)
}

/// `run_client` with the given user and password.
pub fn run_client_as(
    at: At,
    name: &str,
    how: &[&str],
    (user, password): (&str, &str),
    script: &str,
) -> String {
    let env = [
        format!("PGPASSWORD={password}"),
        format!("PGUSER={user}"),
        "PGDATABASE=app".to_owned(),
    ];
    at.run(how, (&format!("{name}-net"), &env), IMAGE, script)
}

pub fn leader(d: &Daemon, name: &str) -> String {
    d.get_json("pgc", name)["status"]["leader"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The numbers a writer printed: each one's INSERT was acknowledged.
pub fn acked(at: At, writer: &str) -> BTreeSet<u64> {
    at.docker(&["logs", writer])
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Creates the table `acked` and starts a writer, the container
/// `<name>-writer` on the manager, that commits numbered rows through the
/// rw endpoint, one connection per commit (in synchronous mode a standby
/// has each acknowledged one too). A number is printed only once its commit
/// was acknowledged; a failed attempt is retried with the same number, and
/// a connection gives up after 2 s (a router on a lost node). Returns the
/// container's name once 30 commits went through.
pub fn start_writer(d: &Daemon, at: At, name: &str) -> String {
    let rw = format!("{name}-rw");
    let out = client(
        d,
        at,
        name,
        &format!(
            "psql -h {rw} -v ON_ERROR_STOP=1 -Atc 'CREATE TABLE acked(i int primary key)' 2>&1"
        ),
    );
    assert!(out.contains("CREATE TABLE"), "{out}");
    let writer = format!("{name}-writer");
    let script = format!(
        "i=1; while :; do if PGCONNECT_TIMEOUT=2 psql -h {rw} -Atq -c \"INSERT INTO acked VALUES ($i) ON CONFLICT DO NOTHING\" >/dev/null 2>&1; then echo $i; i=$((i+1)); else sleep 0.2; fi; done"
    );
    run_client(d, at, name, &["-d", "--name", &writer], &script);
    assert!(
        eventually(Duration::from_secs(60), || acked(at, &writer).len() >= 30),
        "the writer does not commit"
    );
    writer
}

/// The rows of `acked` as `host` (the rw endpoint or an instance) serves
/// them, from a read that succeeded: a failed one is asked again for up to
/// a minute, then fails the test. A read that failed must never count as
/// rows missing (CI once saw every acknowledged row "lost" when the router
/// refused the one read just after a failover).
pub fn rows_on(d: &Daemon, at: At, name: &str, host: &str) -> BTreeSet<u64> {
    const READ: &str = "haswarm-test: read";
    let script = format!("psql -h {host} -Atc 'SELECT i FROM acked' 2>&1 && echo '{READ}'");
    let mut out = String::new();
    let read = eventually(Duration::from_secs(60), || {
        out = client(d, at, name, &script);
        out.contains(READ)
    });
    assert!(read, "{host} did not answer a read of acked: {out}");
    out.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// A writer commits numbered rows through the rw endpoint, one connection
/// per commit (synchronous mode: a standby has each acknowledged one too);
/// the leader's container is killed; a replica takes over, the writer goes
/// on through the same endpoint, no acknowledged row is missing, and the old
/// leader comes back as a replica. Returns the old and the new leader.
pub fn fail_over(d: &Daemon, name: &str, at: At) -> (String, String) {
    let rw = format!("{name}-rw");
    let writer = start_writer(d, at, name);

    let old = leader(d, name);
    let killed_at = Instant::now();
    let killed = at.at_service(&old, |c| {
        vec!["kill".into(), "-s".into(), "KILL".into(), c.into()]
    });
    assert!(
        !killed.trim().is_empty(),
        "the leader {old}'s container was not killed (no container found)"
    );
    let before = acked(at, &writer).len();
    let moved = eventually(Duration::from_secs(60), || {
        let l = leader(d, name);
        !l.is_empty() && l != old
    });
    assert!(moved, "no failover: {}", d.get_json("pgc", name));
    eprintln!("new leader seen after {:?}", killed_at.elapsed());
    assert!(
        eventually(Duration::from_secs(60), || acked(at, &writer).len()
            >= before + 30),
        "the writer did not resume"
    );
    at.docker(&["kill", &writer]);
    let acknowledged = acked(at, &writer);
    at.docker(&["rm", &writer]);
    let present = rows_on(d, at, name, &rw);
    let lost: Vec<&u64> = acknowledged.difference(&present).collect();
    assert!(
        lost.is_empty(),
        "acknowledged commits lost: {lost:?} (of {})",
        acknowledged.len()
    );

    // The old leader comes back as a replica; status and events tell.
    d.wait_for(&format!("pgc/{name}"), "condition=Ready", "180s");
    let v = d.get_json("pgc", name);
    let role = v["status"]["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == old.as_str()))
        .map(|m| m["role"].clone());
    assert!(
        role.as_ref().is_some_and(|r| r != "Leader"),
        "{old} is back as {role:?}: {v}"
    );
    let described = stdout(&d.ctl(&["describe", "pgc", name]));
    assert!(described.contains("LeaderChanged"), "{described}");
    assert!(described.contains("LeaderReleased"), "{described}");
    (old, leader(d, name))
}
