//! `haswarmctl explain`: the documentation of a field path, from the schemas.

use crate::cli::ExplainArgs;
use crate::exit::ExitCode;
use crate::report;

pub fn run(args: &ExplainArgs) -> ExitCode {
    match haswarm_crds::schema::explain(&args.path) {
        Ok(text) => {
            print!("{text}");
            ExitCode::Success
        }
        Err(e) => {
            report::error(&e.to_string());
            ExitCode::Invalid
        }
    }
}
