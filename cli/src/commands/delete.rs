//! `haswarmctl delete`: removes objects through the API and, with `--wait`,
//! waits until the controller's cleanup is done.

use std::time::Duration;

use haswarm_controller::api::types::Reason;
use haswarm_controller::client::Client;
use haswarm_crds::validate::EmptyCatalog;
use serde_json::Value;

use super::{failed, kind, timeout, Conn};
use crate::cli::{DeleteArgs, FileArgs};
use crate::exit::ExitCode;
use crate::report;

/// Polls until the object is gone; deletion waits on the controller's
/// cleanup, which takes seconds, so a half-second poll is plenty.
async fn wait_gone(
    client: &Client,
    plural: &str,
    name: &str,
    limit: Duration,
) -> Result<(), ExitCode> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match client.get(plural, name).await {
            Err(e) if e.reason() == Some(Reason::NotFound) => return Ok(()),
            Err(e) => return Err(failed(&e)),
            Ok(_) if tokio::time::Instant::now() >= deadline => {
                report::error(&format!(
                    "timed out after {limit:?} waiting for {plural}/{name} to be deleted"
                ));
                return Err(ExitCode::Invalid);
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

pub async fn run(conn: &Conn, args: &DeleteArgs) -> ExitCode {
    let limit = match timeout(&args.timeout) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let targets: Vec<(&'static haswarm_crds::KindInfo, String)> = if args.files.is_empty() {
        let (Some(k), Some(n)) = (&args.kind, &args.name) else {
            report::error("name a KIND and NAME, or -f FILE");
            return ExitCode::Invalid;
        };
        match kind(k) {
            Ok(k) => vec![(k, n.clone())],
            Err(code) => return code,
        }
    } else {
        let files = FileArgs {
            files: args.files.clone(),
            recursive: args.recursive,
        };
        // Only kind and name matter for a delete; a rule broken elsewhere in
        // the file must not stop it, so rules are not checked.
        let (_, docs) = match super::apply::load(&files, &EmptyCatalog) {
            Ok(x) => x,
            Err(ExitCode::Invalid) => {
                report::error("fix the manifests, or delete by KIND NAME");
                return ExitCode::Invalid;
            }
            Err(code) => return code,
        };
        docs.iter()
            .filter_map(|d| {
                haswarm_crds::KindInfo::lookup(d.resource.kind())
                    .map(|k| (k, d.resource.name().to_owned()))
            })
            .collect()
    };
    let client = match conn.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut code = ExitCode::Success;
    for (k, name) in &targets {
        match client.delete(k.plural, name, None).await {
            Ok(obj) => {
                let finalizers: Vec<&str> = obj
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if finalizers.is_empty() {
                    println!("{}/{name} deleted", k.singular());
                } else {
                    println!(
                        "{}/{name} terminating (the controller is removing: {})",
                        k.singular(),
                        finalizers.join(", ")
                    );
                }
            }
            Err(e) if e.reason() == Some(Reason::NotFound) && !args.files.is_empty() => {
                println!("{}/{name} not found (nothing to delete)", k.singular());
            }
            Err(e) => {
                code = failed(&e);
                continue;
            }
        }
        if args.wait {
            if let Err(c) = wait_gone(&client, k.plural, name, limit).await {
                code = c;
            } else {
                println!("{}/{name} gone", k.singular());
            }
        }
    }
    code
}
