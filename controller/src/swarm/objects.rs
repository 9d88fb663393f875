//! Networks, node labels, secrets, configs and volumes: the Swarm objects
//! besides services that reconcilers own.
//!
//! Secrets and configs are immutable in Swarm, so they are named after their
//! content (`<owner>-<purpose>-<hash8>`): a change creates a new object, the
//! services roll to it, and [`Swarm::prune_content_objects`] removes the old
//! one once no service uses it.

use std::collections::HashMap;

use base64::Engine;
use bollard::models::{
    ConfigSpec, NetworkCreateRequest, NodeSpec, NodeSpecAvailabilityEnum, SecretSpec,
};
use bollard::query_parameters::{
    InspectNetworkOptions, ListConfigsOptions, ListContainersOptions, ListNetworksOptions,
    ListSecretsOptions, ListVolumesOptions, RemoveContainerOptions, RemoveVolumeOptions,
    UpdateNodeOptions,
};

use super::labels::{self, Owner};
use super::{Swarm, SwarmError};

/// Label naming what a secret or config is for (`password`, `sentinel-conf`...).
pub const PURPOSE: &str = "io.haswarm.purpose";

/// Node labels haswarm may write all start with this; others are never touched.
pub const NODE_LABEL_PREFIX: &str = "io.haswarm.";

/// The node label `haswarmctl node drain` sets: haswarm moves its members
/// off the node, then sets Swarm's availability to drain.
pub const DRAIN_LABEL: &str = "io.haswarm.drain";

/// Secrets and configs share one mechanism; this says which API to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentKind {
    /// A Swarm secret (encrypted at rest, mounted under /run/secrets).
    Secret,
    /// A Swarm config (plain, mounted where the service says).
    Config,
}

impl ContentKind {
    fn what(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::Config => "config",
        }
    }
}

/// A content-named object that exists: its name and labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentObject {
    /// Swarm id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Purpose label.
    pub purpose: String,
}

/// id, name and labels of a listed secret or config.
type Listed = (
    Option<String>,
    Option<String>,
    Option<HashMap<String, String>>,
);

/// The content-derived name of a secret or config.
pub fn content_name(owner: &Owner, purpose: &str, data: &[u8]) -> String {
    format!("{}-{purpose}-{}", owner.name, labels::short_hash(data))
}

impl Swarm {
    /// Makes sure an attachable overlay network `name` owned by `owner` exists.
    ///
    /// # Errors
    /// [`SwarmError::NameTaken`] when a foreign network has the name.
    pub async fn ensure_network(
        &self,
        owner: &Owner,
        name: &str,
        encrypted: bool,
    ) -> Result<(), SwarmError> {
        match self
            .docker()?
            .inspect_network(name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(n) if owner.owns(n.labels.as_ref()) => return Ok(()),
            Ok(_) => {
                return Err(SwarmError::NameTaken {
                    what: "network",
                    name: name.to_owned(),
                })
            }
            Err(e) => match SwarmError::from_bollard(e, || format!("network {name}")) {
                SwarmError::NotFound(_) => {}
                other => return Err(other),
            },
        }
        let mut options = HashMap::new();
        if encrypted {
            options.insert("encrypted".to_owned(), String::new());
        }
        self.docker()?
            .create_network(NetworkCreateRequest {
                name: name.to_owned(),
                driver: Some("overlay".into()),
                attachable: Some(true),
                options: Some(options),
                labels: Some(owner.labels()),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| SwarmError::from_bollard(e, || format!("network {name}")))
    }

    /// Removes every network `owner` owns.
    ///
    /// # Errors
    /// Engine errors (a network still in use is an error: remove services first).
    pub async fn remove_networks(&self, owner: &Owner) -> Result<Vec<String>, SwarmError> {
        let list = self
            .docker()?
            .list_networks(Some(ListNetworksOptions {
                filters: Some(owner.filters()),
            }))
            .await
            .map_err(|e| SwarmError::from_bollard(e, || "networks".into()))?;
        let mut removed = Vec::new();
        for n in list.into_iter().filter(|n| owner.owns(n.labels.as_ref())) {
            let name = n.name.unwrap_or_default();
            match self.docker()?.remove_network(&name).await {
                Ok(()) => removed.push(name),
                Err(e) => match SwarmError::from_bollard(e, || format!("network {name}")) {
                    SwarmError::NotFound(_) => {}
                    other => return Err(other),
                },
            }
        }
        Ok(removed)
    }

    /// Sets (`Some`) or removes (`None`) a node label, with the node's version
    /// index and a retry when another writer got there first.
    ///
    /// # Errors
    /// [`SwarmError::Api`] for a key outside `io.haswarm.` (never touched), engine errors.
    pub async fn set_node_label(
        &self,
        node: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), SwarmError> {
        if !key.starts_with(NODE_LABEL_PREFIX) {
            return Err(SwarmError::Api(format!(
                "refusing to change node label {key:?}: haswarm only writes labels under {NODE_LABEL_PREFIX}"
            )));
        }
        self.update_node(node, |spec| {
            let l = spec.labels.get_or_insert_with(Default::default);
            match value {
                Some(v) => l.insert(key.to_owned(), v.to_owned()).as_deref() != Some(v),
                None => l.remove(key).is_some(),
            }
        })
        .await
    }

    /// Sets a node's availability (`active`, `pause` or `drain`).
    ///
    /// # Errors
    /// Engine errors.
    pub async fn set_node_availability(
        &self,
        node: &str,
        availability: NodeSpecAvailabilityEnum,
    ) -> Result<(), SwarmError> {
        self.update_node(node, |spec| {
            spec.availability.replace(availability) != Some(availability)
        })
        .await
    }

    /// A node's availability as Swarm words it (`active`, `pause`, `drain`).
    ///
    /// # Errors
    /// Engine errors.
    pub async fn node_availability(&self, node: &str) -> Result<String, SwarmError> {
        let n = self
            .docker()?
            .inspect_node(node)
            .await
            .map_err(|e| SwarmError::from_bollard(e, || format!("node {node}")))?;
        Ok(n.spec
            .and_then(|s| s.availability)
            .map(|a| a.to_string())
            .unwrap_or_default())
    }

    /// Changes a node's spec with `change` (which says whether it changed
    /// anything), at the node's version index, retrying when another writer
    /// got there first.
    async fn update_node(
        &self,
        node: &str,
        change: impl Fn(&mut NodeSpec) -> bool,
    ) -> Result<(), SwarmError> {
        for _ in 0..5 {
            let n = self
                .docker()?
                .inspect_node(node)
                .await
                .map_err(|e| SwarmError::from_bollard(e, || format!("node {node}")))?;
            let version = n.version.and_then(|v| v.index).unwrap_or(0);
            let mut spec = n.spec.unwrap_or_default();
            if !change(&mut spec) {
                return Ok(());
            }
            let options = UpdateNodeOptions {
                version: i64::try_from(version).unwrap_or(i64::MAX),
            };
            match self.docker()?.update_node(node, spec, options).await {
                Ok(()) => return Ok(()),
                Err(e) => match SwarmError::from_bollard(e, || format!("node {node}")) {
                    SwarmError::OutOfSequence(_) => continue,
                    other => return Err(other),
                },
            }
        }
        Err(SwarmError::OutOfSequence(format!("node {node}")))
    }

    /// Creates the content-named secret or config for `data` unless it exists; returns its name.
    ///
    /// # Errors
    /// [`SwarmError::NameTaken`] when a foreign object has the name.
    pub async fn ensure_content(
        &self,
        kind: ContentKind,
        owner: &Owner,
        purpose: &str,
        data: &[u8],
    ) -> Result<String, SwarmError> {
        let name = content_name(owner, purpose, data);
        let existing = self.content_objects(kind, owner).await?;
        if existing.iter().any(|o| o.name == name) {
            return Ok(name);
        }
        let mut l = owner.labels();
        l.insert(PURPOSE.to_owned(), purpose.to_owned());
        let encoded = base64::engine::general_purpose::STANDARD.encode(data);
        let result = match kind {
            ContentKind::Secret => self
                .docker()?
                .create_secret(SecretSpec {
                    name: Some(name.clone()),
                    labels: Some(l),
                    data: Some(encoded),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            ContentKind::Config => self
                .docker()?
                .create_config(ConfigSpec {
                    name: Some(name.clone()),
                    labels: Some(l),
                    data: Some(encoded),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => Ok(name),
            // The name exists but is not ours (or not listed as ours): leave it.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Err(SwarmError::NameTaken {
                what: kind.what(),
                name,
            }),
            Err(e) => Err(SwarmError::from_bollard(e, || {
                format!("{} {name}", kind.what())
            })),
        }
    }

    /// The secrets or configs `owner` owns.
    ///
    /// # Errors
    /// Engine errors.
    pub async fn content_objects(
        &self,
        kind: ContentKind,
        owner: &Owner,
    ) -> Result<Vec<ContentObject>, SwarmError> {
        let filters = Some(owner.filters());
        let items: Vec<Listed> = match kind {
            ContentKind::Secret => self
                .docker()?
                .list_secrets(Some(ListSecretsOptions { filters }))
                .await
                .map_err(|e| SwarmError::from_bollard(e, || "secrets".into()))?
                .into_iter()
                .map(|s| {
                    let spec = s.spec.unwrap_or_default();
                    (s.id, spec.name, spec.labels)
                })
                .collect(),
            ContentKind::Config => self
                .docker()?
                .list_configs(Some(ListConfigsOptions { filters }))
                .await
                .map_err(|e| SwarmError::from_bollard(e, || "configs".into()))?
                .into_iter()
                .map(|c| {
                    let spec = c.spec.unwrap_or_default();
                    (c.id, spec.name, spec.labels)
                })
                .collect(),
        };
        Ok(items
            .into_iter()
            .filter(|(_, _, l)| owner.owns(l.as_ref()))
            .map(|(id, name, l)| ContentObject {
                id: id.unwrap_or_default(),
                name: name.unwrap_or_default(),
                purpose: l.and_then(|l| l.get(PURPOSE).cloned()).unwrap_or_default(),
            })
            .collect())
    }

    /// Removes `owner`'s secrets or configs not in `keep`. One still used by a
    /// service (Swarm refuses) is left for a later pass.
    ///
    /// # Errors
    /// Engine errors other than "in use".
    pub async fn prune_content_objects(
        &self,
        kind: ContentKind,
        owner: &Owner,
        keep: &[String],
    ) -> Result<Vec<String>, SwarmError> {
        let mut removed = Vec::new();
        for o in self.content_objects(kind, owner).await? {
            if keep.contains(&o.name) {
                continue;
            }
            let result = match kind {
                ContentKind::Secret => self.docker()?.delete_secret(&o.id).await,
                ContentKind::Config => self.docker()?.delete_config(&o.id).await,
            };
            match result {
                Ok(()) => removed.push(o.name),
                Err(bollard::errors::Error::DockerResponseServerError { message, .. })
                    if message.contains("in use") => {}
                Err(e) => {
                    match SwarmError::from_bollard(e, || format!("{} {}", kind.what(), o.name)) {
                        SwarmError::NotFound(_) => {}
                        other => return Err(other),
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Names of volumes on this (manager) node that `owner`'s mounts created.
    ///
    /// # Errors
    /// Engine errors.
    pub async fn local_volumes(&self, owner: &Owner) -> Result<Vec<String>, SwarmError> {
        let list = self
            .docker()?
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(owner.filters()),
            }))
            .await
            .map_err(|e| SwarmError::from_bollard(e, || "volumes".into()))?;
        Ok(list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .filter(|v| owner.owns(Some(&v.labels)))
            .map(|v| v.name)
            .collect())
    }

    /// Removes a volume on this node (not its data on a remote filesystem).
    ///
    /// # Errors
    /// Engine errors (a volume in use is an error).
    pub async fn remove_volume(&self, name: &str) -> Result<(), SwarmError> {
        self.docker()?
            .remove_volume(name, None::<RemoveVolumeOptions>)
            .await
            .map_err(|e| SwarmError::from_bollard(e, || format!("volume {name}")))
    }

    /// Removes the ended containers of Swarm tasks that mount `volume` on
    /// this node. Swarm keeps a few ended tasks of each service as history
    /// (and removes a deleted service's containers only lazily); they hold
    /// the volume but will never run again. Running containers, and
    /// containers Swarm did not start, are left alone.
    async fn remove_ended_task_containers(&self, volume: &str) -> Result<(), SwarmError> {
        let err = |e| SwarmError::from_bollard(e, || format!("containers using volume {volume}"));
        let list = self
            .docker()?
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([
                    ("volume".to_owned(), vec![volume.to_owned()]),
                    (
                        "label".to_owned(),
                        vec!["com.docker.swarm.task.id".to_owned()],
                    ),
                    (
                        "status".to_owned(),
                        vec!["exited".to_owned(), "created".to_owned(), "dead".to_owned()],
                    ),
                ])),
                ..Default::default()
            }))
            .await
            .map_err(err)?;
        for id in list.into_iter().filter_map(|c| c.id) {
            match self
                .docker()?
                .remove_container(&id, None::<RemoveContainerOptions>)
                .await
            {
                Ok(()) => {}
                Err(e) => match SwarmError::from_bollard(e, || format!("container {id}")) {
                    SwarmError::NotFound(_) => {}
                    other => return Err(other),
                },
            }
        }
        Ok(())
    }

    /// Removes a volume on this node once nothing uses it; a volume that is
    /// not there is fine. Containers of a service just removed go a moment
    /// later, so "in use" is waited out for a few seconds.
    ///
    /// # Errors
    /// Engine errors; still in use after the wait.
    pub async fn remove_volume_if_present(&self, name: &str) -> Result<(), SwarmError> {
        let mut attempts = 0;
        loop {
            match self.remove_volume(name).await {
                Ok(()) | Err(SwarmError::NotFound(_)) => return Ok(()),
                Err(SwarmError::Api(m)) if m.contains("in use") && attempts < 20 => {
                    attempts += 1;
                    self.remove_ended_task_containers(name).await?;
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_names_follow_the_content() {
        let owner = Owner {
            kind: "RedisSentinelGroup".into(),
            name: "cache".into(),
            uid: "u".into(),
            instance: "i".into(),
        };
        let a = content_name(&owner, "password", b"one");
        assert!(
            a.starts_with("cache-password-") && a.len() == "cache-password-".len() + 8,
            "{a}"
        );
        assert_eq!(a, content_name(&owner, "password", b"one"));
        assert_ne!(a, content_name(&owner, "password", b"two"));
    }
}
