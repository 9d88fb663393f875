//! The timeline of one start, read after the fact from what Docker and the
//! Redis processes recorded (creation and start times, timestamped logs), so
//! that polling does not blur it.

use haswarm_testbed::bench::{secs, unix_time};
use haswarm_testbed::docker::docker;

/// When each step of a start happened, in seconds after the deploy command
/// began. `None`: not seen.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    pub services_created: Option<f64>,
    pub first_running: Option<f64>,
    pub master_up: Option<f64>,
    pub replicas_linked: Option<f64>,
    pub sentinels_agree: Option<f64>,
    /// haswarm's `Ready` (the hand-written stack has none: its ready is
    /// `sentinels_agree`).
    pub ready: Option<f64>,
}

fn inspect_times(what: &str, format: &str, ids: &[String]) -> Vec<f64> {
    if ids.is_empty() {
        return Vec::new();
    }
    let mut args = vec![what, "inspect", "--format", format];
    args.extend(ids.iter().map(String::as_str));
    docker(&args).lines().filter_map(unix_time).collect()
}

/// Every container (running or not) of a service on this engine.
fn containers(service: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.swarm.service.name={service}"),
    ])
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// Timestamped log lines of every container of a service that contain
/// `needle`, as unix times.
fn log_times(service: &str, needle: &str) -> Vec<f64> {
    containers(service)
        .iter()
        .flat_map(|c| {
            docker(&["logs", "-t", c])
                .lines()
                .filter(|l| l.contains(needle))
                .filter_map(|l| l.split_whitespace().next().and_then(unix_time))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn min(v: impl IntoIterator<Item = f64>) -> Option<f64> {
    v.into_iter().min_by(f64::total_cmp)
}

fn max(v: impl IntoIterator<Item = f64>) -> Option<f64> {
    v.into_iter().max_by(f64::total_cmp)
}

/// When a sentinel knew `replicas` replicas and `peers` other sentinels: the
/// time of the last of the first `+slave` and `+sentinel` lines it needed.
fn sentinel_agrees(service: &str, replicas: usize, peers: usize) -> Option<f64> {
    let mut slaves = log_times(service, "+slave slave");
    let mut sentinels = log_times(service, "+sentinel sentinel");
    slaves.sort_by(f64::total_cmp);
    sentinels.sort_by(f64::total_cmp);
    let s = if replicas == 0 {
        Some(0.0)
    } else {
        slaves.get(replicas - 1).copied()
    };
    let p = if peers == 0 {
        Some(0.0)
    } else {
        sentinels.get(peers - 1).copied()
    };
    Some(s?.max(p?))
}

/// Reads the timeline of a start that began at unix time `t0`.
/// `master`/`replicas`/`sentinels` are service names; `ready` the unix
/// time of haswarm's `Ready`.
pub fn read(
    t0: f64,
    services: &[String],
    (master, replicas, sentinels): (&str, &[String], &[String]),
    ready: Option<f64>,
) -> Timeline {
    let rel = |t: Option<f64>| t.map(|t| t - t0);
    let all: Vec<String> = services.iter().flat_map(|s| containers(s)).collect();
    Timeline {
        services_created: rel(min(inspect_times(
            "service",
            "{{.CreatedAt.Format \"2006-01-02T15:04:05.999999999Z07:00\"}}",
            services,
        ))),
        first_running: rel(min(inspect_times(
            "container",
            "{{.State.StartedAt}}",
            &all,
        ))),
        master_up: rel(min(log_times(master, "Ready to accept connections"))),
        replicas_linked: rel(max(replicas.iter().filter_map(|r| {
            min(log_times(r, "sync: Finished with success")
                .into_iter()
                .chain(log_times(r, "Successful partial resynchronization")))
        }))
        .filter(|_| !replicas.is_empty())),
        sentinels_agree: rel(sentinels
            .iter()
            .map(|s| sentinel_agrees(s, replicas.len(), sentinels.len() - 1))
            .try_fold(0.0_f64, |m, t| Some(m.max(t?)))),
        ready: rel(ready),
    }
}

impl Timeline {
    /// The steps, named, for printing and for the summary.
    pub fn steps(&self) -> [(&'static str, Option<f64>); 6] {
        [
            ("services created", self.services_created),
            ("first container running", self.first_running),
            ("master up", self.master_up),
            ("replicas linked", self.replicas_linked),
            ("sentinels agree", self.sentinels_agree),
            ("Ready", self.ready),
        ]
    }

    /// One line: every step seen, in order.
    pub fn line(&self) -> String {
        self.steps()
            .iter()
            .filter_map(|(what, t)| t.map(|t| format!("{what} {}", secs(t))))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
