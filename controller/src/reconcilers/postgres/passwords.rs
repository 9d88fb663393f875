//! A PostgresCluster's passwords: the secrets its instances mount, the
//! logins a job sets, and the superuser rotation's steps.

use std::collections::{BTreeMap, HashMap};

use haswarm_crds::postgres::{
    PgLogin, PgPasswordRotation, PgRotationPhase, PostgresClusterStatus, RotatedUser,
};
use haswarm_crds::{EventType, PostgresCluster};

use super::logins::{self, LoginChange, RoleKind};
use super::reconcile::KIND;
use super::render::{self, purpose, PasswordSecrets};
use super::rotate;
use crate::reconcilers::contents as shared;
use crate::reconcilers::status::Notice;
use crate::reconcilers::wait::{Flow, Wait};
use crate::runtime::{Context, ReconcileError};
use crate::swarm::{Owner, SwarmError};

/// The passwords: the secrets the instances mount, the generated passwords
/// to keep in secrets, and the logins a job should have set.
#[derive(Debug)]
pub(super) struct Passwords {
    /// What the instances mount.
    pub secrets: PasswordSecrets,
    /// Generated passwords by purpose (each becomes a content-named secret).
    pub generated: HashMap<String, Vec<u8>>,
    /// During a superuser rotation's `Alter`: the secret with its new password.
    next_superuser: Option<String>,
    /// The app login to set: its first one, or a rotation's target.
    app: Option<PgLogin>,
    /// Each `bootstrap.users` role's secret.
    users: BTreeMap<String, String>,
}

/// The secret a password is in: the user's where named (it must exist),
/// else a content-named one of the cluster's holding the password stored as
/// `stored_as`, kept under `purpose`.
async fn secret_for(
    ctx: &Context,
    (owner, name): (&Owner, &str),
    user: Option<&haswarm_crds::common::SecretRef>,
    purpose: &str,
    stored_as: &str,
    generated: &mut HashMap<String, Vec<u8>>,
) -> Result<String, ReconcileError> {
    if let Some(r) = user {
        if ctx.swarm.secret_id(&r.name).await?.is_none() {
            return Err(ReconcileError::Swarm(SwarmError::NotFound(format!(
                "secret {:?} named in spec",
                r.name
            ))));
        }
        return Ok(r.name.clone());
    }
    let pw = shared::stored_password(ctx, KIND, name, stored_as).await?;
    let n = crate::swarm::objects::content_name(owner, purpose, &pw);
    generated.insert(purpose.to_owned(), pw);
    Ok(n)
}

/// The phase of a rotation of `user`, when one is under way.
fn phase_of(rotation: Option<&PgPasswordRotation>, user: RotatedUser) -> Option<PgRotationPhase> {
    rotation
        .filter(|r| r.user == Some(user))
        .and_then(|r| r.phase)
}

/// The superuser's password secret, and during a rotation's `Alter` phase
/// the secret of the password it moves to.
async fn superuser(
    ctx: &Context,
    at: (&Owner, &str),
    pgc: &PostgresCluster,
    rotation: Option<&PgPasswordRotation>,
    generated: &mut HashMap<String, Vec<u8>>,
) -> Result<(String, Option<String>), ReconcileError> {
    let su = phase_of(rotation, RotatedUser::Superuser);
    let from_spec = rotation.is_some_and(|r| r.from_secret.is_some());
    let c = &pgc.spec.credentials;
    let mut next_superuser = None;
    let superuser = match (su, rotation.and_then(|r| r.from_secret.clone())) {
        (Some(PgRotationPhase::Alter), Some(from)) => {
            next_superuser = rotate::spec_secret(pgc, RotatedUser::Superuser).map(str::to_owned);
            from
        }
        _ => {
            let stored_as = if su == Some(PgRotationPhase::Use) && !from_spec {
                rotate::next_purpose(rotate::SUPERUSER)
            } else {
                rotate::SUPERUSER.to_owned()
            };
            let current = secret_for(
                ctx,
                at,
                c.superuser_secret.as_ref(),
                rotate::SUPERUSER,
                &stored_as,
                generated,
            )
            .await?;
            if su == Some(PgRotationPhase::Alter) {
                let next = rotate::next_purpose(rotate::SUPERUSER);
                next_superuser = Some(secret_for(ctx, at, None, &next, &next, generated).await?);
            }
            current
        }
    };
    Ok((superuser, next_superuser))
}

/// The app user's login to set now: the bootstrap owner's at the first
/// pass, a rotation's target login during its `Alter` phase, else none.
/// The logins in use keep their generated secrets in `generated`.
async fn app_login(
    ctx: &Context,
    at: (&Owner, &str),
    pgc: &PostgresCluster,
    rotation: Option<&PgPasswordRotation>,
    status: &PostgresClusterStatus,
    generated: &mut HashMap<String, Vec<u8>>,
) -> Result<Option<PgLogin>, ReconcileError> {
    let c = &pgc.spec.credentials;
    let from_spec = rotation.is_some_and(|r| r.from_secret.is_some());
    let name = pgc.metadata.name.as_str();
    let owner = at.0;
    let current = status
        .app_user
        .clone()
        .zip(status.app_password_secret.clone())
        .map(|(user, password_secret)| PgLogin {
            user,
            password_secret,
        });
    let app = match &current {
        None => {
            let owner_role = &pgc.spec.bootstrap.owner;
            let p = rotate::login_purpose(pgc, owner_role);
            let secret = secret_for(ctx, at, c.app_user_secret.as_ref(), p, p, generated).await?;
            Some(PgLogin {
                user: owner_role.clone(),
                password_secret: secret,
            })
        }
        Some(cur) => {
            let target = (phase_of(rotation, RotatedUser::App) == Some(PgRotationPhase::Alter))
                .then(|| rotate::other_login(pgc, &cur.user));
            // The logins in use keep their generated secrets, except the
            // one a rotation gives a new password now.
            for login in [Some(cur), status.previous_app_login.as_ref()]
                .into_iter()
                .flatten()
                .filter(|l| Some(&l.user) != target.as_ref())
            {
                let p = rotate::login_purpose(pgc, &login.user);
                if let Some(pw) = ctx.store.credential(KIND, name, p)? {
                    if crate::swarm::objects::content_name(owner, p, &pw) == login.password_secret {
                        generated.insert(p.to_owned(), pw);
                    }
                }
            }
            match target {
                None => None,
                Some(user) => {
                    let p = rotate::login_purpose(pgc, &user);
                    let named = c.app_user_secret.as_ref().filter(|_| from_spec);
                    let secret =
                        secret_for(ctx, at, named, p, &rotate::next_purpose(p), generated).await?;
                    Some(PgLogin {
                        user,
                        password_secret: secret,
                    })
                }
            }
        }
    };
    Ok(app)
}

/// Works out every password secret. During a superuser rotation's `Use`
/// phase the superuser's secret holds the new password (named as it will
/// be once the rotation ends: nothing restarts then); during `Alter` the
/// new password is in one more secret (`next_superuser`), or, from a spec
/// secret, the instances keep the one they use. The app user's logins in
/// use keep their generated secrets; a rotation's target login gets a new
/// one under its purpose.
pub(super) async fn passwords(
    ctx: &Context,
    (owner, pgc): (&Owner, &PostgresCluster),
    rotation: Option<&PgPasswordRotation>,
    status: &PostgresClusterStatus,
) -> Result<Passwords, ReconcileError> {
    let name = pgc.metadata.name.as_str();
    let at = (owner, name);
    let c = &pgc.spec.credentials;
    let mut generated = HashMap::new();
    let (superuser, next_superuser) = superuser(ctx, at, pgc, rotation, &mut generated).await?;
    let replication = secret_for(
        ctx,
        at,
        c.replication_secret.as_ref(),
        purpose::REPLICATION,
        purpose::REPLICATION,
        &mut generated,
    )
    .await?;
    let api = secret_for(ctx, at, None, purpose::API, purpose::API, &mut generated).await?;

    let app = app_login(ctx, at, pgc, rotation, status, &mut generated).await?;

    let mut users = BTreeMap::new();
    for u in &pgc.spec.bootstrap.users {
        let p = render::user_purpose(&u.name);
        let secret =
            secret_for(ctx, at, u.password_secret.as_ref(), &p, &p, &mut generated).await?;
        users.insert(u.name.clone(), secret);
    }
    let backup = super::backup::secrets(ctx, (owner, pgc), KIND, &mut generated).await?;
    Ok(Passwords {
        secrets: PasswordSecrets {
            superuser,
            replication,
            api,
            backup,
        },
        generated,
        next_superuser,
        app,
        users,
    })
}

/// The logins a job should set: the app login `pw.app`, and each bootstrap
/// user that is new or whose secret changed.
fn pending_logins(
    pgc: &PostgresCluster,
    pw: &Passwords,
    status: &PostgresClusterStatus,
) -> Vec<LoginChange> {
    let app = pw.app.as_ref().map(|l| LoginChange::app(pgc, l));
    let users = pgc.spec.bootstrap.users.iter().filter_map(|u| {
        let secret = pw.users.get(&u.name)?;
        let attributes = render::user_attributes(u);
        let done = status.user_password_secrets.get(&u.name) == Some(secret)
            && status.user_attributes.get(&u.name) == Some(&attributes.join(" "));
        (!done).then(|| LoginChange {
            role: u.name.clone(),
            secret: secret.clone(),
            kind: RoleKind::User { attributes },
        })
    });
    app.into_iter().chain(users).collect()
}

/// Sets the logins `pending_logins` finds, once the cluster is settled
/// (`settled_leader`), and records them: the app user's first login, or a
/// rotation's (which ends it: the login in use becomes the previous one),
/// and the users'. Returns what is in progress.
pub(super) async fn set_logins(
    ctx: &Context,
    (owner, pgc): (&Owner, &PostgresCluster),
    status: &mut PostgresClusterStatus,
    (settled_leader, pw): (Option<&str>, &Passwords),
    notices: &mut Vec<Notice>,
) -> Result<Option<Wait>, ReconcileError> {
    let changes = pending_logins(pgc, pw, status);
    let dropped: Vec<&String> = status
        .user_password_secrets
        .keys()
        .filter(|u| !pw.users.contains_key(*u))
        .collect();
    if !dropped.is_empty() {
        notices.push(Notice::new(
            EventType::Normal,
            "UserKept",
            format!(
                "{} left spec.bootstrap.users: the role stays in PostgreSQL (it may own data; drop it yourself) and haswarm no longer manages its password",
                dropped.iter().map(|u| u.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ));
        status
            .user_password_secrets
            .retain(|u, _| pw.users.contains_key(u));
    }
    status
        .user_attributes
        .retain(|u, _| pw.users.contains_key(u));
    if changes.is_empty() {
        status.user_password_secrets.clone_from(&pw.users);
        status.user_attributes = user_attributes(pgc, pw);
        return Ok(None);
    }
    let roles: Vec<&str> = changes.iter().map(|c| c.role.as_str()).collect();
    let Some(leader) = settled_leader else {
        return Ok(Some(Wait::new(
            Flow::Logins,
            format!(
                "setting the password of {} waits for a settled cluster",
                roles.join(", ")
            ),
        )));
    };
    let job = (pw.secrets.superuser.as_str(), changes.as_slice());
    if !logins::run(ctx, (owner, pgc), job, leader, notices).await? {
        return Ok(Some(Wait::new(
            Flow::Logins,
            format!(
                "setting the password of {} failed; retrying",
                roles.join(", ")
            ),
        )));
    }
    if let Some(app) = &pw.app {
        let rotating = status
            .password_rotation
            .as_mut()
            .filter(|r| r.user == Some(RotatedUser::App) && r.phase.is_some());
        if let Some(rotation) = rotating {
            rotate::keep_next(
                ctx,
                (owner, pgc),
                rotate::login_purpose(pgc, &app.user),
                &app.password_secret,
            )
            .await?;
            rotation.phase = None;
            rotation.from_secret = None;
            let previous = status
                .app_user
                .clone()
                .zip(status.app_password_secret.clone())
                .map(|(user, password_secret)| PgLogin {
                    user,
                    password_secret,
                });
            notices.push(Notice::new(
                EventType::Normal,
                "PasswordRotation",
                format!(
                    "app user's password rotated: applications log in as {} with secret {}; {} keeps working until the next rotation",
                    app.user,
                    app.password_secret,
                    previous
                        .as_ref()
                        .map_or_else(String::new, |p| format!("{} (secret {})", p.user, p.password_secret))
                ),
            ));
            status.previous_app_login = previous;
        }
        status.app_user = Some(app.user.clone());
        status.app_password_secret = Some(app.password_secret.clone());
    }
    notices.push(Notice::new(
        EventType::Normal,
        "PasswordsSet",
        format!("set the password of {}", roles.join(", ")),
    ));
    status.user_password_secrets.clone_from(&pw.users);
    status.user_attributes = user_attributes(pgc, pw);
    Ok(None)
}

/// The attributes of every bootstrap user haswarm manages, as recorded in
/// the status once set.
fn user_attributes(pgc: &PostgresCluster, pw: &Passwords) -> BTreeMap<String, String> {
    pgc.spec
        .bootstrap
        .users
        .iter()
        .filter(|u| pw.users.contains_key(&u.name))
        .map(|u| (u.name.clone(), render::user_attributes(u).join(" ")))
        .collect()
}

/// Moves a superuser password rotation on ([`rotate::superuser_step`]): in
/// `Alter`, once the cluster is settled (`settled_leader`), the job sets
/// the new password and the instances move to it; in `Use`, once they all
/// have, the rotation ends. Returns what is in progress; the events go to
/// `notices`. (The app user's rotations are logins: see `set_logins`.)
pub(super) async fn advance_rotation(
    ctx: &Context,
    (owner, pgc): (&Owner, &PostgresCluster),
    status: &mut PostgresClusterStatus,
    (settled_leader, pw): (Option<&str>, &Passwords),
    notices: &mut Vec<Notice>,
) -> Result<Option<Wait>, ReconcileError> {
    let step = rotate::superuser_step(
        status.password_rotation.as_ref(),
        settled_leader,
        pw.next_superuser.as_deref(),
    );
    let Some(rotation) = status.password_rotation.as_mut() else {
        return Ok(None);
    };
    match step {
        rotate::SuperuserStep::Idle => Ok(None),
        rotate::SuperuserStep::Wait(why) => Ok(Some(Wait::new(Flow::PasswordRotation, why))),
        rotate::SuperuserStep::Alter { leader, new } => {
            let change = LoginChange {
                role: "postgres".to_owned(),
                secret: new,
                kind: RoleKind::Superuser,
            };
            let superuser = &pw.secrets.superuser;
            let job = (superuser.as_str(), std::slice::from_ref(&change));
            if logins::run(ctx, (owner, pgc), job, &leader, notices).await? {
                notices.push(rotate::altered(rotation));
            }
            Ok(Some(Wait::new(
                Flow::PasswordRotation,
                "password rotation: moving the instances to the new password",
            )))
        }
        rotate::SuperuserStep::Finish => {
            rotate::keep_next(ctx, (owner, pgc), rotate::SUPERUSER, &pw.secrets.superuser).await?;
            notices.push(rotate::finished(rotation));
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_sets_the_app_login_and_the_users_that_are_new_or_have_a_new_secret() {
        let pgc: PostgresCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "haswarm.io/v1alpha1",
            "kind": "PostgresCluster",
            "metadata": {"name": "db"},
            "spec": {"bootstrap": {"users": [
                {"name": "reporting", "options": ["CREATEDB"]},
                {"name": "batch"}
            ]}}
        }))
        .expect("pgc");
        let mut pw = Passwords {
            secrets: PasswordSecrets {
                superuser: "s".into(),
                replication: "r".into(),
                api: "a".into(),
                backup: None,
            },
            generated: HashMap::new(),
            next_superuser: None,
            app: Some(PgLogin {
                user: "app_alt".into(),
                password_secret: "db-app-alt-password-1".into(),
            }),
            users: BTreeMap::from([
                (
                    "reporting".to_owned(),
                    "db-user-reporting-password-1".to_owned(),
                ),
                ("batch".to_owned(), "batch-secret-2".to_owned()),
            ]),
        };
        let mut status = PostgresClusterStatus::default();
        let all = pending_logins(&pgc, &pw, &status);
        assert_eq!(
            all.iter().map(|c| c.role.as_str()).collect::<Vec<_>>(),
            ["app_alt", "reporting", "batch"]
        );
        assert_eq!(all[0].kind, RoleKind::Alternate { of: "app".into() });
        let RoleKind::User { attributes } = &all[1].kind else {
            panic!("{:?}", all[1].kind);
        };
        assert!(
            attributes.contains(&"CREATEDB".to_owned()),
            "{attributes:?}"
        );
        // Set already: only a user whose secret changed.
        pw.app = None;
        status.user_password_secrets = BTreeMap::from([
            (
                "reporting".to_owned(),
                "db-user-reporting-password-1".to_owned(),
            ),
            ("batch".to_owned(), "batch-secret-1".to_owned()),
        ]);
        status.user_attributes = user_attributes(&pgc, &pw);
        let changed = pending_logins(&pgc, &pw, &status);
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].role, "batch");
        assert_eq!(changed[0].secret, "batch-secret-2");
        // Or whose options changed: CREATEDB taken back.
        let mut fewer = pgc.clone();
        fewer.spec.bootstrap.users[0].options.clear();
        status.user_password_secrets.clone_from(&pw.users);
        let changed = pending_logins(&fewer, &pw, &status);
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].role, "reporting");
        let RoleKind::User { attributes } = &changed[0].kind else {
            panic!("{:?}", changed[0].kind);
        };
        assert!(
            attributes.contains(&"NOCREATEDB".to_owned()),
            "{attributes:?}"
        );
        assert!(pending_logins(&pgc, &pw, &status).is_empty());
    }
}
