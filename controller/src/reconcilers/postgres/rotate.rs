//! Rotation of the passwords of a PostgresCluster's app user and
//! superuser: a generated one on request (`haswarmctl rotate-password
//! pgc/NAME [--user app|superuser]`, annotation `haswarm.io/rotate-password`),
//! or a user's when `spec.credentials` names a new secret.
//!
//! A role has one password in PostgreSQL, so the app user has two logins
//! that alternate: `bootstrap.owner` and `<owner>_alt`, which acts as the
//! owner. A rotation sets the new password on the login not in use (a job,
//! see `logins`), then `status.appUser`/`appPasswordSecret` name it; the
//! login in use keeps its password until the next rotation
//! (`status.previousAppLogin`). Applications move when they are next
//! deployed, and a connection they open meanwhile with the old password
//! still works: no window. Nothing restarts.
//!
//! The superuser is Patroni's own: its new password goes into a new Swarm
//! secret, the job sets it (`Alter`), and only then do the instances move
//! to the new secret one at a time (`Use`: replicas first, the leader after
//! a switchover). Patroni's own connections go through the local socket
//! (`use_unix_socket`, `trust`), so the old password in a member not yet
//! restarted breaks nothing.

use haswarm_crds::common::ROTATE_PASSWORD_ANNOTATION;
use haswarm_crds::postgres::{
    alternate_login, PgPasswordRotation, PgRotationPhase, PostgresClusterStatus, RotatedUser,
};
use haswarm_crds::{EventType, PostgresCluster};

use super::logins::plain_identifier;
use super::render::{self, purpose};
use crate::reconcilers::contents::generate_password;
use crate::runtime::controller::event;
use crate::runtime::{Context, ReconcileError};
use crate::store::Record;
use crate::swarm::objects::content_name;
use crate::swarm::Owner;

use super::reconcile::KIND;

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

/// The purpose (stored credential and secret) of the superuser's password.
pub const SUPERUSER: &str = purpose::SUPERUSER;

/// The purpose of a generated password a rotation moves to.
pub fn next_purpose(purpose: &str) -> String {
    format!("{purpose}-next")
}

/// The purpose of the generated password of app login `role`: each of the
/// two logins has its own.
pub fn login_purpose(pgc: &PostgresCluster, role: &str) -> &'static str {
    if role == pgc.spec.bootstrap.owner {
        purpose::APP
    } else {
        purpose::APP_ALT
    }
}

/// The app login a rotation moves to from `current`.
pub fn other_login(pgc: &PostgresCluster, current: &str) -> String {
    let owner = &pgc.spec.bootstrap.owner;
    if current == owner {
        alternate_login(owner)
    } else {
        owner.clone()
    }
}

/// The app login rotations move to next (the owner until one is set).
fn target_login(pgc: &PostgresCluster, status: &PostgresClusterStatus) -> String {
    status
        .app_user
        .as_deref()
        .map_or_else(|| pgc.spec.bootstrap.owner.clone(), |u| other_login(pgc, u))
}

/// The PostgreSQL role a rotation of `user` sets.
fn role_of(pgc: &PostgresCluster, status: &PostgresClusterStatus, user: RotatedUser) -> String {
    match user {
        RotatedUser::App => target_login(pgc, status),
        RotatedUser::Superuser => "postgres".to_owned(),
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

/// A user whose secret in `spec.credentials` is not the one in use:
/// (user, in use, named). The superuser's is the one the instances mount;
/// the app user's the one `status.appPasswordSecret` names once set.
async fn spec_change(
    ctx: &Context,
    pgc: &PostgresCluster,
    status: &PostgresClusterStatus,
) -> Result<Option<(RotatedUser, String, String)>, ReconcileError> {
    if let (Some(to), Some(_), Some(from)) = (
        spec_secret(pgc, RotatedUser::App),
        &status.app_user,
        &status.app_password_secret,
    ) {
        if from != to {
            return Ok(Some((RotatedUser::App, from.clone(), to.to_owned())));
        }
    }
    let first = render::instance_name(pgc.metadata.name.as_str(), 0);
    if let Some(to) = spec_secret(pgc, RotatedUser::Superuser) {
        if let Some(from) = ctx
            .swarm
            .mounted_secret(&first, "pg-superuser-password")
            .await?
        {
            if from != to {
                return Ok(Some((RotatedUser::Superuser, from, to.to_owned())));
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
/// returns the rotation to render. The app user's waits until its first
/// login is set.
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
    let in_progress = status
        .password_rotation
        .as_ref()
        .is_some_and(|r| r.phase.is_some());
    if !in_progress {
        if let Some((user, from, to)) = spec_change(ctx, pgc, status).await? {
            let why = match user {
                RotatedUser::App => format!(
                    "spec.credentials names {to} for the app user (in use: {from}): setting its password on login {}, which applications move to; {} keeps working until the next rotation",
                    target_login(pgc, status),
                    status.app_user.as_deref().unwrap_or_default()
                ),
                RotatedUser::Superuser => format!(
                    "spec.credentials names {to} for postgres (the instances use {from}): setting its password in PostgreSQL"
                ),
            };
            let rotation = status
                .password_rotation
                .get_or_insert_with(Default::default);
            rotation.from_secret = Some(from);
            return Ok(Some(begin(ctx, obj, rotation, user, &why)));
        }
    }
    let handled = status
        .password_rotation
        .as_ref()
        .and_then(|r| r.requested.clone());
    if in_progress || asked.is_none() || asked == handled {
        return Ok(status
            .password_rotation
            .clone()
            .filter(|r| r.phase.is_some()));
    }
    let user = match requested_user(asked.as_deref().unwrap_or_default()) {
        Ok(u) => u,
        Err(why) => {
            status
                .password_rotation
                .get_or_insert_with(Default::default)
                .requested
                .clone_from(&asked);
            event(ctx, obj, EventType::Warning, "RotationSkipped", &why);
            return Ok(None);
        }
    };
    if user == RotatedUser::App && status.app_user.is_none() {
        // Its first password is not set yet: the request waits for it.
        return Ok(None);
    }
    let rotation = status
        .password_rotation
        .get_or_insert_with(Default::default);
    rotation.requested.clone_from(&asked);
    if spec_secret(pgc, user).is_some() {
        event(
            ctx,
            obj,
            EventType::Warning,
            "RotationSkipped",
            "that password comes from a secret named in spec.credentials: point the spec at a secret holding the new value to rotate it",
        );
        return Ok(None);
    }
    let role = role_of(pgc, status, user);
    if !plain_identifier(&role) {
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
    let next = match user {
        RotatedUser::App => next_purpose(login_purpose(pgc, &role)),
        RotatedUser::Superuser => next_purpose(SUPERUSER),
    };
    ctx.store
        .put_credential(
            KIND,
            pgc.metadata.name.as_str(),
            &next,
            &generate_password(),
        )
        .await?;
    let why = match user {
        RotatedUser::App => format!(
            "rotating the app user's password: setting a new one on login {role}, which applications move to; {} keeps working until the next rotation",
            status.app_user.as_deref().unwrap_or_default()
        ),
        RotatedUser::Superuser => {
            "rotating the password of postgres: setting a new one in PostgreSQL".to_owned()
        }
    };
    let rotation = status
        .password_rotation
        .get_or_insert_with(Default::default);
    Ok(Some(begin(ctx, obj, rotation, user, &why)))
}

/// Once PostgreSQL took the password in `secret`: when that is the
/// generated next password of `purpose`, it becomes the stored one (a
/// user's secret leaves nothing to store).
pub async fn keep_next(
    ctx: &Context,
    (owner, pgc): (&Owner, &PostgresCluster),
    purpose: &str,
    secret: &str,
) -> Result<(), ReconcileError> {
    let name = pgc.metadata.name.as_str();
    if let Some(next) = ctx.store.credential(KIND, name, &next_purpose(purpose))? {
        if content_name(owner, purpose, &next) == secret {
            ctx.store.put_credential(KIND, name, purpose, &next).await?;
        }
    }
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
        assert_eq!(next_purpose(purpose::APP), "app-password-next");
    }

    fn pgc() -> PostgresCluster {
        let text = "apiVersion: haswarm.io/v1alpha1\nkind: PostgresCluster\nmetadata:\n  name: db\nspec:\n  bootstrap:\n    owner: shop\n";
        match haswarm_crds::manifest::parse(
            "t.yaml",
            text,
            &haswarm_crds::manifest::Limits::default(),
        )
        .expect("valid")
        .into_iter()
        .next()
        .map(|d| d.resource)
        {
            Some(haswarm_crds::AnyResource::PostgresCluster(p)) => *p,
            other => panic!("not a PostgresCluster: {other:?}"),
        }
    }

    #[test]
    fn app_logins_alternate_and_each_has_its_own_password() {
        let p = pgc();
        let mut status = PostgresClusterStatus::default();
        assert_eq!(target_login(&p, &status), "shop");
        status.app_user = Some("shop".into());
        assert_eq!(target_login(&p, &status), "shop_alt");
        status.app_user = Some("shop_alt".into());
        assert_eq!(target_login(&p, &status), "shop");
        assert_eq!(login_purpose(&p, "shop"), purpose::APP);
        assert_eq!(login_purpose(&p, "shop_alt"), purpose::APP_ALT);
        assert_eq!(role_of(&p, &status, RotatedUser::Superuser), "postgres");
    }
}
