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
    emit_with(&handler(), diag);
}

fn emit_with(handler: &GraphicalReportHandler, diag: &dyn Diagnostic) {
    let mut out = String::new();
    if handler.render_report(&mut out, diag).is_err() {
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
    let mut handler = handler();
    let shown = match (e.position, source) {
        (Some(p), Some(s)) if p.offset <= s.text.len() => {
            let (text, offset, len) = excerpt(&s.text, p.offset, p.len);
            let len = len.max(1).min(text.len().saturating_sub(offset).max(1));
            let name = if text.len() == s.text.len() {
                s.name.clone()
            } else {
                // The excerpt's own columns are the cut line's: name the
                // true position instead.
                handler = handler.without_primary_span_start();
                format!(
                    "{}:{}:{}, lines cut to {EXCERPT_WIDTH} characters",
                    s.name, p.line, p.column
                )
            };
            Some((
                NamedSource::new(name, text),
                SourceSpan::from((offset, len)),
            ))
        }
        _ => None,
    };
    let label = match (&e.path, e.rule) {
        (Some(path), Some(rule)) => format!("{path} [{rule}]"),
        (Some(path), None) => path.clone(),
        _ => "here".to_owned(),
    };
    let (src, span) = shown.unzip();
    emit_with(
        &handler,
        &ManifestDiagnostic {
            header: e.to_string(),
            src,
            span,
            label,
        },
    );
}

/// Lines longer than this many characters are cut in a problem's excerpt:
/// a refused 20,000-character line (a deep flow, a minified document) would
/// otherwise fill the terminal. The header's `file:line:col` stays exact.
const EXCERPT_WIDTH: usize = 120;

/// `text` as a problem's excerpt shows it, with the span at `offset`
/// (`len` bytes) moved into it: each line longer than [`EXCERPT_WIDTH`]
/// characters is cut to that many, marked `…` where cut, around the span on
/// its own line and from the start elsewhere. No line is removed, so line
/// numbers stay. The span is cut at the end of its line's window.
fn excerpt(text: &str, offset: usize, len: usize) -> (String, usize, usize) {
    if !text.lines().any(|l| l.len() > EXCERPT_WIDTH) {
        return (text.to_owned(), offset, len);
    }
    let (mut out, mut at, mut span_len) =
        (String::with_capacity(text.len().min(1 << 20)), offset, len);
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let content = line.strip_suffix('\n').unwrap_or(line);
        let here = (start..=start + content.len()).contains(&offset);
        let chars: Vec<(usize, char)> = content.char_indices().collect();
        if chars.len() <= EXCERPT_WIDTH {
            if here {
                at = out.len() + (offset - start);
            }
            out.push_str(line);
        } else {
            // The window, in characters: around the span's start on its own line.
            let col = offset.saturating_sub(start);
            let centre = if here {
                chars.partition_point(|(b, _)| *b < col)
            } else {
                0
            };
            let to = (centre.saturating_sub(EXCERPT_WIDTH / 2) + EXCERPT_WIDTH).min(chars.len());
            let from = to.saturating_sub(EXCERPT_WIDTH);
            let byte = |i: usize| chars.get(i).map_or(content.len(), |(b, _)| *b);
            if from > 0 {
                out.push('…');
            }
            if here {
                at = out.len() + (col - byte(from));
                span_len = len.min(byte(to) - col).max(1);
            }
            out.push_str(&content[byte(from)..byte(to)]);
            if to < chars.len() {
                out.push('…');
            }
            out.push_str(&line[content.len()..]);
        }
        start += line.len();
    }
    (out, at, span_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_is_cut_around_the_problem() {
        let long = format!("{}X{}", "a".repeat(10_000), "b".repeat(10_000));
        let text = format!("kind: x\n{long}\n{}\nend\n", "c".repeat(500));
        let offset = text.find('X').expect("X");
        let (shown, at, len) = excerpt(&text, offset, 5_000);
        assert_eq!(&shown[at..=at], "X", "the span moved with the cut");
        assert!(len <= EXCERPT_WIDTH * 4, "{len}");
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 4, "every line kept: the numbers stay");
        assert_eq!(lines[0], "kind: x");
        assert!(
            lines[1].starts_with('…') && lines[1].ends_with('…'),
            "{}",
            lines[1]
        );
        assert_eq!(lines[1].chars().count(), EXCERPT_WIDTH + 2);
        assert_eq!(lines[2], format!("{}…", "c".repeat(EXCERPT_WIDTH)));
        assert_eq!(lines[3], "end");
    }

    #[test]
    fn short_lines_and_line_edges_are_left_as_they_are() {
        let text = "a: 1\nb: [\n";
        assert_eq!(excerpt(text, 6, 3), (text.to_owned(), 6, 3));
        // The problem at the very start or end of a long line, in
        // multi-byte text.
        let long = "é".repeat(1_000);
        for offset in [0, long.len()] {
            let (shown, at, _) = excerpt(&long, offset, 1);
            assert!(shown.is_char_boundary(at), "{offset}");
            assert!(shown.chars().count() <= EXCERPT_WIDTH + 1, "{offset}");
        }
    }
}
