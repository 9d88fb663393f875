//! `haswarmctl rotate-password rsg/NAME | pgc/NAME [--user U]`: asks for a
//! new generated password through the `haswarm.io/rotate-password`
//! annotation (a compare-and-swap on the object), then optionally follows
//! the rotation to its end.

use haswarm_crds::common::ROTATE_PASSWORD_ANNOTATION;
use haswarm_crds::KindInfo;
use serde_json::Value;

use super::{annotate, poll_until, request, target, Conn};
use crate::cli::RotatePasswordArgs;
use crate::exit::ExitCode;
use crate::report;

/// For a PostgresCluster, the login to rotate and the spec field that would
/// hold a password of the user's own for it.
type Login<'a> = Option<(&'a str, &'static str)>;

/// The short kind name and the login, or why the target has no password
/// haswarm rotates.
fn password<'a>(
    kind: &KindInfo,
    user: Option<&'a str>,
) -> Result<(&'static str, Login<'a>), ExitCode> {
    match (kind.kind, user) {
        ("RedisSentinelGroup", None) => Ok(("rsg", None)),
        ("RedisSentinelGroup", Some(_)) => {
            report::error(
                "--user applies to postgresclusters only: a RedisSentinelGroup has one password",
            );
            Err(ExitCode::Invalid)
        }
        ("PostgresCluster", user) => {
            let user = user.unwrap_or("app");
            let field = if user == "superuser" {
                "superuserSecret"
            } else {
                "appUserSecret"
            };
            Ok(("pgc", Some((user, field))))
        }
        _ => {
            report::error(&format!(
                "{}: only redissentinelgroups (rsg) and postgresclusters (pgc) have passwords haswarm rotates",
                kind.plural
            ));
            Err(ExitCode::Invalid)
        }
    }
}

/// Refuses a password the user keeps in a secret of their own: haswarm
/// rotates only the passwords it generates.
fn refuse_user_secret(
    obj: &Value,
    login: Login<'_>,
    short: &str,
    name: &str,
) -> Result<(), ExitCode> {
    let (pointer, fix) = match login {
        Some((_, field)) => (
            format!("/spec/credentials/{field}"),
            format!("point spec.credentials.{field} at a secret holding the new password instead"),
        ),
        None => (
            "/spec/passwordSecret".to_owned(),
            "point spec.passwordSecret at a new secret instead".to_owned(),
        ),
    };
    if obj.pointer(&pointer).is_some_and(|v| !v.is_null()) {
        report::error(&format!(
            "{short}/{name} takes that password from a secret of yours: haswarm rotates only the passwords it generates; {fix}"
        ));
        return Err(ExitCode::Invalid);
    }
    Ok(())
}

/// The closing message once the controller has finished the rotation asked
/// for by `token`; `None` while it is still pending.
fn rotated(
    obj: &Value,
    token: &str,
    singular: &str,
    short: &str,
    name: &str,
) -> Option<Result<String, String>> {
    let rotation = obj.pointer("/status/passwordRotation");
    let handled = rotation
        .and_then(|r| r.get("requested"))
        .and_then(Value::as_str)
        == Some(token);
    let phase = rotation
        .and_then(|r| r.get("phase"))
        .filter(|p| !p.is_null());
    // A PostgresCluster's app user moved to its other login: say which.
    let login = match (
        obj.pointer("/status/appUser").and_then(Value::as_str),
        obj.pointer("/status/appPasswordSecret")
            .and_then(Value::as_str),
        rotation.and_then(|r| r.get("user")).and_then(Value::as_str),
    ) {
        (Some(user), Some(secret), Some("App")) => {
            format!(": applications log in as {user} with secret {secret} (haswarmctl get {short} {name} -o env)")
        }
        _ => String::new(),
    };
    (handled && phase.is_none()).then(|| Ok(format!("{singular}/{name} password rotated{login}")))
}

pub async fn run(conn: &Conn, args: &RotatePasswordArgs) -> ExitCode {
    let (kind, name) = match target(&args.target) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let (short, login) = match password(kind, args.user.as_deref()) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let (limit, client, stamp) = match request(conn, &args.timeout) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let token = match login {
        Some((user, _)) => format!("{stamp} user={user}"),
        None => stamp,
    };
    if let Err(code) = annotate(
        &client,
        kind.plural,
        name,
        ROTATE_PASSWORD_ANNOTATION,
        &token,
        |obj| refuse_user_secret(obj, login, short, name),
    )
    .await
    {
        return code;
    }
    let singular = kind.kind.to_lowercase();
    println!("{singular}/{name} password rotation requested");
    if !args.wait {
        println!("follow it with: haswarmctl describe {short} {name}");
        return ExitCode::Success;
    }
    poll_until(
        &client,
        kind.plural,
        name,
        limit,
        |obj| rotated(obj, &token, &singular, short, name),
        &format!("the rotation of {short}/{name} goes on: see haswarmctl describe {short} {name}"),
    )
    .await
}
