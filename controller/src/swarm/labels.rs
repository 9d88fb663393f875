//! Ownership labels: every Swarm object haswarm creates carries them, every
//! listing filters by them, and nothing without them is ever modified.

use std::collections::HashMap;

use serde::Serialize;

/// Marks an object as haswarm's.
pub const MANAGED_BY: &str = "io.haswarm.managed-by";
/// The value of [`MANAGED_BY`].
pub const MANAGER: &str = "haswarm";
/// `<kind>/<name>` of the owning resource.
pub const OWNER: &str = "io.haswarm.owner";
/// The owning resource's uid: a resource deleted and created again under the
/// same name does not adopt its predecessor's objects.
pub const OWNER_UID: &str = "io.haswarm.owner-uid";
/// The id of the haswarm store whose resource owns the object.
pub const INSTANCE: &str = "io.haswarm.instance";
/// Hash of the rendered spec, to tell whether an update is needed.
pub const SPEC_HASH: &str = "io.haswarm.spec-hash";

/// The resource that owns Swarm objects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    /// Kind, e.g. `SharedVolume`.
    pub kind: String,
    /// Name.
    pub name: String,
    /// uid from the store.
    pub uid: String,
    /// The store's id.
    pub instance: String,
}

impl Owner {
    /// The `OWNER` label value.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    /// Labels every owned object carries (without the spec hash).
    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (MANAGED_BY.to_owned(), MANAGER.to_owned()),
            (OWNER.to_owned(), self.key()),
            (OWNER_UID.to_owned(), self.uid.clone()),
            (INSTANCE.to_owned(), self.instance.clone()),
        ])
    }

    /// Docker label filters selecting this owner's objects.
    pub fn filters(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{MANAGED_BY}={MANAGER}"),
                format!("{OWNER}={}", self.key()),
                format!("{INSTANCE}={}", self.instance),
            ],
        )])
    }

    /// Whether `labels` mark an object as this owner's (same uid).
    pub fn owns(&self, labels: Option<&HashMap<String, String>>) -> bool {
        labels.is_some_and(|l| {
            l.get(MANAGED_BY).map(String::as_str) == Some(MANAGER)
                && l.get(OWNER) == Some(&self.key())
                && l.get(OWNER_UID) == Some(&self.uid)
                && l.get(INSTANCE) == Some(&self.instance)
        })
    }
}

/// Docker label filter selecting every object one haswarm store manages.
pub fn managed_filter(instance: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_owned(),
        vec![
            format!("{MANAGED_BY}={MANAGER}"),
            format!("{INSTANCE}={instance}"),
        ],
    )])
}

/// Whether labels mark an object as haswarm's at all.
pub fn is_managed(labels: Option<&HashMap<String, String>>) -> bool {
    labels.is_some_and(|l| l.get(MANAGED_BY).map(String::as_str) == Some(MANAGER))
}

/// The owner a managed object names, parsed from its labels.
pub fn owner_of(labels: Option<&HashMap<String, String>>) -> Option<Owner> {
    let l = labels?;
    if l.get(MANAGED_BY).map(String::as_str) != Some(MANAGER) {
        return None;
    }
    let (kind, name) = l.get(OWNER)?.split_once('/')?;
    Some(Owner {
        kind: kind.to_owned(),
        name: name.to_owned(),
        uid: l.get(OWNER_UID).cloned().unwrap_or_default(),
        instance: l.get(INSTANCE).cloned().unwrap_or_default(),
    })
}

/// A stable hash (FNV-1a, 64 bits, hex) of a value's JSON form. It detects
/// change, it does not protect anything: collisions only cost a missed update
/// that the next spec change repairs.
pub fn spec_hash(value: &impl Serialize) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    format!("{:016x}", fnv1a(&bytes))
}

/// The first 8 hex digits of [`spec_hash`]: the suffix of content-named secrets and configs.
pub fn short_hash(bytes: &[u8]) -> String {
    format!("{:016x}", fnv1a(bytes))[..8].to_owned()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            kind: "SharedVolume".into(),
            name: "files".into(),
            uid: "u1".into(),
            instance: "i1".into(),
        }
    }

    #[test]
    fn owners_recognise_their_objects_only() {
        let o = owner();
        let labels = o.labels();
        assert!(o.owns(Some(&labels)));
        assert_eq!(owner_of(Some(&labels)), Some(o.clone()));
        let other_uid = Owner {
            uid: "u2".into(),
            ..o.clone()
        };
        assert!(
            !other_uid.owns(Some(&labels)),
            "a recreated resource does not adopt old objects"
        );
        let other_store = Owner {
            instance: "i2".into(),
            ..o.clone()
        };
        assert!(
            !other_store.owns(Some(&labels)),
            "another daemon's objects are not ours"
        );
        assert!(!o.owns(None));
        let mut foreign = labels.clone();
        foreign.remove(MANAGED_BY);
        assert!(!o.owns(Some(&foreign)));
        assert!(!is_managed(Some(&foreign)));
        assert_eq!(owner_of(Some(&foreign)), None);
    }

    #[test]
    fn hashes_are_stable_and_sensitive() {
        let a = spec_hash(&serde_json::json!({"image": "redis:7.2"}));
        assert_eq!(a, spec_hash(&serde_json::json!({"image": "redis:7.2"})));
        assert_ne!(a, spec_hash(&serde_json::json!({"image": "redis:7.4"})));
        assert_eq!(a.len(), 16);
        assert_eq!(short_hash(b"secret").len(), 8);
        // Pinned so that a toolchain or code change cannot silently rename every secret.
        assert_eq!(short_hash(b""), "cbf29ce4");
    }
}
