//! The daemon's configuration: flags and `HASWARM_*` environment variables
//! (declared once, in [`env`]), validated before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;

/// Environment variable names, declared once for the daemon, the CLI and the docs.
pub mod env {
    /// The daemon's data folder.
    pub const DATA_DIR: &str = "HASWARM_DATA_DIR";
    /// The unix socket path.
    pub const SOCKET: &str = "HASWARM_SOCKET";
    /// The TCP address to listen on.
    pub const LISTEN: &str = "HASWARM_LISTEN";
    /// The file holding the TCP bearer token.
    pub const TOKEN_FILE: &str = "HASWARM_TOKEN_FILE";
    /// Where `haswarmctl` finds the daemon.
    pub const SERVER: &str = "HASWARM_SERVER";
    /// The bearer token `haswarmctl` sends over TCP.
    pub const TOKEN: &str = "HASWARM_TOKEN";
    /// Log filter (tracing EnvFilter syntax), e.g. `info,haswarm_controller=debug`.
    pub const LOG: &str = "HASWARM_LOG";
    /// Log format: `text` or `json`.
    pub const LOG_FORMAT: &str = "HASWARM_LOG_FORMAT";
    /// Serve the API without reconcilers.
    pub const NO_CONTROLLERS: &str = "HASWARM_NO_CONTROLLERS";
    /// Image of SharedVolume probes.
    pub const PROBE_IMAGE: &str = "HASWARM_PROBE_IMAGE";
    /// Resync period.
    pub const RESYNC: &str = "HASWARM_RESYNC";
    /// Node loss grace.
    pub const NODE_LOSS_GRACE: &str = "HASWARM_NODE_LOSS_GRACE";
    /// `--secrets-dir`.
    pub const SECRETS_DIR: &str = "HASWARM_SECRETS_DIR";
    /// `--store-id`.
    pub const STORE_ID: &str = "HASWARM_STORE_ID";
    /// `--mirror-key-file`.
    pub const MIRROR_KEY_FILE: &str = "HASWARM_MIRROR_KEY_FILE";
    /// `--lease-term`.
    pub const LEASE_TERM: &str = "HASWARM_LEASE_TERM";
}

/// The folder for the default socket: `$XDG_RUNTIME_DIR/haswarm`, else `./.haswarm`.
pub fn default_runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("haswarm"),
        _ => PathBuf::from(".haswarm"),
    }
}

/// The socket the daemon listens on and the CLI tries when told nothing else.
pub fn default_socket() -> PathBuf {
    default_runtime_dir().join("haswarm.sock")
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// haswarmd: haswarm's daemon. It owns the store and serves the API that haswarmctl talks to.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "haswarmd",
    version,
    after_help = "Exit codes:\n  0  stopped cleanly (SIGTERM or Ctrl-C)\n  2  invalid configuration (nothing was started)\n  1  failed while running\n  130  forced stop (second Ctrl-C)"
)]
pub struct DaemonConfig {
    /// Folder for the store (created if missing).
    #[arg(long, env = env::DATA_DIR, default_value = ".haswarm/data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Unix socket to serve the API on (mode 0600). Default: $XDG_RUNTIME_DIR/haswarm/haswarm.sock, else ./.haswarm/haswarm.sock.
    #[arg(long, env = env::SOCKET, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Also serve the API on this TCP address (needs --token-file), e.g. 127.0.0.1:7443.
    #[arg(long, env = env::LISTEN, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// File holding the bearer token TCP clients must send. Required with --listen.
    #[arg(long, env = env::TOKEN_FILE, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = env::LOG_FORMAT, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Serve the API only: no reconcilers, no Docker connection (for tooling and tests).
    #[arg(long, env = env::NO_CONTROLLERS)]
    pub no_controllers: bool,
    /// Image of the SharedVolume probe services (needs /bin/sh, test, ls and sleep).
    #[arg(long, env = env::PROBE_IMAGE, default_value = "haswarm/probe:latest", value_name = "IMAGE")]
    pub probe_image: String,
    /// How often every resource is reconciled even without events, e.g. 30s.
    #[arg(long, env = env::RESYNC, default_value = "30s", value_name = "DURATION")]
    pub resync: String,
    /// How long a node may be down (or at once, when drained) before the
    /// members pinned to it (Redis instances and sentinels, PostgreSQL
    /// instances and etcd members) move to other nodes, e.g. 60s. A moved
    /// member is a new incarnation that starts empty and copies the others'
    /// data (an etcd member is replaced in etcd's membership, only while
    /// the others keep a quorum); the Redis master and the PostgreSQL leader
    /// never move. Make it longer than Patroni's ttl.
    #[arg(long, env = env::NODE_LOSS_GRACE, default_value = "60s", value_name = "DURATION")]
    pub node_loss_grace: String,
    /// Folder of the Swarm secrets mounted into haswarmd, where GitSource
    /// credentials are read (spec.credentials.secret names a file there).
    #[arg(long, env = env::SECRETS_DIR, default_value = "/run/secrets", value_name = "DIR")]
    pub secrets_dir: PathBuf,
    /// The store's id, which every Swarm object haswarm makes is labelled
    /// with and which names its mirror. A data folder of another id is
    /// refused. Needs --mirror-key-file.
    #[arg(long, env = env::STORE_ID, value_name = "ID", requires = "mirror_key_file")]
    pub store_id: Option<String>,
    /// Mirror the store in Swarm's Raft: each resource (spec, metadata and
    /// status) as a Swarm config, written before a change is acknowledged,
    /// its generated credentials sealed (ChaCha20-Poly1305) with the key in
    /// this file (64 hex digits; `haswarmctl install` keeps it in a Swarm
    /// secret). haswarmd started on another manager with an empty folder
    /// rebuilds the store from the mirror. Needs --store-id.
    #[arg(long, env = env::MIRROR_KEY_FILE, value_name = "FILE", requires = "store_id")]
    pub mirror_key_file: Option<PathBuf>,
    /// With a mirror, one haswarmd per store acts: the one holding the
    /// store's lease in Swarm's Raft, renewed every third of this term. A
    /// haswarmd that cannot renew stops acting before the term ends; another
    /// takes the lease over once it has seen no renewal for a whole term.
    #[arg(long, env = env::LEASE_TERM, default_value = "15s", value_name = "DURATION")]
    pub lease_term: String,
}

/// What mirroring the store needs.
#[derive(Clone, Debug)]
pub struct MirrorSettings {
    /// The store's id.
    pub store_id: String,
    /// The key credentials are sealed with.
    pub key: crate::store::seal::SealKey,
    /// The lease's term.
    pub lease_term: std::time::Duration,
}

/// A configuration that passed validation: everything needed to start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Store folder.
    pub data_dir: PathBuf,
    /// Unix socket path.
    pub socket: PathBuf,
    /// TCP listener and its token, when enabled.
    pub tcp: Option<(SocketAddr, String)>,
    /// Log format.
    pub log_format: LogFormat,
    /// Reconciler settings; `None` serves the API only.
    pub controllers: Option<crate::runtime::Settings>,
    /// The mirror in Swarm, when on.
    pub mirror: Option<MirrorSettings>,
}

/// Why the configuration cannot start a daemon.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// TCP without a token would let anyone on the network change the cluster.
    #[error("--listen ({}) needs --token-file ({}): the TCP API accepts only requests carrying the token", env::LISTEN, env::TOKEN_FILE)]
    ListenWithoutToken,
    /// The token file cannot be used.
    #[error("token file {path}: {problem}")]
    Token { path: String, problem: String },
    /// The socket path cannot be used.
    #[error("socket path {path}: {problem}")]
    Socket { path: String, problem: String },
    /// The resync period does not parse.
    #[error("--resync: {0}")]
    Resync(String),
    /// The node loss grace does not parse.
    #[error("--node-loss-grace: {0}")]
    NodeLossGrace(String),
    /// The store id cannot label Swarm objects.
    #[error("--store-id {0:?}: use 1 to 48 letters, digits, '-', '_' or '.'")]
    StoreId(String),
    /// The lease term does not parse.
    #[error("--lease-term: {0}")]
    LeaseTerm(String),
    /// The mirror key cannot be read.
    #[error("--mirror-key-file: {0}")]
    MirrorKey(#[from] crate::store::seal::SealError),
}

impl DaemonConfig {
    /// Checks everything that can be checked before starting.
    ///
    /// # Errors
    /// [`ConfigError`] saying what to change.
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let socket = self.socket.unwrap_or_else(default_socket);
        // sun_path holds 108 bytes on Linux, including the terminating NUL.
        if socket.as_os_str().len() > 107 {
            return Err(ConfigError::Socket {
                path: socket.display().to_string(),
                problem: "longer than the 107 bytes a unix socket path may have; choose a shorter --socket".into(),
            });
        }
        let tcp = match (self.listen, &self.token_file) {
            (Some(_), None) => return Err(ConfigError::ListenWithoutToken),
            (Some(addr), Some(file)) => Some((addr, read_token(file)?)),
            (None, _) => None,
        };
        let resync = haswarm_crds::quantity::Duration::parse(&self.resync)
            .map_err(ConfigError::Resync)?
            .to_std();
        let node_loss_grace = haswarm_crds::quantity::Duration::parse(&self.node_loss_grace)
            .map_err(ConfigError::NodeLossGrace)?
            .to_std();
        let controllers = (!self.no_controllers).then(|| crate::runtime::Settings {
            probe_image: self.probe_image,
            resync,
            node_loss_grace,
            git_cache: self.data_dir.join("git"),
            secrets_dir: self.secrets_dir,
            ..crate::runtime::Settings::default()
        });
        let mirror = match (self.store_id, self.mirror_key_file) {
            (Some(id), Some(file)) => {
                let ok = !id.is_empty()
                    // Swarm names are at most 64 characters: haswarm-lease-<id>.
                    && id.len() <= 48
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                if !ok {
                    return Err(ConfigError::StoreId(id));
                }
                let lease_term = haswarm_crds::quantity::Duration::parse(&self.lease_term)
                    .map_err(ConfigError::LeaseTerm)?
                    .to_std();
                if lease_term < std::time::Duration::from_secs(1) {
                    return Err(ConfigError::LeaseTerm("at least 1s".into()));
                }
                Some(MirrorSettings {
                    store_id: id,
                    key: crate::store::seal::SealKey::read(&file)?,
                    lease_term,
                })
            }
            _ => None,
        };
        Ok(Settings {
            data_dir: self.data_dir,
            socket,
            tcp,
            log_format: self.log_format,
            controllers,
            mirror,
        })
    }
}

/// Reads a token file: the first line, trimmed; at least 16 characters.
///
/// # Errors
/// [`ConfigError::Token`] when unreadable, empty or too short.
pub fn read_token(path: &Path) -> Result<String, ConfigError> {
    let err = |problem: String| ConfigError::Token {
        path: path.display().to_string(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let token = text.lines().next().unwrap_or_default().trim().to_owned();
    if token.len() < 16 {
        return Err(err(
            "the token must be at least 16 characters (e.g. `openssl rand -hex 32 > FILE`)".into(),
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> DaemonConfig {
        DaemonConfig::try_parse_from(std::iter::once("haswarmd").chain(args.iter().copied()))
            .expect("parses")
    }

    #[test]
    fn tcp_without_a_token_is_refused() {
        let e = parse(&["--listen", "127.0.0.1:7443"])
            .validate()
            .expect_err("refused");
        assert!(e.to_string().contains("needs --token-file"), "{e}");
    }

    #[test]
    fn short_tokens_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("t");
        std::fs::write(&f, "short\n").expect("write");
        let e = parse(&[
            "--listen",
            "127.0.0.1:7443",
            "--token-file",
            f.to_str().expect("utf-8"),
        ])
        .validate()
        .expect_err("refused");
        assert!(e.to_string().contains("at least 16 characters"), "{e}");
        std::fs::write(&f, "0123456789abcdef0123\n").expect("write");
        let s = parse(&[
            "--listen",
            "127.0.0.1:7443",
            "--token-file",
            f.to_str().expect("utf-8"),
        ])
        .validate()
        .expect("valid");
        assert_eq!(s.tcp.map(|t| t.1), Some("0123456789abcdef0123".to_owned()));
    }

    #[test]
    fn overlong_socket_paths_are_refused() {
        let long = format!("/tmp/{}/s.sock", "x".repeat(120));
        let e = parse(&["--socket", &long]).validate().expect_err("refused");
        assert!(e.to_string().contains("107 bytes"), "{e}");
    }
}
