//! The command line, as clap types only: no logic here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::exit::EXIT_CODES_HELP;

/// haswarm: declare HA Postgres, Redis Sentinel and shared volumes; haswarm keeps Docker Swarm converged.
#[derive(Debug, Parser)]
#[command(name = "haswarmctl", version, after_help = EXIT_CODES_HELP, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check manifests offline: YAML syntax, schema, defaults and every rule, with file:line:col for each problem.
    #[command(
        after_help = "Examples:\n  haswarmctl validate -f examples/\n  haswarmctl validate -f cluster.yaml -f volumes.yaml\n  cat cluster.yaml | haswarmctl validate -f -"
    )]
    Validate(ValidateArgs),
    /// Print the JSON Schema (draft-07) of a kind, or write every kind's schema into a folder.
    #[command(
        after_help = "Examples:\n  haswarmctl schema postgrescluster\n  haswarmctl schema --write crds/schemas"
    )]
    Schema(SchemaArgs),
    /// Describe a kind or one of its fields, from the schema's field documentation.
    #[command(
        after_help = "Examples:\n  haswarmctl explain pgc\n  haswarmctl explain postgrescluster.spec.patroni\n  haswarmctl explain rsg.spec.sentinels.quorum"
    )]
    Explain(ExplainArgs),
}

/// Where manifests come from.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// A manifest file, a folder of them (.yaml, .yml, .json), or - for standard input. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    pub files: Vec<PathBuf>,
    /// Read folders recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

/// `haswarmctl validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The manifests.
    #[command(flatten)]
    pub input: FileArgs,
    /// Print nothing on success.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `haswarmctl schema`.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Kind (postgrescluster/pgc, redissentinelgroup/rsg, sharedvolume/sv).
    #[arg(required_unless_present = "write")]
    pub kind: Option<String>,
    /// Write every kind's schema as KIND.json into this folder instead.
    #[arg(long, value_name = "DIR", conflicts_with = "kind")]
    pub write: Option<PathBuf>,
}

/// `haswarmctl explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// KIND or KIND.field.path, e.g. postgrescluster.spec.patroni.
    pub path: String,
}
