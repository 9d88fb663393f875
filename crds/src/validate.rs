//! Semantic validation: the rules a JSON Schema cannot say. Every error names
//! the field path (as written in YAML, e.g. `spec.sentinels.count`), a stable
//! rule id, and a message that says what is wrong and why the rule exists.

use std::fmt;

/// A dotted field path as written in YAML: `spec.users[2].name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(String);

impl FieldPath {
    /// The path of the whole document.
    pub fn root() -> Self {
        Self(String::new())
    }

    /// The path of field `key` below this one.
    pub fn key(&self, key: &str) -> Self {
        if self.0.is_empty() {
            Self(key.to_owned())
        } else {
            Self(format!("{}.{key}", self.0))
        }
    }

    /// The path of element `i` of the sequence at this path.
    pub fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "." } else { &self.0 })
    }
}

impl From<&str> for FieldPath {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// The rules about a map's key rather than its value: their errors point
/// at the key as written.
pub const KEY_RULES: [&str; 2] = ["metadata-key", "label-key"];

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message} [rule: {rule}]")]
pub struct FieldError {
    /// Where, as a YAML field path.
    pub path: FieldPath,
    /// Stable id of the rule (kebab-case), for scripts and API clients.
    pub rule: &'static str,
    /// What is wrong and why the rule exists.
    pub message: String,
}

/// Collects every broken rule of a resource rather than stopping at the first,
/// so one run of `validate` shows all that needs fixing.
#[derive(Debug, Default)]
pub struct Report {
    errors: Vec<FieldError>,
}

impl Report {
    /// Records a broken rule.
    pub fn push(&mut self, path: FieldPath, rule: &'static str, message: impl Into<String>) {
        self.errors.push(FieldError {
            path,
            rule,
            message: message.into(),
        });
    }

    /// Records a broken rule when `ok` is false.
    pub fn check(
        &mut self,
        ok: bool,
        path: impl FnOnce() -> FieldPath,
        rule: &'static str,
        message: impl FnOnce() -> String,
    ) {
        if !ok {
            self.push(path(), rule, message());
        }
    }

    /// The errors found, in the order found.
    pub fn into_errors(self) -> Vec<FieldError> {
        self.errors
    }
}

/// What validation may look up beyond the resource itself: the other
/// resources a reference can point to.
pub trait Catalog {
    /// Whether a resource of `kind` named `name` exists (in the same batch or the store).
    fn contains(&self, kind: &str, name: &str) -> bool;
    /// Where the catalog looked, for "not found" messages ("among the documents given").
    fn scope(&self) -> &str;
}

/// A catalog that knows nothing: every reference is unresolved.
#[derive(Debug, Default)]
pub struct EmptyCatalog;

impl Catalog for EmptyCatalog {
    fn contains(&self, _: &str, _: &str) -> bool {
        false
    }
    fn scope(&self) -> &str {
        "anywhere"
    }
}

/// Validation of a swarm constraint expression such as `node.role==manager`.
pub(crate) fn check_constraint(report: &mut Report, path: FieldPath, c: &str) {
    let ok = c
        .split_once("==")
        .or_else(|| c.split_once("!="))
        .is_some_and(|(l, r)| !l.trim().is_empty() && !r.trim().is_empty());
    report.check(
        ok,
        || path,
        "swarm-constraint",
        || {
            format!(
                "{c:?} is not a Swarm placement constraint: write ATTRIBUTE==VALUE or ATTRIBUTE!=VALUE, e.g. \"node.role==worker\" or \"node.labels.disk==ssd\""
            )
        },
    );
}

/// Keys of node labels and label selectors: Docker accepts almost anything, but
/// a key with spaces or `=` cannot be written in a constraint.
pub(crate) fn check_label_key(report: &mut Report, path: FieldPath, key: &str) {
    let ok = !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'));
    report.check(
        ok,
        || path,
        "label-key",
        || format!("label key {key:?} must be 1-253 characters of letters, digits, '.', '-', '_' or '/'"),
    );
}

/// Whether `s` is a Kubernetes "qualified name" part: 1-63 characters of
/// letters, digits, `-`, `_` and `.`, starting and ending with a letter or
/// digit.
fn is_qualified_name(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    (1..=63).contains(&s.len())
        && edge(s.chars().next())
        && edge(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Whether `s` is a DNS subdomain (RFC 1123): at most 253 characters, dot
/// separated labels of lowercase letters, digits and `-`, each starting and
/// ending with a letter or digit.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            let edge =
                |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            edge(l.chars().next())
                && edge(l.chars().last())
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// Keys of `metadata.labels` and `metadata.annotations`, as Kubernetes
/// checks them: an optional prefix that is a DNS subdomain and a `/`, then
/// a name of 1-63 characters of `[A-Za-z0-9._-]` that starts and ends with
/// a letter or digit (e.g. `app`, `haswarm.io/paused`). Selectors
/// (`get -l key=value`) and tools that copy the labels rely on that form.
pub(crate) fn check_metadata_key(report: &mut Report, path: FieldPath, key: &str) {
    let ok = match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_qualified_name(name),
        None => is_qualified_name(key),
    };
    report.check(
        ok,
        || path,
        "metadata-key",
        || {
            format!(
                "{key:?} is not a valid key: write [PREFIX/]NAME, where NAME is 1-63 letters, digits, '-', '_' or '.' starting and ending with a letter or digit, and PREFIX a DNS subdomain (lowercase, e.g. example.com), as Kubernetes checks keys"
            )
        },
    );
}

/// Values of `metadata.labels`, as Kubernetes checks them: empty, or 1-63
/// characters of `[A-Za-z0-9._-]` starting and ending with a letter or
/// digit, so that a selector can name them.
pub(crate) fn check_label_value(report: &mut Report, path: FieldPath, value: &str) {
    report.check(
        value.is_empty() || is_qualified_name(value),
        || path,
        "label-value",
        || format!("{value:?} is not a valid label value: empty, or 1-63 letters, digits, '-', '_' or '.' starting and ending with a letter or digit"),
    );
}

/// The user-set parts of the metadata that the name's own type does not
/// check: label keys and values, annotation keys.
pub(crate) fn check_metadata(report: &mut Report, meta: &crate::meta::ObjectMeta) {
    let root = FieldPath::root().key("metadata");
    for (k, v) in &meta.labels {
        let path = root.key("labels").key(k);
        check_metadata_key(report, path.clone(), k);
        check_label_value(report, path, v);
    }
    for k in meta.annotations.keys() {
        check_metadata_key(report, root.key("annotations").key(k), k);
    }
}

/// A Swarm secret or config name: 1-64 characters, alphanumerics plus `-`, `_`, `.`.
pub(crate) fn check_swarm_object_name(report: &mut Report, path: FieldPath, name: &str) {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    report.check(
        ok,
        || path,
        "swarm-object-name",
        || format!("{name:?} is not a valid Swarm secret name: 1-64 letters, digits, '.', '-' or '_', starting with a letter or digit"),
    );
}

/// Image references: no spaces, not empty. The engine does the rest.
pub(crate) fn check_image(report: &mut Report, path: FieldPath, image: &str) {
    let ok =
        !image.is_empty() && !image.chars().any(char::is_whitespace) && !image.starts_with(':');
    report.check(
        ok,
        || path,
        "image-reference",
        || format!("{image:?} is not an image reference: write REPOSITORY[:TAG][@DIGEST], e.g. \"redis:7.2\""),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_like_yaml() {
        let p = FieldPath::root()
            .key("spec")
            .key("users")
            .index(2)
            .key("name");
        assert_eq!(p.to_string(), "spec.users[2].name");
        assert_eq!(FieldPath::root().to_string(), ".");
    }

    #[test]
    fn metadata_keys_and_label_values_follow_kubernetes() {
        // (key, value, valid key, valid value)
        let long = "a".repeat(64);
        let table: &[(&str, &str, bool, bool)] = &[
            ("app", "web", true, true),
            ("haswarm.io/paused", "true", true, true),
            ("example.com/app.kubernetes_io-x", "", true, true),
            ("A_b.c-D", "v1.2_3-x", true, true),
            ("bad key with spaces", "v", false, true),
            ("", "v", false, true),
            ("-app", "-v", false, false),
            ("app-", "v-", false, false),
            ("/app", "v", false, true),
            ("example.com/", "v", false, true),
            ("Example.com/app", "v", false, true),
            ("a/b/c", "v", false, true),
            ("ex_ample.com/app", "with space", false, false),
            (&long, &long, false, false),
        ];
        for (key, value, key_ok, value_ok) in table {
            let mut r = Report::default();
            check_metadata_key(&mut r, "k".into(), key);
            assert_eq!(r.into_errors().is_empty(), *key_ok, "key {key:?}");
            let mut r = Report::default();
            check_label_value(&mut r, "v".into(), value);
            assert_eq!(r.into_errors().is_empty(), *value_ok, "value {value:?}");
        }
    }

    #[test]
    fn constraints_need_an_operator() {
        let mut r = Report::default();
        check_constraint(&mut r, "a".into(), "node.role==manager");
        check_constraint(&mut r, "b".into(), "node.labels.x != y");
        check_constraint(&mut r, "c".into(), "node.role=manager");
        check_constraint(&mut r, "d".into(), "==x");
        let e = r.into_errors();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].path.as_str(), "c");
        assert_eq!(e[1].path.as_str(), "d");
    }
}
