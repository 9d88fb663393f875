//! `haswarmctl diff`: what applying a manifest would change in the part of an
//! object its user owns (metadata and spec).

use haswarm_controller::api::types::Reason;
use serde_json::{json, Value};
use similar::TextDiff;

use super::{failed, Conn};
use crate::cli::DiffArgs;
use crate::exit::ExitCode;
use crate::output;

/// What a user owns of an object, the part apply would change.
fn owned(v: &Value) -> Value {
    let mut meta = serde_json::Map::new();
    for k in ["name", "labels", "annotations"] {
        if let Some(x) = v.pointer(&format!("/metadata/{k}")) {
            meta.insert(k.to_owned(), x.clone());
        }
    }
    json!({
        "apiVersion": v.get("apiVersion"),
        "kind": v.get("kind"),
        "metadata": meta,
        "spec": v.get("spec"),
    })
}

pub async fn run(conn: &Conn, args: &DiffArgs) -> ExitCode {
    let (_, docs) = match super::apply::load(&args.input, &haswarm_crds::validate::EmptyCatalog) {
        Ok(x) => x,
        Err(ExitCode::Invalid) => return ExitCode::Refused,
        Err(code) => return code,
    };
    let client = match conn.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut differs = false;
    for d in &docs {
        let Some(kind) = haswarm_crds::KindInfo::lookup(d.resource.kind()) else {
            continue;
        };
        let name = d.resource.name();
        let stored = match client.get(kind.plural, name).await {
            Ok(v) => output::yaml(&owned(&v)),
            Err(e) if e.reason() == Some(Reason::NotFound) => String::new(),
            Err(e) => {
                failed(&e);
                return ExitCode::Refused;
            }
        };
        let local = output::yaml(&owned(&d.resource.to_json()));
        if stored == local {
            continue;
        }
        differs = true;
        let label = format!("{}/{name}", kind.singular());
        print!(
            "{}",
            TextDiff::from_lines(&stored, &local)
                .unified_diff()
                .context_radius(3)
                .header(
                    &format!("stored {label}"),
                    &format!("{} {label}", d.source_name)
                )
        );
    }
    if differs {
        ExitCode::Invalid
    } else {
        ExitCode::Success
    }
}
