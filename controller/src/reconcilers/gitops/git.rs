//! The `git` command, run with bounded time and no prompts. haswarm uses the
//! command rather than gix: one binary covers local paths, file://, https
//! (with the system's CA store and credential helpers) and ssh (with the
//! user's keys and known_hosts), which gix's fetch covers only in part and
//! at a large build cost. Every repository is a bare cache folder per
//! GitSource: fetch the one ref, then read files at the fetched commit
//! without a work tree.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

/// How long one git command may take (a fetch of a large repository over a
/// slow link included).
const TIMEOUT: Duration = Duration::from_secs(120);

/// The ref the fetched commit is kept under in the cache.
const LOCAL_REF: &str = "refs/haswarm/source";

/// A git failure, with git's own message (credentials never appear: haswarm
/// passes none on command lines).
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// git could not be started.
    #[error("cannot run git ({0}): install git where haswarmd runs")]
    Missing(String),
    /// git ran and failed.
    #[error("git {what} failed: {message}")]
    Failed {
        /// The step.
        what: String,
        /// git's standard error, last lines.
        message: String,
    },
    /// git did not finish in time.
    #[error("git {0} did not finish within {TIMEOUT:?}")]
    TimedOut(String),
}

impl GitError {
    /// Whether ssh refused the server because its host key is not the one
    /// pinned at the first fetch.
    pub fn is_host_key_mismatch(&self) -> bool {
        matches!(self, Self::Failed { message, .. } if message.contains("Host key verification failed"))
    }

    /// Whether the server refused access: no credentials where it wants
    /// some, or credentials it does not accept. git says so in several ways
    /// (over https it falls back to asking for a user name, which prompts
    /// being off turns into an error).
    pub fn is_refused_access(&self) -> bool {
        const SIGNS: [&str; 6] = [
            "could not read Username",
            "could not read Password",
            "Authentication failed",
            "Permission denied (publickey",
            "The requested URL returned error: 401",
            "The requested URL returned error: 403",
        ];
        matches!(self, Self::Failed { message, .. } if SIGNS.iter().any(|s| message.contains(s)))
    }
}

/// Credentials for a fetch, from a secret's content.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// An ssh private key.
    SshKey(String),
    /// The value of an `Authorization: Basic` header for https.
    Basic(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the content: Debug output ends up in logs.
        f.write_str(match self {
            Self::SshKey(_) => "Auth::SshKey(..)",
            Self::Basic(_) => "Auth::Basic(..)",
        })
    }
}

impl Auth {
    /// Reads a secret's content: an ssh private key, or `user:token`.
    ///
    /// # Errors
    /// What the content should be (the content itself is never quoted).
    pub fn parse(content: &str) -> Result<Self, String> {
        use base64::Engine;
        let t = content.trim();
        if t.starts_with("-----BEGIN") && t.contains("PRIVATE KEY-----") {
            return Ok(Self::SshKey(format!("{t}\n")));
        }
        match t.split_once(':') {
            Some((user, token))
                if !user.is_empty() && !token.is_empty() && !t.contains(['\n', '\r']) =>
            {
                Ok(Self::Basic(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(t)
                )))
            }
            _ => Err("the secret holds neither an ssh private key nor one line user:token".into()),
        }
    }
}

/// How git is run: prompts off, ssh in batch mode with a per-source
/// known_hosts (trust on first use, then pinned), and the credentials, if
/// any, in the environment (never on the command line, where `ps` shows it).
fn command(dir: Option<&Path>, auth: Option<(&Auth, &Path)>) -> Command {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    let known_hosts = dir.map_or_else(|| PathBuf::from("/dev/null"), |d| d.join("known_hosts"));
    let mut ssh = format!(
        "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={}",
        known_hosts.display()
    );
    match auth {
        Some((Auth::SshKey(_), key)) => {
            ssh.push_str(&format!(" -o IdentitiesOnly=yes -i {}", key.display()));
        }
        Some((Auth::Basic(header), _)) => {
            cmd.env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env("GIT_CONFIG_VALUE_0", format!("Authorization: {header}"));
        }
        None => {}
    }
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        // Only transports that move data: never ext:: (runs a command) or
        // another helper a URL could name.
        .env("GIT_ALLOW_PROTOCOL", "file:git:http:https:ssh")
        .env("GIT_SSH_COMMAND", ssh)
        .env("GIT_CONFIG_NOSYSTEM", "1");
    cmd
}

/// The last lines of git's standard error that say something: git ends
/// every failed ssh fetch with the same two-line advice, which would push
/// out the reason (`Permission denied (publickey)`, `Host key verification
/// failed`).
fn summary(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("Please make sure you have the correct access rights")
                && *l != "and the repository exists."
        })
        .collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

async fn git(dir: Option<&Path>, args: &[&str], what: &str) -> Result<Vec<u8>, GitError> {
    run(command(dir, None), args, what).await
}

async fn run(mut cmd: Command, args: &[&str], what: &str) -> Result<Vec<u8>, GitError> {
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(TIMEOUT, cmd.output())
        .await
        .map_err(|_| GitError::TimedOut(what.to_owned()))?
        .map_err(|e| GitError::Missing(e.to_string()))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(GitError::Failed {
            what: what.to_owned(),
            message: summary(&String::from_utf8_lossy(&out.stderr)),
        })
    }
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content.as_bytes())
}

/// A source's bare cache folder.
#[derive(Clone, Debug)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache of source `name` under `root`.
    pub fn new(root: &Path, name: &str) -> Self {
        Self {
            dir: root.join(name),
        }
    }

    /// Fetches `remote_ref` from `url` and returns the commit it points at.
    ///
    /// # Errors
    /// [`GitError`].
    pub async fn fetch(
        &self,
        url: &str,
        remote_ref: &str,
        auth: Option<&Auth>,
    ) -> Result<String, GitError> {
        if !self.dir.join("HEAD").exists() {
            std::fs::create_dir_all(&self.dir).map_err(|e| GitError::Failed {
                what: "init".into(),
                message: format!("{}: {e}", self.dir.display()),
            })?;
            git(Some(&self.dir), &["init", "--bare", "-q"], "init").await?;
        }
        let refspec = format!("+{remote_ref}:{LOCAL_REF}");
        // ssh wants the key in a file only its owner reads.
        let key = self.dir.join("ssh-key");
        if let Some(Auth::SshKey(k)) = auth {
            write_private(&key, k).map_err(|e| GitError::Failed {
                what: "fetch".into(),
                message: format!("cannot write the ssh key file: {e}"),
            })?;
        }
        let fetched = run(
            command(Some(&self.dir), auth.map(|a| (a, key.as_path()))),
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                "--force",
                "--depth=1",
                "--",
                url,
                &refspec,
            ],
            "fetch",
        )
        .await;
        let _ = std::fs::remove_file(&key);
        fetched?;
        let rev = git(
            Some(&self.dir),
            &["rev-parse", "--verify", &format!("{LOCAL_REF}^{{commit}}")],
            "rev-parse",
        )
        .await?;
        Ok(String::from_utf8_lossy(&rev).trim().to_owned())
    }

    /// The files under `folder` at `rev` (paths relative to the repository).
    ///
    /// # Errors
    /// [`GitError`].
    pub async fn files(&self, rev: &str, folder: &str) -> Result<Vec<String>, GitError> {
        let mut args = vec!["ls-tree", "-r", "-z", "--name-only", rev];
        if folder != "." {
            args.extend(["--", folder]);
        }
        let out = git(Some(&self.dir), &args, "ls-tree").await?;
        Ok(out
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect())
    }

    /// The content of `path` at `rev`.
    ///
    /// # Errors
    /// [`GitError`].
    pub async fn read(&self, rev: &str, path: &str) -> Result<Vec<u8>, GitError> {
        git(
            Some(&self.dir),
            &["cat-file", "blob", &format!("{rev}:{path}")],
            "cat-file",
        )
        .await
    }

    /// Removes the cache (the source was deleted).
    pub fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_of_a_failed_ssh_fetch_is_kept() {
        let err = "git@host: Permission denied (publickey).\nfatal: Could not read from remote repository.\n\nPlease make sure you have the correct access rights\nand the repository exists.\n";
        let m = summary(err);
        assert_eq!(
            m,
            "git@host: Permission denied (publickey). / fatal: Could not read from remote repository."
        );
        let refused = GitError::Failed {
            what: "fetch".into(),
            message: m,
        };
        assert!(refused.is_refused_access());
        assert_eq!(summary("a\nb\nc\nd\n"), "b / c / d");
    }

    #[test]
    fn refused_access_is_told_from_other_failures() {
        let failed = |message: &str| GitError::Failed {
            what: "fetch".into(),
            message: message.into(),
        };
        for refused in [
            "fatal: could not read Username for 'https://git.example': terminal prompts disabled",
            "remote: Invalid username or password. / fatal: Authentication failed for 'https://git.example/r.git/'",
            "git@git.example: Permission denied (publickey). / fatal: Could not read from remote repository.",
            "fatal: unable to access 'https://git.example/r.git/': The requested URL returned error: 403",
        ] {
            assert!(failed(refused).is_refused_access(), "{refused}");
        }
        for other in [
            "fatal: repository 'https://git.example/r.git/' not found",
            "fatal: couldn't find remote ref refs/heads/nope",
            "fatal: unable to access 'https://git.example/': Could not resolve host: git.example",
        ] {
            assert!(!failed(other).is_refused_access(), "{other}");
        }
        assert!(!GitError::TimedOut("fetch".into()).is_refused_access());
    }

    #[test]
    fn a_secret_is_an_ssh_key_or_user_and_token_and_never_printed() {
        let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
        assert!(matches!(Auth::parse(key), Ok(Auth::SshKey(k)) if k == key));
        let basic = Auth::parse("deploy:s3cr3t-token\n").expect("user:token");
        // base64("deploy:s3cr3t-token")
        assert_eq!(
            basic,
            Auth::Basic("Basic ZGVwbG95OnMzY3IzdC10b2tlbg==".into())
        );
        assert_eq!(format!("{basic:?}"), "Auth::Basic(..)");
        for bad in ["just-a-sekrit", ":sekrit", "sekrit:", "a:sekrit\nc:d", ""] {
            let e = Auth::parse(bad).expect_err(bad);
            assert!(!e.contains("sekrit"), "{e}");
        }
    }

    #[test]
    fn credentials_go_into_the_environment_not_the_command_line() {
        let dir = Path::new("/tmp/cache");
        let basic = Auth::Basic("Basic ZGVwbG95OnMzY3IzdC10b2tlbg==".into());
        let cmd = command(Some(dir), Some((&basic, Path::new("/unused"))));
        let std = cmd.as_std();
        let args: Vec<String> = std.get_args().map(|a| a.to_string_lossy().into()).collect();
        assert!(args.iter().all(|a| !a.contains("ZGVwbG95")), "{args:?}");
        let env: Vec<(String, String)> = std
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_string_lossy().into(), v?.to_string_lossy().into())))
            .collect();
        assert!(env.contains(&(
            "GIT_CONFIG_VALUE_0".into(),
            "Authorization: Basic ZGVwbG95OnMzY3IzdC10b2tlbg==".into()
        )));
        assert!(env.contains(&("GIT_TERMINAL_PROMPT".into(), "0".into())));
        assert!(env.contains(&(
            "GIT_ALLOW_PROTOCOL".into(),
            "file:git:http:https:ssh".into()
        )));
        let key = Auth::SshKey("k".into());
        let cmd = command(Some(dir), Some((&key, Path::new("/tmp/cache/ssh-key"))));
        let ssh = cmd
            .as_std()
            .get_envs()
            .find(|(k, _)| *k == "GIT_SSH_COMMAND")
            .and_then(|(_, v)| v)
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert!(
            ssh.contains("-i /tmp/cache/ssh-key")
                && ssh.contains("BatchMode=yes")
                && ssh.contains("UserKnownHostsFile=/tmp/cache/known_hosts"),
            "{ssh}"
        );
    }
}
