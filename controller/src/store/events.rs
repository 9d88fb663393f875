//! An object's events and the credentials the controller generated for it:
//! kept beside the object, never part of what the API serves as it.

use chrono::Utc;
use haswarm_crds::{Event, EventType};

use super::keys::Key;
use super::{decode, encode, sync_credentials, Store, StoreError, EVENTS_PER_OBJECT};

impl Store {
    /// Records an event on an object. Best effort: not flushed on its own
    /// (the next write's flush carries it), never a reason to fail a reconcile.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the object does not exist.
    pub fn record_event(
        &self,
        kind: &str,
        name: &str,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        let _w = self.lock();
        if !self.contains(kind, name) {
            return Err(StoreError::NotFound {
                kind: kind.to_owned(),
                name: name.to_owned(),
            });
        }
        let key = Key::events(kind, name);
        let mut events = self.events(kind, name)?;
        let now = Utc::now();
        if let Some(e) = events
            .iter_mut()
            .find(|e| e.type_ == type_ && e.reason == reason && e.message == message)
        {
            e.count = e.count.saturating_add(1);
            e.last_timestamp = now;
        } else {
            events.push(Event {
                type_,
                reason: reason.to_owned(),
                message: message.to_owned(),
                count: 1,
                first_timestamp: now,
                last_timestamp: now,
            });
        }
        events.sort_by_key(|e| e.last_timestamp);
        let excess = events.len().saturating_sub(EVENTS_PER_OBJECT);
        events.drain(..excess);
        self.inner.db.insert(key, encode(&events))?;
        Ok(())
    }

    /// A credential the controller generated for an object (a password), or
    /// `None`. Credentials are never part of the object: the API does not
    /// serve them, and they go with the object when it is deleted.
    ///
    /// # Errors
    /// I/O errors.
    pub fn credential(
        &self,
        kind: &str,
        name: &str,
        purpose: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .inner
            .db
            .get(Key::credential(kind, name, purpose))?
            .map(|v| v.to_vec()))
    }

    /// Stores a credential durably (flushed before returning), replacing any
    /// previous value for the purpose.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the object does not exist; I/O errors.
    pub async fn put_credential(
        &self,
        kind: &str,
        name: &str,
        purpose: &str,
        value: &[u8],
    ) -> Result<(), StoreError> {
        let rv = {
            let w = self.lock();
            if !self.contains(kind, name) {
                return Err(StoreError::NotFound {
                    kind: kind.to_owned(),
                    name: name.to_owned(),
                });
            }
            self.inner
                .db
                .insert(Key::credential(kind, name, purpose), value)?;
            w.rv
        };
        // Ride on the next group flush, and make sure there is one.
        self.inner.flush.request(rv);
        self.inner.db.flush_async().await?;
        sync_credentials(&self.inner.path).await;
        Ok(())
    }

    /// An object's events, oldest first.
    ///
    /// # Errors
    /// I/O and decoding errors.
    pub fn events(&self, kind: &str, name: &str) -> Result<Vec<Event>, StoreError> {
        let key = Key::events(kind, name);
        match self.inner.db.get(&key)? {
            Some(v) => decode(&key, &v),
            None => Ok(Vec::new()),
        }
    }
}
