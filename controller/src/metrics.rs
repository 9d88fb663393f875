//! Prometheus metrics served at `GET /metrics` (OpenMetrics text).
//!
//! Controller metrics keep controller-runtime's names (`reconcile_total`,
//! `workqueue_depth`...) so that dashboards written for Kubernetes
//! controllers read them. Data-plane gauges (`haswarm_*`, backups' too) are
//! computed from the stored statuses at each scrape: the status is what the reconcilers
//! observed, so the metrics and `haswarmctl get` never disagree.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

use haswarm_crds::postgres::{BackupStatus, MemberRole, PostgresClusterStatus};
use haswarm_crds::redis::RedisSentinelGroupStatus;
use haswarm_crds::{ConditionStatus, EventType};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde_json::Value;

use crate::runtime::queue::QueueStats;

type Labels = Vec<(&'static str, String)>;

fn histogram() -> Histogram {
    // 5 ms to about 40 s: a reconcile that execs into containers or waits on
    // Swarm takes seconds.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Whether the Docker engine answers, as the controllers last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Docker {
    /// Not tried yet, or the controllers do not run.
    Unknown,
    /// The engine answered.
    Reachable,
    /// The last attempt failed.
    Unreachable,
}

/// Every metric the daemon exports, shared by the API and the controllers.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    reconcile_errors: Family<Labels, Counter>,
    reconcile_time: Family<Labels, Histogram, fn() -> Histogram>,
    queue_depth: Family<Labels, Gauge>,
    queue_adds: Family<Labels, Counter>,
    queue_retries: Family<Labels, Counter>,
    events: Family<Labels, Counter>,
    primary_changes: Family<Labels, Counter>,
    docker_up: Gauge,
    ready: Family<Labels, Gauge>,
    members: Family<Labels, Gauge>,
    members_in_sync: Family<Labels, Gauge>,
    lag: Family<Labels, Gauge>,
    backup_last_success: Family<Labels, Gauge>,
    backup_duration: Family<Labels, Gauge>,
    archive_failures: Family<Labels, Counter>,
    docker: AtomicU8,
    /// Serializes scrapes: the data-plane families are cleared and refilled.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Event reasons that mean the primary (Postgres leader, Redis master) moved.
const PRIMARY_CHANGED: [&str; 2] = ["LeaderChanged", "MasterChanged"];

impl Metrics {
    /// A registry with every metric registered, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<Labels, Counter>::default();
        let reconcile_errors = Family::<Labels, Counter>::default();
        let reconcile_time =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
        let queue_depth = Family::<Labels, Gauge>::default();
        let queue_adds = Family::<Labels, Counter>::default();
        let queue_retries = Family::<Labels, Counter>::default();
        let events = Family::<Labels, Counter>::default();
        let primary_changes = Family::<Labels, Counter>::default();
        let docker_up = Gauge::default();
        let ready = Family::<Labels, Gauge>::default();
        let members = Family::<Labels, Gauge>::default();
        let members_in_sync = Family::<Labels, Gauge>::default();
        let lag = Family::<Labels, Gauge>::default();
        let backup_last_success = Family::<Labels, Gauge>::default();
        let backup_duration = Family::<Labels, Gauge>::default();
        let archive_failures = Family::<Labels, Counter>::default();
        registry.register(
            "reconcile",
            "Reconciles per controller (kind) and result: success, requeue or error",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, per controller",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_time_seconds",
            "How long reconciles take, per controller",
            reconcile_time.clone(),
        );
        registry.register(
            "workqueue_depth",
            "Objects waiting in a controller's queue",
            queue_depth.clone(),
        );
        registry.register(
            "workqueue_adds",
            "Requests to reconcile an object, per queue",
            queue_adds.clone(),
        );
        registry.register(
            "workqueue_retries",
            "Reconciles retried after a failure, per queue",
            queue_retries.clone(),
        );
        registry.register(
            "haswarm_events",
            "Events recorded, per kind, type and reason",
            events.clone(),
        );
        registry.register(
            "haswarm_primary_changes",
            "Times a resource's primary (Postgres leader, Redis master) moved",
            primary_changes.clone(),
        );
        registry.register(
            "haswarm_docker_reachable",
            "1 when the controllers' last call to the Docker engine succeeded",
            docker_up.clone(),
        );
        registry.register(
            "haswarm_resource_ready",
            "1 when a resource's Ready condition is True",
            ready.clone(),
        );
        registry.register(
            "haswarm_members",
            "Data members a resource reports (Postgres instances, Redis instances)",
            members.clone(),
        );
        registry.register(
            "haswarm_members_in_sync",
            "Data members that serve the current data: the primary, and replicas linked to it and caught up",
            members_in_sync.clone(),
        );
        registry.register(
            "haswarm_replication_lag_bytes",
            "Replication lag of each replica, in bytes, as last observed",
            lag.clone(),
        );
        registry.register(
            "haswarm_backup_last_success_timestamp_seconds",
            "When a PostgresCluster's newest backup that succeeded ended (Unix time)",
            backup_last_success.clone(),
        );
        registry.register(
            "haswarm_backup_duration_seconds",
            "How long the newest backup of each repository and type took",
            backup_duration.clone(),
        );
        registry.register(
            "haswarm_wal_archive_failures",
            "WAL archiving attempts that failed, counted across the primaries haswarm read",
            archive_failures.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_time,
            queue_depth,
            queue_adds,
            queue_retries,
            events,
            primary_changes,
            docker_up,
            ready,
            members,
            members_in_sync,
            lag,
            backup_last_success,
            backup_duration,
            archive_failures,
            docker: AtomicU8::new(0),
            scrape: Mutex::new(()),
        }
    }

    /// One reconcile of `kind` finished after `seconds`: `result` is
    /// `success`, `requeue` or `error`.
    pub fn reconciled(&self, kind: &str, result: &'static str, seconds: f64) {
        let controller = vec![("controller", kind.to_lowercase())];
        let mut with_result = controller.clone();
        with_result.push(("result", result.to_owned()));
        self.reconciles.get_or_create(&with_result).inc();
        if result == "error" {
            self.reconcile_errors.get_or_create(&controller).inc();
        }
        self.reconcile_time
            .get_or_create(&controller)
            .observe(seconds);
    }

    /// The queue of `kind` changed: its counters are totals, so the
    /// exported counters move by the difference.
    pub fn queue(&self, kind: &str, stats: &QueueStats) {
        let name = vec![("name", kind.to_lowercase())];
        self.queue_depth
            .get_or_create(&name)
            .set(i64::try_from(stats.depth).unwrap_or(i64::MAX));
        let adds = self.queue_adds.get_or_create(&name);
        adds.inc_by(stats.adds.saturating_sub(adds.get()));
        let retries = self.queue_retries.get_or_create(&name);
        retries.inc_by(stats.retries.saturating_sub(retries.get()));
    }

    /// An event was recorded on `kind`/`name`.
    pub fn event(&self, kind: &str, name: &str, type_: EventType, reason: &str) {
        let type_ = match type_ {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        self.events
            .get_or_create(&vec![
                ("kind", kind.to_owned()),
                ("type", type_.to_owned()),
                ("reason", reason.to_owned()),
            ])
            .inc();
        if PRIMARY_CHANGED.contains(&reason) {
            self.primary_changes
                .get_or_create(&vec![("kind", kind.to_owned()), ("name", name.to_owned())])
                .inc();
        }
    }

    /// What the controllers last saw of the Docker engine.
    pub fn set_docker(&self, state: Docker) {
        self.docker.store(
            match state {
                Docker::Unknown => 0,
                Docker::Reachable => 1,
                Docker::Unreachable => 2,
            },
            Ordering::Relaxed,
        );
        self.docker_up.set(i64::from(state == Docker::Reachable));
    }

    /// What the controllers last saw of the Docker engine.
    pub fn docker(&self) -> Docker {
        match self.docker.load(Ordering::Relaxed) {
            1 => Docker::Reachable,
            2 => Docker::Unreachable,
            _ => Docker::Unknown,
        }
    }

    /// The OpenMetrics text, with the data-plane gauges computed from
    /// `objects` (kind and stored status of every resource).
    pub fn render<'a>(
        &self,
        objects: impl IntoIterator<Item = (&'a str, &'a str, &'a Value)>,
    ) -> String {
        let _one = self
            .scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for family in [
            &self.ready,
            &self.members,
            &self.members_in_sync,
            &self.lag,
            &self.backup_last_success,
            &self.backup_duration,
        ] {
            family.clear();
        }
        // A counter read from the status: set afresh at each scrape.
        self.archive_failures.clear();
        for (kind, name, status) in objects {
            for sample in data_plane(kind, name, status) {
                let family = match sample.metric {
                    Sample::Ready => &self.ready,
                    Sample::Members => &self.members,
                    Sample::InSync => &self.members_in_sync,
                    Sample::Lag => &self.lag,
                    Sample::BackupLastSuccess => &self.backup_last_success,
                    Sample::BackupDuration => &self.backup_duration,
                    Sample::ArchiveFailures => {
                        let n = u64::try_from(sample.value).unwrap_or(0);
                        self.archive_failures
                            .get_or_create(&sample.labels)
                            .inc_by(n);
                        continue;
                    }
                };
                family.get_or_create(&sample.labels).set(sample.value);
            }
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Which data-plane gauge a sample belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sample {
    Ready,
    Members,
    InSync,
    Lag,
    BackupLastSuccess,
    BackupDuration,
    ArchiveFailures,
}

#[derive(Debug, PartialEq)]
struct Point {
    metric: Sample,
    labels: Labels,
    value: i64,
}

/// Redis replicas further behind than this are not in sync (the reconciler's
/// own threshold).
const MAX_LAG_BYTES: u64 = 1 << 20;

/// The data-plane samples of one resource, from its stored status.
fn data_plane(kind: &str, name: &str, status: &Value) -> Vec<Point> {
    let labels = || vec![("kind", kind.to_owned()), ("name", name.to_owned())];
    let point = |metric, value| Point {
        metric,
        labels: labels(),
        value,
    };
    let lag = |member: &str, bytes: u64| {
        let mut l = labels();
        l.push(("member", member.to_owned()));
        Point {
            metric: Sample::Lag,
            labels: l,
            value: i64::try_from(bytes).unwrap_or(i64::MAX),
        }
    };
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let mut out = Vec::new();
    let ready = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == serde_json::json!(ConditionStatus::True));
    out.push(point(Sample::Ready, i64::from(ready)));
    match kind {
        "PostgresCluster" => {
            let Ok(s) = serde_json::from_value::<PostgresClusterStatus>(status.clone()) else {
                return out;
            };
            let serving = s
                .members
                .iter()
                .filter(|m| match m.role {
                    MemberRole::Leader => true,
                    MemberRole::SyncStandby | MemberRole::Replica => {
                        m.state == "streaming" && m.lag_bytes.unwrap_or(0) <= MAX_LAG_BYTES
                    }
                    MemberRole::Unknown => false,
                })
                .count();
            out.push(point(Sample::Members, count(s.members.len())));
            out.push(point(Sample::InSync, count(serving)));
            for m in &s.members {
                if let (Some(bytes), false) = (m.lag_bytes, m.role == MemberRole::Leader) {
                    out.push(lag(&m.name, bytes));
                }
            }
            out.extend(backup_points(name, &s.backup));
        }
        "RedisSentinelGroup" => {
            let Ok(s) = serde_json::from_value::<RedisSentinelGroupStatus>(status.clone()) else {
                return out;
            };
            let linked = s
                .replicas
                .iter()
                .filter(|r| r.link_up && r.lag_bytes.is_none_or(|l| l <= MAX_LAG_BYTES))
                .count();
            let master = usize::from(s.master.is_some());
            out.push(point(Sample::Members, count(s.replicas.len() + master)));
            out.push(point(Sample::InSync, count(linked + master)));
            for r in &s.replicas {
                if let Some(bytes) = r.lag_bytes {
                    out.push(lag(&r.name, bytes));
                }
            }
        }
        _ => {}
    }
    out
}

/// A PostgresCluster's backup samples (labelled by `name` alone, as the
/// metrics' names say whose they are).
fn backup_points(name: &str, b: &BackupStatus) -> Vec<Point> {
    let point = |metric, extra: &[(&'static str, &str)], value| {
        let mut labels = vec![("name", name.to_owned())];
        labels.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        Point {
            metric,
            labels,
            value,
        }
    };
    let mut out = Vec::new();
    if let Some(t) = b.last_successful_backup {
        out.push(point(Sample::BackupLastSuccess, &[], t.timestamp()));
    }
    // The newest of each repository and type (backups are oldest first).
    let mut newest = BTreeMap::new();
    for r in &b.backups {
        newest.insert((r.repository.as_str(), r.kind.as_str()), r);
    }
    for ((repository, kind), r) in newest {
        let secs = (r.stop - r.start).num_seconds().max(0);
        let labels = [("repository", repository), ("type", kind)];
        out.push(point(Sample::BackupDuration, &labels, secs));
    }
    if let Some(a) = &b.archiver {
        let n = i64::try_from(a.failures_total).unwrap_or(i64::MAX);
        out.push(point(Sample::ArchiveFailures, &[], n));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reconciles_and_queues_are_counted_under_controller_runtime_names() {
        let m = Metrics::new();
        m.reconciled("RedisSentinelGroup", "success", 0.2);
        m.reconciled("RedisSentinelGroup", "error", 1.5);
        m.queue(
            "RedisSentinelGroup",
            &QueueStats {
                adds: 5,
                runs: 4,
                retries: 1,
                depth: 2,
            },
        );
        m.queue(
            "RedisSentinelGroup",
            &QueueStats {
                adds: 7,
                runs: 6,
                retries: 1,
                depth: 0,
            },
        );
        let text = m.render([]);
        for line in [
            "reconcile_total{controller=\"redissentinelgroup\",result=\"success\"} 1",
            "reconcile_total{controller=\"redissentinelgroup\",result=\"error\"} 1",
            "reconcile_errors_total{controller=\"redissentinelgroup\"} 1",
            "reconcile_time_seconds_count{controller=\"redissentinelgroup\"} 2",
            "workqueue_depth{name=\"redissentinelgroup\"} 0",
            "workqueue_adds_total{name=\"redissentinelgroup\"} 7",
            "workqueue_retries_total{name=\"redissentinelgroup\"} 1",
            "haswarm_docker_reachable 0",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn primary_moves_are_counted_from_events() {
        let m = Metrics::new();
        m.event(
            "PostgresCluster",
            "orders",
            EventType::Warning,
            "LeaderChanged",
        );
        m.event("PostgresCluster", "orders", EventType::Normal, "Created");
        let text = m.render([]);
        assert!(text
            .contains("haswarm_primary_changes_total{kind=\"PostgresCluster\",name=\"orders\"} 1"));
        assert!(text.contains(
            "haswarm_events_total{kind=\"PostgresCluster\",type=\"Normal\",reason=\"Created\"} 1"
        ));
    }

    #[test]
    fn data_plane_gauges_come_from_the_status() {
        let redis = json!({
            "conditions": [{"type": "Ready", "status": "True", "reason": "Healthy", "message": "", "lastTransitionTime": "2026-11-28T00:00:00Z"}],
            "master": "cache-redis-0",
            "replicas": [
                {"name": "cache-redis-1", "linkUp": true, "lagBytes": 0},
                {"name": "cache-redis-2", "linkUp": false, "lagBytes": 4096}
            ]
        });
        let pg = json!({
            "conditions": [{"type": "Ready", "status": "False", "reason": "Degraded", "message": "", "lastTransitionTime": "2026-11-28T00:00:00Z"}],
            "leader": "db-pg-0",
            "members": [
                {"name": "db-pg-0", "role": "Leader", "state": "running"},
                {"name": "db-pg-1", "role": "SyncStandby", "state": "streaming", "lagBytes": 0},
                {"name": "db-pg-2", "role": "Replica", "state": "starting", "lagBytes": 100}
            ]
        });
        let m = Metrics::new();
        let text = m.render([
            ("RedisSentinelGroup", "cache", &redis),
            ("PostgresCluster", "db", &pg),
        ]);
        for line in [
            "haswarm_resource_ready{kind=\"RedisSentinelGroup\",name=\"cache\"} 1",
            "haswarm_members{kind=\"RedisSentinelGroup\",name=\"cache\"} 3",
            "haswarm_members_in_sync{kind=\"RedisSentinelGroup\",name=\"cache\"} 2",
            "haswarm_replication_lag_bytes{kind=\"RedisSentinelGroup\",name=\"cache\",member=\"cache-redis-2\"} 4096",
            "haswarm_resource_ready{kind=\"PostgresCluster\",name=\"db\"} 0",
            "haswarm_members{kind=\"PostgresCluster\",name=\"db\"} 3",
            "haswarm_members_in_sync{kind=\"PostgresCluster\",name=\"db\"} 2",
            "haswarm_replication_lag_bytes{kind=\"PostgresCluster\",name=\"db\",member=\"db-pg-2\"} 100",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        // A deleted resource's gauges go with it.
        assert!(!m.render([]).contains("name=\"cache\""));
    }

    #[test]
    fn backup_metrics_come_from_the_status() {
        let backup = |label: &str, kind: &str, start: &str, stop: &str| {
            json!({"label": label, "type": kind, "repository": "s3", "start": start, "stop": stop,
              "sizeBytes": 1, "repositorySizeBytes": 1, "walStart": "1", "walStop": "1"})
        };
        let pg = json!({
            "backups": [
                backup("a", "full", "2026-12-06T10:00:00Z", "2026-12-06T10:00:40Z"),
                backup("b", "diff", "2026-12-06T11:00:00Z", "2026-12-06T11:00:05Z"),
                backup("c", "full", "2026-12-06T12:00:00Z", "2026-12-06T12:00:30Z"),
            ],
            "lastSuccessfulBackup": "2026-12-06T12:00:30Z",
            "archiver": {"primary": "db-pg-1", "failedCount": 2, "failuresTotal": 9}
        });
        let m = Metrics::new();
        let text = m.render([("PostgresCluster", "db", &pg)]);
        for line in [
            "haswarm_backup_last_success_timestamp_seconds{name=\"db\"} 1796558430",
            "haswarm_backup_duration_seconds{name=\"db\",repository=\"s3\",type=\"full\"} 30",
            "haswarm_backup_duration_seconds{name=\"db\",repository=\"s3\",type=\"diff\"} 5",
            "haswarm_wal_archive_failures_total{name=\"db\"} 9",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        // Scraped again: the counter is the status's, not added up.
        assert!(m
            .render([("PostgresCluster", "db", &pg)])
            .contains("haswarm_wal_archive_failures_total{name=\"db\"} 9"));
    }
}
