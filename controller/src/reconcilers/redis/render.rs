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

/// `<name>-net`: the network applications join.
pub fn network_name(name: &str) -> String {
    format!("{name}-net")
}

/// The slot label pinning data instance `i`.
pub fn instance_slot(name: &str, i: usize) -> String {
    slot_label("RedisSentinelGroup", &format!("{name}.redis"), i)
}

/// The slot label pinning sentinel `j`.
pub fn sentinel_slot(name: &str, j: usize) -> String {
    slot_label("RedisSentinelGroup", &format!("{name}.sentinel"), j)
}

/// Everything the group needs on the Swarm.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    /// The overlay network.
    pub network: String,
    /// Whether the network is encrypted.
    pub encrypted: bool,
    /// Configs (and the generated password secret, when there is one).
    pub contents: Vec<DesiredContent>,
    /// Data instances, then sentinels.
    pub services: Vec<DesiredService>,
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

/// Seconds between health checks. Engines before API 1.44 have no faster
/// start interval, so a restarted member counts as serving only at its first
/// check and every rolling step waits for it; but three missed checks get
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
pub fn render(inputs: &Inputs<'_>) -> Rendered {
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
    Rendered {
        network: network_name(name),
        encrypted: spec.network.encrypted,
        contents: contents(spec, inputs.generated_password),
        services,
    }
}

/// The environment an application needs to use the group through Sentinel,
/// with the variable names Dify and Celery read. Passwords are referenced by
/// secret file, never included.
pub fn app_env(rsg: &RedisSentinelGroup, password_secret: &str) -> Vec<(String, String)> {
    let name = rsg.metadata.name.as_str();
    let group = rsg.spec.master_group(&rsg.metadata);
    let sentinels: Vec<String> = (0..usize::from(rsg.spec.sentinels.count))
        .map(|j| format!("{}:{SENTINEL_PORT}", sentinel_name(name, j)))
        .collect();
    let file = format!("/run/secrets/{password_secret}");
    vec![
        ("REDIS_HOST".into(), instance_name(name, 0)),
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
mod tests {
    use haswarm_crds::manifest::{parse, Limits};
    use haswarm_crds::AnyResource;

    use super::*;

    fn rsg(spec: &str) -> RedisSentinelGroup {
        let text = format!("apiVersion: haswarm.io/v1alpha1\nkind: RedisSentinelGroup\nmetadata:\n  name: cache\nspec:\n{spec}");
        match parse("t.yaml", &text, &Limits::default())
            .expect("valid")
            .into_iter()
            .next()
            .map(|d| d.resource)
        {
            Some(AnyResource::RedisSentinelGroup(r)) => *r,
            other => panic!("not a RedisSentinelGroup: {other:?}"),
        }
    }

    const PW: &[u8] = b"Zq8vV0pLrT7xN2cW5mKd9sHj3bYf6gAe";

    fn rendered(spec: &str) -> Rendered {
        let r = rsg(spec);
        let contents = contents(&r.spec, Some(PW));
        let names = content_names("cache", &contents);
        let secret = names.get(purpose::PASSWORD).cloned().expect("secret name");
        render(&Inputs {
            rsg: &r,
            password_secret: &secret,
            generated_password: Some(PW),
            extra_password_secret: None,
            config_names: &names,
            incarnations: &Default::default(),
        })
    }

    fn container(s: &DesiredService) -> bollard::models::TaskSpecContainerSpec {
        s.spec
            .task_template
            .as_ref()
            .and_then(|t| t.container_spec.clone())
            .expect("container")
    }

    #[test]
    fn a_group_is_instances_sentinels_a_network_and_configs() {
        let r = rendered("  masterGroupName: dify-master-group\n");
        let names: Vec<&str> = r.services.iter().map(DesiredService::name).collect();
        assert_eq!(
            names,
            [
                "cache-redis-0",
                "cache-redis-1",
                "cache-redis-2",
                "cache-sentinel-0",
                "cache-sentinel-1",
                "cache-sentinel-2"
            ]
        );
        assert_eq!(r.network, "cache-net");
        let purposes: Vec<&str> = r.contents.iter().map(|c| c.purpose.as_str()).collect();
        assert_eq!(
            purposes,
            [
                "redis-conf",
                "sentinel-conf",
                "redis-start",
                "sentinel-start",
                "password"
            ]
        );
        for s in &r.services {
            let spec = &s.spec;
            assert_eq!(
                spec.endpoint_spec.as_ref().and_then(|e| e.mode),
                Some(bollard::models::EndpointSpecModeEnum::DNSRR),
                "dnsrr by default"
            );
            let t = spec.task_template.as_ref().expect("template");
            assert_eq!(
                t.networks.as_ref().and_then(|n| n[0].target.as_deref()),
                Some("cache-net")
            );
            let env = container(s).env.unwrap_or_default();
            assert!(
                env.contains(&"HASWARM_GROUP=dify-master-group".to_owned()),
                "{env:?}"
            );
            let constraints = t
                .placement
                .as_ref()
                .and_then(|p| p.constraints.clone())
                .unwrap_or_default();
            assert!(
                constraints
                    .iter()
                    .any(|c| c.starts_with("node.labels.io.haswarm.redissentinelgroup.cache.")),
                "pinned by a slot label: {constraints:?}"
            );
        }
    }

    #[test]
    fn the_password_is_one_secret_file_and_nowhere_else() {
        let r = rendered("  sentinels:\n    count: 5\n");
        let pw = String::from_utf8_lossy(PW).into_owned();
        let secret = r
            .contents
            .iter()
            .find(|c| c.kind == ContentKind::Secret)
            .expect("generated secret");
        assert_eq!(secret.data, PW);
        let secret_name = format!("cache-password-{}", crate::swarm::labels::short_hash(PW));
        for s in &r.services {
            let text = serde_json::to_string(&s.spec).expect("json");
            assert!(!text.contains(&pw), "{} carries the password", s.name());
            let c = container(s);
            let secrets = c.secrets.unwrap_or_default();
            assert_eq!(secrets.len(), 1);
            assert_eq!(
                secrets[0].secret_name.as_deref(),
                Some(secret_name.as_str())
            );
            assert_eq!(
                secrets[0].file.as_ref().and_then(|f| f.name.as_deref()),
                Some("redis-password")
            );
            assert_eq!(secrets[0].file.as_ref().and_then(|f| f.mode), Some(0o400));
        }
        for c in r.contents.iter().filter(|c| c.kind == ContentKind::Config) {
            assert!(
                !String::from_utf8_lossy(&c.data).contains(&pw),
                "{} carries the password",
                c.purpose
            );
        }
        // Every place that needs the password gets it from the file.
        for needle in ["user default on $accept", "masterauth"] {
            assert!(REDIS_START.contains(needle), "{needle}");
        }
        for needle in [
            "user default on $accept",
            "sentinel auth-pass",
            "sentinel sentinel-pass",
        ] {
            assert!(SENTINEL_START.contains(needle), "{needle}");
        }
        assert!(REDIS_START.contains(PASSWORD_FILE) && SENTINEL_START.contains(PASSWORD_FILE));
    }

    #[test]
    fn a_rotation_mounts_the_other_accepted_password_too() {
        let r = rsg("  instances: 2\n");
        let names = content_names("cache", &contents(&r.spec, Some(PW)));
        let rendered = render(&Inputs {
            rsg: &r,
            password_secret: "cache-password-aaaa",
            generated_password: Some(PW),
            extra_password_secret: Some("cache-password-extra-bbbb"),
            config_names: &names,
            incarnations: &Default::default(),
        });
        for s in &rendered.services {
            let files: Vec<(Option<&str>, Option<&str>)> = s
                .spec
                .task_template
                .as_ref()
                .and_then(|t| t.container_spec.as_ref())
                .and_then(|c| c.secrets.as_ref())
                .map(|v| {
                    v.iter()
                        .map(|x| {
                            (
                                x.secret_name.as_deref(),
                                x.file.as_ref().and_then(|f| f.name.as_deref()),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(
                files,
                [
                    (Some("cache-password-aaaa"), Some("redis-password")),
                    (
                        Some("cache-password-extra-bbbb"),
                        Some("redis-password-extra")
                    )
                ]
            );
        }
        assert!(REDIS_START.contains("/run/secrets/redis-password-extra"));
        assert!(SENTINEL_START.contains("/run/secrets/redis-password-extra"));
    }

    #[test]
    fn instances_are_told_from_sentinels_by_their_name() {
        assert!(is_instance("cache", &instance_name("cache", 0)));
        assert!(is_instance("cache", "cache-redis-12"));
        for other in [
            sentinel_name("cache", 0),
            "cache-redis-".into(),
            "cache-redis-1-i1".into(),
            "cache-redis-x".into(),
            instance_name("cache2", 0),
        ] {
            assert!(!is_instance("cache", &other), "{other}");
        }
    }

    #[test]
    fn announced_names_carry_the_incarnation_and_read_back() {
        assert_eq!(announced_name("cache-redis-1", 0), "cache-redis-1");
        assert_eq!(announced_name("cache-redis-1", 2), "cache-redis-1-i2");
        for (host, member) in [
            ("cache-redis-1", ("cache-redis-1", 0)),
            ("cache-redis-1-i2", ("cache-redis-1", 2)),
            ("cache-sentinel-0-i13", ("cache-sentinel-0", 13)),
            // Not ours: read as they are.
            ("cache-redis-1-i", ("cache-redis-1-i", 0)),
            ("cache-redis-1-i02", ("cache-redis-1-i02", 0)),
            ("cache-redis-1-ix", ("cache-redis-1-ix", 0)),
            ("10.0.1.7", ("10.0.1.7", 0)),
        ] {
            assert_eq!(member_of_announced(host), member, "{host}");
        }
        for n in [0, 1, 9, 4_000_000] {
            assert_eq!(
                member_of_announced(&announced_name("g-sentinel-3", n)),
                ("g-sentinel-3", n)
            );
        }
    }

    #[test]
    fn a_moved_member_announces_an_alias_of_its_incarnation_and_others_are_unchanged() {
        let r = rsg("  instances: 3\n");
        let names = content_names("cache", &contents(&r.spec, Some(PW)));
        let incarnations = std::collections::BTreeMap::from([
            (instance_slot("cache", 1), 2),
            (sentinel_slot("cache", 2), 1),
        ]);
        let inputs = |incarnations| Inputs {
            rsg: &r,
            password_secret: "cache-password-aaaa",
            generated_password: Some(PW),
            extra_password_secret: None,
            config_names: &names,
            incarnations,
        };
        let moved = render(&inputs(&incarnations));
        let never = render(&inputs(&Default::default()));
        let aliases = |s: &DesiredService| {
            s.spec
                .task_template
                .as_ref()
                .and_then(|t| t.networks.as_ref())
                .and_then(|n| n.first())
                .and_then(|n| n.aliases.clone())
                .unwrap_or_default()
        };
        let announce = |s: &DesiredService| {
            container(s)
                .env
                .unwrap_or_default()
                .into_iter()
                .find_map(|e| {
                    e.strip_prefix(&format!("{ANNOUNCE_ENV}="))
                        .map(str::to_owned)
                })
        };
        for (a, b) in moved.services.iter().zip(&never.services) {
            let name = a.spec.name.as_deref().unwrap_or_default();
            let wanted = match name {
                "cache-redis-1" => Some("cache-redis-1-i2"),
                "cache-sentinel-2" => Some("cache-sentinel-2-i1"),
                _ => None,
            };
            assert_eq!(announce(a).as_deref(), wanted, "{name}");
            assert_eq!(
                aliases(a),
                wanted.map(str::to_owned).into_iter().collect::<Vec<_>>()
            );
            // A member that never moved keeps its spec: upgrading haswarm
            // restarts nothing.
            if wanted.is_none() {
                assert_eq!(a, b, "{name}");
            }
            assert_eq!((announce(b), aliases(b)), (None, Vec::new()));
        }
        assert!(REDIS_START.contains("replica-announce-ip $me"));
        assert!(SENTINEL_START.contains("sentinel announce-ip $HASWARM_ANNOUNCE"));
        assert!(REDIS_START.contains(ANNOUNCE_ENV) && SENTINEL_START.contains(ANNOUNCE_ENV));
    }

    #[test]
    fn persistence_and_settings_reach_redis_conf() {
        let c = redis_conf(
            &rsg("  maxMemory: 512Mi\n  config:\n    maxmemory-policy: allkeys-lru\n").spec,
        );
        for line in [
            "appendonly yes",
            "appendfsync everysec",
            "save \"\"",
            "maxmemory 536870912",
            "maxmemory-policy allkeys-lru",
            "dir /data",
        ] {
            assert!(c.lines().any(|l| l == line), "{line} missing in:\n{c}");
        }
        let c = redis_conf(
            &rsg("  persistence:\n    mode: Rdb\n    rdbSave: [{seconds: 60, changes: 1000}]\n")
                .spec,
        );
        assert!(
            c.contains("appendonly no") && c.contains("save 60 1000"),
            "{c}"
        );
    }

    #[test]
    fn a_master_without_replicas_in_sync_refuses_writes_by_default_from_three_instances() {
        let lines = |spec: &str| -> Vec<String> {
            redis_conf(&rsg(spec).spec)
                .lines()
                .filter(|l| l.starts_with("min-replicas"))
                .map(str::to_owned)
                .collect()
        };
        // Default downAfter 5 s: an acknowledgement 4 s old still counts.
        assert_eq!(
            lines("  instances: 3\n"),
            ["min-replicas-to-write 1", "min-replicas-max-lag 4"]
        );
        assert_eq!(
            lines("  sentinels:\n    downAfter: 3s\n"),
            ["min-replicas-to-write 1", "min-replicas-max-lag 2"]
        );
        // The floor: replicas acknowledge once a second.
        assert_eq!(
            lines("  sentinels:\n    downAfter: 1500ms\n    failoverTimeout: 10s\n"),
            ["min-replicas-to-write 1", "min-replicas-max-lag 1"]
        );
        // Two instances: the only replica's restart would stop every write.
        assert!(lines("  instances: 2\n").is_empty());
        assert!(lines("  minReplicasToWrite: 0\n").is_empty());
        assert_eq!(
            lines("  instances: 5\n  minReplicasToWrite: 2\n")[0],
            "min-replicas-to-write 2"
        );
    }

    #[test]
    fn sentinel_settings_reach_the_sentinels() {
        let r = rendered("  sentinels:\n    count: 5\n    quorum: 3\n    downAfter: 2s\n    failoverTimeout: 10s\n");
        let s = r
            .services
            .iter()
            .find(|s| s.name() == "cache-sentinel-4")
            .expect("fifth sentinel");
        let env = container(s).env.unwrap_or_default();
        for e in [
            "HASWARM_QUORUM=3",
            "HASWARM_DOWN_AFTER_MS=2000",
            "HASWARM_FAILOVER_TIMEOUT_MS=10000",
        ] {
            assert!(env.contains(&e.to_owned()), "{e} missing: {env:?}");
        }
        assert!(sentinel_conf().contains("sentinel resolve-hostnames yes"));
        assert!(sentinel_conf().contains("sentinel announce-hostnames yes"));
    }

    #[test]
    fn a_crashed_instance_restarts_after_its_failover() {
        assert_eq!(
            instance_restart_delay_ms(&rsg("  sentinels:\n    downAfter: 2s\n").spec),
            7_000
        );
        assert_eq!(
            instance_restart_delay_ms(
                &rsg("  sentinels:\n    downAfter: 5m\n    failoverTimeout: 10m\n").spec
            ),
            60_000
        );
        let r = rendered("  sentinels:\n    downAfter: 2s\n");
        let delay = |n: &str| {
            r.services.iter().find(|s| s.name() == n).and_then(|s| {
                s.spec
                    .task_template
                    .as_ref()?
                    .restart_policy
                    .as_ref()?
                    .delay
            })
        };
        assert_eq!(delay("cache-redis-0"), Some(7_000_000_000));
        assert_eq!(delay("cache-sentinel-0"), Some(2_000_000_000));
    }

    #[test]
    fn a_restart_waits_for_the_sentinels_verdict_but_not_forever() {
        assert_eq!(
            down_wait_s(&rsg("  sentinels:\n    downAfter: 2s\n").spec),
            45
        );
        assert_eq!(
            down_wait_s(&rsg("  sentinels:\n    downAfter: 20s\n").spec),
            70
        );
        assert_eq!(
            down_wait_s(&rsg("  sentinels:\n    downAfter: 5m\n").spec),
            120
        );
    }

    #[test]
    fn a_config_change_renames_its_config() {
        let a = content_names("cache", &contents(&rsg("  maxMemory: 1Gi\n").spec, None));
        let b = content_names("cache", &contents(&rsg("  maxMemory: 2Gi\n").spec, None));
        assert_ne!(a.get(purpose::REDIS_CONF), b.get(purpose::REDIS_CONF));
        assert_eq!(a.get(purpose::SENTINEL_CONF), b.get(purpose::SENTINEL_CONF));
        assert!(
            !a.contains_key(purpose::PASSWORD),
            "a user-supplied secret is not rendered"
        );
    }

    #[test]
    fn app_env_names_what_dify_reads_without_the_password() {
        let r = rsg("  masterGroupName: dify-master-group\n");
        let env: HashMap<String, String> =
            app_env(&r, "cache-password-0123abcd").into_iter().collect();
        assert_eq!(env["REDIS_USE_SENTINEL"], "true");
        assert_eq!(
            env["REDIS_SENTINELS"],
            "cache-sentinel-0:26379,cache-sentinel-1:26379,cache-sentinel-2:26379"
        );
        assert_eq!(env["REDIS_SENTINEL_SERVICE_NAME"], "dify-master-group");
        assert_eq!(env["CELERY_SENTINEL_MASTER_NAME"], "dify-master-group");
        assert_eq!(
            env["CELERY_BROKER_URL"],
            "sentinel://cache-sentinel-0:26379,cache-sentinel-1:26379,cache-sentinel-2:26379/1"
        );
        assert_eq!(
            env["REDIS_PASSWORD_FILE"],
            "/run/secrets/cache-password-0123abcd"
        );
        assert!(!env.contains_key("REDIS_PASSWORD"));
    }
}
