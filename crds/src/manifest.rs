//! Reading manifests: YAML text in, typed and defaulted resources out, or
//! errors that say file, line, column and field path.
//!
//! Parsing runs in two steps. First the YAML becomes a tree of nodes that
//! remember where they were written, under budgets that stop hostile input
//! (size, nesting, node count, aliases). Then each document is typed through
//! JSON with the failing field's path recorded, and that path is looked up in
//! the tree to find the line and column. Validation errors, which name a
//! field path too, get their position the same way.

use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::{Location, Spanned};

use crate::resource::{AnyResource, KindInfo, KINDS};
use crate::validate::FieldError;
use crate::API_VERSION;

mod batch;
pub use batch::{validate_batch, validate_resources};

/// Limits that keep a hostile or mistaken file from exhausting memory or time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest file, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of mappings and sequences.
    pub max_depth: usize,
    /// Most documents in one file.
    pub max_documents: usize,
    /// Most YAML nodes in one file.
    pub max_nodes: usize,
    /// Most alias references (`*name`) in one file.
    pub max_aliases: usize,
}

impl Default for Limits {
    /// Generous for real manifests (the largest examples are a few KiB, a dozen
    /// levels deep) and far below what would hurt the machine.
    fn default() -> Self {
        Self {
            max_bytes: 4 << 20,
            max_depth: 32,
            max_documents: 1_000,
            max_nodes: 200_000,
            max_aliases: 1_000,
        }
    }
}

/// A place in a source text: 1-based line and column, and the byte range
/// (for pointing at it in a snippet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// 1-based line.
    pub line: u64,
    /// 1-based column (characters).
    pub column: u64,
    /// Byte offset from the start of the text.
    pub offset: usize,
    /// Length in bytes of what is pointed at (at least 1 where possible).
    pub len: usize,
}

impl Position {
    fn from_location(l: &Location) -> Self {
        let span = l.span();
        Self {
            line: l.line(),
            column: l.column(),
            offset: usize::try_from(span.byte_offset().unwrap_or(0)).unwrap_or(0),
            len: usize::try_from(span.byte_len().unwrap_or(0)).unwrap_or(0),
        }
    }
}

impl Position {
    /// Fills the byte offset from line and column where the parser gave none
    /// (its error locations carry no byte offsets).
    fn with_offset_from(mut self, text: &str) -> Self {
        if self.offset == 0 && (self.line, self.column) != (1, 1) {
            let line_start = line_start(
                text,
                usize::try_from(self.line.saturating_sub(1)).unwrap_or(usize::MAX),
            );
            let col = usize::try_from(self.column.saturating_sub(1)).unwrap_or(0);
            let within: usize = text[line_start.min(text.len())..]
                .chars()
                .take(col)
                .map(char::len_utf8)
                .sum();
            self.offset = line_start + within;
        }
        self
    }
}

/// The byte offset of column 1 of the line after `breaks` line breaks (the
/// end of the text if it has fewer), as the YAML parser counts lines and
/// columns: lines end at LF, CR LF, or a CR alone, and byte order marks
/// starting a line (as they may before a document) are no columns.
fn line_start(text: &str, breaks: usize) -> usize {
    let bytes = text.as_bytes();
    let mut seen = 0;
    let mut i = 0;
    while seen < breaks && i < bytes.len() {
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                i += 1;
                seen += 1;
            }
            b'\r' | b'\n' => seen += 1,
            _ => {}
        }
        i += 1;
    }
    let rest = &text[i..];
    i + rest.len() - rest.trim_start_matches('\u{feff}').len()
}

/// What went wrong, broadly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not well-formed YAML (or refused by the parser's limits).
    Syntax,
    /// Over a size or structure limit.
    Limit,
    /// Well-formed YAML of the wrong shape: unknown kind or field, wrong type, missing field.
    Shape,
    /// The right shape, but a rule is broken (see `rule`).
    Invalid,
}

/// One problem in a manifest, with everything a person needs to find and fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    /// The file name (or `<stdin>`).
    pub source_name: String,
    /// Where in the file, when known.
    pub position: Option<Position>,
    /// The field path, when the problem is a field's.
    pub path: Option<String>,
    /// Which rule, for validation errors.
    pub rule: Option<&'static str>,
    /// Broad class.
    pub kind: ErrorKind,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source_name)?;
        if let Some(p) = self.position {
            write!(f, ":{}:{}", p.line, p.column)?;
        }
        f.write_str(": ")?;
        if let Some(path) = &self.path {
            write!(f, "{path}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(rule) = self.rule {
            write!(f, " [rule: {rule}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestError {}

/// One resource read from a manifest, with where it came from.
#[derive(Clone, Debug)]
pub struct ParsedDocument {
    /// The typed resource, with defaults applied.
    pub resource: AnyResource,
    /// The document as written (before defaults), as JSON.
    pub raw: Value,
    /// The file it came from.
    pub source_name: String,
    /// 0-based index of the document in its file.
    pub index: usize,
    /// Where the document starts.
    pub position: Position,
    locations: Locations,
}

impl ParsedDocument {
    /// The position of a field path (or of its nearest written ancestor).
    pub fn position_of(&self, path: &str) -> Position {
        self.locations.find(path).unwrap_or(self.position)
    }

    fn error_for(&self, e: FieldError) -> ManifestError {
        let at_key = crate::validate::KEY_RULES.contains(&e.rule);
        let position = at_key
            .then(|| self.locations.keys.get(e.path.as_str()).copied())
            .flatten()
            .unwrap_or_else(|| self.position_of(e.path.as_str()));
        ManifestError {
            source_name: self.source_name.clone(),
            position: Some(position),
            path: Some(e.path.to_string()),
            rule: Some(e.rule),
            kind: ErrorKind::Invalid,
            message: e.message,
        }
    }
}

/// A YAML node and where it was written.
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a YAML value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::UInt(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Node::Seq(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(k) = a.next_key::<Spanned<String>>()? {
                    let val = a.next_value()?;
                    v.push((k, val));
                }
                Ok(Node::Map(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Field path -> where its key and its value were written.
#[derive(Clone, Debug, Default)]
struct Locations {
    keys: HashMap<String, Position>,
    values: HashMap<String, Position>,
}

impl Locations {
    fn record(&mut self, path: &str, node: &Spanned<Node>) {
        self.values
            .insert(path.to_owned(), Position::from_location(&node.referenced));
        match &node.value {
            Node::Map(entries) => {
                for (k, v) in entries {
                    let p = join(path, &k.value);
                    self.keys
                        .insert(p.clone(), Position::from_location(&k.referenced));
                    self.record(&p, v);
                }
            }
            Node::Seq(items) => {
                for (i, v) in items.iter().enumerate() {
                    self.record(&format!("{path}[{i}]"), v);
                }
            }
            _ => {}
        }
    }

    /// The value's position for `path`, else the nearest written ancestor's.
    fn find(&self, path: &str) -> Option<Position> {
        let mut p = if path == "." { "" } else { path };
        loop {
            if let Some(pos) = self.values.get(p) {
                return Some(*pos);
            }
            if p.is_empty() {
                return None;
            }
            p = parent(p);
        }
    }

    /// The key's position for `path` (an unknown field is best shown at its key).
    fn find_key(&self, path: &str) -> Option<Position> {
        self.keys.get(path).copied().or_else(|| self.find(path))
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn parent(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(i) => &path[..i],
        None => "",
    }
}

fn to_json(node: &Node) -> Value {
    match node {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(*b),
        Node::Int(i) => Value::from(*i),
        Node::UInt(u) => Value::from(*u),
        Node::Float(f) => Value::from(*f),
        Node::Str(s) => Value::String(s.clone()),
        Node::Seq(items) => Value::Array(items.iter().map(|n| to_json(&n.value)).collect()),
        Node::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.value.clone(), to_json(&v.value)))
                .collect(),
        ),
    }
}

fn yaml_options(limits: &Limits) -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: limits.max_depth,
            max_documents: limits.max_documents,
            max_nodes: limits.max_nodes,
            max_aliases: limits.max_aliases,
            max_anchors: limits.max_aliases,
            max_total_scalar_bytes: limits.max_bytes,
        },
        // Only `true`/`false` are booleans, so `enabled: yes` stays the string it looks like.
        strict_booleans: true,
        // `0755` and `012` stay text instead of turning into surprising numbers.
        leading_zero_numbers_as_strings: true,
    }
}

/// The parser's message without its own location prefix, with advice for
/// the mistakes people make most.
fn syntax_message(e: &serde_saphyr::Error, limits: &Limits) -> (ErrorKind, String) {
    let rendered = e.render_with_options(serde_saphyr::render_options! {
        snippets: serde_saphyr::SnippetMode::Off,
    });
    let first = rendered.lines().next().unwrap_or_default();
    let mut msg = first.strip_prefix("error: ").unwrap_or(first).to_owned();
    if let Some(rest) = msg.strip_prefix("line ") {
        if let Some((_, after)) = rest.split_once(": ") {
            msg = after.to_owned();
        }
    }
    if let Some(i) = msg.rfind(" at line ") {
        msg.truncate(i);
    }
    if let Some((head, _)) = msg.split_once(", set DuplicateKeyPolicy") {
        msg = format!("{head}: each key may appear once in a mapping");
    }
    if msg.contains("budget breached") || msg.contains("recursion limit") {
        let what = if msg.contains("Depth") || msg.contains("recursion") {
            format!("nesting deeper than {} levels", limits.max_depth)
        } else if msg.contains("Documents") {
            format!("more than {} documents", limits.max_documents)
        } else if msg.contains("Nodes") {
            format!("more than {} YAML nodes", limits.max_nodes)
        } else if msg.contains("Alias") || msg.contains("Anchor") {
            format!("more than {} aliases or anchors", limits.max_aliases)
        } else {
            "more content than a manifest needs".to_owned()
        };
        return (
            ErrorKind::Limit,
            format!("refused: {what} (a limit that protects haswarm from hostile input; no manifest needs that much)"),
        );
    }
    if msg.contains("tab") {
        msg.push_str(" (YAML indents with spaces; replace the tab characters)");
    }
    (ErrorKind::Syntax, msg)
}

/// Parses every document of one YAML text.
///
/// Empty documents are skipped. Each document must be a haswarm resource.
/// Defaults are applied; validation is separate ([`validate_batch`]) because
/// references need every document of a batch.
///
/// # Errors
/// All problems found. A syntax error stops the file; shape errors are
/// reported once per document.
pub fn parse(
    source_name: &str,
    text: &str,
    limits: &Limits,
) -> Result<Vec<ParsedDocument>, Vec<ManifestError>> {
    let err =
        |position: Option<Position>, path: Option<String>, kind, message: String| ManifestError {
            source_name: source_name.to_owned(),
            position,
            path,
            rule: None,
            kind,
            message,
        };
    if text.len() > limits.max_bytes {
        return Err(vec![err(
            None,
            None,
            ErrorKind::Limit,
            format!(
                "the file is {} bytes; manifests are limited to {} bytes (a limit that protects haswarm from hostile input)",
                text.len(),
                limits.max_bytes
            ),
        )]);
    }
    let docs: Vec<Spanned<Node>> =
        match serde_saphyr::from_multiple_with_options(text, yaml_options(limits)) {
            Ok(d) => d,
            Err(e) => {
                let (kind, message) = syntax_message(&e, limits);
                let position = e
                    .location()
                    .map(|l| Position::from_location(&l).with_offset_from(text));
                return Err(vec![err(position, None, kind, message)]);
            }
        };

    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (index, doc) in docs.iter().enumerate() {
        if matches!(doc.value, Node::Null) {
            continue;
        }
        let position = Position::from_location(&doc.referenced);
        let mut locations = Locations::default();
        locations.record("", doc);
        let raw = to_json(&doc.value);
        match resource_from_json(raw.clone()) {
            Ok(resource) => out.push(ParsedDocument {
                resource,
                raw,
                source_name: source_name.to_owned(),
                index,
                position,
                locations,
            }),
            Err(e) => {
                let pos = if e.message.starts_with("unknown field") {
                    locations.find_key(&e.path)
                } else {
                    locations.find(&e.path)
                };
                let path = (e.path != ".").then_some(e.path);
                errors.push(err(
                    pos.or(Some(position)),
                    path,
                    ErrorKind::Shape,
                    e.message,
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Adds "did you mean `x`?" to serde's unknown-field and unknown-variant
/// messages when one expected name is a likely typo away.
fn with_suggestion(message: String) -> String {
    let Some(rest) = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))
    else {
        return message;
    };
    let Some((given, expected)) = rest.split_once('`') else {
        return message;
    };
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|cand| {
            (
                strsim::levenshtein(&given.to_ascii_lowercase(), &cand.to_ascii_lowercase()),
                cand,
            )
        })
        .min();
    match best {
        Some((d, cand)) if d <= 2 || (d <= 3 && given.len() > 8) => {
            format!("{message} (did you mean `{cand}`?)")
        }
        _ => message,
    }
}

/// A document of the wrong shape: the field path (`.` for the whole
/// document) and what is wrong there.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ShapeError {
    /// Field path as written in YAML/JSON.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Types one resource from JSON (a manifest as the API receives it), checks
/// `apiVersion` and `kind`, and applies defaults.
///
/// # Errors
/// [`ShapeError`] naming the field: unknown kind or field, wrong type, missing field.
pub fn resource_from_json(raw: Value) -> Result<AnyResource, ShapeError> {
    let shape = |path: &str, message: String| ShapeError {
        path: path.to_owned(),
        message,
    };
    let Value::Object(map) = &raw else {
        return Err(shape(
            ".",
            "a document must be a mapping with apiVersion, kind, metadata and spec".into(),
        ));
    };
    match map.get("apiVersion") {
        Some(Value::String(v)) if v == API_VERSION => {}
        None => {
            return Err(shape(
                "apiVersion",
                format!(
                "missing field `apiVersion`: haswarm resources have `apiVersion: {API_VERSION}`"
            ),
            ))
        }
        Some(v) => {
            return Err(shape(
                "apiVersion",
                format!("unsupported apiVersion {v}: this haswarm serves {API_VERSION}"),
            ))
        }
    }
    let known = || KINDS.iter().map(|k| k.kind).collect::<Vec<_>>().join(", ");
    let info = match map.get("kind") {
        Some(Value::String(k)) => KINDS.iter().find(|i| i.kind == k.as_str()),
        _ => None,
    };
    let Some(info) = info else {
        let message = match map.get("kind") {
            None => format!("missing field `kind`: one of {}", known()),
            Some(k) => {
                let hint = k
                    .as_str()
                    .and_then(KindInfo::lookup)
                    .map(|i| format!(" (did you mean {}?)", i.kind))
                    .unwrap_or_default();
                format!("unknown kind {k}{hint}: haswarm serves {}", known())
            }
        };
        return Err(shape("kind", message));
    };
    let mut resource = (info.from_json)(raw).map_err(|e| {
        let path = e.path().to_string();
        shape(&path, with_suggestion(e.inner().to_string()))
    })?;
    resource.apply_defaults();
    Ok(resource)
}

#[cfg(test)]
mod tests;
