//! The Swarm layer against the local engine in swarm mode: services converge
//! (create, update, drift repair, removal), foreign objects are never touched,
//! networks, content-named secrets and configs, node labels, orphan collection.
//! Every object a test creates carries a test-only instance id and is removed
//! by a guard, whatever happens.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec,
};
use haswarm_controller::swarm::objects::ContentKind;
use haswarm_controller::swarm::{DesiredService, Owner, Swarm, SwarmError};
use haswarm_testbed::docker::{docker, require_swarm, service_exists, Cleanup};

fn owner(test: &str) -> (Owner, Cleanup) {
    let instance = format!("test-{}-{test}", std::process::id());
    let mut cleanup = Cleanup::default();
    cleanup.instance(&instance);
    let o = Owner {
        kind: "SharedVolume".into(),
        name: format!("t{}-{test}", std::process::id()),
        uid: "uid-1".into(),
        instance,
    };
    (o, cleanup)
}

fn service(name: &str, env: &str) -> DesiredService {
    DesiredService {
        spec: ServiceSpec {
            name: Some(name.to_owned()),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(0) }),
                ..Default::default()
            }),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some("haswarm/probe:latest".into()),
                    command: Some(vec!["sleep".into(), "3600".into()]),
                    env: Some(vec![env.to_owned()]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

fn env_of(name: &str) -> String {
    docker(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.TaskTemplate.ContainerSpec.Env}}",
        name,
    ])
    .trim()
    .to_owned()
}

async fn swarm() -> Swarm {
    require_swarm();
    Swarm::connect().await.expect("engine reachable")
}

#[tokio::test]
async fn services_converge_and_drift_is_repaired() {
    let s = swarm().await;
    let (o, _cleanup) = owner("svc");
    let name = format!("{}-a", o.name);
    let r = s
        .converge_services(&o, &[service(&name, "A=1")], &BTreeMap::new())
        .await
        .expect("create");
    assert_eq!(r.created, std::slice::from_ref(&name));
    let r = s
        .converge_services(&o, &[service(&name, "A=1")], &r.versions)
        .await
        .expect("again");
    assert!(!r.changed(), "nothing to do: {r:?}");

    let r = s
        .converge_services(&o, &[service(&name, "A=2")], &r.versions)
        .await
        .expect("update");
    assert_eq!(r.updated, std::slice::from_ref(&name));
    assert_eq!(env_of(&name), r#"["A=2"]"#);

    // Someone edits the service by hand: the version index moves, haswarm puts it back.
    docker(&[
        "service",
        "update",
        "--detach",
        "--env-add",
        "B=hand",
        &name,
    ]);
    assert!(env_of(&name).contains("B=hand"));
    let r = s
        .converge_services(&o, &[service(&name, "A=2")], &r.versions)
        .await
        .expect("repair");
    assert_eq!(r.updated, std::slice::from_ref(&name), "drift repaired");
    assert_eq!(env_of(&name), r#"["A=2"]"#);

    let r = s
        .converge_services(&o, &[], &r.versions)
        .await
        .expect("remove");
    assert_eq!(r.removed, std::slice::from_ref(&name));
    assert!(!service_exists(&name));
}

#[tokio::test]
async fn foreign_objects_are_never_touched() {
    let s = swarm().await;
    let (o, mut cleanup) = owner("foreign");
    let name = format!("{}-taken", o.name);
    cleanup.named("service", &name);
    docker(&[
        "service",
        "create",
        "--detach",
        "--replicas",
        "0",
        "--name",
        &name,
        "haswarm/probe:latest",
        "sleep",
        "60",
    ]);
    let before = docker(&[
        "service",
        "inspect",
        "--format",
        "{{.Version.Index}}",
        &name,
    ]);
    let e = s
        .converge_services(&o, &[service(&name, "A=1")], &BTreeMap::new())
        .await
        .expect_err("the name is taken");
    assert!(matches!(e, SwarmError::NameTaken { .. }), "{e}");
    assert_eq!(
        docker(&[
            "service",
            "inspect",
            "--format",
            "{{.Version.Index}}",
            &name
        ]),
        before
    );

    // Converging to nothing removes only what the owner owns.
    s.converge_services(&o, &[], &BTreeMap::new())
        .await
        .expect("converge");
    assert!(service_exists(&name));

    let net = format!("{}-net", o.name);
    cleanup.named("network", &net);
    docker(&["network", "create", "--driver", "overlay", &net]);
    let e = s.ensure_network(&o, &net, false).await.expect_err("taken");
    assert!(matches!(e, SwarmError::NameTaken { .. }), "{e}");

    let node = docker(&["info", "--format", "{{.Swarm.NodeID}}"])
        .trim()
        .to_owned();
    let e = s
        .set_node_label(&node, "zone", Some("a"))
        .await
        .expect_err("not ours");
    assert!(
        e.to_string()
            .contains("only writes labels under io.haswarm."),
        "{e}"
    );
}

#[tokio::test]
async fn networks_are_attachable_overlays_and_idempotent() {
    let s = swarm().await;
    let (o, _cleanup) = owner("net");
    let net = format!("{}-net", o.name);
    s.ensure_network(&o, &net, false).await.expect("create");
    s.ensure_network(&o, &net, false)
        .await
        .expect("exists: no-op");
    assert_eq!(
        docker(&[
            "network",
            "inspect",
            "--format",
            "{{.Driver}} {{.Attachable}}",
            &net
        ])
        .trim(),
        "overlay true"
    );
    assert_eq!(
        s.remove_networks(&o).await.expect("remove"),
        std::slice::from_ref(&net)
    );
}

#[tokio::test]
async fn secrets_and_configs_are_named_by_content_and_pruned() {
    let s = swarm().await;
    let (o, _cleanup) = owner("content");
    for kind in [ContentKind::Secret, ContentKind::Config] {
        let what = if kind == ContentKind::Secret {
            "secret"
        } else {
            "config"
        };
        let one = s
            .ensure_content(kind, &o, "password", b"one")
            .await
            .expect("create");
        assert_eq!(
            s.ensure_content(kind, &o, "password", b"one")
                .await
                .expect("same"),
            one
        );
        let two = s
            .ensure_content(kind, &o, "password", b"two")
            .await
            .expect("roll");
        assert_ne!(one, two);
        assert_eq!(s.content_objects(kind, &o).await.expect("list").len(), 2);
        let removed = s
            .prune_content_objects(kind, &o, std::slice::from_ref(&two))
            .await
            .expect("prune");
        assert_eq!(removed, std::slice::from_ref(&one), "{what}");
        let left: Vec<String> = s
            .content_objects(kind, &o)
            .await
            .expect("list")
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(left, std::slice::from_ref(&two), "{what}");
        let labels = docker(&[what, "inspect", "--format", "{{json .Spec.Labels}}", &two]);
        let labels: HashMap<String, String> = serde_json::from_str(labels.trim()).expect("labels");
        assert_eq!(
            labels.get("io.haswarm.purpose").map(String::as_str),
            Some("password")
        );
    }
}

#[tokio::test]
async fn node_labels_are_set_and_removed_with_the_version_index() {
    let s = swarm().await;
    let node = docker(&["info", "--format", "{{.Swarm.NodeID}}"])
        .trim()
        .to_owned();
    let key = format!("io.haswarm.test.{}", std::process::id());
    let label = |k: &str| {
        docker(&[
            "node",
            "inspect",
            "--format",
            &format!("{{{{index .Spec.Labels \"{k}\"}}}}"),
            &node,
        ])
        .trim()
        .to_owned()
    };
    s.set_node_label(&node, &key, Some("slot-0"))
        .await
        .expect("set");
    s.set_node_label(&node, &key, Some("slot-0"))
        .await
        .expect("no-op");
    assert_eq!(label(&key), "slot-0");
    s.set_node_label(&node, &key, None).await.expect("remove");
    assert_eq!(label(&key), "");
}

#[tokio::test]
async fn orphans_of_this_store_are_collected_and_others_left_alone() {
    let s = swarm().await;
    let data = tempfile::tempdir().expect("tempdir");
    let store = haswarm_controller::store::Store::open(data.path()).expect("store");
    let ctx = haswarm_controller::runtime::Context {
        store: store.clone(),
        swarm: s.clone(),
        settings: Default::default(),
        metrics: Default::default(),
        stopping: tokio::sync::watch::channel(false).1,
    };
    let mut cleanup = Cleanup::default();
    cleanup.instance(store.id());
    // A service owned by a resource this store does not have: an orphan.
    let orphan_owner = Owner {
        kind: "SharedVolume".into(),
        name: format!("gone{}", std::process::id()),
        uid: "uid-x".into(),
        instance: store.id().to_owned(),
    };
    let orphan = format!("{}-probe", orphan_owner.name);
    s.converge_services(&orphan_owner, &[service(&orphan, "A=1")], &BTreeMap::new())
        .await
        .expect("create");
    // The same, but another store's: not ours to collect.
    let (other, _other_cleanup) = owner("other-store");
    let foreign = format!("{}-probe", other.name);
    s.converge_services(&other, &[service(&foreign, "A=1")], &BTreeMap::new())
        .await
        .expect("create");

    let removed = haswarm_controller::runtime::controller::collect_orphans("SharedVolume", &ctx)
        .await
        .expect("collect");
    assert_eq!(removed, std::slice::from_ref(&orphan));
    assert!(!service_exists(&orphan));
    assert!(service_exists(&foreign));
    drop(cleanup);
}
