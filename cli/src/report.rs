//! How problems are shown: miette diagnostics with the offending line
//! underlined; colours only on a terminal.

use std::io::IsTerminal;

use haswarm_crds::manifest::ManifestError;
use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, NamedSource, SourceSpan};

use crate::input::Source;

#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{header}")]
struct ManifestDiagnostic {
    header: String,
    #[source_code]
    src: Option<NamedSource<String>>,
    #[label("{label}")]
    span: Option<SourceSpan>,
    label: String,
}

#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{0}")]
struct Plain(String);

fn handler() -> GraphicalReportHandler {
    let theme = if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    GraphicalReportHandler::new_themed(theme)
}

fn emit(diag: &dyn Diagnostic) {
    let mut out = String::new();
    if handler().render_report(&mut out, diag).is_err() {
        out = diag.to_string();
    }
    eprintln!("{out}");
}

/// Prints a plain error.
pub fn error(message: &str) {
    emit(&Plain(message.to_owned()));
}

/// Prints a manifest problem with its source line when the position is known.
pub fn manifest_error(e: &ManifestError, sources: &[Source]) {
    let source = sources.iter().find(|s| s.name == e.source_name);
    let span = match (e.position, source) {
        (Some(p), Some(s)) if p.offset <= s.text.len() => {
            let len = p
                .len
                .max(1)
                .min(s.text.len().saturating_sub(p.offset).max(1));
            Some(SourceSpan::from((p.offset, len)))
        }
        _ => None,
    };
    let label = match (&e.path, e.rule) {
        (Some(path), Some(rule)) => format!("{path} [{rule}]"),
        (Some(path), None) => path.clone(),
        _ => "here".to_owned(),
    };
    emit(&ManifestDiagnostic {
        header: e.to_string(),
        src: span
            .and(source)
            .map(|s| NamedSource::new(&s.name, s.text.clone())),
        span,
        label,
    });
}
