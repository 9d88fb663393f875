//! GitSource: a folder of manifests in a git repository, applied continuously
//! (GitOps). The controller fetches the branch or tag, applies every manifest
//! under the folder at one revision as one unit, and labels what it applied
//! with [`SOURCE_LABEL`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::{CommonStatus, ObjectMeta};
use crate::quantity::Duration;
use crate::validate::{Catalog, FieldPath, Report};
use crate::{defaults, Kind};

/// The label on every resource a GitSource applied: the GitSource's name.
/// A GitSource changes or prunes only resources that carry its name here.
pub const SOURCE_LABEL: &str = "haswarm.io/gitsource";

/// The annotation the webhook sets on a GitSource to ask for a sync now
/// (its value, a time, only has to change).
pub const SYNC_REQUESTED: &str = "haswarm.io/sync-requested";

/// Shortest poll interval: fetching more often than this only loads the git server.
pub const MIN_INTERVAL_MS: u64 = 1_000;

/// A git repository folder whose manifests haswarm keeps applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSourceSpec {
    /// The repository: a path on haswarmd's host (`/srv/git/platform.git`), or a
    /// `file://`, `https://`, `ssh://` or `user@host:path` URL. Fetched with the
    /// `git` command, which must be installed where haswarmd runs.
    pub url: String,
    /// What to follow: `{branch: NAME}` (default `main`) or `{tag: NAME}`.
    #[serde(default = "defaults::git_ref", rename = "ref")]
    pub reference: GitRef,
    /// Folder in the repository whose manifests (`.yaml`, `.yml`, `.json`,
    /// recursively) are applied. Default: the repository's root.
    #[serde(default = "defaults::git_path")]
    pub path: String,
    /// How often to fetch, e.g. `30s`, `5m` (at least 1s). Default `1m`. A
    /// webhook (`POST /hooks/gitsources/NAME`) syncs at once.
    #[serde(default = "defaults::git_interval")]
    pub interval: Duration,
    /// Delete resources this source applied once their manifest leaves the
    /// folder. Off by default: a deleted file then only stops being updated.
    #[serde(default)]
    pub prune: bool,
    /// Stop fetching and applying (what was applied stays as it is).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// Credentials for a private repository, from a Swarm secret mounted into
    /// haswarmd (the haswarm stack's `gitCredentials` value mounts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<GitCredentials>,
}

/// Where a GitSource's credentials are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitCredentials {
    /// Name of a Swarm secret mounted into haswarmd (read from
    /// `/run/secrets/<secret>`, or haswarmd's `--secrets-dir`). It holds an
    /// ssh private key (PEM or OpenSSH format) for ssh URLs, or one line
    /// `user:token` for https URLs (plain `http://` only to this machine:
    /// the token would travel in clear). Its content is never shown or
    /// logged.
    pub secret: String,
}

/// A branch or a tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum GitRef {
    /// Follow a branch's newest commit.
    Branch(String),
    /// Stay on a tag (a moved tag is followed too).
    Tag(String),
}

impl GitRef {
    /// The remote ref to fetch, e.g. `refs/heads/main`.
    pub fn remote_ref(&self) -> String {
        match self {
            Self::Branch(b) => format!("refs/heads/{b}"),
            Self::Tag(t) => format!("refs/tags/{t}"),
        }
    }

    fn name(&self) -> &str {
        match self {
            Self::Branch(n) | Self::Tag(n) => n,
        }
    }
}

/// One resource a GitSource applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InventoryEntry {
    /// Its kind.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// The file it came from, relative to the repository.
    pub file: String,
    /// Its Ready condition as last seen (absent until it reports one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
}

/// Observed state of a GitSource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitSourceStatus {
    /// Generation and conditions: `Ready` (the fetched revision is applied),
    /// `Stalled` (why a sync stopped) and `Healthy` (every resource it
    /// applied reports `Ready=True`; refreshed at each resync and interval).
    #[serde(flatten)]
    pub common: CommonStatus,
    /// The commit last fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetched_revision: Option<String>,
    /// The commit whose manifests are applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    /// The resources applied from it, with their health.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<InventoryEntry>,
    /// When the last fetch ran (the next one is due an interval later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<chrono::DateTime<chrono::Utc>>,
    /// The webhook request (the `haswarm.io/sync-requested` annotation) the
    /// last fetch answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_sync_request: Option<String>,
}

/// A git ref name the `git` command accepts and cannot mistake for an option.
fn ref_name_ok(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with(['-', '/', '.'])
        && !n.ends_with(['/', '.'])
        && !n.ends_with(".lock")
        && !n.contains("..")
        && !n.contains("//")
        && !n.contains("@{")
        && n.chars().all(|c| {
            !c.is_control()
                && !c.is_whitespace()
                && !matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
        })
}

fn url_ok(u: &str) -> bool {
    let scheme = ["file://", "https://", "http://", "ssh://", "git://"]
        .iter()
        .any(|s| u.starts_with(s) && u.len() > s.len());
    // scp-like `user@host:path`: a host, then a colon, and no slash before it.
    let scp = u
        .split_once(':')
        .is_some_and(|(host, path)| !host.is_empty() && !host.contains('/') && !path.is_empty());
    // `<transport>::<address>` names a remote helper (ext:: runs a command).
    let helper = u
        .find("::")
        .is_some_and(|i| !u[..i].contains(['/', '[', '@']));
    !u.is_empty()
        && !helper
        && !u.starts_with('-')
        && !u.contains(char::is_whitespace)
        && (u.starts_with('/') || scheme || scp)
}

/// Whether credentials sent to `url` would cross a network in clear: a
/// token over `http://` or `git://` to anything but this machine.
fn clear_text_beyond_loopback(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("git://"))
    else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    let loopback = host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback());
    !(loopback || host.eq_ignore_ascii_case("localhost"))
}

impl Kind for GitSourceSpec {
    const KIND: &'static str = "GitSource";
    const PLURAL: &'static str = "gitsources";
    const SHORT_NAMES: &'static [&'static str] = &["gs"];
    type Status = GitSourceStatus;

    fn apply_defaults(&mut self, _meta: &ObjectMeta) {}

    fn validate(&self, _meta: &ObjectMeta, report: &mut Report, _catalog: &dyn Catalog) {
        let spec = FieldPath::root().key("spec");
        report.check(
            url_ok(&self.url),
            || spec.key("url"),
            "git-url",
            || {
                format!(
                    "{:?} is not a repository location: write an absolute path, a file://, https://, ssh:// or git:// URL, or user@host:path",
                    self.url
                )
            },
        );
        let kind = match self.reference {
            GitRef::Branch(_) => "branch",
            GitRef::Tag(_) => "tag",
        };
        report.check(
            ref_name_ok(self.reference.name()),
            || spec.key("ref").key(kind),
            "git-ref-name",
            || {
                format!(
                    "{:?} is not a usable {kind} name (git check-ref-format rules; no leading '-')",
                    self.reference.name()
                )
            },
        );
        let p = self.path.as_str();
        let path_ok = !p.is_empty()
            && !p.starts_with(['/', '-'])
            && !p.split('/').any(|s| s == "..")
            && !p.contains(|c: char| c.is_control());
        report.check(
            path_ok,
            || spec.key("path"),
            "git-path",
            || format!("{p:?} is not a folder inside the repository: write a relative path without '..' (\".\" for the root)"),
        );
        if let Some(c) = &self.credentials {
            report.check(
                !clear_text_beyond_loopback(&self.url),
                || spec.key("credentials"),
                "git-credentials-in-clear",
                || format!("credentials for {:?} would travel in clear: use an https:// or ssh URL (http:// is allowed to this machine only)", self.url),
            );
            let ok = !c.secret.is_empty()
                && c.secret.len() <= 64
                && c.secret.starts_with(|ch: char| ch.is_ascii_alphanumeric())
                && c.secret
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-'));
            report.check(
                ok,
                || spec.key("credentials").key("secret"),
                "secret-name",
                || format!("{:?} is not a Swarm secret name (letters, digits, '_', '.', '-'; at most 64)", c.secret),
            );
        }
        report.check(
            self.interval.as_millis() >= MIN_INTERVAL_MS,
            || spec.key("interval"),
            "git-interval",
            || {
                format!(
                    "{} is too short: fetch at most once a second",
                    self.interval
                )
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{parse, Limits};
    use crate::AnyResource;

    fn source(spec: &str) -> Result<GitSourceSpec, String> {
        let text = format!(
            "apiVersion: haswarm.io/v1alpha1\nkind: GitSource\nmetadata:\n  name: platform\nspec:\n{spec}"
        );
        match parse("gs.yaml", &text, &Limits::default()) {
            Ok(mut docs) => match docs.pop().map(|d| d.resource) {
                Some(AnyResource::GitSource(r)) => {
                    let errors = r.validate(&crate::validate::EmptyCatalog);
                    if errors.is_empty() {
                        Ok(r.spec)
                    } else {
                        Err(errors
                            .iter()
                            .map(|e| format!("{} [{}] {}", e.path, e.rule, e.message))
                            .collect::<Vec<_>>()
                            .join("\n"))
                    }
                }
                other => Err(format!("{other:?}")),
            },
            Err(e) => Err(e
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")),
        }
    }

    #[test]
    fn defaults_follow_main_at_the_root_every_minute_without_pruning() {
        let s = source("  url: /srv/git/platform.git\n").expect("valid");
        assert_eq!(s.reference, GitRef::Branch("main".into()));
        assert_eq!(s.reference.remote_ref(), "refs/heads/main");
        assert_eq!(s.path, ".");
        assert_eq!(s.interval.as_millis(), 60_000);
        assert!(!s.prune && !s.suspend);
        let s = source("  url: https://git.example/platform.git\n  ref:\n    tag: v1.2.0\n  path: clusters/prod\n  interval: 30s\n  prune: true\n").expect("valid");
        assert_eq!(s.reference.remote_ref(), "refs/tags/v1.2.0");
        for url in [
            "file:///srv/git/p",
            "ssh://git@host/p.git",
            "git@host:team/p.git",
            "ssh://git@[::1]:2222/p.git",
        ] {
            assert!(source(&format!("  url: {url}\n")).is_ok(), "{url}");
        }
    }

    #[test]
    fn bad_sources_name_the_field_and_the_rule() {
        for (spec, field, rule) in [
            ("  url: --upload-pack=touch /tmp/x\n", "spec.url", "git-url"),
            ("  url: relative/path\n", "spec.url", "git-url"),
            ("  url: ext::sh\n", "spec.url", "git-url"),
            (
                "  url: /r\n  ref:\n    branch: -x\n",
                "spec.ref.branch",
                "git-ref-name",
            ),
            (
                "  url: /r\n  ref:\n    tag: a..b\n",
                "spec.ref.tag",
                "git-ref-name",
            ),
            ("  url: /r\n  path: ../other\n", "spec.path", "git-path"),
            ("  url: /r\n  path: /abs\n", "spec.path", "git-path"),
            (
                "  url: /r\n  interval: 100ms\n",
                "spec.interval",
                "git-interval",
            ),
            (
                "  url: /r\n  credentials:\n    secret: ../etc/shadow\n",
                "spec.credentials.secret",
                "secret-name",
            ),
        ] {
            let e = source(spec).expect_err(spec);
            assert!(e.contains(field) && e.contains(rule), "{spec}: {e}");
        }
        for url in [
            "http://git.example/r.git",
            "http://user@10.0.0.5:3000/r.git",
            "git://git.example/r.git",
            "http://127.0.0.1.example/r.git",
        ] {
            let e = source(&format!(
                "  url: {url}\n  credentials:\n    secret: token\n"
            ))
            .expect_err(url);
            assert!(e.contains("git-credentials-in-clear"), "{url}: {e}");
        }
        for url in [
            "http://127.0.0.1:8080/r.git",
            "http://localhost/r.git",
            "http://[::1]:3000/r.git",
            "https://git.example/r.git",
            "git@git.example:r.git",
        ] {
            source(&format!(
                "  url: {url}\n  credentials:\n    secret: token\n"
            ))
            .expect(url);
        }
        source("  url: http://git.example/public.git\n")
            .expect("no credentials, no secret to leak");
        let e = source("  url: /r\n  ref:\n    commit: abc\n").expect_err("unknown ref kind");
        assert!(e.contains("commit"), "{e}");
    }
}
