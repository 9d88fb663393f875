//! `haswarmctl`: the command-line client of haswarm.

mod cli;
mod commands;
mod exit;
mod input;
mod jsonpath;
mod output;
mod report;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    let code = commands::run(args);
    std::process::exit(code.into());
}
