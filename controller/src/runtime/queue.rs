//! The work queue between "something changed" and "reconcile it".
//!
//! # Guarantees
//! - De-duplication: a key scheduled many times before it runs runs once.
//! - At most one reconcile per key in flight; a key scheduled while it runs
//!   runs again right after (the change it was scheduled for is not lost).
//! - At most `concurrency` reconciles in flight in total.
//! - A key scheduled for several times runs at the earliest of them.
//! - Errors back off per key, exponentially with jitter, up to a ceiling; a
//!   success resets the key's backoff.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What a reconcile asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run again after this long (e.g. to poll a data plane).
    Requeue(Duration),
    /// Nothing until something changes.
    AwaitChange,
}

impl Action {
    /// Runs again after `d`.
    pub fn requeue(d: Duration) -> Self {
        Self::Requeue(d)
    }
}

/// Per-key exponential backoff.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// Delay after the first error.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Random spread, as a fraction of the delay (0.2 = ±20%), so that many
    /// failing keys do not retry in lockstep.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            max: Duration::from_secs(300),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay before retry number `failures` (1 for the first failure), without jitter.
    pub fn nominal(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << exp).min(self.max)
    }

    fn delay(&self, failures: u32) -> Duration {
        let nominal = self.nominal(failures).as_secs_f64();
        let spread = rand::rng().random_range(-self.jitter..=self.jitter);
        Duration::from_secs_f64((nominal * (1.0 + spread)).max(0.0))
    }
}

enum Msg<K> {
    Schedule(K, Duration),
    Done(K, Result<Action, ()>),
}

/// A handle to schedule keys; cheap to clone.
#[derive(Debug)]
pub struct Scheduler<K> {
    tx: mpsc::UnboundedSender<Msg<K>>,
}

impl<K> Clone for Scheduler<K> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<K> Debug for Msg<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Schedule(..) => "Schedule",
            Self::Done(..) => "Done",
        })
    }
}

impl<K: Send + 'static> Scheduler<K> {
    /// Runs `key` as soon as possible.
    pub fn schedule(&self, key: K) {
        self.schedule_after(key, Duration::ZERO);
    }

    /// Runs `key` after `delay` (or earlier, if scheduled earlier too).
    pub fn schedule_after(&self, key: K, delay: Duration) {
        // A closed queue means the runtime is stopping; there is nothing to do.
        let _ = self.tx.send(Msg::Schedule(key, delay));
    }
}

/// Queue settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QueueConfig {
    /// Most reconciles in flight at once.
    pub concurrency: usize,
    /// Error backoff.
    pub backoff: Backoff,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            backoff: Backoff::default(),
        }
    }
}

/// Counters the queue keeps, for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Schedule requests received.
    pub adds: u64,
    /// Reconciles started.
    pub runs: u64,
    /// Reconciles that failed and were retried.
    pub retries: u64,
    /// Keys waiting (due or not).
    pub depth: usize,
}

struct State<K> {
    /// When each waiting key is due.
    due: HashMap<K, Instant>,
    /// Due time -> keys, to find the next one.
    by_time: BTreeMap<Instant, HashSet<K>>,
    in_flight: HashSet<K>,
    /// Keys scheduled while running, with the time asked for.
    again: HashMap<K, Instant>,
    failures: HashMap<K, u32>,
    stats: QueueStats,
}

impl<K: Clone + Eq + Hash> State<K> {
    fn new() -> Self {
        Self {
            due: HashMap::new(),
            by_time: BTreeMap::new(),
            in_flight: HashSet::new(),
            again: HashMap::new(),
            failures: HashMap::new(),
            stats: QueueStats::default(),
        }
    }

    fn insert(&mut self, key: K, at: Instant) {
        if self.in_flight.contains(&key) {
            let slot = self.again.entry(key).or_insert(at);
            *slot = (*slot).min(at);
            return;
        }
        if let Some(old) = self.due.get(&key).copied() {
            if old <= at {
                return;
            }
            if let Some(set) = self.by_time.get_mut(&old) {
                set.remove(&key);
                if set.is_empty() {
                    self.by_time.remove(&old);
                }
            }
        }
        self.due.insert(key.clone(), at);
        self.by_time.entry(at).or_default().insert(key);
    }

    fn handle(&mut self, msg: Msg<K>, backoff: &Backoff) {
        match msg {
            Msg::Schedule(key, delay) => {
                self.stats.adds += 1;
                self.insert(key, Instant::now() + delay);
            }
            Msg::Done(key, result) => {
                self.in_flight.remove(&key);
                let now = Instant::now();
                let next = match result {
                    Ok(action) => {
                        self.failures.remove(&key);
                        match action {
                            Action::Requeue(d) => Some(now + d),
                            Action::AwaitChange => None,
                        }
                    }
                    Err(()) => {
                        self.stats.retries += 1;
                        let n = self.failures.entry(key.clone()).or_insert(0);
                        *n = n.saturating_add(1);
                        Some(now + backoff.delay(*n))
                    }
                };
                let again = self.again.remove(&key);
                let at = match (next, again) {
                    // A change while running wins over a requeue, but not
                    // over an error's backoff: retrying a failing key at
                    // every event would hammer what is failing.
                    (Some(n), Some(a)) if self.failures.contains_key(&key) => Some(n.max(a)),
                    (Some(n), Some(a)) => Some(n.min(a)),
                    (n, a) => n.or(a),
                };
                if let Some(at) = at {
                    self.insert(key, at);
                }
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.by_time.keys().next().copied()
    }

    fn pop_ready(&mut self, now: Instant) -> Option<K> {
        let (&at, set) = self.by_time.iter_mut().next()?;
        if at > now {
            return None;
        }
        let key = set.iter().next().cloned()?;
        set.remove(&key);
        if set.is_empty() {
            self.by_time.remove(&at);
        }
        self.due.remove(&key);
        Some(key)
    }
}

/// Runs the queue until every [`Scheduler`] is dropped and no work remains,
/// calling `work(key)` for each due key. `on_stats` sees the counters after
/// every change (for metrics).
pub fn spawn<K, W, F>(
    config: QueueConfig,
    work: W,
    on_stats: impl Fn(&QueueStats) + Send + 'static,
) -> (Scheduler<K>, tokio::task::JoinHandle<()>)
where
    K: Clone + Eq + Hash + Send + Sync + Debug + 'static,
    W: Fn(K) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Action, ()>> + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg<K>>();
    let scheduler = Scheduler { tx: tx.clone() };
    let done_tx = tx;
    let work = Arc::new(work);
    let handle = tokio::spawn(async move {
        let mut st = State::<K>::new();
        let mut open = true;
        loop {
            // Start everything due, up to the concurrency limit.
            let now = Instant::now();
            while st.in_flight.len() < config.concurrency.max(1) {
                let Some(key) = st.pop_ready(now) else { break };
                st.in_flight.insert(key.clone());
                st.stats.runs += 1;
                let work = Arc::clone(&work);
                let done = done_tx.clone();
                tokio::spawn(async move {
                    let result = work(key.clone()).await;
                    let _ = done.send(Msg::Done(key, result));
                });
            }
            st.stats.depth = st.due.len();
            on_stats(&st.stats);
            if !open && st.in_flight.is_empty() && st.due.is_empty() {
                return;
            }
            // Sleep until the next due key only if a slot is free to run it.
            let wake = st
                .next_due()
                .filter(|_| st.in_flight.len() < config.concurrency.max(1));
            let msg = match wake {
                Some(at) => tokio::select! {
                    m = rx.recv() => m,
                    () = tokio::time::sleep_until(at) => continue,
                },
                None => rx.recv().await,
            };
            let Some(msg) = msg else {
                // Unreachable while a worker holds `done_tx`; kept for clarity.
                open = false;
                continue;
            };
            // Take everything already queued before starting work, so that a
            // burst of events for one key becomes one reconcile.
            st.handle(msg, &config.backoff);
            while let Ok(m) = rx.try_recv() {
                st.handle(m, &config.backoff);
            }
        }
    });
    (scheduler, handle)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use super::*;

    type Log = Arc<Mutex<Vec<(String, Duration)>>>;

    type Work = std::pin::Pin<Box<dyn Future<Output = Result<Action, ()>> + Send>>;

    /// A worker that records (key, time since start), sleeps `busy`, and returns what `result` says.
    fn recorder(
        start: Instant,
        busy: Duration,
        result: impl Fn(&str, usize) -> Result<Action, ()> + Send + Sync + 'static,
    ) -> (
        Log,
        Arc<AtomicUsize>,
        impl Fn(String) -> Work + Send + Sync + 'static,
    ) {
        let log: Log = Arc::default();
        let running = Arc::new(AtomicUsize::new(0));
        let max_running = Arc::new(AtomicUsize::new(0));
        let (l, r, m) = (log.clone(), running.clone(), max_running.clone());
        let result = Arc::new(result);
        let calls = Arc::new(AtomicUsize::new(0));
        let work = move |key: String| {
            let (l, r, m, result, calls) = (
                l.clone(),
                r.clone(),
                m.clone(),
                result.clone(),
                calls.clone(),
            );
            Box::pin(async move {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                l.lock().expect("log").push((key.clone(), start.elapsed()));
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(busy).await;
                r.fetch_sub(1, Ordering::SeqCst);
                result(&key, n)
            }) as Work
        };
        (log, max_running, work)
    }

    fn keys(log: &Log) -> Vec<String> {
        log.lock()
            .expect("log")
            .iter()
            .map(|(k, _)| k.clone())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn duplicates_before_a_run_collapse_into_one() {
        let (log, _, work) = recorder(Instant::now(), Duration::ZERO, |_, _| {
            Ok(Action::AwaitChange)
        });
        let (s, _h) = spawn(QueueConfig::default(), work, |_| {});
        for _ in 0..10 {
            s.schedule("a".to_owned());
        }
        s.schedule("b".to_owned());
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut k = keys(&log);
        k.sort();
        assert_eq!(k, ["a", "b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn one_run_per_key_at_a_time_and_a_change_while_running_is_not_lost() {
        let (log, max_running, work) = recorder(Instant::now(), Duration::from_secs(5), |_, _| {
            Ok(Action::AwaitChange)
        });
        let (s, _h) = spawn(QueueConfig::default(), work, |_| {});
        s.schedule("a".to_owned());
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Changes while the first run is in flight: one more run, after it.
        s.schedule("a".to_owned());
        s.schedule("a".to_owned());
        tokio::time::sleep(Duration::from_secs(20)).await;
        let log = log.lock().expect("log").clone();
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!(
            log[1].1,
            Duration::from_secs(5),
            "the second run starts when the first ends"
        );
        assert_eq!(max_running.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_concurrency_limit_holds() {
        let (log, max_running, work) = recorder(Instant::now(), Duration::from_secs(1), |_, _| {
            Ok(Action::AwaitChange)
        });
        let config = QueueConfig {
            concurrency: 3,
            ..QueueConfig::default()
        };
        let (s, _h) = spawn(config, work, |_| {});
        for i in 0..10 {
            s.schedule(format!("k{i}"));
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(keys(&log).len(), 10);
        assert_eq!(max_running.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_back_off_exponentially_and_success_resets() {
        let backoff = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(8),
            jitter: 0.0,
        };
        // Fails five times, then succeeds, then (scheduled again) fails once more.
        let (log, _, work) = recorder(Instant::now(), Duration::ZERO, |_, n| {
            if n < 5 || n == 6 {
                Err(())
            } else {
                Ok(Action::AwaitChange)
            }
        });
        let (s, _h) = spawn(
            QueueConfig {
                concurrency: 1,
                backoff,
            },
            work,
            |_| {},
        );
        s.schedule("a".to_owned());
        tokio::time::sleep(Duration::from_secs(60)).await;
        let times: Vec<u64> = log
            .lock()
            .expect("log")
            .iter()
            .map(|(_, t)| t.as_secs())
            .collect();
        // Runs at 0, then after 1, 2, 4, 8 (capped), 8 seconds.
        assert_eq!(times, [0, 1, 3, 7, 15, 23]);
        s.schedule("a".to_owned());
        tokio::time::sleep(Duration::from_secs(1)).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let times: Vec<u64> = log
            .lock()
            .expect("log")
            .iter()
            .map(|(_, t)| t.as_secs())
            .collect();
        assert_eq!(
            times.len(),
            8,
            "after the reset the first retry comes after the base delay: {times:?}"
        );
        assert_eq!(times[7] - times[6], 1);
    }

    #[test]
    fn backoff_grows_to_its_ceiling_and_jitter_stays_in_bounds() {
        let b = Backoff::default();
        assert_eq!(b.nominal(1), Duration::from_millis(500));
        assert_eq!(b.nominal(2), Duration::from_secs(1));
        assert_eq!(b.nominal(5), Duration::from_secs(8));
        assert_eq!(b.nominal(40), Duration::from_secs(300));
        for n in 1..12 {
            let d = b.delay(n).as_secs_f64();
            let nominal = b.nominal(n).as_secs_f64();
            assert!(
                d >= nominal * 0.8 - 1e-9 && d <= nominal * 1.2 + 1e-9,
                "{n}: {d} vs {nominal}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn requeue_runs_again_after_the_delay() {
        let (log, _, work) = recorder(Instant::now(), Duration::ZERO, |_, n| {
            if n < 2 {
                Ok(Action::requeue(Duration::from_secs(30)))
            } else {
                Ok(Action::AwaitChange)
            }
        });
        let (s, _h) = spawn(QueueConfig::default(), work, |_| {});
        s.schedule("a".to_owned());
        tokio::time::sleep(Duration::from_secs(100)).await;
        let times: Vec<u64> = log
            .lock()
            .expect("log")
            .iter()
            .map(|(_, t)| t.as_secs())
            .collect();
        assert_eq!(times, [0, 30, 60]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_earliest_schedule_wins() {
        let (log, _, work) = recorder(Instant::now(), Duration::ZERO, |_, _| {
            Ok(Action::AwaitChange)
        });
        let (s, _h) = spawn(QueueConfig::default(), work, |_| {});
        s.schedule_after("a".to_owned(), Duration::from_secs(50));
        s.schedule_after("a".to_owned(), Duration::from_secs(10));
        s.schedule_after("a".to_owned(), Duration::from_secs(30));
        tokio::time::sleep(Duration::from_secs(100)).await;
        let times: Vec<u64> = log
            .lock()
            .expect("log")
            .iter()
            .map(|(_, t)| t.as_secs())
            .collect();
        assert_eq!(times, [10]);
    }
}
