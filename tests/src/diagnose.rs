//! What a failing test prints of the Swarm it ran on: every haswarm
//! service's tasks and last lines, and the Redis and PostgreSQL role changes
//! merged in time order.

use std::process::Command;

/// What Swarm says of every haswarm-owned service on an engine: each task
/// meant to run or lately ended, and on the local engine the last lines of
/// each service's newest container. A failed wait names a member "not
/// running"; this says whether Swarm had no task, a pending one, or one
/// that kept failing its health check, and why.
pub(crate) fn swarm_state(docker_host: Option<&str>) -> String {
    let run = |args: &[&str]| {
        let mut c = Command::new("timeout");
        c.arg("30").arg("docker").args(args);
        if let Some(h) = docker_host {
            c.env("DOCKER_HOST", h);
        }
        c.output().map_or_else(
            |e| format!("docker {args:?}: {e}\n"),
            |o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            },
        )
    };
    let services = run(&[
        "service",
        "ls",
        "--filter",
        "label=io.haswarm.owner",
        "--format",
        "{{.Name}}",
    ]);
    let names: Vec<&str> = services.lines().filter(|l| !l.is_empty()).collect();
    let mut out = run(&["node", "ls"]);
    if names.is_empty() {
        out.push_str("(no haswarm-owned service)\n");
        return out;
    }
    let mut ps = vec![
        "service",
        "ps",
        "--no-trunc",
        "--format",
        "{{.Name}}\t{{.Node}}\tdesired {{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}",
    ];
    ps.extend(&names);
    out.push_str(&run(&ps));
    out.push_str(&redis_timeline(&names, &run));
    out.push_str(&postgres_timeline(&names, &run));
    if docker_host.is_none() {
        for name in &names {
            let filter = format!("label=com.docker.swarm.service.name={name}");
            let newest = run(&["ps", "-aq", "-n", "1", "--filter", &filter]);
            if let Some(id) = newest.lines().next().filter(|l| !l.is_empty()) {
                out.push_str(&format!("-- {name}: last lines of container {id}\n"));
                out.push_str(&run(&["logs", "--tail", "8", id]));
            }
        }
    }
    out
}

/// The Redis role changes of every group on the engine, merged in time
/// order: the sentinels' verdicts (`+sdown`, `+switch-master`, TILT...) and
/// what each instance's start script and replication said. A lost write or
/// a second master is read from this, whichever node the tasks ran on.
fn redis_timeline(names: &[&str], run: &dyn Fn(&[&str]) -> String) -> String {
    const SAID: [&str; 9] = [
        " # ",
        "haswarm:",
        "MASTER MODE",
        "Connecting to MASTER",
        "MASTER <-> REPLICA sync: Finished",
        "Discarding previously cached master state",
        "REPLICAOF",
        "CONFIG REWRITE",
        "Setting secondary replication ID",
    ];
    let mut lines: Vec<String> = Vec::new();
    for name in names {
        if !name.contains("-redis-") && !name.contains("-sentinel-") {
            continue;
        }
        let logs = run(&["service", "logs", "--timestamps", "--no-trunc", name]);
        lines.extend(
            logs.lines()
                .filter(|l| SAID.iter().any(|s| l.contains(s)))
                .map(|l| {
                    // "TIME SERVICE.1.TASK@NODE | TEXT": time first sorts.
                    let l = l.replacen(" | ", " ", 1);
                    l.chars().take(240).collect()
                }),
        );
    }
    merged(lines, 80, "Redis roles", "every instance and sentinel")
}

/// The last `keep` of `lines` in time order, under a heading naming `what`
/// and from `whom`; nothing when there are none.
fn merged(mut lines: Vec<String>, keep: usize, what: &str, whom: &str) -> String {
    if lines.is_empty() {
        return String::new();
    }
    lines.sort();
    let tail = &lines[lines.len().saturating_sub(keep)..];
    format!(
        "-- {what}, last {} lines of {whom} --\n{}\n",
        tail.len(),
        tail.join("\n")
    )
}

/// What every Postgres instance's Patroni and PostgreSQL said about roles,
/// timelines and replication, merged in time order (a member's repeated
/// lines once each): which member was promoted when, which one was rewound
/// or could not follow, and why.
fn postgres_timeline(names: &[&str], run: &dyn Fn(&[&str]) -> String) -> String {
    const SAID: [&str; 16] = [
        "promoted",
        "acquired session lock",
        "demot",
        "pg_rewind",
        "Local timeline",
        "primary_timeline",
        "reinitializ",
        "bootstrap",
        "FATAL",
        "ERROR",
        "started streaming",
        "timeline",
        "incorrect prev-link",
        "waiting for WAL",
        "following a new leader",
        "haswarm:",
    ];
    let mut lines: Vec<String> = Vec::new();
    for name in names.iter().filter(|n| n.contains("-pg-")) {
        let logs = run(&["service", "logs", "--timestamps", "--no-trunc", name]);
        let mut last = String::new();
        let mut mine: Vec<String> = Vec::new();
        for l in logs.lines().filter(|l| SAID.iter().any(|s| l.contains(s))) {
            // "TIME SERVICE.1.TASK@NODE | TEXT": time first sorts; the text
            // without PostgreSQL's own time tells repeats.
            let text = l.split_once(" | ").map_or(l, |(_, t)| t);
            let said: String = text.chars().skip(24).collect();
            if said == last {
                continue;
            }
            last = said;
            mine.push(l.replacen(" | ", " ", 1).chars().take(240).collect());
        }
        lines.extend(mine.into_iter().rev().take(30));
    }
    merged(lines, 100, "Postgres roles and timelines", "every instance")
}
