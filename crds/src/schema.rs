//! JSON Schemas (draft-07, the dialect yaml-language-server validates) and
//! `explain`, which reads field documentation back out of them.

use serde_json::Value;

use crate::resource::{Kind, KindInfo, Resource};
use crate::API_VERSION;

/// The draft-07 JSON Schema of a whole resource of kind `S`.
pub fn schema_for<S: Kind>() -> schemars::Schema {
    let mut schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<Resource<S>>();
    schema.insert("title".into(), Value::String(S::KIND.into()));
    schema
}

/// The schema as the checked-in file holds it: pretty JSON with a final newline.
pub fn schema_file_text(kind: &KindInfo) -> String {
    let mut s = serde_json::to_string_pretty(&(kind.schema)()).unwrap_or_default();
    s.push('\n');
    s
}

/// Why `explain` could not find a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    /// The first segment names no kind.
    #[error("unknown kind {0:?}: use postgrescluster (pgc), redissentinelgroup (rsg) or sharedvolume (sv)")]
    UnknownKind(String),
    /// A later segment names no field.
    #[error("field {field:?} does not exist in {at}; fields there: {available}")]
    UnknownField {
        /// The missing field.
        field: String,
        /// The path it was looked up in.
        at: String,
        /// The fields that do exist.
        available: String,
    },
}

/// A `$ref`, an `allOf`/`anyOf` wrapper (how schemars writes optional or
/// documented references) or a plain schema, resolved to the schema that has
/// the fields, keeping the outermost description.
fn resolve<'a>(root: &'a Value, mut s: &'a Value) -> &'a Value {
    for _ in 0..16 {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or_default();
            match root.get("definitions").and_then(|d| d.get(name)) {
                Some(t) => s = t,
                None => return s,
            }
            continue;
        }
        let inner = ["allOf", "anyOf", "oneOf"].iter().find_map(|k| {
            s.get(*k)
                .and_then(Value::as_array)
                .and_then(|alts| {
                    alts.iter()
                        .find(|a| a.get("type") != Some(&Value::String("null".into())))
                })
                // Descend only into references and objects: a `oneOf` of
                // constants is an enum and is explained as one.
                .filter(|a| {
                    a.get("$ref").is_some()
                        || a.get("properties").is_some()
                        || a.get("allOf").is_some()
                })
        });
        match inner {
            Some(i) if s.get("properties").is_none() => s = i,
            _ => return s,
        }
    }
    s
}

fn description(s: &Value) -> Option<&str> {
    s.get("description").and_then(Value::as_str)
}

fn type_name(s: &Value) -> String {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        return r.rsplit('/').next().unwrap_or("object").to_owned();
    }
    for k in ["allOf", "anyOf", "oneOf"] {
        if let Some(alts) = s.get(k).and_then(Value::as_array) {
            let names: Vec<String> = alts
                .iter()
                .filter(|a| a.get("type") != Some(&Value::String("null".into())))
                .map(type_name)
                .collect();
            return names.join(" | ");
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        let vals: Vec<String> = e
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        return format!("enum: {}", vals.join(", "));
    }
    if let Some(c) = s.get("const") {
        return format!("const {c}");
    }
    match s.get("type") {
        Some(Value::String(t)) if t == "array" => {
            let item = s.get("items").map(type_name).unwrap_or_default();
            format!("[]{item}")
        }
        Some(Value::String(t)) if t == "object" => match s.get("additionalProperties") {
            Some(ap @ Value::Object(_)) => format!("map[string]{}", type_name(ap)),
            _ => "object".into(),
        },
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" | "),
        _ => {
            // A documented one-variant-per-subschema enum (schemars writes
            // documented unit variants as `oneOf` of consts).
            "object".into()
        }
    }
}

/// Text for `haswarmctl explain KIND[.field.path]`, in the shape of `kubectl explain`.
///
/// # Errors
/// [`ExplainError`] when the kind or a field is unknown.
pub fn explain(path: &str) -> Result<String, ExplainError> {
    let mut segments = path.split('.').filter(|s| !s.is_empty());
    let kind_name = segments.next().unwrap_or_default();
    let kind = KindInfo::lookup(kind_name)
        .ok_or_else(|| ExplainError::UnknownKind(kind_name.to_owned()))?;
    let root: Value = (kind.schema)().into();
    let mut field_schema: &Value = &root;
    let mut walked = vec![kind.kind.to_ascii_lowercase()];
    for seg in segments {
        let here = resolve(&root, field_schema);
        let here = match here.get("items") {
            Some(items) if here.get("properties").is_none() => resolve(&root, items),
            _ => here,
        };
        let props = here.get("properties").and_then(Value::as_object);
        match props.and_then(|p| p.get(seg)) {
            Some(next) => field_schema = next,
            None => {
                let available = props
                    .map(|p| p.keys().cloned().collect::<Vec<_>>().join(", "))
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "none (not an object)".into());
                return Err(ExplainError::UnknownField {
                    field: seg.to_owned(),
                    at: walked.join("."),
                    available,
                });
            }
        }
        walked.push(seg.to_owned());
    }

    let mut out = String::new();
    out.push_str(&format!(
        "KIND:     {}\nVERSION:  {API_VERSION}\n\n",
        kind.kind
    ));
    let target = resolve(&root, field_schema);
    if walked.len() > 1 {
        out.push_str(&format!(
            "FIELD:    {} <{}>\n\n",
            walked.join("."),
            type_name(field_schema)
        ));
    }
    out.push_str("DESCRIPTION:\n");
    let desc = description(field_schema)
        .or_else(|| description(target))
        .unwrap_or("(no description)");
    out.push_str(&wrap(desc, "    "));
    match field_schema.get("default") {
        Some(Value::Object(_) | Value::Array(_)) | None => {}
        Some(d) => out.push_str(&format!("    Default: {d}\n")),
    }
    let target = match target.get("items") {
        Some(items) if target.get("properties").is_none() => resolve(&root, items),
        _ => target,
    };
    if let Some(props) = target.get("properties").and_then(Value::as_object) {
        let required: Vec<&str> = target
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        out.push_str("\nFIELDS:\n");
        for (name, s) in props {
            out.push_str(&field_line(
                &root,
                name,
                s,
                required.contains(&name.as_str()),
            ));
        }
    } else if let Some(variants) = enum_variants(target) {
        out.push_str("\nVALUES:\n");
        for (v, d) in variants {
            out.push_str(&format!("    {v}\n"));
            if let Some(d) = d {
                out.push_str(&wrap(&d, "      "));
            }
        }
    }
    Ok(out)
}

fn field_line(root: &Value, name: &str, s: &Value, required: bool) -> String {
    let mut line = format!("    {name} <{}>", type_name(s));
    if required {
        line.push_str(" -required-");
    }
    if let Some(d) = s.get("default") {
        if !matches!(d, Value::Object(_) | Value::Array(_)) {
            line.push_str(&format!(" (default: {d})"));
        }
    }
    line.push('\n');
    if let Some(d) = description(s).or_else(|| description(resolve(root, s))) {
        line.push_str(&wrap(d, "      "));
    }
    line
}

/// Re-flows text to 80 columns under `indent`, keeping paragraph breaks.
fn wrap(text: &str, indent: &str) -> String {
    let mut out = String::new();
    for para in text.split("\n\n") {
        let mut line = String::new();
        for word in para.split_whitespace() {
            if !line.is_empty() && indent.len() + line.len() + 1 + word.len() > 80 {
                out.push_str(&format!("{indent}{line}\n"));
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        if !line.is_empty() {
            out.push_str(&format!("{indent}{line}\n"));
        }
    }
    out
}

fn enum_variants(s: &Value) -> Option<Vec<(String, Option<String>)>> {
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        return Some(
            e.iter()
                .filter_map(Value::as_str)
                .map(|v| (v.to_owned(), None))
                .collect(),
        );
    }
    let alts = s.get("oneOf").and_then(Value::as_array)?;
    let mut out = Vec::new();
    for a in alts {
        let v = a.get("const").and_then(Value::as_str).or_else(|| {
            a.get("enum")
                .and_then(Value::as_array)
                .and_then(|e| e.first())
                .and_then(Value::as_str)
        })?;
        out.push((v.to_owned(), description(a).map(str::to_owned)));
    }
    Some(out)
}

/// The schema for a file that may hold any kind (one per document): it picks
/// the kind's own schema file by `kind`, so editors give field-level help in
/// multi-kind files such as `examples/dify-ha.yaml`.
pub fn any_kind_schema() -> Value {
    let kinds: Vec<&str> = crate::KINDS.iter().map(|k| k.kind).collect();
    let branches: Vec<Value> = crate::KINDS
        .iter()
        .map(|k| {
            serde_json::json!({
                "if": {"properties": {"kind": {"const": k.kind}}, "required": ["kind"]},
                "then": {"$ref": format!("{}.json", k.kind.to_ascii_lowercase())}
            })
        })
        .collect();
    serde_json::json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "haswarm resource",
        "description": "Any haswarm resource; the `kind` field selects the kind's schema.",
        "type": "object",
        "required": ["apiVersion", "kind"],
        "properties": {
            "apiVersion": {"const": API_VERSION},
            "kind": {"enum": kinds}
        },
        "allOf": branches
    })
}

/// Every schema file name and text, as checked in under `crds/schemas/`:
/// one per kind, and `haswarm.json` for files mixing kinds.
pub fn all_schema_files() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = crate::KINDS
        .iter()
        .map(|k| {
            (
                format!("{}.json", k.kind.to_ascii_lowercase()),
                schema_file_text(k),
            )
        })
        .collect();
    let mut any = serde_json::to_string_pretty(&any_kind_schema()).unwrap_or_default();
    any.push('\n');
    files.push(("haswarm.json".into(), any));
    files
}
