//! Exit codes, declared once and listed in `--help`.

/// How `haswarmctl` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    /// Everything worked.
    Success,
    /// The input was read but is invalid (or, for `diff`, differs; for `wait`, timed out).
    Invalid,
    /// Input could not be read (missing file, not UTF-8, over the size limit).
    Input,
    /// No haswarmd answers.
    Unreachable,
    /// The daemon refused the request (not found, conflict, ...).
    Refused,
}

impl From<ExitCode> for i32 {
    fn from(c: ExitCode) -> Self {
        match c {
            ExitCode::Success => 0,
            ExitCode::Invalid => 1,
            ExitCode::Input => 3,
            ExitCode::Unreachable => 4,
            ExitCode::Refused => 5,
        }
    }
}

/// The table printed at the end of `--help`. Code 2 is clap's, for usage errors.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (diff: no differences)
  1  the manifests are invalid (each problem printed with file:line:col and field path),
     diff found differences, or wait timed out
  2  usage error (unknown command or flag)
  3  input could not be read (missing file, not UTF-8, over the size limit)
  4  no haswarmd answers at the server address
  5  haswarmd refused the request (not found, conflict, being deleted, ...)";
