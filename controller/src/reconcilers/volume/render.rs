//! SharedVolume, pure part: the Swarm objects a SharedVolume needs, how other
//! services mount it, and per-node status from what Swarm reports. No I/O.
//!
//! The volume reaches every eligible node through a global "probe" service
//! that mounts it: Swarm starts one task per node, each node creates the
//! volume with the same driver and options on first use, and the task's state
//! tells, node by node, whether mounting works.

use std::collections::HashMap;

use bollard::models::{
    Limit, Mount, MountType, MountVolumeOptions, MountVolumeOptionsDriverConfig, ServiceSpec,
    ServiceSpecMode, Task, TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use haswarm_crds::volume::AccessMode;
use haswarm_crds::volume::NodeMountStatus;
use haswarm_crds::{SharedVolume, SharedVolumeSpec};

use crate::swarm::{DesiredService, NodeInfo};

/// Where the probe mounts the volume.
pub const PROBE_MOUNT: &str = "/mnt/volume";

/// The Docker volume name of a SharedVolume: its resource name, so that
/// stacks can refer to it by the name they know.
pub fn volume_name(sv: &SharedVolume) -> String {
    sv.metadata.name.to_string()
}

/// The probe service's name.
pub fn probe_name(sv: &SharedVolume) -> String {
    format!("{}-probe", sv.metadata.name)
}

/// The mount that gives a container the SharedVolume at `target`. Every
/// resource that uses a SharedVolume mounts it through this, so the driver
/// and options are the same everywhere.
pub fn mount(sv: &SharedVolume, target: &str) -> Mount {
    let spec = &sv.spec;
    let read_only = Some(spec.access_mode == AccessMode::ReadOnlyMany);
    if let Some(hp) = &spec.host_path {
        return Mount {
            target: Some(target.to_owned()),
            source: Some(hp.path.clone()),
            typ: Some(MountType::BIND),
            read_only,
            ..Default::default()
        };
    }
    let (driver, options) = driver_config(spec);
    Mount {
        target: Some(target.to_owned()),
        source: Some(volume_name(sv)),
        typ: Some(MountType::VOLUME),
        read_only,
        volume_options: Some(MountVolumeOptions {
            driver_config: Some(MountVolumeOptionsDriverConfig {
                name: Some(driver),
                options: Some(options),
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

/// The volume driver and its options (not for host paths).
pub fn driver_config(spec: &SharedVolumeSpec) -> (String, HashMap<String, String>) {
    if let Some(nfs) = &spec.nfs {
        let mut o = vec![
            format!("addr={}", nfs.server),
            format!("nfsvers={}", nfs.version),
        ];
        o.extend(nfs.options.iter().cloned());
        if spec.access_mode == AccessMode::ReadOnlyMany {
            o.push("ro".into());
        }
        return (
            "local".into(),
            HashMap::from([
                ("type".to_owned(), "nfs".to_owned()),
                ("o".to_owned(), o.join(",")),
                ("device".to_owned(), format!(":{}", nfs.path)),
            ]),
        );
    }
    match &spec.driver {
        Some(d) => (d.name.clone(), d.options.clone().into_iter().collect()),
        None => ("local".into(), HashMap::new()),
    }
}

/// Swarm placement constraints for the volume's nodes.
pub fn constraints(spec: &SharedVolumeSpec) -> Vec<String> {
    let mut c: Vec<String> = spec
        .nodes
        .selector
        .iter()
        .map(|(k, v)| format!("node.labels.{k}=={v}"))
        .collect();
    c.extend(spec.nodes.constraints.iter().cloned());
    c
}

/// The probe: a global service whose task on each eligible node mounts the
/// volume and stays up while the mount works.
pub fn render(sv: &SharedVolume, probe_image: &str) -> Vec<DesiredService> {
    let name = probe_name(sv);
    let spec = ServiceSpec {
        name: Some(name),
        labels: Some(HashMap::from([("io.haswarm.role".to_owned(), "probe".to_owned())])),
        mode: Some(ServiceSpecMode {
            global: Some(Default::default()),
            ..Default::default()
        }),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(probe_image.to_owned()),
                command: Some(vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    format!("test -d {PROBE_MOUNT} && ls {PROBE_MOUNT} >/dev/null && echo mounted && exec sleep 2147483647"),
                ]),
                mounts: Some(vec![mount(sv, PROBE_MOUNT)]),
                // The probe holds nothing; it should not keep a node busy on shutdown.
                stop_grace_period: Some(1_000_000_000),
                ..Default::default()
            }),
            placement: Some(TaskSpecPlacement {
                constraints: Some(constraints(&sv.spec)),
                ..Default::default()
            }),
            resources: Some(TaskSpecResources {
                limits: Some(Limit {
                    nano_cpus: Some(50_000_000),
                    memory_bytes: Some(16 << 20),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            // A failing mount is retried, but slowly: every retry is a mount attempt on the node.
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(10_000_000_000),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    vec![DesiredService { spec }]
}

/// Whether a node can take the volume (see [`crate::reconcilers::common::node_matches`]).
pub fn eligible(spec: &SharedVolumeSpec, node: &NodeInfo) -> bool {
    crate::reconcilers::common::node_matches(&constraints(spec), node)
}

/// Per-node mount results from the probe's tasks: the newest task on each
/// eligible, ready node decides.
pub fn node_status(
    spec: &SharedVolumeSpec,
    nodes: &[NodeInfo],
    tasks: &[Task],
) -> Vec<NodeMountStatus> {
    let mut out: Vec<NodeMountStatus> = nodes
        .iter()
        .filter(|n| n.ready && eligible(spec, n))
        .map(|n| {
            let newest = tasks
                .iter()
                .filter(|t| t.node_id.as_deref() == Some(n.id.as_str()))
                .max_by_key(|t| {
                    t.status
                        .as_ref()
                        .and_then(|s| s.timestamp.as_ref())
                        .map(ToString::to_string)
                        .or_else(|| t.updated_at.as_ref().map(ToString::to_string))
                });
            let (mounted, message) = match newest.and_then(|t| t.status.as_ref()) {
                None => (false, "no probe task on this node yet".to_owned()),
                Some(s) => match s.state {
                    Some(TaskState::RUNNING) => (true, String::new()),
                    Some(state @ (TaskState::FAILED | TaskState::REJECTED)) => {
                        let why = s
                            .err
                            .clone()
                            .or_else(|| s.message.clone())
                            .unwrap_or_default();
                        (false, format!("mount failed ({state}): {why}"))
                    }
                    Some(state) => (false, format!("probe task is {state}")),
                    None => (false, "probe task state unknown".to_owned()),
                },
            };
            NodeMountStatus {
                node: n.hostname.clone(),
                mounted,
                message,
            }
        })
        .collect();
    out.sort_by(|a, b| a.node.cmp(&b.node));
    out
}

#[cfg(test)]
mod tests {
    use bollard::models::TaskStatus;
    use haswarm_crds::manifest::{parse, Limits};
    use haswarm_crds::AnyResource;

    use super::*;

    fn sv(spec: &str) -> SharedVolume {
        let text = format!("apiVersion: haswarm.io/v1alpha1\nkind: SharedVolume\nmetadata:\n  name: files\nspec:\n{spec}");
        let docs = parse("t.yaml", &text, &Limits::default()).expect("valid");
        match docs.into_iter().next().map(|d| d.resource) {
            Some(AnyResource::SharedVolume(sv)) => *sv,
            other => panic!("not a SharedVolume: {other:?}"),
        }
    }

    #[test]
    fn nfs_renders_the_local_driver_options() {
        let v = sv("  nfs:\n    server: 10.0.0.5\n    path: /exports/dify\n    version: \"4.1\"\n    options: [hard, timeo=600]\n");
        let (driver, opts) = driver_config(&v.spec);
        assert_eq!(driver, "local");
        assert_eq!(opts.get("type").map(String::as_str), Some("nfs"));
        assert_eq!(
            opts.get("o").map(String::as_str),
            Some("addr=10.0.0.5,nfsvers=4.1,hard,timeo=600")
        );
        assert_eq!(
            opts.get("device").map(String::as_str),
            Some(":/exports/dify")
        );
        let m = mount(&v, "/data");
        assert_eq!(m.typ, Some(MountType::VOLUME));
        assert_eq!(m.source.as_deref(), Some("files"));
        assert_eq!(m.read_only, Some(false));
    }

    #[test]
    fn read_only_volumes_mount_read_only() {
        let v = sv("  nfs:\n    server: nfs.example\n    path: /x\n  accessMode: ReadOnlyMany\n");
        assert!(driver_config(&v.spec).1["o"].ends_with(",ro"));
        assert_eq!(mount(&v, "/d").read_only, Some(true));
    }

    #[test]
    fn host_paths_are_bind_mounts() {
        let v = sv("  hostPath:\n    path: /mnt/shared/files\n");
        let m = mount(&v, "/data");
        assert_eq!(m.typ, Some(MountType::BIND));
        assert_eq!(m.source.as_deref(), Some("/mnt/shared/files"));
        assert!(m.volume_options.is_none());
    }

    #[test]
    fn plugin_drivers_pass_their_options() {
        let v = sv("  driver:\n    name: rexray/efs\n    options: {volumetype: gp2}\n");
        let (driver, opts) = driver_config(&v.spec);
        assert_eq!(driver, "rexray/efs");
        assert_eq!(opts.get("volumetype").map(String::as_str), Some("gp2"));
    }

    #[test]
    fn the_probe_is_global_and_constrained() {
        let v = sv("  hostPath:\n    path: /mnt/x\n  nodes:\n    selector: {storage: shared}\n    constraints: [\"node.role==worker\"]\n");
        let desired = render(&v, "haswarm/probe:1");
        assert_eq!(desired.len(), 1);
        let s = &desired[0].spec;
        assert_eq!(s.name.as_deref(), Some("files-probe"));
        assert!(s.mode.as_ref().and_then(|m| m.global.as_ref()).is_some());
        let t = s.task_template.as_ref().expect("template");
        assert_eq!(
            t.placement.as_ref().and_then(|p| p.constraints.clone()),
            Some(vec![
                "node.labels.storage==shared".to_owned(),
                "node.role==worker".to_owned()
            ])
        );
        assert_eq!(
            t.container_spec.as_ref().and_then(|c| c.image.as_deref()),
            Some("haswarm/probe:1")
        );
    }

    fn node(id: &str, host: &str, role: &str, labels: &[(&str, &str)], ready: bool) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            hostname: host.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            ready,
            down_since: None,
            drained: false,
            leaving: false,
            role: role.into(),
        }
    }

    fn task(node: &str, state: TaskState, err: Option<&str>, ts: &str) -> Task {
        Task {
            node_id: Some(node.into()),
            status: Some(TaskStatus {
                state: Some(state),
                err: err.map(str::to_owned),
                timestamp: Some(ts.parse().expect("timestamp")),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn per_node_status_names_the_failing_node() {
        let v = sv(
            "  hostPath:\n    path: /mnt/x\n  nodes:\n    constraints: [\"node.role==worker\"]\n",
        );
        let nodes = [
            node("n1", "node-1", "worker", &[], true),
            node("n2", "node-2", "worker", &[], true),
            node("n3", "node-3", "worker", &[], true),
            node("m1", "manager-1", "manager", &[], true),
            node("n4", "node-4", "worker", &[], false),
        ];
        let tasks = [
            task("n1", TaskState::FAILED, Some("old failure"), "2026-01-01T00:00:00Z"),
            task("n1", TaskState::RUNNING, None, "2026-01-01T00:01:00Z"),
            task("n2", TaskState::REJECTED, Some("invalid mount config for type \"bind\": bind source path does not exist: /mnt/x"), "2026-01-01T00:01:00Z"),
        ];
        let st = node_status(&v.spec, &nodes, &tasks);
        assert_eq!(
            st.iter().map(|s| s.node.as_str()).collect::<Vec<_>>(),
            ["node-1", "node-2", "node-3"]
        );
        assert!(st[0].mounted, "the newest task decides");
        assert!(!st[1].mounted);
        assert!(
            st[1].message.contains("bind source path does not exist"),
            "{}",
            st[1].message
        );
        assert!(!st[2].mounted);
        assert_eq!(st[2].message, "no probe task on this node yet");
    }
}
