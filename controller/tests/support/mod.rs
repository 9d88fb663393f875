//! What the daemon tests with a mirror share: removing a store's Swarm objects.

use std::process::{Command, Stdio};

/// Removes every Swarm config of store `store_id` (its mirror and its
/// lease, which carry `io.haswarm.instance=<store id>`). Best effort: it
/// runs from `Drop`, whatever assertion failed.
pub fn remove_store_configs(store_id: &str) {
    let listed = Command::new("docker")
        .args(["config", "ls", "-q", "--filter"])
        .arg(format!("label=io.haswarm.instance={store_id}"))
        .output();
    if let Ok(out) = listed {
        let ids = String::from_utf8_lossy(&out.stdout).into_owned();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["config", "rm"])
                .args(&ids)
                .stdout(Stdio::null())
                .status();
        }
    }
}
