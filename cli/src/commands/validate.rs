//! `haswarmctl validate`: parses and validates manifests offline and prints
//! every problem with its position.

use haswarm_crds::manifest::{self, Limits};
use haswarm_crds::validate::EmptyCatalog;

use crate::cli::ValidateArgs;
use crate::exit::ExitCode;
use crate::input;
use crate::report;

pub fn run(args: &ValidateArgs) -> ExitCode {
    let limits = Limits::default();
    let sources = match input::load(&args.input.files, args.input.recursive, &limits) {
        Ok(s) => s,
        Err(e) => {
            report::error(&e.to_string());
            return ExitCode::Input;
        }
    };
    let loaded = input::parse_all(&sources, &limits);
    let mut problems = loaded.errors;
    problems.extend(manifest::validate_batch(&loaded.documents, &EmptyCatalog));
    if !problems.is_empty() {
        for p in &problems {
            report::manifest_error(p, &sources);
        }
        report::error(&format!(
            "{} problem{} found; nothing is valid until all are fixed",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        ));
        return ExitCode::Invalid;
    }
    if !args.quiet {
        for d in &loaded.documents {
            println!(
                "{}/{} valid ({}:{})",
                d.resource.kind().to_ascii_lowercase(),
                d.resource.name(),
                d.source_name,
                d.position.line
            );
        }
        println!(
            "{} resource{} in {} file{}: all valid",
            loaded.documents.len(),
            if loaded.documents.len() == 1 { "" } else { "s" },
            sources.len(),
            if sources.len() == 1 { "" } else { "s" }
        );
    }
    ExitCode::Success
}
