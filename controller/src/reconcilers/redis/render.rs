//! RedisSentinelGroup, pure part: every Swarm object of a group, rendered from
//! its spec and the name of the secret that holds its password. No I/O.
//!
//! # Design
//! - One service per data instance (`<name>-redis-<i>`) and per sentinel
//!   (`<name>-sentinel-<j>`), each pinned to a node by its slot label, on the
//!   group's attachable overlay network (`<name>-net`) with DNS round robin,
//!   so every instance has a stable DNS name whatever its task's address.
//! - One password, in one Swarm secret, mounted as a file. The start scripts
//!   (Swarm configs) read it and write it into the runtime config files in
//!   the data volume (mode 0600): it is never in a service spec, an
//!   environment variable or a command line. It serves the default user's
//!   password (`user default on >...`), `masterauth`, the sentinels' own
//!   default user, `sentinel auth-pass` and
//!   `sentinel sentinel-pass`: one value, every place.
//! - Roles are decided at start, not rendered: an instance asks the sentinels
//!   (then its peers) who the master is and replicates it. Only instance 0 of
//!   a group that never started (no marker in its volume, no sentinel and no
//!   peer answering) starts as master. A former master that restarts after a
//!   failover therefore comes back as a replica.
//! - Sentinels resolve and announce host names, so the Swarm DNS names stay
//!   valid when tasks move.

use std::collections::HashMap;

use haswarm_crds::redis::{AppendFsync, PersistenceMode};
use haswarm_crds::{RedisSentinelGroup, RedisSentinelGroupSpec};

use crate::reconcilers::common::{
    self, config_ref, data_mount, health, secret_ref, slot_label, DesiredContent, ServiceParts,
};
use crate::reconcilers::fence::{self, Fence};
use crate::swarm::objects::ContentKind;
use crate::swarm::DesiredService;

/// Where the password file appears in every container.
pub const PASSWORD_FILE: &str = "/run/secrets/redis-password";
/// Redis's port.
pub const REDIS_PORT: u16 = 6379;
/// Sentinel's port.
pub const SENTINEL_PORT: u16 = 26379;
/// The environment variable naming what a moved member announces (see
/// [`announced_name`]); the start scripts default it to `HASWARM_SELF`.
pub const ANNOUNCE_ENV: &str = "HASWARM_ANNOUNCE";

/// Content purposes (they are part of the objects' names).
pub mod purpose {
    /// The generated password (the one members use).
    pub const PASSWORD: &str = "password";
    /// During a rotation, the other password members accept.
    pub const PASSWORD_EXTRA: &str = "password-extra";
    /// During a rotation, the new password (a store credential only).
    pub const PASSWORD_NEXT: &str = "password-next";
    /// redis.conf without secrets.
    pub const REDIS_CONF: &str = "redis-conf";
    /// sentinel.conf's fixed part.
    pub const SENTINEL_CONF: &str = "sentinel-conf";
    /// The data instance start script.
    pub const REDIS_START: &str = "redis-start";
    /// The sentinel start script.
    pub const SENTINEL_START: &str = "sentinel-start";
}

/// `<name>-redis-<i>`.
/// Where sentinels keep their state: a local volume whatever the data's
/// storage (it is small and node-local by nature), reclaimed as the data is.
pub fn sentinel_storage(data: &haswarm_crds::common::Storage) -> haswarm_crds::common::Storage {
    haswarm_crds::common::Storage {
        reclaim_policy: data.reclaim_policy,
        ..haswarm_crds::common::Storage::default()
    }
}

pub fn instance_name(name: &str, i: usize) -> String {
    format!("{name}{INSTANCE_INFIX}{i}")
}

/// What sits between the group's name and an instance's index.
const INSTANCE_INFIX: &str = "-redis-";

/// Whether `service` is one of group `name`'s data instances (see
/// [`instance_name`]).
pub fn is_instance(name: &str, service: &str) -> bool {
    service
        .strip_prefix(name)
        .and_then(|s| s.strip_prefix(INSTANCE_INFIX))
        .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
}

/// `<name>-sentinel-<j>`.
pub fn sentinel_name(name: &str, j: usize) -> String {
    format!("{name}-sentinel-{j}")
}

/// The name incarnation `incarnation` of the member whose service is
/// `service` announces to the others (`replica-announce-ip`, `sentinel
/// announce-ip`): the service name for the first, then
/// `<service>-i<incarnation>`, a network alias only the tasks of that
/// incarnation carry. A member rebuilt on another node is then a new entry
/// in the master's and the sentinels' tables: the old one, back from a lost
/// node, can never be taken for it, and a name the sentinels hand out
/// reaches only the incarnation they mean. (Patroni's names use a dot; a
/// DNS name with one would be a subdomain.)
pub fn announced_name(service: &str, incarnation: u32) -> String {
    if incarnation == 0 {
        service.to_owned()
    } else {
        format!("{service}-i{incarnation}")
    }
}

/// The service and incarnation an announced name stands for (the inverse
/// of [`announced_name`]; a name without the suffix is incarnation 0).
pub fn member_of_announced(host: &str) -> (&str, u32) {
    host.rsplit_once("-i")
        .and_then(|(service, n)| {
            let digits =
                !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0');
            digits
                .then(|| n.parse().ok().map(|n| (service, n)))
                .flatten()
        })
        .unwrap_or((host, 0))
}

pub use crate::reconcilers::common::network_name;

/// The slot label pinning data instance `i`.
pub fn instance_slot(name: &str, i: usize) -> String {
    slot_label(super::KIND, &format!("{name}.redis"), i)
}

/// The slot label pinning sentinel `j`.
pub fn sentinel_slot(name: &str, j: usize) -> String {
    slot_label(super::KIND, &format!("{name}.sentinel"), j)
}

/// What rendering needs besides the spec.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The group.
    pub rsg: &'a RedisSentinelGroup,
    /// Name of the Swarm secret holding the password (generated or the user's).
    pub password_secret: &'a str,
    /// The generated password, when haswarm generated it (rendered into the
    /// secret; `None` when the user supplies the secret).
    pub generated_password: Option<&'a [u8]>,
    /// During a password rotation, the secret holding the other password
    /// every member accepts (mounted as `redis-password-extra`).
    pub extra_password_secret: Option<&'a str>,
    /// Names of the configs, by purpose, as the apply step will create them
    /// (content-named); see [`content_names`].
    pub config_names: &'a HashMap<String, String>,
    /// Slot label -> incarnation of the member pinned there.
    pub incarnations: &'a std::collections::BTreeMap<String, u32>,
}

/// The `redis.conf` shared by every data instance: everything but the
/// password and the role, which the start script adds.
pub fn redis_conf(spec: &RedisSentinelGroupSpec) -> String {
    let mut c = vec![
        format!("port {REDIS_PORT}"),
        "bind * -::*".to_owned(),
        // The password protects the instance; protected mode would also
        // refuse the sentinels and the other instances.
        "protected-mode no".to_owned(),
        "dir /data".to_owned(),
        "replica-read-only yes".to_owned(),
        // A replica that lost its master keeps answering reads: apps decide.
        "replica-serve-stale-data yes".to_owned(),
        // A full sync waits this long for more replicas to share its one
        // transfer. Redis's 5 s default was a third of a new group's time
        // to Ready, and every replica that restarts in a roll waits it
        // alone; 1 s still lets replicas that start together share.
        "repl-diskless-sync-delay 1".to_owned(),
    ];
    let p = &spec.persistence;
    let aof = matches!(p.mode, PersistenceMode::Aof | PersistenceMode::AofAndRdb);
    let rdb = matches!(p.mode, PersistenceMode::Rdb | PersistenceMode::AofAndRdb);
    c.push(format!("appendonly {}", if aof { "yes" } else { "no" }));
    c.push(format!(
        "appendfsync {}",
        match p.append_fsync {
            AppendFsync::EverySec => "everysec",
            AppendFsync::Always => "always",
            AppendFsync::No => "no",
        }
    ));
    if !rdb {
        c.push("save \"\"".to_owned());
    } else if !p.rdb_save.is_empty() {
        let rules: Vec<String> = p
            .rdb_save
            .iter()
            .map(|r| format!("{} {}", r.seconds, r.changes))
            .collect();
        c.push(format!("save {}", rules.join(" ")));
    }
    if let Some(m) = &spec.max_memory {
        c.push(format!("maxmemory {}", m.bytes()));
    }
    let fence = spec.min_replicas_to_write();
    if fence > 0 {
        c.push(format!("min-replicas-to-write {fence}"));
        c.push(format!(
            "min-replicas-max-lag {}",
            min_replicas_max_lag_s(spec)
        ));
    }
    for (k, v) in &spec.config {
        c.push(format!("{k} {}", v.0));
    }
    c.push(String::new());
    c.join("\n")
}

/// Seconds a replica's last acknowledgement may be old and still count for
/// `min-replicas-to-write`: below `downAfter`, so a master frozen long
/// enough for the sentinels to replace it counts no replica when it thaws
/// (replicas acknowledge every second, so 1 s is the floor).
pub fn min_replicas_max_lag_s(spec: &RedisSentinelGroupSpec) -> u64 {
    (spec.sentinels.down_after.as_millis() / 1000)
        .saturating_sub(1)
        .max(1)
}

/// The fixed part of `sentinel.conf`; the start script adds the monitored
/// group, credentials and timing.
pub fn sentinel_conf() -> String {
    [
        format!("port {SENTINEL_PORT}"),
        "protected-mode no".to_owned(),
        "dir /data".to_owned(),
        "sentinel resolve-hostnames yes".to_owned(),
        "sentinel announce-hostnames yes".to_owned(),
        String::new(),
    ]
    .join("\n")
}

/// Start script of a data instance (run by `/bin/sh`).
pub const REDIS_START: &str = include_str!("redis-start.sh");

/// Start script of a sentinel (run by `/bin/sh`).
pub const SENTINEL_START: &str = include_str!("sentinel-start.sh");

/// The configs every group has (and the password secret when generated), by purpose.
pub fn contents(
    spec: &RedisSentinelGroupSpec,
    generated_password: Option<&[u8]>,
) -> Vec<DesiredContent> {
    let config = |purpose: &str, data: String| DesiredContent {
        kind: ContentKind::Config,
        purpose: purpose.to_owned(),
        data: data.into_bytes(),
    };
    let mut out = vec![
        config(purpose::REDIS_CONF, redis_conf(spec)),
        config(purpose::SENTINEL_CONF, sentinel_conf()),
        config(purpose::REDIS_START, REDIS_START.to_owned()),
        config(purpose::SENTINEL_START, SENTINEL_START.to_owned()),
        fence::content(),
    ];
    if let Some(pw) = generated_password {
        out.push(DesiredContent {
            kind: ContentKind::Secret,
            purpose: purpose::PASSWORD.to_owned(),
            data: pw.to_vec(),
        });
    }
    out
}

pub use crate::reconcilers::contents::content_names;

fn name_of<'a>(names: &'a HashMap<String, String>, purpose: &str) -> &'a str {
    names.get(purpose).map_or("", String::as_str)
}

/// Seconds between health checks. Engines from API 1.44 check every second
/// during the start period (`swarm::services` adds it); older ones have no
/// faster start interval, so a restarted member counts as serving (and its
/// name resolves) only at its first passing check, and every rolling step
/// waits for it; but three missed checks get
/// the task replaced, and at 3 s (9 s of misses) a loaded node could lose
/// a sentinel in the middle of a failover (one 3-node CI run saw a killed
/// master stay subjectively down, never objectively): 5 s it stays.
const HEALTH_INTERVAL_S: i64 = 5;

fn auth_health(port: u16) -> String {
    format!(
        "REDISCLI_AUTH=\"$(cat {PASSWORD_FILE})\" redis-cli --no-auth-warning -p {port} ping | grep -q PONG"
    )
}

struct Role<'a> {
    service: String,
    slot: String,
    script: &'a str,
    conf: (&'a str, &'a str),
    env: Vec<String>,
    volume: String,
    health_port: u16,
    resources: &'a haswarm_crds::common::Resources,
    restart_delay_ms: i64,
    start_period_s: i64,
}

fn service(inputs: &Inputs<'_>, role: Role<'_>) -> DesiredService {
    let rsg = inputs.rsg;
    let spec = &rsg.spec;
    let net = network_name(rsg.metadata.name.as_str());
    let data = role.health_port == REDIS_PORT;
    let pin = common::Pin::of(&role.slot, inputs.incarnations);
    let mut env = vec![
        format!("HASWARM_SELF={}", role.service),
        format!("HASWARM_PREFIX={}", rsg.metadata.name),
        format!("HASWARM_GROUP={}", spec.master_group(&rsg.metadata)),
    ];
    // Only from the first move on: a member never moved keeps the spec it
    // always had, so upgrading haswarm restarts nothing.
    let mut aliases = Vec::new();
    if pin.incarnation > 0 {
        let announced = announced_name(&role.service, pin.incarnation);
        env.push(format!("{ANNOUNCE_ENV}={announced}"));
        aliases.push(announced);
    }
    env.extend(role.env);
    let storage = if data {
        spec.storage.clone()
    } else {
        sentinel_storage(&spec.storage)
    };
    common::service(ServiceParts {
        name: role.service.clone(),
        role: if data { "redis" } else { "sentinel" },
        image: &spec.image,
        command: vec!["/bin/sh".into(), role.script.to_owned()],
        env,
        mounts: vec![data_mount(&storage, &role.volume, "/data")],
        secrets: std::iter::once(secret_ref(inputs.password_secret, "redis-password", 0o400))
            .chain(
                inputs
                    .extra_password_secret
                    .map(|n| secret_ref(n, "redis-password-extra", 0o400)),
            )
            .collect(),
        configs: vec![
            config_ref(
                name_of(inputs.config_names, role.conf.0),
                role.conf.1,
                0o444,
            ),
            config_ref(
                name_of(
                    inputs.config_names,
                    if data {
                        purpose::REDIS_START
                    } else {
                        purpose::SENTINEL_START
                    },
                ),
                role.script,
                0o555,
            ),
        ],
        health: Some(health(
            &auth_health(role.health_port),
            HEALTH_INTERVAL_S,
            3,
            role.start_period_s,
        )),
        resources: role.resources,
        placement: &spec.placement,
        slot: Some(pin),
        replicas: 1,
        restart_delay_ms: role.restart_delay_ms,
        network: &net,
        aliases,
        endpoint_mode: spec.network.endpoint_mode,
        fence: data.then(|| Fence {
            kind: "redis",
            ports: &[REDIS_PORT],
            lease_s: fence::redis_lease_s(spec.sentinels.down_after.as_millis()),
            config: name_of(inputs.config_names, fence::PURPOSE),
        }),
    })
}

/// How long Swarm waits before restarting a data instance's task: longer
/// than the sentinels' down-after plus an election, so a crashed master is
/// never restarted in the middle of its own failover (a restart that beats
/// down-after would take the role back; one during the failover adds
/// container churn to the moment the sentinels need the node quiet).
pub fn instance_restart_delay_ms(spec: &RedisSentinelGroupSpec) -> i64 {
    let down_after = i64::try_from(spec.sentinels.down_after.as_millis()).unwrap_or(i64::MAX);
    down_after.saturating_add(5_000).clamp(5_000, 60_000)
}

/// How long a starting instance waits for the sentinels' verdict while they
/// see its master down (see redis-start.sh): long enough for a failover to
/// begin and finish when a replica can take over, even after the sentinels
/// spent 30 s in TILT mode (a starved timer: seen on a saturated 2-core
/// machine, when a shorter wait brought the killed master back as master
/// before the sentinels could act), short enough that a group restarted all
/// at once (nothing to fail over to) comes back within a minute or two.
pub fn down_wait_s(spec: &RedisSentinelGroupSpec) -> u64 {
    (spec.sentinels.down_after.as_millis().saturating_mul(3) / 1000 + 10).clamp(45, 120)
}

/// How long a data instance may take to answer its health check: the start
/// script may wait for the sentinels' verdict, then up to a minute for any
/// sentinel or master, before redis-server starts and loads its data. A
/// shorter period would have Swarm kill an instance that waits on purpose
/// (a group restarted all at once never came back that way).
pub fn instance_start_period_s(spec: &RedisSentinelGroupSpec) -> i64 {
    i64::try_from(down_wait_s(spec)).unwrap_or(120) + 90
}

/// Renders the whole group.
pub fn render(inputs: &Inputs<'_>) -> Vec<DesiredService> {
    let rsg = inputs.rsg;
    let name = rsg.metadata.name.as_str();
    let spec = &rsg.spec;
    let mut services = Vec::new();
    for i in 0..usize::from(spec.instances) {
        let service_name = instance_name(name, i);
        services.push(service(
            inputs,
            Role {
                slot: instance_slot(name, i),
                script: "/etc/haswarm/redis-start.sh",
                conf: (purpose::REDIS_CONF, "/etc/haswarm/redis.conf"),
                env: vec![
                    format!("HASWARM_INDEX={i}"),
                    format!("HASWARM_DOWN_WAIT_S={}", down_wait_s(spec)),
                ],
                volume: format!("{service_name}-data"),
                health_port: REDIS_PORT,
                resources: &spec.resources,
                restart_delay_ms: instance_restart_delay_ms(spec),
                start_period_s: instance_start_period_s(spec),
                service: service_name,
            },
        ));
    }
    for j in 0..usize::from(spec.sentinels.count) {
        let service_name = sentinel_name(name, j);
        services.push(service(
            inputs,
            Role {
                slot: sentinel_slot(name, j),
                script: "/etc/haswarm/sentinel-start.sh",
                conf: (purpose::SENTINEL_CONF, "/etc/haswarm/sentinel.conf"),
                env: vec![
                    format!("HASWARM_QUORUM={}", spec.quorum()),
                    format!(
                        "HASWARM_DOWN_AFTER_MS={}",
                        spec.sentinels.down_after.as_millis()
                    ),
                    format!(
                        "HASWARM_FAILOVER_TIMEOUT_MS={}",
                        spec.sentinels.failover_timeout.as_millis()
                    ),
                    format!("HASWARM_PARALLEL_SYNCS={}", spec.sentinels.parallel_syncs),
                ],
                volume: format!("{service_name}-data"),
                health_port: SENTINEL_PORT,
                resources: &spec.sentinels.resources,
                restart_delay_ms: 2_000,
                start_period_s: 10,
                service: service_name,
            },
        ));
    }
    services
}

/// The environment an application needs to use the group through Sentinel,
/// with the variable names Dify and Celery read. Passwords are referenced by
/// secret file, never included. No `REDIS_HOST`: with `REDIS_USE_SENTINEL`
/// the application asks the sentinels for the master, and a fixed host
/// would name the wrong one after the first failover.
pub fn app_env(rsg: &RedisSentinelGroup, password_secret: &str) -> Vec<(String, String)> {
    let name = rsg.metadata.name.as_str();
    let group = rsg.spec.master_group(&rsg.metadata);
    let sentinels: Vec<String> = (0..usize::from(rsg.spec.sentinels.count))
        .map(|j| format!("{}:{SENTINEL_PORT}", sentinel_name(name, j)))
        .collect();
    let file = format!("/run/secrets/{password_secret}");
    vec![
        ("REDIS_PORT".into(), REDIS_PORT.to_string()),
        ("REDIS_USE_SENTINEL".into(), "true".into()),
        ("REDIS_SENTINELS".into(), sentinels.join(",")),
        ("REDIS_SENTINEL_SERVICE_NAME".into(), group.clone()),
        ("REDIS_PASSWORD_FILE".into(), file.clone()),
        ("REDIS_SENTINEL_PASSWORD_FILE".into(), file.clone()),
        (
            "CELERY_BROKER_URL".into(),
            format!("sentinel://{}/1", sentinels.join(",")),
        ),
        ("CELERY_USE_SENTINEL".into(), "true".into()),
        ("CELERY_SENTINEL_MASTER_NAME".into(), group),
        ("CELERY_SENTINEL_PASSWORD_FILE".into(), file),
    ]
}

#[cfg(test)]
mod tests;
