//! Unit tests of `render`, without Docker.

use std::collections::BTreeMap;

use haswarm_crds::manifest::{parse, Limits};
use haswarm_crds::AnyResource;

use super::*;

fn pgc(spec: &str) -> PostgresCluster {
    let text = format!("apiVersion: haswarm.io/v1alpha1\nkind: PostgresCluster\nmetadata:\n  name: db\nspec:\n{spec}");
    match parse("t.yaml", &text, &Limits::default())
        .expect("valid")
        .into_iter()
        .next()
        .map(|d| d.resource)
    {
        Some(AnyResource::PostgresCluster(r)) => *r,
        other => panic!("not a PostgresCluster: {other:?}"),
    }
}

/// What a resource needs on the Swarm, as the reconcile makes it: the
/// network, the contents, and the services rendered against them.
struct Rendered {
    network: String,
    contents: Vec<DesiredContent>,
    services: Vec<DesiredService>,
}

fn rendered(spec: &str) -> Rendered {
    let c = pgc(spec);
    let generated = HashMap::from([
        (purpose::SUPERUSER.to_owned(), b"su-pw".to_vec()),
        (purpose::REPLICATION.to_owned(), b"repl-pw".to_vec()),
        (purpose::APP.to_owned(), b"app-pw".to_vec()),
        (purpose::API.to_owned(), b"api-pw".to_vec()),
    ]);
    let secrets = PasswordSecrets {
        superuser: "db-superuser-password-1".into(),
        replication: "db-replication-password-2".into(),
        api: "db-api-password-4".into(),
        backup: None,
    };
    let names = HashMap::from([
        (
            purpose::PATRONI_CONF.to_owned(),
            "db-patroni-conf-a".to_owned(),
        ),
        (
            purpose::PATRONI_START.to_owned(),
            "db-patroni-start-b".to_owned(),
        ),
        (
            purpose::POST_BOOTSTRAP.to_owned(),
            "db-post-bootstrap-c".to_owned(),
        ),
        (purpose::ROUTER_RW.to_owned(), "db-router-rw-d".to_owned()),
        (purpose::ROUTER_RO.to_owned(), "db-router-ro-e".to_owned()),
    ]);
    let services = render(&Inputs {
        pgc: &c,
        generated: &generated,
        secrets: &secrets,
        config_names: &names,
        etcd: &EtcdMembership::created(c.spec.etcd.members),
        incarnations: &BTreeMap::new(),
    });
    Rendered {
        network: network_name("db"),
        contents: contents(&c, &generated, c.spec.etcd.members),
        services,
    }
}

#[test]
fn instances_are_told_from_other_services_by_their_name() {
    assert!(is_instance("db", &instance_name("db", 2)));
    for other in [
        etcd_name("db", 0),
        rw_name("db"),
        "db-pg-".into(),
        "db-pg-1.1".into(),
        instance_name("db2", 0),
    ] {
        assert!(!is_instance("db", &other), "{other}");
    }
}

fn names(r: &Rendered) -> Vec<&str> {
    r.services.iter().map(DesiredService::name).collect()
}

fn container(s: &DesiredService) -> bollard::models::TaskSpecContainerSpec {
    s.spec
        .task_template
        .as_ref()
        .and_then(|t| t.container_spec.clone())
        .expect("container spec")
}

fn constraints(s: &DesiredService) -> Vec<String> {
    s.spec
        .task_template
        .as_ref()
        .and_then(|t| t.placement.as_ref())
        .and_then(|p| p.constraints.clone())
        .unwrap_or_default()
}

#[test]
fn a_default_cluster_has_three_instances_three_etcd_members_and_two_routers() {
    let r = rendered("  instances: 3\n");
    assert_eq!(
        names(&r),
        [
            "db-pg-0",
            "db-pg-1",
            "db-pg-2",
            "db-etcd-0",
            "db-etcd-1",
            "db-etcd-2",
            "db-rw",
            "db-ro"
        ]
    );
    assert_eq!(r.network, "db-net");
    let replicas = |s: &DesiredService| {
        s.spec
            .mode
            .as_ref()
            .and_then(|m| m.replicated.as_ref())
            .and_then(|r| r.replicas)
    };
    for s in &r.services[..6] {
        assert_eq!(replicas(s), Some(1), "{}", s.name());
    }
    assert_eq!(replicas(&r.services[6]), Some(2));
}

#[test]
fn instances_and_etcd_members_are_pinned_by_their_slot_labels() {
    let r = rendered("  instances: 2\n");
    assert!(constraints(&r.services[1])
        .contains(&"node.labels.io.haswarm.postgrescluster.db.pg.slot-1==true".to_owned()));
    assert!(constraints(&r.services[2])
        .contains(&"node.labels.io.haswarm.postgrescluster.db.etcd.slot-0==true".to_owned()));
    // Routers are stateless: no slot, and never pending for want of a node.
    let router = &r.services[r.services.len() - 1];
    assert!(constraints(router).iter().all(|c| !c.contains("slot")));
    let max = router
        .spec
        .task_template
        .as_ref()
        .and_then(|t| t.placement.as_ref())
        .and_then(|p| p.max_replicas);
    assert_eq!(max, None);
}

#[test]
fn bootstrap_users_get_login_and_their_attributes() {
    let c = pgc("  bootstrap:\n    users:\n    - name: reporting\n      options: [createdb, LOGIN]\n    - name: batch\n      options: [NOLOGIN]\n");
    let users = &c.spec.bootstrap.users;
    assert_eq!(
        user_attributes(&users[0]),
        [
            "LOGIN",
            "NOSUPERUSER",
            "CREATEDB",
            "NOCREATEROLE",
            "INHERIT",
            "NOREPLICATION",
            "NOBYPASSRLS"
        ]
    );
    let batch = user_attributes(&users[1]);
    assert_eq!(batch[0], "NOLOGIN");
    assert_eq!(batch[2], "NOCREATEDB");
    assert_eq!(user_purpose("reporting"), "user-reporting-password");
}

#[test]
fn passwords_are_secrets_never_environment_or_configuration() {
    let r = rendered("  instances: 3\n");
    for s in &r.services {
        let text = serde_json::to_string(&s.spec).expect("json");
        for pw in ["su-pw", "repl-pw", "app-pw", "api-pw"] {
            assert!(!text.contains(pw), "{pw} in {}", s.name());
        }
    }
    for c in r.contents.iter().filter(|c| c.kind == ContentKind::Config) {
        let text = String::from_utf8_lossy(&c.data);
        for pw in ["su-pw", "repl-pw", "app-pw", "api-pw"] {
            assert!(!text.contains(pw), "{pw} in config {}", c.purpose);
        }
    }
    let pg = container(&r.services[0]);
    let files: Vec<String> = pg
        .secrets
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.file.as_ref().and_then(|f| f.name.clone()))
        .collect();
    assert_eq!(
        files,
        [
            "pg-superuser-password",
            "pg-replication-password",
            "pg-api-password"
        ]
    );
    // etcd members relay the controller's Patroni calls: they hold the
    // REST API's password and no database password.
    for s in r.services.iter().filter(|s| s.name().contains("-etcd-")) {
        let files: Vec<String> = container(s)
            .secrets
            .unwrap_or_default()
            .iter()
            .filter_map(|s| s.file.as_ref().and_then(|f| f.name.clone()))
            .collect();
        assert_eq!(files, ["pg-api-password"], "{}", s.name());
    }
    let secrets: Vec<&str> = r
        .contents
        .iter()
        .filter(|c| c.kind == ContentKind::Secret)
        .map(|c| c.purpose.as_str())
        .collect();
    assert_eq!(
        secrets,
        [
            purpose::API,
            purpose::APP,
            purpose::REPLICATION,
            purpose::SUPERUSER
        ]
    );
}

#[test]
fn each_instance_is_a_patroni_member_named_after_its_service() {
    let r = rendered("  instances: 2\n");
    let env = container(&r.services[1]).env.unwrap_or_default();
    assert!(env.contains(&"PATRONI_NAME=db-pg-1".to_owned()));
    assert!(env.contains(&"PATRONI_RESTAPI_CONNECT_ADDRESS=db-pg-1:8008".to_owned()));
    assert!(env.contains(&"PATRONI_POSTGRESQL_CONNECT_ADDRESS=db-pg-1:5432".to_owned()));
    assert!(env.contains(&"HASWARM_OWNER=app".to_owned()), "{env:?}");
    let mounts = container(&r.services[1]).mounts.unwrap_or_default();
    assert_eq!(mounts[0].source.as_deref(), Some("db-pg-1-data"));
    assert_eq!(mounts[0].target.as_deref(), Some("/var/lib/postgresql"));
}

#[test]
fn patroni_lists_the_etcd_members_that_serve_clients_not_the_spec_count() {
    // Growing from 1 to 3: the spec says 3, the learner added answers no
    // client, so Patroni keeps its one host (and no instance restarts).
    let c = pgc("  instances: 2\n  etcd:\n    members: 3\n");
    let learning = EtcdMembership::created(1);
    let conf = patroni_conf(&c, learning.clients());
    let hosts: Vec<&str> = conf.lines().filter(|l| l.contains(":2379")).collect();
    assert_eq!(hosts, ["  - \"db-etcd-0:2379\""], "{conf}");
    assert_eq!(c.spec.etcd.members, 3, "the spec stays as written");
    assert_eq!(patroni_conf(&c, 3).matches(":2379").count(), 3);
}

#[test]
fn patroni_settings_follow_the_spec_and_end_in_the_postgresql_section() {
    let c = pgc("  instances: 3\n  patroni:\n    ttl: 20\n    loopWait: 5\n    retryTimeout: 5\n    synchronousMode: Strict\n  postgres:\n    parameters:\n      max_connections: 200\n      shared_buffers: 256MB\n");
    let conf = patroni_conf(&c, c.spec.etcd.members);
    for line in [
        "scope: \"db\"",
        "  - \"db-etcd-0:2379\"",
        "  - \"db-etcd-2:2379\"",
        "  bin_dir: /usr/lib/postgresql/15/bin",
        "  post_bootstrap: /etc/haswarm/post-bootstrap.sh",
    ] {
        assert!(
            conf.lines().any(|l| l == line),
            "{line:?} missing in\n{conf}"
        );
    }
    let dcs = dynamic_config(&c);
    assert_eq!(dcs["ttl"], 20);
    assert_eq!(dcs["loop_wait"], 5);
    assert_eq!(dcs["synchronous_mode"], true);
    assert_eq!(dcs["synchronous_mode_strict"], true);
    assert_eq!(dcs["postgresql"]["parameters"]["max_connections"], "200");
    assert_eq!(dcs["postgresql"]["parameters"]["shared_buffers"], "256MB");
    // The instances' config does not change with the spec's settings.
    assert_eq!(conf, patroni_conf(&pgc("  instances: 3\n"), 3));
    // The start script appends `  authentication:` to the last section.
    let last_top = conf.lines().rfind(|l| !l.starts_with(' ') && !l.is_empty());
    assert_eq!(last_top, Some("postgresql:"));
}

#[test]
fn a_config_patch_changes_only_what_differs_and_removes_dropped_parameters() {
    let c = pgc("  instances: 3\n  postgres:\n    parameters:\n      max_connections: 200\n");
    let desired = dynamic_config(&c);
    assert_eq!(config_patch(&desired, &desired), None);
    // Patroni may hold numbers where haswarm wrote text: the same value.
    let mut live = desired.clone();
    live["postgresql"]["parameters"]["max_connections"] = serde_json::json!(200);
    assert_eq!(config_patch(&desired, &live), None);
    live["ttl"] = serde_json::json!(99);
    live["postgresql"]["parameters"]["work_mem"] = serde_json::json!("64MB");
    live["postgresql"]["parameters"]["max_connections"] = serde_json::json!("100");
    let patch = config_patch(&desired, &live).expect("a patch");
    assert_eq!(patch["ttl"], 30);
    assert_eq!(patch["postgresql"]["parameters"]["max_connections"], "200");
    assert!(patch["postgresql"]["parameters"]["work_mem"].is_null());
    assert!(patch.get("loop_wait").is_none());
}

#[test]
fn external_etcd_endpoints_replace_the_managed_members() {
    let r = rendered("  instances: 2\n  etcd:\n    endpoints:\n    - https://etcd-a:2379\n    - https://etcd-b:2379/\n");
    assert!(!names(&r).iter().any(|n| n.contains("etcd")));
    let c = pgc("  instances: 2\n  etcd:\n    endpoints:\n    - https://etcd-a:2379\n    - https://etcd-b:2379/\n");
    let conf = patroni_conf(&c, c.spec.etcd.members);
    assert!(conf.contains("  protocol: https"), "{conf}");
    assert!(conf.contains("  - \"etcd-b:2379\""), "{conf}");
}

#[test]
fn etcd_members_form_one_cluster_of_their_service_names() {
    let r = rendered("  instances: 1\n");
    let cmd = container(&r.services[1])
        .command
        .unwrap_or_default()
        .join(" ");
    assert!(cmd.contains("--name db-etcd-0"), "{cmd}");
    assert!(cmd.contains("--initial-cluster db-etcd-0=http://db-etcd-0:2380,db-etcd-1=http://db-etcd-1:2380,db-etcd-2=http://db-etcd-2:2380"), "{cmd}");
    assert!(
        cmd.contains("--advertise-client-urls http://db-etcd-0:2379"),
        "{cmd}"
    );
}

#[test]
fn a_member_added_later_joins_the_members_before_it_in_a_directory_of_its_join() {
    let c = pgc("  instances: 1\n  etcd:\n    members: 3\n");
    let etcd = EtcdMembership {
        members: 3,
        initial: 1,
        joined: BTreeMap::from([(1, 1), (2, 4)]),
        learner: Some(2),
        joins: 4,
        ..EtcdMembership::default()
    };
    let (generated, names) = (HashMap::new(), HashMap::new());
    let secrets = PasswordSecrets {
        superuser: "s".into(),
        replication: "r".into(),
        api: "a".into(),
        backup: None,
    };
    let r = render(&Inputs {
        pgc: &c,
        generated: &generated,
        secrets: &secrets,
        config_names: &names,
        etcd: &etcd,
        incarnations: &BTreeMap::new(),
    });
    let cmd = |member: &str| {
        r.iter()
            .find(|s| s.name() == member)
            .map(|s| container(s).command.unwrap_or_default().join(" "))
            .unwrap_or_else(|| panic!("no {member}"))
    };
    let first = cmd("db-etcd-0");
    assert!(
        first.contains("--initial-cluster db-etcd-0=http://db-etcd-0:2380 "),
        "{first}"
    );
    assert!(first.contains("--initial-cluster-state new"), "{first}");
    assert!(first.contains("--data-dir /var/lib/etcd/data "), "{first}");
    let third = cmd("db-etcd-2");
    assert!(third.contains("--initial-cluster db-etcd-0=http://db-etcd-0:2380,db-etcd-1=http://db-etcd-1:2380,db-etcd-2=http://db-etcd-2:2380 "), "{third}");
    assert!(
        third.contains("--initial-cluster-state existing"),
        "{third}"
    );
    assert!(
        third.contains("--data-dir /var/lib/etcd/join-4 "),
        "{third}"
    );
    assert_eq!(etcd.voters(), 2);
}

#[test]
fn patroni_names_carry_the_incarnation_and_read_back() {
    assert_eq!(patroni_name("db-pg-1", 0), "db-pg-1");
    assert_eq!(patroni_name("db-pg-1", 3), "db-pg-1.3");
    assert_eq!(member_of("db-pg-1.3"), ("db-pg-1", 3));
    assert_eq!(member_of("db-pg-1"), ("db-pg-1", 0));
    assert_eq!(member_of("odd.name"), ("odd.name", 0));
}

#[test]
fn a_moved_member_is_a_new_incarnation_and_its_etcd_member_waits_to_be_replaced() {
    let c = pgc("  instances: 3
");
    let (generated, names) = (HashMap::new(), HashMap::new());
    let secrets = PasswordSecrets {
        superuser: "s".into(),
        replication: "r".into(),
        api: "a".into(),
        backup: None,
    };
    let incarnations = BTreeMap::from([(instance_slot("db", 1), 2), (etcd_slot("db", 1), 1)]);
    let mut etcd = EtcdMembership::created(3);
    let render_with = |etcd: &EtcdMembership| {
        render(&Inputs {
            pgc: &c,
            generated: &generated,
            secrets: &secrets,
            config_names: &names,
            etcd,
            incarnations: &incarnations,
        })
    };
    let r = render_with(&etcd);
    let find = |r: &[DesiredService], n: &str| {
        r.iter()
            .find(|s| s.name() == n)
            .cloned()
            .unwrap_or_else(|| panic!("no {n}"))
    };
    let pg1 = find(&r, "db-pg-1");
    let env = container(&pg1).env.unwrap_or_default();
    assert!(
        env.contains(&"PATRONI_NAME=db-pg-1.2".to_owned()),
        "{env:?}"
    );
    // Reached by its service name as before.
    assert!(env.contains(&"PATRONI_RESTAPI_CONNECT_ADDRESS=db-pg-1:8008".to_owned()));
    assert!(
        constraints(&pg1).contains(&format!("node.labels.{}==2", instance_slot("db", 1))),
        "{:?}",
        constraints(&pg1)
    );
    let pg0 = find(&r, "db-pg-0");
    assert!(constraints(&pg0).contains(&format!("node.labels.{}==true", instance_slot("db", 0))));
    let replicas = |s: &DesiredService| {
        s.spec
            .mode
            .as_ref()
            .and_then(|m| m.replicated.as_ref())
            .and_then(|r| r.replicas)
    };
    // Not in the cluster yet: its service does not start.
    assert_eq!(replicas(&find(&r, "db-etcd-1")), Some(0));
    assert_eq!(replicas(&find(&r, "db-etcd-0")), Some(1));
    // Replaced: it joins the three, in a directory of its join.
    etcd = crate::reconcilers::postgres::etcd::after(
        &etcd,
        crate::reconcilers::postgres::etcd::Step::Replace(1, 1),
    );
    let r = render_with(&etcd);
    let e1 = find(&r, "db-etcd-1");
    assert_eq!(replicas(&e1), Some(1));
    let cmd = container(&e1).command.unwrap_or_default().join(" ");
    assert!(cmd.contains("--initial-cluster db-etcd-0=http://db-etcd-0:2380,db-etcd-1=http://db-etcd-1:2380,db-etcd-2=http://db-etcd-2:2380 "), "{cmd}");
    assert!(cmd.contains("--initial-cluster-state existing"), "{cmd}");
    assert!(cmd.contains("--data-dir /var/lib/etcd/join-1 "), "{cmd}");
}

#[test]
fn routers_check_patroni_and_list_every_instance() {
    let c = pgc("  instances: 3\n");
    let rw = haproxy_conf(&c, true);
    assert!(rw.contains("option httpchk GET /primary"), "{rw}");
    assert!(rw.contains("  server db-pg-2 db-pg-2:5432"), "{rw}");
    assert!(rw.contains("on-marked-down shutdown-sessions"), "{rw}");
    let ro = haproxy_conf(&c, false);
    assert!(ro.contains("option httpchk GET /replica"), "{ro}");
    let r = rendered("  instances: 3\n  router:\n    replicas: 0\n");
    assert!(!names(&r).contains(&"db-rw"));
    assert!(!r.contents.iter().any(|c| c.purpose == purpose::ROUTER_RW));
}

#[test]
fn the_app_environment_points_at_the_rw_router_and_the_secret_file() {
    let env = app_env(&pgc("  instances: 2\n"), "app", "db-app-password-1234");
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("DB_HOST"), Some("db-rw"));
    assert_eq!(get("DB_PORT"), Some("5432"));
    assert_eq!(get("DB_USERNAME"), Some("app"));
    assert_eq!(
        get("DB_PASSWORD_FILE"),
        Some("/run/secrets/db-app-password-1234")
    );
}

#[test]
fn parameter_values_cannot_break_out_of_the_yaml() {
    let c = pgc("  instances: 1\n  postgres:\n    parameters:\n      application_name: \"x\\\"\\nscope: evil\"\n");
    let conf = patroni_conf(&c, c.spec.etcd.members);
    assert_eq!(
        conf.lines().filter(|l| l.starts_with("scope:")).count(),
        1,
        "{conf}"
    );
}

#[test]
fn only_instances_run_behind_the_fence_with_patronis_timings() {
    let r =
        rendered("  instances: 2\n  patroni:\n    ttl: 20\n    loopWait: 5\n    retryTimeout: 5\n");
    assert!(r
        .contents
        .iter()
        .any(|c| c.purpose == fence::PURPOSE && c.data == fence::SCRIPT.as_bytes()));
    let env = [
        "HASWARM_FENCE_KIND=postgres",
        "HASWARM_FENCE_PORTS=5432 8008",
        "HASWARM_FENCE_S=10",
    ];
    for s in &r.services {
        let c = container(s);
        let fenced = s.name().contains("-pg-");
        fence::assert_fenced(&c, fenced.then_some(&env[..]), s.name());
        if fenced {
            let command = c.command.clone().unwrap_or_default();
            assert_eq!(&command[2..], ["/bin/sh", "/etc/haswarm/patroni-start.sh"]);
        }
    }
}
