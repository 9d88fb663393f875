//! SharedVolume end to end on the local single-node Swarm: a real haswarmd
//! with its reconcilers, the real haswarmctl, the real engine.
//! Needs `tests/testbed/prepare.sh` (swarm mode and the probe image).

use std::time::Duration;

use haswarm_testbed::docker::{eventually, owned_services, require_swarm, service_exists, Cleanup};
use haswarm_testbed::{assert_code, stderr, stdout, Daemon};
use serde_json::Value;

fn manifest(name: &str, path: &str) -> String {
    format!("apiVersion: haswarm.io/v1alpha1\nkind: SharedVolume\nmetadata:\n  name: {name}\nspec:\n  hostPath:\n    path: {path}\n")
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

/// A unique resource name, a guard that removes its Swarm objects whatever
/// happens, and a daemon with reconcilers resyncing every `resync`.
fn setup(prefix: &str, resync: &str) -> (String, Cleanup, Daemon) {
    require_swarm();
    let name = unique(prefix);
    let mut cleanup = Cleanup::default();
    cleanup.owner("SharedVolume", &name);
    let d = Daemon::start_with_controllers(&["--resync", resync]);
    (name, cleanup, d)
}

fn status(d: &Daemon, name: &str) -> Value {
    let o = d.ctl(&["get", "sv", name, "-o", "json"]);
    serde_json::from_str(&stdout(&o)).unwrap_or(Value::Null)
}

#[test]
fn a_shared_volume_is_mounted_repaired_and_cleaned_up() {
    let (name, _cleanup, d) = setup("e2e-sv", "5s");
    let data = tempfile::Builder::new()
        .prefix("hsw-data")
        .tempdir_in("/tmp")
        .expect("tempdir");
    std::fs::write(data.path().join("keep.txt"), "data").expect("write");
    d.apply(
        "sv.yaml",
        &manifest(&name, &data.path().display().to_string()),
    );
    d.wait_for(&format!("sv/{name}"), "condition=Ready", "90s");
    let s = status(&d, &name);
    let nodes = s["status"]["nodes"].as_array().cloned().unwrap_or_default();
    assert_eq!(nodes.len(), 1, "one node in this swarm: {s}");
    assert_eq!(nodes[0]["mounted"], true, "{s}");
    assert_eq!(
        s["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "MountedOnAllNodes"))
            .map(|c| c["status"].clone()),
        Some(Value::from("True"))
    );
    let probe = format!("{name}-probe");
    assert_eq!(
        owned_services("SharedVolume", &name),
        std::slice::from_ref(&probe)
    );

    // Someone removes the probe by hand: it comes back (Docker events or, at
    // the latest, the next 5 s resync).
    haswarm_testbed::docker::docker(&["service", "rm", &probe]);
    assert!(
        eventually(Duration::from_secs(20), || service_exists(&probe)),
        "the probe service was not recreated"
    );
    d.wait_for(&format!("sv/{name}"), "condition=Ready", "60s");

    // Delete: every owned Swarm object goes, the data stays.
    let o = d.ctl(&["delete", "sv", &name, "--wait", "--timeout=60s"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("gone"), "{}", stdout(&o));
    assert!(owned_services("SharedVolume", &name).is_empty());
    assert_eq!(
        std::fs::read_to_string(data.path().join("keep.txt"))
            .ok()
            .as_deref(),
        Some("data")
    );
}

#[test]
fn a_node_that_cannot_mount_is_named_in_the_status() {
    let (name, _cleanup, d) = setup("e2e-sv-missing", "5s");
    d.apply(
        "sv.yaml",
        &manifest(
            &name,
            &format!("/tmp/hsw-does-not-exist-{}", std::process::id()),
        ),
    );
    let node = haswarm_testbed::docker::docker(&["info", "--format", "{{.Name}}"])
        .trim()
        .to_owned();
    let failed = eventually(Duration::from_secs(90), || {
        let s = status(&d, &name);
        let ready = s["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
            .unwrap_or(Value::Null);
        ready["status"] == "False"
            && ready["reason"] == "MountFailed"
            && ready["message"]
                .as_str()
                .is_some_and(|m| m.contains(&node) && m.contains("does not exist"))
    });
    let s = status(&d, &name);
    assert!(failed, "expected MountFailed naming node {node}: {s}");
    let o = d.ctl(&["describe", "sv", &name]);
    assert!(
        stdout(&o).contains("MountFailed"),
        "an event says so too: {}",
        stdout(&o)
    );
    let o = d.ctl(&["delete", "sv", &name, "--wait", "--timeout=60s"]);
    assert_code(&o, 0);
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

#[test]
fn pausing_stops_changes_but_status_keeps_reporting() {
    let (name, _cleanup, d) = setup("e2e-sv-paused", "2s");
    let data = tempfile::Builder::new()
        .prefix("hsw-data")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let text = manifest(&name, &data.path().display().to_string()).replace(
        &format!("  name: {name}\n"),
        &format!("  name: {name}\n  annotations:\n    haswarm.io/paused: \"true\"\n"),
    );
    d.apply("sv.yaml", &text);
    d.wait_for(&format!("sv/{name}"), "condition=Paused", "60s");
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        owned_services("SharedVolume", &name).is_empty(),
        "a paused resource creates nothing"
    );
    let o = d.ctl(&["get", "sv", &name]);
    assert!(stdout(&o).contains("Paused"), "{}", stdout(&o));
    assert_code(
        &d.ctl(&["delete", "sv", &name, "--wait", "--timeout=60s"]),
        0,
    );
}

/// The value of the sample `series` (name and labels exactly as exported).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        (s == series).then(|| v.parse().ok()).flatten()
    })
}

#[test]
fn metrics_move_probes_answer_and_json_logs_parse() {
    require_swarm();
    let name = unique("e2e-obs");
    let mut cleanup = Cleanup::default();
    cleanup.owner("SharedVolume", &name);
    let d = Daemon::start_with_env(
        &["--resync", "2s"],
        &[
            ("HASWARM_LOG_FORMAT", "json"),
            // Each reconcile's outcome is a debug line in its span.
            ("HASWARM_LOG", "info,haswarm_controller::runtime=debug"),
        ],
    );
    assert_eq!(d.http_get("/livez"), (200, "ok\n".to_owned()));

    let (code, before) = d.http_get("/metrics");
    assert_eq!(code, 200, "{before}");
    let data = tempfile::Builder::new()
        .prefix("hsw-data")
        .tempdir_in("/tmp")
        .expect("tempdir");
    d.apply(
        "sv.yaml",
        &manifest(&name, &data.path().display().to_string()),
    );
    d.wait_for(&format!("sv/{name}"), "condition=Ready", "90s");
    // Ready once the engine answered.
    assert!(
        eventually(Duration::from_secs(20), || d.http_get("/readyz").0 == 200),
        "{:?}",
        d.http_get("/readyz")
    );

    let reconciles = |m: &str| {
        ["success", "requeue", "error"]
            .iter()
            .filter_map(|r| {
                sample(
                    m,
                    &format!("reconcile_total{{controller=\"sharedvolume\",result=\"{r}\"}}"),
                )
            })
            .sum::<f64>()
    };
    let adds = |m: &str| sample(m, "workqueue_adds_total{name=\"sharedvolume\"}").unwrap_or(0.0);
    let (_, after) = d.http_get("/metrics");
    assert!(reconciles(&after) > reconciles(&before), "{after}");
    assert!(adds(&after) > adds(&before), "{after}");
    assert_eq!(
        sample(&after, "haswarm_docker_reachable"),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            &format!("haswarm_resource_ready{{kind=\"SharedVolume\",name=\"{name}\"}}")
        ),
        Some(1.0),
        "{after}"
    );
    assert!(
        after.contains(
            "haswarm_events_total{kind=\"SharedVolume\",type=\"Normal\",reason=\"Created\"}"
        ),
        "{after}"
    );
    // The resync keeps reconciling: the counter keeps moving.
    assert!(eventually(Duration::from_secs(20), || {
        reconciles(&d.http_get("/metrics").1) > reconciles(&after)
    }));

    // Every log line is one JSON object, and reconciles log inside a span
    // that names the kind, the object and its generation.
    let log = d.log();
    assert!(!log.trim().is_empty());
    let mut in_span = false;
    for line in log.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let span = &v["span"];
        in_span |= span["name"] == "reconcile"
            && span["kind"] == "SharedVolume"
            && span["object"] == name.as_str()
            && span["generation"].is_number();
    }
    assert!(
        in_span,
        "no reconcile span with kind, name and generation:\n{log}"
    );

    assert_code(
        &d.ctl(&["delete", "sv", &name, "--wait", "--timeout=60s"]),
        0,
    );
}
