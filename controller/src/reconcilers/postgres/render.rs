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
mod tests {
    use std::collections::BTreeMap;

    use haswarm_crds::manifest::{parse, Limits};
    use haswarm_crds::AnyResource;

    use super::*;

    fn pgc(spec: &str) -> PostgresCluster {
        let text = format!("apiVersion: haswarm.io/v1alpha1\nkind: PostgresCluster\nmetadata:\n  name: db\nspec:\n{spec}");
        match parse("t.yaml", &text, &Limits::default())
            .expect("valid")
            .into_iter()
            .next()
            .map(|d| d.resource)
        {
            Some(AnyResource::PostgresCluster(r)) => *r,
            other => panic!("not a PostgresCluster: {other:?}"),
        }
    }

    fn rendered(spec: &str) -> Rendered {
        let c = pgc(spec);
        let generated = HashMap::from([
            (purpose::SUPERUSER.to_owned(), b"su-pw".to_vec()),
            (purpose::REPLICATION.to_owned(), b"repl-pw".to_vec()),
            (purpose::APP.to_owned(), b"app-pw".to_vec()),
            (purpose::API.to_owned(), b"api-pw".to_vec()),
        ]);
        let secrets = PasswordSecrets {
            superuser: "db-superuser-password-1".into(),
            replication: "db-replication-password-2".into(),
            api: "db-api-password-4".into(),
        };
        let names = HashMap::from([
            (
                purpose::PATRONI_CONF.to_owned(),
                "db-patroni-conf-a".to_owned(),
            ),
            (
                purpose::PATRONI_START.to_owned(),
                "db-patroni-start-b".to_owned(),
            ),
            (
                purpose::POST_BOOTSTRAP.to_owned(),
                "db-post-bootstrap-c".to_owned(),
            ),
            (purpose::ROUTER_RW.to_owned(), "db-router-rw-d".to_owned()),
            (purpose::ROUTER_RO.to_owned(), "db-router-ro-e".to_owned()),
        ]);
        render(&Inputs {
            pgc: &c,
            generated: &generated,
            secrets: &secrets,
            config_names: &names,
            etcd: &EtcdMembership::created(c.spec.etcd.members),
            incarnations: &BTreeMap::new(),
        })
    }

    #[test]
    fn instances_are_told_from_other_services_by_their_name() {
        assert!(is_instance("db", &instance_name("db", 2)));
        for other in [
            etcd_name("db", 0),
            rw_name("db"),
            "db-pg-".into(),
            "db-pg-1.1".into(),
            instance_name("db2", 0),
        ] {
            assert!(!is_instance("db", &other), "{other}");
        }
    }

    fn names(r: &Rendered) -> Vec<&str> {
        r.services.iter().map(DesiredService::name).collect()
    }

    fn container(s: &DesiredService) -> bollard::models::TaskSpecContainerSpec {
        s.spec
            .task_template
            .as_ref()
            .and_then(|t| t.container_spec.clone())
            .expect("container spec")
    }

    fn constraints(s: &DesiredService) -> Vec<String> {
        s.spec
            .task_template
            .as_ref()
            .and_then(|t| t.placement.as_ref())
            .and_then(|p| p.constraints.clone())
            .unwrap_or_default()
    }

    #[test]
    fn a_default_cluster_has_three_instances_three_etcd_members_and_two_routers() {
        let r = rendered("  instances: 3\n");
        assert_eq!(
            names(&r),
            [
                "db-pg-0",
                "db-pg-1",
                "db-pg-2",
                "db-etcd-0",
                "db-etcd-1",
                "db-etcd-2",
                "db-rw",
                "db-ro"
            ]
        );
        assert_eq!(r.network, "db-net");
        let replicas = |s: &DesiredService| {
            s.spec
                .mode
                .as_ref()
                .and_then(|m| m.replicated.as_ref())
                .and_then(|r| r.replicas)
        };
        for s in &r.services[..6] {
            assert_eq!(replicas(s), Some(1), "{}", s.name());
        }
        assert_eq!(replicas(&r.services[6]), Some(2));
    }

    #[test]
    fn instances_and_etcd_members_are_pinned_by_their_slot_labels() {
        let r = rendered("  instances: 2\n");
        assert!(constraints(&r.services[1])
            .contains(&"node.labels.io.haswarm.postgrescluster.db.pg.slot-1==true".to_owned()));
        assert!(constraints(&r.services[2])
            .contains(&"node.labels.io.haswarm.postgrescluster.db.etcd.slot-0==true".to_owned()));
        // Routers are stateless: no slot, and never pending for want of a node.
        let router = &r.services[r.services.len() - 1];
        assert!(constraints(router).iter().all(|c| !c.contains("slot")));
        let max = router
            .spec
            .task_template
            .as_ref()
            .and_then(|t| t.placement.as_ref())
            .and_then(|p| p.max_replicas);
        assert_eq!(max, None);
    }

    #[test]
    fn bootstrap_users_get_login_and_their_attributes() {
        let c = pgc("  bootstrap:\n    users:\n    - name: reporting\n      options: [createdb, LOGIN]\n    - name: batch\n      options: [NOLOGIN]\n");
        let users = &c.spec.bootstrap.users;
        assert_eq!(
            user_attributes(&users[0]),
            [
                "LOGIN",
                "NOSUPERUSER",
                "CREATEDB",
                "NOCREATEROLE",
                "INHERIT",
                "NOREPLICATION",
                "NOBYPASSRLS"
            ]
        );
        let batch = user_attributes(&users[1]);
        assert_eq!(batch[0], "NOLOGIN");
        assert_eq!(batch[2], "NOCREATEDB");
        assert_eq!(user_purpose("reporting"), "user-reporting-password");
    }

    #[test]
    fn passwords_are_secrets_never_environment_or_configuration() {
        let r = rendered("  instances: 3\n");
        for s in &r.services {
            let text = serde_json::to_string(&s.spec).expect("json");
            for pw in ["su-pw", "repl-pw", "app-pw", "api-pw"] {
                assert!(!text.contains(pw), "{pw} in {}", s.name());
            }
        }
        for c in r.contents.iter().filter(|c| c.kind == ContentKind::Config) {
            let text = String::from_utf8_lossy(&c.data);
            for pw in ["su-pw", "repl-pw", "app-pw", "api-pw"] {
                assert!(!text.contains(pw), "{pw} in config {}", c.purpose);
            }
        }
        let pg = container(&r.services[0]);
        let files: Vec<String> = pg
            .secrets
            .unwrap_or_default()
            .iter()
            .filter_map(|s| s.file.as_ref().and_then(|f| f.name.clone()))
            .collect();
        assert_eq!(
            files,
            [
                "pg-superuser-password",
                "pg-replication-password",
                "pg-api-password"
            ]
        );
        // etcd members relay the controller's Patroni calls: they hold the
        // REST API's password and no database password.
        for s in r.services.iter().filter(|s| s.name().contains("-etcd-")) {
            let files: Vec<String> = container(s)
                .secrets
                .unwrap_or_default()
                .iter()
                .filter_map(|s| s.file.as_ref().and_then(|f| f.name.clone()))
                .collect();
            assert_eq!(files, ["pg-api-password"], "{}", s.name());
        }
        let secrets: Vec<&str> = r
            .contents
            .iter()
            .filter(|c| c.kind == ContentKind::Secret)
            .map(|c| c.purpose.as_str())
            .collect();
        assert_eq!(
            secrets,
            [
                purpose::API,
                purpose::APP,
                purpose::REPLICATION,
                purpose::SUPERUSER
            ]
        );
    }

    #[test]
    fn each_instance_is_a_patroni_member_named_after_its_service() {
        let r = rendered("  instances: 2\n");
        let env = container(&r.services[1]).env.unwrap_or_default();
        assert!(env.contains(&"PATRONI_NAME=db-pg-1".to_owned()));
        assert!(env.contains(&"PATRONI_RESTAPI_CONNECT_ADDRESS=db-pg-1:8008".to_owned()));
        assert!(env.contains(&"PATRONI_POSTGRESQL_CONNECT_ADDRESS=db-pg-1:5432".to_owned()));
        assert!(env.contains(&"HASWARM_OWNER=app".to_owned()), "{env:?}");
        let mounts = container(&r.services[1]).mounts.unwrap_or_default();
        assert_eq!(mounts[0].source.as_deref(), Some("db-pg-1-data"));
        assert_eq!(mounts[0].target.as_deref(), Some("/var/lib/postgresql"));
    }

    #[test]
    fn patroni_settings_follow_the_spec_and_end_in_the_postgresql_section() {
        let c = pgc("  instances: 3\n  patroni:\n    ttl: 20\n    loopWait: 5\n    retryTimeout: 5\n    synchronousMode: Strict\n  postgres:\n    parameters:\n      max_connections: 200\n      shared_buffers: 256MB\n");
        let conf = patroni_conf(&c);
        for line in [
            "scope: \"db\"",
            "  - \"db-etcd-0:2379\"",
            "  - \"db-etcd-2:2379\"",
            "  bin_dir: /usr/lib/postgresql/15/bin",
            "  post_bootstrap: /etc/haswarm/post-bootstrap.sh",
        ] {
            assert!(
                conf.lines().any(|l| l == line),
                "{line:?} missing in\n{conf}"
            );
        }
        let dcs = dynamic_config(&c);
        assert_eq!(dcs["ttl"], 20);
        assert_eq!(dcs["loop_wait"], 5);
        assert_eq!(dcs["synchronous_mode"], true);
        assert_eq!(dcs["synchronous_mode_strict"], true);
        assert_eq!(dcs["postgresql"]["parameters"]["max_connections"], "200");
        assert_eq!(dcs["postgresql"]["parameters"]["shared_buffers"], "256MB");
        // The instances' config does not change with the spec's settings.
        assert_eq!(conf, patroni_conf(&pgc("  instances: 3\n")));
        // The start script appends `  authentication:` to the last section.
        let last_top = conf.lines().rfind(|l| !l.starts_with(' ') && !l.is_empty());
        assert_eq!(last_top, Some("postgresql:"));
    }

    #[test]
    fn a_config_patch_changes_only_what_differs_and_removes_dropped_parameters() {
        let c = pgc("  instances: 3\n  postgres:\n    parameters:\n      max_connections: 200\n");
        let desired = dynamic_config(&c);
        assert_eq!(config_patch(&desired, &desired), None);
        // Patroni may hold numbers where haswarm wrote text: the same value.
        let mut live = desired.clone();
        live["postgresql"]["parameters"]["max_connections"] = serde_json::json!(200);
        assert_eq!(config_patch(&desired, &live), None);
        live["ttl"] = serde_json::json!(99);
        live["postgresql"]["parameters"]["work_mem"] = serde_json::json!("64MB");
        live["postgresql"]["parameters"]["max_connections"] = serde_json::json!("100");
        let patch = config_patch(&desired, &live).expect("a patch");
        assert_eq!(patch["ttl"], 30);
        assert_eq!(patch["postgresql"]["parameters"]["max_connections"], "200");
        assert!(patch["postgresql"]["parameters"]["work_mem"].is_null());
        assert!(patch.get("loop_wait").is_none());
    }

    #[test]
    fn external_etcd_endpoints_replace_the_managed_members() {
        let r = rendered("  instances: 2\n  etcd:\n    endpoints:\n    - https://etcd-a:2379\n    - https://etcd-b:2379/\n");
        assert!(!names(&r).iter().any(|n| n.contains("etcd")));
        let c = pgc("  instances: 2\n  etcd:\n    endpoints:\n    - https://etcd-a:2379\n    - https://etcd-b:2379/\n");
        let conf = patroni_conf(&c);
        assert!(conf.contains("  protocol: https"), "{conf}");
        assert!(conf.contains("  - \"etcd-b:2379\""), "{conf}");
    }

    #[test]
    fn etcd_members_form_one_cluster_of_their_service_names() {
        let r = rendered("  instances: 1\n");
        let cmd = container(&r.services[1])
            .command
            .unwrap_or_default()
            .join(" ");
        assert!(cmd.contains("--name db-etcd-0"), "{cmd}");
        assert!(cmd.contains("--initial-cluster db-etcd-0=http://db-etcd-0:2380,db-etcd-1=http://db-etcd-1:2380,db-etcd-2=http://db-etcd-2:2380"), "{cmd}");
        assert!(
            cmd.contains("--advertise-client-urls http://db-etcd-0:2379"),
            "{cmd}"
        );
    }

    #[test]
    fn a_member_added_later_joins_the_members_before_it_in_a_directory_of_its_join() {
        let c = pgc("  instances: 1\n  etcd:\n    members: 3\n");
        let etcd = EtcdMembership {
            members: 3,
            initial: 1,
            joined: BTreeMap::from([(1, 1), (2, 4)]),
            learner: Some(2),
            joins: 4,
            ..EtcdMembership::default()
        };
        let (generated, names) = (HashMap::new(), HashMap::new());
        let secrets = PasswordSecrets {
            superuser: "s".into(),
            replication: "r".into(),
            api: "a".into(),
        };
        let r = render(&Inputs {
            pgc: &c,
            generated: &generated,
            secrets: &secrets,
            config_names: &names,
            etcd: &etcd,
            incarnations: &BTreeMap::new(),
        });
        let cmd = |member: &str| {
            r.services
                .iter()
                .find(|s| s.name() == member)
                .map(|s| container(s).command.unwrap_or_default().join(" "))
                .unwrap_or_else(|| panic!("no {member}"))
        };
        let first = cmd("db-etcd-0");
        assert!(
            first.contains("--initial-cluster db-etcd-0=http://db-etcd-0:2380 "),
            "{first}"
        );
        assert!(first.contains("--initial-cluster-state new"), "{first}");
        assert!(first.contains("--data-dir /var/lib/etcd/data "), "{first}");
        let third = cmd("db-etcd-2");
        assert!(third.contains("--initial-cluster db-etcd-0=http://db-etcd-0:2380,db-etcd-1=http://db-etcd-1:2380,db-etcd-2=http://db-etcd-2:2380 "), "{third}");
        assert!(
            third.contains("--initial-cluster-state existing"),
            "{third}"
        );
        assert!(
            third.contains("--data-dir /var/lib/etcd/join-4 "),
            "{third}"
        );
        assert_eq!(etcd.voters(), 2);
    }

    #[test]
    fn patroni_names_carry_the_incarnation_and_read_back() {
        assert_eq!(patroni_name("db-pg-1", 0), "db-pg-1");
        assert_eq!(patroni_name("db-pg-1", 3), "db-pg-1.3");
        assert_eq!(member_of("db-pg-1.3"), ("db-pg-1", 3));
        assert_eq!(member_of("db-pg-1"), ("db-pg-1", 0));
        assert_eq!(member_of("odd.name"), ("odd.name", 0));
    }

    #[test]
    fn a_moved_member_is_a_new_incarnation_and_its_etcd_member_waits_to_be_replaced() {
        let c = pgc("  instances: 3
");
        let (generated, names) = (HashMap::new(), HashMap::new());
        let secrets = PasswordSecrets {
            superuser: "s".into(),
            replication: "r".into(),
            api: "a".into(),
        };
        let incarnations = BTreeMap::from([(instance_slot("db", 1), 2), (etcd_slot("db", 1), 1)]);
        let mut etcd = EtcdMembership::created(3);
        let render_with = |etcd: &EtcdMembership| {
            render(&Inputs {
                pgc: &c,
                generated: &generated,
                secrets: &secrets,
                config_names: &names,
                etcd,
                incarnations: &incarnations,
            })
        };
        let r = render_with(&etcd);
        let find = |r: &Rendered, n: &str| {
            r.services
                .iter()
                .find(|s| s.name() == n)
                .cloned()
                .unwrap_or_else(|| panic!("no {n}"))
        };
        let pg1 = find(&r, "db-pg-1");
        let env = container(&pg1).env.unwrap_or_default();
        assert!(
            env.contains(&"PATRONI_NAME=db-pg-1.2".to_owned()),
            "{env:?}"
        );
        // Reached by its service name as before.
        assert!(env.contains(&"PATRONI_RESTAPI_CONNECT_ADDRESS=db-pg-1:8008".to_owned()));
        assert!(
            constraints(&pg1).contains(&format!("node.labels.{}==2", instance_slot("db", 1))),
            "{:?}",
            constraints(&pg1)
        );
        let pg0 = find(&r, "db-pg-0");
        assert!(
            constraints(&pg0).contains(&format!("node.labels.{}==true", instance_slot("db", 0)))
        );
        let replicas = |s: &DesiredService| {
            s.spec
                .mode
                .as_ref()
                .and_then(|m| m.replicated.as_ref())
                .and_then(|r| r.replicas)
        };
        // Not in the cluster yet: its service does not start.
        assert_eq!(replicas(&find(&r, "db-etcd-1")), Some(0));
        assert_eq!(replicas(&find(&r, "db-etcd-0")), Some(1));
        // Replaced: it joins the three, in a directory of its join.
        etcd = crate::reconcilers::postgres::etcd::after(
            &etcd,
            crate::reconcilers::postgres::etcd::Step::Replace(1, 1),
        );
        let r = render_with(&etcd);
        let e1 = find(&r, "db-etcd-1");
        assert_eq!(replicas(&e1), Some(1));
        let cmd = container(&e1).command.unwrap_or_default().join(" ");
        assert!(cmd.contains("--initial-cluster db-etcd-0=http://db-etcd-0:2380,db-etcd-1=http://db-etcd-1:2380,db-etcd-2=http://db-etcd-2:2380 "), "{cmd}");
        assert!(cmd.contains("--initial-cluster-state existing"), "{cmd}");
        assert!(cmd.contains("--data-dir /var/lib/etcd/join-1 "), "{cmd}");
    }

    #[test]
    fn routers_check_patroni_and_list_every_instance() {
        let c = pgc("  instances: 3\n");
        let rw = haproxy_conf(&c, true);
        assert!(rw.contains("option httpchk GET /primary"), "{rw}");
        assert!(rw.contains("  server db-pg-2 db-pg-2:5432"), "{rw}");
        assert!(rw.contains("on-marked-down shutdown-sessions"), "{rw}");
        let ro = haproxy_conf(&c, false);
        assert!(ro.contains("option httpchk GET /replica"), "{ro}");
        let r = rendered("  instances: 3\n  router:\n    replicas: 0\n");
        assert!(!names(&r).contains(&"db-rw"));
        assert!(!r.contents.iter().any(|c| c.purpose == purpose::ROUTER_RW));
    }

    #[test]
    fn the_app_environment_points_at_the_rw_router_and_the_secret_file() {
        let env = app_env(&pgc("  instances: 2\n"), "app", "db-app-password-1234");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("DB_HOST"), Some("db-rw"));
        assert_eq!(get("DB_PORT"), Some("5432"));
        assert_eq!(get("DB_USERNAME"), Some("app"));
        assert_eq!(
            get("DB_PASSWORD_FILE"),
            Some("/run/secrets/db-app-password-1234")
        );
    }

    #[test]
    fn parameter_values_cannot_break_out_of_the_yaml() {
        let c = pgc("  instances: 1\n  postgres:\n    parameters:\n      application_name: \"x\\\"\\nscope: evil\"\n");
        let conf = patroni_conf(&c);
        assert_eq!(
            conf.lines().filter(|l| l.starts_with("scope:")).count(),
            1,
            "{conf}"
        );
    }
}
