//! The command line, as clap types only: no logic here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::exit::EXIT_CODES_HELP;

/// haswarm: declare HA Postgres, Redis Sentinel and shared volumes; haswarm keeps Docker Swarm converged.
#[derive(Debug, Parser)]
#[command(name = "haswarmctl", version, after_help = EXIT_CODES_HELP, propagate_version = true)]
pub struct Cli {
    /// Where haswarmd listens: unix:///path/to.sock or http://host:port. Default: $XDG_RUNTIME_DIR/haswarm/haswarm.sock, else ./.haswarm/haswarm.sock.
    #[arg(long, global = true, env = "HASWARM_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Bearer token for a TCP server (a unix socket needs none).
    #[arg(
        long,
        global = true,
        env = "HASWARM_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update resources from manifests, all or nothing: every document is validated before anything is written.
    #[command(
        after_help = "Examples:\n  haswarmctl apply -f examples/dify-ha.yaml\n  haswarmctl apply -R -f manifests/ --dry-run=server\n  cat cluster.yaml | haswarmctl apply -f -"
    )]
    Apply(ApplyArgs),
    /// List resources, or show one, as a table or as yaml, json, name or jsonpath.
    #[command(
        after_help = "Kinds: postgresclusters (pgc), redissentinelgroups (rsg), sharedvolumes (sv), gitsources (gs).\n\nExamples:\n  haswarmctl get rsg\n  haswarmctl get pgc dify-db -o yaml\n  haswarmctl get sv -l app=dify -o name\n  haswarmctl get rsg dify-redis -o jsonpath='{.status.master}'\n  haswarmctl get rsg dify-redis -o env\n  haswarmctl get pgc --watch"
    )]
    Get(GetArgs),
    /// Show a resource in detail: spec, conditions, owned Swarm objects and recent events.
    Describe(DescribeArgs),
    /// Delete resources by name or by manifest. Owned Swarm objects are cleaned up by the controller first.
    #[command(
        after_help = "Examples:\n  haswarmctl delete rsg dify-redis\n  haswarmctl delete -f examples/dify-ha.yaml --wait"
    )]
    Delete(DeleteArgs),
    /// Show what apply would change, as a unified diff of stored objects against manifests. Exit 0: no difference; 1: differences; more: error.
    Diff(DiffArgs),
    /// Print the Swarm stack file equivalent to manifests: what you would otherwise write by hand (offline).
    #[command(after_help = "Examples:\n  haswarmctl render -f examples/dify-ha.yaml > stack.yaml")]
    Render(RenderArgs),
    /// Start haswarm in the foreground with its store in ./.haswarm, apply manifests, show progress until they are Ready, and keep reconciling until Ctrl-C.
    #[command(
        after_help = "Examples:\n  haswarmctl up -f examples/local-demo.yaml\n  haswarmctl up -f manifests/ -R --data-dir /var/lib/haswarm\n\nOther terminals reach it with the usual commands (haswarmctl get sv, ...), through ./.haswarm/haswarm.sock\nor $XDG_RUNTIME_DIR/haswarm/haswarm.sock."
    )]
    Up(UpArgs),
    /// Rotate a generated password. RedisSentinelGroup: without a moment where replication or the sentinels see a wrong one (every member first accepts the new password, then uses it, then forgets the old one: three rolling updates). PostgresCluster: the app user's (default: its other login takes the new password, the one in use keeps working until the next rotation) or the superuser's (--user superuser: PostgreSQL takes the new password, then the instances move to its secret one at a time).
    #[command(
        after_help = "Applications read the password from the secret named in status.passwordSecret (rsg) or status.appPasswordSecret (pgc) (haswarmctl get KIND NAME -o env): redeploy them with the new secret name. Redis keeps accepting the old password until the rotation ends. A PostgresCluster's app user has two logins that alternate (OWNER and OWNER_alt): the new password goes to the login not in use, status.appUser names it (DB_USERNAME in -o env), and the old login keeps its password until the next rotation, so applications move at their own pace. The superuser's password changes in place (the instances move to the new secret one at a time).\n\nExamples:\n  haswarmctl rotate-password rsg/dify-redis\n  haswarmctl rotate-password rsg/dify-redis --wait --timeout 10m\n  haswarmctl rotate-password pgc/dify-db --wait\n  haswarmctl rotate-password pgc/dify-db --user superuser --wait"
    )]
    RotatePassword(RotatePasswordArgs),
    /// PostgresCluster operations.
    #[command(subcommand)]
    Pg(PgCommand),
    /// Swarm nodes and the members haswarm pins to them; drain a node for
    /// maintenance without a failover.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Wait until a resource meets a condition (or is deleted).
    #[command(
        after_help = "Examples:\n  haswarmctl wait rsg/dify-redis --for=condition=Ready --timeout=5m\n  haswarmctl wait pgc/dify-db --for=delete"
    )]
    Wait(WaitArgs),
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
    /// Run haswarmd itself as a Swarm stack, from the chart-like bundle in helm-like-manifests/haswarm (built in): print the stack file, or deploy it with --apply (docker stack deploy).
    #[command(
        after_help = "Values: the chart's values.yaml (documented defaults), then each --values file, then each --set; unknown keys are refused.\nThe image is built on this machine from the compiled binaries: helm-like-manifests/build-image.sh\n\nExamples:\n  haswarmctl install > haswarm-stack.yaml\n  haswarmctl install --apply --wait\n  haswarmctl install --apply --set log.level=debug --set tcp.enabled=true\n  haswarmctl install --values prod.yaml --apply --name haswarm-prod\n  haswarmctl --server unix:///run/haswarm/haswarm.sock get pgc"
    )]
    Install(InstallArgs),
    /// Remove the haswarmd stack (docker stack rm). Managed resources keep running and the store's volume is kept (its name is printed); exit 5 when there is no such stack.
    #[command(
        after_help = "Examples:\n  haswarmctl uninstall\n  haswarmctl uninstall --name haswarm-prod"
    )]
    Uninstall(UninstallArgs),
    /// Exit 0 when haswarmd is ready (its store answers and it reaches the Docker engine), non-zero otherwise: the stack's health check.
    #[command(
        after_help = "Examples:\n  haswarmctl healthcheck\n  haswarmctl --server unix:///run/haswarm/haswarm.sock healthcheck"
    )]
    Healthcheck(HealthcheckArgs),
}

/// `haswarmctl install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Stack name (docker stack deploy NAME).
    #[arg(long, default_value = "haswarm", value_name = "NAME")]
    pub name: String,
    /// A YAML file of values overriding the chart's defaults. Repeatable; later files win.
    #[arg(long = "values", short = 'f', value_name = "FILE")]
    pub values: Vec<PathBuf>,
    /// One value, as key.sub=value (the value read as YAML: true, 3, [a, b] or text). Repeatable; applied after --values.
    #[arg(long, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Deploy the rendered stack with docker stack deploy instead of printing it (run on a manager).
    #[arg(long)]
    pub apply: bool,
    /// A chart folder to use instead of the built-in one (Chart.yaml, values.yaml, templates/stack.yaml).
    #[arg(long, value_name = "DIR")]
    pub chart: Option<PathBuf>,
    /// With --apply: wait until haswarmd answers ready on its socket (the engine reachable, controllers running).
    #[arg(long, requires = "apply")]
    pub wait: bool,
    /// How long --wait waits, e.g. 30s, 5m.
    #[arg(long, default_value = "3m", value_name = "DURATION")]
    pub timeout: String,
}

/// `haswarmctl uninstall`.
#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Stack name given at install.
    #[arg(long, default_value = "haswarm", value_name = "NAME")]
    pub name: String,
}

/// `haswarmctl healthcheck`.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// Give up after this long (a daemon frozen with its node accepts the
    /// connection and never answers).
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    pub timeout: String,
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

/// Dry-run modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DryRun {
    /// Validate locally; no daemon needed. References outside the files are not checked.
    Client,
    /// The daemon validates against the store and reports what would change; nothing is written.
    Server,
}

/// `haswarmctl apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The manifests.
    #[command(flatten)]
    pub input: FileArgs,
    /// Only show what would happen.
    #[arg(long, value_enum, value_name = "MODE", num_args = 0..=1, default_missing_value = "client", require_equals = true)]
    pub dry_run: Option<DryRun>,
}

/// `haswarmctl get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Kind: postgresclusters (pgc), redissentinelgroups (rsg), sharedvolumes (sv), gitsources (gs), singular or plural; or all, every kind (with -o yaml|json: each resource as applied, without status or the store's bookkeeping, an export that apply -f takes back).
    pub kind: String,
    /// One resource's name; all when left out.
    pub name: Option<String>,
    /// Output: wide, yaml, json, name, env (what an application needs, RedisSentinelGroup), or jsonpath=TEMPLATE.
    #[arg(short, long, value_name = "FORMAT")]
    pub output: Option<String>,
    /// Label selector, e.g. app=dify,tier!=cache.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// After listing, keep printing changes.
    #[arg(short, long)]
    pub watch: bool,
}

/// `haswarmctl describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
}

/// `haswarmctl delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// What to delete: KIND NAME [NAME...] (e.g. `rsg cache other`), or
    /// KIND/NAME [KIND/NAME...] as `get -o name` prints them (e.g.
    /// `haswarmctl get sv -o name | xargs haswarmctl delete`).
    #[arg(
        required_unless_present = "files",
        value_name = "KIND NAME... | KIND/NAME..."
    )]
    pub targets: Vec<String>,
    /// Delete what these manifests declare.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "PATH",
        conflicts_with = "targets"
    )]
    pub files: Vec<PathBuf>,
    /// Read folders recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Wait until the resources are gone (their Swarm objects cleaned up).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, e.g. 30s, 5m.
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub timeout: String,
}

/// `haswarmctl diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The manifests.
    #[command(flatten)]
    pub input: FileArgs,
}

/// `haswarmctl wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// KIND/NAME, e.g. rsg/dify-redis.
    pub target: String,
    /// condition=TYPE (e.g. condition=Ready), condition=TYPE=False, or delete.
    #[arg(long = "for", value_name = "CONDITION")]
    pub for_: String,
    /// Give up after this long, e.g. 30s, 5m.
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub timeout: String,
}

/// `haswarmctl rotate-password`.
#[derive(Debug, Args)]
pub struct RotatePasswordArgs {
    /// KIND/NAME, e.g. rsg/dify-redis or pgc/dify-db.
    pub target: String,
    /// PostgresCluster only: whose password, app (the application user) or superuser.
    #[arg(long, value_name = "USER", value_parser = ["app", "superuser"])]
    pub user: Option<String>,
    /// Wait until the rotation has reached every member.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long, e.g. 10m.
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    pub timeout: String,
}

/// `haswarmctl pg ...`.
#[derive(Debug, Subcommand)]
pub enum PgCommand {
    /// Hand the leader role to another instance (Patroni switchover): no
    /// commit is lost, connections through the rw router move to the new
    /// leader. Done by the controller once the cluster is healthy.
    #[command(
        after_help = "To keep a preferred leader declaratively (GitOps), set spec.targetPrimary instead.\n\nExamples:\n  haswarmctl pg switchover dify-db\n  haswarmctl pg switchover dify-db --to 2 --wait"
    )]
    Switchover(PgSwitchoverArgs),
    /// Take a backup now with pgBackRest (the cluster needs spec.backup).
    /// It is copied from a replica in sync where there is one, so the
    /// leader carries no copy load; WAL is archived all the time anyway.
    #[command(
        after_help = "The backups, the first point a restore can reach and the last backup show in haswarmctl describe pgc NAME and get pgc -o wide.\n\nExamples:\n  haswarmctl pg backup dify-db\n  haswarmctl pg backup dify-db --type diff --wait\n  haswarmctl pg backup dify-db --repository nfs --wait"
    )]
    Backup(PgBackupArgs),
}

/// `haswarmctl pg backup`.
#[derive(Debug, Args)]
pub struct PgBackupArgs {
    /// The PostgresCluster.
    pub name: String,
    /// full (every file), diff (changed since the last full) or incr
    /// (changed since the last backup).
    #[arg(long = "type", default_value = "full", value_parser = ["full", "diff", "incr"])]
    pub kind: String,
    /// The repository, by name (spec.backup.repositories); the first by default.
    #[arg(long)]
    pub repository: Option<String>,
    /// Wait until the backup is done, and fail if it failed.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long, e.g. 2h.
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub timeout: String,
}

/// `haswarmctl node ...`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List the nodes: role, status, availability and how many haswarm
    /// members each holds.
    Ls,
    /// Move every haswarm member off a node, then set its availability to
    /// drain. A PostgreSQL leader or Redis master there is switched over to
    /// a replica on another node first, so no commit or acknowledged write
    /// is lost and no failover happens; replicas, etcd members (one at a
    /// time, while a quorum remains) and sentinels are then rebuilt on other
    /// nodes. Waits until the node holds no member. Without haswarm (a bare
    /// docker node update --availability drain) Swarm stops them at once and
    /// a leader there fails over instead. The node whose engine haswarmd
    /// talks to is refused: haswarm reads Patroni and the sentinels through
    /// the containers there.
    #[command(
        after_help = "The node takes no new members while it drains. Members that moved stay where they are after haswarmctl node uncordon.\n\nExamples:\n  haswarmctl node drain worker-2\n  haswarmctl node drain worker-2 --timeout 30m\n  haswarmctl node uncordon worker-2"
    )]
    Drain(NodeDrainArgs),
    /// Let a node take members again: the drain mark goes and its
    /// availability becomes active (members that moved off stay where they
    /// are).
    Uncordon {
        /// The node's host name or id.
        node: String,
    },
}

/// `haswarmctl node drain`.
#[derive(Debug, Args)]
pub struct NodeDrainArgs {
    /// The node's host name or id.
    pub node: String,
    /// Give up waiting after this long, e.g. 30m (the drain goes on).
    #[arg(long, default_value = "20m", value_name = "DURATION")]
    pub timeout: String,
}

/// `haswarmctl pg switchover`.
#[derive(Debug, Args)]
pub struct PgSwitchoverArgs {
    /// The PostgresCluster.
    pub name: String,
    /// Instance index to become leader; by default the replica with the
    /// least lag (the synchronous standby first).
    #[arg(long, value_name = "INSTANCE")]
    pub to: Option<u8>,
    /// Wait until the switchover is done and the cluster is Ready.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long, e.g. 5m.
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub timeout: String,
}

/// `haswarmctl up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The manifests to apply once the daemon runs.
    #[command(flatten)]
    pub input: FileArgs,
    /// Folder for the store.
    #[arg(
        long,
        env = "HASWARM_DATA_DIR",
        default_value = ".haswarm/data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
    /// Socket for other haswarmctl commands. Default: as haswarmd's.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Image of SharedVolume probes.
    #[arg(
        long,
        env = "HASWARM_PROBE_IMAGE",
        default_value = "haswarm/probe:latest",
        value_name = "IMAGE"
    )]
    pub probe_image: String,
    /// How long to wait for Ready before saying what is still missing (it keeps running either way).
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub timeout: String,
}

/// `haswarmctl render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The manifests.
    #[command(flatten)]
    pub input: FileArgs,
}
