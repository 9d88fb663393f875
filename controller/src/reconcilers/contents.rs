//! A resource's network, configs and secrets on the Swarm, shared by every
//! kind: create them (content-named, so a change is a new object), give the
//! rendered services their ids, and list them as owned objects.

use std::collections::{BTreeMap, HashMap};

use haswarm_crds::meta::OwnedObject;

use super::common::DesiredContent;
use crate::runtime::controller::{Context, ReconcileError};
use crate::swarm::objects::ContentKind;
use crate::swarm::{DesiredService, Owner};

/// The names the apply step gives `contents`, by purpose:
/// `<owner>-<purpose>-<hash8 of the content>`.
pub fn content_names(owner_name: &str, contents: &[DesiredContent]) -> HashMap<String, String> {
    contents
        .iter()
        .map(|c| {
            (
                c.purpose.clone(),
                format!(
                    "{owner_name}-{}-{}",
                    c.purpose,
                    crate::swarm::labels::short_hash(&c.data)
                ),
            )
        })
        .collect()
}

/// Creates the network and every config and secret that is missing.
///
/// # Errors
/// Engine errors; a name taken by a foreign object.
pub async fn ensure(
    ctx: &Context,
    owner: &Owner,
    network: &str,
    encrypted: bool,
    contents: &[DesiredContent],
) -> Result<(), ReconcileError> {
    ctx.swarm.ensure_network(owner, network, encrypted).await?;
    for c in contents {
        ctx.swarm
            .ensure_content(c.kind, owner, &c.purpose, &c.data)
            .await?;
    }
    Ok(())
}

/// Fills in the ids of the configs and secrets the services reference: the
/// owner's own, or (for secrets the user names) any secret of that name.
///
/// # Errors
/// Engine errors.
pub async fn link(
    ctx: &Context,
    owner: &Owner,
    services: &mut [DesiredService],
) -> Result<(), ReconcileError> {
    let ids = |list: Vec<crate::swarm::objects::ContentObject>| -> HashMap<String, String> {
        list.into_iter().map(|o| (o.name, o.id)).collect()
    };
    let config_ids = ids(ctx
        .swarm
        .content_objects(ContentKind::Config, owner)
        .await?);
    let mut secret_ids = ids(ctx
        .swarm
        .content_objects(ContentKind::Secret, owner)
        .await?);
    let foreign: Vec<String> = services
        .iter()
        .filter_map(|s| s.spec.task_template.as_ref()?.container_spec.as_ref())
        .flat_map(|c| c.secrets.iter().flatten())
        .filter_map(|r| r.secret_name.clone())
        .filter(|n| !secret_ids.contains_key(n))
        .collect();
    for n in foreign {
        if let Some(id) = ctx.swarm.secret_id(&n).await? {
            secret_ids.insert(n, id);
        }
    }
    for s in services {
        if let Some(c) = s
            .spec
            .task_template
            .as_mut()
            .and_then(|t| t.container_spec.as_mut())
        {
            for r in c.secrets.iter_mut().flatten() {
                r.secret_id = r
                    .secret_name
                    .as_ref()
                    .and_then(|n| secret_ids.get(n))
                    .cloned();
            }
            for r in c.configs.iter_mut().flatten() {
                r.config_id = r
                    .config_name
                    .as_ref()
                    .and_then(|n| config_ids.get(n))
                    .cloned();
            }
        }
    }
    Ok(())
}

/// Owned-object entries for the network and the contents.
pub fn owned(
    network: &str,
    contents: &[DesiredContent],
    names: &HashMap<String, String>,
) -> Vec<OwnedObject> {
    let mut by_name: BTreeMap<String, &str> = BTreeMap::new();
    for c in contents {
        if let Some(n) = names.get(&c.purpose) {
            by_name.insert(
                n.clone(),
                if c.kind == ContentKind::Secret {
                    "secret"
                } else {
                    "config"
                },
            );
        }
    }
    std::iter::once(OwnedObject {
        kind: "network".into(),
        name: network.to_owned(),
        version: None,
    })
    .chain(by_name.into_iter().map(|(name, kind)| OwnedObject {
        kind: kind.into(),
        name,
        version: None,
    }))
    .collect()
}

/// 32 characters from [A-Za-z0-9]: about 190 bits, no character that needs
/// quoting in a config file, a URL or a YAML string.
pub fn generate_password() -> Vec<u8> {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
        .collect()
}

/// A password kept in the store for `kind/name` and `purpose`; generated
/// (and stored durably, before any Swarm object holds it) when missing.
///
/// # Errors
/// Store errors.
pub async fn stored_password(
    ctx: &Context,
    kind: &str,
    name: &str,
    purpose: &str,
) -> Result<Vec<u8>, ReconcileError> {
    Ok(match ctx.store.credential(kind, name, purpose)? {
        Some(pw) => pw,
        None => {
            let pw = generate_password();
            ctx.store.put_credential(kind, name, purpose, &pw).await?;
            pw
        }
    })
}

/// A generated credential that is not a password (a TLS identity, say):
/// the stored one, or `make`'s, stored first.
///
/// # Errors
/// Store errors, and `make`'s.
pub async fn stored_or_made(
    ctx: &Context,
    (kind, name, purpose): (&str, &str, &str),
    make: impl FnOnce() -> Result<Vec<u8>, ReconcileError>,
) -> Result<Vec<u8>, ReconcileError> {
    Ok(match ctx.store.credential(kind, name, purpose)? {
        Some(c) => c,
        None => {
            let c = make()?;
            ctx.store.put_credential(kind, name, purpose, &c).await?;
            c
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_content_and_owned_lists_network_then_contents() {
        let contents = vec![
            DesiredContent {
                kind: ContentKind::Config,
                purpose: "conf".into(),
                data: b"a".to_vec(),
            },
            DesiredContent {
                kind: ContentKind::Secret,
                purpose: "password".into(),
                data: b"b".to_vec(),
            },
        ];
        let names = content_names("db", &contents);
        assert!(names["conf"].starts_with("db-conf-"));
        assert_ne!(
            names["conf"],
            content_names(
                "db",
                &[DesiredContent {
                    kind: ContentKind::Config,
                    purpose: "conf".into(),
                    data: b"c".to_vec(),
                }]
            )["conf"]
        );
        let o = owned("db-net", &contents, &names);
        let kinds: Vec<&str> = o.iter().map(|o| o.kind.as_str()).collect();
        assert_eq!(kinds[0], "network");
        assert!(kinds.contains(&"secret") && kinds.contains(&"config"));
    }
}
