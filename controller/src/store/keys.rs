//! The key layout of the one sled tree. Keys are namespaced by a short prefix
//! so that a prefix scan reads one kind of entry.

/// Key builders and fixed keys.
pub(crate) struct Key;

impl Key {
    /// Layout version (u32, big-endian).
    pub(crate) const SCHEMA: &'static [u8] = b"m:schema";
    /// Last resourceVersion handed out (u64, big-endian).
    pub(crate) const RV: &'static [u8] = b"m:rv";
    /// Log entries up to this resourceVersion have been removed (u64, big-endian).
    pub(crate) const COMPACTED: &'static [u8] = b"m:compacted";
    /// This store's identity (a uuid, set when the store is created).
    pub(crate) const ID: &'static [u8] = b"m:id";
    /// Prefix of every object key.
    pub(crate) const OBJECT_PREFIX: &'static [u8] = b"o:";
    /// Prefix of every credential key.
    pub(crate) const CREDENTIAL_PREFIX: &'static [u8] = b"c:";

    /// An object: `o:<kind>:<name>`. Names cannot contain ':', so keys are unambiguous.
    pub(crate) fn object(kind: &str, name: &str) -> Vec<u8> {
        format!("o:{kind}:{name}").into_bytes()
    }

    /// Every object of a kind.
    pub(crate) fn object_prefix(kind: &str) -> Vec<u8> {
        format!("o:{kind}:").into_bytes()
    }

    /// An object's events.
    pub(crate) fn events(kind: &str, name: &str) -> Vec<u8> {
        format!("e:{kind}:{name}").into_bytes()
    }

    /// A credential the controller generated for an object: `c:<kind>:<name>:<purpose>`.
    pub(crate) fn credential(kind: &str, name: &str, purpose: &str) -> Vec<u8> {
        format!("c:{kind}:{name}:{purpose}").into_bytes()
    }

    /// Every credential of an object.
    pub(crate) fn credential_prefix(kind: &str, name: &str) -> Vec<u8> {
        format!("c:{kind}:{name}:").into_bytes()
    }

    /// A change-log entry; big-endian so that byte order is version order.
    pub(crate) fn log(rv: u64) -> Vec<u8> {
        let mut k = b"l:".to_vec();
        k.extend_from_slice(&rv.to_be_bytes());
        k
    }
}
