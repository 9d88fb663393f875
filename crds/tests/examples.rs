//! Every example manifest parses, validates, and points editors at a schema
//! that exists.

use std::path::Path;

use haswarm_crds::manifest::{self, Limits};
use haswarm_crds::validate::EmptyCatalog;

/// The examples of one folder, parsed (each has a modeline to a schema that
/// exists) and validated as one batch, as `apply -f FOLDER` takes them.
fn folder(dir: &str) -> Vec<manifest::ParsedDocument> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("readable");
        let modeline = text
            .lines()
            .find_map(|l| l.strip_prefix("# yaml-language-server: $schema="))
            .unwrap_or_else(|| panic!("{} has no yaml-language-server modeline", f.display()));
        let schema = f.parent().expect("in a folder").join(modeline);
        assert!(
            schema.is_file(),
            "{}: schema {} does not exist",
            f.display(),
            schema.display()
        );
        let parsed = manifest::parse(&f.display().to_string(), &text, &Limits::default())
            .unwrap_or_else(|e| panic!("{e:#?}"));
        assert!(!parsed.is_empty(), "{} holds no resource", f.display());
        docs.extend(parsed);
    }
    let errors = manifest::validate_batch(&docs, &EmptyCatalog);
    assert!(errors.is_empty(), "{errors:#?}");
    docs
}

#[test]
fn every_example_is_valid_and_has_a_schema_modeline() {
    let docs = folder("examples");
    assert!(docs.len() >= 4, "{} resources", docs.len());
    let kinds: std::collections::BTreeSet<_> = docs.iter().map(|d| d.resource.kind()).collect();
    assert_eq!(
        kinds.len(),
        haswarm_crds::KINDS.len(),
        "examples cover every kind"
    );
}

#[test]
fn the_one_node_example_is_the_dify_data_layer_spread_to_fit_one_node() {
    let docs = folder("examples/one-node");
    let mut found: Vec<(&str, &str)> = docs
        .iter()
        .map(|d| (d.resource.kind(), d.resource.name()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("PostgresCluster", "dify-db"),
            ("RedisSentinelGroup", "dify-redis"),
            ("SharedVolume", "dify-plugins"),
            ("SharedVolume", "dify-storage"),
        ]
    );
    for d in &docs {
        let spread = d.raw.pointer("/spec/placement/spread");
        if matches!(d.resource.kind(), "PostgresCluster" | "RedisSentinelGroup") {
            assert_eq!(
                spread.and_then(|s| s.as_str()),
                Some("Preferred"),
                "{}",
                d.resource.name()
            );
        }
    }
}

#[test]
fn the_dify_example_has_a_master_group_and_three_sentinels() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/dify-ha.yaml");
    let text = std::fs::read_to_string(root).expect("readable");
    let docs = manifest::parse("dify-ha.yaml", &text, &Limits::default()).expect("valid");
    let rsg = docs
        .iter()
        .find_map(|d| match &d.resource {
            haswarm_crds::AnyResource::RedisSentinelGroup(r) => Some(r),
            _ => None,
        })
        .expect("a RedisSentinelGroup");
    assert_eq!(
        rsg.spec.master_group_name.as_deref(),
        Some("dify-master-group")
    );
    assert_eq!(rsg.spec.sentinels.count, 3);
    assert_eq!(
        docs.iter()
            .filter(|d| d.resource.kind() == "SharedVolume")
            .count(),
        2
    );
}
