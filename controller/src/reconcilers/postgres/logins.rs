//! Login roles and their passwords, set in PostgreSQL by a one-shot job.
//!
//! The instances need only the superuser, replication and REST API
//! passwords. Every other password (the application user's two logins,
//! `bootstrap.users`) is set by a job on the cluster's network that connects
//! to the leader as the superuser: so a new password, a new user, or a
//! rotation restarts nothing. The job reads every password from a secret
//! file and sends PostgreSQL only SCRAM verifiers, with statement logging
//! off for its session; psql's output goes nowhere. Nothing it prints could
//! hold a password.

use haswarm_crds::postgres::PgLogin;
use haswarm_crds::{EventType, PostgresCluster};

use super::render;
use crate::reconcilers::status::Notice;
use crate::runtime::{Context, ReconcileError};
use crate::swarm::jobs::{JobOutcome, NodeJob};
use crate::swarm::Owner;

/// Where the job finds the superuser's current password.
const SUPERUSER_FILE: &str = "pg-superuser-password";

/// How long the job may take (it waits for its task to be scheduled and the
/// leader to answer).
const JOB_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// What kind of role a change is for: it says how the role is created when
/// missing and what it is granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoleKind {
    /// The `postgres` superuser (exists; only its password changes).
    Superuser,
    /// `bootstrap.owner`, which owns the database (created at bootstrap).
    Owner,
    /// `<owner>_alt`: logs in and acts as the owner (`SET role` at login),
    /// so what it creates belongs to the owner, as with the owner's login.
    Alternate {
        /// The owner's role.
        of: String,
    },
    /// A `bootstrap.users` role with its attributes (LOGIN or NOLOGIN first).
    User {
        /// Validated attribute keywords.
        attributes: Vec<String>,
    },
}

/// One role whose password the job sets from a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginChange {
    /// The role (a validated plain identifier).
    pub role: String,
    /// The Swarm secret with its new password.
    pub secret: String,
    /// How it is created and granted.
    pub kind: RoleKind,
}

impl LoginChange {
    /// The change that makes `login` work.
    pub fn app(pgc: &PostgresCluster, login: &PgLogin) -> Self {
        let owner = &pgc.spec.bootstrap.owner;
        Self {
            role: login.user.clone(),
            secret: login.password_secret.clone(),
            kind: if login.user == *owner {
                RoleKind::Owner
            } else {
                RoleKind::Alternate { of: owner.clone() }
            },
        }
    }
}

/// A role name the script may quote as it is.
pub fn plain_identifier(role: &str) -> bool {
    !role.is_empty() && role.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The file the job reads change `i`'s password from.
fn password_file(i: usize) -> String {
    format!("pg-login-{i}")
}

/// The statements around a change's `ALTER ROLE ... PASSWORD`: before (the
/// role's creation when missing) and the attributes, and after.
fn statements(change: &LoginChange) -> (String, Vec<String>) {
    let role = &change.role;
    let create = format!(
        "SELECT 'CREATE ROLE \"{role}\"' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}')\\gexec"
    );
    match &change.kind {
        RoleKind::Superuser => (String::new(), Vec::new()),
        RoleKind::Owner => (
            format!("{create}\nALTER ROLE \"{role}\" WITH LOGIN"),
            Vec::new(),
        ),
        RoleKind::Alternate { of } => (
            format!("{create}\nALTER ROLE \"{role}\" WITH LOGIN INHERIT"),
            vec![
                format!("GRANT \"{of}\" TO \"{role}\";"),
                format!("ALTER ROLE \"{role}\" SET role = '{of}';"),
            ],
        ),
        RoleKind::User { attributes } => (
            format!(
                "{create}\nALTER ROLE \"{role}\" WITH {}",
                attributes.join(" ")
            ),
            Vec::new(),
        ),
    }
}

/// The job's script: for each change, creates the role when missing and
/// sets its password as a SCRAM-SHA-256 verifier (RFC 5802 and 7677, as
/// PostgreSQL stores it) computed from its file, on `host` (the leader's
/// service name) as the superuser. Role names are checked identifiers.
pub fn script(host: &str, changes: &[LoginChange]) -> String {
    let mut entries = String::new();
    for (i, c) in changes.iter().enumerate() {
        let (before, after) = statements(c);
        let alter = if before.is_empty() {
            format!("ALTER ROLE \"{}\"", c.role)
        } else {
            before
        };
        entries.push_str(&format!(
            "    ({alter:?}, '/run/secrets/{}', {after:?}),\n",
            password_file(i)
        ));
    }
    let python = [
        "import base64, hashlib, hmac, os",
        "def verifier(path):",
        "    pw = open(path, 'rb').read().rstrip(b'\\n')",
        "    salt, rounds = os.urandom(16), 4096",
        "    salted = hashlib.pbkdf2_hmac('sha256', pw, salt, rounds)",
        "    client = hmac.new(salted, b'Client Key', 'sha256').digest()",
        "    server = hmac.new(salted, b'Server Key', 'sha256').digest()",
        "    b64 = lambda b: base64.b64encode(b).decode()",
        "    return 'SCRAM-SHA-256$%d:%s$%s:%s' % (rounds, b64(salt), b64(hashlib.sha256(client).digest()), b64(server))",
        "print(\"SET log_statement = 'none';\")",
        "for alter, path, after in [",
    ]
    .join("\n");
    format!(
        "set -e\nexport PGPASSWORD=\"$(cat /run/secrets/{SUPERUSER_FILE})\"\npython3 - <<'PY' | psql -h {host} -p {port} -U postgres -d postgres -X -q -v ON_ERROR_STOP=1 >/dev/null 2>&1\n{python}\n{entries}]:\n    print(\"%s PASSWORD '%s';\" % (alter, verifier(path)))\n    for line in after:\n        print(line)\nPY\n",
        port = render::PG_PORT,
    )
}

fn failed(message: String) -> Notice {
    Notice::new(EventType::Warning, "PasswordChangeFailed", message)
}

/// Runs the job for `changes` on the leader's node against `leader`,
/// connecting with the superuser password in `superuser` (a secret name).
/// Returns whether every change took; a failure is a notice.
pub async fn run(
    ctx: &Context,
    (owner, pgc): (&Owner, &PostgresCluster),
    (superuser, changes): (&str, &[LoginChange]),
    leader: &str,
    notices: &mut Vec<Notice>,
) -> Result<bool, ReconcileError> {
    let name = pgc.metadata.name.as_str();
    let roles: Vec<&str> = changes.iter().map(|c| c.role.as_str()).collect();
    if let Some(bad) = roles.iter().find(|r| !plain_identifier(r)) {
        notices.push(failed(format!(
            "role name {bad:?} is not a plain identifier (letters, digits, _)"
        )));
        return Ok(false);
    }
    let mut mounted = Vec::new();
    let files = std::iter::once((superuser, SUPERUSER_FILE.to_owned())).chain(
        changes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.secret.as_str(), password_file(i))),
    );
    for (secret, file) in files {
        let Some(id) = ctx.swarm.secret_id(secret).await? else {
            notices.push(failed(format!("secret {secret:?} does not exist")));
            return Ok(false);
        };
        let mut r = crate::reconcilers::common::secret_ref(secret, &file, 0o400);
        r.secret_id = Some(id);
        mounted.push(r);
    }
    // On the leader's node: its image is there (nothing to pull).
    let node = match ctx
        .swarm
        .tasks(leader)
        .await?
        .iter()
        .find(|t| {
            t.status.as_ref().and_then(|s| s.state) == Some(bollard::models::TaskState::RUNNING)
        })
        .and_then(|t| t.node_id.clone())
    {
        Some(n) => n,
        None => ctx.swarm.info().await?.node_id,
    };
    let job = NodeJob {
        name: format!("{name}-set-passwords"),
        node,
        image: pgc.spec.postgres.image.clone(),
        script: script(leader, changes),
        mounts: Vec::new(),
        secrets: mounted,
        networks: vec![bollard::models::NetworkAttachmentConfig {
            target: Some(render::network_name(name)),
            ..Default::default()
        }],
    };
    match ctx.swarm.run_job(owner, &job, JOB_LIMIT).await? {
        JobOutcome::Completed => Ok(true),
        JobOutcome::Failed(why) => {
            // The job prints nothing; Swarm's reason is an exit status.
            notices.push(failed(format!(
                "setting the password of {} failed ({why}); retrying",
                roles.join(", ")
            )));
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(role: &str, kind: RoleKind) -> LoginChange {
        LoginChange {
            role: role.into(),
            secret: format!("db-{role}-pw"),
            kind,
        }
    }

    #[test]
    fn the_job_reads_passwords_from_files_and_sends_only_verifiers() {
        let s = script(
            "db-pg-1",
            &[
                change("postgres", RoleKind::Superuser),
                change(
                    "reporting",
                    RoleKind::User {
                        attributes: vec!["LOGIN".into(), "CREATEDB".into()],
                    },
                ),
            ],
        );
        assert!(s.contains("cat /run/secrets/pg-superuser-password"));
        assert!(s.contains("'/run/secrets/pg-login-0'"));
        assert!(s.contains("'/run/secrets/pg-login-1'"));
        assert!(s.contains("SCRAM-SHA-256$"));
        assert!(s.contains("SET log_statement = 'none'"));
        assert!(
            s.contains(r#"("ALTER ROLE \"postgres\"", '/run/secrets/pg-login-0', [])"#),
            "{s}"
        );
        assert!(
            s.contains(r#"ALTER ROLE \"reporting\" WITH LOGIN CREATEDB"#),
            "{s}"
        );
        // A role is created when missing, with psql's \gexec.
        assert!(
            s.contains(
                r"WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reporting')\\gexec"
            ),
            "{s}"
        );
        // psql's output, which could echo a statement, goes nowhere.
        assert!(s.contains(">/dev/null 2>&1"));
        assert!(s.contains("-h db-pg-1 -p 5432 -U postgres"));
    }

    #[test]
    fn the_alternate_login_acts_as_the_owner() {
        let (before, after) =
            statements(&change("app_alt", RoleKind::Alternate { of: "app".into() }));
        assert!(before.ends_with("ALTER ROLE \"app_alt\" WITH LOGIN INHERIT"));
        assert_eq!(
            after,
            vec![
                "GRANT \"app\" TO \"app_alt\";".to_owned(),
                "ALTER ROLE \"app_alt\" SET role = 'app';".to_owned()
            ]
        );
        let (before, after) = statements(&change("app", RoleKind::Owner));
        assert!(before.ends_with("ALTER ROLE \"app\" WITH LOGIN"));
        assert!(after.is_empty());
    }

    #[test]
    fn only_plain_role_names_are_quoted_as_they_are() {
        assert!(plain_identifier("app_user1"));
        assert!(!plain_identifier("a\"b"));
        assert!(!plain_identifier("a'b"));
        assert!(!plain_identifier(""));
    }
}
