//! `haswarmctl wait`: polls objects until a condition holds or they are
//! deleted, or the timeout passes.

use futures::{Stream, StreamExt};
use haswarm_controller::api::types::Reason;
use haswarm_controller::client::ClientError;
use serde_json::Value;

use super::{failed, target, timeout, Conn};
use crate::cli::WaitArgs;
use crate::exit::ExitCode;
use crate::output;
use crate::report;

/// What `--for` asks.
enum Goal {
    Condition { type_: String, status: String },
    Deleted,
}

fn goal(text: &str) -> Result<Goal, String> {
    if text == "delete" {
        return Ok(Goal::Deleted);
    }
    let cond = text.strip_prefix("condition=").ok_or_else(|| {
        format!("--for={text}: use condition=TYPE, condition=TYPE=STATUS or delete")
    })?;
    let (type_, status) = cond.split_once('=').unwrap_or((cond, "True"));
    if type_.is_empty() {
        return Err(format!(
            "--for={text}: name a condition type, e.g. condition=Ready"
        ));
    }
    Ok(Goal::Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
    })
}

fn met(goal: &Goal, obj: &Value) -> bool {
    match goal {
        Goal::Deleted => false,
        Goal::Condition { type_, status } => {
            let c = output::condition(obj, type_);
            let generation = obj.pointer("/metadata/generation").and_then(Value::as_u64);
            let observed = c
                .and_then(|c| c.get("observedGeneration"))
                .and_then(Value::as_u64);
            // A condition about an older spec says nothing about this one.
            c.and_then(|c| c.get("status")).and_then(Value::as_str) == Some(status.as_str())
                && (observed.is_none() || observed == generation)
        }
    }
}

/// What the success line says happened.
fn reached(goal: &Goal) -> &'static str {
    match goal {
        Goal::Deleted => "deleted",
        Goal::Condition { .. } => "condition met",
    }
}

/// Follows the watch until `name` meets `goal` or the watch ends, keeping
/// the latest version in `last` so a timeout can say where it stood.
async fn follow(
    mut stream: impl Stream<Item = Result<Value, ClientError>> + Unpin,
    name: &str,
    label: &str,
    goal: &Goal,
    last: &mut Value,
) -> Result<(), ExitCode> {
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(v) => v,
            Err(e) => return Err(failed(&e)),
        };
        let Some(obj) = event.get("object") else {
            continue;
        };
        if event.get("type").and_then(Value::as_str) == Some("ERROR") {
            report::error(&format!(
                "watch ended: {}",
                obj.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            ));
            return Err(ExitCode::Refused);
        }
        if obj.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
            continue;
        }
        if event.get("type").and_then(Value::as_str) == Some("DELETED") {
            return if matches!(goal, Goal::Deleted) {
                Ok(())
            } else {
                report::error(&format!("{label} was deleted while waiting"));
                Err(ExitCode::Refused)
            };
        }
        *last = obj.clone();
        if met(goal, last) {
            return Ok(());
        }
    }
    report::error("the daemon closed the watch");
    Err(ExitCode::Refused)
}

/// Where the awaited condition last stood, for the timeout message.
fn timeout_detail(goal: &Goal, last: &Value) -> String {
    match goal {
        Goal::Condition { type_, .. } => match output::condition(last, type_) {
            Some(c) => format!(
                " (last {type_}: {}, reason {}: {})",
                c.get("status").and_then(Value::as_str).unwrap_or("?"),
                c.get("reason").and_then(Value::as_str).unwrap_or("?"),
                c.get("message").and_then(Value::as_str).unwrap_or("")
            ),
            None => format!(" ({type_} not reported yet)"),
        },
        Goal::Deleted => String::new(),
    }
}

pub async fn run(conn: &Conn, args: &WaitArgs) -> ExitCode {
    let (kind, name) = match target(&args.target) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let goal = match goal(&args.for_) {
        Ok(g) => g,
        Err(e) => {
            report::error(&e);
            return ExitCode::Invalid;
        }
    };
    let limit = match timeout(&args.timeout) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let client = match conn.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let label = format!("{}/{name}", kind.singular());
    let mut last = match client.get(kind.plural, name).await {
        Ok(o) => o,
        Err(e) if e.reason() == Some(Reason::NotFound) && matches!(goal, Goal::Deleted) => {
            println!("{label} deleted");
            return ExitCode::Success;
        }
        Err(e) => return failed(&e),
    };
    if met(&goal, &last) {
        println!("{label} condition met");
        return ExitCode::Success;
    }
    let rv = last
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_u64);
    let stream = match client.watch(kind.plural, None, rv).await {
        Ok(s) => s,
        Err(e) => return failed(&e),
    };
    let outcome = tokio::time::timeout(limit, follow(stream, name, &label, &goal, &mut last)).await;
    match outcome {
        Ok(Ok(())) => {
            println!("{label} {}", reached(&goal));
            ExitCode::Success
        }
        Ok(Err(code)) => code,
        Err(_) => {
            report::error(&format!(
                "timed out after {} waiting for {label}{}",
                args.timeout,
                timeout_detail(&goal, &last)
            ));
            ExitCode::Invalid
        }
    }
}
