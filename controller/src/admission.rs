//! Admission: what every way into the store (the API's apply and create,
//! a GitSource's sync) does to typed, defaulted resources before they are
//! written. It lets the API and GitOps share one path without either
//! depending on the other.

use haswarm_crds::manifest::validate_resources;
use haswarm_crds::validate::{Catalog, FieldError};
use haswarm_crds::AnyResource;
use serde_json::Value;

use crate::store::{Desired, Store};

/// References may point at objects already in the store.
struct StoreCatalog<'a>(&'a Store);

impl Catalog for StoreCatalog<'_> {
    fn contains(&self, kind: &str, name: &str) -> bool {
        self.0.contains(kind, name)
    }
    fn scope(&self) -> &str {
        "in the store"
    }
}

/// Validates `resources` as one batch: a reference may name another in the
/// batch or an object already in the store. Every problem of every resource
/// is returned, with the index of the resource it belongs to.
pub fn validate(store: &Store, resources: &[&AnyResource]) -> Vec<(usize, FieldError)> {
    validate_resources(resources, &StoreCatalog(store))
}

/// What the store writes for a typed resource (`rv`: the resourceVersion
/// the writer expects, when it asks for an optimistic update).
pub fn desired(r: &AnyResource, rv: Option<u64>) -> Desired {
    let json = r.to_json();
    let meta = r.metadata();
    Desired {
        kind: r.kind().to_owned(),
        name: meta.name.clone(),
        labels: meta.labels.clone(),
        annotations: meta.annotations.clone(),
        spec: json.get("spec").cloned().unwrap_or(Value::Null),
        resource_version: rv,
    }
}
