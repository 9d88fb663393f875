//! `haswarmctl apply`: loads, parses and validates manifests, then stores them
//! through the API (`--dry-run=client|server` only checks them).

use std::cell::RefCell;

use haswarm_controller::client::ClientError;
use haswarm_crds::manifest::{self, Limits, ManifestError, ParsedDocument};
use haswarm_crds::validate::Catalog;

use super::{failed, Conn};
use crate::cli::{ApplyArgs, DryRun};
use crate::exit::ExitCode;
use crate::input::{self, Source};
use crate::report;

/// A catalog that answers yes and remembers what it was asked, for the client
/// dry run, which cannot see the store.
#[derive(Default)]
pub(super) struct Unchecked(RefCell<Vec<(String, String)>>);

impl Catalog for Unchecked {
    fn contains(&self, kind: &str, name: &str) -> bool {
        self.0.borrow_mut().push((kind.to_owned(), name.to_owned()));
        true
    }
    fn scope(&self) -> &str {
        "(not checked)"
    }
}

/// References resolve against objects already in the store, listed once per kind.
struct Remote(Vec<(String, String)>);

impl Catalog for Remote {
    fn contains(&self, kind: &str, name: &str) -> bool {
        self.0.iter().any(|(k, n)| k == kind && n == name)
    }
    fn scope(&self) -> &str {
        "in the store"
    }
}

/// Loads, parses and validates; prints every problem with its position.
pub(super) fn load(
    files: &crate::cli::FileArgs,
    catalog: &dyn Catalog,
) -> Result<(Vec<Source>, Vec<ParsedDocument>), ExitCode> {
    let limits = Limits::default();
    let sources = input::load(&files.files, files.recursive, &limits).map_err(|e| {
        report::error(&e.to_string());
        ExitCode::Input
    })?;
    let loaded = input::parse_all(&sources, &limits);
    let mut problems = loaded.errors;
    if problems.is_empty() {
        problems.extend(manifest::validate_batch(&loaded.documents, catalog));
    }
    if problems.is_empty() {
        return Ok((sources, loaded.documents));
    }
    print_problems(&problems, &sources);
    Err(ExitCode::Invalid)
}

fn print_problems(problems: &[ManifestError], sources: &[Source]) {
    for p in problems {
        report::manifest_error(p, sources);
    }
    report::error(&format!(
        "{} problem{} found; nothing was applied",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    ));
}

/// Maps the daemon's per-document problems back to files and positions.
fn server_problems(e: &ClientError, docs: &[ParsedDocument]) -> Option<Vec<ManifestError>> {
    let ClientError::Api { body, .. } = e else {
        return None;
    };
    if body.details.is_empty() {
        return None;
    }
    let problems = body
        .details
        .iter()
        .filter_map(|d| {
            let doc = docs.get(d.index)?;
            Some(ManifestError {
                source_name: doc.source_name.clone(),
                position: Some(doc.position_of(d.path.as_deref().unwrap_or_default())),
                path: d.path.clone(),
                rule: None,
                kind: manifest::ErrorKind::Invalid,
                message: match &d.rule {
                    Some(r) => format!("{} [rule: {r}]", d.message),
                    None => d.message.clone(),
                },
            })
        })
        .collect::<Vec<_>>();
    (!problems.is_empty()).then_some(problems)
}

pub async fn run(conn: &Conn, args: &ApplyArgs) -> ExitCode {
    if args.dry_run == Some(DryRun::Client) {
        let unchecked = Unchecked::default();
        let docs = match load(&args.input, &unchecked) {
            Ok((_, d)) => d,
            Err(code) => return code,
        };
        let in_batch = |k: &str, n: &str| {
            docs.iter()
                .any(|d| d.resource.kind() == k && d.resource.name() == n)
        };
        for (k, n) in unchecked.0.borrow().iter().filter(|(k, n)| !in_batch(k, n)) {
            eprintln!("warning: {k} {n:?} is not in the given files; a client dry run cannot check the store for it");
        }
        for d in &docs {
            println!(
                "{}/{} valid (client dry run)",
                d.resource.kind().to_ascii_lowercase(),
                d.resource.name()
            );
        }
        return ExitCode::Success;
    }
    let client = match conn.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    apply_with(&client, &args.input, args.dry_run == Some(DryRun::Server)).await
}

/// Validates locally (references against the store too), then applies
/// through `client` as one unit, printing `kind/name outcome` lines.
pub(super) async fn apply_with(
    client: &haswarm_controller::client::Client,
    input: &crate::cli::FileArgs,
    dry: bool,
) -> ExitCode {
    // Names already in the store, so that references to them validate locally too.
    let mut known = Vec::new();
    for kind in haswarm_crds::KINDS.iter() {
        match client.list(kind.plural, None).await {
            Ok(list) => known.extend(list.items.iter().filter_map(|o| {
                o.pointer("/metadata/name")
                    .and_then(serde_json::Value::as_str)
                    .map(|n| (kind.kind.to_owned(), n.to_owned()))
            })),
            Err(e) => return failed(&e),
        }
    }
    let (sources, docs) = match load(input, &Remote(known)) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let items = docs.iter().map(|d| d.raw.clone()).collect();
    match client.apply(items, dry).await {
        Ok(resp) => {
            for r in resp.results {
                let suffix = if dry { " (server dry run)" } else { "" };
                let outcome = serde_json::to_value(r.result)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                println!(
                    "{}/{} {outcome}{suffix}",
                    r.kind.to_ascii_lowercase(),
                    r.name
                );
            }
            ExitCode::Success
        }
        Err(e) => match server_problems(&e, &docs) {
            Some(problems) => {
                print_problems(&problems, &sources);
                ExitCode::Invalid
            }
            None => failed(&e),
        },
    }
}
