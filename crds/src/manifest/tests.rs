//! Unit tests of `manifest`, without Docker.

use super::*;
use crate::validate::EmptyCatalog;

const RSG: &str = "apiVersion: haswarm.io/v1alpha1\nkind: RedisSentinelGroup\nmetadata:\n  name: cache\nspec:\n  sentinels:\n    count: 4\n";

fn errors(text: &str) -> Vec<ManifestError> {
    match parse("t.yaml", text, &Limits::default()) {
        Ok(docs) => validate_batch(&docs, &EmptyCatalog),
        Err(e) => e,
    }
}

#[test]
fn validation_errors_point_at_the_field() {
    let e = errors(RSG);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path.as_deref(), Some("spec.sentinels.count"));
    let p = e[0].position.expect("position");
    assert_eq!((p.line, p.column), (7, 12));
    assert_eq!(e[0].rule, Some("sentinels-odd"));
    assert!(e[0]
        .to_string()
        .starts_with("t.yaml:7:12: spec.sentinels.count: 4 sentinels is even"));
}

#[test]
fn unknown_fields_point_at_the_key() {
    let e = errors(&RSG.replace("count: 4", "cuont: 3"));
    assert_eq!(e[0].path.as_deref(), Some("spec.sentinels.cuont"));
    let p = e[0].position.expect("position");
    assert_eq!((p.line, p.column), (7, 5));
    assert!(
        e[0].message.contains("unknown field `cuont`"),
        "{}",
        e[0].message
    );
}

#[test]
fn syntax_errors_point_at_the_right_byte_with_any_line_break() {
    // Found by tests/fuzz.rs: the parser gives a syntax error's place by
    // line and column only, and the byte offset worked out from them was
    // the end of the text with CR line breaks, and a character early on a
    // line starting with a byte order mark; the snippet underlined the
    // wrong place.
    for br in ["\n", "\r\n", "\r"] {
        let text = ["a: 1", "b: 'x", "c: 3"].join(br);
        let e = parse("t.yaml", &text, &Limits::default()).expect_err("unclosed quote");
        let p = e[0].position.expect("position");
        assert_eq!((p.line, p.column), (2, 4), "{br:?}: {e:?}");
        assert_eq!(&text[p.offset..p.offset + 2], "'x", "{br:?}: {e:?}");
    }
    for (text, line) in [
        ("\u{feff}a: 'x", 1),
        ("# c\n\u{feff}a: 'x", 2),
        ("a: 1\n...\n\u{feff}a: 'x", 3),
        ("\u{feff}\u{feff}a: 'x", 1),
    ] {
        let e = parse("t.yaml", text, &Limits::default()).expect_err("unclosed quote");
        let p = e[0].position.expect("position");
        assert_eq!((p.line, p.column), (line, 4), "{e:?}");
        assert_eq!(&text[p.offset..], "'x", "{e:?}");
    }
    assert_eq!(line_start("a\r\nb\rc\nd", 3), 7);
    assert_eq!(line_start("a\r", 1), 2);
    assert_eq!(line_start("a", 5), 1);
    assert_eq!(line_start("\u{feff}a\nb", 0), 3);
    assert_eq!(line_start("a\n\u{feff}b", 1), 5);
}

#[test]
fn defaults_are_filled() {
    let docs = parse(
        "t.yaml",
        &RSG.replace("count: 4", "count: 5"),
        &Limits::default(),
    )
    .expect("parses");
    let AnyResource::RedisSentinelGroup(r) = &docs[0].resource else {
        panic!("wrong kind")
    };
    assert_eq!(r.spec.sentinels.quorum, Some(3));
    assert_eq!(r.spec.master_group_name.as_deref(), Some("cache"));
    assert_eq!(r.spec.instances, 3);
}

#[test]
fn empty_documents_are_skipped() {
    let text = format!("---\n---\n{RSG}---\n");
    let docs = parse(
        "t.yaml",
        &text.replace("count: 4", "count: 3"),
        &Limits::default(),
    )
    .expect("parses");
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].position.line, 3);
}

#[test]
fn duplicate_names_in_a_batch_are_refused() {
    let one = RSG.replace("count: 4", "count: 3");
    let e = errors(&format!("{one}---\n{one}"));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].rule, Some("unique-name"));
    assert_eq!(e[0].position.map(|p| p.line), Some(12));
}
