//! The bad-manifest corpus: every file under `tests/bad/` must be refused with
//! the message its `# expect:` header names (and, with `# at: LINE:COL`, at
//! that position), without a panic. Hostile inputs too large to check in are
//! generated here.

use std::path::Path;

use haswarm_crds::manifest::{self, ErrorKind, Limits, ManifestError};
use haswarm_crds::validate::EmptyCatalog;

fn problems(name: &str, text: &str) -> Vec<ManifestError> {
    match manifest::parse(name, text, &Limits::default()) {
        Ok(docs) => manifest::validate_batch(&docs, &EmptyCatalog),
        Err(e) => e,
    }
}

fn header<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
}

#[test]
fn every_bad_manifest_is_refused_with_its_message() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/bad exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 25, "the corpus has {} files", files.len());
    for f in files {
        let name = f.display().to_string();
        let text = std::fs::read_to_string(&f).expect("readable");
        let expect =
            header(&text, "expect").unwrap_or_else(|| panic!("{name}: no '# expect:' header"));
        let errs = problems(&name, &text);
        let hit = errs
            .iter()
            .find(|e| e.to_string().contains(expect))
            .unwrap_or_else(|| {
                panic!("{name}: expected a problem containing {expect:?}, got {errs:#?}")
            });
        assert!(hit.to_string().starts_with(&format!("{name}:")), "{hit}");
        let pos = hit
            .position
            .unwrap_or_else(|| panic!("{name}: no position in {hit}"));
        if let Some(at) = header(&text, "at") {
            assert_eq!(format!("{}:{}", pos.line, pos.column), at, "{name}: {hit}");
        }
        if hit.kind == ErrorKind::Invalid {
            assert!(hit.path.is_some() && hit.rule.is_some(), "{name}: {hit}");
            assert!(hit.to_string().contains("[rule: "), "{hit}");
        }
    }
}

#[test]
fn a_50_mb_document_is_refused_before_parsing() {
    let mut text = String::from("apiVersion: haswarm.io/v1alpha1\nkind: PostgresCluster\nmetadata:\n  name: pg\n  annotations:\n    blob: \"");
    text.push_str(&"x".repeat(50 << 20));
    text.push_str("\"\nspec: {}\n");
    let e = problems("big.yaml", &text);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].kind, ErrorKind::Limit);
    assert!(
        e[0].message.contains("limited to 4194304 bytes"),
        "{}",
        e[0]
    );
}

#[test]
fn deep_nesting_is_refused() {
    let flow = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let block: String = (0..500)
        .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
        .collect();
    let mapping = format!("{}1{}", "{a: ".repeat(5_000), "}".repeat(5_000));
    for (name, text) in [("flow", flow), ("block", block), ("mapping", mapping)] {
        let e = problems(name, &text);
        assert_eq!(e.len(), 1, "{name}: {e:?}");
        assert!(
            e[0].message.contains("nesting deeper than 32 levels") || e[0].message.contains("nest"),
            "{name}: {}",
            e[0]
        );
    }
}

#[test]
fn too_many_documents_are_refused() {
    let text = "---\na: 1\n".repeat(5_000);
    let e = problems("many.yaml", &text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].message.contains("more than 1000 documents"),
        "{}",
        e[0]
    );
}

#[test]
fn garbage_never_panics() {
    let samples = [
        "", "\0", "---", "...", ":", "- - - -", "? ? ?", "&a *a", "*x", "!!binary x", "%YAML 9.9\n---\n",
        "a: !custom 1", "{", "}", "[", "'", "\"\\u", "a: |\n  x\n b", "\u{feff}a: 1", "apiVersion: 5\nkind: []",
        "apiVersion: haswarm.io/v1alpha1\nkind: PostgresCluster\nmetadata: 1\nspec: 2",
        "apiVersion: haswarm.io/v1alpha1\nkind: SharedVolume\nmetadata: {name: a}\nspec: {nfs: {server: '', path: ''}}",
        "apiVersion: haswarm.io/v1alpha1\nkind: PostgresCluster\nmetadata: {name: a}\nspec: {resources: {limits: {cpu: 1e400}}}",
        "apiVersion: haswarm.io/v1alpha1\nkind: PostgresCluster\nmetadata: {name: a}\nspec: {patroni: {ttl: 4294967295, loopWait: 4294967295, retryTimeout: 4294967295}}",
    ];
    for s in samples {
        let _ = problems("g.yaml", s);
    }
    // Every prefix of a real manifest: truncation anywhere must be an error or a
    // valid shorter document, never a panic.
    let full = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/dify-ha.yaml"),
    )
    .expect("example exists");
    for (i, _) in full.char_indices() {
        let _ = problems("prefix.yaml", &full[..i]);
    }
}
