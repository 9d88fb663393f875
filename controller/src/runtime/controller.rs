//! Runs one kind's reconciler: feeds its queue from the store's watch and a
//! periodic resync, runs reconciles, and turns failures into status, events
//! and backoff. Also the shared steps every reconciler takes (finalizer,
//! pause, status write), so that no reconciler copies them.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use haswarm_crds::meta::{CommonStatus, OwnedObject};
use haswarm_crds::selector::Selector;
use haswarm_crds::{ConditionStatus, EventType};
use serde::Serialize;
use tracing::Instrument;

use super::queue::{self, Action, QueueConfig, Scheduler};
use crate::store::{Record, Store, StoreError, WatchFrom};
use crate::swarm::{Owner, Swarm, SwarmError};

/// The finalizer haswarm puts on every resource before creating Swarm objects for it.
pub const FINALIZER: &str = "haswarm.io/swarm-objects";

/// The annotation that pauses changes to a resource's Swarm objects.
pub const PAUSED: &str = "haswarm.io/paused";

/// Controller settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Image of SharedVolume probes (needs `/bin/sh`, `test`, `ls`, `sleep`).
    pub probe_image: String,
    /// How often every resource is reconciled even without events.
    pub resync: Duration,
    /// Queue settings.
    pub queue: QueueConfig,
    /// How long a node may be down before the slots pinned to it move.
    pub node_loss_grace: Duration,
    /// Where GitSources keep their fetched repositories (bare, one per source).
    pub git_cache: std::path::PathBuf,
    /// Where Swarm secrets mounted into haswarmd are (GitSource credentials).
    pub secrets_dir: std::path::PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            probe_image: "haswarm/probe:latest".into(),
            resync: Duration::from_secs(30),
            queue: QueueConfig::default(),
            node_loss_grace: Duration::from_secs(60),
            git_cache: std::env::temp_dir().join("haswarm-git"),
            secrets_dir: "/run/secrets".into(),
        }
    }
}

/// What reconcilers share.
#[derive(Clone, Debug)]
pub struct Context {
    /// The store.
    pub store: Store,
    /// The engine.
    pub swarm: Swarm,
    /// Metrics (reconciles, queues, events, Docker reachability).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Becomes true when the daemon shuts down: no reconcile starts after
    /// that (a stopping daemon would otherwise recreate what someone removes
    /// meanwhile, e.g. during `haswarmctl uninstall`).
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Settings.
    pub settings: Settings,
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The engine failed or refused.
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored object does not decode as its kind (a bug or a hand-edited store).
    #[error("the stored object is not a valid {kind}: {message}")]
    Decode {
        /// Kind.
        kind: &'static str,
        /// Why.
        message: String,
    },
}

impl ReconcileError {
    /// The condition reason this failure is reported under.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Swarm(SwarmError::Unreachable(_)) => "DockerUnreachable",
            Self::Swarm(SwarmError::NotManager) => "NotASwarmManager",
            Self::Swarm(SwarmError::NameTaken { .. }) => "NameCollision",
            Self::Swarm(_) => "SwarmError",
            Self::Store(_) => "StoreError",
            Self::Decode { .. } => "InvalidStoredObject",
        }
    }
}

/// A kind's reconciler.
pub trait Reconciler: Send + Sync + 'static {
    /// The kind it reconciles.
    const KIND: &'static str;

    /// Converges the Swarm toward `obj` (which has the finalizer and is not
    /// being deleted) and writes its status.
    fn reconcile(
        &self,
        obj: Record,
        ctx: Arc<Context>,
    ) -> impl Future<Output = Result<Action, ReconcileError>> + Send;

    /// Removes what `obj` owns on the Swarm; the finalizer goes once this succeeds.
    fn cleanup(
        &self,
        obj: Record,
        ctx: Arc<Context>,
    ) -> impl Future<Output = Result<(), ReconcileError>> + Send;
}

/// The owner identity of a stored object.
pub fn owner_of(ctx: &Context, obj: &Record) -> Owner {
    Owner {
        kind: obj.kind.clone(),
        name: obj.metadata.name.to_string(),
        uid: obj.metadata.uid.clone().unwrap_or_default(),
        instance: ctx.store.id().to_owned(),
    }
}

/// The stored object as its typed resource, and its status (default when
/// the controller has not written one yet).
///
/// # Errors
/// [`ReconcileError::Decode`] when the stored object is not a valid `S`.
pub fn decode<S: haswarm_crds::Kind>(
    obj: &Record,
) -> Result<(haswarm_crds::Resource<S>, S::Status), ReconcileError> {
    let r: haswarm_crds::Resource<S> =
        serde_json::from_value(obj.to_json()).map_err(|e| ReconcileError::Decode {
            kind: S::KIND,
            message: e.to_string(),
        })?;
    let status = r.status.clone().unwrap_or_default();
    Ok((r, status))
}

/// Whether the pause annotation is set.
pub fn paused(obj: &Record) -> bool {
    obj.metadata.annotations.get(PAUSED).map(String::as_str) == Some("true")
}

/// Reflects the pause annotation in the `Paused` condition and says whether
/// the reconciler must leave the Swarm objects alone (status still reports).
pub fn hold_if_paused(obj: &Record, common: &mut CommonStatus) -> bool {
    if paused(obj) {
        common.set_condition(
            "Paused",
            ConditionStatus::True,
            "PausedByAnnotation",
            format!("{PAUSED} is \"true\": Swarm objects are not changed"),
            obj.metadata.generation,
            Utc::now(),
        );
        true
    } else {
        common.remove_condition("Paused");
        false
    }
}

/// Version indexes recorded in a status's owned objects, for drift detection.
pub fn known_versions(common: &CommonStatus) -> BTreeMap<String, u64> {
    common
        .owned_objects
        .iter()
        .filter(|o| o.kind == "service")
        .filter_map(|o| o.version.map(|v| (o.name.clone(), v)))
        .collect()
}

/// Owned-object entries for services and their versions.
pub fn owned_services(versions: &BTreeMap<String, u64>) -> Vec<OwnedObject> {
    versions
        .iter()
        .map(|(name, v)| OwnedObject {
            kind: "service".into(),
            name: name.clone(),
            version: Some(*v),
        })
        .collect()
}

/// Writes a status value (the controller is its only writer, so no CAS).
///
/// # Errors
/// Store errors.
pub async fn write_status(
    ctx: &Context,
    obj: &Record,
    status: &impl Serialize,
) -> Result<(), StoreError> {
    let value = serde_json::to_value(status).unwrap_or_default();
    ctx.store
        .write_status(&obj.kind, obj.metadata.name.as_str(), value, None)
        .await
        .map(|_| ())
}

/// Records an event; failures are logged, never propagated (events are best effort).
pub fn event(ctx: &Context, obj: &Record, type_: EventType, reason: &str, message: &str) {
    ctx.metrics
        .event(&obj.kind, obj.metadata.name.as_str(), type_, reason);
    if let Err(e) = ctx.store.record_event(
        &obj.kind,
        obj.metadata.name.as_str(),
        type_,
        reason,
        message,
    ) {
        tracing::debug!(error = %e, "event not recorded");
    }
}

/// One event per service a converge created, updated or removed.
pub fn report_services(ctx: &Context, obj: &Record, report: &crate::swarm::ServiceReport) {
    let changes = [
        ("Created", "created service", &report.created),
        (
            "Updated",
            "updated service (its spec changed, or it was edited by hand)",
            &report.updated,
        ),
        ("Removed", "removed service", &report.removed),
    ];
    for (reason, what, names) in changes {
        for name in names {
            event(
                ctx,
                obj,
                EventType::Normal,
                reason,
                &format!("{what}: {name}"),
            );
        }
    }
}

/// Marks the failure on the object's status: Ready=False with the reason,
/// keeping every other status field as it was.
async fn report_failure(ctx: &Context, obj: &Record, err: &ReconcileError) {
    let mut status = obj.status.clone().unwrap_or_else(|| serde_json::json!({}));
    let mut common: CommonStatus = serde_json::from_value(status.clone()).unwrap_or_default();
    let reason = err.reason();
    let was = common.condition("Ready").map(|c| c.reason.clone());
    common.set_condition(
        "Ready",
        ConditionStatus::False,
        reason,
        err.to_string(),
        obj.metadata.generation,
        Utc::now(),
    );
    if was.as_deref() != Some(reason) {
        event(ctx, obj, EventType::Warning, reason, &err.to_string());
    }
    if let (Some(map), Ok(serde_json::Value::Object(c))) =
        (status.as_object_mut(), serde_json::to_value(&common))
    {
        for (k, v) in c {
            map.insert(k, v);
        }
    }
    if let Err(e) = ctx
        .store
        .write_status(&obj.kind, obj.metadata.name.as_str(), status, None)
        .await
    {
        tracing::warn!(error = %e, "could not record the failure in status");
    }
}

/// One reconcile of one object, with the steps every kind shares.
async fn run_once<R: Reconciler>(
    r: &R,
    ctx: Arc<Context>,
    name: &str,
) -> Result<Action, ReconcileError> {
    let obj = match ctx.store.get(R::KIND, name) {
        Ok(o) => o,
        Err(StoreError::NotFound { .. }) => return Ok(Action::AwaitChange),
        Err(e) => return Err(e.into()),
    };
    tracing::Span::current().record("generation", obj.metadata.generation);
    if obj.metadata.deletion_timestamp.is_some() {
        if obj.metadata.finalizers.iter().any(|f| f == FINALIZER) {
            r.cleanup(obj.clone(), Arc::clone(&ctx)).await?;
            let rest: Vec<String> = obj
                .metadata
                .finalizers
                .iter()
                .filter(|f| *f != FINALIZER)
                .cloned()
                .collect();
            ctx.store
                .write_finalizers(R::KIND, name, rest, None)
                .await?;
        }
        return Ok(Action::AwaitChange);
    }
    if !obj.metadata.finalizers.iter().any(|f| f == FINALIZER) {
        // The finalizer goes on before anything is created, so nothing can be
        // created that a deletion would not clean up.
        let mut f = obj.metadata.finalizers.clone();
        f.push(FINALIZER.to_owned());
        let obj = ctx.store.write_finalizers(R::KIND, name, f, None).await?;
        return r.reconcile(obj, ctx).await;
    }
    r.reconcile(obj, ctx).await
}

/// Starts the controller of one kind; returns its scheduler so that other
/// triggers (Docker events) can queue its objects.
pub fn start<R: Reconciler>(reconciler: R, ctx: Arc<Context>) -> Scheduler<String> {
    let reconciler = Arc::new(reconciler);
    let work_ctx = Arc::clone(&ctx);
    let stats_metrics = Arc::clone(&ctx.metrics);
    let (scheduler, _queue) = queue::spawn(
        ctx.settings.queue,
        move |name: String| {
            let r = Arc::clone(&reconciler);
            let ctx = Arc::clone(&work_ctx);
            // `object`, not `name`: JSON logs put the span's own name under
            // "name", and a second "name" key would shadow one of them.
            let span = tracing::info_span!(
                "reconcile",
                kind = R::KIND,
                object = %name,
                generation = tracing::field::Empty
            );
            async move {
                if *ctx.stopping.borrow() {
                    return Ok(Action::AwaitChange);
                }
                let started = std::time::Instant::now();
                let result = run_once(r.as_ref(), Arc::clone(&ctx), &name).await;
                let seconds = started.elapsed().as_secs_f64();
                match &result {
                    Ok(Action::AwaitChange) => ctx.metrics.reconciled(R::KIND, "success", seconds),
                    Ok(Action::Requeue(_)) => ctx.metrics.reconciled(R::KIND, "requeue", seconds),
                    Err(e) => {
                        ctx.metrics.reconciled(R::KIND, "error", seconds);
                        if matches!(e, ReconcileError::Swarm(SwarmError::Unreachable(_))) {
                            ctx.metrics.set_docker(crate::metrics::Docker::Unreachable);
                        }
                    }
                }
                match result {
                    Ok(action) => {
                        tracing::debug!(
                            elapsed_ms = started.elapsed().as_millis(),
                            ?action,
                            "reconciled"
                        );
                        Ok(action)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reconcile failed");
                        if let Ok(obj) = ctx.store.get(R::KIND, &name) {
                            report_failure(&ctx, &obj, &e).await;
                        }
                        Err(())
                    }
                }
            }
            .instrument(span)
        },
        move |stats| stats_metrics.queue(R::KIND, stats),
    );
    spawn_store_feed(R::KIND, ctx.store.clone(), scheduler.clone());
    spawn_resync(R::KIND, Arc::clone(&ctx), scheduler.clone());
    scheduler
}

/// Every store change of the kind queues its object. A watch that falls
/// behind or is cut restarts from a fresh list.
fn spawn_store_feed(kind: &'static str, store: Store, scheduler: Scheduler<String>) {
    tokio::spawn(async move {
        loop {
            let stream = match store.watch(Some(kind), WatchFrom::Now) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, kind, "store watch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut stream = Box::pin(stream);
            // What a reconcile depends on, per object: status-only writes are
            // the controller's own, and reacting to them would only repeat work.
            let mut seen: std::collections::HashMap<String, String> =
                std::collections::HashMap::new();
            while let Some(item) = stream.next().await {
                match item {
                    Ok(e) => {
                        let name = e.object.metadata.name.to_string();
                        let mut meta = e.object.metadata.clone();
                        meta.resource_version = None;
                        let fingerprint = crate::swarm::labels::spec_hash(&(&meta, &e.object.spec));
                        if e.type_ == crate::store::ChangeType::Deleted {
                            seen.remove(&name);
                        } else if seen.get(&name) == Some(&fingerprint) {
                            continue;
                        } else {
                            seen.insert(name.clone(), fingerprint);
                        }
                        scheduler.schedule(name);
                    }
                    Err(e) => {
                        tracing::info!(error = %e, kind, "store watch restarts");
                        break;
                    }
                }
            }
        }
    });
}

/// Queues every object of the kind periodically, and collects Swarm objects
/// whose owner is gone.
fn spawn_resync(kind: &'static str, ctx: Arc<Context>, scheduler: Scheduler<String>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(ctx.settings.resync);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Ok((objs, _)) = ctx.store.list(kind, &Selector::default()) {
                for o in objs {
                    scheduler.schedule(o.metadata.name.to_string());
                }
            }
            if let Err(e) = collect_orphans(kind, &ctx).await {
                tracing::debug!(error = %e, kind, "orphan collection skipped");
            }
        }
    });
}

/// Removes services of `kind` owners that no longer exist (or were recreated
/// with another uid). Objects without haswarm's labels are never listed here.
///
/// # Errors
/// Engine errors.
pub async fn collect_orphans(kind: &str, ctx: &Context) -> Result<Vec<String>, SwarmError> {
    let mut removed = Vec::new();
    for s in ctx.swarm.managed_services(ctx.store.id()).await? {
        let Some(spec) = s.spec.as_ref() else {
            continue;
        };
        let Some(owner) = crate::swarm::labels::owner_of(spec.labels.as_ref()) else {
            continue;
        };
        if owner.kind != kind {
            continue;
        }
        let alive = ctx
            .store
            .get(kind, &owner.name)
            .is_ok_and(|r| r.metadata.uid.as_deref() == Some(owner.uid.as_str()));
        if !alive {
            if let Some(name) = &spec.name {
                tracing::info!(service = %name, owner = %owner.key(), "removing orphaned service");
                ctx.swarm.remove_service(name).await?;
                removed.push(name.clone());
            }
        }
    }
    Ok(removed)
}
