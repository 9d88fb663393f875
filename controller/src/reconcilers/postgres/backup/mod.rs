//! PostgresCluster backups and WAL archiving with pgBackRest.
//!
//! - Every instance archives its WAL into the repositories
//!   (`archive_command`, set through Patroni) and runs pgBackRest's TLS
//!   server, which lets in only the cluster's own certificate.
//! - Everything else runs in one Swarm job at a time per cluster
//!   (`<name>-backup`), a repository host that reaches the leader and a
//!   standby over that TLS: stanza creation, backups (copied from the
//!   standby), and a check of the archiver and the repositories every
//!   30 s. The job service is the record of what runs (`run`).
//! - A restored cluster's instances wait for one job that looks into the
//!   source's repository first (`restore`: the verdict and the hold).
//! - The pure parts: `conf` (pgBackRest's files), `plan` (which job
//!   next), `report` (what a job printed), `restore`, `certs` (the TLS
//!   identity).

pub mod certs;
pub mod conf;
pub mod plan;
pub mod report;
pub mod restore;
pub mod run;

use haswarm_crds::postgres::RepositoryKind;
use haswarm_crds::PostgresCluster;

use bollard::models::TaskSpecContainerSpecSecrets;

use crate::reconcilers::common::secret_ref;
use crate::reconcilers::contents::stored_or_made;
use crate::runtime::{Context, ReconcileError};
use crate::swarm::{Owner, SwarmError};

pub use run::advance;

/// The script that copies the TLS identity and S3 keys for postgres.
pub const PREPARE: &str = include_str!("prepare.sh");
/// Where instances and jobs find [`PREPARE`].
pub const PREPARE_PATH: &str = "/etc/haswarm/pgbackrest-prepare.sh";

/// Purposes of the backup's configs and secrets (part of their names).
pub mod purpose {
    /// pgBackRest's file the instances share.
    pub const CONF: &str = "pgbackrest-conf";
    /// [`super::PREPARE`].
    pub const PREPARE: &str = "pgbackrest-prepare";
    /// The stored TLS identity (CA, certificate, key in one).
    pub const TLS: &str = "backup-tls";
    /// The CA certificate, as a secret.
    pub const TLS_CA: &str = "backup-tls-ca";
    /// The certificate.
    pub const TLS_CERT: &str = "backup-tls-cert";
    /// Its key.
    pub const TLS_KEY: &str = "backup-tls-key";
}

/// What instances and jobs mount for the backups: the TLS identity's three
/// secrets (generated), each S3 repository's credentials and CA (the
/// user's), and each SharedVolume repository's volume.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupSecrets {
    /// The TLS identity's secrets: CA, certificate, key.
    pub tls: [String; 3],
    /// `(repository number from 1, credentials secret, CA secret)`.
    pub s3: Vec<(usize, String, Option<String>)>,
    /// The SharedVolume repositories' mounts, at `<VOLUME_DIR>/<repository>`.
    pub volumes: Vec<bollard::models::Mount>,
}

impl BackupSecrets {
    /// The secret mounts of an instance or a job.
    pub fn mounts(&self) -> Vec<TaskSpecContainerSpecSecrets> {
        let mut out = vec![
            secret_ref(&self.tls[0], conf::files::TLS_CA, 0o400),
            secret_ref(&self.tls[1], conf::files::TLS_CERT, 0o400),
            secret_ref(&self.tls[2], conf::files::TLS_KEY, 0o400),
        ];
        for (n, creds, ca) in &self.s3 {
            out.push(secret_ref(creds, &conf::files::s3_credentials(*n), 0o400));
            if let Some(ca) = ca {
                out.push(secret_ref(ca, &conf::files::s3_ca(*n), 0o400));
            }
        }
        out
    }
}

/// The backups' secrets: the TLS identity (generated once, its three
/// parts put in `generated` to be made secrets), and the repositories'
/// secrets, which must exist. `None` without `spec.backup`.
///
/// # Errors
/// A secret the spec names does not exist; store or engine errors.
pub async fn secrets(
    ctx: &Context,
    (owner, pgc): (&Owner, &PostgresCluster),
    kind: &str,
    generated: &mut std::collections::HashMap<String, Vec<u8>>,
) -> Result<Option<BackupSecrets>, ReconcileError> {
    let Some(backup) = &pgc.spec.backup else {
        return Ok(None);
    };
    let name = pgc.metadata.name.as_str();
    let stored = stored_or_made(ctx, (kind, name, purpose::TLS), || {
        certs::generate(name).map_err(|e| ReconcileError::Decode {
            kind: "PostgresCluster",
            message: e.to_string(),
        })
    })
    .await?;
    let id = certs::split(&stored).map_err(|e| ReconcileError::Decode {
        kind: "PostgresCluster",
        message: e.to_string(),
    })?;
    let mut tls = [String::new(), String::new(), String::new()];
    for (slot, (p, data)) in tls.iter_mut().zip([
        (purpose::TLS_CA, id.ca),
        (purpose::TLS_CERT, id.cert),
        (purpose::TLS_KEY, id.key),
    ]) {
        let data = data.into_bytes();
        *slot = crate::swarm::objects::content_name(owner, p, &data);
        generated.insert(p.to_owned(), data);
    }
    let mut s3 = Vec::new();
    let mut volumes = Vec::new();
    for (i, r) in backup.repositories.iter().enumerate() {
        if let Some(RepositoryKind::Volume(v)) = r.kind() {
            let target = format!("{}/{}", conf::VOLUME_DIR, r.name);
            volumes.push(shared_volume_mount(
                ctx,
                &v.shared_volume,
                &target,
                (i, &r.name),
            )?);
            continue;
        }
        let Some(RepositoryKind::S3(repo)) = r.kind() else {
            continue;
        };
        let mut named = vec![&repo.credentials_secret.name];
        named.extend(repo.ca_secret.as_ref().map(|c| &c.name));
        for secret in named {
            if ctx.swarm.secret_id(secret).await?.is_none() {
                return Err(ReconcileError::Swarm(SwarmError::NotFound(format!(
                    "secret {secret:?} named in spec.backup.repositories[{i}] ({})",
                    r.name
                ))));
            }
        }
        s3.push((
            i + 1,
            repo.credentials_secret.name.clone(),
            repo.ca_secret.as_ref().map(|c| c.name.clone()),
        ));
    }
    Ok(Some(BackupSecrets { tls, s3, volumes }))
}

/// The mount of SharedVolume `name` at `target`, as the SharedVolume's own
/// probe mounts it (same driver and options).
fn shared_volume_mount(
    ctx: &Context,
    name: &str,
    target: &str,
    (i, repo): (usize, &str),
) -> Result<bollard::models::Mount, ReconcileError> {
    let kind = <haswarm_crds::SharedVolumeSpec as haswarm_crds::Kind>::KIND;
    let missing = || {
        ReconcileError::Swarm(SwarmError::NotFound(format!(
            "SharedVolume {name:?} named in spec.backup.repositories[{i}] ({repo})"
        )))
    };
    let record = match ctx.store.get(kind, name) {
        Ok(r) => r,
        Err(crate::store::StoreError::NotFound { .. }) => return Err(missing()),
        Err(e) => return Err(e.into()),
    };
    let spec: haswarm_crds::SharedVolumeSpec =
        serde_json::from_value(record.spec).map_err(|e| ReconcileError::Decode {
            kind,
            message: e.to_string(),
        })?;
    let sv = haswarm_crds::SharedVolume::new(record.metadata, spec);
    Ok(crate::reconcilers::volume::render::mount(&sv, target))
}
