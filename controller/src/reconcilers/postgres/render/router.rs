//! The read-write and read-only routers: HAProxy's configuration and the
//! routers' services.

use super::*;

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

pub(super) fn service(
    inputs: &Inputs<'_>,
    read_write: bool,
    placement: &Placement,
) -> DesiredService {
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
        fence: None,
        endpoint_mode: spec.network.endpoint_mode,
    })
}
