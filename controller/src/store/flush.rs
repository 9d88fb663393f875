//! Group commit: writers apply their batch, ask for a flush and wait; one task
//! flushes for all writes made so far, then publishes their changes to
//! watchers and wakes the writers. Under load, one fsync covers many writes.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::{Inner, StoreError};

/// The writers' side of the flush task.
#[derive(Clone)]
pub(crate) struct Flusher {
    wake: Arc<Notify>,
    durable: watch::Sender<u64>,
}

impl Flusher {
    pub(crate) fn new(durable_rv: u64) -> Self {
        Self {
            wake: Arc::new(Notify::new()),
            durable: watch::Sender::new(durable_rv),
        }
    }

    /// Asks for a flush covering `rv`.
    pub(crate) fn request(&self, _rv: u64) {
        self.wake.notify_one();
    }

    /// Waits until everything up to `rv` is on disk.
    pub(crate) async fn wait_durable(&self, rv: u64, timeout: Duration) -> Result<(), StoreError> {
        let mut rx = self.durable.subscribe();
        let reached =
            tokio::time::timeout(
                timeout,
                async move { rx.wait_for(|d| *d >= rv).await.is_ok() },
            )
            .await;
        match reached {
            Ok(true) => Ok(()),
            _ => Err(StoreError::Unavailable(timeout)),
        }
    }
}

/// Starts the flush task. It holds the store weakly and ends once the store is dropped.
pub(crate) fn spawn(store: Weak<Inner>, flusher: Flusher) {
    tokio::spawn(async move {
        loop {
            // A notification sent while no one waits is kept, so none is lost.
            flusher.wake.notified().await;
            let Some(inner) = store.upgrade() else {
                return;
            };
            let (target, events) = {
                let mut w = inner
                    .writer
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                (w.rv, std::mem::take(&mut w.pending))
            };
            let db = inner.db.clone();
            let path = inner.path.clone();
            let flushed = tokio::task::spawn_blocking(move || {
                db.flush()?;
                sync_to_disk(&path).map_err(sled::Error::Io)?;
                Ok::<_, sled::Error>(())
            })
            .await;
            match flushed {
                Ok(Ok(_)) => {
                    inner.published.store(target, Ordering::SeqCst);
                    for e in events {
                        // No receivers is fine: nobody is watching.
                        let _ = inner.live.send(e);
                    }
                    flusher.durable.send_replace(target);
                }
                failed => {
                    let reason = match failed {
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => e.to_string(),
                        Ok(Ok(_)) => String::new(),
                    };
                    tracing::error!(%reason, "store flush failed; retrying");
                    {
                        let mut w = inner
                            .writer
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        let newer = std::mem::take(&mut w.pending);
                        w.pending = events;
                        w.pending.extend(newer);
                    }
                    drop(inner);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    flusher.wake.notify_one();
                }
            }
        }
    });
}

/// sled's flush writes its log with `sync_file_range`, which survives a
/// process crash but not a power loss (it flushes neither the disk cache nor
/// the file size). An `fsync` of the log file and the folder makes an
/// acknowledged write survive both. Linux applies an fsync through any file
/// descriptor to the file itself, so a fresh read-only one is enough.
pub(crate) fn sync_to_disk(path: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(path.join("db"))?.sync_all()?;
    std::fs::File::open(path)?.sync_all()
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Wake the flush task so it sees the store is gone and ends.
        self.flush.wake.notify_one();
    }
}
