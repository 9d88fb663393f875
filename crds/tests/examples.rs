//! Every example manifest parses, validates, and points editors at a schema
//! that exists.

use std::path::Path;

use haswarm_crds::manifest::{self, Limits};
use haswarm_crds::validate::EmptyCatalog;

#[test]
fn every_example_is_valid_and_has_a_schema_modeline() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files: Vec<_> = std::fs::read_dir(root.join("examples"))
        .expect("examples/ exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
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
    let kinds: std::collections::BTreeSet<_> = docs.iter().map(|d| d.resource.kind()).collect();
    assert_eq!(
        kinds.len(),
        haswarm_crds::KINDS.len(),
        "examples cover every kind"
    );
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
