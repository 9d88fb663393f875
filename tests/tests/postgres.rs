//! PostgresCluster end to end on the local single-node Swarm, with real
//! PostgreSQL 15, Patroni, etcd and HAProxy from Debian's packages (image
//! built by `tests/testbed/prepare.sh`): the cluster bootstraps, becomes
//! Ready with a leader and two streaming replicas, psql and pgbench work
//! through the read-write endpoint, writes reach the replicas through the
//! read-only one, no password shows anywhere it should not, and deleting the
//! cluster with reclaimPolicy Delete leaves nothing behind. A killed leader
//! is replaced without losing an acknowledged commit (on a 3-node bed too:
//! multinode.rs). Scaled up, a new instance clones the
//! leader; scaled down, the highest instances go and every row stays. The
//! app user's password rotates with no window (its two logins alternate,
//! the previous password works until the next rotation), the superuser's
//! rotates in place, and bootstrap users log in, one added later too. A
//! switchover, a superuser rotation and an etcd member's join go on through
//! a haswarmd killed with SIGKILL in their middle, leaving no duplicate or
//! orphan Swarm object.

use std::time::Duration;

use haswarm_testbed::docker::{
    assert_tidy, create_secret, docker, eventually, require_image, require_swarm,
    service_container, Cleanup,
};
use haswarm_testbed::faults::kill_point;
use haswarm_testbed::{assert_code, one_at_a_time, stdout, Daemon};
use serde_json::Value;

use haswarm_testbed::pg::{
    app_login, client, fail_over, leader, run_client_as, secret, value_of, At, IMAGE,
};

/// A 3-instance cluster in synchronous mode, everything on one node.
fn manifest(name: &str) -> String {
    manifest_with(name, "None", 3)
}

/// The same, with the placement's spread (`Required`: one instance per
/// node) and number of instances.
fn manifest_with(name: &str, spread: &str, instances: u8) -> String {
    format!(
        "apiVersion: haswarm.io/v1alpha1\nkind: PostgresCluster\nmetadata:\n  name: {name}\nspec:\n  instances: {instances}\n  postgres:\n    image: {IMAGE}\n  etcd:\n    image: {IMAGE}\n  router:\n    image: {IMAGE}\n  placement:\n    spread: {spread}\n  patroni:\n    ttl: 20\n    loopWait: 2\n    retryTimeout: 4\n    synchronousMode: On\n  storage:\n    reclaimPolicy: Delete\n  bootstrap:\n    users:\n    - name: reporting\n      options: [CREATEDB]\n"
    )
}

#[test]
fn a_cluster_bootstraps_serves_through_its_routers_and_is_removed_with_its_data() {
    let _one = one_at_a_time();
    require_swarm();
    require_image(IMAGE);
    let name = format!("e2e-pg-{}", std::process::id());
    let mut cleanup = Cleanup::default();
    cleanup.owner("PostgresCluster", &name);
    let d = Daemon::start_with_controllers(&["--resync", "5s"]);
    d.apply("pgc.yaml", &manifest(&name));
    d.wait_for(&format!("pgc/{name}"), "condition=Ready", "300s");

    let v: Value = d.get_json("pgc", &name);
    let leader = v["status"]["leader"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(leader.starts_with(&format!("{name}-pg-")), "{v}");
    let members = v["status"]["members"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(members.len(), 3, "{v}");
    assert_eq!(
        v["status"]["readWriteEndpoint"],
        format!("{name}-rw:5432"),
        "{v}"
    );

    // What an application needs, with the password by file only.
    let env = stdout(&d.ctl(&["get", "pgc", &name, "-o", "env"]));
    let app_secret = v["status"]["appPasswordSecret"]
        .as_str()
        .unwrap_or_default();
    assert!(env.contains(&format!("DB_HOST={name}-rw\n")), "{env}");
    assert!(
        env.contains(&format!("DB_PASSWORD_FILE=/run/secrets/{app_secret}")),
        "{env}"
    );

    // psql and pgbench through the read-write endpoint, as the app user.
    let rw = format!("{name}-rw");
    let out = client(
        &d,
        At::Local,
        &name,
        &format!(
            "psql -h {rw} -v ON_ERROR_STOP=1 -Atc 'CREATE TABLE items(i int primary key)' -c 'INSERT INTO items SELECT generate_series(1, 100)' -c 'SELECT pg_is_in_recovery(), count(*) FROM items' 2>&1"
        ),
    );
    assert!(out.lines().any(|l| l == "f|100"), "{out}");
    let init = client(
        &d,
        At::Local,
        &name,
        &format!("pgbench -h {rw} -i -s 1 -q 2>&1 && echo initialized"),
    );
    assert!(init.contains("initialized"), "{init}");
    // The router marks its leader down after two failed checks a second
    // apart and cuts its sessions: under CI's load Patroni's API has been
    // that slow (etcd: "server is likely overloaded"), and a run lost its
    // connections midway. A cut run is run again, at most twice.
    let mut bench = String::new();
    for _ in 0..3 {
        bench = client(
            &d,
            At::Local,
            &name,
            &format!("pgbench -h {rw} -c 2 -t 50 -n 2>&1"),
        );
        if !bench.contains("server closed the connection") {
            break;
        }
        eprintln!("pgbench lost its connection through {rw}, run again:\n{bench}");
    }
    assert!(
        bench.contains("number of transactions actually processed: 100/100"),
        "{bench}"
    );

    // The replicas have the rows, read through the read-only endpoint.
    let ro = format!("{name}-ro");
    let replicated = eventually(Duration::from_secs(30), || {
        client(
            &d,
            At::Local,
            &name,
            &format!("psql -h {ro} -Atc 'SELECT pg_is_in_recovery(), count(*) FROM items' 2>&1"),
        )
        .lines()
        .any(|l| l == "t|100")
    });
    assert!(replicated, "the rows never showed through {ro}");

    // An application on the network may read Patroni's API but not change
    // anything: changes need haswarm's API password.
    let unauthenticated = client(
        &d,
        At::Local,
        &name,
        &format!(
            "python3 -c \"import urllib.request, urllib.error\ntry:\n    urllib.request.urlopen(urllib.request.Request('http://{leader}:8008/restart', data=b'{{}}', method='POST'), timeout=5)\n    print('accepted')\nexcept urllib.error.HTTPError as e:\n    print(e.code)\""
        ),
    );
    assert_eq!(unauthenticated.trim(), "401", "{unauthenticated}");

    // A switchover asked from the CLI hands the leadership over, and the rw
    // endpoint follows; one Patroni refuses is reported as failed.
    // With synchronous replication Patroni hands over only to the
    // synchronous standby.
    let v = d.get_json("pgc", &name);
    let standby = v["status"]["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["role"] == "SyncStandby"))
        .and_then(|m| m["name"].as_str())
        .unwrap_or_default()
        .to_owned();
    let target: u8 = standby
        .rsplit('-')
        .next()
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("no synchronous standby: {v}"));
    let other = (0..3)
        .find(|i| format!("{name}-pg-{i}") != leader && *i != target)
        .unwrap_or(0);
    let refused = d.ctl(&[
        "pg",
        "switchover",
        &name,
        "--to",
        &other.to_string(),
        "--wait",
        "--timeout=2m",
    ]);
    assert_code(&refused, 1);
    // haswarmd dies with SIGKILL up to 4 s after the request (before,
    // during or after Patroni's switchover) and starts again on the same
    // data: the switchover happens, once.
    let switched = |d: &Daemon| {
        d.events("postgresclusters", &name)
            .iter()
            .filter(|(r, m)| r == "Switchover" && m.contains("requested with haswarmctl"))
            .count()
    };
    let switched_before = switched(&d);
    let o = d.ctl(&["pg", "switchover", &name, "--to", &target.to_string()]);
    assert_code(&o, 0);
    let (_, delay) = kill_point("switchover", &["the request"], Duration::from_secs(4));
    std::thread::sleep(delay);
    d.kill_and_restart();
    let new_leader = format!("{name}-pg-{target}");
    assert!(
        eventually(Duration::from_secs(180), || {
            d.get_json("pgc", &name)["status"]["leader"] == new_leader.as_str()
        }),
        "{}",
        d.get_json("pgc", &name)
    );
    d.wait_for(&format!("pgc/{name}"), "condition=Ready", "180s");
    assert!(
        switched(&d) <= switched_before + 1,
        "one request, one switchover: {:?}",
        d.events("postgresclusters", &name)
    );
    let on_new = eventually(Duration::from_secs(30), || {
        client(
            &d,
            At::Local,
            &name,
            &format!("psql -h {rw} -Atc 'SELECT count(*) FROM items' 2>&1"),
        )
        .lines()
        .any(|l| l == "100")
    });
    assert!(on_new, "the rw endpoint does not reach the new leader");

    // A bootstrap user logs in with its own generated password and has the
    // attributes asked for.
    let v = d.get_json("pgc", &name);
    let reporting_secret = v["status"]["userPasswordSecrets"]["reporting"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reporting_secret.starts_with(&format!("{name}-user-reporting-password-")),
        "{v}"
    );
    let reporting = value_of(At::Local, &reporting_secret);
    assert_eq!(reporting.len(), 32);
    let attrs = run_client_as(
        At::Local,
        &name,
        &["--rm"],
        ("reporting", &reporting),
        &format!("psql -h {rw} -Atc 'SELECT rolcreatedb, rolcanlogin FROM pg_roles WHERE rolname = current_user' 2>&1"),
    );
    assert!(attrs.lines().any(|l| l == "t|t"), "{attrs}");
    let count = |(user, password): (&str, &str)| {
        run_client_as(
            At::Local,
            &name,
            &["--rm"],
            (user, password),
            &format!("psql -h {rw} -Atc 'SELECT count(*) FROM items' 2>&1"),
        )
    };
    let works = |login: (&str, &str)| count(login).lines().any(|l| l == "100");
    let refused = |login: (&str, &str)| count(login).contains("password authentication failed");

    // The app user's password rotates with no window: the alternate login
    // takes a new password, applications are told to use it, and the login
    // they use now keeps working until the next rotation. Nothing restarts.
    let mut also_hidden = vec![reporting];
    let (user0, pw0) = app_login(&d, At::Local, &name);
    assert_eq!(user0, "app");
    let leader_before = self::leader(&d, &name);
    // An application that opens a new connection (so authenticates) every
    // 100 ms with the login in use, all through the rotation.
    let reauth = format!("{name}-reauth");
    cleanup.named("container", &reauth);
    run_client_as(
        At::Local,
        &name,
        &["-d", "--name", &reauth],
        (&user0, &pw0),
        &format!("while :; do if psql -h {rw} -Atqc 'SELECT 1' >/dev/null 2>&1; then echo ok; else echo failed; fi; sleep 0.1; done"),
    );
    let o = d.ctl(&[
        "rotate-password",
        &format!("pgc/{name}"),
        "--wait",
        "--timeout",
        "5m",
    ]);
    assert_code(&o, 0);
    d.wait_for(&format!("pgc/{name}"), "condition=Ready", "180s");
    let (user1, pw1) = app_login(&d, At::Local, &name);
    assert_eq!(user1, "app_alt");
    assert_eq!(pw1.len(), 32);
    assert_ne!(pw1, pw0);
    assert!(works((&user1, &pw1)), "the new login does not work");
    assert!(works((&user0, &pw0)), "the previous login stopped working");
    // It goes on with the previous login after the rotation too.
    let oks = || {
        docker(&["logs", &reauth])
            .lines()
            .filter(|l| *l == "ok")
            .count()
    };
    eventually(Duration::from_secs(30), || oks() >= 20);
    docker(&["kill", &reauth]);
    let attempts = docker(&["logs", &reauth]);
    docker(&["rm", &reauth]);
    let ok = attempts.lines().filter(|l| *l == "ok").count();
    let failed = attempts.lines().filter(|l| *l == "failed").count();
    assert!(ok >= 20, "too few connections to judge: {attempts}");
    assert_eq!(
        failed,
        0,
        "{failed} of {} connections failed during the rotation",
        ok + failed
    );
    haswarm_testbed::figure!(
        "[figures] app user rotation: {ok} connections with the previous login during and after it, none refused"
    );
    let v = d.get_json("pgc", &name);
    assert_eq!(v["status"]["previousAppLogin"]["user"], "app", "{v}");
    assert_eq!(
        self::leader(&d, &name),
        leader_before,
        "the leader did not change: nothing restarted"
    );
    let env = stdout(&d.ctl(&["get", "pgc", &name, "-o", "env"]));
    assert!(env.contains("DB_USERNAME=app_alt\n"), "{env}");
    // The alternate login acts as the owner: what it creates is the owner's.
    let acts = run_client_as(
        At::Local,
        &name,
        &["--rm"],
        (&user1, &pw1),
        &format!("psql -h {rw} -v ON_ERROR_STOP=1 -Atc 'SELECT session_user, current_user' -c 'CREATE TABLE made_by_alt(i int)' -c \"SELECT tableowner FROM pg_tables WHERE tablename = 'made_by_alt'\" 2>&1"),
    );
    assert!(acts.lines().any(|l| l == "app_alt|app"), "{acts}");
    assert!(acts.lines().any(|l| l == "app"), "{acts}");

    // The superuser's rotates in place: PostgreSQL takes the new one, the
    // instances move to its secret, the old one is refused. haswarmd dies
    // with SIGKILL at a random point (up to 5 s into the phase that sets the
    // password, or into the one that moves the instances) and starts again
    // on the same data: the rotation goes on from its stored phase.
    let before = secret(At::Local, &name, "pg-superuser-password");
    let rotation = || d.get_json("pgc", &name)["status"]["passwordRotation"].clone();
    let asked_before = rotation()["requested"].clone();
    assert_code(
        &d.ctl(&[
            "rotate-password",
            &format!("pgc/{name}"),
            "--user",
            "superuser",
        ]),
        0,
    );
    let (phase, delay) = kill_point(
        "superuser rotation",
        &[
            "Alter (the job sets the password)",
            "Use (the instances move)",
        ],
        Duration::from_secs(5),
    );
    // Alter may be over before a look sees it: Use is past it too.
    let reached = |p: &Value| p == "Use" || (phase == 0 && p == "Alter");
    assert!(
        eventually(Duration::from_secs(240), || reached(&rotation()["phase"])),
        "{}",
        rotation()
    );
    std::thread::sleep(delay);
    d.kill_and_restart();
    assert!(
        eventually(Duration::from_secs(480), || {
            let r = rotation();
            r["requested"] != asked_before && r["phase"].is_null()
        }),
        "{}",
        d.get_json("pgc", &name)
    );
    d.wait_for(&format!("pgc/{name}"), "condition=Ready", "180s");
    let members: Vec<String> = (0..3)
        .map(|i| format!("{name}-pg-{i}"))
        .chain((0..3).map(|j| format!("{name}-etcd-{j}")))
        .chain([format!("{name}-rw"), format!("{name}-ro")])
        .collect();
    assert_tidy("PostgresCluster", &name, &members, || {
        d.get_json("pgc", &name)["status"].clone()
    });
    let after = secret(At::Local, &name, "pg-superuser-password");
    assert_eq!(after.len(), 32, "a new generated password");
    assert_ne!(after, before, "the instances use the new password");
    assert_eq!(app_login(&d, At::Local, &name).0, "app_alt");
    assert!(works(("postgres", &after)), "the new superuser password");
    assert!(
        refused(("postgres", &before)),
        "the old superuser password still works"
    );

    // Then to a secret of the user's: naming it in spec.credentials rotates
    // the app password the same way, back to login `app`; the login before
    // keeps working, the one before that is refused. A user added to the
    // spec now is created too, and a user's changed options are applied.
    let theirs = "UsersOwnPassword0123456789abcdef";
    let their_secret = format!("{name}-users-app-pw");
    cleanup.named("secret", &their_secret);
    create_secret(&their_secret, theirs);
    d.apply(
        "pgc.yaml",
        &format!(
            "{}    - name: audit\n  credentials:\n    appUserSecret:\n      name: {their_secret}\n",
            manifest(&name).replace("options: [CREATEDB]", "options: [CREATEROLE]")
        ),
    );
    let moved = eventually(Duration::from_secs(300), || {
        d.get_json("pgc", &name)["status"]["appPasswordSecret"] == their_secret.as_str()
    });
    assert!(moved, "{}", d.get_json("pgc", &name));
    d.wait_for(&format!("pgc/{name}"), "condition=Ready", "300s");
    assert_eq!(
        app_login(&d, At::Local, &name),
        ("app".to_owned(), theirs.to_owned())
    );
    assert!(works(("app", theirs)), "the user's secret");
    assert!(works((&user1, &pw1)), "the previous login stopped working");
    assert!(
        refused(("app", &pw0)),
        "a password two rotations old still works"
    );
    let v = d.get_json("pgc", &name);
    let audit = value_of(
        At::Local,
        v["status"]["userPasswordSecrets"]["audit"]
            .as_str()
            .unwrap_or_else(|| panic!("no secret for the added user: {v}")),
    );
    let who = run_client_as(
        At::Local,
        &name,
        &["--rm"],
        ("audit", &audit),
        &format!("psql -h {rw} -Atc 'SELECT current_user' 2>&1"),
    );
    assert_eq!(who.trim(), "audit", "{who}");
    let attributes = run_client_as(
        At::Local,
        &name,
        &["--rm"],
        ("audit", &audit),
        &format!("psql -h {rw} -Atc \"SELECT rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = 'reporting'\" 2>&1"),
    );
    assert_eq!(
        attributes.trim(),
        "f|t",
        "CREATEDB taken back, CREATEROLE given"
    );
    also_hidden.extend([pw0, pw1, before, theirs.to_owned(), audit]);
    let described = stdout(&d.ctl(&["describe", "pgc", &name]));
    assert!(described.contains("PasswordRotation"), "{described}");
    assert!(described.contains("spec.credentials names"), "{described}");

    // No password anywhere but the secrets.
    let passwords: Vec<String> = [
        "pg-superuser-password",
        "pg-replication-password",
        "pg-api-password",
    ]
    .iter()
    .map(|f| secret(At::Local, &name, f))
    .collect();
    assert!(
        passwords.iter().all(|p| p.len() == 32),
        "generated passwords"
    );
    let hidden: Vec<&str> = passwords
        .iter()
        .chain(&also_hidden)
        .map(String::as_str)
        .collect();
    d.assert_secrets_hidden("PostgresCluster", "pgc", &name, &hidden);

    // Deleted with reclaimPolicy Delete: services, network and data go.
    assert_code(
        &d.ctl(&["delete", "pgc", &name, "--wait", "--timeout=180s"]),
        0,
    );
    assert!(haswarm_testbed::docker::owned_services("PostgresCluster", &name).is_empty());
    let volumes = docker(&["volume", "ls", "-q", "--filter", &format!("name={name}-")]);
    assert_eq!(volumes.trim(), "", "volumes left after delete");
    // Nor the exited containers of its one-shot jobs (the password jobs ran
    // above), which Swarm keeps after their service is removed. Its
    // services' containers go a moment after the services.
    let mut left = String::new();
    let gone = haswarm_testbed::docker::eventually(Duration::from_secs(30), || {
        left = haswarm_testbed::docker::docker_ok(&[
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            &format!("name={name}-"),
        ]);
        left.trim().is_empty()
    });
    assert!(gone, "containers left after delete: {left}");
}

#[test]
fn a_killed_leader_is_replaced_without_losing_a_commit_then_the_cluster_scales() {
    let _one = one_at_a_time();
    require_swarm();
    require_image(IMAGE);
    let name = format!("e2e-pgfail-{}", std::process::id());
    let mut cleanup = Cleanup::default();
    cleanup.owner("PostgresCluster", &name);
    cleanup.named("container", &format!("{name}-writer"));
    let d = Daemon::start_with_controllers(&["--resync", "5s"]);
    d.apply("pgc.yaml", &manifest(&name));
    d.wait_for(&format!("pgc/{name}"), "condition=Ready", "300s");
    fail_over(&d, &name, At::Local);

    // Scaled up, a new instance clones the leader and replicates; scaled
    // down, the highest instances go (after a switchover when one of them
    // leads) and every row stays.
    let rows = || {
        client(
            &d,
            At::Local,
            &name,
            &format!("psql -h {name}-rw -Atc 'SELECT count(*) FROM acked' 2>&1"),
        )
        .trim()
        .to_owned()
    };
    let before = rows();
    d.apply("pgc.yaml", &manifest_with(&name, "None", 4));
    d.wait_for(&format!("pgc/{name}"), "condition=Ready", "300s");
    let added = format!("{name}-pg-3");
    let on_added = docker(&[
        "exec",
        &service_container(&added),
        "psql",
        "-U",
        "postgres",
        "-d",
        "app",
        "-Atc",
        "SELECT pg_is_in_recovery(), count(*) FROM acked",
    ]);
    assert_eq!(on_added.trim(), format!("t|{before}"), "{added}");
    d.apply("pgc.yaml", &manifest_with(&name, "None", 2));
    d.wait_for(&format!("pgc/{name}"), "condition=Ready", "300s");
    let services = haswarm_testbed::docker::owned_services("PostgresCluster", &name);
    for gone in [format!("{name}-pg-2"), added] {
        assert!(!services.contains(&gone), "{gone} still runs");
    }
    let now = leader(&d, &name);
    assert!(
        [format!("{name}-pg-0"), format!("{name}-pg-1")].contains(&now),
        "leader {now}"
    );
    assert_eq!(rows(), before, "rows after scaling down");
    assert_code(
        &d.ctl(&["delete", "pgc", &name, "--wait", "--timeout=180s"]),
        0,
    );
}

/// etcd's members as etcd lists them: (name, is learner), from a member's
/// container.
fn etcd_members_listed(name: &str) -> Vec<(String, bool)> {
    docker(&[
        "exec",
        &service_container(&format!("{name}-etcd-0")),
        "etcdctl",
        "--endpoints=http://127.0.0.1:2379",
        "member",
        "list",
    ])
    .lines()
    .filter_map(|l| {
        let f: Vec<&str> = l.split(", ").collect();
        (f.len() == 6).then(|| (f[2].to_owned(), f[5] == "true"))
    })
    .collect()
}

#[test]
fn etcd_grows_through_a_killed_daemon_and_shrinks_one_member_at_a_time_and_the_data_stays() {
    let _one = one_at_a_time();
    require_swarm();
    require_image(IMAGE);
    let name = format!("e2e-pgetcd-{}", std::process::id());
    let mut cleanup = Cleanup::default();
    cleanup.owner("PostgresCluster", &name);
    let d = Daemon::start_with_controllers(&["--resync", "5s"]);
    let manifest = |members: u8| {
        format!(
            "apiVersion: haswarm.io/v1alpha1\nkind: PostgresCluster\nmetadata:\n  name: {name}\nspec:\n  instances: 1\n  postgres:\n    image: {IMAGE}\n  etcd:\n    members: {members}\n    image: {IMAGE}\n  router:\n    image: {IMAGE}\n    replicas: 1\n  placement:\n    spread: None\n  patroni:\n    ttl: 20\n    loopWait: 2\n    retryTimeout: 4\n  storage:\n    reclaimPolicy: Delete\n"
        )
    };
    d.apply("pgc.yaml", &manifest(1));
    d.wait_for(&format!("pgc/{name}"), "condition=Ready", "300s");
    let rw = format!("{name}-rw");
    let out = client(
        &d,
        At::Local,
        &name,
        &format!("psql -h {rw} -v ON_ERROR_STOP=1 -Atc 'CREATE TABLE kept(i int)' -c 'INSERT INTO kept SELECT generate_series(1, 50)' 2>&1"),
    );
    assert!(out.contains("INSERT 0 50"), "{out}");
    let settled_at = |members: u8| {
        let v = d.get_json("pgc", &name);
        v["status"]["etcdMembership"]["members"] == members
            && v["status"]["etcdMembership"]["learner"].is_null()
            && v["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .is_some_and(|c| c["status"] == "True")
    };

    // 1 -> 3: each new member joins as a learner, then votes. haswarmd dies
    // with SIGKILL up to 5 s after the first learner is in etcd (not voting
    // yet), and starts again on the same data: the join goes on, and no
    // member is added twice or left behind.
    d.apply("pgc.yaml", &manifest(3));
    let learner = || d.get_json("pgc", &name)["status"]["etcdMembership"]["learner"].clone();
    assert!(
        eventually(Duration::from_secs(300), || !learner().is_null()),
        "{}",
        d.get_json("pgc", &name)
    );
    let (_, delay) = kill_point(
        "etcd grow",
        &["the first learner's join"],
        Duration::from_secs(5),
    );
    std::thread::sleep(delay);
    d.kill_and_restart();
    assert!(
        eventually(Duration::from_secs(420), || settled_at(3)),
        "{}",
        d.get_json("pgc", &name)
    );
    let listed = etcd_members_listed(&name);
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.iter().all(|(_, learner)| !learner), "{listed:?}");
    let members: Vec<String> = std::iter::once(format!("{name}-pg-0"))
        .chain((0..3).map(|j| format!("{name}-etcd-{j}")))
        .chain([format!("{name}-rw"), format!("{name}-ro")])
        .collect();
    assert_tidy("PostgresCluster", &name, &members, || {
        d.get_json("pgc", &name)["status"].clone()
    });
    let described = stdout(&d.ctl(&["describe", "pgc", &name]));
    for reason in ["EtcdMemberAdded", "EtcdMemberPromoted"] {
        assert!(described.contains(reason), "{described}");
    }
    let count = || {
        client(
            &d,
            At::Local,
            &name,
            &format!("psql -h {rw} -Atc 'SELECT count(*) FROM kept' 2>&1"),
        )
        .trim()
        .to_owned()
    };
    assert_eq!(count(), "50");

    // 3 -> 1: the highest members leave etcd, then their services go.
    d.apply("pgc.yaml", &manifest(1));
    assert!(
        eventually(Duration::from_secs(420), || settled_at(1)),
        "{}",
        d.get_json("pgc", &name)
    );
    let listed = etcd_members_listed(&name);
    assert_eq!(listed, [(format!("{name}-etcd-0"), false)]);
    let services = haswarm_testbed::docker::owned_services("PostgresCluster", &name);
    assert!(
        !services
            .iter()
            .any(|s| s.contains("-etcd-1") || s.contains("-etcd-2")),
        "{services:?}"
    );
    assert!(stdout(&d.ctl(&["describe", "pgc", &name])).contains("EtcdMemberRemoved"));
    // reclaimPolicy Delete: the volumes of the members that left go too.
    let gone = |j: u8| {
        docker(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("name={name}-etcd-{j}-data"),
        ])
        .trim()
        .is_empty()
    };
    assert!(
        eventually(Duration::from_secs(60), || gone(1) && gone(2)),
        "{}",
        stdout(&d.ctl(&["describe", "pgc", &name]))
    );
    assert!(!gone(0), "the remaining member's volume went");
    let described = stdout(&d.ctl(&["describe", "pgc", &name]));
    assert!(described.contains("members scaled away"), "{described}");
    assert_eq!(count(), "50");
    assert_code(
        &d.ctl(&["delete", "pgc", &name, "--wait", "--timeout=180s"]),
        0,
    );
}
