//! `haswarmctl install`, `uninstall` and `healthcheck`: haswarmd itself as a
//! Swarm stack, from the chart-like bundle in `helm-like-manifests/haswarm`
//! (built into this binary; `--chart DIR` reads another copy).
//!
//! Rendering is pure: values are the chart's defaults, then each `--values`
//! file, then each `--set`, every key checked against the defaults; the
//! stack file is the template rendered with them. Deploying and removing go
//! through `docker stack deploy|rm`, so the stack is an ordinary one that
//! `docker stack ps` shows.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Map, Value};

use haswarm_controller::client::{Client, Endpoint};

use super::store_key::{StoreKey, STORE_ID_LABEL};
use super::Conn;
use crate::cli::{HealthcheckArgs, InstallArgs, UninstallArgs};
use crate::exit::ExitCode;
use crate::report;

const CHART: &str = include_str!("../../../helm-like-manifests/haswarm/Chart.yaml");
const VALUES: &str = include_str!("../../../helm-like-manifests/haswarm/values.yaml");
const TEMPLATE: &str = include_str!("../../../helm-like-manifests/haswarm/templates/stack.yaml");

/// A chart: its metadata, default values and stack template.
#[derive(Debug)]
pub struct Chart {
    meta: String,
    values: String,
    template: String,
}

impl Chart {
    /// The chart built into haswarmctl.
    pub fn builtin() -> Self {
        Self {
            meta: CHART.to_owned(),
            values: VALUES.to_owned(),
            template: TEMPLATE.to_owned(),
        }
    }

    /// A chart folder (`Chart.yaml`, `values.yaml`, `templates/stack.yaml`).
    fn read(dir: &Path) -> Result<Self, String> {
        let read = |p: &str| {
            std::fs::read_to_string(dir.join(p))
                .map_err(|e| format!("{}: {e}", dir.join(p).display()))
        };
        Ok(Self {
            meta: read("Chart.yaml")?,
            values: read("values.yaml")?,
            template: read("templates/stack.yaml")?,
        })
    }
}

fn yaml(text: &str, origin: &str) -> Result<Value, String> {
    serde_saphyr::from_str::<Value>(text).map_err(|e| format!("{origin}: {e}"))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// Sets `value` at `path` in `into`, where the defaults already have that
/// key with a value of the same kind (numbers and booleans given for a text
/// value become text: `--set resources.limits.cpus=2`).
fn set(into: &mut Value, path: &[&str], value: Value, origin: &str) -> Result<(), String> {
    let dotted = path.join(".");
    // A map given for a map sets each of its keys, each checked on its own.
    if let Value::Object(m) = value {
        if lookup(into, path, origin)?.is_object() {
            for (k, v) in m {
                let mut sub: Vec<&str> = path.to_vec();
                sub.push(&k);
                set(into, &sub, v, origin)?;
            }
            return Ok(());
        }
        return set_leaf(into, path, Value::Object(m), origin, &dotted);
    }
    set_leaf(into, path, value, origin, &dotted)
}

/// The default at `path`, or which key is unknown.
fn lookup<'a>(root: &'a Value, path: &[&str], origin: &str) -> Result<&'a Value, String> {
    let mut at = root;
    for (i, key) in path.iter().enumerate() {
        let Value::Object(map) = at else {
            return Err(format!(
                "{origin}: {}: {} is not a map of values",
                path.join("."),
                path[..i].join(".")
            ));
        };
        at = map.get(*key).ok_or_else(|| {
            let known: Vec<&str> = map.keys().map(String::as_str).collect();
            format!(
                "{origin}: unknown value {} (known at this level: {})",
                path.join("."),
                known.join(", ")
            )
        })?;
    }
    Ok(at)
}

fn set_leaf(
    into: &mut Value,
    path: &[&str],
    value: Value,
    origin: &str,
    dotted: &str,
) -> Result<(), String> {
    let old = lookup(into, path, origin)?;
    let value = match (old, value) {
        (Value::String(_), Value::Number(n)) => Value::String(n.to_string()),
        (Value::String(_), Value::Bool(b)) => Value::String(b.to_string()),
        (old, new) if std::mem::discriminant(old) == std::mem::discriminant(&new) => new,
        (old, new) => {
            return Err(format!(
                "{origin}: {dotted} must be {}, not {}",
                kind(old),
                kind(&new)
            ))
        }
    };
    let slot = path
        .iter()
        .try_fold(into, |at, k| at.get_mut(*k))
        .ok_or_else(|| format!("{origin}: {dotted}"))?;
    *slot = value;
    Ok(())
}

/// The chart's defaults, then each values file (name and text), then each
/// `key.sub=value` (the value read as YAML: `true`, `3`, `[a, b]`, text).
///
/// # Errors
/// A message naming the file or `--set` and the key.
pub fn values(chart: &Chart, files: &[(String, String)], sets: &[String]) -> Result<Value, String> {
    let mut v = yaml(&chart.values, "values.yaml")?;
    if !v.is_object() {
        return Err("values.yaml: not a map of values".into());
    }
    for (name, text) in files {
        let given = yaml(text, name)?;
        match given {
            Value::Object(m) => {
                for (k, value) in m {
                    set(&mut v, &[k.as_str()], value, name)?;
                }
            }
            Value::Null => {}
            other => {
                return Err(format!(
                    "{name}: a values file is a map, not {}",
                    kind(&other)
                ))
            }
        }
    }
    for s in sets {
        let origin = format!("--set {s}");
        let (key, raw) = s
            .split_once('=')
            .ok_or_else(|| format!("{origin}: expected key=value"))?;
        let path: Vec<&str> = key.split('.').collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(format!("{origin}: empty key segment"));
        }
        let value = if raw.is_empty() {
            Value::String(String::new())
        } else {
            serde_saphyr::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
        };
        set(&mut v, &path, value, &origin)?;
    }
    check(&v)?;
    Ok(v)
}

/// Rules the template relies on.
fn check(v: &Value) -> Result<(), String> {
    let text = |key: &str| {
        key.split('.')
            .try_fold(v, |at, k| at.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    if text("image").is_empty() {
        return Err("image: must name an image".into());
    }
    for key in ["socketDir", "dockerSocket"] {
        if !text(key).starts_with('/') {
            return Err(format!(
                "{key}: must be an absolute path on the manager node"
            ));
        }
    }
    if !matches!(text("log.format").as_str(), "text" | "json") {
        return Err("log.format: must be text or json".into());
    }
    Ok(())
}

/// Checks a release (stack) name: Docker's rules for stack namespaces.
fn release_ok(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--name {name:?}: a stack name is lowercase letters, digits, - and _, starting with a letter or digit, at most 63 characters"
        ))
    }
}

/// The stack file for `release` with `values`.
///
/// # Errors
/// A template error (an undefined value is one).
pub fn render(chart: &Chart, values: &Value, release: &str) -> Result<String, String> {
    release_ok(release)?;
    let meta = yaml(&chart.meta, "Chart.yaml")?;
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_template("stack.yaml", &chart.template)
        .map_err(|e| format!("templates/stack.yaml: {e}"))?;
    let mut ctx: Map<String, Value> = values.as_object().cloned().unwrap_or_default();
    ctx.insert("chart".into(), meta);
    ctx.insert("release".into(), Value::String(release.to_owned()));
    let tmpl = env
        .get_template("stack.yaml")
        .map_err(|e| format!("templates/stack.yaml: {e}"))?;
    let mut out = tmpl
        .render(Value::Object(ctx))
        .map_err(|e| format!("templates/stack.yaml: {e}"))?;
    out.push('\n');
    // What is rendered must be YAML: a broken template is caught here, not by Docker.
    yaml(&out, "rendered stack")?;
    Ok(out)
}

fn chart_of(args: &InstallArgs) -> Result<Chart, String> {
    match &args.chart {
        Some(dir) => Chart::read(dir),
        None => Ok(Chart::builtin()),
    }
}

fn docker(args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    let mut child = Command::new("docker")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()
        .map_err(|e| {
            format!("cannot run the docker CLI ({e}): it is needed to deploy and remove stacks")
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
    }
    let status = child
        .wait()
        .map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("docker {} failed ({status})", args.join(" ")))
    }
}

/// With the mirror on, fills in `mirror.keySecret` (default
/// `<release>-mirror-key`) and `mirror.storeId` (from the key secret's
/// label, else an installed haswarmd's id, else a new one). Returns the
/// secret and whether it must be made.
fn store_key(v: &mut Value, release: &str) -> Result<Option<(String, StoreKey)>, String> {
    if v["mirror"]["enabled"] != Value::Bool(true) {
        return Ok(None);
    }
    release_ok(release)?;
    let secret = match v["mirror"]["keySecret"].as_str() {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ => format!("{release}-mirror-key"),
    };
    let socket_dir = v["socketDir"].as_str().unwrap_or("/run/haswarm");
    let found = super::store_key::resolve(&secret, &Path::new(socket_dir).join("haswarm.sock"))?;
    let key = match (v["mirror"]["storeId"].as_str(), found) {
        (Some(given), StoreKey::ToCreate(_)) if !given.is_empty() => {
            StoreKey::ToCreate(given.to_owned())
        }
        (Some(given), StoreKey::Existing(id)) if !given.is_empty() && given != id => {
            return Err(format!(
                "mirror.storeId is {given}, but the key secret {secret} belongs to store {id}"
            ))
        }
        (_, found) => found,
    };
    v["mirror"]["keySecret"] = Value::String(secret.clone());
    v["mirror"]["storeId"] = Value::String(key.id().to_owned());
    Ok(Some((secret, key)))
}

/// `haswarmctl install`.
pub fn run_install(args: &InstallArgs) -> ExitCode {
    let rendered = chart_of(args).and_then(|chart| {
        let mut files = Vec::new();
        for f in &args.values {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            files.push((f.display().to_string(), text));
        }
        let mut v = values(&chart, &files, &args.set)?;
        let key = store_key(&mut v, &args.name)?;
        let stack = render(&chart, &v, &args.name)?;
        Ok((v, stack, key))
    });
    let (v, stack, key) = match rendered {
        Ok(r) => r,
        Err(e) => {
            report::error(&e);
            return ExitCode::Invalid;
        }
    };
    if !args.apply {
        if let Some((secret, StoreKey::ToCreate(id))) = &key {
            println!(
                "# The mirror's key secret {secret} does not exist yet: `install --apply` makes it, or
#   openssl rand -hex 32 | docker secret create --label {STORE_ID_LABEL}={id} {secret} -"
            );
        }
        print!("{stack}");
        return ExitCode::Success;
    }
    if let Some((secret, StoreKey::ToCreate(id))) = &key {
        if let Err(e) = super::store_key::create(secret, id) {
            report::error(&e);
            return ExitCode::Refused;
        }
        println!("made the mirror's key secret {secret} for store {id}");
    }
    let limit = if args.wait {
        match super::timeout(&args.timeout) {
            Ok(l) => Some(l),
            Err(code) => return code,
        }
    } else {
        None
    };
    let socket_dir = v["socketDir"].as_str().unwrap_or("/run/haswarm");
    if let Err(e) = std::fs::create_dir_all(socket_dir) {
        report::error(&format!(
            "cannot create {socket_dir} (the folder the API socket appears in): {e}"
        ));
        return ExitCode::Refused;
    }
    // Local images only: never ask a registry for a digest.
    match docker(
        &[
            "stack",
            "deploy",
            "--resolve-image",
            "never",
            "--compose-file",
            "-",
            &args.name,
        ],
        Some(&stack),
    ) {
        Ok(()) => {
            println!(
                "installed stack {name}: haswarmd answers on unix://{socket_dir}/haswarm.sock once its task runs\n  haswarmctl --server unix://{socket_dir}/haswarm.sock get pgc\n  docker stack ps {name}",
                name = args.name
            );
            match limit {
                Some(limit) => super::online(|| {
                    wait_ready(
                        Path::new(socket_dir).join("haswarm.sock"),
                        &args.name,
                        limit,
                    )
                }),
                None => ExitCode::Success,
            }
        }
        Err(e) => {
            report::error(&e);
            ExitCode::Refused
        }
    }
}

/// Waits until haswarmd answers `/readyz` with 200 on `socket`, saying so,
/// or says what it last answered once `limit` has passed.
async fn wait_ready(
    socket: std::path::PathBuf,
    stack: &str,
    limit: std::time::Duration,
) -> ExitCode {
    let client = Client::new(Endpoint::Unix(socket.clone()));
    let deadline = std::time::Instant::now() + limit;
    loop {
        let last = match client.probe("/readyz").await {
            Ok((200, _)) => {
                println!("haswarmd is ready on unix://{}", socket.display());
                return ExitCode::Success;
            }
            Ok((code, why)) => format!("not ready ({code}): {}", why.trim()),
            Err(e) => e.to_string(),
        };
        if std::time::Instant::now() >= deadline {
            report::error(&format!(
                "haswarmd was not ready within {limit:?}: {last}; see docker stack ps {stack} and docker service logs {stack}_haswarmd"
            ));
            return ExitCode::Unreachable;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// `haswarmctl uninstall`.
pub fn run_uninstall(args: &UninstallArgs) -> ExitCode {
    if let Err(e) = release_ok(&args.name) {
        report::error(&e);
        return ExitCode::Invalid;
    }
    // The volumes are read from the deployed services: the values used at
    // install are not kept anywhere.
    let volumes = match stack_volumes(&args.name) {
        Ok(v) => v,
        Err(e) => {
            report::error(&e);
            return ExitCode::Refused;
        }
    };
    let Some(volumes) = volumes else {
        report::error(&format!(
            "no stack {} on this Swarm (docker stack ls lists the stacks; --name picks one)",
            args.name
        ));
        return ExitCode::Refused;
    };
    match docker(&["stack", "rm", &args.name], None) {
        Ok(()) => {
            println!(
                "removed stack {}: the resources haswarm manages keep running",
                args.name
            );
            for v in &volumes {
                println!(
                    "kept volume {v} (the store: a new install with dataVolume={v} finds every resource again; `docker volume rm {v}` on its node erases it)"
                );
            }
            ExitCode::Success
        }
        Err(e) => {
            report::error(&e);
            ExitCode::Refused
        }
    }
}

/// The named volumes the services of stack `name` mount, or `None` when it
/// has no services.
fn stack_volumes(name: &str) -> Result<Option<Vec<String>>, String> {
    let ids = docker_output(&[
        "service",
        "ls",
        "-q",
        "--filter",
        &format!("label=com.docker.stack.namespace={name}"),
    ])?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(None);
    }
    let mut args = vec![
        "service",
        "inspect",
        "--format",
        "{{json .Spec.TaskTemplate.ContainerSpec.Mounts}}",
    ];
    args.extend(&ids);
    let out = docker_output(&args)?;
    Ok(Some(named_volumes(&out)))
}

/// Volume sources in `docker service inspect` output, one JSON list of
/// mounts a line.
fn named_volumes(inspected: &str) -> Vec<String> {
    let mut found = std::collections::BTreeSet::new();
    for line in inspected.lines() {
        let Ok(serde_json::Value::Array(mounts)) = serde_json::from_str(line) else {
            continue;
        };
        for m in mounts {
            if m["Type"] == "volume" {
                if let Some(source) = m["Source"].as_str().filter(|s| !s.is_empty()) {
                    found.insert(source.to_owned());
                }
            }
        }
    }
    found.into_iter().collect()
}

/// Runs the docker CLI and returns its standard output.
fn docker_output(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run the docker CLI ({e}): it is needed to remove stacks"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `haswarmctl healthcheck`: exit 0 when haswarmd is ready.
pub async fn run_healthcheck(conn: &Conn, args: &HealthcheckArgs) -> ExitCode {
    let limit = match super::timeout(&args.timeout) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let client = match conn.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Ok(answer) = tokio::time::timeout(limit, client.probe("/readyz")).await else {
        report::error(&format!("haswarmd did not answer within {limit:?}"));
        return ExitCode::Unreachable;
    };
    match answer {
        Ok((200, _)) => {
            println!("ok");
            ExitCode::Success
        }
        Ok((code, why)) => {
            report::error(&format!("not ready ({code}): {}", why.trim()));
            ExitCode::Invalid
        }
        Err(e) => {
            report::error(&e.to_string());
            ExitCode::Unreachable
        }
    }
}

#[cfg(test)]
mod tests;
