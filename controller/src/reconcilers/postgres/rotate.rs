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
use crate::reconcilers::status::Notice;
use crate::runtime::{Context, ReconcileError};
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
/// (user, in use, named). The superuser's is the one the instances mount
/// (`mounted`: instance 0's); the app user's the one
/// `status.appPasswordSecret` names once set.
fn spec_change(
    pgc: &PostgresCluster,
    status: &PostgresClusterStatus,
    mounted: Option<&str>,
) -> Option<(RotatedUser, String, String)> {
    if let (Some(to), Some(_), Some(from)) = (
        spec_secret(pgc, RotatedUser::App),
        &status.app_user,
        &status.app_password_secret,
    ) {
        if from != to {
            return Some((RotatedUser::App, from.clone(), to.to_owned()));
        }
    }
    match (spec_secret(pgc, RotatedUser::Superuser), mounted) {
        (Some(to), Some(from)) if from != to => {
            Some((RotatedUser::Superuser, from.to_owned(), to.to_owned()))
        }
        _ => None,
    }
}

/// What a pass does about starting a password rotation: the pure choice
/// [`plan_start`] makes, which [`Start::apply`] writes into the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// Nothing starts; the rotation under way, if any, goes on.
    Continue,
    /// The request waits: the app user's first login is not set yet.
    Wait,
    /// The request is refused (`why`), and recorded as handled.
    Skip {
        /// The request's annotation value.
        requested: Option<String>,
        /// The warning.
        why: String,
    },
    /// A rotation of `user` begins in its `Alter` phase.
    Begin {
        /// Whose password.
        user: RotatedUser,
        /// The request it answers (`None`: a change of spec.credentials).
        requested: Option<String>,
        /// The secret in use, when the new password is a user's secret.
        from_secret: Option<String>,
        /// The purpose under which a fresh password is generated first
        /// (`None`: the new password is a user's secret).
        fresh: Option<String>,
        /// The event's text.
        why: String,
    },
}

/// Chooses whether a rotation starts: when `spec.credentials` names a new
/// secret, or the annotation asks for a new generated password, and none
/// is in progress. `mounted` is the superuser secret instance 0 mounts.
/// The app user's request waits until its first login is set. Pure.
pub fn plan_start(
    pgc: &PostgresCluster,
    status: &PostgresClusterStatus,
    mounted: Option<&str>,
) -> Start {
    let asked = pgc
        .metadata
        .annotations
        .get(ROTATE_PASSWORD_ANNOTATION)
        .cloned();
    let rotation = status.password_rotation.as_ref();
    if rotation.is_some_and(|r| r.phase.is_some()) {
        return Start::Continue;
    }
    if let Some((user, from, to)) = spec_change(pgc, status, mounted) {
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
        return Start::Begin {
            user,
            requested: rotation.and_then(|r| r.requested.clone()),
            from_secret: Some(from),
            fresh: None,
            why,
        };
    }
    if asked.is_none() || asked == rotation.and_then(|r| r.requested.clone()) {
        return Start::Continue;
    }
    let user = match requested_user(asked.as_deref().unwrap_or_default()) {
        Ok(u) => u,
        Err(why) => {
            return Start::Skip {
                requested: asked,
                why,
            }
        }
    };
    if user == RotatedUser::App && status.app_user.is_none() {
        return Start::Wait;
    }
    if spec_secret(pgc, user).is_some() {
        return Start::Skip {
            requested: asked,
            why: "that password comes from a secret named in spec.credentials: point the spec at a secret holding the new value to rotate it".to_owned(),
        };
    }
    let role = role_of(pgc, status, user);
    if !plain_identifier(&role) {
        return Start::Skip {
            requested: asked,
            why: "the role name is not a plain identifier (letters, digits, _)".to_owned(),
        };
    }
    let (fresh, why) = match user {
        RotatedUser::App => (
            next_purpose(login_purpose(pgc, &role)),
            format!(
                "rotating the app user's password: setting a new one on login {role}, which applications move to; {} keeps working until the next rotation",
                status.app_user.as_deref().unwrap_or_default()
            ),
        ),
        RotatedUser::Superuser => (
            next_purpose(SUPERUSER),
            "rotating the password of postgres: setting a new one in PostgreSQL".to_owned(),
        ),
    };
    Start::Begin {
        user,
        requested: asked,
        from_secret: rotation.and_then(|r| r.from_secret.clone()),
        fresh: Some(fresh),
        why,
    }
}

impl Start {
    /// Writes the choice into `status`: the rotation to render, and the
    /// event to record. Pure.
    pub fn apply(
        self,
        status: &mut PostgresClusterStatus,
    ) -> (Option<PgPasswordRotation>, Option<Notice>) {
        match self {
            Start::Continue => (
                status
                    .password_rotation
                    .clone()
                    .filter(|r| r.phase.is_some()),
                None,
            ),
            Start::Wait => (None, None),
            Start::Skip { requested, why } => {
                status
                    .password_rotation
                    .get_or_insert_with(Default::default)
                    .requested = requested;
                (
                    None,
                    Some(Notice::new(EventType::Warning, "RotationSkipped", why)),
                )
            }
            Start::Begin {
                user,
                requested,
                from_secret,
                why,
                ..
            } => {
                let rotation = status
                    .password_rotation
                    .get_or_insert_with(Default::default);
                rotation.user = Some(user);
                rotation.phase = Some(PgRotationPhase::Alter);
                rotation.requested = requested;
                rotation.from_secret = from_secret;
                (
                    Some(rotation.clone()),
                    Some(Notice::new(EventType::Normal, "PasswordRotation", why)),
                )
            }
        }
    }
}

/// Starts a rotation when [`plan_start`] says so: generates its fresh
/// password first, then records it in `status`. Returns the rotation to
/// render and the event to record.
pub async fn start(
    ctx: &Context,
    pgc: &PostgresCluster,
    status: &mut PostgresClusterStatus,
) -> Result<(Option<PgPasswordRotation>, Option<Notice>), ReconcileError> {
    let in_progress = status
        .password_rotation
        .as_ref()
        .is_some_and(|r| r.phase.is_some());
    // Read only when a spec secret could have changed under the instances.
    let mounted = match spec_secret(pgc, RotatedUser::Superuser) {
        Some(_) if !in_progress => {
            let first = render::instance_name(pgc.metadata.name.as_str(), 0);
            ctx.swarm
                .mounted_secret(&first, "pg-superuser-password")
                .await?
        }
        _ => None,
    };
    let start = plan_start(pgc, status, mounted.as_deref());
    if let Start::Begin {
        fresh: Some(purpose),
        ..
    } = &start
    {
        // A fresh next password (a leftover of an interrupted request goes).
        ctx.store
            .put_credential(
                KIND,
                pgc.metadata.name.as_str(),
                purpose,
                &generate_password(),
            )
            .await?;
    }
    Ok(start.apply(status))
}

/// What a superuser rotation does in a pass: the pure choice
/// [`superuser_step`] makes from its phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SuperuserStep {
    /// No superuser rotation is under way.
    Idle,
    /// It waits (why).
    Wait(String),
    /// `Alter`: the job sets the password in secret `new` for postgres
    /// against `leader`; once it took, [`altered`] moves the rotation on.
    Alter {
        /// The settled leader the job connects to.
        leader: String,
        /// The secret holding the new password.
        new: String,
    },
    /// `Use`: every instance mounts the new secret (the rollout that
    /// follows `Alter` is done once the cluster is settled again), so the
    /// rotation ends ([`finished`]).
    Finish,
}

/// The step of the superuser rotation in `rotation`, if one is under way,
/// for a cluster settled with leader `settled_leader` whose new superuser
/// secret (during `Alter`) is `next_superuser`. Pure.
pub fn superuser_step(
    rotation: Option<&PgPasswordRotation>,
    settled_leader: Option<&str>,
    next_superuser: Option<&str>,
) -> SuperuserStep {
    let Some(phase) = rotation
        .filter(|r| r.user == Some(RotatedUser::Superuser))
        .and_then(|r| r.phase)
    else {
        return SuperuserStep::Idle;
    };
    let Some(leader) = settled_leader else {
        return SuperuserStep::Wait(format!(
            "password rotation ({phase:?}) waits for a settled cluster"
        ));
    };
    match (phase, next_superuser) {
        (PgRotationPhase::Alter, Some(new)) => SuperuserStep::Alter {
            leader: leader.to_owned(),
            new: new.to_owned(),
        },
        (PgRotationPhase::Alter, None) => {
            SuperuserStep::Wait("password rotation: preparing".to_owned())
        }
        (PgRotationPhase::Use, _) => SuperuserStep::Finish,
    }
}

/// PostgreSQL took the superuser's new password: the instances move to its
/// secret one at a time (`Use`). Pure.
pub fn altered(rotation: &mut PgPasswordRotation) -> Notice {
    rotation.phase = Some(PgRotationPhase::Use);
    Notice::new(
        EventType::Normal,
        "PasswordRotation",
        "PostgreSQL takes the new password of postgres: moving the instances to its secret one at a time".to_owned(),
    )
}

/// Every instance uses the new secret: the rotation ends. Pure.
pub fn finished(rotation: &mut PgPasswordRotation) -> Notice {
    rotation.phase = None;
    rotation.from_secret = None;
    Notice::new(
        EventType::Normal,
        "PasswordRotation",
        "password of postgres rotated: every instance uses the new secret".to_owned(),
    )
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
mod tests;
