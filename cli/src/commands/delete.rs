//! `haswarmctl delete`: removes objects through the API and, with `--wait`,
//! waits until the controller's cleanup is done.

use std::time::Duration;

use haswarm_controller::api::types::Reason;
use haswarm_controller::client::Client;
use haswarm_crds::validate::EmptyCatalog;
use serde_json::Value;

use haswarm_crds::KindInfo;

use super::{failed, kind, target, timeout, Conn};
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

/// The objects named on the command line, as kubectl takes them: a kind
/// and its names (`rsg a b`), or `KIND/NAME` each (`rsg/a sv/b`, what
/// `get -o name` prints), not the two forms mixed.
fn targets(args: &[String]) -> Result<Vec<(&'static KindInfo, String)>, ExitCode> {
    let slashed = args.iter().filter(|a| a.contains('/')).count();
    if slashed == args.len() && !args.is_empty() {
        return args
            .iter()
            .map(|a| target(a).map(|(k, n)| (k, n.to_owned())))
            .collect();
    }
    match args {
        _ if slashed > 0 => {
            report::error(&format!(
                "{:?}: write either KIND NAME [NAME...] or KIND/NAME [KIND/NAME...], not both forms",
                args.join(" ")
            ));
            Err(ExitCode::Invalid)
        }
        [k, names @ ..] if !names.is_empty() => {
            let k = kind(k)?;
            Ok(names.iter().map(|n| (k, n.clone())).collect())
        }
        _ => {
            report::error(
                "name what to delete: KIND NAME [NAME...], KIND/NAME [KIND/NAME...], or -f FILE",
            );
            Err(ExitCode::Invalid)
        }
    }
}

pub async fn run(conn: &Conn, args: &DeleteArgs) -> ExitCode {
    let limit = match timeout(&args.timeout) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let targets: Vec<(&'static KindInfo, String)> = if args.files.is_empty() {
        match targets(&args.targets) {
            Ok(t) => t,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Result<Vec<(&'static str, String)>, ExitCode> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        targets(&args).map(|t| t.into_iter().map(|(k, n)| (k.plural, n)).collect())
    }

    #[test]
    fn targets_are_taken_in_either_of_kubectl_s_forms() {
        let rsg = "redissentinelgroups";
        let sv = "sharedvolumes";
        // (case, arguments, the (plural, name) pairs, or None when refused)
        type Row<'a> = (&'a str, &'a [&'a str], Option<&'a [(&'a str, &'a str)]>);
        let table: &[Row<'_>] = &[
            ("kind and name", &["rsg", "a"], Some(&[(rsg, "a")])),
            (
                "kind and names",
                &["rsg", "a", "b"],
                Some(&[(rsg, "a"), (rsg, "b")]),
            ),
            ("type/name", &["sharedvolume/demo"], Some(&[(sv, "demo")])),
            (
                "several type/name, as get -o name prints them",
                &["sharedvolume/a", "rsg/b"],
                Some(&[(sv, "a"), (rsg, "b")]),
            ),
            ("a kind alone", &["rsg"], None),
            ("nothing", &[], None),
            ("the forms mixed", &["rsg", "sv/a"], None),
            ("an unknown kind", &["pods", "a"], None),
            ("an unknown type/name", &["pods/a"], None),
            ("no name after the slash", &["rsg/"], None),
        ];
        for (case, args, want) in table {
            let got = parsed(args).ok();
            let want = want.map(|w| {
                w.iter()
                    .map(|(k, n)| (*k, (*n).to_owned()))
                    .collect::<Vec<_>>()
            });
            assert_eq!(got, want, "{case}");
        }
    }
}
