//! Watching the store: the changes to objects in order, from the retained
//! log first, then live.

use std::sync::atomic::Ordering;

use futures::Stream;
use tokio::sync::broadcast;

use super::keys::Key;
use super::{decode, ChangeType, Record, Store, StoreError, WatchEvent, WatchFrom};

impl Store {
    /// Changes to objects of `kind` (every kind when `None`), in order.
    ///
    /// # Errors
    /// [`StoreError::Gone`] when `from` is older than the retained log. The
    /// stream itself ends with [`StoreError::Lagged`] if the watcher falls behind.
    pub fn watch(
        &self,
        kind: Option<&str>,
        from: WatchFrom,
    ) -> Result<impl Stream<Item = Result<WatchEvent, StoreError>> + Send + 'static, StoreError>
    {
        let live = self.inner.live.subscribe();
        let kind_filter: Option<String> = kind.map(str::to_owned);
        let matches = |k: &str| kind_filter.as_deref().is_none_or(|want| want == k);
        let mut backlog = Vec::new();
        let start = match from {
            WatchFrom::Now => {
                // The snapshot is taken under the write lock so that it and the
                // live stream neither overlap nor leave a gap.
                let w = self.lock();
                for item in self.inner.db.scan_prefix(Key::OBJECT_PREFIX) {
                    let (k, v) = item?;
                    let r: Record = decode(&k, &v)?;
                    if matches(&r.kind) {
                        backlog.push(WatchEvent {
                            type_: ChangeType::Added,
                            object: r,
                        });
                    }
                }
                w.rv
            }
            WatchFrom::After(from) => {
                let compacted = self.lock().compacted;
                if from < compacted {
                    return Err(StoreError::Gone {
                        requested: from,
                        compacted,
                    });
                }
                let published = self.inner.published.load(Ordering::SeqCst);
                if from < published {
                    for item in self
                        .inner
                        .db
                        .range(Key::log(from + 1)..=Key::log(published))
                    {
                        let (k, v) = item?;
                        let e: WatchEvent = decode(&k, &v)?;
                        if matches(&e.object.kind) {
                            backlog.push(e);
                        }
                    }
                }
                published.max(from)
            }
        };
        let live_kind = kind_filter.clone();
        let live = futures::stream::unfold(Some(live), move |rx| {
            let live_kind = live_kind.clone();
            async move {
                let mut rx = rx?;
                loop {
                    match rx.recv().await {
                        Ok(e)
                            if e.resource_version() > start
                                && live_kind.as_deref().is_none_or(|k| k == e.object.kind) =>
                        {
                            return Some((Ok((*e).clone()), Some(rx)));
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            return Some((Err(StoreError::Lagged(n)), None));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(futures::StreamExt::chain(
            futures::stream::iter(backlog.into_iter().map(Ok)),
            live,
        ))
    }
}
