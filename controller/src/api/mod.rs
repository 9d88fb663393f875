//! The HTTP API (JSON over HTTP/1.1), served on a unix socket and optionally TCP.
//!
//! Routes, all under [`types::API_PREFIX`] except the probes:
//! - `POST /apply[?dryRun=true]`: manifests as one all-or-nothing unit (server-side apply)
//! - `GET /{plural}[?labelSelector=..][&watch=true[&resourceVersion=N]]`: list, or a JSON-lines watch
//! - `POST /{plural}`: create; `GET|PUT|DELETE /{plural}/{name}`: get, replace, delete
//! - `PUT /{plural}/{name}/status`, `PUT /{plural}/{name}/finalizers`: the controller's subresources
//! - `GET|POST /{plural}/{name}/events`
//! - `GET /nodes`, `POST /nodes/{node}/drain`, `POST /nodes/{node}/uncordon`: `haswarmctl node`
//! - `POST /hooks/gitsources/{name}`: a webhook (a git server's push hook) asking a GitSource to sync now
//! - `GET /livez`, `GET /readyz` (store, and Docker when the controllers run), `GET /metrics`

mod nodes;
pub mod types;

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use futures::StreamExt;
use haswarm_crds::manifest::resource_from_json;
use haswarm_crds::selector::Selector;
use haswarm_crds::{AnyResource, KindInfo};
use serde_json::Value;

use crate::admission;
use crate::store::{Deletion, Desired, Store, StoreError, WatchFrom, WriteMode};
use types::{
    ApplyRequest, ApplyResponse, ApplyResult, DeleteQuery, ErrorBody, ErrorDetail,
    FinalizersUpdate, List, ListQuery, NewEvent, Reason, StatusUpdate, WriteQuery, API_PREFIX,
};

/// What handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Becomes true when the server shuts down; watch streams end then, so
    /// that graceful shutdown does not wait for them forever.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Metrics served at `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Whether the controllers run: then `/readyz` needs Docker too.
    pub controllers: bool,
}

/// An error response: status code plus [`ErrorBody`].
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                reason,
                message: message.into(),
                details: Vec::new(),
            },
        }
    }

    fn invalid(details: Vec<ErrorDetail>) -> Self {
        let n = details.len();
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            Reason::Invalid,
            format!(
                "{n} problem{} found; nothing was written",
                if n == 1 { "" } else { "s" }
            ),
        );
        e.body.details = details;
        e
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Reason::BadRequest, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, reason) = match &e {
            StoreError::NotFound { .. } => (StatusCode::NOT_FOUND, Reason::NotFound),
            StoreError::AlreadyExists { .. } => (StatusCode::CONFLICT, Reason::AlreadyExists),
            StoreError::Conflict { .. } => (StatusCode::CONFLICT, Reason::Conflict),
            StoreError::Terminating { .. } => (StatusCode::CONFLICT, Reason::Terminating),
            StoreError::Gone { .. } | StoreError::Lagged(_) => (StatusCode::GONE, Reason::Gone),
            StoreError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, Reason::Unavailable),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, Reason::Internal),
        };
        if reason == Reason::Internal {
            tracing::error!(error = %e, "store failure");
        }
        Self::new(status, reason, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn kind_of(plural: &str) -> ApiResult<&'static KindInfo> {
    KindInfo::lookup(plural).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            Reason::NotFound,
            format!("unknown resource type {plural:?}: use postgresclusters, redissentinelgroups, sharedvolumes or gitsources"),
        )
    })
}

/// The API router, without authentication (see [`require_token`]).
pub fn router(state: AppState) -> Router {
    let resources = Router::new()
        .route("/apply", post(apply))
        .route("/nodes", get(nodes::list))
        .route("/nodes/{node}/drain", post(nodes::drain))
        .route("/nodes/{node}/uncordon", post(nodes::uncordon))
        .route("/{plural}", get(list_or_watch).post(create))
        .route(
            "/{plural}/{name}",
            get(get_one).put(replace).delete(delete_one),
        )
        .route("/{plural}/{name}/status", put(write_status))
        .route("/{plural}/{name}/finalizers", put(write_finalizers))
        .route("/{plural}/{name}/events", get(list_events).post(add_event));
    Router::new()
        .nest(API_PREFIX, resources)
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/store", get(store_info))
        .route("/metrics", get(metrics))
        .route("/hooks/gitsources/{name}", post(sync_hook))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, Reason::NotFound, "no such route")
        })
        .with_state(state)
}

/// The store's id and whether it is mirrored in Swarm: what `haswarmctl
/// install` needs to keep an existing store's id when it turns mirroring on.
async fn store_info(State(s): State<AppState>) -> Json<Value> {
    Json(serde_json::json!({
        "id": s.store.id(),
        "mirrored": s.store.is_mirrored(),
    }))
}

async fn readyz(State(s): State<AppState>) -> Response {
    use crate::metrics::Docker;
    // The store is open for as long as the state exists; a read proves it answers.
    if let Err(e) = s.store.get("SharedVolume", "-readyz-probe-") {
        if !matches!(e, StoreError::NotFound { .. }) {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")).into_response();
        }
    }
    if s.controllers {
        let why = match s.metrics.docker() {
            Docker::Reachable => None,
            Docker::Unknown => Some("docker: not reached yet\n"),
            Docker::Unreachable => Some("docker: the engine does not answer\n"),
        };
        if let Some(why) = why {
            return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
        }
    }
    "ok\n".into_response()
}

/// A push webhook: marks the GitSource with [`SYNC_REQUESTED`], a metadata
/// change that queues it at once. The body (the git server's payload) is
/// not read: a hook only says "look now", and the source fetches what it
/// follows. On TCP the bearer token guards it like every other route.
///
/// [`SYNC_REQUESTED`]: haswarm_crds::gitops::SYNC_REQUESTED
async fn sync_hook(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let record = s.store.get("GitSource", &name)?;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let mut annotations = record.metadata.annotations.clone();
    annotations.insert(haswarm_crds::gitops::SYNC_REQUESTED.to_owned(), now.clone());
    s.store
        .write(
            vec![Desired {
                kind: record.kind.clone(),
                name: record.metadata.name.clone(),
                labels: record.metadata.labels.clone(),
                annotations,
                spec: record.spec.clone(),
                resource_version: None,
            }],
            WriteMode::Apply,
            false,
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"gitsource": name, "syncRequested": now})),
    ))
}

/// Prometheus metrics (OpenMetrics text); the data-plane gauges come from
/// the stored statuses of every resource.
async fn metrics(State(s): State<AppState>) -> Response {
    let mut objects = Vec::new();
    for kind in &haswarm_crds::KINDS {
        if let Ok((list, _)) = s.store.list(kind.kind, &Selector::default()) {
            objects.extend(list);
        }
    }
    let null = Value::Null;
    let text = s.metrics.render(objects.iter().map(|o| {
        (
            o.kind.as_str(),
            o.metadata.name.as_str(),
            o.status.as_ref().unwrap_or(&null),
        )
    }));
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// The largest webhook body read to check its signature.
const MAX_HOOK_BODY: usize = 4 << 20;

/// Whether `header` (`X-Hub-Signature-256: sha256=<hex>`, as GitHub, Gitea
/// and Forgejo send it) is the HMAC-SHA256 of `body` under `key`.
pub fn hook_signature_ok(key: &[u8], body: &[u8], header: &str) -> bool {
    use hmac::Mac;
    let Some(given) = header
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h.trim()).ok())
    else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&given).is_ok()
}

/// Middleware for the TCP listener: every request needs `Authorization:
/// Bearer <token>`, except a webhook (`/hooks/...`) signed with the token
/// as its secret (`X-Hub-Signature-256`): git servers sign, they do not
/// send bearer tokens.
pub async fn require_token(
    State(token): State<Arc<String>>,
    req: Request<Body>,
    next: Next,
) -> Response {
    if req.uri().path().starts_with("/hooks/") {
        if let Some(sig) = req
            .headers()
            .get("x-hub-signature-256")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
        {
            let (parts, body) = req.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, MAX_HOOK_BODY).await else {
                return ApiError::bad_request("the webhook body is too large or cut")
                    .into_response();
            };
            if hook_signature_ok(token.as_bytes(), &bytes, &sig) {
                return next
                    .run(Request::from_parts(parts, Body::from(bytes)))
                    .await;
            }
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                Reason::Unauthorized,
                "the webhook signature (X-Hub-Signature-256) does not match: the webhook's secret must be haswarmd's token",
            )
            .into_response();
        }
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            Reason::Unauthorized,
            "missing or wrong bearer token: pass the daemon's token (HASWARM_TOKEN or --token-file)",
        )
        .into_response()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Types, defaults and validates manifests as one batch; every problem of
/// every manifest is reported.
fn prepare(store: &Store, items: Vec<Value>) -> ApiResult<Vec<(AnyResource, Option<u64>)>> {
    let mut details = Vec::new();
    let mut resources = Vec::new();
    for (index, raw) in items.into_iter().enumerate() {
        let kind = raw.get("kind").and_then(Value::as_str).map(str::to_owned);
        let name = raw
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let rv = raw
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_u64);
        match resource_from_json(raw) {
            Ok(r) => resources.push((r, rv)),
            Err(e) => details.push(ErrorDetail {
                index,
                kind,
                name,
                path: (e.path != ".").then_some(e.path),
                rule: None,
                message: e.message,
            }),
        }
    }
    if !details.is_empty() {
        return Err(ApiError::invalid(details));
    }
    let refs: Vec<&AnyResource> = resources.iter().map(|(r, _)| r).collect();
    let problems = admission::validate(store, &refs);
    if !problems.is_empty() {
        return Err(ApiError::invalid(
            problems
                .into_iter()
                .map(|(i, e)| ErrorDetail {
                    index: i,
                    kind: Some(refs[i].kind().to_owned()),
                    name: Some(refs[i].name().to_owned()),
                    path: Some(e.path.to_string()),
                    rule: Some(e.rule.to_owned()),
                    message: e.message,
                })
                .collect(),
        ));
    }
    Ok(resources)
}

async fn write_batch(
    store: &Store,
    items: Vec<Value>,
    mode: WriteMode,
    dry_run: bool,
) -> ApiResult<ApplyResponse> {
    let prepared = prepare(store, items)?;
    let batch = prepared
        .iter()
        .map(|(r, rv)| admission::desired(r, *rv))
        .collect();
    let written = store.write(batch, mode, dry_run).await?;
    Ok(ApplyResponse {
        results: written
            .into_iter()
            .map(|(result, record)| ApplyResult {
                kind: record.kind.clone(),
                name: record.metadata.name.to_string(),
                result,
                object: record.to_json(),
            })
            .collect(),
        dry_run,
    })
}

async fn apply(
    State(s): State<AppState>,
    Query(q): Query<WriteQuery>,
    body: Bytes,
) -> ApiResult<Json<ApplyResponse>> {
    let req: ApplyRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not an apply request: {e}")))?;
    if req.items.is_empty() {
        return Err(ApiError::bad_request("no manifests to apply"));
    }
    write_batch(
        &s.store,
        req.items,
        WriteMode::Apply,
        q.dry_run.unwrap_or(false),
    )
    .await
    .map(Json)
}

fn parse_body(body: &Bytes) -> ApiResult<Value> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))
}

fn one(mut r: ApplyResponse) -> ApiResult<Value> {
    r.results.pop().map(|x| x.object).ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Reason::Internal,
            "empty write result",
        )
    })
}

async fn create(
    State(s): State<AppState>,
    Path(plural): Path<String>,
    Query(q): Query<WriteQuery>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let kind = kind_of(&plural)?;
    let manifest = parse_body(&body)?;
    check_kind(kind, &manifest, None)?;
    let r = write_batch(
        &s.store,
        vec![manifest],
        WriteMode::Create,
        q.dry_run.unwrap_or(false),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(one(r)?)))
}

fn check_kind(kind: &KindInfo, manifest: &Value, name: Option<&str>) -> ApiResult<()> {
    if let Some(k) = manifest.get("kind").and_then(Value::as_str) {
        if k != kind.kind {
            return Err(ApiError::bad_request(format!(
                "the body is a {k} but the path is for {}",
                kind.plural
            )));
        }
    }
    if let (Some(n), Some(path_name)) = (
        manifest.pointer("/metadata/name").and_then(Value::as_str),
        name,
    ) {
        if n != path_name {
            return Err(ApiError::bad_request(format!(
                "the body names {n:?} but the path names {path_name:?}"
            )));
        }
    }
    Ok(())
}

async fn replace(
    State(s): State<AppState>,
    Path((plural, name)): Path<(String, String)>,
    Query(q): Query<WriteQuery>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let kind = kind_of(&plural)?;
    let manifest = parse_body(&body)?;
    check_kind(kind, &manifest, Some(&name))?;
    let r = write_batch(
        &s.store,
        vec![manifest],
        WriteMode::Replace,
        q.dry_run.unwrap_or(false),
    )
    .await?;
    Ok(Json(one(r)?))
}

async fn get_one(
    State(s): State<AppState>,
    Path((plural, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let kind = kind_of(&plural)?;
    Ok(Json(s.store.get(kind.kind, &name)?.to_json()))
}

async fn delete_one(
    State(s): State<AppState>,
    Path((plural, name)): Path<(String, String)>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let kind = kind_of(&plural)?;
    match s.store.delete(kind.kind, &name, q.resource_version).await? {
        Deletion::Deleted(r) => Ok((StatusCode::OK, Json(r.to_json()))),
        Deletion::Terminating(r) => Ok((StatusCode::ACCEPTED, Json(r.to_json()))),
    }
}

async fn list_or_watch(
    State(s): State<AppState>,
    Path(plural): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let kind = kind_of(&plural)?;
    let selector = Selector::parse(q.label_selector.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if q.watch.unwrap_or(false) {
        let from = q.resource_version.map_or(WatchFrom::Now, WatchFrom::After);
        let stream = s.store.watch(Some(kind.kind), from)?;
        let lines = stream
            .filter(move |e| {
                let keep = match e {
                    Ok(e) => selector.matches(&e.object.metadata.labels),
                    Err(_) => true,
                };
                futures::future::ready(keep)
            })
            .scan(false, |ended, item| {
                if *ended {
                    return futures::future::ready(None);
                }
                let line = match item {
                    Ok(e) => serde_json::to_vec(&e).unwrap_or_default(),
                    Err(err) => {
                        *ended = true;
                        let api: ApiError = err.into();
                        serde_json::to_vec(
                            &serde_json::json!({"type": "ERROR", "object": api.body}),
                        )
                        .unwrap_or_default()
                    }
                };
                let mut line = line;
                line.push(b'\n');
                futures::future::ready(Some(Ok::<_, Infallible>(Bytes::from(line))))
            });
        let mut stopping = s.stopping.clone();
        let lines = lines.take_until(async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        });
        let mut resp = Body::from_stream(lines).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        return Ok(resp);
    }
    let (records, rv) = s.store.list(kind.kind, &selector)?;
    Ok(Json(List {
        items: records.iter().map(crate::store::Record::to_json).collect(),
        resource_version: rv,
    })
    .into_response())
}

async fn write_status(
    State(s): State<AppState>,
    Path((plural, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let kind = kind_of(&plural)?;
    let u: StatusUpdate = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a status update: {e}")))?;
    Ok(Json(
        s.store
            .write_status(kind.kind, &name, u.status, u.resource_version)
            .await?
            .to_json(),
    ))
}

async fn write_finalizers(
    State(s): State<AppState>,
    Path((plural, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let kind = kind_of(&plural)?;
    let u: FinalizersUpdate = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a finalizers update: {e}")))?;
    Ok(Json(
        s.store
            .write_finalizers(kind.kind, &name, u.finalizers, u.resource_version)
            .await?
            .to_json(),
    ))
}

async fn list_events(
    State(s): State<AppState>,
    Path((plural, name)): Path<(String, String)>,
) -> ApiResult<Json<Vec<haswarm_crds::Event>>> {
    let kind = kind_of(&plural)?;
    s.store.get(kind.kind, &name)?;
    Ok(Json(s.store.events(kind.kind, &name)?))
}

async fn add_event(
    State(s): State<AppState>,
    Path((plural, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let kind = kind_of(&plural)?;
    let e: NewEvent = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not an event: {e}")))?;
    s.store
        .record_event(kind.kind, &name, e.type_, &e.reason, &e.message)?;
    Ok(StatusCode::CREATED)
}

#[cfg(test)]
mod tests {
    use super::hook_signature_ok;

    #[test]
    fn webhook_signatures_are_hmac_sha256_of_the_body_under_the_token() {
        let key = b"0123456789abcdef0123456789abcdef";
        let body = br#"{"ref":"refs/heads/main"}"#;
        // openssl dgst -sha256 -hmac <key>
        let good = "sha256=5715eeea6c3a336d03de9b3b592479dbc3d1a82717f482b431bbc4d47b10e641";
        assert!(hook_signature_ok(key, body, good));
        assert!(!hook_signature_ok(key, b"{}", good));
        assert!(!hook_signature_ok(b"another-key-another-key", body, good));
        assert!(!hook_signature_ok(key, body, "sha1=5715eeea"));
        assert!(!hook_signature_ok(key, body, "sha256=not-hex"));
        assert!(!hook_signature_ok(key, body, ""));
    }
}
