//! haswarmctl against a real haswarmd: apply, get, describe, diff, delete,
//! wait and watch round trips, all-or-nothing batches, dry runs, stale
//! writes, authentication, and what the user sees when things go wrong.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use futures::StreamExt;
use haswarm_controller::api::types::{Reason, StatusUpdate};
use haswarm_testbed::{assert_code, filters, haswarmctl_bin, stderr, stdout, Daemon};
use serde_json::{json, Value};

fn snapshot_settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    for (re, with) in filters() {
        s.add_filter(re, with);
    }
    s.set_prepend_module_to_snapshot(false);
    s
}

const RSG: &str = "apiVersion: haswarm.io/v1alpha1
kind: RedisSentinelGroup
metadata:
  name: cache
  labels:
    app: shop
spec:
  masterGroupName: shop-master
";

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.display().to_string()
}

#[test]
fn apply_get_describe_diff_delete_round_trip() {
    let d = Daemon::start();
    let o = d.ctl(&["apply", "-f", "examples/"]);
    assert_code(&o, 0);
    snapshot_settings().bind(|| insta::assert_snapshot!("apply_examples", stdout(&o)));

    let o = d.ctl(&["apply", "-f", "examples/dify-ha.yaml"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).lines().all(|l| l.ends_with(" unchanged")),
        "{}",
        stdout(&o)
    );

    let o = d.ctl(&["get", "rsg"]);
    assert_code(&o, 0);
    snapshot_settings().bind(|| insta::assert_snapshot!("get_rsg", stdout(&o)));
    let o = d.ctl(&["get", "sharedvolumes", "-o", "wide", "-l", "app=dify"]);
    assert_code(&o, 0);
    snapshot_settings().bind(|| insta::assert_snapshot!("get_sv_wide_selector", stdout(&o)));
    let o = d.ctl(&["get", "pgc", "-o", "name"]);
    assert_eq!(stdout(&o), "postgrescluster/dify-db\npostgrescluster/pg\n");
    let o = d.ctl(&[
        "get",
        "rsg",
        "dify-redis",
        "-o",
        "jsonpath={.spec.masterGroupName} {.spec.sentinels.quorum}",
    ]);
    assert_eq!(stdout(&o), "dify-master-group 2");
    let o = d.ctl(&["get", "pgc", "dify-db", "-o", "yaml"]);
    assert_code(&o, 0);
    snapshot_settings().bind(|| insta::assert_snapshot!("get_pgc_yaml", stdout(&o)));
    let o = d.ctl(&["get", "sv", "files", "-o", "json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(
        v["spec"]["nfs"]["version"], "4",
        "defaults are stored and shown"
    );

    let o = d.ctl(&["describe", "rsg", "dify-redis"]);
    assert_code(&o, 0);
    snapshot_settings().bind(|| insta::assert_snapshot!("describe_rsg", stdout(&o)));

    let o = d.ctl(&["diff", "-f", "examples/"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "");
    let tmp = tempfile::tempdir().expect("tempdir");
    let changed = write(
        tmp.path(),
        "changed.yaml",
        &std::fs::read_to_string(haswarm_testbed::repo().join("examples/dify-ha.yaml"))
            .expect("example")
            .replace("quorum: 2", "quorum: 3")
            .replace("count: 3\n    quorum", "count: 5\n    quorum"),
    );
    let o = d.ctl(&["diff", "-f", &changed]);
    assert_code(&o, 1);
    let diff = stdout(&o).replace(&changed, "changed.yaml");
    snapshot_settings().bind(|| insta::assert_snapshot!("diff_changed", diff));

    let o = d.ctl(&["delete", "rsg", "cache"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "redissentinelgroup/cache deleted\n");
    let o = d.ctl(&["get", "rsg", "cache"]);
    assert_code(&o, 5);
    snapshot_settings().bind(|| insta::assert_snapshot!("get_missing", stderr(&o)));
    let o = d.ctl(&[
        "delete",
        "-f",
        "examples/dify-ha.yaml",
        "--wait",
        "--timeout",
        "10s",
    ]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("postgrescluster/dify-db gone"),
        "{}",
        stdout(&o)
    );
    let o = d.ctl(&["get", "sv", "-o", "name"]);
    assert_eq!(
        stdout(&o),
        "sharedvolume/demo-files\nsharedvolume/files\n",
        "only the other files' volumes are left"
    );
}

#[test]
fn dry_runs_write_nothing() {
    let d = Daemon::start();
    let o = d.ctl(&["apply", "-f", "examples/", "--dry-run=server"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("postgrescluster/dify-db created (server dry run)"),
        "{}",
        stdout(&o)
    );
    let o = d.ctl(&["apply", "-f", "examples/", "--dry-run=client"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("(client dry run)"), "{}", stdout(&o));
    for kind in ["pgc", "rsg", "sv"] {
        let o = d.ctl(&["get", kind, "-o", "name"]);
        assert_code(&o, 0);
        assert_eq!(stdout(&o), "", "{kind}");
    }
}

#[test]
fn a_batch_with_one_invalid_document_writes_nothing() {
    let d = Daemon::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let good = write(tmp.path(), "a-good.yaml", RSG);
    let bad = write(
        tmp.path(),
        "b-bad.yaml",
        "apiVersion: haswarm.io/v1alpha1\nkind: SharedVolume\nmetadata:\n  name: files\nspec:\n  hostPath:\n    path: /etc\n",
    );
    let o = d.ctl(&["apply", "-f", &good, "-f", &bad]);
    assert_code(&o, 1);
    let err = stderr(&o).replace(&bad, "b-bad.yaml");
    snapshot_settings().bind(|| insta::assert_snapshot!("apply_invalid_batch", err));
    let o = d.ctl(&["get", "rsg", "-o", "name"]);
    assert_eq!(stdout(&o), "", "the valid document was not written either");

    // The daemon enforces the same on its own, for API clients that skip local validation.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = d.client();
        let items = vec![
            json!({"apiVersion": "haswarm.io/v1alpha1", "kind": "SharedVolume", "metadata": {"name": "ok"}, "spec": {"nfs": {"server": "a", "path": "/x"}}}),
            json!({"apiVersion": "haswarm.io/v1alpha1", "kind": "RedisSentinelGroup", "metadata": {"name": "bad"}, "spec": {"sentinels": {"count": 4}}}),
        ];
        let e = client.apply(items, false).await.expect_err("refused");
        assert_eq!(e.reason(), Some(Reason::Invalid));
        let haswarm_controller::client::ClientError::Api { body, .. } = e else {
            panic!("an API error")
        };
        assert_eq!(body.details.len(), 1);
        assert_eq!(body.details[0].index, 1);
        assert_eq!(body.details[0].path.as_deref(), Some("spec.sentinels.count"));
        assert_eq!(body.details[0].rule.as_deref(), Some("sentinels-odd"));
        assert!(client.list("sharedvolumes", None).await.expect("list").items.is_empty());
    });
}

#[test]
fn a_stale_resource_version_is_refused() {
    let d = Daemon::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let f = write(tmp.path(), "rsg.yaml", RSG);
    assert_code(&d.ctl(&["apply", "-f", &f]), 0);
    let changed = write(
        tmp.path(),
        "rsg2.yaml",
        &RSG.replace("shop-master", "shop-main"),
    );
    assert_code(&d.ctl(&["apply", "-f", &changed]), 0);
    // A manifest read at version 1 and written after the change above.
    let stale = write(
        tmp.path(),
        "stale.yaml",
        &RSG.replace("  name: cache\n", "  name: cache\n  resourceVersion: 1\n")
            .replace("shop-master", "shop-old"),
    );
    let o = d.ctl(&["apply", "-f", &stale]);
    assert_code(&o, 5);
    assert!(
        stderr(&o).contains(
            "was modified: the write expected resourceVersion 1, the stored object is at 2"
        ),
        "{}",
        stderr(&o)
    );
    let o = d.ctl(&[
        "get",
        "rsg",
        "cache",
        "-o",
        "jsonpath={.spec.masterGroupName}",
    ]);
    assert_eq!(stdout(&o), "shop-main");
}

#[test]
fn watch_delivers_changes_in_order_and_resumes() {
    let d = Daemon::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let f = write(tmp.path(), "rsg.yaml", RSG);
    let changed = write(
        tmp.path(),
        "rsg2.yaml",
        &RSG.replace("shop-master", "shop-main"),
    );
    rt.block_on(async {
        let client = d.client();
        let mut watch = client.watch("rsg", None, Some(0)).await.expect("watch");
        assert_code(&d.ctl(&["apply", "-f", &f]), 0);
        assert_code(&d.ctl(&["apply", "-f", &changed]), 0);
        assert_code(&d.ctl(&["delete", "rsg", "cache"]), 0);
        let mut seen = Vec::new();
        for _ in 0..3 {
            let e = tokio::time::timeout(Duration::from_secs(10), watch.next())
                .await
                .expect("in time")
                .expect("an event")
                .expect("ok");
            seen.push((
                e["type"].as_str().unwrap_or_default().to_owned(),
                e["object"]["metadata"]["resourceVersion"]
                    .as_u64()
                    .unwrap_or_default(),
            ));
        }
        assert_eq!(
            seen,
            [
                ("ADDED".into(), 1),
                ("MODIFIED".into(), 2),
                ("DELETED".into(), 3)
            ]
        );

        // Resuming after version 1 replays the rest.
        let resumed: Vec<_> = client
            .watch("rsg", None, Some(1))
            .await
            .expect("watch")
            .take(2)
            .map(|e| {
                e.expect("ok")["type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
            .await;
        assert_eq!(resumed, ["MODIFIED", "DELETED"]);
    });

    // The CLI's get --watch prints the list, then a row per change.
    let mut child = d
        .ctl_command(&["get", "rsg", "--watch", "-o", "name"])
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    std::thread::sleep(Duration::from_millis(300));
    assert_code(&d.ctl(&["apply", "-f", &f]), 0);
    let line = lines.next().expect("a line").expect("text");
    assert_eq!(line, "redissentinelgroup/cache");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn wait_returns_when_the_condition_holds_and_times_out_otherwise() {
    let d = Daemon::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let f = write(tmp.path(), "rsg.yaml", RSG);
    assert_code(&d.ctl(&["apply", "-f", &f]), 0);

    let o = d.ctl(&["wait", "rsg/cache", "--for=condition=Ready", "--timeout=1s"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains(
            "timed out after 1s waiting for redissentinelgroup/cache (Ready not reported yet)"
        ),
        "{}",
        stderr(&o)
    );

    let waiter = d
        .ctl_command(&[
            "wait",
            "rsg/cache",
            "--for=condition=Ready",
            "--timeout=20s",
        ])
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(300));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let status = json!({
            "observedGeneration": 1,
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "AllHealthy",
                "message": "master and 2 replicas in sync", "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 1
            }],
            "master": "cache-redis-0:6379"
        });
        d.client()
            .write_status("redissentinelgroups", "cache", &StatusUpdate { status, resource_version: None })
            .await
            .expect("status written");
    });
    let o = waiter.wait_with_output().expect("waits");
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "redissentinelgroup/cache condition met\n");

    let o = d.ctl(&["get", "rsg"]);
    snapshot_settings().bind(|| insta::assert_snapshot!("get_rsg_ready", stdout(&o)));
    let o = d.ctl(&["wait", "rsg/cache", "--for=delete", "--timeout=5s"]);
    assert_code(&o, 1);
    assert_code(&d.ctl(&["delete", "rsg", "cache"]), 0);
    let o = d.ctl(&["wait", "rsg/cache", "--for=delete"]);
    assert_code(&o, 0);
}

#[test]
fn no_daemon_says_how_to_start_one() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_haswarmctl"))
        .args([
            "--server",
            "unix:///tmp/haswarm-test-nothing-here.sock",
            "get",
            "rsg",
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("runs");
    assert_code(&o, 4);
    snapshot_settings().bind(|| insta::assert_snapshot!("unreachable", stderr(&o)));
}

#[test]
fn tcp_needs_the_token() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let token = "0123456789abcdef0123456789abcdef";
    let token_file = write(tmp.path(), "token", token);
    let d = Daemon::start_with(&["--listen", "127.0.0.1:0", "--token-file", &token_file]);
    let addr = d.tcp.clone().expect("tcp address");
    let server = format!("http://{addr}");
    let run = |tok: Option<&str>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_haswarmctl"));
        c.args(["--server", &server, "get", "rsg"])
            .env("NO_COLOR", "1")
            .env_remove("HASWARM_TOKEN");
        if let Some(t) = tok {
            c.env("HASWARM_TOKEN", t);
        }
        c.output().expect("runs")
    };
    let o = run(None);
    assert_code(&o, 5);
    assert!(
        stderr(&o).contains("missing or wrong bearer token"),
        "{}",
        stderr(&o)
    );
    assert_code(&run(Some("wrong-token-wrong-token")), 5);
    let o = run(Some(token));
    assert_code(&o, 0);

    // A webhook signed with the token as its secret passes without a bearer
    // token (git servers sign); a wrong signature does not.
    let hook = |signature: &str| {
        use std::io::{Read, Write};
        let body = r#"{"ref":"refs/heads/main"}"#;
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        write!(
            s,
            "POST /hooks/gitsources/none HTTP/1.1\r\nHost: h\r\nX-Hub-Signature-256: {signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    };
    // openssl dgst -sha256 -hmac <token> of the body
    let signed = hook("sha256=5715eeea6c3a336d03de9b3b592479dbc3d1a82717f482b431bbc4d47b10e641");
    assert!(
        signed.starts_with("HTTP/1.1 404"),
        "authorized, no such source: {signed}"
    );
    let forged = hook("sha256=0000000000000000000000000000000000000000000000000000000000000000");
    assert!(forged.starts_with("HTTP/1.1 401"), "{forged}");
}

#[test]
fn a_second_daemon_on_the_same_socket_or_store_is_refused() {
    let d = Daemon::start();
    let o = std::process::Command::new(haswarm_testbed::haswarmd_bin())
        .arg("--data-dir")
        .arg(d.dir.path().join("other"))
        .arg("--socket")
        .arg(&d.socket)
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("another haswarmd is already serving"),
        "{}",
        stderr(&o)
    );
    let o = std::process::Command::new(haswarm_testbed::haswarmd_bin())
        .arg("--data-dir")
        .arg(d.dir.path().join("data"))
        .arg("--socket")
        .arg(d.dir.path().join("second.sock"))
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is another haswarmd using this data directory?"),
        "{}",
        stderr(&o)
    );
    let o = std::process::Command::new(haswarm_testbed::haswarmd_bin())
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("runs");
    assert_eq!(
        o.status.code(),
        Some(2),
        "invalid configuration starts nothing"
    );
}

#[test]
fn rotate_password_asks_only_for_passwords_haswarm_generates() {
    let d = Daemon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let pgc = "apiVersion: haswarm.io/v1alpha1
kind: PostgresCluster
metadata:
  name: db
spec:
  credentials:
    appUserSecret:
      name: my-app-password
";
    let f = write(dir.path(), "pgc.yaml", pgc);
    assert_code(&d.ctl(&["apply", "-f", &f]), 0);
    let f = write(dir.path(), "rsg.yaml", RSG);
    assert_code(&d.ctl(&["apply", "-f", &f]), 0);

    // The app password is the user's secret: refused, nothing annotated.
    let o = d.ctl(&["rotate-password", "pgc/db"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("spec.credentials.appUserSecret"),
        "{}",
        stderr(&o)
    );
    // The superuser's is generated: asked for with the user in the token.
    let o = d.ctl(&["rotate-password", "pgc/db", "--user", "superuser"]);
    assert_code(&o, 0);
    let v: Value =
        serde_json::from_str(&stdout(&d.ctl(&["get", "pgc", "db", "-o", "json"]))).expect("json");
    let token = v["metadata"]["annotations"]["haswarm.io/rotate-password"]
        .as_str()
        .unwrap_or_default();
    assert!(token.ends_with(" user=superuser"), "{v}");
    // A Redis group has one password: --user makes no sense there.
    assert_code(
        &d.ctl(&["rotate-password", "rsg/cache", "--user", "app"]),
        1,
    );
    assert_code(&d.ctl(&["rotate-password", "sv/whatever"]), 1);
}

#[test]
fn get_all_exports_every_resource_as_applied_and_apply_takes_it_back() {
    let d = Daemon::start();
    assert_code(&d.ctl(&["apply", "-f", "examples/"]), 0);
    let o = d.ctl(&["get", "all"]);
    assert_code(&o, 0);
    snapshot_settings().bind(|| insta::assert_snapshot!("get_all", stdout(&o)));
    let o = d.ctl(&["get", "all", "-o", "yaml"]);
    assert_code(&o, 0);
    let export = stdout(&o);
    for dropped in [
        "resourceVersion",
        "uid:",
        "generation",
        "creationTimestamp",
        "status:",
    ] {
        assert!(
            !export.contains(dropped),
            "{dropped} in the export:\n{export}"
        );
    }
    snapshot_settings().bind(|| insta::assert_snapshot!("get_all_yaml", export));

    // Another store takes the export back, and exports the same.
    let fresh = Daemon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "export.yaml", &export);
    let o = fresh.ctl(&["apply", "-f", &file]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).lines().all(|l| l.ends_with(" created")),
        "{}",
        stdout(&o)
    );
    let again = fresh.ctl(&["get", "all", "-o", "yaml"]);
    assert_eq!(stdout(&again), export);
    let empty = Daemon::start();
    let o = empty.ctl(&["get", "all"]);
    assert_code(&o, 0);
    assert_eq!(stderr(&o), "No resources found.\n");
}

#[test]
fn delete_takes_kind_slash_name_several_names_and_get_o_name_through_xargs() {
    let d = Daemon::start();
    assert_code(&d.ctl(&["apply", "-f", "examples/"]), 0);
    // kubectl's forms: several names of one kind, and KIND/NAME.
    let o = d.ctl(&["delete", "rsg", "cache", "dify-redis"]);
    assert_code(&o, 0);
    let mut shown = stdout(&o);
    let o = d.ctl(&["delete", "sharedvolume/demo-files", "pgc/pg"]);
    assert_code(&o, 0);
    shown.push_str(&stdout(&o));
    // What `get -o name` prints, piped through xargs as with kubectl.
    let bin = haswarmctl_bin();
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "set -e; {bin} get sv -o name | xargs {bin} delete",
            bin = bin.display()
        ))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("HASWARM_SERVER", d.server())
        .env("NO_COLOR", "1")
        .output()
        .expect("sh runs");
    assert_code(&o, 0);
    shown.push_str(&stdout(&o));
    // The two forms mixed, a kind without a name: refused, nothing deleted.
    let o = d.ctl(&["delete", "pgc", "gs/platform"]);
    assert_code(&o, 1);
    shown.push_str(&stderr(&o));
    let o = d.ctl(&["delete", "gs"]);
    assert_code(&o, 1);
    shown.push_str(&stderr(&o));
    snapshot_settings().bind(|| insta::assert_snapshot!("delete_forms", shown));
    let o = d.ctl(&["get", "all", "-o", "name"]);
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o),
        "postgrescluster/dify-db\ngitsource/platform\n",
        "only what was not named is left"
    );
}
