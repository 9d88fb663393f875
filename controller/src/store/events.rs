//! An object's events and the credentials the controller generated for it:
//! kept beside the object, never part of what the API serves as it.

use chrono::Utc;
use haswarm_crds::{Event, EventType};

use super::keys::Key;
use super::{decode, encode, Store, StoreError, EVENTS_PER_OBJECT};

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
    /// serve them, and they go with the object when it is deleted. With a
    /// mirror, they are kept sealed with its key, so that no file of the
    /// folder holds one in clear.
    ///
    /// # Errors
    /// I/O errors.
    pub fn credential(
        &self,
        kind: &str,
        name: &str,
        purpose: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(stored) = self.inner.db.get(Key::credential(kind, name, purpose))? else {
            return Ok(None);
        };
        let plain = match &self.inner.mirror {
            Some(m) => m
                .key()
                .open_credential(&self.inner.id, (kind, name, purpose), &stored)?,
            None if super::seal::is_sealed(&stored) => {
                return Err(StoreError::Seal(super::seal::SealError::Open))
            }
            None => stored.to_vec(),
        };
        Ok(Some(plain))
    }

    /// Stores a credential durably (flushed, and mirrored when the store has
    /// a mirror, before returning), replacing any previous value for the
    /// purpose. The object's resourceVersion moves on, so that its mirrored
    /// copy and its credentials are always of one version.
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
        let stored = match &self.inner.mirror {
            Some(m) => m
                .key()
                .seal_credential(&self.inner.id, (kind, name, purpose), value),
            None => value.to_vec(),
        };
        let mut batch = sled::Batch::default();
        batch.insert(Key::credential(kind, name, purpose), stored);
        self.modify_with(kind, name, None, |_| true, batch).await?;
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
