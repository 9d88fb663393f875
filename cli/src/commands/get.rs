//! `haswarmctl get`: lists or shows objects in an output format (`-o`), and
//! with `--watch` follows their changes.

use futures::StreamExt;
use serde_json::Value;

use super::{failed, kind, Conn};
use crate::cli::GetArgs;
use crate::exit::ExitCode;
use crate::output::{self, Format};
use crate::report;

pub async fn run(conn: &Conn, args: &GetArgs) -> ExitCode {
    if args.kind == "all" {
        return all(conn, args).await;
    }
    let kind = match kind(&args.kind) {
        Ok(k) => k,
        Err(code) => return code,
    };
    let (format, client) = match format_and_client(conn, args) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let (objects, rv) = match &args.name {
        Some(name) => match client.get(kind.plural, name).await {
            Ok(o) => {
                let rv = o
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_u64);
                (vec![o], rv)
            }
            Err(e) => return failed(&e),
        },
        None => match client.list(kind.plural, args.selector.as_deref()).await {
            Ok(l) => (l.items, Some(l.resource_version)),
            Err(e) => return failed(&e),
        },
    };
    let single = args.name.is_some();
    let text = output::render(kind, &objects, &format, single);
    if text.is_empty() && !single && matches!(format, Format::Table | Format::Wide) {
        eprintln!("No {} found.", kind.plural);
    }
    print!("{text}");
    if !args.watch {
        return ExitCode::Success;
    }
    let mut stream = match client
        .watch(kind.plural, args.selector.as_deref(), rv)
        .await
    {
        Ok(s) => s,
        Err(e) => return failed(&e),
    };
    let table = matches!(format, Format::Table | Format::Wide);
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(v) => v,
            Err(e) => return failed(&e),
        };
        if event.get("type").and_then(Value::as_str) == Some("ERROR") {
            report::error(&format!(
                "watch ended: {}",
                event
                    .pointer("/object/message")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
            ));
            return ExitCode::Refused;
        }
        let Some(obj) = event.get("object") else {
            continue;
        };
        if let Some(name) = &args.name {
            if obj.pointer("/metadata/name").and_then(Value::as_str) != Some(name.as_str()) {
                continue;
            }
        }
        if table {
            // Rows only, as kubectl does after the first table.
            let (_, rows) = output::rows(kind, std::slice::from_ref(obj), format == Format::Wide);
            let (headers, _) = output::rows(kind, &[], format == Format::Wide);
            let t = output::table(&headers, &rows);
            print!(
                "{}",
                t.lines()
                    .skip(1)
                    .map(|l| format!("{l}\n"))
                    .collect::<String>()
            );
        } else {
            print!(
                "{}",
                output::render(kind, std::slice::from_ref(obj), &format, true)
            );
        }
    }
    ExitCode::Success
}

/// The output format asked for, and the client, or the exit code saying why not.
fn format_and_client(
    conn: &Conn,
    args: &GetArgs,
) -> Result<(Format, haswarm_controller::client::Client), ExitCode> {
    let format = Format::parse(args.output.as_deref()).map_err(|e| {
        report::error(&e);
        ExitCode::Invalid
    })?;
    Ok((format, conn.client()?))
}

/// What `get all -o yaml|json` keeps of an object: what a user applies.
/// The store's bookkeeping (uid, resourceVersion, generation, timestamps,
/// finalizers) and the status are left out, so that `apply -f` takes the
/// export back into any store.
fn exported(o: &Value) -> Value {
    let meta = o.get("metadata").cloned().unwrap_or(Value::Null);
    let mut m = serde_json::Map::new();
    for key in ["name", "labels", "annotations"] {
        if let Some(v) = meta.get(key).filter(|v| !v.is_null()) {
            m.insert(key.to_owned(), v.clone());
        }
    }
    serde_json::json!({
        "apiVersion": o.get("apiVersion").cloned().unwrap_or(Value::Null),
        "kind": o.get("kind").cloned().unwrap_or(Value::Null),
        "metadata": m,
        "spec": o.get("spec").cloned().unwrap_or(Value::Null),
    })
}

/// `get all`: every kind. As a table, one per kind; as YAML or JSON, every
/// object as applied (an export that `apply -f` takes back).
async fn all(conn: &Conn, args: &GetArgs) -> ExitCode {
    if args.name.is_some() || args.watch {
        report::error("get all takes neither a name nor --watch");
        return ExitCode::Invalid;
    }
    let (format, client) = match format_and_client(conn, args) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let mut exports = Vec::new();
    let mut tables = Vec::new();
    for kind in &haswarm_crds::KINDS {
        let items = match client.list(kind.plural, args.selector.as_deref()).await {
            Ok(l) => l.items,
            Err(e) => return failed(&e),
        };
        match format {
            Format::Yaml | Format::Json => exports.extend(items.iter().map(exported)),
            _ if items.is_empty() => {}
            _ => tables.push(output::render(kind, &items, &format, false)),
        }
    }
    match format {
        Format::Yaml => {
            for o in &exports {
                print!("---\n{}", output::yaml(o));
            }
        }
        Format::Json => {
            let list = serde_json::json!({
                "apiVersion": haswarm_crds::API_VERSION,
                "kind": "List",
                "items": exports,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&list).unwrap_or_default()
            );
        }
        _ if tables.is_empty() => eprintln!("No resources found."),
        // Names one per line, for `xargs`; tables apart by a blank line.
        Format::Name => print!("{}", tables.concat()),
        _ => print!("{}", tables.join("\n")),
    }
    ExitCode::Success
}
