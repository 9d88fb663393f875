//! What a test must undo even when its process ends before the test
//! unwinds: the budget watchdog runs these before it ends a stuck test
//! process, so the cleanup guards' work is done either way.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

type Undo = Arc<dyn Fn() + Send + Sync>;

static PENDING: Mutex<BTreeMap<u64, Undo>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Registers `undo`, to run if the process ends before [`Registered`] is
/// dropped (the guard that registered it then does the work itself).
pub fn register(undo: impl Fn() + Send + Sync + 'static) -> Registered {
    let key = NEXT.fetch_add(1, Ordering::Relaxed);
    PENDING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key, Arc::new(undo));
    Registered(key)
}

/// Runs every undo still registered, newest first (the reverse of the
/// order the guards would drop in), and forgets them.
pub fn run_all() {
    let pending = std::mem::take(&mut *PENDING.lock().unwrap_or_else(PoisonError::into_inner));
    for undo in pending.into_values().rev() {
        // One undo that panics must not keep the others from running.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| undo()));
    }
}

/// A registration; dropping it unregisters the undo.
#[derive(Debug)]
pub struct Registered(u64);

impl Drop for Registered {
    fn drop(&mut self) {
        PENDING
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn only_the_undos_still_registered_run_newest_first() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let runs = Arc::new(AtomicUsize::new(0));
        let (l1, l2, l3) = (log.clone(), log.clone(), log.clone());
        let r = runs.clone();
        let first = register(move || l1.lock().expect("log").push(1));
        let dropped = register(move || {
            r.fetch_add(1, Ordering::Relaxed);
        });
        let last = register(move || l3.lock().expect("log").push(3));
        let panics = register(move || {
            l2.lock().expect("log").push(2);
            panic!("an undo that fails");
        });
        drop(dropped);
        run_all();
        assert_eq!(*log.lock().expect("log"), [2, 3, 1]);
        assert_eq!(
            runs.load(Ordering::Relaxed),
            0,
            "a dropped guard's undo does not run"
        );
        // Each runs once: the guards dropped after do nothing more.
        drop((first, last, panics));
        run_all();
        assert_eq!(log.lock().expect("log").len(), 3);
    }
}
