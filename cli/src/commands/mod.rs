//! One module per subcommand, and what they share: the connection to the
//! daemon, kind lookup, and turning API errors into messages and exit codes.

mod apply;
mod delete;
mod describe;
mod diff;
mod explain;
mod get;
mod install;
mod node;
mod pg;
mod render;
mod rotate;
mod schema;
mod store_key;
mod up;
mod validate;
mod wait;

use haswarm_controller::client::{Client, ClientError, Endpoint};
use haswarm_controller::config::default_socket;
use haswarm_crds::KindInfo;

use crate::cli::{Cli, Command};
use crate::exit::ExitCode;
use crate::report;

/// The daemon connection settings every online command shares.
pub struct Conn {
    server: Option<String>,
    token: Option<String>,
}

impl Conn {
    /// A client for the configured or default server.
    fn client(&self) -> Result<Client, ExitCode> {
        let endpoint = match &self.server {
            Some(s) => Endpoint::parse(s, self.token.clone()),
            None => Ok(Endpoint::Unix(default_socket())),
        };
        endpoint.map(Client::new).map_err(|e| {
            report::error(&e.to_string());
            ExitCode::Invalid
        })
    }
}

/// Runs a parsed command line and says how it ended.
pub fn run(cli: Cli) -> ExitCode {
    let conn = Conn {
        server: cli.server,
        token: cli.token,
    };
    match cli.command {
        Command::Validate(a) => validate::run(&a),
        Command::Schema(a) => schema::run(&a),
        Command::Explain(a) => explain::run(&a),
        Command::Apply(a) => online(|| apply::run(&conn, &a)),
        Command::Get(a) => online(|| get::run(&conn, &a)),
        Command::Describe(a) => online(|| describe::run(&conn, &a)),
        Command::Delete(a) => online(|| delete::run(&conn, &a)),
        Command::Diff(a) => online(|| diff::run(&conn, &a)),
        Command::Wait(a) => online(|| wait::run(&conn, &a)),
        Command::RotatePassword(a) => online(|| rotate::run(&conn, &a)),
        Command::Pg(crate::cli::PgCommand::Switchover(a)) => online(|| pg::switchover(&conn, &a)),
        Command::Pg(crate::cli::PgCommand::Backup(a)) => online(|| pg::backup(&conn, &a)),
        Command::Node(c) => online(|| node::run(&conn, &c)),
        Command::Up(a) => up::run(&a),
        Command::Render(a) => render::run(&a),
        Command::Install(a) => install::run_install(&a),
        Command::Uninstall(a) => install::run_uninstall(&a),
        Command::Healthcheck(a) => online(|| install::run_healthcheck(&conn, &a)),
    }
}

/// Runs an async command on a small runtime.
fn online<F: std::future::Future<Output = ExitCode>>(f: impl FnOnce() -> F) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f()),
        Err(e) => {
            report::error(&format!("cannot start the async runtime: {e}"));
            ExitCode::Refused
        }
    }
}

/// Splits a `KIND/NAME` argument and looks the kind up, or explains the form.
fn target(text: &str) -> Result<(&'static KindInfo, &str), ExitCode> {
    let Some((k, name)) = text.split_once('/').filter(|(_, n)| !n.is_empty()) else {
        report::error(&format!("{text:?}: write KIND/NAME, e.g. rsg/dify-redis"));
        return Err(ExitCode::Invalid);
    };
    Ok((kind(k)?, name))
}

/// Looks a kind up by any of its names, or explains which exist.
fn kind(name: &str) -> Result<&'static KindInfo, ExitCode> {
    KindInfo::lookup(name).ok_or_else(|| {
        report::error(&format!(
            "unknown kind {name:?}: use postgresclusters (pgc), redissentinelgroups (rsg), sharedvolumes (sv) or gitsources (gs)"
        ));
        ExitCode::Invalid
    })
}

/// Sets annotation `key` to `value` on `plural/name` (a compare-and-swap on
/// the object, retried a few times when it changed meanwhile); `check` may
/// refuse the object first.
async fn annotate(
    client: &Client,
    plural: &str,
    name: &str,
    key: &str,
    value: &str,
    check: impl Fn(&serde_json::Value) -> Result<(), ExitCode>,
) -> Result<(), ExitCode> {
    const ATTEMPTS: usize = 5;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut obj = client.get(plural, name).await.map_err(|e| failed(&e))?;
        check(&obj)?;
        if let Some(a) = obj
            .pointer_mut("/metadata")
            .and_then(serde_json::Value::as_object_mut)
            .map(|m| {
                m.entry("annotations")
                    .or_insert_with(|| serde_json::Value::Object(Default::default()))
            })
            .and_then(serde_json::Value::as_object_mut)
        {
            a.insert(key.to_owned(), serde_json::Value::String(value.to_owned()));
        }
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
        match client.replace(plural, name, &obj).await {
            Ok(_) => return Ok(()),
            Err(e)
                if attempt < ATTEMPTS
                    && e.reason() == Some(haswarm_controller::api::types::Reason::Conflict) => {}
            Err(e) => return Err(failed(&e)),
        }
    }
}

/// Polls `plural/name` every second until `done` says it ended (`Ok`: what
/// to print; `Err`: why it failed, exit code 1), or `limit` passes (then
/// `on_timeout` is reported, exit code 1 as for `wait`).
async fn poll_until(
    client: &Client,
    plural: &str,
    name: &str,
    limit: std::time::Duration,
    done: impl Fn(&serde_json::Value) -> Option<Result<String, String>>,
    on_timeout: &str,
) -> ExitCode {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Ok(obj) = client.get(plural, name).await {
            match done(&obj) {
                Some(Ok(message)) => {
                    println!("{message}");
                    return ExitCode::Success;
                }
                Some(Err(why)) => {
                    report::error(&why);
                    return ExitCode::Invalid;
                }
                None => {}
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    report::error(&format!(
        "timed out after {}s: {on_timeout}",
        limit.as_secs()
    ));
    ExitCode::Invalid
}

/// Prints a client error and picks the exit code.
fn failed(e: &ClientError) -> ExitCode {
    match e {
        ClientError::Unreachable { .. } => {
            report::error(&e.to_string());
            ExitCode::Unreachable
        }
        ClientError::BadServer(_) => {
            report::error(&e.to_string());
            ExitCode::Invalid
        }
        ClientError::Api { body, .. } => {
            let mut msg = body.message.clone();
            for d in &body.details {
                let what = match (&d.kind, &d.name) {
                    (Some(k), Some(n)) => format!("{}/{n}", k.to_ascii_lowercase()),
                    _ => format!("document {}", d.index + 1),
                };
                let path = d
                    .path
                    .as_deref()
                    .map(|p| format!("{p}: "))
                    .unwrap_or_default();
                let rule = d
                    .rule
                    .as_deref()
                    .map(|r| format!(" [rule: {r}]"))
                    .unwrap_or_default();
                msg.push_str(&format!("\n  {what}: {path}{}{rule}", d.message));
            }
            report::error(&msg);
            if body.reason == haswarm_controller::api::types::Reason::Invalid {
                ExitCode::Invalid
            } else {
                ExitCode::Refused
            }
        }
        ClientError::Protocol { .. } => {
            report::error(&e.to_string());
            ExitCode::Refused
        }
    }
}

/// What every request made through an annotation starts with: the wait's
/// limit, a client, and a new token (the request's identity).
fn request(conn: &Conn, limit: &str) -> Result<(std::time::Duration, Client, String), ExitCode> {
    let limit = timeout(limit)?;
    let client = conn.client()?;
    let token = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Ok((limit, client, token))
}

/// Parses a `--timeout` value.
fn timeout(text: &str) -> Result<std::time::Duration, ExitCode> {
    haswarm_crds::quantity::Duration::parse(text)
        .map(|d| d.to_std())
        .map_err(|e| {
            report::error(&format!("--timeout: {e}"));
            ExitCode::Invalid
        })
}
