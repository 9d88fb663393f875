//! Patroni's configuration: the file every instance shares, and the dynamic
//! configuration it keeps in etcd (what haswarm sets, and the patch to it).

use super::*;

/// `s` as one single-quoted shell word.
fn shell_quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A YAML double-quoted scalar (JSON's string syntax is valid YAML).
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Patroni's configuration shared by every instance: everything but the
/// member's name and addresses (environment) and the passwords (added by the
/// start script, which is why the `postgresql` section comes last).
/// `etcd_clients`: the managed etcd members Patroni is told of.
pub fn patroni_conf(pgc: &PostgresCluster, etcd_clients: u8) -> String {
    let name = pgc.metadata.name.as_str();
    let spec = &pgc.spec;
    let (hosts, protocol) = etcd_hosts(name, spec, etcd_clients);
    let mut c = vec![
        format!("scope: {}", quoted(name)),
        "namespace: /haswarm/".to_owned(),
        // `restapi:` (with its password) is added by the start script.
        "etcd3:".to_owned(),
        format!("  protocol: {protocol}"),
        "  hosts:".to_owned(),
    ];
    c.extend(hosts.iter().map(|h| format!("  - {}", quoted(h))));
    // The dynamic configuration starts as what replication needs, and the
    // controller makes it follow the spec through Patroni's /config: a
    // change of parameters or timing is then no new config and no rolling
    // restart, only the restarts a parameter needs. (JSON is YAML.)
    c.extend([
        "bootstrap:".to_owned(),
        format!("  dcs: {}", bootstrap_dynamic_config(pgc)),
    ]);
    // A restored cluster starts from the source's backup instead of
    // initdb; Patroni then waits for the replay to reach the target and
    // PostgreSQL to promote, and runs post_bootstrap.
    if let Some(cmd) = crate::reconcilers::postgres::backup::conf::restore_command(pgc) {
        c.extend([
            "  method: haswarm_restore".to_owned(),
            "  haswarm_restore:".to_owned(),
            format!(
                "    command: {}",
                quoted(&format!("sh -c {}", shell_quoted(&cmd)))
            ),
            "    no_params: true".to_owned(),
            "    keep_existing_recovery_conf: true".to_owned(),
        ]);
    }
    c.extend([
        "  initdb:".to_owned(),
        "  - encoding: UTF8".to_owned(),
        "  - data-checksums".to_owned(),
        "  post_bootstrap: /etc/haswarm/post-bootstrap.sh".to_owned(),
        "postgresql:".to_owned(),
        format!("  listen: 0.0.0.0:{PG_PORT}"),
        "  data_dir: /var/lib/postgresql/data".to_owned(),
        format!(
            "  bin_dir: /usr/lib/postgresql/{}/bin",
            spec.postgres.version
        ),
        "  pgpass: /tmp/haswarm-pgpass".to_owned(),
        // Patroni's own connections go through the socket (`local ... trust`
        // below), not TCP to localhost: a member still holding the old
        // superuser password during a rotation keeps working.
        "  use_unix_socket: true".to_owned(),
        // A new replica's copy starts at once rather than at the leader's
        // next scheduled checkpoint (up to 5 minutes away).
        "  basebackup:".to_owned(),
        "  - checkpoint: fast".to_owned(),
        // Inside the container only; every network client needs a password.
        "  pg_hba:".to_owned(),
        "  - local all all trust".to_owned(),
        "  - host replication replicator all scram-sha-256".to_owned(),
        "  - host all all all scram-sha-256".to_owned(),
        String::new(),
    ]);
    c.join("\n")
}

/// With `spec.backup`, the parameters that archive every WAL segment.
fn archive_parameters(pgc: &PostgresCluster) -> Vec<(String, serde_json::Value)> {
    if pgc.spec.backup.is_none() {
        return Vec::new();
    }
    crate::reconcilers::postgres::backup::conf::archive_parameters(pgc.metadata.name.as_str())
        .into_iter()
        .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v)))
        .collect()
}

/// Parameters replication needs, whatever the spec says.
const REPLICATION_PARAMETERS: [(&str, &str); 5] = [
    ("wal_level", "replica"),
    ("hot_standby", "on"),
    ("wal_log_hints", "on"),
    ("max_wal_senders", "10"),
    ("max_replication_slots", "10"),
];

/// The dynamic configuration a new cluster starts with: replication's,
/// and archiving's with `spec.backup` (`archive_mode` needs a restart, so
/// a new cluster starts with it rather than restarting for it). Only
/// those, so the instances' config does not change with other settings.
pub fn bootstrap_dynamic_config(pgc: &PostgresCluster) -> serde_json::Value {
    let mut parameters: serde_json::Map<String, serde_json::Value> = REPLICATION_PARAMETERS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String((*v).to_owned())))
        .collect();
    parameters.extend(archive_parameters(pgc));
    serde_json::json!({
        "postgresql": {
            "use_pg_rewind": true,
            "use_slots": true,
            "parameters": parameters,
        },
    })
}

/// Patroni's dynamic configuration as the spec wants it (kept in etcd, the
/// same for every member): timing, synchronous mode and PostgreSQL
/// parameters. The controller keeps the live one equal to it through
/// Patroni's `/config`.
pub fn dynamic_config(pgc: &PostgresCluster) -> serde_json::Value {
    let p = &pgc.spec.patroni;
    let mut parameters = serde_json::Map::new();
    for (k, v) in REPLICATION_PARAMETERS {
        parameters.insert(k.to_owned(), serde_json::Value::String(v.to_owned()));
    }
    for (k, v) in &pgc.spec.postgres.parameters {
        parameters.insert(k.clone(), serde_json::Value::String(v.0.clone()));
    }
    parameters.extend(archive_parameters(pgc));
    serde_json::json!({
        "ttl": p.ttl,
        "loop_wait": p.loop_wait,
        "retry_timeout": p.retry_timeout,
        "maximum_lag_on_failover": p.maximum_lag_on_failover,
        "synchronous_mode": p.synchronous_mode != SynchronousMode::Off,
        "synchronous_mode_strict": p.synchronous_mode == SynchronousMode::Strict,
        "postgresql": {
            "use_pg_rewind": true,
            "use_slots": true,
            "parameters": parameters,
        },
    })
}

/// The JSON merge patch that brings Patroni's live dynamic configuration to
/// `desired`, or `None` when they agree. Values compare as text (Patroni
/// keeps what it was given, `"10"` or `10`); a parameter no longer desired is
/// removed (`null`).
pub fn config_patch(
    desired: &serde_json::Value,
    live: &serde_json::Value,
) -> Option<serde_json::Value> {
    use serde_json::Value;
    fn text(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
    let mut patch = serde_json::Map::new();
    for (k, want) in desired
        .as_object()?
        .iter()
        .filter(|(k, _)| *k != "postgresql")
    {
        if live.get(k).map(text) != Some(text(want)) {
            patch.insert(k.clone(), want.clone());
        }
    }
    let empty = serde_json::Map::new();
    let want = desired
        .pointer("/postgresql/parameters")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let have = live
        .pointer("/postgresql/parameters")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut parameters = serde_json::Map::new();
    for (k, v) in want {
        if have.get(k).map(text) != Some(text(v)) {
            parameters.insert(k.clone(), v.clone());
        }
    }
    for k in have.keys().filter(|k| !want.contains_key(*k)) {
        parameters.insert(k.clone(), Value::Null);
    }
    if !parameters.is_empty() {
        patch.insert(
            "postgresql".into(),
            serde_json::json!({ "parameters": parameters }),
        );
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}
