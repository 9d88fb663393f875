//! `haswarmctl` as a user runs it: the real binary, real files, exit codes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn ctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_haswarmctl"))
        .args(args)
        .current_dir(repo())
        .env("NO_COLOR", "1")
        .output()
        .expect("haswarmctl runs")
}

fn ctl_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_haswarmctl"))
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("haswarmctl runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("written");
    child.wait_with_output().expect("finishes")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn validate_accepts_the_examples_folder() {
    let out = ctl(&["validate", "-f", "examples/"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("redissentinelgroup/dify-redis valid (examples/dify-ha.yaml:"),
        "{stdout}"
    );
    assert!(stdout.contains("all valid"), "{stdout}");
}

#[test]
fn validate_reports_file_line_column_and_field_path() {
    let out = ctl(&["validate", "-f", "crds/tests/bad/14-even-sentinels.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "crds/tests/bad/14-even-sentinels.yaml:9:12: spec.sentinels.count: 4 sentinels is even"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("count: 4"),
        "the offending line is shown: {stderr}"
    );
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn validate_checks_the_whole_batch_and_reports_every_file() {
    let out = ctl(&[
        "validate",
        "-f",
        "examples/",
        "-f",
        "crds/tests/bad/20-patroni-timing.yaml",
        "-f",
        "crds/tests/bad/23-tabs.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("20-patroni-timing.yaml:"), "{stderr}");
    assert!(stderr.contains("23-tabs.yaml:6:2"), "{stderr}");
    assert!(
        stderr.contains("is also defined at examples/postgrescluster.yaml"),
        "{stderr}"
    );
    assert!(stderr.contains("3 problems found"), "{stderr}");
}

#[test]
fn validate_reads_standard_input() {
    let good =
        std::fs::read_to_string(repo().join("examples/redissentinelgroup.yaml")).expect("example");
    let out = ctl_stdin(&["validate", "-f", "-"], &good);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = ctl_stdin(
        &["validate", "-f", "-"],
        &good.replace("name: cache", "name: Cache"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("<stdin>:8:9: metadata.name: invalid name \"Cache\""),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn validate_reads_folders_recursively_only_with_r() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = dir.path().join("nested");
    std::fs::create_dir(&sub).expect("mkdir");
    std::fs::copy(
        repo().join("examples/sharedvolume.yaml"),
        sub.join("sv.yaml"),
    )
    .expect("copy");
    let d = dir.path().to_str().expect("utf-8 path");
    let out = ctl(&["validate", "-f", d]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("use -R"),
        "{}",
        text(&out.stderr)
    );
    let out = ctl(&["validate", "-R", "-f", d]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn unreadable_input_exits_3() {
    let out = ctl(&["validate", "-f", "no/such/file.yaml"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("cannot read no/such/file.yaml"),
        "{}",
        text(&out.stderr)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("big.yaml");
    let f = std::fs::File::create(&big).expect("create");
    f.set_len(50 << 20).expect("sparse 50 MB file");
    let out = ctl(&["validate", "-f", big.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("manifests are limited to"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn explain_prints_field_docs() {
    let out = ctl(&["explain", "postgrescluster.spec.patroni"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("FIELD:    postgrescluster.spec.patroni <PatroniSettings>"),
        "{stdout}"
    );
    assert!(stdout.contains("ttl <integer> (default: 30)"), "{stdout}");
    let out = ctl(&["explain", "rsg.spec.sentinel"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("fields there: instances, image"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn schema_prints_the_checked_in_file() {
    let out = ctl(&["schema", "sv"]);
    assert_eq!(out.status.code(), Some(0));
    let on_disk = std::fs::read_to_string(repo().join("crds/schemas/sharedvolume.json"))
        .expect("schema file");
    assert_eq!(text(&out.stdout), on_disk);
}

#[test]
fn help_lists_exit_codes() {
    let out = ctl(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Exit codes:"), "{stdout}");
    for cmd in ["validate", "schema", "explain"] {
        assert!(stdout.contains(cmd), "{stdout}");
    }
}

#[test]
fn render_prints_the_equivalent_stack_file() {
    let out = ctl(&["render", "-f", "examples/dify-ha.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for needle in [
        "version: \"3.8\"",
        "dify-redis-sentinel-2:",
        "HASWARM_GROUP=dify-master-group",
        "endpoint_mode: dnsrr",
        "dify-storage-probe:",
        "dify-db-pg-0:",
        "dify-db-rw:",
        "PATRONI_NAME=dify-db-pg-1",
    ] {
        assert!(stdout.contains(needle), "{needle} missing:\n{stdout}");
    }
    let out = ctl(&["render", "-f", "crds/tests/bad/14-even-sentinels.yaml"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "invalid manifests render nothing"
    );
}

fn snapshot(name: &str, value: &str) {
    let mut s = insta::Settings::clone_current();
    s.set_prepend_module_to_snapshot(false);
    s.bind(|| insta::assert_snapshot!(name, value));
}

#[test]
fn label_and_annotation_keys_are_checked_as_kubernetes_checks_them() {
    let out = ctl(&[
        "validate",
        "-f",
        "crds/tests/bad/69-label-key-with-spaces.yaml",
        "-f",
        "crds/tests/bad/70-annotation-key-uppercase-prefix.yaml",
        "-f",
        "crds/tests/bad/71-label-value-with-spaces.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    snapshot("validate_metadata_keys", &text(&out.stderr));
}

#[test]
fn a_long_line_s_excerpt_is_cut_around_the_problem() {
    let line = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let doc = format!(
        "apiVersion: haswarm.io/v1alpha1\nkind: SharedVolume\nmetadata:\n  name: deep\nspec: {line}\n"
    );
    let out = ctl_stdin(&["validate", "-f", "-"], &doc);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.lines().all(|l| l.chars().count() < 400),
        "every line of the report is short: {err}"
    );
    snapshot("validate_long_line", &err);
}
