//! The stack file (compose format 3.8) equivalent to rendered resources:
//! what an operator would otherwise write by hand, printed by
//! `haswarmctl render`. Pure: the same renderers as the reconcilers, then a
//! translation of each service spec.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{MountType, ServiceSpec, TaskSpec, TaskSpecContainerSpec};
use haswarm_crds::{AnyResource, PostgresCluster, RedisSentinelGroup};
use serde_json::{json, Map, Value};

use super::contents::content_names;
use super::postgres::render as postgres;
use super::redis::render as redis;
use super::volume::render as volume;
use crate::swarm::DesiredService;

fn nanos_to_duration(n: i64) -> String {
    format!("{}s", n / 1_000_000_000)
}

/// One service in compose form.
fn service(spec: &ServiceSpec) -> Value {
    let task = spec.task_template.clone().unwrap_or_default();
    let c = task.container_spec.clone().unwrap_or_default();
    let mut s = container(&c);
    let networks: Vec<String> = task
        .networks
        .iter()
        .flatten()
        .filter_map(|n| n.target.clone())
        .collect();
    if !networks.is_empty() {
        s.insert("networks".into(), json!(networks));
    }
    s.insert("deploy".into(), deploy(spec, &task));
    strip_nulls(Value::Object(s))
}

/// The container's part of a compose service: image, command, mounts,
/// secrets, configs and health check.
fn container(c: &TaskSpecContainerSpec) -> Map<String, Value> {
    let mut s = Map::new();
    if let Some(i) = &c.image {
        s.insert("image".into(), json!(i));
    }
    if let Some(cmd) = &c.command {
        s.insert("command".into(), json!(cmd));
    }
    if let Some(h) = &c.hostname {
        s.insert("hostname".into(), json!(h));
    }
    if let Some(env) = c.env.as_ref().filter(|e| !e.is_empty()) {
        s.insert("environment".into(), json!(env));
    }
    // The fence's capability (docker stack deploy takes it from 20.10 on).
    if let Some(caps) = c.capability_add.as_ref().filter(|c| !c.is_empty()) {
        s.insert("cap_add".into(), json!(caps));
    }
    if c.init == Some(true) {
        s.insert("init".into(), json!(true));
    }
    let volumes: Vec<Value> = c
        .mounts
        .iter()
        .flatten()
        .map(|m| {
            json!({
                "type": if m.typ == Some(MountType::BIND) { "bind" } else { "volume" },
                "source": m.source,
                "target": m.target,
                "read_only": m.read_only.unwrap_or(false),
            })
        })
        .collect();
    if !volumes.is_empty() {
        s.insert("volumes".into(), json!(volumes));
    }
    let secrets: Vec<Value> = c
        .secrets
        .iter()
        .flatten()
        .map(|r| json!({"source": r.secret_name, "target": r.file.as_ref().and_then(|f| f.name.clone()), "mode": r.file.as_ref().and_then(|f| f.mode)}))
        .collect();
    if !secrets.is_empty() {
        s.insert("secrets".into(), json!(secrets));
    }
    let configs: Vec<Value> = c
        .configs
        .iter()
        .flatten()
        .map(|r| json!({"source": r.config_name, "target": r.file.as_ref().and_then(|f| f.name.clone()), "mode": r.file.as_ref().and_then(|f| f.mode)}))
        .collect();
    if !configs.is_empty() {
        s.insert("configs".into(), json!(configs));
    }
    if let Some(h) = &c.health_check {
        s.insert(
            "healthcheck".into(),
            json!({
                "test": h.test,
                "interval": h.interval.map(nanos_to_duration),
                "timeout": h.timeout.map(nanos_to_duration),
                "retries": h.retries,
            }),
        );
    }
    s
}

/// A compose service's `deploy` section: mode, endpoint, placement,
/// resources and restart policy.
fn deploy(spec: &ServiceSpec, task: &TaskSpec) -> Value {
    let mut deploy = Map::new();
    let mode = spec.mode.clone().unwrap_or_default();
    if mode.global.is_some() {
        deploy.insert("mode".into(), json!("global"));
    } else if let Some(r) = mode.replicated.and_then(|r| r.replicas) {
        deploy.insert("replicas".into(), json!(r));
    }
    if let Some(e) = spec.endpoint_spec.as_ref().and_then(|e| e.mode) {
        deploy.insert("endpoint_mode".into(), json!(e.to_string()));
    }
    if let Some(p) = &task.placement {
        let mut placement = Map::new();
        if let Some(c) = p.constraints.as_ref().filter(|c| !c.is_empty()) {
            placement.insert("constraints".into(), json!(c));
        }
        if let Some(m) = p.max_replicas {
            placement.insert("max_replicas_per_node".into(), json!(m));
        }
        if !placement.is_empty() {
            deploy.insert("placement".into(), Value::Object(placement));
        }
    }
    if let Some(r) = &task.resources {
        let mut res = Map::new();
        if let Some(l) = &r.limits {
            res.insert(
                "limits".into(),
                json!({"cpus": l.nano_cpus.map(|n| format!("{:.3}", n as f64 / 1e9)), "memory": l.memory_bytes}),
            );
        }
        if let Some(l) = &r.reservations {
            res.insert(
                "reservations".into(),
                json!({"cpus": l.nano_cpus.map(|n| format!("{:.3}", n as f64 / 1e9)), "memory": l.memory_bytes}),
            );
        }
        if !res.is_empty() {
            deploy.insert("resources".into(), Value::Object(res));
        }
    }
    if let Some(rp) = &task.restart_policy {
        deploy.insert(
            "restart_policy".into(),
            json!({"condition": rp.condition.map(|c| c.to_string()), "delay": rp.delay.map(nanos_to_duration)}),
        );
    }
    Value::Object(deploy)
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

/// The parts of a stack file as they are gathered, resource by resource.
#[derive(Default)]
struct Stack {
    services: BTreeMap<String, Value>,
    networks: BTreeMap<String, Value>,
    secrets: BTreeMap<String, Value>,
    configs: BTreeMap<String, Value>,
    volumes: BTreeMap<String, Value>,
    notes: Vec<String>,
}

impl Stack {
    /// Adds rendered services and the named volumes their mounts use.
    fn add(&mut self, list: Vec<DesiredService>) {
        for d in list {
            for m in d
                .spec
                .task_template
                .iter()
                .flat_map(|t| t.container_spec.iter())
                .flat_map(|c| c.mounts.iter().flatten())
            {
                if m.typ == Some(MountType::VOLUME) {
                    let driver = m
                        .volume_options
                        .as_ref()
                        .and_then(|o| o.driver_config.clone())
                        .unwrap_or_default();
                    self.volumes.insert(
                        m.source.clone().unwrap_or_default(),
                        strip_nulls(json!({"driver": driver.name, "driver_opts": driver.options})),
                    );
                }
            }
            self.services.insert(d.name().to_owned(), service(&d.spec));
        }
    }

    /// The group's overlay network, declared as haswarm creates it.
    fn network(&mut self, name: String) {
        self.networks
            .insert(name, json!({"driver": "overlay", "attachable": true}));
    }

    fn redis(&mut self, rsg: &RedisSentinelGroup) {
        let name = rsg.metadata.name.as_str();
        let contents = redis::contents(&rsg.spec, None);
        let names: HashMap<String, String> = redis::content_names(name, &contents);
        let secret = rsg
            .spec
            .password_secret
            .as_ref()
            .map_or_else(|| format!("{name}-password"), |s| s.name.clone());
        let services = redis::render(&redis::Inputs {
            rsg,
            password_secret: &secret,
            generated_password: None,
            extra_password_secret: None,
            config_names: &names,
            incarnations: &Default::default(),
        });
        self.network(redis::network_name(name));
        self.secrets
            .insert(secret.clone(), json!({"external": true}));
        for c in &contents {
            if let Some(n) = names.get(&c.purpose) {
                self.configs.insert(n.clone(), json!({"external": true}));
            }
        }
        self.notes.push(format!(
            "{name}: haswarm creates the secret {secret} (a generated password unless spec.passwordSecret names one) and the configs {}; their content is haswarm's (see `haswarmctl explain rsg`)",
            names.values().cloned().collect::<Vec<_>>().join(", ")
        ));
        self.notes.push(format!(
            "{name}: each instance and sentinel is pinned by a node label (docker node update --label-add <label>=true NODE), which haswarm sets for you"
        ));
        self.add(services);
    }

    fn postgres(&mut self, pgc: &PostgresCluster) {
        let name = pgc.metadata.name.as_str();
        let generated = HashMap::new();
        let contents = postgres::contents(pgc, &generated, pgc.spec.etcd.members);
        let names = content_names(name, &contents);
        let c = &pgc.spec.credentials;
        let pick = |user: Option<&haswarm_crds::common::SecretRef>, purpose: &str| {
            user.map_or_else(|| format!("{name}-{purpose}"), |r| r.name.clone())
        };
        let secret_names = postgres::PasswordSecrets {
            superuser: pick(c.superuser_secret.as_ref(), postgres::purpose::SUPERUSER),
            replication: pick(
                c.replication_secret.as_ref(),
                postgres::purpose::REPLICATION,
            ),
            api: pick(None, postgres::purpose::API),
            backup: None,
        };
        let services = postgres::render(&postgres::Inputs {
            pgc,
            generated: &generated,
            secrets: &secret_names,
            config_names: &names,
            etcd: &haswarm_crds::postgres::EtcdMembership::created(pgc.spec.etcd.members),
            incarnations: &Default::default(),
        });
        self.network(postgres::network_name(name));
        if pgc.spec.backup.is_some() {
            self.notes.push(format!(
                "{name}: spec.backup is not in this stack: archiving and backups need haswarm (a TLS identity it generates, and its backup jobs); without them PostgreSQL keeps WAL it cannot archive"
            ));
        }
        for s in [
            &secret_names.superuser,
            &secret_names.replication,
            &secret_names.api,
        ] {
            self.secrets.insert(s.clone(), json!({"external": true}));
        }
        for n in names.values() {
            self.configs.insert(n.clone(), json!({"external": true}));
        }
        self.notes.push(format!(
            "{name}: haswarm creates the secrets {}, {} and {} (generated passwords unless spec.credentials names them) and the configs {}; their content is haswarm's (see `haswarmctl explain pgc`)",
            secret_names.superuser,
            secret_names.replication,
            secret_names.api,
            names.values().cloned().collect::<Vec<_>>().join(", ")
        ));
        self.notes.push(format!(
            "{name}: the application user {} is created without a password: haswarm sets its password (secret {}, unless spec.credentials.appUserSecret names one) and creates spec.bootstrap.users with a one-shot job once the cluster runs; this stack alone does not",
            pgc.spec.bootstrap.owner,
            pick(c.app_user_secret.as_ref(), postgres::purpose::APP),
        ));
        self.notes.push(format!(
            "{name}: each instance and etcd member is pinned by a node label (docker node update --label-add <label>=true NODE), which haswarm sets for you"
        ));
        self.add(services);
    }

    /// The stack file, with only the top-level sections that have entries.
    fn into_value(self) -> (Value, Vec<String>) {
        let mut stack = Map::new();
        stack.insert("version".into(), json!("3.8"));
        stack.insert("services".into(), json!(self.services));
        for (k, v) in [
            ("networks", self.networks),
            ("volumes", self.volumes),
            ("secrets", self.secrets),
            ("configs", self.configs),
        ] {
            if !v.is_empty() {
                stack.insert(k.into(), json!(v));
            }
        }
        (Value::Object(stack), self.notes)
    }
}

/// The stack file for `resources`, and notes about what it cannot say (as
/// comment lines for the caller to print first).
pub fn render_stack(resources: &[&AnyResource]) -> (Value, Vec<String>) {
    let mut stack = Stack::default();
    for r in resources {
        match r {
            AnyResource::SharedVolume(sv) => stack.add(volume::render(sv, "haswarm/probe:latest")),
            AnyResource::GitSource(gs) => stack.notes.push(format!(
                "{}: a GitSource has no Swarm objects (haswarmd applies the manifests of {} itself)",
                gs.metadata.name, gs.spec.url
            )),
            AnyResource::RedisSentinelGroup(rsg) => stack.redis(rsg),
            AnyResource::PostgresCluster(pgc) => stack.postgres(pgc),
        }
    }
    stack.into_value()
}

#[cfg(test)]
mod tests {
    use haswarm_crds::manifest::{parse, Limits};

    use super::*;

    #[test]
    fn a_redis_group_renders_as_a_stack_without_its_password() {
        let text = "apiVersion: haswarm.io/v1alpha1\nkind: RedisSentinelGroup\nmetadata:\n  name: cache\nspec:\n  masterGroupName: dify-master-group\n---\napiVersion: haswarm.io/v1alpha1\nkind: SharedVolume\nmetadata:\n  name: files\nspec:\n  nfs: {server: 10.0.0.5, path: /exports/files}\n";
        let docs = parse("t.yaml", text, &Limits::default()).expect("valid");
        let resources: Vec<&AnyResource> = docs.iter().map(|d| &d.resource).collect();
        let (stack, notes) = render_stack(&resources);
        let services = stack["services"].as_object().expect("services");
        assert!(
            services.contains_key("cache-redis-0") && services.contains_key("cache-sentinel-2")
        );
        assert!(services.contains_key("files-probe"));
        assert_eq!(
            stack["services"]["cache-redis-0"]["deploy"]["endpoint_mode"],
            "dnsrr"
        );
        assert_eq!(
            stack["services"]["cache-redis-0"]["networks"],
            json!(["cache-net"])
        );
        assert_eq!(stack["services"]["files-probe"]["deploy"]["mode"], "global");
        // The fence needs its capability; sentinels run unfenced.
        assert_eq!(
            stack["services"]["cache-redis-0"]["cap_add"],
            json!(["CAP_NET_ADMIN"])
        );
        assert!(stack["services"]["cache-sentinel-0"]
            .get("cap_add")
            .is_none());
        assert!(stack["configs"]
            .as_object()
            .is_some_and(|c| c.keys().any(|k| k.contains("fence"))));
        assert_eq!(
            stack["secrets"]["cache-password"],
            json!({"external": true})
        );
        assert_eq!(stack["volumes"]["files"]["driver_opts"]["type"], "nfs");
        assert_eq!(stack["networks"]["cache-net"]["attachable"], true);
        assert_eq!(notes.len(), 2);
    }

    #[test]
    fn a_postgres_cluster_renders_as_a_stack_with_external_password_secrets() {
        let text = "apiVersion: haswarm.io/v1alpha1\nkind: PostgresCluster\nmetadata:\n  name: db\nspec:\n  instances: 2\n";
        let docs = parse("t.yaml", text, &Limits::default()).expect("valid");
        let resources: Vec<&AnyResource> = docs.iter().map(|d| &d.resource).collect();
        let (stack, notes) = render_stack(&resources);
        let services = stack["services"].as_object().expect("services");
        for s in ["db-pg-0", "db-pg-1", "db-etcd-2", "db-rw", "db-ro"] {
            assert!(services.contains_key(s), "{s}");
        }
        for s in [
            "db-superuser-password",
            "db-replication-password",
            "db-api-password",
        ] {
            assert_eq!(stack["secrets"][s], json!({"external": true}), "{s}");
        }
        assert_eq!(stack["services"]["db-rw"]["deploy"]["replicas"], 2);
        // The app user's password is set by a job, which a stack lacks.
        assert_eq!(notes.len(), 3);
        assert!(notes[1].contains("db-app-password"), "{}", notes[1]);
    }
}
