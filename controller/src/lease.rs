//! One writer per store: a lease kept in Swarm's Raft, which a haswarmd
//! must hold to touch the Swarm or acknowledge a write.
//!
//! # The scheme
//! The lease is a Swarm config (`haswarm-lease-<store id>`) whose labels name
//! the holder (a uuid per process) and an epoch. Swarm lets a config's labels
//! be updated only against the version last read, which makes each update a
//! compare-and-swap in Raft.
//! - **Holding.** The holder renews every third of the term. A renewal sent
//!   at instant `t` that succeeds makes the lease valid on this process until
//!   `t + term - margin`, measured on this process's monotonic clock.
//! - **Taking over.** A candidate reads the lease and watches its version.
//!   It takes the lease (a swap that raises the epoch) only once the version
//!   has stayed the same for a whole term on its own clock, or at once when
//!   the holder released it on a clean stop.
//! - **The fence.** Every Docker call of this process ([`crate::swarm`]) and
//!   every mirror write, and so every acknowledgement, first checks that the
//!   lease is valid. A process frozen with its node (`docker pause`) finds
//!   on waking that its monotonic clock has run past the validity: it does
//!   nothing, tries to renew, sees the new holder, and stops.
//!
//! # What it guarantees, and the edges
//! - Two processes never both pass the fence at the same instant, as long as
//!   their clocks run at about the same rate (the margin covers a drift of
//!   `margin / term`).
//! - A Docker request already sent before the freeze may still be carried out
//!   after it: the fence is checked before each call, not inside the engine.
//!   One request per worker at most, and each is idempotent by design (the
//!   next pass of the new holder converges from what it finds).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Label: the store the lease is for.
pub const LEASE_OF: &str = "io.haswarm.lease-of";
/// Label: the holding process (empty once released).
pub const LEASE_HOLDER: &str = "io.haswarm.lease-holder";
/// Label: raised by every takeover.
pub const LEASE_EPOCH: &str = "io.haswarm.lease-epoch";
/// Label: raised by every renewal, so that each one changes the version.
pub const LEASE_RENEWALS: &str = "io.haswarm.lease-renewals";

/// How long a renewal keeps the lease, unless `--lease-term` says otherwise.
pub const DEFAULT_TERM: Duration = Duration::from_secs(15);

/// The part of the term a holder gives up, for clock drift and the time a
/// renewal's answer takes to arrive.
pub fn margin(term: Duration) -> Duration {
    term / 5
}

/// The lease as read from the Swarm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The config's id.
    pub id: String,
    /// The config's version index: what a swap must name.
    pub version: u64,
    /// The holder, empty when released.
    pub holder: String,
    /// The epoch.
    pub epoch: u64,
    /// Renewals within the epoch.
    pub renewals: u64,
}

/// What a candidate does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// No lease exists yet: create it, held.
    Create,
    /// Take it over: the holder released it, or let it lapse.
    Take,
    /// Someone holds it: look again later.
    Wait,
}

/// A candidate's watch: the version it saw and since when it has not changed.
pub type Watched = Option<(u64, Instant)>;

/// Decides a candidate's next step from what it sees now and what it saw.
/// Returns the watch to keep.
pub fn decide(
    seen: Option<&Seen>,
    watched: Watched,
    now: Instant,
    term: Duration,
) -> (Next, Watched) {
    let Some(seen) = seen else {
        return (Next::Create, None);
    };
    if seen.holder.is_empty() {
        return (Next::Take, None);
    }
    match watched {
        Some((version, since)) if version == seen.version => {
            if now.duration_since(since) >= term {
                (Next::Take, watched)
            } else {
                (Next::Wait, watched)
            }
        }
        // First look, or the holder renewed: the term starts again.
        _ => (Next::Wait, Some((seen.version, now))),
    }
}

/// Why this process may not act.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fenced {
    /// Another process holds the store's lease now.
    #[error("this haswarmd lost the store's lease to another haswarmd and does nothing more")]
    Lost,
    /// The lease could not be renewed in time.
    #[error("this haswarmd could not renew the store's lease in time; it acts again once it has")]
    Lapsed,
}

struct State {
    valid_until: Mutex<Instant>,
    lost: AtomicBool,
    lost_tx: watch::Sender<bool>,
}

/// The gate every action passes: open while the lease is held and valid.
#[derive(Clone)]
pub struct Fence(Arc<State>);

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("check", &self.check())
            .finish()
    }
}

impl Fence {
    /// A fence valid until `until`.
    pub fn new(until: Instant) -> Self {
        Self(Arc::new(State {
            valid_until: Mutex::new(until),
            lost: AtomicBool::new(false),
            lost_tx: watch::Sender::new(false),
        }))
    }

    /// Whether this process may act now.
    ///
    /// # Errors
    /// [`Fenced`] saying why not.
    pub fn check(&self) -> Result<(), Fenced> {
        if self.0.lost.load(Ordering::SeqCst) {
            return Err(Fenced::Lost);
        }
        let until = *self
            .0
            .valid_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if Instant::now() < until {
            Ok(())
        } else {
            Err(Fenced::Lapsed)
        }
    }

    /// A renewal sent at `sent` succeeded.
    pub fn renewed(&self, sent: Instant, term: Duration) {
        let mut until = self
            .0
            .valid_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *until = (*until).max(sent + term - margin(term));
    }

    /// Another process holds the lease: closed for good.
    pub fn lose(&self) {
        self.0.lost.store(true, Ordering::SeqCst);
        self.0.lost_tx.send_replace(true);
    }

    /// Completes once the lease is lost.
    pub async fn lost(&self) {
        let mut rx = self.0.lost_tx.subscribe();
        let _ = rx.wait_for(|l| *l).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(version: u64, holder: &str) -> Seen {
        Seen {
            id: "c".into(),
            version,
            holder: holder.into(),
            epoch: 1,
            renewals: 0,
        }
    }

    #[test]
    fn a_candidate_takes_the_lease_only_after_a_whole_term_without_a_renewal() {
        let term = Duration::from_secs(15);
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        struct Row {
            what: &'static str,
            seen: Option<Seen>,
            watched: Watched,
            now: Instant,
            next: Next,
            watched_after: Watched,
        }
        let rows = [
            Row {
                what: "no lease yet",
                seen: None,
                watched: None,
                now: s(0),
                next: Next::Create,
                watched_after: None,
            },
            Row {
                what: "released on a clean stop",
                seen: Some(seen(4, "")),
                watched: None,
                now: s(0),
                next: Next::Take,
                watched_after: None,
            },
            Row {
                what: "first look at a held lease starts the watch",
                seen: Some(seen(4, "a")),
                watched: None,
                now: s(3),
                next: Next::Wait,
                watched_after: Some((4, s(3))),
            },
            Row {
                what: "unchanged for less than a term",
                seen: Some(seen(4, "a")),
                watched: Some((4, s(3))),
                now: s(17),
                next: Next::Wait,
                watched_after: Some((4, s(3))),
            },
            Row {
                what: "unchanged for a whole term",
                seen: Some(seen(4, "a")),
                watched: Some((4, s(3))),
                now: s(18),
                next: Next::Take,
                watched_after: Some((4, s(3))),
            },
            Row {
                what: "a renewal restarts the watch",
                seen: Some(seen(5, "a")),
                watched: Some((4, s(3))),
                now: s(30),
                next: Next::Wait,
                watched_after: Some((5, s(30))),
            },
        ];
        for r in rows {
            let (next, watched) = decide(r.seen.as_ref(), r.watched, r.now, term);
            assert_eq!(next, r.next, "{}", r.what);
            assert_eq!(watched, r.watched_after, "{}", r.what);
        }
    }

    #[test]
    fn the_fence_closes_when_the_validity_ends_and_for_good_when_lost() {
        let term = Duration::from_secs(15);
        let past = Instant::now() - Duration::from_secs(1);
        let f = Fence::new(past);
        assert_eq!(f.check(), Err(Fenced::Lapsed));
        f.renewed(Instant::now(), term);
        assert_eq!(f.check(), Ok(()));
        // An older renewal's answer never shortens the validity.
        f.renewed(past - term, term);
        assert_eq!(f.check(), Ok(()));
        f.lose();
        assert_eq!(f.check(), Err(Fenced::Lost));
        f.renewed(Instant::now(), term);
        assert_eq!(f.check(), Err(Fenced::Lost));
    }

    #[test]
    fn a_holder_stops_before_a_candidate_may_take_over() {
        // The holder's validity starts when its renewal is sent; a candidate's
        // watch starts after that renewal is committed, so later.
        let term = DEFAULT_TERM;
        let sent = Instant::now();
        let holder_stops = sent + term - margin(term);
        let watch_starts = sent + Duration::from_millis(1);
        assert!(holder_stops < watch_starts + term);
    }
}
