//! The store's lease as a Swarm config: the Swarm side of [`crate::lease`].
//! These calls are the only ones that pass no fence: they are how a process
//! gets and keeps it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::ConfigSpec;
use bollard::query_parameters::{ListConfigsOptions, UpdateConfigOptionsBuilder};

use super::{labels, Swarm, SwarmError};
use crate::lease::{self, Fence, Next, Seen, LEASE_EPOCH, LEASE_HOLDER, LEASE_OF, LEASE_RENEWALS};

fn number(l: &HashMap<String, String>, key: &str) -> u64 {
    l.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

impl Swarm {
    async fn read_lease(&self, store_id: &str) -> Result<Option<Seen>, SwarmError> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{LEASE_OF}={store_id}")])]);
        let configs = self
            .docker
            .list_configs(Some(ListConfigsOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(|e| SwarmError::from_bollard(e, || "the store's lease".into()))?;
        Ok(configs.into_iter().next().map(|c| {
            let l = c.spec.and_then(|s| s.labels).unwrap_or_default();
            Seen {
                id: c.id.unwrap_or_default(),
                version: c.version.and_then(|v| v.index).unwrap_or(0),
                holder: l.get(LEASE_HOLDER).cloned().unwrap_or_default(),
                epoch: number(&l, LEASE_EPOCH),
                renewals: number(&l, LEASE_RENEWALS),
            }
        }))
    }

    fn lease_spec(store_id: &str, holder: &str, epoch: u64, renewals: u64) -> ConfigSpec {
        ConfigSpec {
            name: Some(format!("haswarm-lease-{store_id}")),
            labels: Some(HashMap::from([
                (labels::MANAGED_BY.to_owned(), labels::MANAGER.to_owned()),
                (labels::INSTANCE.to_owned(), store_id.to_owned()),
                (LEASE_OF.to_owned(), store_id.to_owned()),
                (LEASE_HOLDER.to_owned(), holder.to_owned()),
                (LEASE_EPOCH.to_owned(), epoch.to_string()),
                (LEASE_RENEWALS.to_owned(), renewals.to_string()),
            ])),
            // Only labels change; the content is fixed.
            data: Some("e30=".into()),
            ..Default::default()
        }
    }

    /// Swaps the lease's labels, if it is still at `seen.version`.
    async fn swap_lease(
        &self,
        seen: &Seen,
        store_id: &str,
        holder: &str,
        (epoch, renewals): (u64, u64),
    ) -> Result<(), SwarmError> {
        let options = UpdateConfigOptionsBuilder::default()
            .version(i64::try_from(seen.version).unwrap_or(i64::MAX))
            .build();
        self.docker
            .update_config(
                &seen.id,
                Self::lease_spec(store_id, holder, epoch, renewals),
                options,
            )
            .await
            .map_err(|e| SwarmError::from_bollard(e, || "the store's lease".into()))
    }

    /// Waits until this process (`holder`) holds the lease of `store_id`,
    /// and returns the fence it opens and the epoch it holds.
    ///
    /// # Errors
    /// Engine errors (the caller retries).
    pub async fn acquire_lease(
        &self,
        store_id: &str,
        holder: &str,
        term: Duration,
    ) -> Result<(Fence, u64), SwarmError> {
        let mut watched = None;
        let mut said = false;
        loop {
            let seen = self.read_lease(store_id).await?;
            let (next, w) = lease::decide(seen.as_ref(), watched, Instant::now(), term);
            watched = w;
            let sent = Instant::now();
            let fence = || {
                let f = Fence::new(sent);
                f.renewed(sent, term);
                f
            };
            match (next, seen) {
                (Next::Create, _) => {
                    let created = self
                        .docker
                        .create_config(Self::lease_spec(store_id, holder, 1, 0))
                        .await;
                    match created {
                        Ok(_) => {
                            tracing::info!(epoch = 1, "holding the store's new lease");
                            return Ok((fence(), 1));
                        }
                        // Another process created it first: read it again.
                        Err(bollard::errors::Error::DockerResponseServerError {
                            status_code: 409,
                            ..
                        }) => {}
                        Err(e) => {
                            return Err(SwarmError::from_bollard(e, || "the store's lease".into()))
                        }
                    }
                }
                (Next::Take, Some(seen)) => {
                    let epoch = seen.epoch + 1;
                    match self.swap_lease(&seen, store_id, holder, (epoch, 0)).await {
                        Ok(()) => {
                            tracing::info!(
                                epoch,
                                previous = %seen.holder,
                                "took over the store's lease"
                            );
                            return Ok((fence(), epoch));
                        }
                        Err(SwarmError::OutOfSequence(_)) => watched = None,
                        Err(e) => return Err(e),
                    }
                }
                (_, seen) => {
                    if !said {
                        tracing::info!(
                            holder = %seen.map(|s| s.holder).unwrap_or_default(),
                            term_s = term.as_secs(),
                            "the store's lease is held by another haswarmd: waiting until it is released or a whole term passes without a renewal"
                        );
                        said = true;
                    }
                    tokio::time::sleep(term / 10).await;
                }
            }
        }
    }

    /// Renews the lease every third of the term until it is lost, keeping
    /// `fence` open meanwhile.
    pub fn keep_lease(&self, store_id: &str, holder: &str, term: Duration, fence: Fence) {
        let swarm = self.clone();
        let (store_id, holder) = (store_id.to_owned(), holder.to_owned());
        tokio::spawn(async move {
            let mut warned = false;
            loop {
                tokio::time::sleep(term / 3).await;
                let sent = Instant::now();
                let renewed = match swarm.read_lease(&store_id).await {
                    Ok(Some(seen)) if seen.holder == holder => {
                        let next = (seen.epoch, seen.renewals + 1);
                        swarm.swap_lease(&seen, &store_id, &holder, next).await
                    }
                    Ok(seen) => {
                        let s = seen.unwrap_or(Seen {
                            id: String::new(),
                            version: 0,
                            holder: String::new(),
                            epoch: 0,
                            renewals: 0,
                        });
                        tracing::error!(
                            holder = %s.holder,
                            epoch = s.epoch,
                            "lost the store's lease to another haswarmd: this one does nothing more and stops"
                        );
                        fence.lose();
                        return;
                    }
                    Err(e) => Err(e),
                };
                match renewed {
                    Ok(()) => {
                        fence.renewed(sent, term);
                        warned = false;
                    }
                    // Someone swapped between the read and the swap: the next
                    // round reads who.
                    Err(SwarmError::OutOfSequence(_)) => {}
                    Err(e) => {
                        if !warned {
                            tracing::warn!(error = %e, "cannot renew the store's lease; retrying (this haswarmd stops acting once it lapses)");
                            warned = true;
                        }
                    }
                }
            }
        });
    }

    /// Gives the lease up on a clean stop, so that a successor need not wait a term.
    pub async fn release_lease(&self, store_id: &str, holder: &str) {
        if let Ok(Some(seen)) = self.read_lease(store_id).await {
            if seen.holder == holder {
                let released = self
                    .swap_lease(&seen, store_id, "", (seen.epoch, seen.renewals))
                    .await;
                if released.is_ok() {
                    tracing::info!("released the store's lease");
                }
            }
        }
    }
}
