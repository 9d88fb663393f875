//! GitSource: fetch a branch or tag, apply every manifest under a folder at
//! one revision as one unit, prune what left the folder (when asked), and
//! report revisions, the inventory and its health.
//!
//! Nothing here touches the Swarm: applied resources go into the store, and
//! their own controllers take it from there. A source changes and prunes only
//! resources labelled with its name ([`SOURCE_LABEL`]); a resource of the
//! same kind and name that it did not apply stops the sync (`Stalled`,
//! reason `Conflict`) rather than being taken over.

pub mod git;

use std::collections::BTreeSet;
use std::sync::Arc;

use haswarm_crds::gitops::{
    GitSourceSpec, GitSourceStatus, InventoryEntry, SOURCE_LABEL, SYNC_REQUESTED,
};
use haswarm_crds::manifest::{parse, Limits, ParsedDocument};
use haswarm_crds::selector::Selector;
use haswarm_crds::{EventType, KINDS};

use super::status;
use crate::runtime::controller::{decode, event, write_status};
use crate::runtime::{Action, Context, ReconcileError, Reconciler};
use crate::store::{Record, StoreError, WriteMode};

/// How many problems a `Stalled` message lists before "and N more".
const SHOWN_PROBLEMS: usize = 5;

/// The GitSource reconciler.
#[derive(Debug, Default)]
pub struct GitSources;

/// Why a sync stopped; the revision applied before stays applied.
#[derive(Debug)]
enum SyncError {
    Credentials(String),
    /// The server refused access, with the secret offered (if any).
    Refused(Option<String>, git::GitError),
    /// The ssh server's host key is not the one pinned at the first fetch.
    HostKeyChanged(git::GitError),
    Fetch(git::GitError),
    Invalid(Vec<String>),
    Conflict(Vec<String>),
    Store(StoreError),
}

impl SyncError {
    fn reason(&self) -> &'static str {
        match self {
            Self::Credentials(_) => "CredentialsInvalid",
            Self::Refused(..) => "AuthenticationFailed",
            Self::HostKeyChanged(_) => "HostKeyChanged",
            Self::Fetch(_) => "FetchFailed",
            Self::Invalid(_) => "InvalidManifests",
            Self::Conflict(_) => "Conflict",
            Self::Store(_) => "ApplyFailed",
        }
    }

    fn message(&self, rev: Option<&str>) -> String {
        let at = rev.map(|r| format!(" at {}", short(r))).unwrap_or_default();
        let list = |what: &str, items: &[String]| {
            let mut m = format!("{what}{at}, nothing applied: ");
            m.push_str(&items[..items.len().min(SHOWN_PROBLEMS)].join("; "));
            if items.len() > SHOWN_PROBLEMS {
                m.push_str(&format!("; and {} more", items.len() - SHOWN_PROBLEMS));
            }
            m
        };
        match self {
            Self::Credentials(m) => m.clone(),
            Self::Refused(Some(secret), e) => {
                format!("the server refused the credentials in secret {secret} ({e})")
            }
            Self::Refused(None, e) => format!(
                "the server wants credentials: name a secret holding them in spec.credentials.secret ({e})"
            ),
            Self::HostKeyChanged(e) => format!(
                "the server's ssh host key is not the one trusted at the first fetch: someone may be in between. If the key changed on purpose, delete the GitSource and apply it again (what it applied stays) to trust the new one ({e})"
            ),
            Self::Fetch(e) => e.to_string(),
            Self::Invalid(p) => list("invalid manifests", p),
            Self::Conflict(p) => list("resources this source did not apply", p),
            Self::Store(e) => format!("the store refused the batch{at}: {e}"),
        }
    }
}

fn short(rev: &str) -> &str {
    rev.get(..12).unwrap_or(rev)
}

/// Manifest files among `paths`: YAML and JSON, in a stable order.
fn manifest_files(paths: Vec<String>) -> Vec<String> {
    let mut files: Vec<String> = paths
        .into_iter()
        .filter(|p| {
            let p = p.to_ascii_lowercase();
            p.ends_with(".yaml") || p.ends_with(".yml") || p.ends_with(".json")
        })
        .collect();
    files.sort();
    files
}

/// What a sync does with the resources already in the store.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    /// Resources of the revision that exist without this source's label.
    conflicts: Vec<String>,
    /// Resources this source applied that the revision no longer has.
    prune: Vec<(String, String)>,
}

/// `wanted`: kind/name of the revision's resources; `existing`: kind, name
/// and the source label of each stored resource of those kinds.
fn plan(
    source: &str,
    wanted: &BTreeSet<(String, String)>,
    existing: &[(String, String, Option<String>)],
    prune: bool,
) -> Plan {
    let mut p = Plan::default();
    for (kind, name, label) in existing {
        let key = (kind.clone(), name.clone());
        let ours = label.as_deref() == Some(source);
        if wanted.contains(&key) && !ours {
            p.conflicts.push(match label {
                Some(other) => format!("{kind}/{name} belongs to GitSource {other}"),
                None => format!("{kind}/{name} exists and was not applied by this source"),
            });
        } else if !wanted.contains(&key) && ours && prune {
            p.prune.push(key);
        }
    }
    p
}

/// What a sync that succeeded applied.
struct Synced {
    /// The commit applied.
    revision: String,
    /// The resources its manifests hold.
    inventory: Vec<InventoryEntry>,
    /// The resources deleted because their manifests left the path.
    pruned: Vec<(String, String)>,
}

/// The credentials a source names, read from the secret mounted into haswarmd.
fn auth(ctx: &Context, spec: &GitSourceSpec) -> Result<Option<git::Auth>, SyncError> {
    let Some(c) = &spec.credentials else {
        return Ok(None);
    };
    let path = ctx.settings.secrets_dir.join(&c.secret);
    let content = std::fs::read_to_string(&path).map_err(|e| {
        SyncError::Credentials(format!(
            "cannot read the secret {} at {} ({e}): mount it into haswarmd (the stack's gitCredentials value)",
            c.secret,
            path.display()
        ))
    })?;
    git::Auth::parse(&content)
        .map(Some)
        .map_err(|e| SyncError::Credentials(format!("secret {}: {e}", c.secret)))
}

/// Every manifest under the source's path at `rev`, parsed and validated as
/// one batch against the store: all of it, or every problem found.
async fn documents(
    ctx: &Context,
    spec: &GitSourceSpec,
    cache: &git::Cache,
    rev: &str,
) -> Result<Vec<ParsedDocument>, SyncError> {
    let files = manifest_files(
        cache
            .files(rev, &spec.path)
            .await
            .map_err(SyncError::Fetch)?,
    );
    let mut problems = Vec::new();
    let mut docs = Vec::new();
    for file in &files {
        let bytes = cache.read(rev, file).await.map_err(SyncError::Fetch)?;
        let Ok(text) = String::from_utf8(bytes) else {
            problems.push(format!("{file}: not UTF-8 text"));
            continue;
        };
        match parse(file, &text, &Limits::default()) {
            Ok(d) => docs.extend(d),
            Err(errors) => problems.extend(errors.iter().map(ToString::to_string)),
        }
    }
    if !problems.is_empty() {
        return Err(SyncError::Invalid(problems));
    }
    let refs: Vec<_> = docs.iter().map(|d| &d.resource).collect();
    let invalid = crate::admission::validate(&ctx.store, &refs);
    if !invalid.is_empty() {
        return Err(SyncError::Invalid(
            invalid
                .into_iter()
                .map(|(i, e)| {
                    format!(
                        "{}: {}/{}: {e}",
                        docs[i].source_name,
                        refs[i].kind(),
                        refs[i].name()
                    )
                })
                .collect(),
        ));
    }
    Ok(docs)
}

/// Every resource in the store that is not being deleted, with the
/// GitSource label it carries. One being deleted already (pruned earlier,
/// its Swarm objects still going) is neither pruned again nor a conflict.
fn existing(ctx: &Context) -> Result<Vec<(String, String, Option<String>)>, SyncError> {
    let mut existing = Vec::new();
    for kind in &KINDS {
        let (list, _) = ctx
            .store
            .list(kind.kind, &Selector::default())
            .map_err(SyncError::Store)?;
        existing.extend(
            list.into_iter()
                .filter(|r| r.metadata.deletion_timestamp.is_none())
                .map(|r| {
                    let label = r.metadata.labels.get(SOURCE_LABEL).cloned();
                    (r.kind, r.metadata.name.to_string(), label)
                }),
        );
    }
    Ok(existing)
}

/// One sync: fetch, read, validate, apply, prune. Returns the applied
/// revision and inventory.
async fn sync(
    ctx: &Context,
    obj: &Record,
    spec: &GitSourceSpec,
    cache: &git::Cache,
    fetched: &mut Option<String>,
) -> Result<Synced, SyncError> {
    let source = obj.metadata.name.as_str();
    let auth = auth(ctx, spec)?;
    let rev = cache
        .fetch(&spec.url, &spec.reference.remote_ref(), auth.as_ref())
        .await
        .map_err(|e| {
            if e.is_host_key_mismatch() {
                SyncError::HostKeyChanged(e)
            } else if e.is_refused_access() {
                SyncError::Refused(spec.credentials.as_ref().map(|c| c.secret.clone()), e)
            } else {
                SyncError::Fetch(e)
            }
        })?;
    *fetched = Some(rev.clone());
    let docs = documents(ctx, spec, cache, &rev).await?;
    let refs: Vec<_> = docs.iter().map(|d| &d.resource).collect();

    let wanted: BTreeSet<(String, String)> = refs
        .iter()
        .map(|r| (r.kind().to_owned(), r.name().to_owned()))
        .collect();
    let existing = existing(ctx)?;
    let plan = plan(source, &wanted, &existing, spec.prune);
    if !plan.conflicts.is_empty() {
        return Err(SyncError::Conflict(plan.conflicts));
    }

    let batch = docs
        .iter()
        .map(|d| {
            let mut desired = crate::admission::desired(&d.resource, None);
            desired
                .labels
                .insert(SOURCE_LABEL.to_owned(), source.to_owned());
            desired
        })
        .collect::<Vec<_>>();
    if !batch.is_empty() {
        ctx.store
            .write(batch, WriteMode::Apply, false)
            .await
            .map_err(SyncError::Store)?;
    }
    for (kind, name) in &plan.prune {
        match ctx.store.delete(kind, name, None).await {
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(SyncError::Store(e)),
        }
    }
    let inventory = docs
        .iter()
        .map(|d| InventoryEntry {
            kind: d.resource.kind().to_owned(),
            name: d.resource.name().to_owned(),
            file: d.source_name.clone(),
            ready: None,
        })
        .collect();
    Ok(Synced {
        revision: rev,
        inventory,
        pruned: plan.prune,
    })
}

/// How long until the next fetch, or `None` when one is due now: the spec
/// changed, a webhook asked, or an interval passed since the last one.
/// Resyncs and events that reconcile every object do not fetch.
fn not_due(
    obj: &Record,
    st: &GitSourceStatus,
    interval: std::time::Duration,
) -> Option<std::time::Duration> {
    if st.common.observed_generation != obj.metadata.generation
        || obj.metadata.annotations.get(SYNC_REQUESTED) != st.last_handled_sync_request.as_ref()
    {
        return None;
    }
    let since = chrono::Utc::now()
        .signed_duration_since(st.last_sync_time?)
        .to_std()
        .unwrap_or_default();
    interval.checked_sub(since).filter(|d| !d.is_zero())
}

/// Each inventory entry's Ready condition, as its controller reports it.
fn refresh_health(ctx: &Context, inventory: &mut [InventoryEntry]) {
    for e in inventory {
        e.ready = ctx.store.get(&e.kind, &e.name).ok().and_then(|r| {
            let conditions = r.status.as_ref()?.get("conditions")?.as_array()?.clone();
            let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
            ready["status"].as_str().map(|s| s == "True")
        });
    }
}

/// The `Healthy` condition from the inventory: whether every resource the
/// source applied reports `Ready=True` (`None` while some report nothing
/// yet and none is not Ready).
fn health(inventory: &[InventoryEntry]) -> (Option<bool>, &'static str, String) {
    let ready = inventory.iter().filter(|e| e.ready == Some(true)).count();
    let named = |pick: Option<bool>| {
        let names: Vec<String> = inventory
            .iter()
            .filter(|e| e.ready == pick)
            .map(|e| format!("{}/{}", e.kind, e.name))
            .collect();
        let mut m = names[..names.len().min(SHOWN_PROBLEMS)].join(", ");
        if names.len() > SHOWN_PROBLEMS {
            m.push_str(&format!(" and {} more", names.len() - SHOWN_PROBLEMS));
        }
        m
    };
    let of = format!("{ready} of {} resources Ready", inventory.len());
    if inventory.iter().any(|e| e.ready == Some(false)) {
        (
            Some(false),
            "NotReady",
            format!("{of}; not Ready: {}", named(Some(false))),
        )
    } else if ready < inventory.len() {
        (
            None,
            "Progressing",
            format!("{of}; not reporting yet: {}", named(None)),
        )
    } else {
        (Some(true), "AllReady", of)
    }
}

/// What one sync's outcome does to the status, with an event for each
/// revision applied, resource pruned, or new reason the sync stopped.
fn record(
    ctx: &Context,
    obj: &Record,
    spec: &GitSourceSpec,
    st: &mut GitSourceStatus,
    result: Result<Synced, SyncError>,
) {
    let name = obj.metadata.name.as_str();
    let generation = obj.metadata.generation;
    match result {
        Ok(Synced {
            revision: rev,
            inventory,
            pruned,
        }) => {
            if st.last_applied_revision.as_deref() != Some(rev.as_str()) {
                event(
                    ctx,
                    obj,
                    EventType::Normal,
                    "Applied",
                    &format!("applied {} resources at {}", inventory.len(), short(&rev)),
                );
            }
            for (kind, n) in &pruned {
                event(
                    ctx,
                    obj,
                    EventType::Normal,
                    "Pruned",
                    &format!("deleted {kind}/{n}: its manifest left {}", spec.path),
                );
            }
            st.last_applied_revision = Some(rev);
            st.inventory = inventory;
            status::set(
                &mut st.common,
                "Stalled",
                Some(false),
                "Synced",
                "the fetched revision is applied".into(),
                generation,
            );
        }
        Err(e) => {
            let message = e.message(st.last_fetched_revision.as_deref());
            let was = st
                .common
                .condition("Stalled")
                .map(|c| (c.reason.clone(), c.message.clone()));
            if was != Some((e.reason().to_owned(), message.clone())) {
                tracing::warn!(source = name, reason = e.reason(), %message, "sync stopped");
                event(ctx, obj, EventType::Warning, e.reason(), &message);
            }
            status::set(
                &mut st.common,
                "Stalled",
                Some(true),
                e.reason(),
                message,
                generation,
            );
        }
    }
}

/// The `Ready` and `Healthy` conditions of a source that is not suspended:
/// Ready says whether the last sync applied, Healthy whether what it
/// applied is Ready.
fn conditions(spec: &GitSourceSpec, st: &mut GitSourceStatus, generation: Option<u64>) {
    let stalled = st
        .common
        .condition("Stalled")
        .filter(|c| c.status == haswarm_crds::ConditionStatus::True)
        .map(|c| (c.reason.clone(), c.message.clone()));
    let healthy = st
        .inventory
        .iter()
        .filter(|e| e.ready == Some(true))
        .count();
    let (ok, reason, message) = match stalled {
        Some((reason, message)) => (false, reason, message),
        None => (
            true,
            "Applied".to_owned(),
            format!(
                "{} at {}: {healthy} of {} resources Ready",
                spec.reference.remote_ref(),
                st.last_applied_revision.as_deref().map_or("?", short),
                st.inventory.len()
            ),
        ),
    };
    status::set(
        &mut st.common,
        "Ready",
        Some(ok),
        &reason,
        message,
        generation,
    );
    let (healthy, reason, message) = health(&st.inventory);
    status::set(
        &mut st.common,
        "Healthy",
        healthy,
        reason,
        message,
        generation,
    );
}

impl Reconciler for GitSources {
    const KIND: &'static str = <haswarm_crds::GitSourceSpec as haswarm_crds::Kind>::KIND;

    async fn reconcile(&self, obj: Record, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
        let (gs, old): (_, GitSourceStatus) = decode::<GitSourceSpec>(&obj)?;
        let generation = obj.metadata.generation;
        let mut st = old.clone();
        let name = obj.metadata.name.as_str();
        let mut next = gs.spec.interval.to_std();
        if gs.spec.suspend {
            status::set(
                &mut st.common,
                "Ready",
                None,
                "Suspended",
                "spec.suspend is true: nothing is fetched or applied".into(),
                generation,
            );
        } else if let Some(wait) = not_due(&obj, &st, gs.spec.interval.to_std()) {
            // A resync or a Docker event, not a fetch: only the health moves.
            next = wait;
        } else {
            st.last_sync_time = Some(chrono::Utc::now());
            st.last_handled_sync_request = obj.metadata.annotations.get(SYNC_REQUESTED).cloned();
            let cache = git::Cache::new(&ctx.settings.git_cache.join(ctx.store.id()), name);
            let mut fetched = st.last_fetched_revision.clone();
            let result = sync(&ctx, &obj, &gs.spec, &cache, &mut fetched).await;
            st.last_fetched_revision = fetched;
            record(&ctx, &obj, &gs.spec, &mut st, result);
        }
        refresh_health(&ctx, &mut st.inventory);
        if !gs.spec.suspend {
            conditions(&gs.spec, &mut st, generation);
        }
        st.common.observed_generation = generation;
        if st != old {
            write_status(&ctx, &obj, &st).await?;
        }
        if gs.spec.suspend {
            return Ok(Action::AwaitChange);
        }
        Ok(Action::requeue(next))
    }

    async fn cleanup(&self, obj: Record, ctx: Arc<Context>) -> Result<(), ReconcileError> {
        // What the source applied stays: deleting a source is not deleting
        // the platform it deployed. Only its cache goes.
        git::Cache::new(
            &ctx.settings.git_cache.join(ctx.store.id()),
            obj.metadata.name.as_str(),
        )
        .remove();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
        items
            .iter()
            .map(|(k, n)| ((*k).to_owned(), (*n).to_owned()))
            .collect()
    }

    #[test]
    fn healthy_when_every_applied_resource_is_ready() {
        let entry = |name: &str, ready: Option<bool>| InventoryEntry {
            kind: "SharedVolume".into(),
            name: name.into(),
            file: format!("apps/{name}.yaml"),
            ready,
        };
        assert_eq!(health(&[]).0, Some(true));
        let all = [entry("a", Some(true)), entry("b", Some(true))];
        assert_eq!(
            health(&all),
            (Some(true), "AllReady", "2 of 2 resources Ready".into())
        );
        let waiting = [entry("a", Some(true)), entry("b", None)];
        assert_eq!(
            health(&waiting),
            (
                None,
                "Progressing",
                "1 of 2 resources Ready; not reporting yet: SharedVolume/b".into()
            )
        );
        let mut failing: Vec<InventoryEntry> = (0..7)
            .map(|i| entry(&format!("v{i}"), Some(false)))
            .collect();
        failing.push(entry("w", None));
        let (ok, reason, message) = health(&failing);
        assert_eq!((ok, reason), (Some(false), "NotReady"));
        assert!(
            message.starts_with("0 of 8 resources Ready; not Ready: SharedVolume/v0, ")
                && message.ends_with("SharedVolume/v4 and 2 more"),
            "{message}"
        );
    }

    #[test]
    fn only_yaml_and_json_files_are_read_in_a_stable_order() {
        let files = manifest_files(vec![
            "apps/z.yml".into(),
            "README.md".into(),
            "apps/a.yaml".into(),
            "apps/b.JSON".into(),
            "apps/.gitkeep".into(),
        ]);
        assert_eq!(files, ["apps/a.yaml", "apps/b.JSON", "apps/z.yml"]);
    }

    #[test]
    fn resources_of_others_conflict_and_only_own_leftovers_are_pruned() {
        let wanted = set(&[("SharedVolume", "a"), ("SharedVolume", "b")]);
        let existing = vec![
            ("SharedVolume".into(), "a".into(), Some("platform".into())),
            ("SharedVolume".into(), "b".into(), None),
            (
                "SharedVolume".into(),
                "gone".into(),
                Some("platform".into()),
            ),
            ("SharedVolume".into(), "theirs".into(), Some("other".into())),
            ("SharedVolume".into(), "by-hand".into(), None),
        ];
        let p = plan("platform", &wanted, &existing, true);
        assert_eq!(
            p.conflicts,
            ["SharedVolume/b exists and was not applied by this source"]
        );
        assert_eq!(p.prune, [("SharedVolume".to_owned(), "gone".to_owned())]);
        assert!(plan("platform", &wanted, &existing, false).prune.is_empty());
        let p = plan(
            "platform",
            &set(&[("SharedVolume", "theirs")]),
            &existing,
            false,
        );
        assert_eq!(
            p.conflicts,
            ["SharedVolume/theirs belongs to GitSource other"]
        );
    }

    #[test]
    fn fetches_are_due_on_spec_changes_webhooks_and_intervals_only() {
        let mut obj: Record = serde_json::from_value(serde_json::json!({
            "apiVersion": "haswarm.io/v1alpha1",
            "kind": "GitSource",
            "metadata": {"name": "platform", "generation": 2},
            "spec": {}
        }))
        .expect("record");
        let minute = std::time::Duration::from_secs(60);
        let mut st = GitSourceStatus::default();
        st.common.observed_generation = Some(2);
        assert_eq!(not_due(&obj, &st, minute), None, "never fetched");
        st.last_sync_time = Some(chrono::Utc::now() - chrono::Duration::seconds(10));
        let wait = not_due(&obj, &st, minute).expect("not due");
        assert!(
            wait > std::time::Duration::from_secs(45) && wait <= std::time::Duration::from_secs(50)
        );
        obj.metadata
            .annotations
            .insert(SYNC_REQUESTED.into(), "2026-11-28T11:00:00Z".into());
        assert_eq!(not_due(&obj, &st, minute), None, "a webhook asked");
        st.last_handled_sync_request = Some("2026-11-28T11:00:00Z".into());
        assert!(not_due(&obj, &st, minute).is_some());
        obj.metadata.generation = Some(3);
        assert_eq!(not_due(&obj, &st, minute), None, "the spec changed");
        st.common.observed_generation = Some(3);
        st.last_sync_time = Some(chrono::Utc::now() - chrono::Duration::seconds(61));
        assert_eq!(not_due(&obj, &st, minute), None, "an interval passed");
    }

    #[test]
    fn a_stalled_message_names_the_revision_and_the_first_problems() {
        let problems: Vec<String> = (0..7).map(|i| format!("f{i}.yaml:1:1: bad")).collect();
        let m = SyncError::Invalid(problems).message(Some("0123456789abcdef"));
        assert!(
            m.starts_with("invalid manifests at 0123456789ab, nothing applied: f0.yaml:1:1: bad")
        );
        assert!(m.ends_with("; and 2 more"), "{m}");
    }
}
