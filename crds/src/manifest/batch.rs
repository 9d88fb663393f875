//! Validating a batch of manifests as one unit, so names must be unique
//! across it and references may point at another document of it.

use std::collections::{HashMap, HashSet};

use super::{ManifestError, ParsedDocument};
use crate::resource::AnyResource;
use crate::validate::{Catalog, FieldError};

/// Validates resources as one batch: every rule of each, names unique per
/// kind, references resolved within the batch or in `outer`. Each error comes
/// with the index of the resource it belongs to.
pub fn validate_resources(
    resources: &[&AnyResource],
    outer: &dyn Catalog,
) -> Vec<(usize, FieldError)> {
    let mut errors = Vec::new();
    let mut seen: HashMap<(&'static str, &str), usize> = HashMap::new();
    for (i, r) in resources.iter().enumerate() {
        let key = (r.kind(), r.name());
        if let Some(first) = seen.get(&key) {
            errors.push((
                i,
                FieldError {
                    path: "metadata.name".into(),
                    rule: "unique-name",
                    message: format!(
                        "{} {:?} is also defined by document {}; names are unique per kind",
                        key.0,
                        key.1,
                        first + 1
                    ),
                },
            ));
        } else {
            seen.insert(key, i);
        }
    }
    let catalog = BatchCatalog {
        names: resources
            .iter()
            .map(|r| (r.kind(), r.name().to_owned()))
            .collect(),
        outer,
        scope: if outer.scope() == "anywhere" {
            "among the documents given".to_owned()
        } else {
            format!("among the documents given or {}", outer.scope())
        },
    };
    for (i, r) in resources.iter().enumerate() {
        errors.extend(r.validate(&catalog).into_iter().map(|e| (i, e)));
    }
    errors
}

/// References resolve against the batch first, then against `outer` (the
/// store, when there is one).
struct BatchCatalog<'a> {
    names: HashSet<(&'static str, String)>,
    outer: &'a dyn Catalog,
    scope: String,
}

impl Catalog for BatchCatalog<'_> {
    fn contains(&self, kind: &str, name: &str) -> bool {
        self.names.iter().any(|(k, n)| *k == kind && n == name) || self.outer.contains(kind, name)
    }
    fn scope(&self) -> &str {
        &self.scope
    }
}

/// Validates a batch of documents as one unit: every rule of every document,
/// names unique per kind, references resolved within the batch or `outer`.
pub fn validate_batch(docs: &[ParsedDocument], outer: &dyn Catalog) -> Vec<ManifestError> {
    let resources: Vec<&AnyResource> = docs.iter().map(|d| &d.resource).collect();
    validate_resources(&resources, outer)
        .into_iter()
        .map(|(i, mut e)| {
            let d = &docs[i];
            if e.rule == "unique-name" {
                // Name the first definition by file and position, not by index.
                if let Some(first) = docs[..i].iter().find(|f| {
                    f.resource.kind() == d.resource.kind() && f.resource.name() == d.resource.name()
                }) {
                    let p = first.position_of("metadata.name");
                    e.message = format!(
                        "{} {:?} is also defined at {}:{}:{}; names are unique per kind",
                        d.resource.kind(),
                        d.resource.name(),
                        first.source_name,
                        p.line,
                        p.column
                    );
                }
            }
            d.error_for(e)
        })
        .collect()
}
