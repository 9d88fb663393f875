//! Docker events as reconcile triggers: an event on an owned object queues its
//! owner; a node event queues everything. The stream is reopened when the
//! engine restarts, and everything is queued then, since events were missed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use haswarm_crds::selector::Selector;

use super::controller::Context;
use super::queue::Scheduler;
use crate::metrics::Docker;
use crate::swarm::{labels, EngineEvent};

/// Where to send triggers: one scheduler per kind.
pub type Dispatch = HashMap<&'static str, Scheduler<String>>;

fn schedule_all(ctx: &Context, dispatch: &Dispatch) {
    for (kind, s) in dispatch {
        if let Ok((objs, _)) = ctx.store.list(kind, &Selector::default()) {
            for o in objs {
                s.schedule(o.metadata.name.to_string());
            }
        }
    }
}

/// Follows Docker events until the process ends.
pub fn spawn(ctx: Arc<Context>, dispatch: Dispatch) {
    tokio::spawn(async move {
        let mut service_owners: HashMap<String, (String, String)> = HashMap::new();
        let mut first = true;
        loop {
            if !first {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            if !ctx.swarm.ping().await {
                ctx.metrics.set_docker(Docker::Unreachable);
                first = false;
                continue;
            }
            ctx.metrics.set_docker(Docker::Reachable);
            if !first {
                tracing::info!("Docker engine reachable again; resyncing everything");
            }
            // Whatever happened while the stream was down is unknown: look at everything.
            schedule_all(&ctx, &dispatch);
            first = false;
            let mut stream = Box::pin(ctx.swarm.events());
            while let Some(item) = stream.next().await {
                match item {
                    Ok(EngineEvent::Owned(o)) if o.instance == ctx.store.id() => {
                        if let Some(s) = dispatch.get(o.kind.as_str()) {
                            s.schedule(o.name);
                        }
                    }
                    Ok(EngineEvent::Owned(_)) => {}
                    Ok(EngineEvent::Node) => schedule_all(&ctx, &dispatch),
                    Ok(EngineEvent::Service(name)) => {
                        if !service_owners.contains_key(&name) {
                            // A service we have not seen: refresh the map of managed services.
                            if let Ok(list) = ctx.swarm.managed_services(ctx.store.id()).await {
                                service_owners = list
                                    .iter()
                                    .filter_map(|s| {
                                        let spec = s.spec.as_ref()?;
                                        let o = labels::owner_of(spec.labels.as_ref())?;
                                        Some((spec.name.clone()?, (o.kind, o.name)))
                                    })
                                    .collect();
                            }
                        }
                        if let Some((kind, owner)) = service_owners.get(&name) {
                            if let Some(s) = dispatch.get(kind.as_str()) {
                                s.schedule(owner.clone());
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Docker event stream failed");
                        ctx.metrics.set_docker(Docker::Unreachable);
                        break;
                    }
                }
            }
            tracing::warn!("Docker event stream ended; reconnecting");
            // Reconciles that run now see the outage and report it in status.
            schedule_all(&ctx, &dispatch);
        }
    });
}

/// Starts the controller of kind `R` and routes its triggers through
/// `dispatch` (the daemon names the kinds; the runtime knows none).
pub fn add<R: super::Reconciler>(dispatch: &mut Dispatch, ctx: &Arc<Context>, r: R) {
    dispatch.insert(R::KIND, super::controller::start(r, Arc::clone(ctx)));
}
