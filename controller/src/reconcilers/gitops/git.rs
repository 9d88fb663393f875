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

async fn git(dir: Option<&Path>, args: &[&str], what: &str) -> Result<Vec<u8>, GitError> {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    cmd.args(args)
        // Never wait for a password or a host key answer: fail instead.
        .env("GIT_TERMINAL_PROMPT", "0")
        .env(
            "GIT_SSH_COMMAND",
            "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes",
        )
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(TIMEOUT, cmd.output())
        .await
        .map_err(|_| GitError::TimedOut(what.to_owned()))?
        .map_err(|e| GitError::Missing(e.to_string()))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        Err(GitError::Failed {
            what: what.to_owned(),
            message: lines[lines.len().saturating_sub(3)..].join(" / "),
        })
    }
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
    pub async fn fetch(&self, url: &str, remote_ref: &str) -> Result<String, GitError> {
        if !self.dir.join("HEAD").exists() {
            std::fs::create_dir_all(&self.dir).map_err(|e| GitError::Failed {
                what: "init".into(),
                message: format!("{}: {e}", self.dir.display()),
            })?;
            git(Some(&self.dir), &["init", "--bare", "-q"], "init").await?;
        }
        let refspec = format!("+{remote_ref}:{LOCAL_REF}");
        git(
            Some(&self.dir),
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
        .await?;
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
