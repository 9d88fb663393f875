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
//!
//! Patroni's configuration is in `render/patroni.rs`, the routers in
//! `render/router.rs`.

use std::collections::{BTreeMap, HashMap};

use haswarm_crds::common::{Placement, Spread};
use haswarm_crds::postgres::{BootstrapUser, EtcdMembership, SynchronousMode, ROLE_ATTRIBUTES};
use haswarm_crds::{PostgresCluster, PostgresClusterSpec};

use crate::reconcilers::common::{
    self, config_ref, data_mount, health, secret_ref, slot_label, DesiredContent, ServiceParts,
};
use crate::reconcilers::fence::{self, Fence};
use crate::reconcilers::postgres::backup;
use crate::swarm::objects::ContentKind;
use crate::swarm::DesiredService;

mod patroni;
mod router;
pub use patroni::{bootstrap_dynamic_config, config_patch, dynamic_config, patroni_conf};
pub use router::haproxy_conf;

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

pub use crate::reconcilers::common::network_name;

/// The slot label pinning instance `i`.
pub fn instance_slot(name: &str, i: usize) -> String {
    slot_label(super::reconcile::KIND, &format!("{name}.pg"), i)
}

/// The slot label pinning etcd member `j`.
pub fn etcd_slot(name: &str, j: usize) -> String {
    slot_label(super::reconcile::KIND, &format!("{name}.etcd"), j)
}

/// The Swarm secret each password the instances need is read from.
#[derive(Clone, Debug, PartialEq)]
pub struct PasswordSecrets {
    /// The `postgres` superuser's.
    pub superuser: String,
    /// The `replicator` role's.
    pub replication: String,
    /// Patroni's REST API's, for its unsafe endpoints.
    pub api: String,
    /// The backups' (with `spec.backup`).
    pub backup: Option<super::backup::BackupSecrets>,
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
/// the first `clients` ([`EtcdMembership::clients`]: a learner, which
/// answers no client, is left out until it votes).
pub fn etcd_hosts(
    name: &str,
    spec: &PostgresClusterSpec,
    clients: u8,
) -> (Vec<String>, &'static str) {
    if spec.etcd.endpoints.is_empty() {
        let hosts = (0..usize::from(clients))
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

/// The configs every cluster has, and the generated password secrets.
pub fn contents(
    pgc: &PostgresCluster,
    generated: &HashMap<String, Vec<u8>>,
    etcd_clients: u8,
) -> Vec<DesiredContent> {
    let config = |purpose: &str, data: String| DesiredContent {
        kind: ContentKind::Config,
        purpose: purpose.to_owned(),
        data: data.into_bytes(),
    };
    let mut out = vec![
        config(purpose::PATRONI_CONF, patroni_conf(pgc, etcd_clients)),
        config(purpose::PATRONI_START, PATRONI_START.to_owned()),
        config(purpose::POST_BOOTSTRAP, POST_BOOTSTRAP.to_owned()),
        fence::content(),
    ];
    if let Some(b) = &pgc.spec.backup {
        let stanza = pgc.metadata.name.as_str();
        out.push(config(
            backup::purpose::CONF,
            backup::conf::instance_conf(stanza, b),
        ));
        out.push(config(backup::purpose::PREPARE, backup::PREPARE.to_owned()));
    }
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

/// Failed liveness checks (5 s apart, 3 s each) before Swarm restarts an
/// instance: about 30 s, a TTL. A restart of a loaded leader is a failover;
/// CI saw three checks in a row time out on a leader starved by the other
/// tests, and Patroni's own leader key, not this check, keeps one primary.
const INSTANCE_HEALTH_RETRIES: i64 = 6;

/// An instance's secrets and configs: the passwords and Patroni's files,
/// and with `spec.backup` pgBackRest's.
fn instance_files(
    inputs: &Inputs<'_>,
) -> (
    Vec<bollard::models::TaskSpecContainerSpecSecrets>,
    Vec<bollard::models::TaskSpecContainerSpecConfigs>,
) {
    let mut secrets = vec![
        secret_ref(&inputs.secrets.superuser, "pg-superuser-password", 0o400),
        secret_ref(
            &inputs.secrets.replication,
            "pg-replication-password",
            0o400,
        ),
        secret_ref(&inputs.secrets.api, "pg-api-password", 0o400),
    ];
    let mut configs = vec![
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
    ];
    if let Some(b) = &inputs.secrets.backup {
        secrets.extend(b.mounts());
        configs.push(config_ref(
            name_of(inputs.config_names, backup::purpose::CONF),
            backup::conf::CONF_PATH,
            0o444,
        ));
        configs.push(config_ref(
            name_of(inputs.config_names, backup::purpose::PREPARE),
            backup::PREPARE_PATH,
            0o444,
        ));
    }
    (secrets, configs)
}

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
    let (secrets, configs) = instance_files(inputs);
    let ports: &[u16] = if spec.backup.is_some() {
        &[PG_PORT, PATRONI_PORT, backup::conf::TLS_PORT]
    } else {
        &[PG_PORT, PATRONI_PORT]
    };
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
        mounts: [data_mount(
            &spec.storage,
            &format!("{member}-data"),
            "/var/lib/postgresql",
        )]
        .into_iter()
        .chain(inputs.secrets.backup.iter().flat_map(|b| b.volumes.clone()))
        .collect(),
        secrets,
        configs,
        health: Some(health(
            &liveness,
            5,
            INSTANCE_HEALTH_RETRIES,
            INSTANCE_START_PERIOD_S,
        )),
        resources: &spec.resources,
        placement: &spec.placement,
        slot: Some(pin),
        replicas: 1,
        restart_delay_ms: 5_000,
        network: &net,
        aliases: Vec::new(),
        endpoint_mode: spec.network.endpoint_mode,
        fence: Some(Fence {
            kind: "postgres",
            ports,
            lease_s: fence::patroni_lease_s(
                spec.patroni.ttl,
                spec.patroni.loop_wait,
                spec.patroni.retry_timeout,
            ),
            config: name_of(inputs.config_names, fence::PURPOSE),
        }),
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
        fence: None,
    })
}

/// Renders the whole cluster.
pub fn render(inputs: &Inputs<'_>) -> Vec<DesiredService> {
    let pgc = inputs.pgc;
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
        services.push(router::service(inputs, true, &placement));
        services.push(router::service(inputs, false, &placement));
    }
    services
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
