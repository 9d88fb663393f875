//! The chart's values and rendering, without Docker.

use super::*;

/// haswarmd's command line in a rendered stack.
fn command(svc: &Value) -> Vec<&str> {
    svc["command"]
        .as_array()
        .expect("command")
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

fn stack(files: &[(&str, &str)], sets: &[&str]) -> Result<Value, String> {
    let chart = Chart::builtin();
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
        .collect();
    let sets: Vec<String> = sets.iter().map(|s| (*s).to_owned()).collect();
    let v = values(&chart, &files, &sets)?;
    let out = render(&chart, &v, "haswarm")?;
    serde_saphyr::from_str::<Value>(&out).map_err(|e| e.to_string())
}

#[test]
fn the_defaults_render_a_stack_with_one_haswarmd_on_a_manager() {
    let s = stack(&[], &[]).expect("renders");
    let svc = &s["services"]["haswarmd"];
    assert_eq!(svc["image"], "haswarm/haswarmd:latest");
    assert_eq!(svc["deploy"]["replicas"], 1);
    assert_eq!(svc["deploy"]["update_config"]["order"], "stop-first");
    assert_eq!(
        svc["deploy"]["placement"]["constraints"][0],
        "node.role == manager"
    );
    assert_eq!(svc["environment"]["HASWARM_LOG_FORMAT"], "json");
    let mounts: Vec<&str> = svc["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|m| m["target"].as_str())
        .collect();
    assert_eq!(
        mounts,
        ["/var/run/docker.sock", "/run/haswarm", "/var/lib/haswarm"]
    );
    assert_eq!(s["volumes"]["data"]["name"], "haswarm-data");
    assert_eq!(svc["healthcheck"]["test"][4], "healthcheck");
    assert!(svc.get("ports").is_none());
    // The only secret is the mirror's key.
    assert_eq!(svc["secrets"].as_array().map(Vec::len), Some(1));
    assert_eq!(s["secrets"]["mirror-key"]["external"], true);
}

#[test]
fn the_mirror_mounts_its_key_and_names_the_store() {
    let s = stack(&[], &["mirror.storeId=s-1", "mirror.keySecret=k"]).expect("renders");
    let svc = &s["services"]["haswarmd"];
    let cmd = command(svc);
    let after = |flag: &str| cmd.iter().position(|a| *a == flag).map(|i| cmd[i + 1]);
    assert_eq!(after("--store-id"), Some("s-1"));
    assert_eq!(
        after("--mirror-key-file"),
        Some("/run/secrets/haswarm-mirror-key")
    );
    assert_eq!(after("--lease-term"), Some("15s"));
    assert_eq!(svc["secrets"][0]["target"], "haswarm-mirror-key");
    assert_eq!(s["secrets"]["mirror-key"]["name"], "k");
    let off = stack(&[], &["mirror.enabled=false"]).expect("renders");
    let text = serde_json::to_string(&off).expect("json");
    assert!(
        !text.contains("--store-id") && off.get("secrets").is_none(),
        "{text}"
    );
}

#[test]
fn values_files_and_sets_override_in_order() {
    let s = stack(
        &[("mine.yaml", "log:\n  level: debug\nresync: 10s\n")],
        &[
            "resync=5s",
            "tcp.enabled=true",
            "tcp.port=7500",
            "resources.limits.cpus=2",
            "placement.constraints=[node.hostname == a, node.role == manager]",
        ],
    )
    .expect("renders");
    let svc = &s["services"]["haswarmd"];
    assert_eq!(svc["environment"]["HASWARM_LOG"], "debug");
    let cmd = command(svc);
    assert!(cmd.windows(2).any(|w| w == ["--resync", "5s"]), "{cmd:?}");
    assert!(
        cmd.windows(2).any(|w| w == ["--listen", "0.0.0.0:7500"]),
        "{cmd:?}"
    );
    assert_eq!(svc["ports"][0]["published"], 7500);
    assert_eq!(svc["ports"][0]["mode"], "host");
    assert_eq!(s["secrets"]["token"]["name"], "haswarm-token");
    assert_eq!(svc["deploy"]["resources"]["limits"]["cpus"], "2");
    assert_eq!(
        svc["deploy"]["placement"]["constraints"][0],
        "node.hostname == a"
    );
}

#[test]
fn git_credentials_are_mounted_as_external_secrets() {
    let s = stack(&[], &["gitCredentials=[deploy-key, gitea-token]"]).expect("renders");
    let svc = &s["services"]["haswarmd"];
    assert_eq!(svc["secrets"][1]["target"], "deploy-key");
    assert_eq!(svc["secrets"][2]["target"], "gitea-token");
    assert_eq!(s["secrets"]["git-1"]["name"], "deploy-key");
    assert_eq!(s["secrets"]["git-2"]["external"], true);
    assert!(svc.get("ports").is_none());
}

#[test]
fn uninstall_names_the_volumes_the_stack_mounts() {
    let inspected = concat!(
        r#"[{"Type":"bind","Source":"/var/run/docker.sock","Target":"/var/run/docker.sock"},{"Type":"volume","Source":"haswarm-data","Target":"/var/lib/haswarm"}]"#,
        "\nnull\n",
        r#"[{"Type":"volume","Source":"haswarm-data","Target":"/x"},{"Type":"volume","Source":"","Target":"/anon"}]"#,
        "\n"
    );
    assert_eq!(named_volumes(inspected), ["haswarm-data"]);
    assert!(named_volumes("").is_empty());
}

#[test]
fn unknown_keys_wrong_kinds_and_bad_names_are_refused() {
    let e = stack(&[], &["tcp.enable=true"]).expect_err("typo");
    assert!(
        e.contains("unknown value tcp.enable") && e.contains("enabled"),
        "{e}"
    );
    let e = stack(&[("v.yaml", "tcp:\n  enabled: yes please\n")], &[]).expect_err("kind");
    assert!(e.contains("v.yaml: tcp.enabled must be a boolean"), "{e}");
    let e = stack(&[], &["socketDir=run/haswarm"]).expect_err("relative");
    assert!(e.contains("socketDir: must be an absolute path"), "{e}");
    let e = stack(&[], &["log.format=xml"]).expect_err("format");
    assert!(e.contains("log.format"), "{e}");
    let e = stack(&[("v.yaml", "image: [unclosed\n")], &[]).expect_err("yaml");
    assert!(e.starts_with("v.yaml:"), "{e}");
    let chart = Chart::builtin();
    let v = values(&chart, &[], &[]).expect("defaults");
    assert!(render(&chart, &v, "Bad Name").is_err());
}

#[test]
fn a_template_using_an_undefined_value_fails() {
    let chart = Chart {
        template: "image: {{ imag }}\n".into(),
        ..Chart::builtin()
    };
    let v = values(&chart, &[], &[]).expect("defaults");
    assert!(render(&chart, &v, "haswarm").is_err());
}
