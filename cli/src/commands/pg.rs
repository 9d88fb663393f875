//! `haswarmctl pg switchover NAME [--to I]` and `pg backup NAME`: ask the
//! controller through an annotation (`haswarm.io/switchover`,
//! `haswarm.io/backup`), then optionally wait until it is handled.

use haswarm_controller::reconcilers::postgres::render::instance_name;
use haswarm_crds::postgres::{BACKUP_ANNOTATION, SWITCHOVER_ANNOTATION};
use serde_json::Value;

use super::{annotate, poll_until, request, Conn};
use crate::cli::{PgBackupArgs, PgSwitchoverArgs};
use crate::exit::ExitCode;
use crate::report;

pub async fn switchover(conn: &Conn, args: &PgSwitchoverArgs) -> ExitCode {
    let name = args.name.as_str();
    let (limit, client, token) = match request(conn, &args.timeout) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let value = match args.to {
        Some(i) => format!("{token} to={i}"),
        None => token.clone(),
    };
    let to = args.to;
    let in_range = |obj: &Value| {
        let instances = obj.pointer("/spec/instances").and_then(Value::as_u64);
        match (to, instances) {
            (Some(i), Some(n)) if u64::from(i) >= n => {
                report::error(&format!(
                    "pgc/{name} has instances 0 to {}: --to {i} is not one of them",
                    n.saturating_sub(1)
                ));
                Err(ExitCode::Invalid)
            }
            (_, Some(n)) if n < 2 => {
                report::error(&format!(
                    "pgc/{name} has one instance: there is no replica to switch over to"
                ));
                Err(ExitCode::Invalid)
            }
            _ => Ok(()),
        }
    };
    if let Err(code) = annotate(
        &client,
        "postgresclusters",
        name,
        SWITCHOVER_ANNOTATION,
        &value,
        in_range,
    )
    .await
    {
        return code;
    }
    println!("postgrescluster/{name} switchover requested");
    if !args.wait {
        println!("follow it with: haswarmctl describe pgc {name}");
        return ExitCode::Success;
    }
    let done = |obj: &Value| {
        let handled = obj
            .pointer("/status/switchoverHandled")
            .and_then(Value::as_str)
            == Some(value.as_str());
        let ready = obj
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
        (handled && ready).then(|| {
            let leader = obj
                .pointer("/status/leader")
                .and_then(Value::as_str)
                .unwrap_or("?");
            match to.map(|i| instance_name(name, usize::from(i))) {
                Some(to) if leader != to => Err(format!(
                    "the switchover to {to} did not happen, {leader} leads (with synchronous replication Patroni hands over only to the synchronous standby): see the events in haswarmctl describe pgc {name}"
                )),
                _ => Ok(format!("postgrescluster/{name} leader is {leader}")),
            }
        })
    };
    poll_until(
        &client,
        "postgresclusters",
        name,
        limit,
        done,
        &format!("see haswarmctl describe pgc {name}"),
    )
    .await
}

pub async fn backup(conn: &Conn, args: &PgBackupArgs) -> ExitCode {
    let name = args.name.as_str();
    let (limit, client, token) = match request(conn, &args.timeout) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut value = format!("{token} type={}", args.kind);
    if let Some(r) = &args.repository {
        value.push_str(&format!(" repository={r}"));
    }
    let repository = args.repository.clone();
    let can = |obj: &Value| {
        let Some(repos) = obj
            .pointer("/spec/backup/repositories")
            .and_then(Value::as_array)
        else {
            report::error(&format!(
                "pgc/{name} has no spec.backup: add a repository first (haswarmctl explain pgc.spec.backup)"
            ));
            return Err(ExitCode::Invalid);
        };
        match &repository {
            Some(r) if !repos.iter().any(|x| x["name"] == r.as_str()) => {
                report::error(&format!("pgc/{name} has no repository named {r:?}"));
                Err(ExitCode::Invalid)
            }
            _ => Ok(()),
        }
    };
    if let Err(code) = annotate(
        &client,
        "postgresclusters",
        name,
        BACKUP_ANNOTATION,
        &value,
        can,
    )
    .await
    {
        return code;
    }
    println!("postgrescluster/{name} {} backup requested", args.kind);
    if !args.wait {
        println!("follow it with: haswarmctl describe pgc {name}");
        return ExitCode::Success;
    }
    let done = |obj: &Value| {
        let handled = obj
            .pointer("/status/backupRequestHandled")
            .and_then(Value::as_str)
            == Some(value.as_str());
        handled.then(|| {
            let healthy = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| c.iter().find(|c| c["type"] == "BackupsHealthy"));
            match healthy {
                Some(c) if c["status"] == "True" => {
                    let last = obj
                        .pointer("/status/backups")
                        .and_then(Value::as_array)
                        .and_then(|b| b.last());
                    Ok(format!(
                        "postgrescluster/{name} backup {} done",
                        last.and_then(|b| b["label"].as_str()).unwrap_or("?")
                    ))
                }
                Some(c) => Err(format!(
                    "the backup failed: {}",
                    c["message"].as_str().unwrap_or("?")
                )),
                None => {
                    Err("the backup's result is not known: see haswarmctl describe pgc".to_owned())
                }
            }
        })
    };
    poll_until(
        &client,
        "postgresclusters",
        name,
        limit,
        done,
        &format!("see haswarmctl describe pgc {name}"),
    )
    .await
}
