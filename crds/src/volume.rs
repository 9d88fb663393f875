//! SharedVolume: a named Docker volume defined the same way on every eligible
//! node, backed by storage every node reaches (NFS, a volume plugin, or a
//! network filesystem already mounted at the same path on each node).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{is_bind, ReclaimPolicy, HOST_BIND_REFUSAL};
use crate::meta::{CommonStatus, ObjectMeta};
use crate::quantity::ByteQuantity;
use crate::validate::{self, Catalog, FieldPath, Report};
use crate::{defaults, Kind};

/// Desired state of a volume shared by all eligible nodes.
///
/// Exactly one of `nfs`, `hostPath` and `driver` says where the data lives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SharedVolumeSpec {
    /// An NFS export, mounted by Docker's `local` driver (`type=nfs`). Nodes
    /// need an NFS client (nfs-common).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs: Option<NfsSource>,
    /// A folder that is already a network mount (NFS, CephFS, GlusterFS, SMB...)
    /// at the same path on every node, bound into containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathSource>,
    /// Any other volume driver: a plugin (e.g. `rexray/efs`) or `local` with
    /// hand-written options (e.g. `type: cifs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<DriverSource>,
    /// Which nodes get the volume. All nodes when empty.
    #[serde(default)]
    pub nodes: NodeSelection,
    /// How containers may use it: `ReadWriteMany` (default) or `ReadOnlyMany`.
    #[serde(default)]
    pub access_mode: AccessMode,
    /// What deleting the resource does to the data: `Retain` (default) never
    /// deletes it; `Delete` removes the volume definitions (a plugin may then delete data).
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
    /// Expected size. A hint for drivers that size volumes; NFS and host paths ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<ByteQuantity>,
}

/// An NFS export.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NfsSource {
    /// NFS server host name or IP address, as every node resolves it.
    pub server: String,
    /// Exported path on the server, e.g. `/exports/dify`.
    pub path: String,
    /// NFS protocol version: `3`, `4`, `4.0`, `4.1` or `4.2`.
    #[serde(default = "defaults::nfs_version")]
    pub version: String,
    /// Extra mount options, e.g. `[hard, timeo=600, nolock]`. `addr` and
    /// `nfsvers` come from `server` and `version`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A folder network-mounted at the same path on every node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPathSource {
    /// Absolute path on every node, e.g. `/mnt/shared/dify`. It must be a network
    /// mount: a plain local folder would differ from node to node.
    pub path: String,
}

/// A volume driver and its options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DriverSource {
    /// Driver name: `local` or an installed plugin.
    pub name: String,
    /// Options, as for `docker volume create --opt`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// Which nodes get the volume.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSelection {
    /// Node labels a node must carry (all of them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// Further Swarm constraints, e.g. `node.role==worker`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
}

/// How containers may use a SharedVolume.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AccessMode {
    /// Read and write from every node at once.
    #[default]
    ReadWriteMany,
    /// Read-only everywhere.
    ReadOnlyMany,
}

/// The mount result on one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeMountStatus {
    /// Swarm node host name.
    pub node: String,
    /// Whether the probe mounted the volume there.
    pub mounted: bool,
    /// Why not, when it did not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Observed state of a SharedVolume.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SharedVolumeStatus {
    /// Generation, conditions and owned objects.
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Per-node mount results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeMountStatus>,
}

/// Paths whose bind would hand containers the node itself.
const FORBIDDEN_HOST_PATHS: &[&str] = &[
    "/",
    "/etc",
    "/bin",
    "/sbin",
    "/usr",
    "/lib",
    "/lib64",
    "/boot",
    "/dev",
    "/proc",
    "/sys",
    "/run",
    "/var/run",
    "/var/lib/docker",
    "/root",
];

fn check_abs_path(report: &mut Report, path: FieldPath, p: &str, what: &str) {
    let ok =
        p.starts_with('/') && !p.contains(char::is_whitespace) && !p.split('/').any(|s| s == "..");
    report.check(
        ok,
        || path,
        "absolute-path",
        || format!("{p:?} is not a usable {what}: write an absolute path without spaces or '..'"),
    );
}

impl Kind for SharedVolumeSpec {
    const KIND: &'static str = "SharedVolume";
    const PLURAL: &'static str = "sharedvolumes";
    const SHORT_NAMES: &'static [&'static str] = &["sv"];
    type Status = SharedVolumeStatus;

    fn apply_defaults(&mut self, _meta: &ObjectMeta) {}

    fn validate(&self, _meta: &ObjectMeta, report: &mut Report, _catalog: &dyn Catalog) {
        let spec = FieldPath::root().key("spec");
        let sources = [
            self.nfs.is_some(),
            self.host_path.is_some(),
            self.driver.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        report.check(
            sources == 1,
            || spec.clone(),
            "volume-one-source",
            || {
                if sources == 0 {
                    "say where the data lives: set one of spec.nfs, spec.hostPath or spec.driver"
                        .into()
                } else {
                    "set only one of spec.nfs, spec.hostPath and spec.driver".into()
                }
            },
        );
        if let Some(nfs) = &self.nfs {
            let np = spec.key("nfs");
            let server_ok = !nfs.server.is_empty()
                && nfs
                    .server
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
            report.check(
                server_ok,
                || np.key("server"),
                "nfs-server",
                || format!("{:?} is not a host name or IP address", nfs.server),
            );
            check_abs_path(report, np.key("path"), &nfs.path, "NFS export path");
            report.check(
                matches!(nfs.version.as_str(), "3" | "4" | "4.0" | "4.1" | "4.2"),
                || np.key("version"),
                "nfs-version",
                || format!("NFS version {:?}: use 3, 4, 4.0, 4.1 or 4.2", nfs.version),
            );
            for (i, o) in nfs.options.iter().enumerate() {
                let key = o.split('=').next().unwrap_or_default().trim();
                let owned = matches!(key, "addr" | "nfsvers" | "vers");
                report.check(
                    !owned && !o.contains(',') && !o.trim().is_empty(),
                    || np.key("options").index(i),
                    "nfs-option",
                    || {
                        if owned {
                            format!("{key} is set from server/version; remove it")
                        } else {
                            format!("{o:?}: write one option per list item, without commas")
                        }
                    },
                );
            }
        }
        if let Some(hp) = &self.host_path {
            let pp = spec.key("hostPath").key("path");
            check_abs_path(report, pp.clone(), &hp.path, "host path");
            let trimmed = hp.path.trim_end_matches('/');
            let normal = if trimmed.is_empty() { "/" } else { trimmed };
            report.check(
                !FORBIDDEN_HOST_PATHS.contains(&normal),
                || pp,
                "host-path-system",
                || format!("{:?} is a system folder of the node; sharing it would hand containers the node itself", hp.path),
            );
        }
        if let Some(d) = &self.driver {
            let dp = spec.key("driver");
            report.check(
                !d.name.trim().is_empty(),
                || dp.key("name"),
                "volume-driver",
                || "the driver name must not be empty".into(),
            );
            report.check(
                !(d.name == "local" && is_bind(&d.options)),
                || dp.key("options"),
                "no-host-path-for-ha-data",
                || format!("a local bind is not shared storage: {HOST_BIND_REFUSAL}; for a folder that is network-mounted on every node use spec.hostPath"),
            );
        }
        for key in self.nodes.selector.keys() {
            validate::check_label_key(report, spec.key("nodes").key("selector").key(key), key);
        }
        for (i, c) in self.nodes.constraints.iter().enumerate() {
            validate::check_constraint(report, spec.key("nodes").key("constraints").index(i), c);
        }
    }
}
