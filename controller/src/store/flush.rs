//! Group commit: writers apply their batch, ask for a flush and wait; one task
//! flushes for all writes made so far, brings the mirror (when there is one)
//! up to date for the objects they changed, then publishes their changes to
//! watchers and wakes the writers. Under load, one fsync and one round of
//! mirror writes cover many writes.

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

    /// Asks for a flush covering change `seq`.
    pub(crate) fn request(&self, _seq: u64) {
        self.wake.notify_one();
    }

    /// Waits until every change up to `seq` is on disk (and mirrored).
    pub(crate) async fn wait_durable(&self, seq: u64, timeout: Duration) -> Result<(), StoreError> {
        let mut rx = self.durable.subscribe();
        let reached =
            tokio::time::timeout(
                timeout,
                async move { rx.wait_for(|d| *d >= seq).await.is_ok() },
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
        let mut last_failure: Option<String> = None;
        loop {
            // A notification sent while no one waits is kept, so none is lost.
            flusher.wake.notified().await;
            let Some(inner) = store.upgrade() else {
                return;
            };
            let (target, seq, events, dirty) = {
                let mut w = inner
                    .writer
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                (
                    w.rv,
                    w.seq,
                    std::mem::take(&mut w.pending),
                    std::mem::take(&mut w.dirty),
                )
            };
            let db = inner.db.clone();
            let path = inner.path.clone();
            let flush = tokio::task::spawn_blocking(move || {
                db.flush()?;
                sync_to_disk(&path).map_err(sled::Error::Io)?;
                Ok::<_, sled::Error>(())
            });
            // The mirror is written while the disk syncs: both must finish
            // before anyone hears of the changes. A crash between the two
            // leaves one side newer, which the rebuild at the next start sorts
            // out (unacknowledged changes may or may not survive).
            let mirrored = async {
                match &inner.mirror {
                    Some(m) => m
                        .sync(&dirty, |kind, name| inner.current(kind, name))
                        .await
                        .err()
                        .map(|e| e.to_string()),
                    None => None,
                }
            };
            let (flushed, mirrored) = tokio::join!(flush, mirrored);
            let failed = match flushed {
                Ok(Ok(())) => mirrored,
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(e.to_string()),
            };
            match failed {
                None => {
                    if last_failure.take().is_some() {
                        tracing::info!("store flush succeeded again");
                    }
                    inner.published.store(target, Ordering::SeqCst);
                    for e in events {
                        // No receivers is fine: nobody is watching.
                        let _ = inner.live.send(e);
                    }
                    flusher.durable.send_replace(seq);
                    if let Some(m) = inner.mirror.clone() {
                        tokio::spawn(async move { m.prune().await });
                    }
                }
                Some(reason) => {
                    // Once per cause, not every 200 ms.
                    if last_failure.as_deref() != Some(reason.as_str()) {
                        tracing::error!(%reason, "store flush failed; retrying every 200 ms");
                        last_failure = Some(reason);
                    }
                    {
                        let mut w = inner
                            .writer
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        let newer = std::mem::take(&mut w.pending);
                        w.pending = events;
                        w.pending.extend(newer);
                        w.dirty.extend(dirty);
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
