//! Unit tests of `render`, without Docker.

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

/// What a resource needs on the Swarm, as the reconcile makes it: the
/// network, the contents, and the services rendered against them.
struct Rendered {
    network: String,
    contents: Vec<DesiredContent>,
    services: Vec<DesiredService>,
}

fn rendered(spec: &str) -> Rendered {
    let r = rsg(spec);
    let contents = contents(&r.spec, Some(PW));
    let names = content_names("cache", &contents);
    let secret = names.get(purpose::PASSWORD).cloned().expect("secret name");
    let services = render(&Inputs {
        rsg: &r,
        password_secret: &secret,
        generated_password: Some(PW),
        extra_password_secret: None,
        config_names: &names,
        incarnations: &Default::default(),
    });
    Rendered {
        network: network_name("cache"),
        contents,
        services,
    }
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
            "fence",
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
    for s in &rendered {
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
    for (a, b) in moved.iter().zip(&never) {
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
    let c =
        redis_conf(&rsg("  maxMemory: 512Mi\n  config:\n    maxmemory-policy: allkeys-lru\n").spec);
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
        &rsg("  persistence:\n    mode: Rdb\n    rdbSave: [{seconds: 60, changes: 1000}]\n").spec,
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
    let r = rendered(
        "  sentinels:\n    count: 5\n    quorum: 3\n    downAfter: 2s\n    failoverTimeout: 10s\n",
    );
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
    let env: HashMap<String, String> = app_env(&r, "cache-password-0123abcd").into_iter().collect();
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
    assert!(
        !env.contains_key("REDIS_HOST"),
        "the sentinels name the master"
    );
}

#[test]
fn data_instances_run_behind_the_fence_for_down_after_and_sentinels_do_not() {
    let r = rendered("  sentinels:\n    downAfter: 2500ms\n");
    assert!(r.contents.iter().any(|c| c.purpose == fence::PURPOSE));
    let env = [
        "HASWARM_FENCE_KIND=redis",
        "HASWARM_FENCE_PORTS=6379",
        "HASWARM_FENCE_S=3",
    ];
    for s in &r.services {
        let fenced = s.name().contains("-redis-");
        fence::assert_fenced(&container(s), fenced.then_some(&env[..]), s.name());
    }
}
