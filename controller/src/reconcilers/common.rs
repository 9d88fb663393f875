//! Building blocks every renderer uses, so that kinds differ only in what
//! they run, never in how a resource limit, a placement rule, a pinned slot, a
//! data volume or a secret reference is written. Pure functions.

use std::collections::HashMap;

use bollard::models::{
    EndpointSpec, EndpointSpecModeEnum, HealthConfig, Limit, Mount, MountType, MountVolumeOptions,
    MountVolumeOptionsDriverConfig, NetworkAttachmentConfig, ResourceObject,
    TaskSpecContainerSpecConfigs, TaskSpecContainerSpecFile, TaskSpecContainerSpecFile1,
    TaskSpecContainerSpecSecrets, TaskSpecPlacement, TaskSpecPlacementPreferences,
    TaskSpecPlacementSpread, TaskSpecResources,
};
use haswarm_crds::common::{EndpointMode, Placement, Resources, Spread, Storage};

use super::fence::{self, Fence};
use crate::swarm::objects::ContentKind;
use crate::swarm::NodeInfo;

/// A secret or config a renderer wants: content-named at apply time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredContent {
    /// Secret or config.
    pub kind: ContentKind,
    /// What it is for (part of its name and its purpose label).
    pub purpose: String,
    /// The content.
    pub data: Vec<u8>,
}

/// `<name>-net`: a resource's overlay network, the one applications join.
pub fn network_name(name: &str) -> String {
    format!("{name}-net")
}

/// The node label that pins slot `i` of a resource to a node:
/// `io.haswarm.<kind>.<name>.slot-<i>`, its value the incarnation of the
/// member pinned there (see [`crate::reconcilers::slots::plan`]).
pub fn slot_label(kind: &str, name: &str, i: usize) -> String {
    format!("io.haswarm.{}.{name}.slot-{i}", kind.to_ascii_lowercase())
}

/// `<kind>/<name> <family> <index>` of a [`slot_label`] (`name` being
/// `<resource>.<family>`), `None` for other labels.
pub fn slot_member(label: &str) -> Option<String> {
    let rest = label.strip_prefix("io.haswarm.")?;
    let (rest, index) = rest.rsplit_once(".slot-")?;
    index.parse::<usize>().ok()?;
    let (kind, rest) = rest.split_once('.')?;
    let (name, family) = rest.rsplit_once('.')?;
    Some(format!("{kind}/{name} {family} {index}"))
}

/// The slot a stateful task is pinned to: its label, and the incarnation of
/// the member the service runs (the value the label must have).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pin<'a> {
    /// The slot label.
    pub label: &'a str,
    /// The incarnation of the member.
    pub incarnation: u32,
}

impl<'a> Pin<'a> {
    /// Slot `label` at the incarnation `incarnations` records (0 when none).
    pub fn of(label: &'a str, incarnations: &std::collections::BTreeMap<String, u32>) -> Self {
        Self {
            label,
            incarnation: incarnations.get(label).copied().unwrap_or(0),
        }
    }
}

/// Whether a node meets placement constraints, judged on what haswarm can
/// read from the node (labels, role, hostname, id). Constraints on other
/// attributes are left to Swarm: they count as met.
pub fn node_matches(constraints: &[String], node: &NodeInfo) -> bool {
    constraints.iter().all(|c| {
        let (attr, want, equal) = match c.split_once("!=") {
            Some((a, v)) => (a.trim(), v.trim(), false),
            None => match c.split_once("==") {
                Some((a, v)) => (a.trim(), v.trim(), true),
                None => return true,
            },
        };
        let have = if let Some(label) = attr.strip_prefix("node.labels.") {
            node.labels.get(label).map(String::as_str)
        } else {
            match attr {
                "node.role" => Some(node.role.as_str()),
                "node.hostname" => Some(node.hostname.as_str()),
                "node.id" => Some(node.id.as_str()),
                _ => return true,
            }
        };
        (have == Some(want)) == equal
    })
}

/// The user's placement constraints (node selector and constraints), without slot pins.
pub fn user_constraints(p: &Placement) -> Vec<String> {
    let mut c: Vec<String> = p
        .node_selector
        .iter()
        .map(|(k, v)| format!("node.labels.{k}=={v}"))
        .collect();
    c.extend(p.constraints.iter().cloned());
    c
}

/// Task resources (Swarm's `--limit-*` and `--reserve-*`).
pub fn resources(r: &Resources) -> TaskSpecResources {
    let amounts = |a: &haswarm_crds::common::ResourceAmounts| {
        (a.cpu.is_some() || a.memory.is_some()).then(|| {
            (
                a.cpu
                    .as_ref()
                    .map(|c| i64::try_from(c.nano_cpus()).unwrap_or(i64::MAX)),
                a.memory
                    .as_ref()
                    .map(|m| i64::try_from(m.bytes()).unwrap_or(i64::MAX)),
            )
        })
    };
    TaskSpecResources {
        limits: amounts(&r.limits).map(|(nano_cpus, memory_bytes)| Limit {
            nano_cpus,
            memory_bytes,
            ..Default::default()
        }),
        reservations: amounts(&r.reservations).map(|(nano_cpus, memory_bytes)| ResourceObject {
            nano_cpus,
            memory_bytes,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Placement: the user's node selector and constraints, plus the slot pin
/// when the instance is pinned (the label at the member's incarnation: the
/// node holding an older or newer one does not match).
pub fn placement(p: &Placement, slot: Option<Pin<'_>>) -> TaskSpecPlacement {
    let mut constraints: Vec<String> = p
        .node_selector
        .iter()
        .map(|(k, v)| format!("node.labels.{k}=={v}"))
        .collect();
    constraints.extend(p.constraints.iter().cloned());
    if let Some(pin) = slot {
        constraints.push(format!(
            "node.labels.{}=={}",
            pin.label,
            crate::reconcilers::slots::plan::label_value(pin.incarnation)
        ));
    }
    let preferences = p.spread_by_label.as_ref().map(|l| {
        vec![TaskSpecPlacementPreferences {
            spread: Some(TaskSpecPlacementSpread {
                spread_descriptor: Some(format!("node.labels.{l}")),
            }),
        }]
    });
    TaskSpecPlacement {
        constraints: Some(constraints),
        preferences,
        // Without a slot pin, Required spread is Swarm's one-task-per-node limit.
        max_replicas: (slot.is_none() && p.spread == Spread::Required).then_some(1),
        ..Default::default()
    }
}

/// The endpoint spec for an endpoint mode.
pub fn endpoint(mode: EndpointMode) -> EndpointSpec {
    EndpointSpec {
        mode: Some(match mode {
            EndpointMode::Dnsrr => EndpointSpecModeEnum::DNSRR,
            EndpointMode::Vip => EndpointSpecModeEnum::VIP,
        }),
        ..Default::default()
    }
}

/// Attachment to a network.
pub fn network(name: &str) -> NetworkAttachmentConfig {
    NetworkAttachmentConfig {
        target: Some(name.to_owned()),
        ..Default::default()
    }
}

/// The data mount of one instance: a named volume `volume` with the
/// storage's driver and options (the `local` driver by default). SharedVolume
/// storage is resolved by the reconciler, which knows the SharedVolume.
pub fn data_mount(storage: &Storage, volume: &str, target: &str) -> Mount {
    let (driver, options) = match &storage.volume {
        Some(t) => (
            t.driver.clone(),
            t.driver_opts.clone().into_iter().collect::<HashMap<_, _>>(),
        ),
        None => ("local".to_owned(), HashMap::new()),
    };
    Mount {
        target: Some(target.to_owned()),
        source: Some(volume.to_owned()),
        typ: Some(MountType::VOLUME),
        volume_options: Some(MountVolumeOptions {
            driver_config: Some(MountVolumeOptionsDriverConfig {
                name: Some(driver),
                options: (!options.is_empty()).then_some(options),
            }),
            labels: Some(HashMap::from([(
                crate::swarm::labels::MANAGED_BY.to_owned(),
                crate::swarm::labels::MANAGER.to_owned(),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A reference to a secret by name, mounted as `/run/secrets/<file>` with
/// `mode`. The apply step fills in the secret's id.
pub fn secret_ref(name: &str, file: &str, mode: u32) -> TaskSpecContainerSpecSecrets {
    TaskSpecContainerSpecSecrets {
        file: Some(TaskSpecContainerSpecFile {
            name: Some(file.to_owned()),
            uid: Some("0".into()),
            gid: Some("0".into()),
            mode: Some(mode),
        }),
        secret_name: Some(name.to_owned()),
        ..Default::default()
    }
}

/// A reference to a config by name, mounted at `path` with `mode`. The apply
/// step fills in the config's id.
pub fn config_ref(name: &str, path: &str, mode: u32) -> TaskSpecContainerSpecConfigs {
    TaskSpecContainerSpecConfigs {
        file: Some(TaskSpecContainerSpecFile1 {
            name: Some(path.to_owned()),
            uid: Some("0".into()),
            gid: Some("0".into()),
            mode: Some(mode),
        }),
        config_name: Some(name.to_owned()),
        ..Default::default()
    }
}

/// A shell health check every `interval` seconds; failures in the first
/// `start_period_s` seconds do not count (a success counts at once).
pub fn health(cmd: &str, interval_s: i64, retries: i64, start_period_s: i64) -> HealthConfig {
    HealthConfig {
        test: Some(vec!["CMD-SHELL".into(), cmd.to_owned()]),
        interval: Some(interval_s * 1_000_000_000),
        timeout: Some(3_000_000_000),
        retries: Some(retries),
        start_period: Some(start_period_s * 1_000_000_000),
        ..Default::default()
    }
}

/// Everything that differs between the services the kinds run; the rest
/// (one network, DNS options, update order, restart policy) is written once
/// here, so every kind's services behave alike on Swarm.
#[derive(Clone, Debug)]
pub struct ServiceParts<'a> {
    /// Service name, also the container's host name.
    pub name: String,
    /// Value of the `io.haswarm.role` label.
    pub role: &'a str,
    /// Image.
    pub image: &'a str,
    /// Command (the image's entrypoint is kept).
    pub command: Vec<String>,
    /// Environment: names and settings only, never a secret.
    pub env: Vec<String>,
    /// Mounts.
    pub mounts: Vec<Mount>,
    /// Secrets.
    pub secrets: Vec<TaskSpecContainerSpecSecrets>,
    /// Configs.
    pub configs: Vec<TaskSpecContainerSpecConfigs>,
    /// Health check; `None` keeps the image's own.
    pub health: Option<HealthConfig>,
    /// CPU and memory.
    pub resources: &'a Resources,
    /// The user's placement rules.
    pub placement: &'a Placement,
    /// The slot label pinning a stateful task to its node; `None` for
    /// stateless services that may run anywhere.
    pub slot: Option<Pin<'a>>,
    /// Tasks (1 for a pinned instance).
    pub replicas: u64,
    /// Delay before Swarm restarts a task that stopped.
    pub restart_delay_ms: i64,
    /// The overlay network.
    pub network: &'a str,
    /// Network aliases (further DNS names of the service on that network).
    pub aliases: Vec<String>,
    /// dnsrr or vip.
    pub endpoint_mode: EndpointMode,
    /// The fence a data member runs behind; `None` for the others.
    pub fence: Option<Fence<'a>>,
}

/// The service for `parts`. A pinned task owns a volume, so an update stops
/// the old task before it starts the new one; stateless services start the
/// new task first.
pub fn service(parts: ServiceParts<'_>) -> crate::swarm::DesiredService {
    use bollard::models::{
        ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, ServiceSpecUpdateConfig,
        ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum, TaskSpec,
        TaskSpecContainerSpec, TaskSpecContainerSpecDnsConfig, TaskSpecRestartPolicy,
        TaskSpecRestartPolicyConditionEnum,
    };
    let (mut command, mut env, mut configs) = (parts.command, parts.env, parts.configs);
    let mut capabilities = None;
    if let Some(f) = parts.fence {
        command = f.wrap(command);
        env.extend(f.env());
        configs.push(config_ref(f.config, fence::PATH, 0o555));
        capabilities = Some(vec![fence::CAPABILITY.to_owned()]);
    }
    let mut attachment = network(parts.network);
    if !parts.aliases.is_empty() {
        attachment.aliases = Some(parts.aliases.clone());
    }
    crate::swarm::DesiredService {
        spec: ServiceSpec {
            name: Some(parts.name.clone()),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated {
                    replicas: Some(i64::try_from(parts.replicas).unwrap_or(1)),
                }),
                ..Default::default()
            }),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(parts.image.to_owned()),
                    command: Some(command),
                    env: Some(env),
                    hostname: parts.slot.map(|_| parts.name.clone()),
                    mounts: (!parts.mounts.is_empty()).then_some(parts.mounts),
                    secrets: (!parts.secrets.is_empty()).then_some(parts.secrets),
                    configs: (!configs.is_empty()).then_some(configs),
                    capability_add: capabilities,
                    // A lost DNS answer costs glibc's timeout (5 s by
                    // default), and data planes resolve the names of members
                    // that are gone: Sentinel's single-threaded loop goes into
                    // TILT past 2 s, Patroni's loop misses its TTL.
                    dns_config: Some(TaskSpecContainerSpecDnsConfig {
                        options: Some(vec!["timeout:1".into(), "attempts:2".into()]),
                        ..Default::default()
                    }),
                    health_check: parts.health,
                    // A real init as PID 1 reaps orphans: Patroni daemonizes
                    // the postmaster, and a shell or runuser as PID 1 leaves
                    // it a zombie that Patroni waits on for ever ("stopping").
                    init: Some(true),
                    stop_grace_period: Some(10_000_000_000),
                    ..Default::default()
                }),
                resources: Some(resources(parts.resources)),
                placement: Some(placement(parts.placement, parts.slot)),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                    delay: Some(parts.restart_delay_ms * 1_000_000),
                    ..Default::default()
                }),
                networks: Some(vec![attachment]),
                ..Default::default()
            }),
            update_config: Some(ServiceSpecUpdateConfig {
                parallelism: Some(1),
                order: Some(if parts.slot.is_some() {
                    ServiceSpecUpdateConfigOrderEnum::STOP_FIRST
                } else {
                    ServiceSpecUpdateConfigOrderEnum::START_FIRST
                }),
                failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::PAUSE),
                ..Default::default()
            }),
            endpoint_spec: Some(endpoint(parts.endpoint_mode)),
            labels: Some(HashMap::from([(
                "io.haswarm.role".to_owned(),
                parts.role.to_owned(),
            )])),
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use haswarm_crds::quantity::{ByteQuantity, CpuQuantity};

    use super::*;

    #[test]
    fn slot_labels_name_their_member_and_other_labels_nothing() {
        let label = slot_label("PostgresCluster", "db.pg", 1);
        assert_eq!(
            slot_member(&label).as_deref(),
            Some("postgrescluster/db pg 1")
        );
        assert_eq!(
            slot_member("io.haswarm.redissentinelgroup.cache.sentinel.slot-12").as_deref(),
            Some("redissentinelgroup/cache sentinel 12")
        );
        assert_eq!(slot_member("io.haswarm.drain"), None);
        assert_eq!(slot_member("io.haswarm.pg.slot-x"), None);
        assert_eq!(slot_member("zone"), None);
    }

    #[test]
    fn resources_convert_to_swarm_units() {
        let mut r = Resources::default();
        r.limits.cpu = CpuQuantity::parse("500m").ok();
        r.limits.memory = ByteQuantity::parse("1Gi").ok();
        let t = resources(&r);
        let l = t.limits.expect("limits");
        assert_eq!(l.nano_cpus, Some(500_000_000));
        assert_eq!(l.memory_bytes, Some(1 << 30));
        assert!(t.reservations.is_none());
    }

    #[test]
    fn placement_pins_slots_and_keeps_user_rules() {
        let mut p = Placement::default();
        p.node_selector.insert("tier".into(), "data".into());
        p.constraints.push("node.role==worker".into());
        p.spread_by_label = Some("zone".into());
        let label = slot_label("RedisSentinelGroup", "cache", 1);
        assert_eq!(label, "io.haswarm.redissentinelgroup.cache.slot-1");
        let t = placement(&p, Some(Pin::of(&label, &Default::default())));
        assert_eq!(
            t.constraints,
            Some(vec![
                "node.labels.tier==data".to_owned(),
                "node.role==worker".to_owned(),
                "node.labels.io.haswarm.redissentinelgroup.cache.slot-1==true".to_owned()
            ])
        );
        assert_eq!(t.max_replicas, None, "a pinned slot is one task anyway");
        let spread = t
            .preferences
            .and_then(|p| p.into_iter().next())
            .and_then(|p| p.spread);
        assert_eq!(
            spread.and_then(|s| s.spread_descriptor).as_deref(),
            Some("node.labels.zone")
        );
        assert_eq!(placement(&Placement::default(), None).max_replicas, Some(1));
    }

    #[test]
    fn data_mounts_use_the_storage_driver() {
        let mut s = Storage::default();
        assert_eq!(
            data_mount(&s, "v", "/data")
                .volume_options
                .and_then(|o| o.driver_config)
                .and_then(|d| d.name)
                .as_deref(),
            Some("local")
        );
        s.volume = Some(haswarm_crds::common::VolumeTemplate {
            driver: "rexray/ebs".into(),
            driver_opts: [("size".to_owned(), "20".to_owned())].into_iter().collect(),
        });
        let m = data_mount(&s, "v", "/data");
        let d = m
            .volume_options
            .and_then(|o| o.driver_config)
            .expect("driver");
        assert_eq!(d.name.as_deref(), Some("rexray/ebs"));
        assert_eq!(
            d.options.and_then(|o| o.get("size").cloned()).as_deref(),
            Some("20")
        );
    }
}
