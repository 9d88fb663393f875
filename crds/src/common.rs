//! Spec parts shared by several kinds: placement, resources, storage,
//! credentials and networking.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::defaults;
use crate::name::Name;
use crate::quantity::{ByteQuantity, CpuQuantity};
use crate::validate::{self, Catalog, FieldPath, Report};

/// How instances of a resource are spread over nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Spread {
    /// Every instance on a different node; an instance stays pending rather
    /// than share a node. One node failure then costs at most one instance.
    #[default]
    Required,
    /// Different nodes when there are enough eligible nodes, shared otherwise.
    Preferred,
    /// No spreading: the scheduler may put instances together.
    None,
}

/// Which nodes may run the resource's instances.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Placement {
    /// Node labels a node must carry (all of them) to run an instance, e.g.
    /// `{disk: ssd}`. They become `node.labels.KEY==VALUE` constraints.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Further Swarm placement constraints, written as for `docker service create --constraint`,
    /// e.g. `node.role==worker`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    /// Whether instances must, should, or need not run on different nodes.
    #[serde(default)]
    pub spread: Spread,
    /// A node label to spread instances across evenly (a Swarm placement
    /// preference), e.g. `zone` for `spread=node.labels.zone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_by_label: Option<String>,
}

impl Placement {
    pub(crate) fn validate(&self, path: &FieldPath, report: &mut Report) {
        for key in self.node_selector.keys() {
            validate::check_label_key(report, path.key("nodeSelector").key(key), key);
        }
        for (i, c) in self.constraints.iter().enumerate() {
            validate::check_constraint(report, path.key("constraints").index(i), c);
        }
        if let Some(label) = &self.spread_by_label {
            validate::check_label_key(report, path.key("spreadByLabel"), label);
        }
    }
}

/// CPU and memory for one task.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceAmounts {
    /// CPU, as cores (`0.5`) or millicores (`500m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuQuantity>,
    /// Memory, e.g. `512Mi`, `2Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteQuantity>,
}

/// Resource limits and reservations of each task (Swarm's `--limit-*` and `--reserve-*`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// Most a task may use; above the memory limit the kernel kills it.
    #[serde(default)]
    pub limits: ResourceAmounts,
    /// What the scheduler sets aside on the node; a task is placed only where this fits.
    #[serde(default)]
    pub reservations: ResourceAmounts,
}

impl Resources {
    pub(crate) fn validate(&self, path: &FieldPath, report: &mut Report) {
        if let (Some(l), Some(r)) = (&self.limits.cpu, &self.reservations.cpu) {
            report.check(
                r.millicores() <= l.millicores(),
                || path.key("reservations").key("cpu"),
                "reservation-within-limit",
                || format!("the reservation ({r}) is larger than the limit ({l}): a task could be placed where it may never use what was reserved"),
            );
        }
        if let (Some(l), Some(r)) = (&self.limits.memory, &self.reservations.memory) {
            report.check(
                r.bytes() <= l.bytes(),
                || path.key("reservations").key("memory"),
                "reservation-within-limit",
                || format!("the reservation ({r}) is larger than the limit ({l}): a task could be placed where it may never use what was reserved"),
            );
        }
        if let Some(m) = &self.limits.memory {
            report.check(
                m.bytes() >= defaults::MIN_MEMORY_LIMIT_BYTES,
                || path.key("limits").key("memory"),
                "memory-limit-minimum",
                || format!("a memory limit of {m} is below Docker's minimum of 6Mi"),
            );
        }
    }
}

/// A per-instance named volume: its driver and driver options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeTemplate {
    /// Volume driver on each node: `local` (the default) or a plugin's name.
    #[serde(default = "defaults::volume_driver")]
    pub driver: String,
    /// Driver options, as for `docker volume create --opt`. With the `local`
    /// driver, a host-path bind (`o: bind`) is refused for replicated data.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
}

/// Where an instance keeps its data.
///
/// Set `volume` (one volume per instance, the default) or `sharedVolume` (a
/// SharedVolume resource), not both. The two are separate fields rather than a
/// tagged union so that a mistake gets a message naming both fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Storage {
    /// Expected data size. A hint for drivers that size volumes; the `local` driver ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<ByteQuantity>,
    /// A named volume per instance (`<name>-<role>-<i>-data`), created with this driver and options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeTemplate>,
    /// Name of a SharedVolume resource to keep the data on; each instance uses its own folder in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_volume: Option<Name>,
    /// What happens to the data when the resource is deleted, or a member is
    /// scaled away: `Retain` (default) keeps every volume; `Delete` erases
    /// the member's data volume with a one-shot job on the node that holds
    /// it (at scale-down, once the member's service is gone), then removes
    /// the volume definitions on the controller's node (empty ones on other
    /// nodes are named in the `VolumesReclaimed` event).
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
}

/// What deletion does to data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ReclaimPolicy {
    /// Data outlives the resource; remove it by hand when sure.
    #[default]
    Retain,
    /// Data is deleted with the resource.
    Delete,
}

/// Why a local-driver bind is refused for data that must survive a node.
pub const HOST_BIND_REFUSAL: &str = "a host path lives and dies with its node: when haswarm moves an instance off a failed node, the new node has a different (empty or stale) folder at that path, and the instance silently starts from it. Use a per-instance volume without bind options (replication rebuilds it), a SharedVolume, or a volume driver that stores data off the node";

impl Storage {
    pub(crate) fn validate(&self, path: &FieldPath, report: &mut Report, catalog: &dyn Catalog) {
        if self.volume.is_some() && self.shared_volume.is_some() {
            report.push(
                path.key("sharedVolume"),
                "storage-one-source",
                "set either storage.volume (a volume per instance) or storage.sharedVolume, not both",
            );
        }
        if let Some(v) = &self.volume {
            let vp = path.key("volume");
            if v.driver.trim().is_empty() {
                report.push(
                    vp.key("driver"),
                    "volume-driver",
                    "the driver must not be empty: use \"local\" or a plugin's name",
                );
            }
            if v.driver == "local" && is_bind(&v.driver_opts) {
                report.push(
                    vp.key("driverOpts"),
                    "no-host-path-for-ha-data",
                    HOST_BIND_REFUSAL,
                );
            }
        }
        if let Some(sv) = &self.shared_volume {
            report.check(
                catalog.contains(
                    <crate::volume::SharedVolumeSpec as crate::Kind>::KIND,
                    sv.as_str(),
                ),
                || path.key("sharedVolume"),
                "reference-resolves",
                || {
                    format!(
                        "SharedVolume {:?} was not found {}: apply it first or in the same batch",
                        sv.as_str(),
                        catalog.scope()
                    )
                },
            );
        }
    }
}

/// Whether local-driver options describe a bind mount of a host path.
pub(crate) fn is_bind(opts: &BTreeMap<String, String>) -> bool {
    opts.get("o")
        .is_some_and(|o| o.split(',').any(|x| matches!(x.trim(), "bind" | "rbind")))
}

/// A reference to a Swarm secret that already exists and that haswarm only reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// Name of the Swarm secret (`docker secret ls`). Its content is used as is.
    pub name: String,
}

impl SecretRef {
    pub(crate) fn validate(&self, path: &FieldPath, report: &mut Report) {
        validate::check_swarm_object_name(report, path.key("name"), &self.name);
    }
}

/// How other services reach the instances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// DNS round robin: the service name resolves to the tasks' own addresses.
    /// The default, because stateful clients want to reach a specific instance,
    /// and because Swarm's virtual IPs need IPVS, which some kernels lack.
    #[default]
    Dnsrr,
    /// A Swarm virtual IP load-balancing over the tasks (needs IPVS in the kernel).
    Vip,
}

/// The overlay network haswarm creates for the resource and applications join.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    /// How service names resolve: `dnsrr` (default) or `vip`.
    #[serde(default)]
    pub endpoint_mode: EndpointMode,
    /// Encrypt traffic between nodes on the overlay (IPsec). Costs CPU.
    #[serde(default)]
    pub encrypted: bool,
}

/// The annotation that asks for a new generated password: set it to a new
/// value (any text, a timestamp say) and the resource rotates the password
/// once (`haswarmctl rotate-password` does this). A PostgresCluster reads
/// `<token> user=app|superuser` (the app user when no user is named).
pub const ROTATE_PASSWORD_ANNOTATION: &str = "haswarm.io/rotate-password";
