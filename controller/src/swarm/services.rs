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

/// One change that converging an owner's services would make.
#[derive(Clone, Debug, PartialEq)]
pub enum ServiceChange {
    /// The service does not exist yet (spec with ownership labels).
    Create(ServiceSpec),
    /// The service exists with another spec, or was edited by someone else.
    Update {
        /// The spec to write (with ownership labels).
        spec: ServiceSpec,
        /// Whether the reason is an edit by someone else (drift).
        drifted: bool,
    },
    /// The service is no longer desired.
    Remove,
}

impl ServiceChange {
    /// Whether the change stops a running task (updates and removals do).
    pub fn disrupts(&self) -> bool {
        !matches!(self, Self::Create(_))
    }
}

/// What converging an owner's services would change; see [`Swarm::plan_services`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServicePlan {
    /// Pending changes, by service name.
    pub changes: BTreeMap<String, ServiceChange>,
    /// Version index to record for every existing service as long as its
    /// change (if any) is pending.
    pub versions: BTreeMap<String, u64>,
}

/// How often an update is retried when it races another writer.
const UPDATE_ATTEMPTS: usize = 5;

fn version_of(s: &Service) -> u64 {
    s.version.as_ref().and_then(|v| v.index).unwrap_or(0)
}

/// Whether a service is a one-shot job (replicated or global).
fn is_job(s: &Service) -> bool {
    s.spec
        .as_ref()
        .and_then(|sp| sp.mode.as_ref())
        .is_some_and(|m| m.replicated_job.is_some() || m.global_job.is_some())
}

impl Swarm {
    /// The services `owner` owns, by name, but its jobs: a job is no
    /// member, and the flow that started it removes it ([`Swarm::owned_jobs`]).
    ///
    /// # Errors
    /// [`SwarmError`].
    pub async fn owned_services(
        &self,
        owner: &Owner,
    ) -> Result<HashMap<String, Service>, SwarmError> {
        Ok(self
            .owned(owner)
            .await?
            .into_iter()
            .filter(|(_, s)| !is_job(s))
            .collect())
    }

    /// The job services `owner` owns, by name.
    ///
    /// # Errors
    /// [`SwarmError`].
    pub async fn owned_jobs(&self, owner: &Owner) -> Result<Vec<String>, SwarmError> {
        Ok(self
            .owned(owner)
            .await?
            .into_iter()
            .filter(|(_, s)| is_job(s))
            .map(|(n, _)| n)
            .collect())
    }

    async fn owned(&self, owner: &Owner) -> Result<HashMap<String, Service>, SwarmError> {
        let list = self
            .docker()?
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
        self.docker()?
            .list_services(Some(ListServicesOptions {
                filters: Some(labels::managed_filter(instance)),
                status: None,
            }))
            .await
            .map_err(|e| SwarmError::from_bollard(e, || "managed services".into()))
    }

    /// Makes `owner`'s services exactly `desired`: creates what is missing,
    /// updates what changed, removes what is no longer wanted, all at once.
    /// Resources whose members must change one at a time use
    /// [`Swarm::plan_services`] and [`Swarm::apply_changes`] instead.
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
        let plan = self.plan_services(owner, desired, known).await?;
        let all: Vec<String> = plan.changes.keys().cloned().collect();
        self.apply_changes(&plan, &all).await
    }

    /// What converging `owner`'s services to `desired` would change, without
    /// changing anything.
    ///
    /// `known` holds the version index each service had after haswarm last
    /// wrote it; a different index means someone else changed the service,
    /// and it is planned to be put back (drift repair).
    ///
    /// # Errors
    /// [`SwarmError::NameTaken`] when a desired name belongs to a foreign
    /// service, or engine errors.
    pub async fn plan_services(
        &self,
        owner: &Owner,
        desired: &[DesiredService],
        known: &BTreeMap<String, u64>,
    ) -> Result<ServicePlan, SwarmError> {
        let mut existing = self.owned_services(owner).await?;
        let mut plan = ServicePlan::default();
        for d in desired {
            let name = d.name().to_owned();
            let hash = labels::spec_hash(&d.spec);
            let mut spec = d.spec.clone();
            let mut l = spec.labels.take().unwrap_or_default();
            l.extend(owner.labels());
            l.insert(labels::SPEC_HASH.to_owned(), hash.clone());
            spec.labels = Some(l);
            let api = self.docker()?.client_version();
            fit_health_to_engine(&mut spec, (api.major_version, api.minor_version));
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
                    plan.changes.insert(name, ServiceChange::Create(spec));
                }
                Some(current) => {
                    let current_hash = current
                        .spec
                        .as_ref()
                        .and_then(|s| s.labels.as_ref())
                        .and_then(|l| l.get(labels::SPEC_HASH))
                        .cloned();
                    let version = version_of(&current);
                    let drifted = known.get(&name).is_some_and(|v| *v != version);
                    if current_hash.as_deref() == Some(hash.as_str()) && !drifted {
                        plan.versions.insert(name, version);
                    } else {
                        // Until the update is applied, the version haswarm
                        // last wrote stays the reference, so that a drift is
                        // still seen as one on the next pass.
                        plan.versions
                            .insert(name.clone(), known.get(&name).copied().unwrap_or(version));
                        plan.changes
                            .insert(name, ServiceChange::Update { spec, drifted });
                    }
                }
            }
        }
        for (name, _) in existing {
            plan.changes.insert(name, ServiceChange::Remove);
        }
        Ok(plan)
    }

    /// Applies the planned changes of the services named in `names` (others
    /// stay pending) and reports them, with the version index of every
    /// service after it.
    ///
    /// # Errors
    /// Engine errors; changes applied before the error stay applied.
    pub async fn apply_changes(
        &self,
        plan: &ServicePlan,
        names: &[String],
    ) -> Result<ServiceReport, SwarmError> {
        let mut report = ServiceReport {
            versions: plan.versions.clone(),
            ..Default::default()
        };
        for (name, change) in &plan.changes {
            if !names.contains(name) {
                continue;
            }
            match change {
                ServiceChange::Create(spec) => {
                    self.docker()?
                        .create_service(spec.clone(), None)
                        .await
                        .map_err(|e| SwarmError::from_bollard(e, || format!("service {name}")))?;
                    report.created.push(name.clone());
                }
                ServiceChange::Update { spec, .. } => {
                    self.update_service(name, spec.clone()).await?;
                    report.updated.push(name.clone());
                }
                ServiceChange::Remove => {
                    self.remove_service(name).await?;
                    report.removed.push(name.clone());
                    report.versions.remove(name);
                    continue;
                }
            }
            let now = self.inspect_service(name).await?;
            report.versions.insert(name.clone(), version_of(&now));
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

    /// The name of the secret `service` mounts as `/run/secrets/<file>` now;
    /// `None` when the service or that mount does not exist.
    ///
    /// # Errors
    /// Engine errors other than "not found".
    pub async fn mounted_secret(
        &self,
        service: &str,
        file: &str,
    ) -> Result<Option<String>, SwarmError> {
        let s = match self.inspect_service(service).await {
            Ok(s) => s,
            Err(SwarmError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(s.spec
            .and_then(|sp| sp.task_template)
            .and_then(|t| t.container_spec)
            .and_then(|c| c.secrets)
            .unwrap_or_default()
            .into_iter()
            .find(|r| r.file.as_ref().and_then(|f| f.name.as_deref()) == Some(file))
            .and_then(|r| r.secret_name))
    }

    async fn inspect_service(&self, name: &str) -> Result<Service, SwarmError> {
        self.docker()?
            .inspect_service(name, None::<InspectServiceOptions>)
            .await
            .map_err(|e| SwarmError::from_bollard(e, || format!("service {name}")))
    }

    /// Updates with the inspected version index; on "update out of sequence"
    /// inspects again and retries.
    async fn update_service(&self, name: &str, mut spec: ServiceSpec) -> Result<(), SwarmError> {
        for _ in 0..UPDATE_ATTEMPTS {
            let current = self.inspect_service(name).await?;
            keep_force_counter(&mut spec, current.spec.as_ref());
            let options = UpdateServiceOptions {
                version: i32::try_from(version_of(&current)).unwrap_or(i32::MAX),
                ..Default::default()
            };
            match self
                .docker()?
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

    /// Replaces a service's task without changing its spec (Swarm's
    /// `--force`); returns the version index after it.
    ///
    /// # Errors
    /// Engine errors.
    pub async fn restart_service(&self, name: &str) -> Result<u64, SwarmError> {
        let current = self.inspect_service(name).await?;
        let mut spec = current.spec.unwrap_or_default();
        if let Some(t) = spec.task_template.as_mut() {
            t.force_update = Some(t.force_update.unwrap_or(0).wrapping_add(1));
        }
        self.update_service(name, spec).await?;
        Ok(version_of(&self.inspect_service(name).await?))
    }

    /// Removes a service; a service already gone is fine.
    ///
    /// # Errors
    /// Engine errors other than "not found".
    pub async fn remove_service(&self, name: &str) -> Result<(), SwarmError> {
        match self.docker()?.delete_service(name).await {
            Ok(()) => Ok(()),
            Err(e) => match SwarmError::from_bollard(e, || format!("service {name}")) {
                SwarmError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }
}

/// Whether a task was started from the service's current task template.
/// Right after an update, and before Swarm's updater has marked the old task
/// for shutdown (or recorded the update as under way: until then the update
/// status is still the previous update's "completed"), the old task still
/// runs with the old spec; counting it as serving let a rollout take the
/// next member down while this one was about to restart. The parts compared
/// are those whose change always makes Swarm replace a task; Swarm fills
/// others (the runtime) only on the service's copy. Placement is left out:
/// Swarm keeps a task whose node still meets new constraints, and that task
/// keeps its old placement for ever.
fn runs_template(
    task: Option<&bollard::models::TaskSpec>,
    service: Option<&bollard::models::TaskSpec>,
) -> bool {
    let (Some(t), Some(s)) = (task, service) else {
        // Nothing to compare against: fall back to the task state alone.
        return true;
    };
    t.container_spec == s.container_spec
        && t.force_update.unwrap_or(0) == s.force_update.unwrap_or(0)
        && t.resources == s.resources
}

/// Whether a service is serving, as Swarm sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceHealth {
    /// A task runs (and passed its health check, when it has one: Swarm
    /// reports such a task `starting` until then), and no update is under way.
    Running,
    /// Not serving, or not settled yet; the text says why.
    NotReady(String),
}

impl ServiceHealth {
    /// Whether the service is [`ServiceHealth::Running`].
    pub fn is_running(&self) -> bool {
        *self == Self::Running
    }
}

/// What Swarm says of an owner's services: each one's health, by name, and
/// what keeps some from running ([`super::tasks`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServicesHealth {
    /// Each service's health, by name.
    pub services: BTreeMap<String, ServiceHealth>,
    /// The services whose tasks Swarm rejects or fails, by name.
    pub troubles: Vec<super::TaskTrouble>,
    /// Whether Swarm is still bringing up a task of one of them
    /// ([`super::tasks::starting`]).
    pub starting: bool,
}

impl Swarm {
    /// The health of each of `owner`'s services, and what keeps some from
    /// running, from one listing of their tasks (every state: a crash loop
    /// shows only in the failed ones).
    ///
    /// # Errors
    /// [`SwarmError`].
    pub async fn service_health(&self, owner: &Owner) -> Result<ServicesHealth, SwarmError> {
        use bollard::models::{ServiceUpdateStatusStateEnum as U, TaskState};
        let services = self.owned_services(owner).await?;
        let ids: BTreeMap<String, String> = services
            .iter()
            .filter_map(|(name, s)| Some((s.id.clone()?, name.clone())))
            .collect();
        if ids.is_empty() {
            return Ok(ServicesHealth::default());
        }
        let filters = HashMap::from([("service".to_owned(), ids.keys().cloned().collect())]);
        let tasks = self
            .docker()?
            .list_tasks(Some(bollard::query_parameters::ListTasksOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(|e| SwarmError::from_bollard(e, || "tasks".into()))?;
        let meant: Vec<bollard::models::Task> = tasks
            .iter()
            .filter(|t| t.desired_state == Some(TaskState::RUNNING))
            .cloned()
            .collect();
        let mut out = BTreeMap::new();
        for (name, s) in services {
            let update = s.update_status.as_ref().and_then(|u| u.state);
            let template = s.spec.as_ref().and_then(|sp| sp.task_template.as_ref());
            let running = meant.iter().any(|t| {
                t.service_id.is_some()
                    && t.service_id == s.id
                    && t.status.as_ref().and_then(|st| st.state) == Some(TaskState::RUNNING)
                    && runs_template(t.spec.as_ref(), template)
            });
            let health = match update {
                Some(U::UPDATING | U::ROLLBACK_STARTED) => {
                    ServiceHealth::NotReady("update in progress".into())
                }
                Some(U::PAUSED | U::ROLLBACK_PAUSED) => ServiceHealth::NotReady(format!(
                    "update paused by Swarm: {}",
                    s.update_status
                        .as_ref()
                        .and_then(|u| u.message.clone())
                        .unwrap_or_default()
                )),
                _ if !running => ServiceHealth::NotReady(not_running(&meant, s.id.as_deref())),
                _ => ServiceHealth::Running,
            };
            out.insert(name, health);
        }
        let now = chrono::Utc::now();
        let ends = self
            .container_ends(&super::tasks::to_inspect(&tasks, now))
            .await?;
        Ok(ServicesHealth {
            services: out,
            troubles: super::tasks::troubles(&ids, &tasks, &ends, now),
            starting: super::tasks::starting(&ids, &tasks),
        })
    }

    /// What the ended `containers` say of their end: stopped as unhealthy
    /// (with the last health check's output) or killed out of memory. Only
    /// this engine's node's containers can be inspected: the others are not
    /// found and left out.
    async fn container_ends(
        &self,
        containers: &[String],
    ) -> Result<BTreeMap<String, super::tasks::ContainerEnd>, SwarmError> {
        use super::tasks::ContainerEnd;
        use bollard::models::HealthStatusEnum;
        let mut out = BTreeMap::new();
        for id in containers {
            let c = match self.docker()?.inspect_container(id, None).await {
                Ok(c) => c,
                Err(e) => match SwarmError::from_bollard(e, || format!("container {id}")) {
                    SwarmError::NotFound(_) => continue,
                    other => return Err(other),
                },
            };
            let Some(state) = c.state else { continue };
            if state.oom_killed == Some(true) {
                out.insert(id.clone(), ContainerEnd::OutOfMemory);
                continue;
            }
            let health = state.health;
            if health.as_ref().and_then(|h| h.status) != Some(HealthStatusEnum::UNHEALTHY) {
                continue;
            }
            let last = health
                .and_then(|h| h.log)
                .and_then(|l| l.into_iter().last())
                .and_then(|l| l.output)
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .unwrap_or_else(|| "no output".to_owned());
            out.insert(id.clone(), ContainerEnd::Unhealthy(last));
        }
        Ok(out)
    }
}

/// The first API version whose health checks take a start interval
/// (Docker 25).
const START_INTERVAL_API: (usize, usize) = (1, 44);
/// How often a health check runs during its start period, on engines that
/// allow it.
const START_INTERVAL_NS: i64 = 1_000_000_000;

/// Runs a health check every second during its start period when the
/// engine allows it (API 1.44 and newer). Swarm's DNS lists a task, and
/// Swarm counts it running, only once a check passed: at the health
/// interval (5 s), the first check comes 5 s after the start, and a member
/// still starting then waits 5 s more, which was most of a new Redis
/// group's time to Ready. Older engines keep the interval throughout: the
/// field is added after the spec hash, so no change is seen when the
/// engine is upgraded, and none is sent to an engine that would refuse it.
/// Pure.
fn fit_health_to_engine(spec: &mut ServiceSpec, api: (usize, usize)) {
    if api < START_INTERVAL_API {
        return;
    }
    let health = spec
        .task_template
        .as_mut()
        .and_then(|t| t.container_spec.as_mut())
        .and_then(|c| c.health_check.as_mut());
    if let Some(h) = health {
        let starting = h.start_period.is_some_and(|p| p > 0);
        let slower = h.interval.is_some_and(|i| i > START_INTERVAL_NS);
        if starting && slower && h.start_interval.is_none() {
            h.start_interval = Some(START_INTERVAL_NS);
        }
    }
}

/// Keeps the live force counter (`TaskTemplate.ForceUpdate`) in a spec
/// about to be written, unless the spec raises it: Swarm replaces every
/// task when the counter changes, down as well as up, so writing back a
/// spec without it (a drift repair after haswarm's own restart of a
/// replica, whose new version was not recorded before a pass failed)
/// would restart the member a second time. Pure.
fn keep_force_counter(spec: &mut ServiceSpec, live: Option<&ServiceSpec>) {
    let live = live
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.force_update);
    if let Some(t) = spec.task_template.as_mut() {
        t.force_update = t.force_update.max(live);
    }
}

/// Why a service has no running, healthy task, in Swarm's words: the state
/// of its newest task meant to run, and that task's error or message (a
/// constraint no node meets, a health check that has not passed yet).
fn not_running(tasks: &[bollard::models::Task], service: Option<&str>) -> String {
    let newest = tasks
        .iter()
        .filter(|t| t.service_id.is_some() && t.service_id.as_deref() == service)
        .filter_map(|t| {
            let at = t.created_at.as_deref().and_then(super::parse_time);
            t.status.as_ref().map(|st| (at, st))
        })
        .max_by_key(|(at, _)| *at);
    let Some((_, st)) = newest else {
        return "no running, healthy task".into();
    };
    let state = st
        .state
        .map_or_else(|| "unknown".to_owned(), |s| s.to_string());
    let why = st
        .err
        .as_deref()
        .filter(|e| !e.is_empty())
        .or(st.message.as_deref().filter(|m| !m.is_empty()));
    match why {
        Some(why) => format!("no running, healthy task (newest task {state}: {why})"),
        None => format!("no running, healthy task (newest task {state})"),
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::{TaskSpec, TaskSpecContainerSpec};

    use super::{fit_health_to_engine, keep_force_counter, not_running, runs_template};
    use bollard::models::ServiceSpec;

    #[test]
    fn checks_run_every_second_while_starting_only_where_the_engine_allows() {
        let with = |interval_s: i64, start_period_s: i64| ServiceSpec {
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    health_check: Some(crate::reconcilers::common::health(
                        "true",
                        interval_s,
                        3,
                        start_period_s,
                    )),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let start_interval = |mut spec: ServiceSpec, api| {
            fit_health_to_engine(&mut spec, api);
            spec.task_template?
                .container_spec?
                .health_check?
                .start_interval
        };
        // (interval s, start period s, API, start interval)
        let table = [
            (5, 60, (1, 41), None),
            (5, 60, (1, 43), None),
            (5, 60, (1, 44), Some(1_000_000_000)),
            (5, 60, (1, 53), Some(1_000_000_000)),
            (5, 0, (1, 44), None),
            (1, 60, (1, 44), None),
        ];
        for (interval, period, api, want) in table {
            assert_eq!(
                start_interval(with(interval, period), api),
                want,
                "interval {interval} s, start period {period} s, API {api:?}"
            );
        }
        let mut none = ServiceSpec::default();
        fit_health_to_engine(&mut none, (1, 44));
        assert_eq!(none, ServiceSpec::default(), "no health check, no change");
    }

    fn template(env: &str) -> TaskSpec {
        TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some("haswarm/redis:bookworm".into()),
                env: Some(vec![env.into()]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_task_runs_the_template_it_was_started_from() {
        let task = template("A=1");
        let mut service = template("A=1");
        // Swarm fills the runtime on the service's copy only.
        service.runtime = Some("container".into());
        assert!(runs_template(Some(&task), Some(&service)));
        // An update the old task predates.
        assert!(!runs_template(Some(&task), Some(&template("A=2"))));
        let mut forced = template("A=1");
        forced.force_update = Some(1);
        assert!(!runs_template(Some(&task), Some(&forced)));
        assert!(runs_template(None, Some(&service)));
        // New constraints the node still meets: Swarm keeps the task.
        let mut moved = template("A=1");
        moved.placement = Some(bollard::models::TaskSpecPlacement {
            constraints: Some(vec!["node.role==manager".into()]),
            ..Default::default()
        });
        assert!(runs_template(Some(&task), Some(&moved)));
    }

    #[test]
    fn why_a_service_does_not_run_quotes_its_newest_task() {
        use bollard::models::{Task, TaskState, TaskStatus};
        let task = |at: &str, state, err: Option<&str>| Task {
            service_id: Some("s1".into()),
            created_at: Some(at.into()),
            status: Some(TaskStatus {
                state: Some(state),
                err: err.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        };
        let tasks = vec![
            task("2026-12-01T10:00:00.9Z", TaskState::REJECTED, Some("old")),
            task(
                "2026-12-01T10:00:01.05Z",
                TaskState::PENDING,
                Some("no suitable node (scheduling constraints not satisfied on 1 node)"),
            ),
        ];
        assert_eq!(
            not_running(&tasks, Some("s1")),
            "no running, healthy task (newest task pending: no suitable node \
             (scheduling constraints not satisfied on 1 node))"
        );
        assert_eq!(
            not_running(
                &[task("2026-12-01T10:00:00Z", TaskState::STARTING, None)],
                Some("s1")
            ),
            "no running, healthy task (newest task starting)"
        );
        assert_eq!(
            not_running(&tasks, Some("other")),
            "no running, healthy task"
        );
    }

    #[test]
    fn a_written_spec_keeps_the_live_force_counter_unless_it_raises_it() {
        let with = |force: Option<u64>| ServiceSpec {
            task_template: Some(TaskSpec {
                force_update: force,
                ..Default::default()
            }),
            ..Default::default()
        };
        let force = |s: &ServiceSpec| s.task_template.as_ref().and_then(|t| t.force_update);
        // A desired spec (no counter) over a service haswarm restarted once.
        let mut desired = with(None);
        keep_force_counter(&mut desired, Some(&with(Some(1))));
        assert_eq!(force(&desired), Some(1), "no second restart");
        // A restart raises it.
        let mut restart = with(Some(2));
        keep_force_counter(&mut restart, Some(&with(Some(1))));
        assert_eq!(force(&restart), Some(2));
        // A new service, or one never restarted.
        let mut fresh = with(None);
        keep_force_counter(&mut fresh, None);
        assert_eq!(force(&fresh), None);
    }
}
