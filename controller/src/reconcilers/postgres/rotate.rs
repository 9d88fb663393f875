//! Rotation of the passwords haswarm generates for a PostgresCluster's app
//! user and superuser, asked with `haswarmctl rotate-password pgc/NAME
//! [--user app|superuser]` (annotation `haswarm.io/rotate-password`).
//!
//! A role has one password in PostgreSQL, so there is no phase where both
//! are accepted, as there is for Redis. The order keeps every haswarm part
//! working throughout: the new password goes into a new Swarm secret, a
//! one-shot job on the cluster's network sets it with `ALTER ROLE` (reading
//! the current superuser password and the new one from secret files, and
//! sending PostgreSQL only a SCRAM verifier, with statement logging off for
//! that session), and only then do the instances move to the new secret one
//! at a time (replicas first, the leader after a switchover). Patroni's own
//! connections go through the local socket (`use_unix_socket`, `trust`),
//! so the superuser's old password in a member not yet restarted breaks
//! nothing. Sessions already open stay
//! open; applications take the new secret (`status.appPasswordSecret`) when
//! they are next deployed, and a connection they open with the old password
//! after the `ALTER ROLE` is refused: that window is theirs to close.

use haswarm_crds::common::ROTATE_PASSWORD_ANNOTATION;
use haswarm_crds::postgres::{
    PgPasswordRotation, PgRotationPhase, PostgresClusterStatus, RotatedUser,
};
use haswarm_crds::{EventType, PostgresCluster};

use super::render::{self, purpose};
use crate::reconcilers::contents::generate_password;
use crate::runtime::controller::event;
use crate::runtime::{Context, ReconcileError};
use crate::store::Record;
use crate::swarm::jobs::{JobOutcome, NodeJob};
use crate::swarm::Owner;

use super::reconcile::KIND;

/// Where the job finds the passwords.
const CURRENT_SUPERUSER_FILE: &str = "pg-superuser-password";
const NEW_PASSWORD_FILE: &str = "pg-new-password";

/// How long the `ALTER ROLE` job may take (it waits for its task to be
/// scheduled and the leader to answer).
const ALTER_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The user a request names: `<token>` (the app user) or `<token> user=U`.
pub fn requested_user(request: &str) -> Result<RotatedUser, String> {
    match request
        .split_whitespace()
        .find_map(|p| p.strip_prefix("user="))
    {
        None | Some("app") => Ok(RotatedUser::App),
        Some("superuser") => Ok(RotatedUser::Superuser),
        Some(other) => Err(format!(
            "unknown user {other:?} in {ROTATE_PASSWORD_ANNOTATION}: app or superuser"
        )),
    }
}

/// The purpose (stored credential and secret) of a user's password.
pub fn purpose_of(user: RotatedUser) -> &'static str {
    match user {
        RotatedUser::App => purpose::APP,
        RotatedUser::Superuser => purpose::SUPERUSER,
    }
}

/// The purpose of the password a rotation moves to.
pub fn next_purpose(user: RotatedUser) -> String {
    format!("{}-next", purpose_of(user))
}

/// The PostgreSQL role of a user.
fn role_of(pgc: &PostgresCluster, user: RotatedUser) -> &str {
    match user {
        RotatedUser::App => pgc.spec.bootstrap.owner.as_str(),
        RotatedUser::Superuser => "postgres",
    }
}

/// Whether the spec names a secret of the user's for this password (then
/// the user rotates it by pointing the spec at a new secret).
fn users_secret(pgc: &PostgresCluster, user: RotatedUser) -> bool {
    spec_secret(pgc, user).is_some()
}

/// The job's script: computes a SCRAM-SHA-256 verifier of the new password
/// (RFC 5802 and 7677, as PostgreSQL stores it) and sets it on the leader
/// (`host`, its service name) as the superuser. Neither password is on a command
/// line, and psql's output is dropped: the script prints nothing that
/// could hold one. `role` is a checked identifier.
pub fn alter_script(host: &str, role: &str) -> String {
    format!(
        r#"set -e
export PGPASSWORD="$(cat /run/secrets/{CURRENT_SUPERUSER_FILE})"
python3 - <<'PY' | psql -h {host} -p {port} -U postgres -d postgres -X -q -v ON_ERROR_STOP=1 >/dev/null 2>&1
import base64, hashlib, hmac, os
pw = open('/run/secrets/{NEW_PASSWORD_FILE}', 'rb').read().rstrip(b'\n')
salt, rounds = os.urandom(16), 4096
salted = hashlib.pbkdf2_hmac('sha256', pw, salt, rounds)
client = hmac.new(salted, b'Client Key', 'sha256').digest()
server = hmac.new(salted, b'Server Key', 'sha256').digest()
b64 = lambda b: base64.b64encode(b).decode()
print("SET log_statement = 'none';")
print("ALTER ROLE \"{role}\" PASSWORD 'SCRAM-SHA-256$%d:%s$%s:%s';" % (rounds, b64(salt), b64(hashlib.sha256(client).digest()), b64(server)))
PY
"#,
        port = render::PG_PORT,
    )
}

/// A role name the script may quote as it is.
fn plain_identifier(role: &str) -> bool {
    !role.is_empty() && role.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The file an instance reads a user's password from.
fn secret_file(user: RotatedUser) -> &'static str {
    match user {
        RotatedUser::App => "pg-app-password",
        RotatedUser::Superuser => "pg-superuser-password",
    }
}

/// The secret `spec.credentials` names for a user, if any.
pub fn spec_secret(pgc: &PostgresCluster, user: RotatedUser) -> Option<&str> {
    let c = &pgc.spec.credentials;
    match user {
        RotatedUser::App => c.app_user_secret.as_ref(),
        RotatedUser::Superuser => c.superuser_secret.as_ref(),
    }
    .map(|r| r.name.as_str())
}

/// A user whose secret in `spec.credentials` is not the one the instances
/// mount: (user, mounted, named). Only a named secret starts a rotation (a
/// cluster created with it mounts it already).
async fn spec_change(
    ctx: &Context,
    pgc: &PostgresCluster,
) -> Result<Option<(RotatedUser, String, String)>, ReconcileError> {
    let first = render::instance_name(pgc.metadata.name.as_str(), 0);
    for user in [RotatedUser::App, RotatedUser::Superuser] {
        let Some(to) = spec_secret(pgc, user) else {
            continue;
        };
        if let Some(from) = ctx.swarm.mounted_secret(&first, secret_file(user)).await? {
            if from != to {
                return Ok(Some((user, from, to.to_owned())));
            }
        }
    }
    Ok(None)
}

/// Puts `rotation` in its first phase for `user`, saying why in an event.
fn begin(
    ctx: &Context,
    obj: &Record,
    rotation: &mut PgPasswordRotation,
    user: RotatedUser,
    why: &str,
) -> PgPasswordRotation {
    rotation.user = Some(user);
    rotation.phase = Some(PgRotationPhase::Alter);
    event(ctx, obj, EventType::Normal, "PasswordRotation", why);
    rotation.clone()
}

/// Starts a rotation when `spec.credentials` names a new secret, or the
/// annotation asks for a new generated password, and none is in progress;
/// returns the rotation to render.
pub async fn start(
    ctx: &Context,
    obj: &Record,
    pgc: &PostgresCluster,
    status: &mut PostgresClusterStatus,
) -> Result<Option<PgPasswordRotation>, ReconcileError> {
    let asked = pgc
        .metadata
        .annotations
        .get(ROTATE_PASSWORD_ANNOTATION)
        .cloned();
    let rotation = status
        .password_rotation
        .get_or_insert_with(Default::default);
    if rotation.phase.is_none() {
        if let Some((user, from, to)) = spec_change(ctx, pgc).await? {
            let why = format!(
                "spec.credentials names {to} for {} (the instances use {from}): setting its password in PostgreSQL",
                role_of(pgc, user)
            );
            rotation.from_secret = Some(from);
            return Ok(Some(begin(ctx, obj, rotation, user, &why)));
        }
    }
    if rotation.phase.is_some() || asked.is_none() || asked == rotation.requested {
        let current = rotation.clone();
        if current == PgPasswordRotation::default() {
            status.password_rotation = None;
        }
        return Ok(current.phase.is_some().then_some(current));
    }
    rotation.requested.clone_from(&asked);
    let user = match requested_user(asked.as_deref().unwrap_or_default()) {
        Ok(u) => u,
        Err(why) => {
            event(ctx, obj, EventType::Warning, "RotationSkipped", &why);
            return Ok(None);
        }
    };
    if users_secret(pgc, user) {
        event(
            ctx,
            obj,
            EventType::Warning,
            "RotationSkipped",
            "that password comes from a secret named in spec.credentials: point the spec at a secret holding the new value to rotate it",
        );
        return Ok(None);
    }
    if !plain_identifier(role_of(pgc, user)) {
        event(
            ctx,
            obj,
            EventType::Warning,
            "RotationSkipped",
            "the role name is not a plain identifier (letters, digits, _)",
        );
        return Ok(None);
    }
    // A fresh next password (a leftover of an interrupted request goes).
    let name = pgc.metadata.name.as_str();
    ctx.store
        .put_credential(KIND, name, &next_purpose(user), &generate_password())
        .await?;
    let why = format!(
        "rotating the password of {}: setting a new one in PostgreSQL",
        role_of(pgc, user)
    );
    Ok(Some(begin(ctx, obj, rotation, user, &why)))
}

/// The secrets the `ALTER ROLE` job reads.
#[derive(Clone, Copy, Debug)]
pub struct AlterSecrets<'a> {
    /// The superuser password the instances use now.
    pub superuser: &'a str,
    /// The new password.
    pub new: &'a str,
}

/// Phase `Alter`, once the cluster is settled: runs the `ALTER ROLE` job on
/// the leader's node against `leader`. Returns whether PostgreSQL took the
/// new password.
pub async fn alter(
    ctx: &Context,
    obj: &Record,
    (owner, pgc): (&Owner, &PostgresCluster),
    user: RotatedUser,
    secrets: AlterSecrets<'_>,
    leader: &str,
) -> Result<bool, ReconcileError> {
    let name = pgc.metadata.name.as_str();
    let mut mounted = Vec::new();
    for (secret, file) in [
        (secrets.superuser, CURRENT_SUPERUSER_FILE),
        (secrets.new, NEW_PASSWORD_FILE),
    ] {
        let Some(id) = ctx.swarm.secret_id(secret).await? else {
            event(
                ctx,
                obj,
                EventType::Warning,
                "PasswordRotationFailed",
                &format!("secret {secret:?} does not exist"),
            );
            return Ok(false);
        };
        let mut r = crate::reconcilers::common::secret_ref(secret, file, 0o400);
        r.secret_id = Some(id);
        mounted.push(r);
    }
    // On the leader's node: its image is there (nothing to pull).
    let node = match ctx
        .swarm
        .tasks(leader)
        .await?
        .iter()
        .find(|t| {
            t.status.as_ref().and_then(|s| s.state) == Some(bollard::models::TaskState::RUNNING)
        })
        .and_then(|t| t.node_id.clone())
    {
        Some(n) => n,
        None => ctx.swarm.info().await?.node_id,
    };
    let job = NodeJob {
        name: format!("{name}-rotate-password"),
        node,
        image: pgc.spec.postgres.image.clone(),
        script: alter_script(leader, role_of(pgc, user)),
        mounts: Vec::new(),
        secrets: mounted,
        networks: vec![bollard::models::NetworkAttachmentConfig {
            target: Some(render::network_name(name)),
            ..Default::default()
        }],
    };
    match ctx.swarm.run_job(owner, &job, ALTER_LIMIT).await? {
        JobOutcome::Completed => {
            event(
                ctx,
                obj,
                EventType::Normal,
                "PasswordRotation",
                &format!(
                    "PostgreSQL takes the new password of {}: moving the instances to its secret one at a time",
                    role_of(pgc, user)
                ),
            );
            Ok(true)
        }
        JobOutcome::Failed(why) => {
            // The job prints nothing; Swarm's reason is an exit status.
            event(
                ctx,
                obj,
                EventType::Warning,
                "PasswordRotationFailed",
                &format!(
                    "setting the new password of {} failed ({why}); retrying",
                    role_of(pgc, user)
                ),
            );
            Ok(false)
        }
    }
}

/// Phase `Use`, once every instance runs with the new secret and the
/// cluster is settled: a new generated password becomes the stored one.
pub async fn finish(
    ctx: &Context,
    obj: &Record,
    pgc: &PostgresCluster,
    rotation: &PgPasswordRotation,
    user: RotatedUser,
) -> Result<(), ReconcileError> {
    let name = pgc.metadata.name.as_str();
    let generated = rotation.from_secret.is_none();
    if let Some(next) = ctx
        .store
        .credential(KIND, name, &next_purpose(user))?
        .filter(|_| generated)
    {
        ctx.store
            .put_credential(KIND, name, purpose_of(user), &next)
            .await?;
    }
    event(
        ctx,
        obj,
        EventType::Normal,
        "PasswordRotation",
        &format!(
            "password of {} rotated: every instance uses the new secret",
            role_of(pgc, user)
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_its_user_or_means_the_app_user() {
        assert_eq!(requested_user("1700000000"), Ok(RotatedUser::App));
        assert_eq!(requested_user("t user=app"), Ok(RotatedUser::App));
        assert_eq!(
            requested_user("t user=superuser"),
            Ok(RotatedUser::Superuser)
        );
        assert!(requested_user("t user=root").is_err());
        assert_eq!(next_purpose(RotatedUser::App), "app-password-next");
    }

    #[test]
    fn the_job_reads_passwords_from_files_and_sends_only_a_verifier() {
        let s = alter_script("db-pg-1", "app");
        assert!(s.contains("cat /run/secrets/pg-superuser-password"));
        assert!(s.contains("open('/run/secrets/pg-new-password'"));
        assert!(s.contains("SCRAM-SHA-256$"));
        assert!(s.contains("SET log_statement = 'none'"));
        assert!(s.contains("ALTER ROLE \\\"app\\\"") || s.contains("ALTER ROLE \"app\""));
        // psql's output, which could echo a statement, goes nowhere.
        assert!(s.contains(">/dev/null 2>&1"));
        assert!(s.contains("-h db-pg-1 -p 5432 -U postgres"));
    }

    #[test]
    fn only_plain_role_names_are_quoted_as_they_are() {
        assert!(plain_identifier("app_user1"));
        assert!(!plain_identifier("a\"b"));
        assert!(!plain_identifier("a'b"));
        assert!(!plain_identifier(""));
    }
}
