//! The node routes behind `haswarmctl node`: list the nodes with the members
//! they hold, drain one (haswarm moves its members off, leaders and masters
//! switched over first, then Swarm's availability becomes drain), uncordon.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use bollard::models::NodeSpecAvailabilityEnum;

use super::types::{NodeView, Reason};
use super::{ApiError, ApiResult, AppState};
use crate::reconcilers::common::slot_member;
use crate::swarm::{NodeInfo, Swarm, SwarmError, DRAIN_LABEL};

impl From<SwarmError> for ApiError {
    fn from(e: SwarmError) -> Self {
        let (status, reason) = match &e {
            SwarmError::NotFound(_) => (StatusCode::NOT_FOUND, Reason::NotFound),
            _ => (StatusCode::SERVICE_UNAVAILABLE, Reason::Unavailable),
        };
        Self::new(status, reason, format!("docker: {e}"))
    }
}

/// The engine, for a daemon that runs its controllers (one without them
/// does not talk to Docker at all).
async fn swarm(s: &AppState) -> ApiResult<Swarm> {
    if !s.controllers {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Reason::Unavailable,
            "this haswarmd runs without controllers (--no-controllers): it does not talk to Docker",
        ));
    }
    Ok(Swarm::connect().await?)
}

fn view(n: &NodeInfo, availability: &str) -> NodeView {
    let mut members: Vec<String> = n.labels.keys().filter_map(|k| slot_member(k)).collect();
    members.sort();
    NodeView {
        name: n.hostname.clone(),
        id: n.id.clone(),
        role: n.role.clone(),
        ready: n.ready,
        availability: availability.to_owned(),
        draining: n.leaving,
        members,
    }
}

/// The node named `node` (host name or id).
async fn find(swarm: &Swarm, node: &str) -> ApiResult<NodeInfo> {
    swarm
        .nodes()
        .await?
        .into_iter()
        .find(|n| n.hostname == node || n.id == node)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                Reason::NotFound,
                format!("no node {node:?} in this swarm (docker node ls lists them)"),
            )
        })
}

/// `GET /nodes`.
pub async fn list(State(s): State<AppState>) -> ApiResult<Json<Vec<NodeView>>> {
    let swarm = swarm(&s).await?;
    let mut out = Vec::new();
    for n in swarm.nodes().await? {
        let a = swarm.node_availability(&n.id).await?;
        out.push(view(&n, &a));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(out))
}

/// `POST /nodes/{node}/drain`: marks the node (haswarm's controllers then
/// move its members); once it holds no member slot, sets Swarm's
/// availability to drain. Idempotent: the CLI calls it until the answer
/// says `drain`.
pub async fn drain(
    State(s): State<AppState>,
    Path(node): Path<String>,
) -> ApiResult<Json<NodeView>> {
    let swarm = swarm(&s).await?;
    let n = find(&swarm, &node).await?;
    if swarm.info().await?.node_id == n.id {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            Reason::Conflict,
            format!(
                "node {} is the one whose engine haswarmd talks to: haswarm reads Patroni and the sentinels through the containers there, so it would drain itself blind; point haswarmd at another manager's engine (DOCKER_HOST) first",
                n.hostname
            ),
        ));
    }
    if !n.leaving {
        let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        swarm
            .set_node_label(&n.id, DRAIN_LABEL, Some(&since))
            .await?;
        tracing::info!(node = %n.hostname, "drain requested: moving haswarm's members off");
    }
    let n = find(&swarm, &node).await?;
    if view(&n, "").members.is_empty() {
        swarm
            .set_node_availability(&n.id, NodeSpecAvailabilityEnum::DRAIN)
            .await?;
    }
    answer(&swarm, &node).await
}

/// The node as it is now.
async fn answer(swarm: &Swarm, node: &str) -> ApiResult<Json<NodeView>> {
    let n = find(swarm, node).await?;
    let a = swarm.node_availability(&n.id).await?;
    Ok(Json(view(&n, &a)))
}

/// `POST /nodes/{node}/uncordon`: the node takes members again (the drain
/// mark goes, availability becomes active). Members that moved stay where
/// they are.
pub async fn uncordon(
    State(s): State<AppState>,
    Path(node): Path<String>,
) -> ApiResult<Json<NodeView>> {
    let swarm = swarm(&s).await?;
    let n = find(&swarm, &node).await?;
    swarm.set_node_label(&n.id, DRAIN_LABEL, None).await?;
    swarm
        .set_node_availability(&n.id, NodeSpecAvailabilityEnum::ACTIVE)
        .await?;
    answer(&swarm, &node).await
}
