//! A RedisSentinelGroup's password: the secret members use and, during a
//! rotation, the other one they accept; the rotation's phases.

use haswarm_crds::redis::{PasswordRotation, RedisSentinelGroupStatus, RotationPhase};
use haswarm_crds::{EventType, RedisSentinelGroup};

use super::render::purpose;
use super::KIND;
use crate::reconcilers::contents::{self as shared, generate_password};
use crate::reconcilers::status::Notice;
use crate::runtime::{Context, ReconcileError};
use crate::swarm::{Owner, SwarmError};

/// The passwords of a pass: the one members use (secret name, and the value
/// when haswarm generates it) and, during a rotation, the other one they accept.
pub(super) struct Passwords {
    pub secret: String,
    pub generated: Option<Vec<u8>>,
    pub extra: Option<Extra>,
}

/// The other accepted password during a rotation.
pub(super) enum Extra {
    /// A generated one, rendered into a secret of the group's.
    Generated(Vec<u8>),
    /// A secret of the user's (spec.passwordSecret, before or after a change).
    Named(String),
}

/// A stored credential of this group, created with a new password when missing.
async fn credential(ctx: &Context, name: &str, purpose: &str) -> Result<Vec<u8>, ReconcileError> {
    shared::stored_password(ctx, KIND, name, purpose).await
}

/// The passwords for the rotation in progress (if any).
pub(super) async fn passwords(
    ctx: &Context,
    rsg: &RedisSentinelGroup,
    owner: &Owner,
    rotation: Option<&PasswordRotation>,
) -> Result<Passwords, ReconcileError> {
    let phase = rotation.and_then(|r| r.phase);
    if let Some(r) = &rsg.spec.password_secret {
        if ctx.swarm.secret_id(&r.name).await?.is_none() {
            return Err(ReconcileError::Swarm(SwarmError::NotFound(format!(
                "secret {:?} named by spec.passwordSecret",
                r.name
            ))));
        }
        let from = rotation.and_then(|r| r.from_secret.as_deref());
        let (secret, extra) = named_in(phase, &r.name, from);
        return Ok(Passwords {
            secret,
            generated: None,
            extra: extra.map(Extra::Named),
        });
    }
    let name = rsg.metadata.name.as_str();
    let (used, extra) = generated_in(phase);
    let used = credential(ctx, name, used.purpose()).await?;
    let extra = match extra {
        Some(e) => Some(Extra::Generated(credential(ctx, name, e.purpose()).await?)),
        None => None,
    };
    Ok(Passwords {
        secret: crate::swarm::objects::content_name(owner, purpose::PASSWORD, &used),
        generated: Some(used),
        extra,
    })
}

/// One of the two generated passwords haswarm stores for a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stored {
    /// The password in use before a rotation (the new one once it is used).
    Current,
    /// The one a rotation moves to.
    Next,
}

impl Stored {
    fn purpose(self) -> &'static str {
        match self {
            Self::Current => purpose::PASSWORD,
            Self::Next => purpose::PASSWORD_NEXT,
        }
    }
}

/// A generated password's phase: the one members use, and the other one
/// they accept. `Use` ends by storing the next password as the current one,
/// so `Forget` uses the current one again. Pure.
fn generated_in(phase: Option<RotationPhase>) -> (Stored, Option<Stored>) {
    match phase {
        None | Some(RotationPhase::Forget) => (Stored::Current, None),
        Some(RotationPhase::Accept) => (Stored::Current, Some(Stored::Next)),
        Some(RotationPhase::Use) => (Stored::Next, Some(Stored::Current)),
    }
}

/// The same for a password of the user's secrets: `to` is
/// spec.passwordSecret, `from` the secret a rotation leaves. Pure.
fn named_in(
    phase: Option<RotationPhase>,
    to: &str,
    from: Option<&str>,
) -> (String, Option<String>) {
    match (phase, from) {
        (Some(RotationPhase::Accept), Some(from)) => (from.to_owned(), Some(to.to_owned())),
        (Some(RotationPhase::Use), Some(from)) => (to.to_owned(), Some(from.to_owned())),
        _ => (to.to_owned(), None),
    }
}

/// Starts a password rotation when the annotation asks for one; returns
/// the phase to render. Each phase is a whole rolling update, so at every
/// moment every member accepts the password every other member uses:
/// replication and sentinel monitoring never see a wrong password.
pub(super) async fn start_rotation(
    ctx: &Context,
    rsg: &RedisSentinelGroup,
    status: &mut RedisSentinelGroupStatus,
    notices: &mut Vec<Notice>,
) -> Result<Option<RotationPhase>, ReconcileError> {
    let asked = rsg
        .metadata
        .annotations
        .get(haswarm_crds::redis::ROTATE_PASSWORD_ANNOTATION)
        .cloned();
    let previous = status.password_secret.clone();
    let rotation = status
        .password_rotation
        .get_or_insert_with(Default::default);
    if rotation.phase.is_none() {
        // A new spec.passwordSecret: move to it in the same three phases.
        if let (Some(r), Some(prev)) = (&rsg.spec.password_secret, previous) {
            if r.name != prev {
                rotation.from_secret = Some(prev.clone());
                rotation.phase = Some(RotationPhase::Accept);
                notices.push(Notice::new(
                    EventType::Normal,
                    "PasswordRotation",
                    format!(
                        "spec.passwordSecret changed from {prev} to {}: every member first learns to accept the new password",
                        r.name
                    ),
                ));
                return Ok(rotation.phase);
            }
        }
    }
    if rotation.phase.is_some() || asked.is_none() || asked == rotation.requested {
        let phase = rotation.phase;
        if rotation == &PasswordRotation::default() {
            status.password_rotation = None;
        }
        return Ok(phase);
    }
    rotation.requested = asked;
    if rsg.spec.password_secret.is_some() {
        notices.push(Notice::new(
            EventType::Warning,
            "RotationSkipped",
            "the password comes from spec.passwordSecret: point it at a new secret to rotate it"
                .to_owned(),
        ));
        return Ok(None);
    }
    // A fresh next password (a leftover of an interrupted request goes).
    ctx.store
        .put_credential(
            KIND,
            rsg.metadata.name.as_str(),
            purpose::PASSWORD_NEXT,
            &generate_password(),
        )
        .await?;
    rotation.phase = Some(RotationPhase::Accept);
    notices.push(Notice::new(
        EventType::Normal,
        "PasswordRotation",
        "rotating the password: every member first learns to accept the new one".to_owned(),
    ));
    Ok(rotation.phase)
}

/// Moves a rotation to its next phase once the current one has rolled out
/// to every member and the group is healthy.
pub(super) async fn advance_rotation(
    ctx: &Context,
    rsg: &RedisSentinelGroup,
    status: &mut RedisSentinelGroupStatus,
    notices: &mut Vec<Notice>,
) -> Result<(), ReconcileError> {
    let name = rsg.metadata.name.as_str();
    let Some(rotation) = status.password_rotation.as_mut() else {
        return Ok(());
    };
    let Some(phase) = rotation.phase else {
        return Ok(());
    };
    let (next, message) = after(phase);
    match phase {
        RotationPhase::Use if rsg.spec.password_secret.is_none() => {
            let next = credential(ctx, name, purpose::PASSWORD_NEXT).await?;
            ctx.store
                .put_credential(KIND, name, purpose::PASSWORD, &next)
                .await?;
        }
        RotationPhase::Forget => rotation.from_secret = None,
        _ => {}
    }
    rotation.phase = next;
    notices.push(Notice::new(
        EventType::Normal,
        "PasswordRotation",
        message.to_owned(),
    ));
    Ok(())
}

/// The phase after `phase` once it rolled out to every member, and what the
/// event says. Pure.
fn after(phase: RotationPhase) -> (Option<RotationPhase>, &'static str) {
    match phase {
        RotationPhase::Accept => (
            Some(RotationPhase::Use),
            "every member accepts the new password: switching every member to it",
        ),
        RotationPhase::Use => (
            Some(RotationPhase::Forget),
            "every member uses the new password: making them forget the old one",
        ),
        RotationPhase::Forget => (
            None,
            "password rotated: the old password is no longer accepted",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RotationPhase::{Accept, Forget, Use};

    #[test]
    fn generated_passwords_are_long_and_plain() {
        let a = generate_password();
        assert_eq!(a.len(), 32);
        assert!(a.iter().all(u8::is_ascii_alphanumeric));
        assert_ne!(a, generate_password());
    }

    #[test]
    fn a_rotation_goes_accept_use_forget_then_ends() {
        let table = [
            (Accept, Some(Use), "accepts the new password"),
            (Use, Some(Forget), "uses the new password"),
            (Forget, None, "password rotated"),
        ];
        for (phase, next, says) in table {
            let (n, message) = after(phase);
            assert_eq!(n, next, "{phase:?}");
            assert!(message.contains(says), "{phase:?}: {message}");
        }
    }

    /// At every phase boundary the password members use next is one they
    /// all accepted in the phase before: no member ever sees a wrong one.
    #[test]
    fn every_phase_accepts_what_the_next_one_uses() {
        use Stored::{Current, Next};
        let table = [
            (None, (Current, None)),
            (Some(Accept), (Current, Some(Next))),
            (Some(Use), (Next, Some(Current))),
            // `Use` stored Next as Current: the new password, alone.
            (Some(Forget), (Current, None)),
        ];
        for (phase, want) in table {
            assert_eq!(generated_in(phase), want, "{phase:?}");
        }
        let (_, accepted) = generated_in(Some(Accept));
        assert_eq!(Some(generated_in(Some(Use)).0), accepted);
    }

    #[test]
    fn a_move_between_secrets_of_the_users_takes_the_same_phases() {
        let n = |p, from| named_in(p, "new", from);
        let s = |x: &str| x.to_owned();
        assert_eq!(n(None, None), (s("new"), None));
        assert_eq!(n(Some(Accept), Some("old")), (s("old"), Some(s("new"))));
        assert_eq!(n(Some(Use), Some("old")), (s("new"), Some(s("old"))));
        assert_eq!(n(Some(Forget), Some("old")), (s("new"), None));
        // A rotation of a generated password records no secret it leaves.
        assert_eq!(n(Some(Accept), None), (s("new"), None));
    }
}
