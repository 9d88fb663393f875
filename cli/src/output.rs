//! How resources are printed: kubectl-style tables (a column set per kind),
//! YAML, JSON, names, and JSONPath templates.

use chrono::{DateTime, Utc};
use haswarm_crds::KindInfo;
use serde_json::Value;

use crate::jsonpath;

/// The `-o` formats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// Borderless columns.
    Table,
    /// Columns with the kind's extra ones.
    Wide,
    /// YAML (several objects as a multi-document stream).
    Yaml,
    /// JSON (several objects as a List).
    Json,
    /// `kind/name` lines.
    Name,
    /// A JSONPath template, e.g. `{.status.master}`.
    JsonPath(String),
    /// The environment an application needs (RedisSentinelGroup).
    Env,
}

impl Format {
    /// Parses the `-o` value.
    ///
    /// # Errors
    /// A message listing the formats.
    pub fn parse(s: Option<&str>) -> Result<Self, String> {
        Ok(match s {
            None => Self::Table,
            Some("wide") => Self::Wide,
            Some("yaml") => Self::Yaml,
            Some("json") => Self::Json,
            Some("name") => Self::Name,
            Some("env") => Self::Env,
            Some(t) if t.starts_with("jsonpath=") => {
                let template = t.trim_start_matches("jsonpath=");
                jsonpath::Template::parse(template)
                    .map_err(|e| format!("invalid jsonpath template: {e}"))?;
                Self::JsonPath(template.to_owned())
            }
            Some(other) => {
                return Err(format!(
                "unknown output format {other:?}: use wide, yaml, json, name or jsonpath=TEMPLATE"
            ))
            }
        })
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn shown(v: Option<String>) -> String {
    v.filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<none>".into())
}

/// The condition of `type_` in an object's status.
pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
        })
}

/// A duration in kubectl's short form: 45s, 12m, 5h, 3d.
pub fn age(since: Option<&str>, now: DateTime<Utc>) -> String {
    let Some(t) = since.and_then(|s| DateTime::parse_from_rfc3339(s).ok()) else {
        return "<unknown>".into();
    };
    let secs = (now - t.with_timezone(&Utc)).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

type Cell = fn(&Value) -> String;

/// A table column: header, whether only `-o wide` shows it, and its value.
struct Column {
    header: &'static str,
    wide: bool,
    cell: Cell,
}

const fn col(header: &'static str, cell: Cell) -> Column {
    Column {
        header,
        wide: false,
        cell,
    }
}

const fn wide(header: &'static str, cell: Cell) -> Column {
    Column {
        header,
        wide: true,
        cell,
    }
}

fn ready(v: &Value) -> String {
    condition(v, "Ready")
        .and_then(|c| c.get("status").and_then(Value::as_str))
        .unwrap_or("Unknown")
        .to_owned()
}

fn status(v: &Value) -> String {
    if v.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    if condition(v, "Paused")
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some("True")
    {
        return "Paused".into();
    }
    condition(v, "Ready")
        .and_then(|c| c.get("reason").and_then(Value::as_str))
        .unwrap_or("Pending")
        .to_owned()
}

fn num(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .map_or_else(|| "<none>".into(), ToString::to_string)
}

/// The kind's columns: NAME, READY and STATUS first, AGE last, kind-specific between.
fn columns(kind: &str) -> Vec<Column> {
    let specific = match kind {
        "PostgresCluster" => postgres_columns(),
        "RedisSentinelGroup" => redis_columns(),
        "SharedVolume" => volume_columns(),
        "GitSource" => git_source_columns(),
        _ => Vec::new(),
    };
    let mut cols = vec![
        col("NAME", |v| {
            shown(str_at(v, "/metadata/name").map(str::to_owned))
        }),
        col("READY", ready),
        col("STATUS", status),
    ];
    cols.extend(specific);
    cols.push(col("AGE", |v| {
        age(str_at(v, "/metadata/creationTimestamp"), Utc::now())
    }));
    cols
}

fn postgres_columns() -> Vec<Column> {
    vec![
        col("INSTANCES", |v| num(v, "/spec/instances")),
        col("PRIMARY", |v| {
            shown(str_at(v, "/status/leader").map(str::to_owned))
        }),
        wide("VERSION", |v| num(v, "/spec/postgres/version")),
        wide("SYNC", |v| {
            shown(str_at(v, "/spec/patroni/synchronousMode").map(str::to_owned))
        }),
        wide("RW-ENDPOINT", |v| {
            shown(str_at(v, "/status/readWriteEndpoint").map(str::to_owned))
        }),
        wide("LAST-BACKUP", |v| {
            str_at(v, "/status/lastSuccessfulBackup")
                .map_or_else(|| "<none>".into(), |t| age(Some(t), Utc::now()))
        }),
    ]
}

fn redis_columns() -> Vec<Column> {
    vec![
        col("INSTANCES", |v| num(v, "/spec/instances")),
        col("MASTER", |v| {
            shown(str_at(v, "/status/master").map(str::to_owned))
        }),
        col("SENTINELS", |v| {
            let seen = v.pointer("/status/sentinelsSeen").and_then(Value::as_u64);
            let want = num(v, "/spec/sentinels/count");
            seen.map_or_else(|| format!("?/{want}"), |s| format!("{s}/{want}"))
        }),
        wide("MASTER-GROUP", |v| {
            shown(str_at(v, "/spec/masterGroupName").map(str::to_owned))
        }),
        wide("QUORUM", |v| num(v, "/spec/sentinels/quorum")),
    ]
}

fn volume_columns() -> Vec<Column> {
    vec![
        col("SOURCE", volume_source),
        col("NODES", |v| {
            let nodes = v.pointer("/status/nodes").and_then(Value::as_array);
            nodes.map_or_else(
                || "<none>".into(),
                |ns| {
                    let ok = ns
                        .iter()
                        .filter(|n| n.get("mounted") == Some(&Value::Bool(true)))
                        .count();
                    format!("{ok}/{}", ns.len())
                },
            )
        }),
        wide("RECLAIM", |v| {
            shown(str_at(v, "/spec/reclaimPolicy").map(str::to_owned))
        }),
        wide("ACCESS", |v| {
            shown(str_at(v, "/spec/accessMode").map(str::to_owned))
        }),
    ]
}

/// A SharedVolume's backing store in one word: `nfs:SERVER:PATH`,
/// `hostPath:PATH` or `driver:NAME`.
fn volume_source(v: &Value) -> String {
    let spec = v.get("spec");
    let source = if let Some(n) = spec.and_then(|s| s.get("nfs")) {
        format!(
            "nfs:{}:{}",
            n.get("server").and_then(Value::as_str).unwrap_or_default(),
            n.get("path").and_then(Value::as_str).unwrap_or_default()
        )
    } else if let Some(p) = spec
        .and_then(|s| s.pointer("/hostPath/path"))
        .and_then(Value::as_str)
    {
        format!("hostPath:{p}")
    } else if let Some(d) = spec
        .and_then(|s| s.pointer("/driver/name"))
        .and_then(Value::as_str)
    {
        format!("driver:{d}")
    } else {
        String::new()
    };
    shown(Some(source))
}

fn git_source_columns() -> Vec<Column> {
    vec![
        col("REVISION", |v| {
            shown(
                str_at(v, "/status/lastAppliedRevision")
                    .map(|r| r.get(..12).unwrap_or(r).to_owned()),
            )
        }),
        col("RESOURCES", |v| {
            let inv = v.pointer("/status/inventory").and_then(Value::as_array);
            inv.map_or_else(
                || "0".into(),
                |i| {
                    let ok = i
                        .iter()
                        .filter(|e| e.get("ready") == Some(&Value::Bool(true)))
                        .count();
                    format!("{ok}/{}", i.len())
                },
            )
        }),
        col("URL", |v| shown(str_at(v, "/spec/url").map(str::to_owned))),
        wide("PATH", |v| {
            shown(str_at(v, "/spec/path").map(str::to_owned))
        }),
        wide("PRUNE", |v| {
            shown(v.pointer("/spec/prune").map(ToString::to_string))
        }),
    ]
}

/// Renders rows as borderless columns separated by three spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, c) in cells.into_iter().enumerate() {
            s.push_str(c);
            if i < last {
                let pad = widths[i] + 3 - c.chars().count();
                s.push_str(&" ".repeat(pad));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// Table rows for objects of one kind (headers first).
pub fn rows(
    kind: &KindInfo,
    objects: &[Value],
    wide_mode: bool,
) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let cols: Vec<Column> = columns(kind.kind)
        .into_iter()
        .filter(|c| wide_mode || !c.wide)
        .collect();
    let headers = cols.iter().map(|c| c.header).collect();
    let rows = objects
        .iter()
        .map(|o| cols.iter().map(|c| (c.cell)(o)).collect())
        .collect();
    (headers, rows)
}

/// YAML text of a value.
pub fn yaml(v: &Value) -> String {
    serde_saphyr::to_string(v).unwrap_or_else(|e| format!("# cannot render YAML: {e}\n"))
}

/// Renders objects in a non-table format.
pub fn render(kind: &KindInfo, objects: &[Value], format: &Format, single: bool) -> String {
    match format {
        Format::Table | Format::Wide => {
            let (headers, rows) = rows(kind, objects, *format == Format::Wide);
            if rows.is_empty() {
                return String::new();
            }
            table(&headers, &rows)
        }
        Format::Yaml => objects
            .iter()
            .map(|o| {
                if single {
                    yaml(o)
                } else {
                    format!("---\n{}", yaml(o))
                }
            })
            .collect(),
        Format::Json => {
            let v = if single {
                objects.first().cloned().unwrap_or(Value::Null)
            } else {
                serde_json::json!({
                    "apiVersion": haswarm_crds::API_VERSION,
                    "kind": "List",
                    "items": objects,
                })
            };
            let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
            s.push('\n');
            s
        }
        Format::Name => objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}\n",
                    kind.singular(),
                    str_at(o, "/metadata/name").unwrap_or_default()
                )
            })
            .collect(),
        Format::Env => objects.iter().map(|o| app_env(kind, o)).collect(),
        Format::JsonPath(t) => {
            let Ok(template) = jsonpath::Template::parse(t) else {
                return String::new();
            };
            let input = if single {
                objects.first().cloned().unwrap_or(Value::Null)
            } else {
                serde_json::json!({ "items": objects })
            };
            template.render(&input)
        }
    }
}

/// `-o env`: the variables an application sets to use the resource, then, as
/// comments, the compose lines that attach it to the network and the secret.
/// Passwords are referenced by file, never printed.
pub fn app_env(kind: &KindInfo, obj: &Value) -> String {
    use haswarm_controller::reconcilers::redis::render;
    if kind.kind == "PostgresCluster" {
        return postgres_env(obj);
    }
    if kind.kind != "RedisSentinelGroup" {
        return format!("# -o env is not available for {} yet\n", kind.kind);
    }
    let Ok(rsg) = serde_json::from_value::<haswarm_crds::RedisSentinelGroup>(obj.clone()) else {
        return "# the stored object could not be read\n".into();
    };
    let status = rsg.status.clone().unwrap_or_default();
    let Some(secret) = status.password_secret.clone() else {
        return format!(
            "# {} has no password secret yet: the controller has not reconciled it (see haswarmctl describe rsg {})\n",
            rsg.metadata.name, rsg.metadata.name
        );
    };
    let network = status
        .network
        .clone()
        .unwrap_or_else(|| render::network_name(rsg.metadata.name.as_str()));
    let mut out = format!(
        "# RedisSentinelGroup {}: join network {network} and mount secret {secret}\n",
        rsg.metadata.name
    );
    out.push_str(&format!(
        "# REDIS_HOST is left out: with REDIS_USE_SENTINEL=true the application asks the sentinels for the master (now: {})\n",
        status.master.as_deref().unwrap_or("none answers")
    ));
    for (k, v) in render::app_env(&rsg, &secret) {
        out.push_str(&format!("{k}={v}\n"));
    }
    out.push_str(&compose_snippet(&network, &secret));
    out
}

/// The compose lines that attach an app service to a network and a secret.
fn compose_snippet(network: &str, secret: &str) -> String {
    format!(
        "# compose:\n#   services:\n#     app:\n#       networks: [{network}]\n#       secrets: [{secret}]\n#   networks:\n#     {network}: {{external: true}}\n#   secrets:\n#     {secret}: {{external: true}}\n"
    )
}

fn postgres_env(obj: &Value) -> String {
    use haswarm_controller::reconcilers::postgres::render;
    let Ok(pgc) = serde_json::from_value::<haswarm_crds::PostgresCluster>(obj.clone()) else {
        return "# the stored object could not be read\n".into();
    };
    let status = pgc.status.clone().unwrap_or_default();
    let Some(secret) = status.app_password_secret.clone() else {
        return format!(
            "# {} has no password secret yet: the controller has not reconciled it (see haswarmctl describe pgc {})\n",
            pgc.metadata.name, pgc.metadata.name
        );
    };
    let network = status
        .network
        .clone()
        .unwrap_or_else(|| render::network_name(pgc.metadata.name.as_str()));
    let mut out = format!(
        "# PostgresCluster {}: join network {network} and mount secret {secret}\n",
        pgc.metadata.name
    );
    let user = status
        .app_user
        .clone()
        .unwrap_or_else(|| pgc.spec.bootstrap.owner.clone());
    for (k, v) in render::app_env(&pgc, &user, &secret) {
        out.push_str(&format!("{k}={v}\n"));
    }
    out.push_str(&compose_snippet(&network, &secret));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        for (t, want) in [
            ("2026-01-01T11:59:15Z", "45s"),
            ("2026-01-01T11:48:00Z", "12m"),
            ("2026-01-01T07:00:00Z", "5h"),
            ("2025-12-29T12:00:00Z", "3d"),
        ] {
            assert_eq!(age(Some(t), now), want);
        }
        assert_eq!(age(None, now), "<unknown>");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["NAME", "READY"],
            &[
                vec!["a".into(), "True".into()],
                vec!["long-name".into(), "False".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME        READY\na           True\nlong-name   False\n"
        );
    }
}
