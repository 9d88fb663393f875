//! Running the API: the unix socket (always) and TCP (with a token), until
//! shutdown is requested.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};

use crate::api::{self, AppState};
use crate::config::Settings;
use crate::store::{Store, StoreError};

/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another haswarmd took the store's lease over.
    #[error("another haswarmd took over this store's lease; this one stopped (see the log)")]
    LeaseLost,
    /// Another daemon answers on the socket.
    #[error("another haswarmd is already serving {0}; stop it or choose another --socket")]
    SocketInUse(String),
    /// A folder, socket or port could not be set up.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ServeError + 'a {
    move |source| ServeError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// Binds the unix socket with mode 0600 in a folder only the owner can enter,
/// replacing a stale socket file but never a live daemon's.
async fn bind_socket(path: &Path) -> Result<UnixListener, ServeError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io("cannot create the socket folder", dir))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io("cannot restrict the socket folder", dir))?;
        }
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(ServeError::SocketInUse(path.display().to_string()));
        }
        std::fs::remove_file(path).map_err(io("cannot remove the stale socket", path))?;
    }
    let listener = UnixListener::bind(path).map_err(io("cannot listen on", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("cannot restrict the socket", path))?;
    Ok(listener)
}

/// A started server: the store and the bound addresses.
#[derive(Debug)]
pub struct Started {
    /// The store, for an embedding process (the controller, `haswarmctl up`).
    pub store: Store,
    /// The unix socket.
    pub socket: PathBuf,
    /// The TCP address actually bound, when enabled (port 0 picks a free port).
    pub tcp: Option<std::net::SocketAddr>,
}

/// Opens the store, binds the listeners and serves until `shutdown` completes,
/// then finishes in-flight requests and removes the socket file.
///
/// `ready` is called once everything is bound.
///
/// # Errors
/// [`ServeError`] when the store, socket or port cannot be set up.
pub async fn serve(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(&Started),
) -> Result<(), ServeError> {
    std::fs::create_dir_all(&settings.data_dir)
        .map_err(io("cannot create the data folder", &settings.data_dir))?;
    let (store, held) = match &settings.mirror {
        Some(m) => {
            let (store, held) = open_mirrored(&settings.data_dir, m).await?;
            (store, Some(held))
        }
        None => (Store::open(&settings.data_dir)?, None),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let state = AppState {
        store: store.clone(),
        stopping: stop_rx.clone(),
        metrics: std::sync::Arc::clone(&metrics),
        controllers: settings.controllers.is_some(),
    };
    let unix = bind_socket(&settings.socket).await?;
    let tcp = match &settings.tcp {
        Some((addr, token)) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Io {
                    what: "cannot listen on",
                    path: addr.to_string(),
                    source,
                })?;
            let bound = l.local_addr().ok();
            Some((l, Arc::new(token.clone()), bound))
        }
        None => None,
    };
    let started = Started {
        store: store.clone(),
        socket: settings.socket.clone(),
        tcp: tcp.as_ref().and_then(|t| t.2),
    };
    ready(&started);
    if let Some(controller_settings) = settings.controllers.clone() {
        start_controllers(
            (store.clone(), held.as_ref().map(|h| h.swarm.clone())),
            controller_settings,
            metrics,
            stop_rx.clone(),
        );
    }
    tracing::info!(socket = %settings.socket.display(), tcp = ?started.tcp, "serving the API");

    let router = api::router(state);
    let mut unix_stop = stop_rx.clone();
    let router_for_unix = router.clone();
    let unix_task = tokio::spawn(async move {
        axum::serve(unix, router_for_unix)
            .with_graceful_shutdown(async move {
                let _ = unix_stop.wait_for(|s| *s).await;
            })
            .await
    });
    let tcp_task = tcp.map(|(listener, token, _)| {
        let authed = router.layer(axum::middleware::from_fn_with_state(
            token,
            api::require_token,
        ));
        let mut tcp_stop = stop_rx.clone();
        tokio::spawn(async move {
            axum::serve(listener, authed)
                .with_graceful_shutdown(async move {
                    let _ = tcp_stop.wait_for(|s| *s).await;
                })
                .await
        })
    });
    let lost = async {
        match &held {
            Some(h) => h.fence.lost().await,
            None => std::future::pending().await,
        }
    };
    let lost = tokio::select! {
        () = shutdown => false,
        () = lost => true,
    };
    tracing::info!("shutting down: finishing requests in flight");
    let _ = stop_tx.send(true);
    let drain = async {
        let _ = unix_task.await;
        if let Some(t) = tcp_task {
            let _ = t.await;
        }
    };
    // Requests waiting on a write can never be acknowledged once the lease is lost.
    let limit = if lost {
        std::time::Duration::from_secs(1)
    } else {
        DRAIN_TIMEOUT
    };
    if tokio::time::timeout(limit, drain).await.is_err() {
        tracing::warn!("requests still running after {limit:?}; stopping anyway");
    }
    let _ = std::fs::remove_file(&settings.socket);
    match held {
        Some(_) if lost => Err(ServeError::LeaseLost),
        Some(h) => {
            h.swarm.release_lease(&h.store_id, &h.holder).await;
            Ok(())
        }
        None => Ok(()),
    }
}

/// A store kept with a mirror: the Swarm connection gated by the store's
/// lease, which this process holds.
struct Held {
    swarm: crate::swarm::Swarm,
    fence: crate::lease::Fence,
    holder: String,
    store_id: String,
}

/// Retries `f` until it succeeds, waiting for the Docker engine; says once
/// what it is waiting for.
async fn until_ok<T, E, F, Fut>(what: &str, mut f: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut warned = false;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "{what}; retrying");
                    warned = true;
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }
    }
}

/// Takes the store's lease (waiting while another haswarmd holds it), then
/// opens the store rebuilt from its mirror. Nothing is served before: an
/// empty store must never reconcile, since it would take every object for
/// an orphan. A mirror that cannot be opened (another key) is an error.
async fn open_mirrored(
    dir: &Path,
    settings: &crate::config::MirrorSettings,
) -> Result<(Store, Held), ServeError> {
    use crate::store::mirror::{Mirror, MirrorError};
    let swarm = until_ok(
        "cannot reach the Docker engine yet",
        crate::swarm::Swarm::connect,
    )
    .await;
    let holder = uuid::Uuid::new_v4().to_string();
    let id = settings.store_id.clone();
    let term = settings.lease_term;
    let (fence, epoch) = until_ok("cannot read the store's lease yet", || {
        swarm.acquire_lease(&id, &holder, term)
    })
    .await;
    swarm.keep_lease(&id, &holder, term, fence.clone());
    let swarm = swarm.fenced(fence.clone());
    tracing::info!(store = %id, epoch, "this haswarmd holds the store's lease");
    loop {
        let mirror = Mirror::new(Arc::new(swarm.clone()), settings.key.clone(), &id);
        match Store::open_mirrored(dir, mirror).await {
            Ok(store) => {
                let held = Held {
                    swarm,
                    fence,
                    holder,
                    store_id: id,
                };
                return Ok((store, held));
            }
            Err(StoreError::Mirror(MirrorError::Swarm(e))) => {
                tracing::warn!(error = %e, "cannot read the store's mirror in Swarm yet; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Connects to Docker in the background (retrying until the engine answers,
/// so the API serves meanwhile), unless given the connection, and starts
/// every controller.
pub fn start_controllers(
    (store, connected): (Store, Option<crate::swarm::Swarm>),
    settings: crate::runtime::Settings,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    stopping: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut warned = false;
        let swarm = loop {
            if let Some(s) = &connected {
                break s.clone();
            }
            match crate::swarm::Swarm::connect().await {
                Ok(s) => break s,
                Err(e) => {
                    metrics.set_docker(crate::metrics::Docker::Unreachable);
                    if !warned {
                        tracing::warn!(error = %e, "cannot reach the Docker engine yet; retrying");
                        warned = true;
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                }
            }
        };
        match swarm.info().await {
            Ok(info) if info.is_manager => tracing::info!(
                engine = %info.version,
                api = %info.api_version,
                "connected to a swarm manager; controllers start"
            ),
            Ok(info) => tracing::warn!(
                engine = %info.version,
                "this engine is not a swarm manager: reconciles will fail until it is (docker swarm init)"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot read engine info"),
        }
        let ctx = std::sync::Arc::new(crate::runtime::Context {
            store,
            swarm,
            settings,
            metrics,
            stopping,
        });
        start_reconcilers(ctx);
    });
}

/// Starts every kind's controller, then the Docker event feed that
/// triggers them: the one place that wires the kinds into the runtime.
fn start_reconcilers(ctx: std::sync::Arc<crate::runtime::Context>) {
    use crate::reconcilers::{gitops, postgres, redis, volume};
    use crate::runtime::events::{self, Dispatch};
    let mut kinds = Dispatch::new();
    events::add(&mut kinds, &ctx, volume::SharedVolumes);
    events::add(&mut kinds, &ctx, redis::RedisGroups);
    events::add(&mut kinds, &ctx, postgres::PostgresClusters);
    events::add(&mut kinds, &ctx, gitops::GitSources);
    events::spawn(ctx, kinds);
}
