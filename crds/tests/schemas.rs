//! The JSON Schemas checked in under `crds/schemas/` are what the types
//! generate, and `explain` can describe every field they contain.

use std::path::Path;

use haswarm_crds::schema::{all_schema_files, explain};
use serde_json::Value;

#[test]
fn checked_in_schemas_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    for (file, text) in all_schema_files() {
        let on_disk = std::fs::read_to_string(dir.join(&file)).unwrap_or_default();
        assert!(
            on_disk == text,
            "crds/schemas/{file} is out of date with the types; regenerate with:\n  cargo run -q -p haswarm-cli -- schema --write crds/schemas"
        );
    }
}

#[test]
fn schemas_are_draft_07_and_closed() {
    for (file, text) in all_schema_files() {
        let v: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(
            v["$schema"], "http://json-schema.org/draft-07/schema#",
            "{file}"
        );
        if file != "haswarm.json" {
            assert_eq!(v["additionalProperties"], false, "{file}");
            assert!(v["definitions"].is_object(), "{file}");
        }
    }
}

fn walk(root: &Value, schema: &Value, path: &str, out: &mut Vec<String>, depth: usize) {
    if depth > 8 {
        return;
    }
    let mut s = schema;
    for _ in 0..4 {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            s = &root["definitions"][r.rsplit('/').next().unwrap_or_default()];
        } else if let Some(inner) = ["allOf", "anyOf"].iter().find_map(|k| {
            s.get(*k)
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|x| x.get("$ref").is_some()))
        }) {
            s = inner;
        } else {
            break;
        }
    }
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            let p = format!("{path}.{k}");
            out.push(p.clone());
            walk(root, v, &p, out, depth + 1);
        }
    }
}

#[test]
fn explain_describes_every_field() {
    for kind in haswarm_crds::KINDS.iter() {
        let root: Value = (kind.schema)().into();
        let mut paths = Vec::new();
        walk(&root, &root, &kind.kind.to_ascii_lowercase(), &mut paths, 0);
        assert!(paths.len() > 20, "{}: {paths:?}", kind.kind);
        for p in paths {
            let text = explain(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
            assert!(
                !text.contains("(no description)") || p.ends_with(".status"),
                "{p} has no doc comment:\n{text}"
            );
        }
    }
}

#[test]
fn explain_patroni_prints_the_field_docs() {
    let text = explain("postgrescluster.spec.patroni").expect("explains");
    assert!(text.contains("KIND:     PostgresCluster"), "{text}");
    assert!(text.contains("ttl <integer> (default: 30)"), "{text}");
    assert!(
        text.contains("Seconds the leader key lives in etcd"),
        "{text}"
    );
    assert!(explain("pgc.spec.nope").is_err());
    assert!(explain("nokind").is_err());
}
