//! The store's mirror kept as Swarm configs: the Swarm side of
//! [`crate::store::mirror`].

use std::collections::HashMap;

use base64::Engine as _;
use bollard::models::ConfigSpec;
use bollard::query_parameters::ListConfigsOptions;
use futures::future::BoxFuture;

use super::{Swarm, SwarmError};
use crate::store::mirror::{Listed, MirrorError, MirrorSink, MIRROR_OF};

fn failed(e: SwarmError) -> MirrorError {
    MirrorError::Swarm(e.to_string())
}

impl MirrorSink for Swarm {
    fn list(&self, store_id: &str) -> BoxFuture<'_, Result<Vec<Listed>, MirrorError>> {
        let filters =
            HashMap::from([("label".to_owned(), vec![format!("{MIRROR_OF}={store_id}")])]);
        Box::pin(async move {
            let configs = self
                .docker()
                .map_err(failed)?
                .list_configs(Some(ListConfigsOptions {
                    filters: Some(filters),
                }))
                .await
                .map_err(|e| failed(SwarmError::from_bollard(e, || "mirror configs".into())))?;
            let mut out = Vec::with_capacity(configs.len());
            for c in configs {
                let spec = c.spec.unwrap_or_default();
                let name = spec.name.unwrap_or_default();
                // The list carries each config's content, base64-encoded.
                let data = base64::engine::general_purpose::STANDARD
                    .decode(spec.data.unwrap_or_default())
                    .map_err(|e| MirrorError::Corrupt {
                        name: name.clone(),
                        reason: e.to_string(),
                    })?;
                out.push(Listed {
                    id: c.id.unwrap_or_default(),
                    name,
                    labels: spec.labels.unwrap_or_default(),
                    data,
                });
            }
            Ok(out)
        })
    }

    fn create(
        &self,
        name: String,
        labels: HashMap<String, String>,
        data: Vec<u8>,
    ) -> BoxFuture<'_, Result<String, MirrorError>> {
        Box::pin(async move {
            let spec = ConfigSpec {
                name: Some(name.clone()),
                labels: Some(labels),
                data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
                ..Default::default()
            };
            let created = self
                .docker()
                .map_err(failed)?
                .create_config(spec)
                .await
                .map_err(|e| failed(SwarmError::from_bollard(e, || format!("config {name}"))))?;
            Ok(created.id)
        })
    }

    fn remove(&self, id: String) -> BoxFuture<'_, Result<(), MirrorError>> {
        Box::pin(async move {
            match self.docker().map_err(failed)?.delete_config(&id).await {
                Ok(()) => Ok(()),
                Err(e) => match SwarmError::from_bollard(e, || format!("config {id}")) {
                    SwarmError::NotFound(_) => Ok(()),
                    other => Err(failed(other)),
                },
            }
        })
    }
}
