//! Manifest generators "near the schema" and the properties every parse must
//! keep, shared by `tests/fuzz.rs` (a bounded number of cases, in CI) and
//! `benches/fuzz.rs` (many more, with figures).
//!
//! Generated manifests start from the real ones (`examples/*.yaml`,
//! `tests/bad/*.yaml`) and from documents built by walking each kind's JSON
//! Schema, then get mutated: keys dropped, added or misspelt, values replaced
//! by wrong types, huge, negative, empty, unicode or very long ones, values
//! nested past the depth limit; rendered as block YAML, flow YAML or JSON, with
//! anchors and aliases, comments and several documents; and finally damaged as
//! text (tokens and random characters inserted, lines duplicated, dropped or
//! swapped, tabs, CR line breaks, truncation). Most randomness is read from a
//! plain `Vec<u32>` ([`Entropy`]), so proptest shrinks a failure towards
//! fewer and simpler mutations.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use haswarm_crds::manifest::{self, ErrorKind, Limits, ManifestError, ParsedDocument, Position};
use haswarm_crds::validate::{Catalog, EmptyCatalog};
use haswarm_crds::{AnyResource, KINDS};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};
use serde_json::{Map, Value};

/// The environment variable that sets how many cases each property runs.
pub const CASES_VAR: &str = "HASWARM_FUZZ_CASES";

/// Cases per property: `HASWARM_FUZZ_CASES` when set (read once), else `default`.
pub fn cases(default: u32) -> u32 {
    static FROM_ENV: OnceLock<Option<u32>> = OnceLock::new();
    FROM_ENV
        .get_or_init(|| {
            let v = std::env::var(CASES_VAR).ok()?;
            Some(
                v.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{CASES_VAR}={v:?} is not a number of cases")),
            )
        })
        .unwrap_or(default)
}

/// The proptest configuration: `cases` cases, no failure files written into
/// the source tree (a failure prints its minimal input instead), bounded
/// shrinking.
pub fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    }
}

/// One generated input: the text and the limits it is parsed under.
#[derive(Clone, Debug)]
pub struct Case {
    /// What a manifest file would hold.
    pub text: String,
    /// The parser's limits (the defaults, or tight ones so that limit errors happen).
    pub limits: Limits,
}

/// What one case gave.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Resources parsed (when parsing succeeded).
    pub resources: usize,
    /// The kind of every error, from parsing or validation.
    pub errors: Vec<ErrorKind>,
    /// How long parsing and validation took.
    pub elapsed: Duration,
}

/// One parse (with validation) may take this long at most: far more than any
/// generated input needs (tens of milliseconds optimized), so that only
/// runaway behaviour trips it, even on a loaded machine.
pub const SLOW: Duration = if cfg!(debug_assertions) {
    Duration::from_secs(30)
} else {
    Duration::from_secs(3)
};

// ---------------------------------------------------------------------------
// The corpus: real manifests, their fragments, names and values.

/// What the generators draw from, read once.
#[derive(Debug)]
pub struct Corpus {
    /// `examples/*.yaml`, parsed.
    examples: Vec<Example>,
    /// Texts of every example and bad manifest (but the alias bomb, see `load`).
    texts: Vec<String>,
    /// Every document of those texts that is well-formed YAML, as JSON.
    documents: Vec<Value>,
    /// The documents of the examples (all valid), as JSON.
    example_documents: Vec<Value>,
    /// Every value found anywhere in those documents.
    fragments: Vec<Value>,
    /// The JSON Schema of each kind.
    schemas: Vec<Value>,
    /// Every property name of the schemas and the documents.
    keys: Vec<String>,
    /// String values seen under each key.
    strings_by_key: HashMap<String, Vec<String>>,
    /// Every string value seen, plus awkward ones.
    strings: Vec<String>,
    /// Tokens for text-level damage and token soup.
    tokens: Vec<String>,
}

/// Strings that trip parsers and validators: YAML's special words, numbers
/// that are not, quantities, separators, control and invisible characters.
const AWKWARD_STRINGS: &[&str] = &[
    "", " ", "-", "~", "null", "true", "yes", "On", "0755", "012", "1e400", ".inf", ".nan", "0x1F",
    "-0", "3", "-1", "5s", "0s", "-5s", "1h30m", "1Gi", "0Mi", "500m", "0.5", "==", "a b", ":",
    "a: b", "#", "{", "[]", "'", "\"", "\\", "\n", "\t", "\r\n", "\0", "é", "Ñame", "🦀",
    "\u{200b}", "\u{feff}", "\u{85}", "\u{2028}", "\u{fffd}", "v1alpha1", "pg", "cache", "a", "A",
    "-a", "a-", "a_b", "9a", "/", "/tmp", "/etc", "../up", "[::1]", "main", ":tag", "a b:c",
];

const AWKWARD_LONGER_STRINGS: &[&str] = &[
    "日本語",
    "999999999999Ti",
    "node.role==worker",
    "node.role=worker",
    "\u{202e}rtl",
    "haswarm.io/v1alpha1",
    "haswarm.io/v1",
    "PostgresCluster",
    "postgrescluster",
    "RedisSentinelGroup",
    "SharedVolume",
    "GitSource",
    "relative/path",
    "nfs.example",
    "192.0.2.10",
    "https://git.example/x.git",
    "git@example:x.git",
    "redis:7.2",
];

/// Pieces of YAML syntax and of values, for token soup and text damage.
const TOKENS: &[&str] = &[
    ": ", ":", "\n", "  ", "    ", "- ", "-", "---\n", "--- ", "...\n", "? ", "{", "}", "[", "]",
    ", ", "&a ", "*a", "&b ", "*b", "<<: *a", "<<: ", "!!str ", "!!int ", "!!map ", "!!seq ",
    "!custom ", "'", "\"", "''", "\\", "\\u12", "\\x", "|", "|-", "|+2", ">", ">-", "#", " # c",
    "\t", "\r", "\r\n", "\u{feff}", "\0", "~", "null", "true", "false", "yes", "0x1F", "0o17",
    "0755", "1e400", "-1", ".inf", ".nan", "3", "5s", "1Gi", "500m", "é", "日本", "🦀", "\u{202e}",
    "\u{200b}", "\u{85}", "\u{2028}", "\u{7f}",
];

const LONGER_TOKENS: &[&str] = &[
    "!!binary ",
    "!<tag:yaml.org,2002:str> ",
    "%YAML 1.2\n",
    "%YAML 1.1\n---\n",
    "%TAG ! tag:x,2000:\n",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775809",
    "node.role==worker",
    "\u{1b}[31m",
];

/// One file of `examples/`, with what parsing and validating it gave.
#[derive(Debug)]
struct Example {
    name: String,
    documents: Vec<ParsedDocument>,
    rules: Vec<(Option<String>, Option<&'static str>)>,
}

/// The rules broken by `docs` (none for an example), and where.
fn broken_rules(docs: &[ParsedDocument]) -> Vec<(Option<String>, Option<&'static str>)> {
    manifest::validate_batch(docs, &EmptyCatalog)
        .into_iter()
        .map(|e| (e.path, e.rule))
        .collect()
}

/// The corpus, built on first use.
pub fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(Corpus::load)
}

/// The name and text of every `*.yaml` file in `dir`, by name.
fn yaml_files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            let name = f.file_name().unwrap_or_default().to_string_lossy();
            let text = std::fs::read_to_string(f).expect("readable manifest");
            (name.into_owned(), text)
        })
        .collect()
}

impl Corpus {
    fn load() -> Self {
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let example_files = yaml_files(&crate_dir.join("../examples"));
        let examples: Vec<String> = example_files.iter().map(|(_, t)| t.clone()).collect();
        // Not the hostile manifests refused by a limit (the alias bomb): what
        // they cost is the node budget itself (about 0.2 s optimized, seconds in
        // a debug build), damaged copies would take most of a run, and
        // tests/corpus.rs covers them.
        let bad: Vec<String> = yaml_files(&crate_dir.join("tests/bad"))
            .into_iter()
            .map(|(_, t)| t)
            .filter(|t| !t.starts_with("# expect: refused"))
            .collect();
        assert!(!examples.is_empty() && !bad.is_empty(), "no seed manifests");
        let texts: Vec<String> = examples.iter().chain(&bad).cloned().collect();

        // The seeds as JSON, read as `manifest::parse` reads them, under
        // budgets (one bad manifest is an alias bomb).
        let options = serde_saphyr::options! {
            budget: serde_saphyr::budget! {
                max_aliases: 50,
                max_nodes: 5_000,
                max_depth: 64,
            },
            strict_booleans: true,
            leading_zero_numbers_as_strings: true,
        };
        let documents_of = |texts: &[String]| -> Vec<Value> {
            texts
                .iter()
                .filter_map(|t| {
                    serde_saphyr::from_multiple_with_options::<Value>(t, options.clone()).ok()
                })
                .flatten()
                .filter(|d| !d.is_null())
                .collect()
        };
        let documents = documents_of(&texts);
        let example_documents = documents_of(&examples);

        let schemas: Vec<Value> = KINDS
            .iter()
            .map(|k| serde_json::to_value((k.schema)()).expect("a schema is JSON"))
            .collect();

        let mut fragments = Vec::new();
        let mut keys = Vec::new();
        let mut strings_by_key: HashMap<String, Vec<String>> = HashMap::new();
        let mut strings: Vec<String> = AWKWARD_STRINGS
            .iter()
            .chain(AWKWARD_LONGER_STRINGS)
            .map(|s| (*s).to_owned())
            .collect();
        for d in &documents {
            walk(d, None, &mut |key, v| {
                fragments.push(v.clone());
                if let Some(k) = key {
                    keys.push(k.to_owned());
                    if let Value::String(s) = v {
                        strings_by_key
                            .entry(k.to_owned())
                            .or_default()
                            .push(s.clone());
                    }
                }
                if let Value::String(s) = v {
                    strings.push(s.clone());
                }
            });
        }
        for s in &schemas {
            schema_keys(s, &mut keys);
        }
        keys.sort();
        keys.dedup();
        strings.sort();
        strings.dedup();
        let tokens = TOKENS
            .iter()
            .chain(LONGER_TOKENS)
            .map(|t| (*t).to_owned())
            .chain(keys.iter().cloned())
            .chain(KINDS.iter().map(|k| k.kind.to_owned()))
            .collect();
        let examples = example_files
            .into_iter()
            .map(|(name, text)| {
                let documents = manifest::parse(&name, &text, &Limits::default())
                    .unwrap_or_else(|e| panic!("{name}: {e:?}"));
                let rules = broken_rules(&documents);
                Example {
                    name,
                    documents,
                    rules,
                }
            })
            .collect();
        Self {
            examples,
            texts,
            documents,
            example_documents,
            fragments,
            schemas,
            keys,
            strings_by_key,
            strings,
            tokens,
        }
    }
}

/// Calls `f` with every value of `v` (and the key it is under).
fn walk<'a>(v: &'a Value, key: Option<&'a str>, f: &mut impl FnMut(Option<&'a str>, &'a Value)) {
    f(key, v);
    match v {
        Value::Array(items) => items.iter().for_each(|x| walk(x, key, f)),
        Value::Object(m) => m.iter().for_each(|(k, x)| walk(x, Some(k), f)),
        _ => {}
    }
}

fn schema_keys(schema: &Value, out: &mut Vec<String>) {
    match schema {
        Value::Object(m) => {
            if let Some(Value::Object(props)) = m.get("properties") {
                out.extend(props.keys().cloned());
            }
            m.values().for_each(|v| schema_keys(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| schema_keys(v, out)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Entropy: choices read from a vector proptest generates and shrinks.

/// A source of choices; all zeros once used up, and zero is always the
/// simplest choice (the first option, no mutation, the shortest length).
#[derive(Debug)]
pub struct Entropy<'a> {
    data: &'a [u32],
    pos: usize,
}

impl<'a> Entropy<'a> {
    /// Choices read from `data`.
    pub fn new(data: &'a [u32]) -> Self {
        Self { data, pos: 0 }
    }

    fn next(&mut self) -> u32 {
        let v = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        v
    }

    /// A number below `n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        let v = self.next() as usize;
        if n == 0 {
            0
        } else {
            v % n
        }
    }

    /// True with about `percent` % probability (false when used up).
    fn chance(&mut self, percent: u32) -> bool {
        self.next() % 100 >= 100 - percent.min(100)
    }

    fn pick<'b, T>(&mut self, xs: &'b [T]) -> &'b T {
        &xs[self.below(xs.len())]
    }
}

// ---------------------------------------------------------------------------
// Values: from the schema, wrong ones, and mutations of documents.

fn resolve<'s>(root: &'s Value, reference: &str) -> Option<&'s Value> {
    let name = reference.strip_prefix("#/definitions/")?;
    root.get("definitions")?.get(name)
}

fn string_for(key: Option<&str>, e: &mut Entropy, c: &Corpus) -> String {
    if let Some(seen) = key.and_then(|k| c.strings_by_key.get(k)) {
        if !e.chance(15) {
            return e.pick(seen).clone();
        }
    }
    if e.chance(10) {
        return long_string(e);
    }
    e.pick(&c.strings).clone()
}

fn long_string(e: &mut Entropy) -> String {
    // Around the lengths rules check (names 40, 63, 64, label keys 253, YAML
    // keys 1024), and one past 64 KiB.
    let n = *e.pick(&[40, 41, 63, 64, 65, 253, 254, 1_025, 5_000, 70_000]);
    let unit = *e.pick(&["x", "é", "🦀", "a-", " "]);
    unit.repeat(n)
}

fn integer(schema: &Map<String, Value>, e: &mut Entropy) -> Value {
    let min = schema.get("minimum").and_then(Value::as_i64);
    let max = schema.get("maximum").and_then(Value::as_i64);
    match e.below(10) {
        0..=5 => {
            let lo = min.unwrap_or(0).max(-5);
            let hi = max.unwrap_or(lo + 10).min(lo + 10).max(lo);
            let span = usize::try_from(hi - lo + 1).unwrap_or(1);
            Value::from(lo + i64::try_from(e.below(span)).unwrap_or(0))
        }
        6 => Value::from(min.unwrap_or(0).saturating_sub(1)),
        7 => Value::from(max.map_or(u64::MAX, |m| {
            u64::try_from(m.saturating_add(1)).unwrap_or(0)
        })),
        _ => wrong_number(e),
    }
}

fn wrong_number(e: &mut Entropy) -> Value {
    match e.below(12) {
        0 => Value::from(-1),
        1 => Value::from(i64::MIN),
        2 => Value::from(i64::MAX),
        3 => Value::from(u64::MAX),
        4 => Value::from(u64::from(u32::MAX) + 1),
        5 => Value::from(65_536),
        6 => Value::from(1e308),
        7 => Value::from(-0.0),
        8 => Value::from(0.5),
        9 => Value::from(f64::MIN_POSITIVE),
        10 => Value::from(0),
        _ => Value::from(i64::from(e.next() as i32)),
    }
}

/// A value of a wrong or awkward type: any scalar, or an empty collection.
fn wrong_value(key: Option<&str>, e: &mut Entropy, c: &Corpus) -> Value {
    match e.below(8) {
        0 => Value::Null,
        1 => Value::Bool(e.chance(50)),
        2 | 3 => wrong_number(e),
        4 => Value::String(string_for(key, e, c)),
        5 => Value::String(long_string(e)),
        6 => Value::Array(vec![]),
        _ => Value::Object(Map::new()),
    }
}

/// A document (or part) following `schema`, mostly.
fn from_schema(
    schema: &Value,
    root: &Value,
    key: Option<&str>,
    e: &mut Entropy,
    c: &Corpus,
    depth: usize,
) -> Value {
    if depth > 16 {
        return Value::Null;
    }
    let Value::Object(s) = schema else {
        return wrong_value(key, e, c);
    };
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        return match resolve(root, r) {
            Some(target) => from_schema(target, root, key, e, c, depth + 1),
            None => wrong_value(key, e, c),
        };
    }
    if let Some(v) = s.get("const") {
        return if e.chance(1) {
            wrong_value(key, e, c)
        } else {
            v.clone()
        };
    }
    if let Some(Value::Array(options)) = s.get("enum") {
        if !options.is_empty() && !e.chance(1) {
            return e.pick(options).clone();
        }
    }
    for combinator in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(branches)) = s.get(combinator) {
            if !branches.is_empty() {
                return from_schema(e.pick(branches), root, key, e, c, depth + 1);
            }
        }
    }
    let ty = match s.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) if !ts.is_empty() => e.pick(ts).as_str().unwrap_or("null"),
        _ if s.contains_key("properties") => "object",
        _ => "",
    };
    if e.chance(1) {
        return wrong_value(key, e, c);
    }
    match ty {
        "object" => {
            let mut out = Map::new();
            let required: Vec<&str> = s
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(Value::Object(props)) = s.get("properties") {
                for (k, p) in props {
                    let wanted = if required.contains(&k.as_str()) {
                        !e.chance(1)
                    } else {
                        k != "status" && depth < 10 && e.chance(30)
                    };
                    if wanted {
                        out.insert(k.clone(), from_schema(p, root, Some(k), e, c, depth + 1));
                    }
                }
            }
            match s.get("additionalProperties") {
                Some(extra @ Value::Object(_)) => {
                    for _ in 0..e.below(3) {
                        let k = if e.chance(50) {
                            e.pick(&c.keys).clone()
                        } else {
                            string_for(None, e, c)
                        };
                        out.insert(k, from_schema(extra, root, key, e, c, depth + 1));
                    }
                }
                _ if e.chance(1) => {
                    out.insert(e.pick(&c.keys).clone(), wrong_value(None, e, c));
                }
                _ => {}
            }
            Value::Object(out)
        }
        "array" => {
            let items = s.get("items").cloned().unwrap_or(Value::Bool(true));
            let n = e.below(4);
            Value::Array(
                (0..n)
                    .map(|_| from_schema(&items, root, key, e, c, depth + 1))
                    .collect(),
            )
        }
        "string" => Value::String(string_for(key, e, c)),
        "integer" => integer(s, e),
        "number" => {
            if e.chance(50) {
                integer(s, e)
            } else {
                wrong_number(e)
            }
        }
        "boolean" => Value::Bool(e.chance(50)),
        "null" => Value::Null,
        _ => wrong_value(key, e, c),
    }
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        Value::Object(m) => m.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// The `n`th value of `v` in pre-order (`v` itself is the 0th).
fn nth_mut<'a>(v: &'a mut Value, n: &mut usize) -> Option<&'a mut Value> {
    if *n == 0 {
        return Some(v);
    }
    *n -= 1;
    match v {
        Value::Array(items) => items.iter_mut().find_map(|x| nth_mut(x, n)),
        Value::Object(m) => m.values_mut().find_map(|x| nth_mut(x, n)),
        _ => None,
    }
}

/// A key as someone might mistype it.
fn typo(key: &str, e: &mut Entropy, c: &Corpus) -> String {
    let chars: Vec<char> = key.chars().collect();
    let i = e.below(chars.len().max(1));
    let mut out = chars.clone();
    match e.below(8) {
        0 if chars.len() > 1 => {
            out.swap(i, (i + 1) % chars.len());
        }
        1 if !chars.is_empty() => {
            out.remove(i);
        }
        2 => out.insert(
            i.min(out.len()),
            *e.pick(&['x', 'e', '_', '-', ' ', 'é', '.']),
        ),
        3 => return key.to_ascii_lowercase(),
        4 => return key.to_ascii_uppercase(),
        5 => {
            // camelCase -> snake_case
            return chars
                .iter()
                .flat_map(|ch| {
                    if ch.is_ascii_uppercase() {
                        vec!['_', ch.to_ascii_lowercase()]
                    } else {
                        vec![*ch]
                    }
                })
                .collect();
        }
        6 => return format!("{key}s"),
        _ => return e.pick(&c.keys).clone(),
    }
    out.into_iter().collect()
}

/// One structural mutation somewhere in `doc`.
fn mutate(doc: &mut Value, e: &mut Entropy, c: &Corpus) {
    let mut n = e.below(count_nodes(doc));
    let Some(node) = nth_mut(doc, &mut n) else {
        return;
    };
    match (e.below(10), &mut *node) {
        (0, Value::Object(m)) if !m.is_empty() => {
            let i = e.below(m.len());
            if let Some(k) = m.keys().nth(i).cloned() {
                m.shift_remove(&k);
            }
        }
        (1, Value::Object(m)) if !m.is_empty() => {
            let i = e.below(m.len());
            let entries: Vec<(String, Value)> = std::mem::take(m).into_iter().collect();
            for (j, (k, v)) in entries.into_iter().enumerate() {
                let k = if j == i { typo(&k, e, c) } else { k };
                m.insert(k, v);
            }
        }
        (2, Value::Object(m)) => {
            let k = e.pick(&c.keys).clone();
            let v = if e.chance(50) {
                e.pick(&c.fragments).clone()
            } else {
                wrong_value(Some(&k), e, c)
            };
            m.insert(k, v);
        }
        (3, Value::Array(items)) if !items.is_empty() => {
            let i = e.below(items.len());
            if e.chance(50) {
                items.remove(i);
            } else {
                let dup = items[i].clone();
                items.insert(i, dup);
            }
        }
        (4, Value::String(s)) => *s = typo(s, e, c),
        (5, _) => {
            // Nest around the depth limit (32 by default).
            let levels = *e.pick(&[2, 8, 30, 31, 32, 33, 40]);
            let as_seq = e.chance(50);
            for _ in 0..levels {
                let inner = node.take();
                *node = if as_seq {
                    Value::Array(vec![inner])
                } else {
                    Value::Object(Map::from_iter([("spec".to_owned(), inner)]))
                };
            }
        }
        (6 | 7, _) => *node = e.pick(&c.fragments).clone(),
        _ => *node = wrong_value(None, e, c),
    }
}

// ---------------------------------------------------------------------------
// Rendering: block YAML, flow YAML, JSON; all exact for valid documents.

/// How a document is written out.
#[derive(Clone, Copy, Debug)]
struct Style {
    /// Spaces per nesting level of block mappings (1-4).
    indent: usize,
    /// Whether block sequences under a key are indented (else they sit at the key's column).
    indent_sequences: bool,
    /// Collections at this depth and below are written in flow style (`{a: 1}`).
    flow_from: usize,
    /// 0: plain scalars where safe, 1: double quotes, 2: single quotes where safe.
    quotes: u8,
    /// Repeated values become an anchor and aliases.
    aliases: bool,
    /// Comments after values and between entries.
    comments: bool,
    /// 0: block YAML, 1: compact JSON, 2: pretty JSON, 3: serde-saphyr's own YAML.
    format: u8,
}

impl Style {
    fn draw(e: &mut Entropy) -> Self {
        Self {
            indent: [2, 4, 1, 3][e.below(4)],
            indent_sequences: !e.chance(40),
            flow_from: if e.chance(30) { e.below(5) } else { usize::MAX },
            quotes: u8::try_from(e.below(3)).unwrap_or(0),
            aliases: e.chance(50),
            comments: e.chance(30),
            format: if e.chance(30) {
                1 + u8::try_from(e.below(3)).unwrap_or(0)
            } else {
                0
            },
        }
    }
}

fn is_plain_safe(s: &str) -> bool {
    let special = ["true", "false", "null", "~"];
    s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '=' | '+' | '-'))
        && !special.iter().any(|w| w.eq_ignore_ascii_case(s))
}

fn scalar(s: &str, quotes: u8) -> String {
    let printable = s
        .chars()
        .all(|c| (' '..='~').contains(&c) || (c > '\u{a0}' && c != '\u{feff}' && c < '\u{fffe}'));
    match quotes {
        0 if is_plain_safe(s) => s.to_owned(),
        2 if printable => format!("'{}'", s.replace('\'', "''")),
        _ => serde_json::to_string(s).expect("a string serializes"),
    }
}

struct Renderer<'e, 'd> {
    style: Style,
    out: String,
    /// Values (as JSON text) seen more than once in the document.
    repeated: HashMap<String, usize>,
    /// Anchors written so far: JSON text -> anchor name.
    anchors: HashMap<String, String>,
    e: &'e mut Entropy<'d>,
}

impl Renderer<'_, '_> {
    fn leaf(&self, v: &Value) -> Option<String> {
        Some(match v {
            Value::Null => "null".to_owned(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::String(s) => scalar(s, self.style.quotes),
            Value::Array(a) if a.is_empty() => "[]".to_owned(),
            Value::Object(m) if m.is_empty() => "{}".to_owned(),
            _ => return None,
        })
    }

    fn flow(&self, v: &Value) -> String {
        match v {
            Value::Array(items) => {
                let parts: Vec<String> = items.iter().map(|x| self.flow(x)).collect();
                format!("[{}]", parts.join(", "))
            }
            Value::Object(m) if !m.is_empty() => {
                let parts: Vec<String> = m
                    .iter()
                    .map(|(k, x)| format!("{}: {}", scalar(k, self.style.quotes), self.flow(x)))
                    .collect();
                format!("{{{}}}", parts.join(", "))
            }
            other => self.leaf(other).unwrap_or_default(),
        }
    }

    /// What follows `key:` or `- ` on the same line when `v` fits there
    /// (a scalar, a flow collection or an alias), else the anchor (if any)
    /// of the block collection that follows on the next lines.
    fn inline(&mut self, v: &Value, depth: usize) -> Result<String, String> {
        let leaf = self.leaf(v);
        if self.style.aliases && !v.is_null() {
            let text = v.to_string();
            if let Some(name) = self.anchors.get(&text) {
                return Ok(format!("*{name}"));
            }
            if self.repeated.get(&text).is_some_and(|n| *n > 1) {
                let name = format!("a{}", self.anchors.len());
                self.anchors.insert(text, name.clone());
                return match leaf {
                    Some(leaf) => Ok(format!("&{name} {leaf}")),
                    None => Err(format!("&{name}")),
                };
            }
        }
        if let Some(leaf) = leaf {
            return Ok(leaf);
        }
        if depth >= self.style.flow_from {
            return Ok(self.flow(v));
        }
        Err(String::new())
    }

    fn comment(&mut self) -> &'static str {
        if self.style.comments && self.e.chance(30) {
            " # note: ok"
        } else {
            ""
        }
    }

    fn block(&mut self, v: &Value, indent: usize, depth: usize) {
        let pad = " ".repeat(indent);
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if self.style.comments && self.e.chance(10) {
                        let about = k.escape_debug();
                        self.out.push_str(&format!("{pad}# about {about}\n"));
                    }
                    let key = scalar(k, self.style.quotes);
                    match self.inline(x, depth + 1) {
                        Ok(text) => {
                            let c = self.comment();
                            self.out.push_str(&format!("{pad}{key}: {text}{c}\n"));
                        }
                        Err(anchor) => {
                            let sep = if anchor.is_empty() { "" } else { " " };
                            self.out.push_str(&format!("{pad}{key}:{sep}{anchor}\n"));
                            let inner = if x.is_array() && !self.style.indent_sequences {
                                indent
                            } else {
                                indent + self.style.indent
                            };
                            self.block(x, inner, depth + 1);
                        }
                    }
                }
            }
            Value::Array(items) => {
                for x in items {
                    match self.inline(x, depth + 1) {
                        Ok(text) => {
                            let c = self.comment();
                            self.out.push_str(&format!("{pad}- {text}{c}\n"));
                        }
                        Err(anchor) if anchor.is_empty() && self.e.chance(70) => {
                            // Compact: `- key: value` / `- - item`.
                            let start = self.out.len();
                            self.block(x, indent + 2, depth + 1);
                            self.out
                                .replace_range(start..start + indent + 2, &format!("{pad}- "));
                        }
                        Err(anchor) => {
                            let sep = if anchor.is_empty() { "" } else { " " };
                            self.out.push_str(&format!("{pad}-{sep}{anchor}\n"));
                            self.block(x, indent + 2, depth + 1);
                        }
                    }
                }
            }
            other => {
                let text = self.leaf(other).unwrap_or_default();
                self.out.push_str(&format!("{pad}{text}\n"));
            }
        }
    }
}

fn count_repeats(v: &Value, out: &mut HashMap<String, usize>) {
    match v {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => {
            *out.entry(v.to_string()).or_default() += 1;
        }
        Value::Array(items) if !items.is_empty() => {
            *out.entry(v.to_string()).or_default() += 1;
            items.iter().for_each(|x| count_repeats(x, out));
        }
        Value::Object(m) if !m.is_empty() => {
            *out.entry(v.to_string()).or_default() += 1;
            m.values().for_each(|x| count_repeats(x, out));
        }
        _ => {}
    }
}

/// One document as text, in `style`. Exact: it parses back to `doc`.
fn render(doc: &Value, style: Style, e: &mut Entropy) -> String {
    match style.format {
        1 => return format!("{doc}\n"),
        2 => return serde_json::to_string_pretty(doc).expect("JSON") + "\n",
        3 => {
            let mut text = serde_saphyr::to_string(doc).unwrap_or_else(|_| doc.to_string());
            if !text.ends_with('\n') {
                text.push('\n');
            }
            return text;
        }
        _ => {}
    }
    let mut repeated = HashMap::new();
    if style.aliases {
        count_repeats(doc, &mut repeated);
    }
    let mut r = Renderer {
        style,
        out: String::new(),
        repeated,
        anchors: HashMap::new(),
        e,
    };
    match r.leaf(doc) {
        Some(text) => r.out.push_str(&format!("{text}\n")),
        None if style.flow_from == 0 => r.out.push_str(&format!("{}\n", r.flow(doc))),
        None => r.block(doc, 0, 0),
    }
    r.out
}

/// Documents joined into one stream, each in its own style.
fn render_stream(docs: &[Value], e: &mut Entropy) -> String {
    let mut out = String::new();
    for (i, d) in docs.iter().enumerate() {
        let separator = match (i, e.below(4)) {
            (0, 0 | 1) => "",
            (0, _) => "---\n",
            (_, 3) => "...\n---\n",
            _ => "---\n",
        };
        out.push_str(separator);
        let style = Style::draw(e);
        out.push_str(&render(d, style, e));
    }
    out
}

// ---------------------------------------------------------------------------
// Text damage.

fn random_char(e: &mut Entropy) -> char {
    match e.below(3) {
        0 => char::from(u8::try_from(e.below(128)).unwrap_or(b' ')),
        1 => char::from_u32(e.next() % 0x11_0000).unwrap_or('\u{fffd}'),
        _ => *e.pick(&[
            '\t', '\r', '\n', '\0', '\u{85}', '\u{a0}', '\u{feff}', '\u{fffe}',
        ]),
    }
}

/// One piece of text-level damage.
fn damage(text: &mut String, e: &mut Entropy, c: &Corpus) {
    let chars = text.chars().count();
    let nth = |text: &str, n: usize| text.char_indices().nth(n).map_or(text.len(), |(i, _)| i);
    let at = nth(text, e.below(chars + 1));
    match e.below(12) {
        0 | 1 => text.insert_str(at, e.pick::<String>(&c.tokens)),
        2 => text.insert(at, random_char(e)),
        3 => {
            let end = at + nth(&text[at..], 1 + e.below(16));
            text.replace_range(at..end, "");
        }
        4 => text.truncate(at),
        9 => *text = text.replace('\n', if e.chance(50) { "\r\n" } else { "\r" }),
        op @ 5..=10 => {
            let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
            if lines.is_empty() {
                return;
            }
            let line = e.below(lines.len());
            match op {
                5 => {
                    let dup = lines[line].clone();
                    lines.insert(line, dup);
                }
                6 => {
                    lines.remove(line);
                }
                7 => {
                    let other = e.below(lines.len());
                    lines.swap(line, other);
                }
                8 => {
                    let l = &mut lines[line];
                    if l.starts_with(' ') {
                        l.replace_range(0..1, "\t");
                    } else {
                        l.insert(0, '\t');
                    }
                }
                _ => {
                    let l = &mut lines[line];
                    if l.starts_with(' ') && e.chance(50) {
                        l.remove(0);
                    } else {
                        l.insert(0, ' ');
                    }
                }
            }
            *text = lines.concat();
        }
        _ => {
            let bytes: Vec<u8> = (0..1 + e.below(8))
                .map(|_| u8::try_from(e.next() & 0xff).unwrap_or(0))
                .collect();
            text.insert_str(at, &String::from_utf8_lossy(&bytes));
        }
    }
}

fn limits(e: &mut Entropy) -> Limits {
    if e.chance(10) {
        Limits {
            max_depth: 1 + e.below(8),
            max_documents: 1 + e.below(3),
            max_nodes: 5 + e.below(200),
            max_aliases: e.below(4),
            ..Limits::default()
        }
    } else {
        Limits::default()
    }
}

/// A manifest near the schema, from a vector of choices.
pub fn near_schema_case(data: &[u32]) -> Case {
    let c = corpus();
    let mut e = Entropy::new(data);
    let n = if e.chance(30) { 2 + e.below(2) } else { 1 };
    let docs: Vec<Value> = (0..n)
        .map(|_| {
            let mut doc = match e.below(3) {
                0 => e.pick(&c.example_documents).clone(),
                1 => {
                    let i = e.below(c.schemas.len());
                    from_schema(&c.schemas[i], &c.schemas[i], None, &mut e, c, 0)
                }
                _ => e.pick(&c.documents).clone(),
            };
            let mutations = if e.chance(60) { 1 + e.below(3) } else { 0 };
            for _ in 0..mutations {
                mutate(&mut doc, &mut e, c);
            }
            doc
        })
        .collect();
    let mut text = render_stream(&docs, &mut e);
    let damages = if e.chance(40) { 1 + e.below(2) } else { 0 };
    for _ in 0..damages {
        damage(&mut text, &mut e, c);
    }
    Case {
        text,
        limits: limits(&mut e),
    }
}

/// Manifests near the schema: real and schema-built documents, mutated,
/// rendered in varied styles, damaged as text.
pub fn near_schema() -> impl Strategy<Value = Case> {
    prop::collection::vec(any::<u32>(), 0..400).prop_map(|data| near_schema_case(&data))
}

/// Text with little or no structure: a real manifest damaged as text,
/// YAML token soup, arbitrary strings and bytes.
pub fn random_text() -> impl Strategy<Value = Case> {
    let c = corpus();
    let damaged = (
        prop::sample::select(c.texts.clone()),
        prop::collection::vec(any::<u32>(), 0..64),
    )
        .prop_map(|(mut text, data)| {
            let mut e = Entropy::new(&data);
            for _ in 0..1 + e.below(6) {
                damage(&mut text, &mut e, corpus());
            }
            text
        });
    let soup = prop::collection::vec(prop::sample::select(c.tokens.clone()), 0..120)
        .prop_map(|t| t.concat());
    let bytes = prop::collection::vec(any::<u8>(), 0..400)
        .prop_map(|b| String::from_utf8_lossy(&b).into_owned());
    prop_oneof![
        3 => damaged,
        3 => soup,
        1 => any::<String>(),
        1 => "(?s).{0,400}",
        1 => bytes,
    ]
    .prop_map(|text| Case {
        text,
        limits: Limits::default(),
    })
}

/// An example file's documents written out again in other styles.
#[derive(Clone, Debug)]
pub struct Rerendered {
    /// The example's file name.
    pub example: &'static str,
    /// Its documents rendered anew.
    pub text: String,
    index: usize,
}

/// Every example, rewritten in a random style per document.
pub fn rerendered_examples() -> impl Strategy<Value = Rerendered> {
    (
        0..corpus().examples.len(),
        prop::collection::vec(any::<u32>(), 0..200),
    )
        .prop_map(|(index, data)| {
            let example = &corpus().examples[index];
            let docs: Vec<Value> = example.documents.iter().map(|d| d.raw.clone()).collect();
            Rerendered {
                example: &example.name,
                text: render_stream(&docs, &mut Entropy::new(&data)),
                index,
            }
        })
}

// ---------------------------------------------------------------------------
// Properties.

/// A catalog in which every reference resolves (`apply` against a full store).
struct Everything;

impl Catalog for Everything {
    fn contains(&self, _: &str, _: &str) -> bool {
        true
    }
    fn scope(&self) -> &str {
        "in the store"
    }
}

/// A text and where its lines start, with YAML's line breaks (LF, CR LF, CR).
#[derive(Debug)]
pub struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    /// The lines of `text`.
    pub fn new(text: &'a str) -> Self {
        let b = text.as_bytes();
        let mut starts = vec![0];
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'\r' if b.get(i + 1) == Some(&b'\n') => {
                    starts.push(i + 2);
                    i += 1;
                }
                b'\r' | b'\n' => starts.push(i + 1),
                _ => {}
            }
            i += 1;
        }
        Self { text, starts }
    }
}

/// Columns before `offset` on the line starting at `start`, as the parser
/// counts them: characters, but not byte order marks starting the line (as
/// they may before a document).
fn columns(text: &str, start: usize, offset: usize) -> usize {
    let before = text.get(start..offset).unwrap_or_default();
    before.trim_start_matches('\u{feff}').chars().count()
}

/// Checks that `p` names a place in the text: line and column (1-based, the
/// column in characters) within the text, the byte range within the text and
/// on character boundaries, and the byte offset at that line and column.
pub fn check_position(lines: &Lines, p: &Position) -> Result<(), String> {
    let (text, starts) = (lines.text, &lines.starts);
    let line = usize::try_from(p.line).unwrap_or(usize::MAX);
    if line < 1 || line > starts.len() {
        return Err(format!(
            "line {} of a text of {} lines",
            p.line,
            starts.len()
        ));
    }
    let start = starts[line - 1];
    let end = starts.get(line).map_or(text.len(), |next| {
        text[..*next]
            .trim_end_matches(['\r', '\n'])
            .len()
            .max(start)
    });
    let width = columns(text, start, end);
    if p.column < 1 || p.column > width as u64 + 1 {
        return Err(format!(
            "column {} of line {} of {} characters",
            p.column, p.line, width
        ));
    }
    let Some(stop) = p.offset.checked_add(p.len) else {
        return Err(format!("offset {} + len {} overflows", p.offset, p.len));
    };
    if stop > text.len() || !text.is_char_boundary(p.offset) || !text.is_char_boundary(stop) {
        return Err(format!(
            "bytes {}..{stop} of a text of {} bytes (or not on character boundaries)",
            p.offset,
            text.len()
        ));
    }
    let at_line = starts.partition_point(|s| *s <= p.offset).max(1);
    let at_column = columns(text, starts[at_line - 1], p.offset) + 1;
    if (at_line, at_column as u64) != (line, p.column) {
        return Err(format!(
            "offset {} is at {at_line}:{at_column}, not at {}:{}",
            p.offset, p.line, p.column
        ));
    }
    Ok(())
}

fn check_error(lines: &Lines, e: &ManifestError) -> Result<(), TestCaseError> {
    let shown = e.to_string();
    prop_assert!(
        !e.message.trim().is_empty(),
        "an error without a message: {e:?}"
    );
    prop_assert_eq!(e.source_name.as_str(), "fuzz.yaml");
    let Some(p) = e.position else {
        return Err(TestCaseError::fail(format!(
            "an error without a position: {shown}"
        )));
    };
    if let Err(why) = check_position(lines, &p) {
        return Err(TestCaseError::fail(format!("{shown}: {p:?}: {why}")));
    }
    if e.kind == ErrorKind::Invalid {
        prop_assert!(e.path.is_some() && e.rule.is_some(), "{}", shown);
    }
    Ok(())
}

fn check_document(lines: &Lines, d: &ParsedDocument) -> Result<(), TestCaseError> {
    let mut paths = vec![String::new()];
    collect_paths(&d.raw, "", &mut paths);
    for path in paths.iter().take(500) {
        let p = d.position_of(path);
        if let Err(why) = check_position(lines, &p) {
            return Err(TestCaseError::fail(format!(
                "document {} field {path:?}: {p:?}: {why}",
                d.index
            )));
        }
    }
    // What the API stores and `get -o json` shows reads back as the same resource.
    let again = manifest::resource_from_json(d.resource.to_json());
    prop_assert!(
        again.as_ref() == Ok(&d.resource),
        "document {}: its JSON reads back as {:?}",
        d.index,
        again
    );
    Ok(())
}

fn collect_paths(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                out.push(p.clone());
                collect_paths(x, &p, out);
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                let p = format!("{path}[{i}]");
                out.push(p.clone());
                collect_paths(x, &p, out);
            }
        }
        _ => {}
    }
}

/// Parses and validates `case` as `haswarmctl validate` and `apply` do, and
/// checks what came out: resources, or errors that each have a message and a
/// position inside the text; every position of a parsed document lies inside
/// the text too. Panics are caught by proptest.
pub fn check(case: &Case) -> Result<Outcome, TestCaseError> {
    let start = Instant::now();
    let parsed = manifest::parse("fuzz.yaml", &case.text, &case.limits);
    let (resources, errors) = match &parsed {
        Ok(docs) => {
            let mut errors = manifest::validate_batch(docs, &EmptyCatalog);
            errors.extend(manifest::validate_batch(docs, &Everything));
            (docs.len(), errors)
        }
        Err(errors) => {
            prop_assert!(!errors.is_empty(), "parse failed without an error");
            (0, errors.clone())
        }
    };
    let elapsed = start.elapsed();
    prop_assert!(
        elapsed < SLOW,
        "parsing {} bytes took {elapsed:?}",
        case.text.len()
    );
    let lines = Lines::new(&case.text);
    for e in &errors {
        check_error(&lines, e)?;
    }
    if let Ok(docs) = &parsed {
        for d in docs {
            check_document(&lines, d)?;
        }
    }
    Ok(Outcome {
        resources,
        errors: errors.iter().map(|e| e.kind).collect(),
        elapsed,
    })
}

fn summary(docs: &[ParsedDocument]) -> Vec<&AnyResource> {
    docs.iter().map(|d| &d.resource).collect()
}

/// An example written in another style parses to the same resources, and
/// validates the same.
pub fn check_round_trip(r: &Rerendered) -> Result<(), TestCaseError> {
    let example = &corpus().examples[r.index];
    let after = manifest::parse(r.example, &r.text, &Limits::default())
        .map_err(|e| TestCaseError::fail(format!("the rewritten example is refused: {e:#?}")))?;
    prop_assert_eq!(summary(&example.documents), summary(&after));
    let lines = Lines::new(&r.text);
    for (a, b) in example.documents.iter().zip(&after) {
        prop_assert_eq!(&a.raw, &b.raw);
        check_document(&lines, b)?;
    }
    prop_assert_eq!(&example.rules, &broken_rules(&after));
    Ok(())
}
