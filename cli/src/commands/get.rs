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
    let kind = match kind(&args.kind) {
        Ok(k) => k,
        Err(code) => return code,
    };
    let format = match Format::parse(args.output.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            report::error(&e);
            return ExitCode::Invalid;
        }
    };
    let client = match conn.client() {
        Ok(c) => c,
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
