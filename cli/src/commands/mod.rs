//! One module per subcommand.

mod explain;
mod schema;
mod validate;

use crate::cli::{Cli, Command};
use crate::exit::ExitCode;

/// Runs a parsed command line and says how it ended.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Validate(a) => validate::run(&a),
        Command::Schema(a) => schema::run(&a),
        Command::Explain(a) => explain::run(&a),
    }
}
