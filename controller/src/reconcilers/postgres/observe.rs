//! What Patroni says about the cluster: its REST API read inside an
//! instance's container (the API listens on the cluster's network only), and
//! parsed here. Parsing is pure.

use haswarm_crds::postgres::{MemberRole, PostgresMember};

use super::render::{self, PATRONI_PORT};

/// A script that prints the answer of `host`'s Patroni to `GET path` (or
/// nothing). Patroni is Python, so every image that runs it has python3.
pub fn rest_get(host: &str, path: &str) -> String {
    format!(
        "python3 -c \"import sys, urllib.request; sys.stdout.write(urllib.request.urlopen('http://{host}:{PATRONI_PORT}{path}', timeout=3).read().decode())\" 2>/dev/null"
    )
}

/// A script that prints the index of each of cluster `name`'s first
/// `members` etcd members that answers a health check now (with the
/// `etcdctl` of the container it runs in; nothing when there is none).
pub fn etcd_health(name: &str, members: u8) -> String {
    let checks: Vec<String> = (0..usize::from(members))
        .map(|j| {
            format!(
                "etcdctl --endpoints=http://{}:{} --dial-timeout=1s --command-timeout=2s endpoint health >/dev/null 2>&1 && echo {j}",
                render::etcd_name(name, j),
                render::ETCD_CLIENT_PORT
            )
        })
        .collect();
    format!("{{ {}; }} 2>/dev/null; true", checks.join("; "))
}

/// The member indexes [`etcd_health`] printed.
pub fn parse_etcd_health(out: &str) -> Vec<u8> {
    out.split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// Whether a script's output is Patroni's answer: `rest_get` prints nothing
/// and `rest_call` prints status 0 when the member could not be reached.
pub fn answered(out: &str) -> bool {
    let out = out.trim();
    !out.is_empty() && !out.starts_with("0 ")
}

/// Whether a [`rest_call`]'s output says Patroni took the request (HTTP
/// 200; it prints the status first).
pub fn took(out: &str) -> bool {
    out.trim_start().starts_with("200")
}

/// A script that sends `method path` with a JSON `body` to the Patroni REST
/// API of `host` (a member's service name, or 127.0.0.1) and prints the HTTP
/// status and the answer. The body travels base64-encoded: whatever a
/// parameter value holds cannot end the script's strings. It authenticates
/// with the API password read from the container's secret file (changes
/// need it; the password never leaves the container).
pub fn rest_call(host: &str, method: &str, path: &str, body: &serde_json::Value) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(body.to_string());
    format!(
        "python3 - <<'PY'\nimport base64, urllib.request, urllib.error\nauth = base64.b64encode(b'haswarm:' + open('/run/secrets/pg-api-password', 'rb').read().rstrip(b'\\n')).decode()\nreq = urllib.request.Request('http://{host}:{PATRONI_PORT}{path}', data=base64.b64decode('{body}'), method='{method}', headers={{'Content-Type': 'application/json', 'Authorization': 'Basic ' + auth}})\ntry:\n    r = urllib.request.urlopen(req, timeout=30)\n    print(r.status, r.read().decode())\nexcept urllib.error.HTTPError as e:\n    print(e.code, e.read().decode())\nexcept OSError as e:\n    print(0, e)\nPY"
    )
}

/// A script that asks `host`'s Patroni (any member takes the request) for a
/// switchover away from `leader` (to `candidate` when given) and prints the
/// HTTP status and answer.
pub fn switchover(host: &str, leader: &str, candidate: Option<&str>) -> String {
    rest_call(
        host,
        "POST",
        "/switchover",
        &serde_json::json!({ "leader": leader, "candidate": candidate }),
    )
}

/// A script run in an etcd member that deletes Patroni's leader key of
/// `scope` if, and only if, it still names `leader` (one etcd transaction:
/// a leader elected meanwhile keeps its key). Prints `SUCCESS` or `FAILURE`.
/// `etcdctl txn` reads compares, success and failure operations, each
/// section ended by an empty line (the empty failure section too).
pub fn release_leader_key(scope: &str, leader: &str) -> String {
    let key = format!("/haswarm/{scope}/leader");
    format!(
        "printf 'value(\"%s\") = \"%s\"\\n\\ndel %s\\n\\n\\n' '{key}' '{leader}' '{key}' | ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 --command-timeout=3s txn"
    )
}

/// The cluster as Patroni's `/cluster` reports it, members named by their
/// service (with their incarnation).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterView {
    /// Members, by service name.
    pub members: Vec<PostgresMember>,
    /// Patroni names of members that are not the current incarnation of
    /// their instance: left out of `members` (an old member back from a
    /// lost node, or one Patroni has not expired yet).
    pub stale: Vec<String>,
}

impl ClusterView {
    /// The view without members that are not the current incarnation of
    /// their instance (`current(service)`).
    #[must_use]
    pub fn current(mut self, current: impl Fn(&str) -> u32) -> Self {
        let (now, stale): (Vec<_>, Vec<_>) = self
            .members
            .into_iter()
            .partition(|m| m.incarnation == current(&m.name));
        self.members = now;
        self.stale.extend(
            stale
                .iter()
                .map(|m| render::patroni_name(&m.name, m.incarnation)),
        );
        self
    }

    /// Patroni's name of the member of `service` (its service name when
    /// the view does not list it).
    pub fn patroni_name(&self, service: &str) -> String {
        self.members.iter().find(|m| m.name == service).map_or_else(
            || service.to_owned(),
            |m| render::patroni_name(&m.name, m.incarnation),
        )
    }

    /// The leader's name.
    pub fn leader(&self) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.role == MemberRole::Leader)
            .map(|m| m.name.as_str())
    }

    /// The leader, when it is running.
    pub fn running_leader(&self) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.role == MemberRole::Leader && m.state == "running")
            .map(|m| m.name.as_str())
    }
}

/// Parses `/cluster`; `None` when the answer is not Patroni's.
pub fn parse_cluster(text: &str) -> Option<ClusterView> {
    let v: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
    let members = v.get("members")?.as_array()?;
    let mut out: Vec<PostgresMember> = members
        .iter()
        .filter_map(|m| {
            let (service, incarnation) = render::member_of(m.get("name")?.as_str()?);
            Some(PostgresMember {
                name: service.to_owned(),
                incarnation,
                role: match m.get("role").and_then(|r| r.as_str()) {
                    Some("leader" | "master" | "primary" | "standby_leader") => MemberRole::Leader,
                    Some("sync_standby") => MemberRole::SyncStandby,
                    Some("replica") => MemberRole::Replica,
                    _ => MemberRole::Unknown,
                },
                state: m
                    .get("state")
                    .and_then(|s| s.as_str())
                    .unwrap_or("unknown")
                    .to_owned(),
                timeline: m.get("timeline").and_then(serde_json::Value::as_u64),
                // A number of bytes, or "unknown" while Patroni cannot tell.
                lag_bytes: m.get("lag").and_then(serde_json::Value::as_u64),
                node: None,
                pending_restart: m
                    .get("pending_restart")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Some(ClusterView {
        members: out,
        stale: Vec::new(),
    })
}

/// A view of members given as (name, role, state, lag), as Patroni's
/// `/cluster` would list them: for the reconcilers' table tests.
#[cfg(test)]
pub fn test_view(members: &[(&str, &str, &str, Option<u64>)]) -> ClusterView {
    let json = serde_json::json!({
        "members": members.iter().map(|(n, r, s, l)| serde_json::json!({
            "name": n, "role": r, "state": s, "timeline": 1, "lag": l
        })).collect::<Vec<_>>()
    });
    parse_cluster(&json.to_string()).expect("view")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_etcd_members_that_answer_are_listed_by_index() {
        let script = etcd_health("db", 3);
        for j in 0..3 {
            assert!(
                script.contains(&format!(
                    "--endpoints=http://db-etcd-{j}:2379 --dial-timeout=1s --command-timeout=2s endpoint health >/dev/null 2>&1 && echo {j}"
                )),
                "{script}"
            );
        }
        assert!(
            script.ends_with("; true"),
            "a failed check is no failed exec: {script}"
        );
        assert_eq!(parse_etcd_health("0\n2\n"), [0, 2]);
        assert!(parse_etcd_health("sh: etcdctl: not found").is_empty());
    }

    const CLUSTER: &str = r#"{"members": [
        {"name": "db-pg-1", "role": "replica", "state": "streaming", "api_url": "http://db-pg-1:8008/patroni", "host": "db-pg-1", "port": 5432, "timeline": 2, "lag": 0},
        {"name": "db-pg-0", "role": "leader", "state": "running", "api_url": "http://db-pg-0:8008/patroni", "host": "db-pg-0", "port": 5432, "timeline": 2},
        {"name": "db-pg-2", "role": "sync_standby", "state": "running", "timeline": 2, "lag": "unknown"}
    ], "scope": "db"}"#;

    #[test]
    fn the_cluster_answer_gives_roles_states_timelines_and_lag() {
        let v = parse_cluster(CLUSTER).expect("parsed");
        assert_eq!(v.leader(), Some("db-pg-0"));
        assert_eq!(v.running_leader(), Some("db-pg-0"));
        let names: Vec<&str> = v.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["db-pg-0", "db-pg-1", "db-pg-2"]);
        assert_eq!(v.members[1].role, MemberRole::Replica);
        assert_eq!(v.members[1].lag_bytes, Some(0));
        assert_eq!(v.members[2].role, MemberRole::SyncStandby);
        assert_eq!(v.members[2].lag_bytes, None);
        assert_eq!(v.members[0].timeline, Some(2));
    }

    #[test]
    fn members_are_named_by_service_and_old_incarnations_are_left_out() {
        let text = r#"{"members": [
            {"name": "db-pg-1", "role": "leader", "state": "running"},
            {"name": "db-pg-1.2", "role": "replica", "state": "streaming", "lag": 0},
            {"name": "db-pg-0", "role": "sync_standby", "state": "streaming", "lag": 0}
        ]}"#;
        let raw = parse_cluster(text).expect("parsed");
        assert_eq!(raw.members.len(), 3);
        // db-pg-1 moved twice: the old member back from its node is no
        // leader of this cluster.
        let v = raw.current(|s| u32::from(s == "db-pg-1") * 2);
        assert_eq!(v.leader(), None);
        assert_eq!(v.stale, ["db-pg-1"]);
        let names: Vec<(&str, u32)> = v
            .members
            .iter()
            .map(|m| (m.name.as_str(), m.incarnation))
            .collect();
        assert_eq!(names, [("db-pg-0", 0), ("db-pg-1", 2)]);
        assert_eq!(v.patroni_name("db-pg-1"), "db-pg-1.2");
        assert_eq!(v.patroni_name("db-pg-0"), "db-pg-0");
        assert_eq!(v.patroni_name("db-pg-9"), "db-pg-9");
    }

    #[test]
    fn anything_else_is_no_answer() {
        assert_eq!(parse_cluster(""), None);
        assert_eq!(parse_cluster("<html>"), None);
        let v = parse_cluster(r#"{"members": []}"#).expect("empty cluster");
        assert_eq!(v.leader(), None);
    }

    #[test]
    fn the_leader_key_goes_only_if_it_still_names_the_dead_leader() {
        let s = release_leader_key("db", "db-pg-0");
        assert!(s.contains("'/haswarm/db/leader' 'db-pg-0'"), "{s}");
        assert!(s.contains("etcdctl") && s.contains(" txn"), "{s}");
    }

    #[test]
    fn a_switchover_request_names_the_leader_and_the_candidate() {
        use base64::Engine;
        let s = switchover("127.0.0.1", "db-pg-0", Some("db-pg-2"));
        assert!(s.contains("/switchover"));
        let body = base64::engine::general_purpose::STANDARD
            .encode(r#"{"leader":"db-pg-0","candidate":"db-pg-2"}"#);
        assert!(s.contains(&body), "{s}");
    }
}
