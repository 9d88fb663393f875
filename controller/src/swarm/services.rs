//! Services: converge an owner's services to a desired set.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{Service, ServiceSpec};
use bollard::query_parameters::{InspectServiceOptions, ListServicesOptions, UpdateServiceOptions};

use super::labels::{self, Owner};
use super::{Swarm, SwarmError};

/// A service as a renderer wants it. Ownership labels and the spec hash are
/// added when it is applied; renderers leave `spec.labels` for their own.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredService {
    /// The spec; `spec.name` is the service name.
    pub spec: ServiceSpec,
}

impl DesiredService {
    /// The service name.
    pub fn name(&self) -> &str {
        self.spec.name.as_deref().unwrap_or_default()
    }
}

/// What converging did, and the version index of every owned service after it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceReport {
    /// Services created.
    pub created: Vec<String>,
    /// Services updated (spec changed, or drift repaired).
    pub updated: Vec<String>,
    /// Services removed (no longer desired).
    pub removed: Vec<String>,
    /// Service name -> version index now.
    pub versions: BTreeMap<String, u64>,
}

impl ServiceReport {
    /// Whether anything changed.
    pub fn changed(&self) -> bool {
        !(self.created.is_empty() && self.updated.is_empty() && self.removed.is_empty())
    }
}

/// How often an update is retried when it races another writer.
const UPDATE_ATTEMPTS: usize = 5;

fn version_of(s: &Service) -> u64 {
    s.version.as_ref().and_then(|v| v.index).unwrap_or(0)
}

impl Swarm {
    /// The services `owner` owns, by name.
    ///
    /// # Errors
    /// [`SwarmError`].
    pub async fn owned_services(
        &self,
        owner: &Owner,
    ) -> Result<HashMap<String, Service>, SwarmError> {
        let list = self
            .docker()
            .list_services(Some(ListServicesOptions {
                filters: Some(owner.filters()),
                status: None,
            }))
            .await
            .map_err(|e| SwarmError::from_bollard(e, || format!("services of {}", owner.key())))?;
        Ok(list
            .into_iter()
            .filter(|s| owner.owns(s.spec.as_ref().and_then(|sp| sp.labels.as_ref())))
            .filter_map(|s| {
                let name = s.spec.as_ref()?.name.clone()?;
                Some((name, s))
            })
            .collect())
    }

    /// Every service one haswarm store manages, for garbage collection.
    ///
    /// # Errors
    /// [`SwarmError`].
    pub async fn managed_services(&self, instance: &str) -> Result<Vec<Service>, SwarmError> {
        self.docker()
            .list_services(Some(ListServicesOptions {
                filters: Some(labels::managed_filter(instance)),
                status: None,
            }))
            .await
            .map_err(|e| SwarmError::from_bollard(e, || "managed services".into()))
    }

    /// Makes `owner`'s services exactly `desired`: creates what is missing,
    /// updates what changed, removes what is no longer wanted.
    ///
    /// `known` holds the version index each service had after haswarm last
    /// wrote it; a different index means someone else changed the service,
    /// and it is put back (drift repair).
    ///
    /// # Errors
    /// [`SwarmError::NameTaken`] when a desired name belongs to a foreign
    /// service (nothing else is changed then), or engine errors.
    pub async fn converge_services(
        &self,
        owner: &Owner,
        desired: &[DesiredService],
        known: &BTreeMap<String, u64>,
    ) -> Result<ServiceReport, SwarmError> {
        let mut existing = self.owned_services(owner).await?;
        let mut report = ServiceReport::default();
        for d in desired {
            let name = d.name().to_owned();
            let hash = labels::spec_hash(&d.spec);
            let mut spec = d.spec.clone();
            let mut l = spec.labels.take().unwrap_or_default();
            l.extend(owner.labels());
            l.insert(labels::SPEC_HASH.to_owned(), hash.clone());
            spec.labels = Some(l);
            // Containers carry the owner too, so that their events (a task
            // dying, starting) lead straight to the resource.
            if let Some(c) = spec
                .task_template
                .as_mut()
                .and_then(|t| t.container_spec.as_mut())
            {
                c.labels
                    .get_or_insert_with(Default::default)
                    .extend(owner.labels());
            }
            match existing.remove(&name) {
                None => {
                    self.refuse_foreign(&name).await?;
                    self.docker()
                        .create_service(spec, None)
                        .await
                        .map_err(|e| SwarmError::from_bollard(e, || format!("service {name}")))?;
                    report.created.push(name.clone());
                }
                Some(current) => {
                    let current_hash = current
                        .spec
                        .as_ref()
                        .and_then(|s| s.labels.as_ref())
                        .and_then(|l| l.get(labels::SPEC_HASH))
                        .cloned();
                    let drifted = known.get(&name).is_some_and(|v| *v != version_of(&current));
                    if current_hash.as_deref() == Some(hash.as_str()) && !drifted {
                        report.versions.insert(name.clone(), version_of(&current));
                        continue;
                    }
                    self.update_service(&name, spec).await?;
                    report.updated.push(name.clone());
                }
            }
            let now = self.inspect_service(&name).await?;
            report.versions.insert(name, version_of(&now));
        }
        for (name, _) in existing {
            self.remove_service(&name).await?;
            report.removed.push(name);
        }
        Ok(report)
    }

    async fn refuse_foreign(&self, name: &str) -> Result<(), SwarmError> {
        match self.inspect_service(name).await {
            Ok(_) => Err(SwarmError::NameTaken {
                what: "service",
                name: name.to_owned(),
            }),
            Err(SwarmError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn inspect_service(&self, name: &str) -> Result<Service, SwarmError> {
        self.docker()
            .inspect_service(name, None::<InspectServiceOptions>)
            .await
            .map_err(|e| SwarmError::from_bollard(e, || format!("service {name}")))
    }

    /// Updates with the inspected version index; on "update out of sequence"
    /// inspects again and retries.
    async fn update_service(&self, name: &str, spec: ServiceSpec) -> Result<(), SwarmError> {
        for _ in 0..UPDATE_ATTEMPTS {
            let current = self.inspect_service(name).await?;
            let options = UpdateServiceOptions {
                version: i32::try_from(version_of(&current)).unwrap_or(i32::MAX),
                ..Default::default()
            };
            match self
                .docker()
                .update_service(name, spec.clone(), options, None)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => match SwarmError::from_bollard(e, || format!("service {name}")) {
                    SwarmError::OutOfSequence(_) => continue,
                    other => return Err(other),
                },
            }
        }
        Err(SwarmError::OutOfSequence(format!("service {name}")))
    }

    /// Removes a service; a service already gone is fine.
    ///
    /// # Errors
    /// Engine errors other than "not found".
    pub async fn remove_service(&self, name: &str) -> Result<(), SwarmError> {
        match self.docker().delete_service(name).await {
            Ok(()) => Ok(()),
            Err(e) => match SwarmError::from_bollard(e, || format!("service {name}")) {
                SwarmError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }
}
