//! The installed store's id and mirror key for `haswarmctl install`: one
//! Swarm secret holding the key, labelled with the store's id, made by the
//! first install and found again by every later one.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use haswarm_controller::client::{Client, Endpoint};
use haswarm_controller::store::seal::SealKey;

/// Label of the key secret naming the store's id.
pub const STORE_ID_LABEL: &str = "io.haswarm.store-id";

/// Where the store's id comes from.
#[derive(Debug, PartialEq, Eq)]
pub enum StoreKey {
    /// The key secret exists and names the id.
    Existing(String),
    /// No key secret yet: one is made with this id (an installed haswarmd's
    /// own, so that its Swarm objects stay its own, else a new one).
    ToCreate(String),
}

impl StoreKey {
    /// The store's id.
    pub fn id(&self) -> &str {
        match self {
            Self::Existing(id) | Self::ToCreate(id) => id,
        }
    }
}

/// Finds the key secret `secret`, or decides the id of one to make; `socket`
/// is where an installed haswarmd answers.
///
/// # Errors
/// The docker CLI cannot run, or the secret exists without the label.
pub fn resolve(secret: &str, socket: &Path) -> Result<StoreKey, String> {
    let out = Command::new("docker")
        .args(["secret", "inspect", "--format"])
        .arg(format!("{{{{index .Spec.Labels \"{STORE_ID_LABEL}\"}}}}"))
        .arg(secret)
        .output()
        .map_err(|e| format!("cannot run the docker CLI ({e}): it is needed to install"))?;
    if out.status.success() {
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if id.is_empty() || id == "<no value>" {
            return Err(format!(
                "Swarm secret {secret} exists without the label {STORE_ID_LABEL}: it is not a key `haswarmctl install` made; remove it, or name the store with --set mirror.storeId=ID"
            ));
        }
        return Ok(StoreKey::Existing(id));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.contains("No such secret") && !stderr.contains("not found") {
        return Err(format!("docker secret inspect {secret}: {}", stderr.trim()));
    }
    Ok(StoreKey::ToCreate(
        installed_store_id(socket).unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
    ))
}

/// The id of the store an installed haswarmd serves on `socket`, if one answers.
fn installed_store_id(socket: &Path) -> Option<String> {
    if !socket.exists() {
        return None;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let client = Client::new(Endpoint::Unix(socket.to_path_buf()));
    let (code, body) = rt.block_on(client.probe("/store")).ok()?;
    if code != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["id"].as_str().map(str::to_owned)
}

/// Makes the key secret: 32 random bytes as hex, labelled with the store's id.
///
/// # Errors
/// The docker CLI's, quoted.
pub fn create(secret: &str, id: &str) -> Result<(), String> {
    let mut child = Command::new("docker")
        .args(["secret", "create", "--label"])
        .arg(format!("{STORE_ID_LABEL}={id}"))
        .args(["--label", "io.haswarm.managed-by=haswarm", secret, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run the docker CLI ({e})"))?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(SealKey::generate_hex().as_bytes())
            .map_err(|e| format!("docker secret create {secret}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("docker secret create {secret}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "docker secret create {secret}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
