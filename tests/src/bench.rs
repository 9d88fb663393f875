//! Figures the benchmarks print, and the client container they measure with.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// A client container started by `docker run -i` that prints one line per
/// attempt, and the attempts parsed so far. The password goes in on standard
/// input, then the pipe stays open. Dropping it removes the container and
/// reaps `docker run`.
#[derive(Debug)]
pub struct Client<A> {
    name: String,
    child: Child,
    attempts: Arc<Mutex<Vec<A>>>,
}

impl<A: Clone + Send + 'static> Client<A> {
    /// Runs `cmd` (a `docker run -i --name NAME ...` command line), writes
    /// `password` to it and collects every line `parse` accepts.
    ///
    /// # Panics
    /// When docker cannot be started (a bench needs it).
    pub fn start(
        name: &str,
        mut cmd: Command,
        password: &str,
        parse: fn(&str) -> Option<A>,
    ) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker run starts the client");
        if let Some(stdin) = child.stdin.as_mut() {
            let _ = writeln!(stdin, "{password}");
        }
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("client stdout");
        let sink = Arc::clone(&attempts);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(a) = parse(&line) {
                    sink.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(a);
                }
            }
        });
        Self {
            name: name.to_owned(),
            child,
            attempts,
        }
    }

    /// The attempts printed so far.
    pub fn attempts(&self) -> Vec<A> {
        self.attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl<A> Drop for Client<A> {
    fn drop(&mut self) {
        crate::docker::docker(&["rm", "-f", &self.name]);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Unix time of an RFC 3339 timestamp as `docker logs -t` prints it
/// (`2026-11-23T14:15:42.123456789Z`).
pub fn unix_time(ts: &str) -> Option<f64> {
    let t = chrono::DateTime::parse_from_rfc3339(ts).ok()?;
    Some(t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9)
}

/// Seconds with milliseconds, e.g. `1.299 s`.
pub fn secs(d: f64) -> String {
    format!("{d:.3} s")
}

/// The median of sorted samples (the mean of the middle two for an even count).
pub fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[1.0, 2.0, 9.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), 3.0);
        assert_eq!(median(&[]), 0.0);
        assert_eq!(secs(1.2994), "1.299 s");
    }

    #[test]
    fn docker_log_timestamps_are_unix_times() {
        assert_eq!(unix_time("1970-01-01T00:00:01.5Z"), Some(1.5));
        let t = unix_time("2026-11-23T14:15:42.123456789Z").expect("parses");
        assert!((t - 1_795_443_342.123_457).abs() < 1e-5, "{t}");
        assert_eq!(unix_time("14:15:42"), None);
    }
}
