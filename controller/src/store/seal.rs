//! Sealing credentials for the mirror: ChaCha20-Poly1305 under a key that
//! lives only in a Swarm secret, so a Swarm config (readable by anyone with
//! the manager API) never holds a password in clear.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// What a sealed credential starts with, as the store keeps it; a value
/// without it was stored in clear (by a store without a key).
const SEALED: &[u8] = b"sealed1:";
const NONCE_LEN: usize = 12;

/// Why a key could not be read or a sealed value opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key file is missing or unreadable.
    #[error("cannot read the mirror key {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The key file does not hold 64 hex digits.
    #[error("the mirror key {path} must hold {} hex digits (32 random bytes), as `haswarmctl install` creates it; it holds {found} characters", KEY_LEN * 2)]
    Malformed { path: String, found: usize },
    /// Wrong key, or the value was changed or moved to another object.
    #[error(
        "a sealed credential does not open with this key (another store's key, or a changed value)"
    )]
    Open,
}

/// The key credentials are sealed with.
#[derive(Clone)]
pub struct SealKey(Key);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(…)")
    }
}

impl SealKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Key::from(bytes))
    }

    /// A new random key, as hex text (what the key secret holds).
    pub fn generate_hex() -> String {
        let mut bytes = [0u8; KEY_LEN];
        rand::rng().fill_bytes(&mut bytes);
        hex::encode(bytes)
    }

    /// Reads a key file: 64 hex digits, surrounding whitespace ignored.
    ///
    /// # Errors
    /// [`SealError::Read`] or [`SealError::Malformed`].
    pub fn read(path: &std::path::Path) -> Result<Self, SealError> {
        let text = std::fs::read_to_string(path).map_err(|source| SealError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let text = text.trim();
        let malformed = || SealError::Malformed {
            path: path.display().to_string(),
            found: text.len(),
        };
        let bytes = hex::decode(text).map_err(|_| malformed())?;
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|_| malformed())?;
        Ok(Self::from_bytes(bytes))
    }

    /// Seals `plain` for the place `context` names (store, object and
    /// purpose): a sealed value copied to another object does not open.
    /// The result is base64 of nonce and ciphertext.
    pub fn seal(&self, context: &str, plain: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let cipher = ChaCha20Poly1305::new(&self.0);
        // Encryption fails only for inputs of 2^38 bytes and more.
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: context.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    /// Opens what [`SealKey::seal`] made for the same `context`.
    ///
    /// # Errors
    /// [`SealError::Open`] for another key, context or a changed value.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| SealError::Open)?;
        if raw.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, body) = raw.split_at(NONCE_LEN);
        ChaCha20Poly1305::new(&self.0)
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SealError::Open)
    }
}

/// Where a credential belongs: what its seal is bound to.
fn credential_context(store_id: &str, kind: &str, name: &str, purpose: &str) -> String {
    format!("haswarm-credential:{store_id}:{kind}:{name}:{purpose}")
}

/// Whether a stored credential is sealed.
pub fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(SEALED)
}

impl SealKey {
    /// A credential as the store keeps it: sealed to its store, object and
    /// purpose, so that the value can be copied verbatim to the mirror and back.
    pub fn seal_credential(
        &self,
        store_id: &str,
        (kind, name, purpose): (&str, &str, &str),
        plain: &[u8],
    ) -> Vec<u8> {
        let ctx = credential_context(store_id, kind, name, purpose);
        let mut out = SEALED.to_vec();
        out.extend_from_slice(self.seal(&ctx, plain).as_bytes());
        out
    }

    /// The clear value of a stored credential (one stored in clear is returned as is).
    ///
    /// # Errors
    /// [`SealError::Open`] for a value sealed with another key or for another place.
    pub fn open_credential(
        &self,
        store_id: &str,
        (kind, name, purpose): (&str, &str, &str),
        stored: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        match stored.strip_prefix(SEALED) {
            Some(sealed) => {
                let text = std::str::from_utf8(sealed).map_err(|_| SealError::Open)?;
                self.open(&credential_context(store_id, kind, name, purpose), text)
            }
            None => Ok(stored.to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SealKey {
        SealKey::from_bytes([b; KEY_LEN])
    }

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_context() {
        let sealed = key(1).seal("s:PostgresCluster:db:superuser", b"hunter2");
        assert!(!sealed.contains("hunter2"));
        assert_eq!(
            key(1)
                .open("s:PostgresCluster:db:superuser", &sealed)
                .expect("opens"),
            b"hunter2"
        );
        assert!(key(2)
            .open("s:PostgresCluster:db:superuser", &sealed)
            .is_err());
        assert!(key(1)
            .open("s:PostgresCluster:other:superuser", &sealed)
            .is_err());
        assert!(key(1).open("x", "not base64!").is_err());
        assert!(key(1).open("x", "AAAA").is_err());
    }

    #[test]
    fn credentials_are_kept_sealed_and_clear_ones_read_as_they_are() {
        let at = ("PostgresCluster", "db", "superuser");
        let stored = key(1).seal_credential("s1", at, b"pw");
        assert!(is_sealed(&stored) && !is_sealed(b"pw"));
        assert_eq!(
            key(1).open_credential("s1", at, &stored).expect("opens"),
            b"pw"
        );
        assert!(key(1).open_credential("s2", at, &stored).is_err());
        assert!(key(2).open_credential("s1", at, &stored).is_err());
        assert_eq!(
            key(2).open_credential("s1", at, b"clear").expect("as is"),
            b"clear"
        );
    }

    #[test]
    fn sealing_twice_gives_different_text() {
        assert_ne!(key(1).seal("c", b"p"), key(1).seal("c", b"p"));
    }

    #[test]
    fn key_files_hold_64_hex_digits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good");
        std::fs::write(&good, format!("{}\n", SealKey::generate_hex())).expect("write");
        assert!(SealKey::read(&good).is_ok());
        let short = dir.path().join("short");
        std::fs::write(&short, "abcd").expect("write");
        let e = SealKey::read(&short).expect_err("short");
        assert!(e.to_string().contains("64 hex digits"), "{e}");
        assert!(SealKey::read(&dir.path().join("missing")).is_err());
        assert_eq!(format!("{:?}", key(7)), "SealKey(…)");
    }
}
