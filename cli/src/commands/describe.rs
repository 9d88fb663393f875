//! `haswarmctl describe`: an object's status, conditions and members as text,
//! followed by its events.

use chrono::Utc;
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

/// The describe text of one object and its events.
pub(crate) fn render(kind_name: &str, obj: &Value, events: &[haswarm_crds::Event]) -> String {
    let now = Utc::now();
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
    let mut out = String::new();
    out.push_str(&format!("Name:         {}\n", s("/metadata/name")));
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
    let created = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str);
    out.push_str(&format!(
        "Created:      {} ({} ago)\n",
        created.unwrap_or("<unknown>"),
        output::age(created, now)
    ));
    if let Some(d) = obj
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
    {
        let fin: Vec<&str> = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        out.push_str(&format!(
            "Deleting:     since {d}; waiting for: {}\n",
            fin.join(", ")
        ));
    }
    out.push_str("Spec:\n");
    out.push_str(&indented(
        &output::yaml(obj.get("spec").unwrap_or(&Value::Null)),
        "  ",
    ));

    let status = obj.get("status").cloned().unwrap_or(Value::Null);
    let mut extra = status.clone();
    if let Some(m) = extra.as_object_mut() {
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
        out.push_str("Status:\n");
        out.push_str(&indented(&output::yaml(&extra), "  "));
    }
    // PostgresCluster members, as `patronictl list` shows them.
    if let Some(members) = status.get("members").and_then(Value::as_array) {
        out.push_str("Members:\n");
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
        out.push_str(&indented(
            &output::table(
                &["MEMBER", "ROLE", "STATE", "TL", "LAG (BYTES)", "NODE"],
                &rows,
            ),
            "  ",
        ));
    }

    // GitSource inventory: what it applied, from which file, and its health.
    if let Some(inventory) = status.get("inventory").and_then(Value::as_array) {
        out.push_str("Inventory:\n");
        let rows: Vec<Vec<String>> = inventory
            .iter()
            .map(|e| {
                let text = |k: &str| {
                    e.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                let ready = match e.get("ready").and_then(Value::as_bool) {
                    Some(true) => "True",
                    Some(false) => "False",
                    None => "-",
                };
                vec![
                    format!("{}/{}", text("kind"), text("name")),
                    ready.to_owned(),
                    text("file"),
                ]
            })
            .collect();
        out.push_str(&indented(
            &output::table(&["RESOURCE", "READY", "FILE"], &rows),
            "  ",
        ));
    }

    out.push_str("Conditions:\n");
    let conditions = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if conditions.is_empty() {
        out.push_str("  <none>: the controller has not reported yet\n");
    } else {
        let rows: Vec<Vec<String>> = conditions
            .iter()
            .map(|c| {
                let g = |k: &str| {
                    c.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                vec![
                    g("type"),
                    g("status"),
                    g("reason"),
                    output::age(c.get("lastTransitionTime").and_then(Value::as_str), now),
                    g("message"),
                ]
            })
            .collect();
        out.push_str(&indented(
            &output::table(&["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], &rows),
            "  ",
        ));
    }

    out.push_str("Owned Swarm objects:\n");
    let owned = status
        .get("ownedObjects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if owned.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let rows: Vec<Vec<String>> = owned
            .iter()
            .map(|o| {
                let g = |k: &str| {
                    o.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                vec![g("kind"), g("name")]
            })
            .collect();
        out.push_str(&indented(&output::table(&["KIND", "NAME"], &rows), "  "));
    }

    out.push_str("Events:\n");
    if events.is_empty() {
        out.push_str("  <none>\n");
    } else {
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
        out.push_str(&indented(
            &output::table(&["TYPE", "REASON", "AGE", "COUNT", "MESSAGE"], &rows),
            "  ",
        ));
    }
    out
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
