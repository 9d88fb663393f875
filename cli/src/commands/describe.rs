//! `haswarmctl describe`: an object's status, conditions and members as text,
//! followed by its events.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{failed, kind, Conn};
use crate::cli::DescribeArgs;
use crate::exit::ExitCode;
use crate::output;

fn pairs(v: Option<&Value>) -> String {
    match v.and_then(Value::as_object) {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n              "),
        _ => "<none>".into(),
    }
}

fn indented(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}\n")).collect()
}

/// A string field of a status entry, empty when absent.
fn field(entry: &Value, key: &str) -> String {
    entry
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// A titled table, indented under its title.
fn table_section(title: &str, headers: &[&str], rows: &[Vec<String>]) -> String {
    format!("{title}\n{}", indented(&output::table(headers, rows), "  "))
}

/// The describe text of one object and its events.
pub(crate) fn render(kind_name: &str, obj: &Value, events: &[haswarm_crds::Event]) -> String {
    let now = Utc::now();
    let status = obj.get("status").unwrap_or(&Value::Null);
    [
        metadata(kind_name, obj, now),
        spec(obj),
        other_status(status),
        members(status),
        inventory(status),
        conditions(status, now),
        owned_objects(status),
        recent_events(events, now),
    ]
    .concat()
}

/// Name, kind, labels, annotations, identity, generations and age.
fn metadata(kind_name: &str, obj: &Value, now: DateTime<Utc>) -> String {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("<none>")
            .to_owned()
    };
    let n = |p: &str| {
        obj.pointer(p)
            .map_or_else(|| "<none>".to_owned(), ToString::to_string)
    };
    let created = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str);
    let mut out = format!("Name:         {}\n", s("/metadata/name"));
    out.push_str(&format!("Kind:         {kind_name}\n"));
    out.push_str(&format!(
        "Labels:       {}\n",
        pairs(obj.pointer("/metadata/labels"))
    ));
    out.push_str(&format!(
        "Annotations:  {}\n",
        pairs(obj.pointer("/metadata/annotations"))
    ));
    out.push_str(&format!("UID:          {}\n", s("/metadata/uid")));
    out.push_str(&format!(
        "Generation:   {} (status describes {})\n",
        n("/metadata/generation"),
        n("/status/observedGeneration")
    ));
    out.push_str(&format!(
        "Created:      {} ({} ago)\n",
        created.unwrap_or("<unknown>"),
        output::age(created, now)
    ));
    out.push_str(&deletion(obj));
    out
}

/// While finalizers hold a deleted object: since when, and which ones.
fn deletion(obj: &Value) -> String {
    let Some(d) = obj
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
    else {
        return String::new();
    };
    let fin: Vec<&str> = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    format!("Deleting:     since {d}; waiting for: {}\n", fin.join(", "))
}

fn spec(obj: &Value) -> String {
    format!(
        "Spec:\n{}",
        indented(&output::yaml(obj.get("spec").unwrap_or(&Value::Null)), "  ")
    )
}

/// The status fields without a section of their own, as YAML.
fn other_status(status: &Value) -> String {
    let mut extra = status.clone();
    if let Some(m) = extra.as_object_mut() {
        // With serde_json's preserve_order, `remove` swaps the last key into
        // the hole: the order of these removals decides the order the rest
        // print in, so keep it.
        for k in [
            "conditions",
            "ownedObjects",
            "observedGeneration",
            "members",
            "inventory",
        ] {
            m.remove(k);
        }
    }
    if extra.as_object().is_some_and(|m| !m.is_empty()) {
        format!("Status:\n{}", indented(&output::yaml(&extra), "  "))
    } else {
        String::new()
    }
}

/// PostgresCluster members, as `patronictl list` shows them.
fn members(status: &Value) -> String {
    let Some(members) = status.get("members").and_then(Value::as_array) else {
        return String::new();
    };
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            let text = |k: &str| {
                m.get(k).map_or_else(String::new, |v| match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                })
            };
            vec![
                text("name"),
                text("role"),
                text("state"),
                text("timeline"),
                m.get("lagBytes")
                    .map_or_else(|| "-".to_owned(), ToString::to_string),
                text("node"),
            ]
        })
        .collect();
    table_section(
        "Members:",
        &["MEMBER", "ROLE", "STATE", "TL", "LAG (BYTES)", "NODE"],
        &rows,
    )
}

/// GitSource inventory: what it applied, from which file, and its health.
fn inventory(status: &Value) -> String {
    let Some(inventory) = status.get("inventory").and_then(Value::as_array) else {
        return String::new();
    };
    let rows: Vec<Vec<String>> = inventory
        .iter()
        .map(|e| {
            let ready = match e.get("ready").and_then(Value::as_bool) {
                Some(true) => "True",
                Some(false) => "False",
                None => "-",
            };
            vec![
                format!("{}/{}", field(e, "kind"), field(e, "name")),
                ready.to_owned(),
                field(e, "file"),
            ]
        })
        .collect();
    table_section("Inventory:", &["RESOURCE", "READY", "FILE"], &rows)
}

fn conditions(status: &Value, now: DateTime<Utc>) -> String {
    let conditions = status
        .get("conditions")
        .and_then(Value::as_array)
        .filter(|cs| !cs.is_empty());
    let Some(conditions) = conditions else {
        return "Conditions:\n  <none>: the controller has not reported yet\n".into();
    };
    let rows: Vec<Vec<String>> = conditions
        .iter()
        .map(|c| {
            vec![
                field(c, "type"),
                field(c, "status"),
                field(c, "reason"),
                output::age(c.get("lastTransitionTime").and_then(Value::as_str), now),
                field(c, "message"),
            ]
        })
        .collect();
    table_section(
        "Conditions:",
        &["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"],
        &rows,
    )
}

fn owned_objects(status: &Value) -> String {
    let owned = status
        .get("ownedObjects")
        .and_then(Value::as_array)
        .filter(|os| !os.is_empty());
    let Some(owned) = owned else {
        return "Owned Swarm objects:\n  <none>\n".into();
    };
    let rows: Vec<Vec<String>> = owned
        .iter()
        .map(|o| vec![field(o, "kind"), field(o, "name")])
        .collect();
    table_section("Owned Swarm objects:", &["KIND", "NAME"], &rows)
}

/// The latest 20 events, oldest first.
fn recent_events(events: &[haswarm_crds::Event], now: DateTime<Utc>) -> String {
    if events.is_empty() {
        return "Events:\n  <none>\n".into();
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .rev()
        .take(20)
        .rev()
        .map(|e| {
            let last = e.last_timestamp.to_rfc3339();
            vec![
                format!("{:?}", e.type_),
                e.reason.clone(),
                output::age(Some(&last), now),
                e.count.to_string(),
                e.message.clone(),
            ]
        })
        .collect();
    table_section(
        "Events:",
        &["TYPE", "REASON", "AGE", "COUNT", "MESSAGE"],
        &rows,
    )
}

pub async fn run(conn: &Conn, args: &DescribeArgs) -> ExitCode {
    let kind = match kind(&args.kind) {
        Ok(k) => k,
        Err(code) => return code,
    };
    let client = match conn.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let obj = match client.get(kind.plural, &args.name).await {
        Ok(o) => o,
        Err(e) => return failed(&e),
    };
    let events = match client.events(kind.plural, &args.name).await {
        Ok(e) => e,
        Err(e) => return failed(&e),
    };
    print!("{}", render(kind.kind, &obj, &events));
    ExitCode::Success
}

#[cfg(test)]
mod tests {
    use super::*;
    use haswarm_crds::{Event, EventType};

    /// An RFC 3339 time `secs` ago; tests pick ages mid-unit so the text does not depend on the clock.
    fn ago(secs: i64) -> String {
        (Utc::now() - chrono::Duration::seconds(secs))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    fn event(type_: EventType, reason: &str, message: &str, count: u32, secs_ago: i64) -> Event {
        let at = Utc::now() - chrono::Duration::seconds(secs_ago);
        Event {
            type_,
            reason: reason.into(),
            message: message.into(),
            count,
            first_timestamp: at,
            last_timestamp: at,
        }
    }

    /// The expected text: one string a line, so trailing blanks stay visible.
    fn text(lines: &[&str], created: &str) -> String {
        lines
            .iter()
            .map(|l| format!("{}\n", l.replace("@CREATED@", created)))
            .collect()
    }

    fn postgres_cluster(created: &str) -> Value {
        serde_json::json!({
            "apiVersion": "haswarm.io/v1alpha1",
            "kind": "PostgresCluster",
            "metadata": {
                "name": "db",
                "uid": "6f1c2d3e-0000-4000-8000-000000000001",
                "generation": 4,
                "creationTimestamp": created,
                "labels": {"app": "shop", "tier": "data"},
                "annotations": {"haswarm.io/note": "primary database"}
            },
            "spec": {"instances": 3, "postgres": {"version": 16}},
            "status": {
                "observedGeneration": 3,
                "leader": "db-pg-0",
                "readWriteEndpoint": "db-rw:5432",
                "members": [
                    {"name": "db-pg-0", "role": "Leader", "state": "running", "timeline": 3, "node": "n1"},
                    {"name": "db-pg-1", "role": "SyncStandby", "state": "streaming", "timeline": 3, "lagBytes": 0, "node": "n2"},
                    {"name": "db-pg-2", "role": "Replica", "state": "starting", "timeline": null, "lagBytes": 1_048_576}
                ],
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Running", "message": "3/3 members running", "lastTransitionTime": ago(45 * 60 + 30)},
                    {"type": "Progressing", "status": "False", "reason": "Stable", "lastTransitionTime": ago(5 * 3_600 + 600)}
                ],
                "ownedObjects": [
                    {"kind": "Service", "name": "db-pg-0", "version": 12},
                    {"kind": "Network", "name": "haswarm-db"}
                ]
            }
        })
    }

    #[test]
    fn a_postgres_cluster_reads_in_full() {
        let created = ago(3 * 86_400 + 3_600);
        let events = [
            event(
                EventType::Normal,
                "Created",
                "created service db-pg-0",
                1,
                3 * 86_400,
            ),
            event(
                EventType::Warning,
                "Failover",
                "db-pg-1 took over from db-pg-0",
                2,
                15 * 60 + 30,
            ),
        ];
        let want = text(
            &[
                "Name:         db",
                "Kind:         PostgresCluster",
                "Labels:       app=shop",
                "              tier=data",
                "Annotations:  haswarm.io/note=primary database",
                "UID:          6f1c2d3e-0000-4000-8000-000000000001",
                "Generation:   4 (status describes 3)",
                "Created:      @CREATED@ (3d ago)",
                "Spec:",
                "  instances: 3",
                "  postgres:",
                "    version: 16",
                "Status:",
                "  readWriteEndpoint: db-rw:5432",
                "  leader: db-pg-0",
                "Members:",
                "  MEMBER    ROLE          STATE       TL   LAG (BYTES)   NODE",
                "  db-pg-0   Leader        running     3    -             n1",
                "  db-pg-1   SyncStandby   streaming   3    0             n2",
                "  db-pg-2   Replica       starting         1048576       ",
                "Conditions:",
                "  TYPE          STATUS   REASON    AGE   MESSAGE",
                "  Ready         True     Running   45m   3/3 members running",
                "  Progressing   False    Stable    5h    ",
                "Owned Swarm objects:",
                "  KIND      NAME",
                "  Service   db-pg-0",
                "  Network   haswarm-db",
                "Events:",
                "  TYPE      REASON     AGE   COUNT   MESSAGE",
                "  Normal    Created    3d    1       created service db-pg-0",
                "  Warning   Failover   15m   2       db-pg-1 took over from db-pg-0",
            ],
            &created,
        );
        assert_eq!(
            render("PostgresCluster", &postgres_cluster(&created), &events),
            want
        );
    }

    #[test]
    fn a_redis_sentinel_group_reads_in_full() {
        let created = ago(3 * 86_400 + 3_600);
        let rsg = serde_json::json!({
            "apiVersion": "haswarm.io/v1alpha1",
            "kind": "RedisSentinelGroup",
            "metadata": {"name": "cache", "uid": "6f1c2d3e-0000-4000-8000-000000000002", "generation": 1, "creationTimestamp": created},
            "spec": {"instances": 2, "sentinels": {"count": 3, "quorum": 2}, "masterGroupName": "mymaster"},
            "status": {
                "observedGeneration": 1,
                "master": "cache-redis-0",
                "replicas": [{"name": "cache-redis-1", "linkUp": true, "lagBytes": 0}],
                "sentinelsSeen": 3,
                "passwordSecret": "cache-password",
                "network": "haswarm-cache",
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "MasterUnreachable", "message": "no sentinel sees a master", "lastTransitionTime": ago(12 * 60 + 30)},
                    {"type": "Degraded", "status": "True", "reason": "ReplicaDown"}
                ],
                "ownedObjects": [{"kind": "Service", "name": "cache-redis-0"}]
            }
        });
        let events = [event(
            EventType::Warning,
            "MasterLost",
            "sentinels lost cache-redis-0",
            4,
            2 * 3_600 + 600,
        )];
        let want = text(
            &[
                "Name:         cache",
                "Kind:         RedisSentinelGroup",
                "Labels:       <none>",
                "Annotations:  <none>",
                "UID:          6f1c2d3e-0000-4000-8000-000000000002",
                "Generation:   1 (status describes 1)",
                "Created:      @CREATED@ (3d ago)",
                "Spec:",
                "  instances: 2",
                "  sentinels:",
                "    count: 3",
                "    quorum: 2",
                "  masterGroupName: mymaster",
                "Status:",
                "  network: haswarm-cache",
                "  master: cache-redis-0",
                "  replicas:",
                "  - name: cache-redis-1",
                "    linkUp: true",
                "    lagBytes: 0",
                "  sentinelsSeen: 3",
                "  passwordSecret: cache-password",
                "Conditions:",
                "  TYPE       STATUS   REASON              AGE         MESSAGE",
                "  Ready      False    MasterUnreachable   12m         no sentinel sees a master",
                "  Degraded   True     ReplicaDown         <unknown>   ",
                "Owned Swarm objects:",
                "  KIND      NAME",
                "  Service   cache-redis-0",
                "Events:",
                "  TYPE      REASON       AGE   COUNT   MESSAGE",
                "  Warning   MasterLost   2h    4       sentinels lost cache-redis-0",
            ],
            &created,
        );
        assert_eq!(render("RedisSentinelGroup", &rsg, &events), want);
    }

    #[test]
    fn a_deleting_shared_volume_without_conditions_or_events_reads_in_full() {
        let sv = serde_json::json!({
            "apiVersion": "haswarm.io/v1alpha1",
            "kind": "SharedVolume",
            "metadata": {
                "name": "files",
                "generation": 2,
                "deletionTimestamp": "2026-01-02T03:04:05Z",
                "finalizers": ["haswarm.io/volume", "example.com/backup"]
            },
            "spec": {"nfs": {"server": "10.0.0.5", "path": "/export/files"}, "reclaimPolicy": "Retain"},
            "status": {
                "nodes": [
                    {"node": "n1", "mounted": true, "message": ""},
                    {"node": "n2", "mounted": false, "message": "mount.nfs: timed out"}
                ]
            }
        });
        let want = text(
            &[
            "Name:         files",
            "Kind:         SharedVolume",
            "Labels:       <none>",
            "Annotations:  <none>",
            "UID:          <none>",
            "Generation:   2 (status describes <none>)",
            "Created:      <unknown> (<unknown> ago)",
            "Deleting:     since 2026-01-02T03:04:05Z; waiting for: haswarm.io/volume, example.com/backup",
            "Spec:",
            "  nfs:",
            "    server: \"10.0.0.5\"",
            "    path: /export/files",
            "  reclaimPolicy: Retain",
            "Status:",
            "  nodes:",
            "  - node: n1",
            "    mounted: true",
            "    message: \"\"",
            "  - node: n2",
            "    mounted: false",
            "    message: \"mount.nfs: timed out\"",
            "Conditions:",
            "  <none>: the controller has not reported yet",
            "Owned Swarm objects:",
            "  <none>",
            "Events:",
            "  <none>",
            ],
            "",
        );
        assert_eq!(render("SharedVolume", &sv, &[]), want);
    }

    #[test]
    fn only_the_latest_twenty_events_show() {
        let events: Vec<Event> = (0..22)
            .map(|i| {
                event(
                    EventType::Normal,
                    "Tick",
                    &format!("tick {i}"),
                    i + 1,
                    570 - i64::from(i),
                )
            })
            .collect();
        let text = render(
            "SharedVolume",
            &serde_json::json!({"metadata": {"name": "v"}}),
            &events,
        );
        let (head, table) = text.split_once("Events:\n").expect("an Events section");
        assert_eq!(
            head,
            "Name:         v\nKind:         SharedVolume\nLabels:       <none>\nAnnotations:  <none>\nUID:          <none>\nGeneration:   <none> (status describes <none>)\nCreated:      <unknown> (<unknown> ago)\nSpec:\n  null\nConditions:\n  <none>: the controller has not reported yet\nOwned Swarm objects:\n  <none>\n"
        );
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 21, "{text}");
        assert_eq!(lines[0], "  TYPE     REASON   AGE   COUNT   MESSAGE");
        assert_eq!(lines[1], "  Normal   Tick     9m    3       tick 2");
        assert_eq!(lines[20], "  Normal   Tick     9m    22      tick 21");
    }

    #[test]
    fn postgres_members_show_as_a_table_like_patronictl_list() {
        let obj = serde_json::json!({
            "apiVersion": "haswarm.io/v1alpha1",
            "kind": "PostgresCluster",
            "metadata": {"name": "db"},
            "spec": {"instances": 2},
            "status": {
                "leader": "db-pg-0",
                "members": [
                    {"name": "db-pg-0", "role": "Leader", "state": "running", "timeline": 3, "node": "n1"},
                    {"name": "db-pg-1", "role": "SyncStandby", "state": "streaming", "timeline": 3, "lagBytes": 0, "node": "n2"}
                ]
            }
        });
        let text = render("PostgresCluster", &obj, &[]);
        let table = text.split("Members:\n").nth(1).expect("a Members section");
        let lines: Vec<&str> = table.lines().take(3).collect();
        assert!(
            lines[0].contains("MEMBER") && lines[0].contains("LAG (BYTES)"),
            "{text}"
        );
        assert!(
            lines[1].contains("db-pg-0") && lines[1].contains("Leader"),
            "{text}"
        );
        assert!(
            lines[2].contains("SyncStandby") && lines[2].contains("n2"),
            "{text}"
        );
        assert!(!text.contains("members:"), "not repeated as YAML: {text}");
    }

    #[test]
    fn a_git_source_lists_what_it_applied() {
        let obj = serde_json::json!({
            "apiVersion": "haswarm.io/v1alpha1",
            "kind": "GitSource",
            "metadata": {"name": "platform"},
            "spec": {"url": "/srv/git/p"},
            "status": {
                "lastAppliedRevision": "0123456789abcdef",
                "inventory": [
                    {"kind": "SharedVolume", "name": "files", "file": "apps/files.yaml", "ready": true},
                    {"kind": "RedisSentinelGroup", "name": "cache", "file": "apps/cache.yaml"}
                ]
            }
        });
        let text = render("GitSource", &obj, &[]);
        let table = text
            .split("Inventory:\n")
            .nth(1)
            .expect("an Inventory section");
        let lines: Vec<&str> = table.lines().take(3).collect();
        assert!(
            lines[0].contains("RESOURCE") && lines[0].contains("FILE"),
            "{text}"
        );
        assert!(
            lines[1].contains("SharedVolume/files") && lines[1].contains("True"),
            "{text}"
        );
        assert!(
            lines[2].contains("RedisSentinelGroup/cache") && lines[2].contains(" - "),
            "{text}"
        );
        assert!(
            text.contains("lastAppliedRevision: 0123456789abcdef"),
            "{text}"
        );
        assert!(!text.contains("inventory:"), "not repeated as YAML: {text}");
    }
}
