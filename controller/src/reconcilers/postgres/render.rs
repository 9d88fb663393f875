//! PostgresCluster, pure part: the cluster's desired Swarm objects.
//!
//! - `<name>-pg-<i>`: one service per PostgreSQL instance, run by Patroni,
//!   pinned to its node by a slot label, data in its own volume mounted at
//!   `/var/lib/postgresql` (a path the image has and `postgres` owns, so a
//!   new volume takes that ownership).
//! - `<name>-etcd-<j>`: the managed etcd members Patroni keeps its leader key
//!   in, pinned and on their own volumes (none with external endpoints).
//! - `<name>-rw` and `<name>-ro`: HAProxy routers that health-check every
//!   member's Patroni REST API (`/primary`, `/replica`) and forward to the
//!   primary, or to the replicas, on port 5432.
//! - Patroni's settings are one Swarm config; the per-member name and
//!   addresses are `PATRONI_*` variables; the superuser, replication and
//!   REST API passwords are Swarm secrets the start script writes into the
//!   runtime config (mode 0600) in the data volume. The application's and
//!   the further users' passwords are not the instances' business: a job
//!   sets them (see `logins`), and their secrets are for applications.

use std::collections::{BTreeMap, HashMap};

use haswarm_crds::common::{Placement, Spread};
use haswarm_crds::postgres::{BootstrapUser, EtcdMembership, SynchronousMode, ROLE_ATTRIBUTES};
use haswarm_crds::{PostgresCluster, PostgresClusterSpec};

use crate::reconcilers::common::{
    self, config_ref, data_mount, health, secret_ref, slot_label, DesiredContent, ServiceParts,
};
use crate::swarm::objects::ContentKind;
use crate::swarm::DesiredService;

/// PostgreSQL's port, on the instances and on the routers.
pub const PG_PORT: u16 = 5432;
/// Patroni's REST API port.
pub const PATRONI_PORT: u16 = 8008;
/// etcd's client port.
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// etcd's peer port.
pub const ETCD_PEER_PORT: u16 = 2380;

/// Purposes of the configs and secrets (part of their names).
pub mod purpose {
    /// Patroni's settings.
    pub const PATRONI_CONF: &str = "patroni-conf";
    /// The instance start script.
    pub const PATRONI_START: &str = "patroni-start";
    /// The post-bootstrap script.
    pub const POST_BOOTSTRAP: &str = "post-bootstrap";
    /// HAProxy's settings for the read-write router.
    pub const ROUTER_RW: &str = "router-rw";
    /// HAProxy's settings for the read-only router.
    pub const ROUTER_RO: &str = "router-ro";
    /// The superuser's password.
    pub const SUPERUSER: &str = "superuser-password";
    /// The replication user's password.
    pub const REPLICATION: &str = "replication-password";
    /// The password of the application user's login `bootstrap.owner`.
    pub const APP: &str = "app-password";
    /// The password of the application user's alternate login `<owner>_alt`.
    pub const APP_ALT: &str = "app-alt-password";
    /// The password of Patroni's REST API for changes (switchover,
    /// restart, configuration): only haswarm uses it.
    pub const API: &str = "api-password";
}

/// Start script of an instance (run by `/bin/sh`).
pub const PATRONI_START: &str = include_str!("patroni-start.sh");

/// Patroni's post-bootstrap script.
pub const POST_BOOTSTRAP: &str = include_str!("post-bootstrap.sh");

/// `<name>-pg-<i>`: the service, host and Patroni member name of instance `i`.
pub fn instance_name(name: &str, i: usize) -> String {
    format!("{name}{INSTANCE_INFIX}{i}")
}

/// What sits between the cluster's name and an instance's index.
const INSTANCE_INFIX: &str = "-pg-";

/// Whether `service` is one of cluster `name`'s instances (see
/// [`instance_name`]).
pub fn is_instance(name: &str, service: &str) -> bool {
    service
        .strip_prefix(name)
        .and_then(|s| s.strip_prefix(INSTANCE_INFIX))
        .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
}

/// Patroni's name for incarnation `incarnation` of the instance whose
/// service is `service`: the service name for the first, then
/// `<service>.<incarnation>` (service names have no dots). A member started
/// anew on another node is a new member to Patroni: the leader key, the
/// synchronous standby and the replication slots of the one it replaces
/// can never be taken for its own.
pub fn patroni_name(service: &str, incarnation: u32) -> String {
    if incarnation == 0 {
        service.to_owned()
    } else {
        format!("{service}.{incarnation}")
    }
}

/// The service and incarnation a Patroni member name stands for (the
/// inverse of [`patroni_name`]).
pub fn member_of(patroni: &str) -> (&str, u32) {
    match patroni.rsplit_once('.') {
        Some((service, n)) => match n.parse() {
            Ok(n) => (service, n),
            Err(_) => (patroni, 0),
        },
        None => (patroni, 0),
    }
}

/// `<name>-etcd-<j>`.
pub fn etcd_name(name: &str, j: usize) -> String {
    format!("{name}-etcd-{j}")
}

/// `<name>-rw`: the read-write endpoint.
pub fn rw_name(name: &str) -> String {
    format!("{name}-rw")
}

/// `<name>-ro`: the read-only endpoint.
pub fn ro_name(name: &str) -> String {
    format!("{name}-ro")
}

/// `<name>-net`: the network applications join.
pub fn network_name(name: &str) -> String {
    format!("{name}-net")
}

/// The slot label pinning instance `i`.
pub fn instance_slot(name: &str, i: usize) -> String {
    slot_label("PostgresCluster", &format!("{name}.pg"), i)
}

/// The slot label pinning etcd member `j`.
pub fn etcd_slot(name: &str, j: usize) -> String {
    slot_label("PostgresCluster", &format!("{name}.etcd"), j)
}

/// Everything the cluster needs on the Swarm.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    /// The overlay network.
    pub network: String,
    /// Whether the network is encrypted.
    pub encrypted: bool,
    /// Configs, and the generated password secrets.
    pub contents: Vec<DesiredContent>,
    /// Instances, etcd members, routers.
    pub services: Vec<DesiredService>,
}

/// The Swarm secret each password the instances need is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordSecrets {
    /// The `postgres` superuser's.
    pub superuser: String,
    /// The `replicator` role's.
    pub replication: String,
    /// Patroni's REST API's, for its unsafe endpoints.
    pub api: String,
}

/// The purpose (stored credential, secret name part) of a bootstrap user's
/// generated password.
pub fn user_purpose(user: &str) -> String {
    format!("user-{user}-password")
}

/// A bootstrap user's role attributes, every one of them (the options
/// given, the defaults for the rest), so that `ALTER ROLE ... WITH` them
/// also takes back one that left the options. Validated keywords: no
/// quoting needed.
pub fn user_attributes(user: &BootstrapUser) -> Vec<String> {
    ROLE_ATTRIBUTES
        .iter()
        .map(|(on, _, default)| {
            let given = |a: &str| user.options.iter().any(|o| o.eq_ignore_ascii_case(a));
            let off = format!("NO{on}");
            let has = if given(on) {
                true
            } else if given(&off) {
                false
            } else {
                *default
            };
            if has {
                (*on).to_owned()
            } else {
                off
            }
        })
        .collect()
}

/// What rendering needs besides the spec.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The cluster.
    pub pgc: &'a PostgresCluster,
    /// Generated passwords by purpose (rendered into secrets); a password
    /// the user supplies a secret for is not among them.
    pub generated: &'a HashMap<String, Vec<u8>>,
    /// Names of the password secrets, generated or the user's.
    pub secrets: &'a PasswordSecrets,
    /// Names of the configs, by purpose, as the apply step will create them.
    pub config_names: &'a HashMap<String, String>,
    /// The managed etcd cluster's members and how each joined.
    pub etcd: &'a EtcdMembership,
    /// Slot label -> incarnation of the member pinned there.
    pub incarnations: &'a BTreeMap<String, u32>,
}

/// Where Patroni finds etcd: `(hosts, protocol)`. The managed members are
/// `spec.etcd.members` voters (a learner, which answers no client, is left
/// out until it votes).
pub fn etcd_hosts(name: &str, spec: &PostgresClusterSpec) -> (Vec<String>, &'static str) {
    if spec.etcd.endpoints.is_empty() {
        let hosts = (0..usize::from(spec.etcd.members))
            .map(|j| format!("{}:{ETCD_CLIENT_PORT}", etcd_name(name, j)))
            .collect();
        return (hosts, "http");
    }
    let https = spec
        .etcd
        .endpoints
        .iter()
        .any(|e| e.starts_with("https://"));
    let hosts = spec
        .etcd
        .endpoints
        .iter()
        .map(|e| {
            e.split_once("://")
                .map_or(e.as_str(), |(_, rest)| rest)
                .trim_end_matches('/')
                .to_owned()
        })
        .collect();
    (hosts, if https { "https" } else { "http" })
}

/// A YAML double-quoted scalar (JSON's string syntax is valid YAML).
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Patroni's configuration shared by every instance: everything but the
/// member's name and addresses (environment) and the passwords (added by the
/// start script, which is why the `postgresql` section comes last).
pub fn patroni_conf(pgc: &PostgresCluster) -> String {
    let name = pgc.metadata.name.as_str();
    let spec = &pgc.spec;
    let (hosts, protocol) = etcd_hosts(name, spec);
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
        format!("  dcs: {}", bootstrap_dynamic_config()),
    ]);
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

/// Parameters replication needs, whatever the spec says.
const REPLICATION_PARAMETERS: [(&str, &str); 5] = [
    ("wal_level", "replica"),
    ("hot_standby", "on"),
    ("wal_log_hints", "on"),
    ("max_wal_senders", "10"),
    ("max_replication_slots", "10"),
];

/// The dynamic configuration a new cluster starts with: the same for every
/// spec, so the instances' config does not change with the spec.
pub fn bootstrap_dynamic_config() -> serde_json::Value {
    let parameters: serde_json::Map<String, serde_json::Value> = REPLICATION_PARAMETERS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String((*v).to_owned())))
        .collect();
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

/// HAProxy's configuration for one router: every instance is a server,
/// health-checked on Patroni's REST API (`/primary` for the read-write
/// router, `/replica` for the read-only one), and re-resolved through
/// Swarm's DNS so a task that comes back with a new address is found.
pub fn haproxy_conf(pgc: &PostgresCluster, read_write: bool) -> String {
    let name = pgc.metadata.name.as_str();
    let (check, balance) = if read_write {
        ("/primary", "first")
    } else {
        ("/replica", "roundrobin")
    };
    let mut c = vec![
        "global".to_owned(),
        "  maxconn 2000".to_owned(),
        "defaults".to_owned(),
        "  mode tcp".to_owned(),
        "  timeout connect 4s".to_owned(),
        "  timeout client 30m".to_owned(),
        "  timeout server 30m".to_owned(),
        "  timeout check 2s".to_owned(),
        "resolvers swarm".to_owned(),
        "  nameserver dns 127.0.0.11:53".to_owned(),
        "  resolve_retries 3".to_owned(),
        "  timeout resolve 1s".to_owned(),
        "  timeout retry 1s".to_owned(),
        "  hold valid 2s".to_owned(),
        "  hold obsolete 2s".to_owned(),
        "  hold nx 2s".to_owned(),
        "  hold refused 2s".to_owned(),
        "  hold timeout 2s".to_owned(),
        "  hold other 2s".to_owned(),
        "frontend postgres".to_owned(),
        format!("  bind :{PG_PORT}"),
        "  default_backend members".to_owned(),
        "backend members".to_owned(),
        format!("  balance {balance}"),
        format!("  option httpchk GET {check}"),
        "  http-check expect status 200".to_owned(),
        // A primary that lost its role must lose its connections at once:
        // clients reconnect through the router to the new one.
        format!(
            "  default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions check port {PATRONI_PORT} resolvers swarm init-addr last,libc,none"
        ),
    ];
    c.extend((0..usize::from(pgc.spec.instances)).map(|i| {
        let member = instance_name(name, i);
        format!("  server {member} {member}:{PG_PORT}")
    }));
    c.push(String::new());
    c.join("\n")
}

/// The configs every cluster has, and the generated password secrets.
pub fn contents(
    pgc: &PostgresCluster,
    generated: &HashMap<String, Vec<u8>>,
) -> Vec<DesiredContent> {
    let config = |purpose: &str, data: String| DesiredContent {
        kind: ContentKind::Config,
        purpose: purpose.to_owned(),
        data: data.into_bytes(),
    };
    let mut out = vec![
        config(purpose::PATRONI_CONF, patroni_conf(pgc)),
        config(purpose::PATRONI_START, PATRONI_START.to_owned()),
        config(purpose::POST_BOOTSTRAP, POST_BOOTSTRAP.to_owned()),
    ];
    if pgc.spec.router.replicas > 0 {
        out.push(config(purpose::ROUTER_RW, haproxy_conf(pgc, true)));
        out.push(config(purpose::ROUTER_RO, haproxy_conf(pgc, false)));
    }
    let mut secrets: Vec<_> = generated.iter().collect();
    secrets.sort();
    out.extend(secrets.into_iter().map(|(purpose, data)| DesiredContent {
        kind: ContentKind::Secret,
        purpose: purpose.clone(),
        data: data.clone(),
    }));
    out
}

fn name_of<'a>(names: &'a HashMap<String, String>, purpose: &str) -> &'a str {
    names.get(purpose).map_or("", String::as_str)
}

/// How long an instance may take before its health check counts: initdb, or
/// a clone of the leader's data, happens first.
const INSTANCE_START_PERIOD_S: i64 = 300;

fn instance(inputs: &Inputs<'_>, i: usize) -> DesiredService {
    let pgc = inputs.pgc;
    let name = pgc.metadata.name.as_str();
    let spec = &pgc.spec;
    let member = instance_name(name, i);
    let slot = instance_slot(name, i);
    let pin = common::Pin::of(&slot, inputs.incarnations);
    let patroni = patroni_name(&member, pin.incarnation);
    let net = network_name(name);
    let liveness = format!(
        "python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{PATRONI_PORT}/liveness', timeout=2)\""
    );
    common::service(ServiceParts {
        name: member.clone(),
        role: "postgres",
        image: &spec.postgres.image,
        command: vec!["/bin/sh".into(), "/etc/haswarm/patroni-start.sh".into()],
        env: vec![
            format!("PATRONI_NAME={patroni}"),
            format!("PATRONI_RESTAPI_CONNECT_ADDRESS={member}:{PATRONI_PORT}"),
            format!("PATRONI_POSTGRESQL_CONNECT_ADDRESS={member}:{PG_PORT}"),
            format!("HASWARM_OWNER={}", spec.bootstrap.owner),
            format!("HASWARM_DATABASE={}", spec.bootstrap.database),
        ],
        mounts: vec![data_mount(
            &spec.storage,
            &format!("{member}-data"),
            "/var/lib/postgresql",
        )],
        secrets: vec![
            secret_ref(&inputs.secrets.superuser, "pg-superuser-password", 0o400),
            secret_ref(
                &inputs.secrets.replication,
                "pg-replication-password",
                0o400,
            ),
            secret_ref(&inputs.secrets.api, "pg-api-password", 0o400),
        ],
        configs: vec![
            config_ref(
                name_of(inputs.config_names, purpose::PATRONI_CONF),
                "/etc/haswarm/patroni.yml",
                0o444,
            ),
            config_ref(
                name_of(inputs.config_names, purpose::PATRONI_START),
                "/etc/haswarm/patroni-start.sh",
                0o555,
            ),
            config_ref(
                name_of(inputs.config_names, purpose::POST_BOOTSTRAP),
                "/etc/haswarm/post-bootstrap.sh",
                0o555,
            ),
        ],
        health: Some(health(&liveness, 5, 3, INSTANCE_START_PERIOD_S)),
        resources: &spec.resources,
        placement: &spec.placement,
        slot: Some(pin),
        replicas: 1,
        restart_delay_ms: 5_000,
        network: &net,
        aliases: Vec::new(),
        endpoint_mode: spec.network.endpoint_mode,
    })
}

fn etcd_member(inputs: &Inputs<'_>, j: usize) -> DesiredService {
    let pgc = inputs.pgc;
    let name = pgc.metadata.name.as_str();
    let spec = &pgc.spec;
    let member = etcd_name(name, j);
    let slot = etcd_slot(name, j);
    let pin = common::Pin::of(&slot, inputs.incarnations);
    let index = u8::try_from(j).unwrap_or(u8::MAX);
    // A slot that moved holds a new member: it starts only once it joined
    // the cluster in the old one's place (see `etcd`).
    let replicas = u64::from(inputs.etcd.incarnation(index) >= pin.incarnation);
    let net = network_name(name);
    // A member of the first cluster starts a new one listing its peers; a
    // member added later joins the members before it, in a data directory
    // of its own join (etcd reads these flags only with an empty one).
    let join = inputs.etcd.joined.get(&index).copied();
    let (listed, state, data_dir) = match join {
        None => (
            usize::from(inputs.etcd.initial),
            "new",
            "/var/lib/etcd/data".to_owned(),
        ),
        Some(k) => (
            inputs
                .etcd
                .listed
                .get(&index)
                .map_or(j + 1, |n| usize::from(*n)),
            "existing",
            format!("/var/lib/etcd/join-{k}"),
        ),
    };
    let cluster: Vec<String> = (0..listed)
        .map(|k| {
            let m = etcd_name(name, k);
            format!("{m}=http://{m}:{ETCD_PEER_PORT}")
        })
        .collect();
    // The token keeps members of a deleted and re-created cluster of the same
    // name (or another cluster's) from joining this one.
    let token = format!("{name}-{}", pgc.metadata.uid.as_deref().unwrap_or("new"));
    let command = [
        "etcd",
        "--name",
        &member,
        "--data-dir",
        &data_dir,
        "--listen-client-urls",
        &format!("http://0.0.0.0:{ETCD_CLIENT_PORT}"),
        "--advertise-client-urls",
        &format!("http://{member}:{ETCD_CLIENT_PORT}"),
        "--listen-peer-urls",
        &format!("http://0.0.0.0:{ETCD_PEER_PORT}"),
        "--initial-advertise-peer-urls",
        &format!("http://{member}:{ETCD_PEER_PORT}"),
        "--initial-cluster",
        &cluster.join(","),
        "--initial-cluster-token",
        &token,
        "--initial-cluster-state",
        state,
    ]
    .map(str::to_owned)
    .to_vec();
    common::service(ServiceParts {
        name: member.clone(),
        role: "etcd",
        image: &spec.etcd.image,
        command,
        env: Vec::new(),
        mounts: vec![data_mount(
            &spec.etcd.storage,
            &format!("{member}-data"),
            "/var/lib/etcd",
        )],
        // Only the REST API's password: the controller relays its Patroni
        // calls through a member on its node when no instance runs there.
        secrets: vec![secret_ref(&inputs.secrets.api, "pg-api-password", 0o400)],
        configs: Vec::new(),
        // No health check: Swarm's DNS lists a task only once it is
        // healthy, and etcd answers on its client port only once it has a
        // quorum, which it needs its peers' names for: any check would keep
        // every member out of DNS for ever. Swarm restarts a member whose
        // process exits; Patroni reports a cluster without etcd.
        health: None,
        resources: &spec.etcd.resources,
        placement: &spec.placement,
        slot: Some(pin),
        replicas,
        // etcd exits while its peers' names do not resolve yet (their tasks
        // are starting): come back soon.
        restart_delay_ms: 2_000,
        network: &net,
        aliases: Vec::new(),
        endpoint_mode: spec.network.endpoint_mode,
    })
}

fn router(inputs: &Inputs<'_>, read_write: bool, placement: &Placement) -> DesiredService {
    let pgc = inputs.pgc;
    let name = pgc.metadata.name.as_str();
    let spec = &pgc.spec;
    let net = network_name(name);
    let (service, conf) = if read_write {
        (rw_name(name), purpose::ROUTER_RW)
    } else {
        (ro_name(name), purpose::ROUTER_RO)
    };
    common::service(ServiceParts {
        name: service,
        role: "router",
        image: &spec.router.image,
        command: vec![
            "haproxy".into(),
            "-W".into(),
            "-db".into(),
            "-f".into(),
            "/etc/haswarm/haproxy.cfg".into(),
        ],
        env: Vec::new(),
        mounts: Vec::new(),
        secrets: Vec::new(),
        configs: vec![config_ref(
            name_of(inputs.config_names, conf),
            "/etc/haswarm/haproxy.cfg",
            0o444,
        )],
        // HAProxy's images have no shell or client to probe with; Swarm
        // restarts a router whose process exits.
        health: None,
        resources: &spec.router.resources,
        placement,
        slot: None,
        replicas: u64::from(spec.router.replicas),
        restart_delay_ms: 1_000,
        network: &net,
        aliases: Vec::new(),
        endpoint_mode: spec.network.endpoint_mode,
    })
}

/// Renders the whole cluster.
pub fn render(inputs: &Inputs<'_>) -> Rendered {
    let pgc = inputs.pgc;
    let name = pgc.metadata.name.as_str();
    let spec = &pgc.spec;
    let mut services: Vec<DesiredService> = (0..usize::from(spec.instances))
        .map(|i| instance(inputs, i))
        .collect();
    if spec.etcd.endpoints.is_empty() {
        services.extend((0..usize::from(inputs.etcd.members)).map(|j| etcd_member(inputs, j)));
    }
    if spec.router.replicas > 0 {
        // Routers hold no data: spread them where possible, never leave one
        // pending for want of a node of its own.
        let placement = Placement {
            spread: Spread::Preferred,
            ..spec.placement.clone()
        };
        services.push(router(inputs, true, &placement));
        services.push(router(inputs, false, &placement));
    }
    Rendered {
        network: network_name(name),
        encrypted: spec.network.encrypted,
        contents: contents(pgc, inputs.generated),
        services,
    }
}

/// The environment an application needs to use the cluster through its
/// read-write router, with the variable names Dify-style apps read. The
/// password is referenced by secret file, never included.
pub fn app_env(pgc: &PostgresCluster, user: &str, password_secret: &str) -> Vec<(String, String)> {
    let name = pgc.metadata.name.as_str();
    vec![
        ("DB_HOST".into(), rw_name(name)),
        ("DB_PORT".into(), PG_PORT.to_string()),
        ("DB_DATABASE".into(), pgc.spec.bootstrap.database.clone()),
        ("DB_USERNAME".into(), user.to_owned()),
        (
            "DB_PASSWORD_FILE".into(),
            format!("/run/secrets/{password_secret}"),
        ),
        ("DB_READONLY_HOST".into(), ro_name(name)),
    ]
}

#[cfg(test)]
mod tests;
