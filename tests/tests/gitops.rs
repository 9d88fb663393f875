//! GitSource end to end: a real git repository on this machine, a real
//! haswarmd with its controllers on the local swarm. Commits are applied
//! within an interval, an invalid commit stalls the source while the
//! previous revision stays applied, prune deletes what left the folder,
//! resources the source did not apply are left alone, and the webhook syncs
//! without waiting for the interval. A private repository, served on loopback
//! by git's own `http-backend` behind Basic credentials, is fetched with the
//! secret haswarmd holds, and refused access stalls the source; so is one
//! behind sshd in a container, with a key, and a changed host key stops the
//! fetches. Needs `tests/testbed/prepare.sh`, git and ssh-keygen.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use haswarm_testbed::docker::{docker, eventually, require_image, require_swarm, Cleanup};
use haswarm_testbed::{assert_code, run_ok, stdout, Daemon};
use serde_json::Value;

fn git(repo: &Path, args: &[&str]) -> String {
    run_ok(
        Command::new("git")
            .arg("-C")
            .arg(repo)
            .args([
                "-c",
                "user.name=haswarm test",
                "-c",
                "user.email=test@haswarm.invalid",
            ])
            .args(args),
        &format!("git {args:?}"),
    )
}

fn commit(repo: &Path, files: &[(&str, Option<&str>)], message: &str) -> String {
    for (path, text) in files {
        let p = repo.join(path);
        match text {
            Some(t) => {
                std::fs::create_dir_all(p.parent().expect("parent")).expect("folder");
                std::fs::write(&p, t).expect("write");
            }
            None => {
                git(repo, &["rm", "-q", path]);
            }
        }
    }
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

fn volume(name: &str, path: &Path, access: &str) -> String {
    format!(
        "apiVersion: haswarm.io/v1alpha1\nkind: SharedVolume\nmetadata:\n  name: {name}\nspec:\n  hostPath:\n    path: {}\n  accessMode: {access}\n",
        path.display()
    )
}

fn source(name: &str, repo: &Path, interval: &str) -> String {
    format!(
        "apiVersion: haswarm.io/v1alpha1\nkind: GitSource\nmetadata:\n  name: {name}\nspec:\n  url: {}\n  ref:\n    branch: main\n  path: apps\n  interval: {interval}\n  prune: true\n",
        repo.display()
    )
}

fn condition(v: &Value, type_: &str) -> Value {
    v["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or(Value::Null)
}

#[test]
fn a_git_folder_is_applied_pruned_guarded_and_synced_by_webhook() {
    require_swarm();
    let id = std::process::id();
    let gs = format!("e2e-gs-{id}");
    let (a, b, c) = (
        format!("e2e-gs-a-{id}"),
        format!("e2e-gs-b-{id}"),
        format!("e2e-gs-c-{id}"),
    );
    let rsg = format!("e2e-gs-r-{id}");
    let mut cleanup = Cleanup::default();
    for n in [&a, &b, &c] {
        cleanup.owner("SharedVolume", n);
    }
    cleanup.owner("RedisSentinelGroup", &rsg);
    let tmp = tempfile::Builder::new()
        .prefix("hsw-gitops")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let repo = tmp.path().join("repo");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&repo).expect("repo folder");
    std::fs::create_dir_all(&data).expect("data folder");
    git(&repo, &["init", "-q", "-b", "main"]);
    let first = commit(
        &repo,
        &[
            ("README.md", Some("not a manifest\n")),
            ("apps/a.yaml", Some(&volume(&a, &data, "ReadWriteMany"))),
        ],
        "a shared volume",
    );

    let d = Daemon::start_with_controllers(&["--resync", "2s"]);
    d.apply("gs.yaml", &source(&gs, &repo, "2s"));
    d.wait_for(&format!("gs/{gs}"), "condition=Ready", "60s");
    let v = d.get_json("gs", &gs);
    assert_eq!(v["status"]["lastAppliedRevision"], first.as_str(), "{v}");
    // Healthy once what it applied is Ready (the volume's probe ran).
    d.wait_for(&format!("gs/{gs}"), "condition=Healthy", "60s");
    let sv = d.get_json("sv", &a);
    assert_eq!(
        sv["metadata"]["labels"]["haswarm.io/gitsource"],
        gs.as_str(),
        "{sv}"
    );
    let listed = stdout(&d.ctl(&["get", "gs"]));
    assert!(
        listed.contains("REVISION") && listed.contains(&first[..12]),
        "{listed}"
    );

    // A new RedisSentinelGroup, and a change, each applied within an interval.
    let rsg_yaml = format!(
        "apiVersion: haswarm.io/v1alpha1\nkind: RedisSentinelGroup\nmetadata:\n  name: {rsg}\nspec:\n  image: haswarm/redis:bookworm\n  placement:\n    spread: Preferred\n"
    );
    commit(
        &repo,
        &[("apps/cache/rsg.yaml", Some(&rsg_yaml))],
        "a redis group",
    );
    assert!(
        eventually(Duration::from_secs(30), || d.get_json("rsg", &rsg)["kind"]
            == "RedisSentinelGroup"),
        "the committed group was not applied: {}",
        d.get_json("gs", &gs)
    );
    let changed = commit(
        &repo,
        &[("apps/a.yaml", Some(&volume(&a, &data, "ReadOnlyMany")))],
        "read-only",
    );
    assert!(
        eventually(Duration::from_secs(30), || {
            d.get_json("sv", &a)["spec"]["accessMode"] == "ReadOnlyMany"
        }),
        "the change was not applied"
    );

    // An invalid manifest: the source stalls, naming the file and the
    // reason, and the previous revision stays applied.
    commit(
        &repo,
        &[(
            "apps/bad.yaml",
            Some("apiVersion: haswarm.io/v1alpha1\nkind: SharedVolume\nmetadata:\n  name: bad\nspec:\n  hostPath:\n    path: /srv\n  colour: blue\n"),
        )],
        "a broken manifest",
    );
    assert!(
        eventually(Duration::from_secs(30), || {
            let s = condition(&d.get_json("gs", &gs), "Stalled");
            s["status"] == "True"
                && s["reason"] == "InvalidManifests"
                && s["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("apps/bad.yaml") && m.contains("colour"))
        }),
        "no Stalled condition naming the file: {}",
        d.get_json("gs", &gs)
    );
    let v = d.get_json("gs", &gs);
    assert_eq!(v["status"]["lastAppliedRevision"], changed.as_str(), "{v}");
    assert_eq!(condition(&v, "Ready")["status"], "False", "{v}");
    assert_eq!(d.get_json("rsg", &rsg)["kind"], "RedisSentinelGroup");
    assert_eq!(d.get_json("sv", "bad"), Value::Null);

    // Fixed, and the group's file deleted: with prune on, the group goes
    // (its Swarm objects with it).
    commit(
        &repo,
        &[("apps/bad.yaml", None), ("apps/cache/rsg.yaml", None)],
        "fix, and drop the group",
    );
    assert!(
        eventually(Duration::from_secs(120), || {
            d.ctl(&["get", "rsg", &rsg]).status.code() == Some(5)
        }),
        "the pruned group is still there: {}",
        d.get_json("rsg", &rsg)
    );
    d.wait_for(&format!("gs/{gs}"), "condition=Ready", "30s");
    let described = stdout(&d.ctl(&["describe", "gs", &gs]));
    assert!(
        described.contains("Pruned") && described.contains("InvalidManifests"),
        "{described}"
    );

    // A resource applied by hand is not taken over.
    d.apply("c.yaml", &volume(&c, &data, "ReadWriteMany"));
    // From now on only the webhook triggers a sync.
    d.apply("gs.yaml", &source(&gs, &repo, "1h"));
    d.wait_for(&format!("gs/{gs}"), "condition=Ready", "30s");
    let before = d.get_json("gs", &gs)["status"]["lastAppliedRevision"].clone();
    let hooked = commit(
        &repo,
        &[
            ("apps/b.yaml", Some(&volume(&b, &data, "ReadWriteMany"))),
            ("apps/c.yaml", Some(&volume(&c, &data, "ReadOnlyMany"))),
        ],
        "two more volumes, one of them someone else's",
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        d.get_json("gs", &gs)["status"]["lastAppliedRevision"],
        before,
        "synced before the webhook"
    );
    let (code, body) = d.http("POST", &format!("/hooks/gitsources/{gs}"));
    assert_eq!(code, 202, "{body}");
    assert!(
        eventually(Duration::from_secs(20), || {
            let v = d.get_json("gs", &gs);
            v["status"]["lastFetchedRevision"] == hooked.as_str()
                && condition(&v, "Stalled")["reason"] == "Conflict"
        }),
        "the webhook did not sync, or the conflict was not reported: {}",
        d.get_json("gs", &gs)
    );
    let msg = condition(&d.get_json("gs", &gs), "Stalled")["message"].clone();
    assert!(msg.as_str().is_some_and(|m| m.contains(&c)), "{msg}");
    assert_eq!(d.get_json("sv", &c)["spec"]["accessMode"], "ReadWriteMany");
    assert_eq!(
        d.get_json("sv", &b),
        Value::Null,
        "nothing of a stalled revision is applied"
    );
    let (code, _) = d.http("POST", "/hooks/gitsources/no-such-source");
    assert_eq!(code, 404);

    // The source goes; what it applied stays until deleted.
    assert_code(&d.ctl(&["delete", "gs", &gs, "--wait", "--timeout=30s"]), 0);
    assert_eq!(d.get_json("sv", &a)["kind"], "SharedVolume");
    for n in [&a, &c] {
        assert_code(&d.ctl(&["delete", "sv", n, "--wait", "--timeout=60s"]), 0);
    }
}

/// A private repository's test bed: a repository with one SharedVolume
/// manifest committed, its bare copy to serve, a secrets folder for
/// haswarmd, and a haswarmd reading it.
struct Private {
    gs: String,
    sv: String,
    repo: std::path::PathBuf,
    bare: std::path::PathBuf,
    secrets: std::path::PathBuf,
    data: std::path::PathBuf,
    first: String,
    d: Daemon,
    cleanup: Cleanup,
    _tmp: tempfile::TempDir,
}

impl Private {
    /// The secrets folder may be filled later: haswarmd reads a secret
    /// when it fetches.
    fn new(tag: &str) -> Self {
        let id = std::process::id();
        let (gs, sv) = (format!("e2e-{tag}-{id}"), format!("e2e-{tag}-v-{id}"));
        let mut cleanup = Cleanup::default();
        cleanup.owner("SharedVolume", &sv);
        let tmp = tempfile::Builder::new()
            .prefix("hsw-gitprivate")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let dir = |n: &str| {
            let p = tmp.path().join(n);
            std::fs::create_dir_all(&p).expect("folder");
            p
        };
        let (repo, root, secrets, data) = (dir("repo"), dir("served"), dir("secrets"), dir("data"));
        git(&repo, &["init", "-q", "-b", "main"]);
        let first = commit(
            &repo,
            &[("apps/v.yaml", Some(&volume(&sv, &data, "ReadWriteMany")))],
            "a volume",
        );
        let bare = haswarm_testbed::git_http::publish(&repo, &root, "deploy.git");
        let secrets_dir = secrets.display().to_string();
        let d = Daemon::start_with_controllers(&["--resync", "2s", "--secrets-dir", &secrets_dir]);
        Self {
            gs,
            sv,
            repo,
            bare,
            secrets,
            data,
            first,
            d,
            cleanup,
            _tmp: tmp,
        }
    }

    /// The GitSource for `url`, with the credentials secret named, if any.
    fn source(&self, url: &str, secret: Option<&str>) -> String {
        let credentials = secret.map_or_else(String::new, |s| {
            format!("  credentials:\n    secret: {s}\n")
        });
        format!(
            "apiVersion: haswarm.io/v1alpha1\nkind: GitSource\nmetadata:\n  name: {}\nspec:\n  url: {url}\n  ref:\n    branch: main\n  path: apps\n  interval: 2s\n  prune: true\n{credentials}",
            self.gs
        )
    }

    /// Whether the source stalls, within 30 s, for `reason` with `text` in
    /// the message.
    fn stalls(&self, reason: &str, text: &str) -> bool {
        eventually(Duration::from_secs(30), || {
            let s = condition(&self.d.get_json("gs", &self.gs), "Stalled");
            s["status"] == "True"
                && s["reason"] == reason
                && s["message"].as_str().is_some_and(|m| m.contains(text))
        })
    }

    /// Commits a change of the volume and publishes it to the bare copy.
    fn commit_change(&self) -> String {
        let rev = commit(
            &self.repo,
            &[(
                "apps/v.yaml",
                Some(&volume(&self.sv, &self.data, "ReadOnlyMany")),
            )],
            "read-only",
        );
        git(
            &self.repo,
            &["push", "-q", &self.bare.display().to_string(), "main"],
        );
        rev
    }

    /// None of `secrets` in what haswarm shows or logs; then the source and
    /// the volume are deleted.
    fn hides_and_deletes(self, secrets: &[&str]) {
        let shown = [
            stdout(&self.d.ctl(&["get", "gs", &self.gs, "-o", "yaml"])),
            stdout(&self.d.ctl(&["describe", "gs", &self.gs])),
            self.d.log(),
        ];
        for text in &shown {
            for secret in secrets {
                assert!(!text.contains(secret), "{secret} shown: {text}");
            }
        }
        assert_code(
            &self
                .d
                .ctl(&["delete", "gs", &self.gs, "--wait", "--timeout=30s"]),
            0,
        );
        assert_code(
            &self
                .d
                .ctl(&["delete", "sv", &self.sv, "--wait", "--timeout=60s"]),
            0,
        );
    }
}

#[test]
fn a_source_behind_http_credentials_fetches_with_its_secret_and_never_shows_it() {
    require_swarm();
    let id = std::process::id();
    let token = format!("tok-{id}-s3cr3t");
    let wrong = format!("not-{id}-it");
    let bed = Private::new("gsauth");
    for (file, password) in [("git-token", &token), ("git-wrong", &wrong)] {
        std::fs::write(bed.secrets.join(file), format!("deploy:{password}\n")).expect("secret");
    }
    let server = haswarm_testbed::git_http::Server::start(
        bed.bare.parent().expect("served folder"),
        "deploy",
        &token,
    );
    let url = server.url("deploy.git");
    let d = &bed.d;

    // Without credentials, with wrong ones, with a secret haswarmd does not
    // have: the source stalls and applies nothing.
    d.apply("gs.yaml", &bed.source(&url, None));
    assert!(
        bed.stalls("AuthenticationFailed", "wants credentials"),
        "{}",
        d.get_json("gs", &bed.gs)
    );
    let counts = server.counts();
    assert!(counts.refused.load(Ordering::SeqCst) > 0);
    d.apply("gs.yaml", &bed.source(&url, Some("git-wrong")));
    assert!(
        eventually(Duration::from_secs(30), || counts
            .wrong
            .load(Ordering::SeqCst)
            > 0),
        "git never sent the wrong credentials"
    );
    assert!(
        bed.stalls(
            "AuthenticationFailed",
            "refused the credentials in secret git-wrong"
        ),
        "{}",
        d.get_json("gs", &bed.gs)
    );
    let described = stdout(&d.ctl(&["describe", "gs", &bed.gs]));
    assert!(described.contains("AuthenticationFailed"), "{described}");
    d.apply("gs.yaml", &bed.source(&url, Some("git-missing")));
    assert!(
        bed.stalls("CredentialsInvalid", "git-missing"),
        "{}",
        d.get_json("gs", &bed.gs)
    );
    assert_eq!(
        d.get_json("sv", &bed.sv),
        Value::Null,
        "applied without access"
    );
    assert_eq!(
        counts.served.load(Ordering::SeqCst),
        0,
        "git served a client without the credentials"
    );

    // With the right secret: fetched and applied, and later commits too.
    d.apply("gs.yaml", &bed.source(&url, Some("git-token")));
    d.wait_for(&format!("gs/{}", bed.gs), "condition=Ready", "60s");
    let v = d.get_json("gs", &bed.gs);
    assert_eq!(
        v["status"]["lastAppliedRevision"],
        bed.first.as_str(),
        "{v}"
    );
    assert_eq!(d.get_json("sv", &bed.sv)["kind"], "SharedVolume");
    let next = bed.commit_change();
    assert!(
        eventually(Duration::from_secs(30), || {
            d.get_json("gs", &bed.gs)["status"]["lastAppliedRevision"] == next.as_str()
                && d.get_json("sv", &bed.sv)["spec"]["accessMode"] == "ReadOnlyMany"
        }),
        "the pushed commit was not applied: {}",
        d.get_json("gs", &bed.gs)
    );
    bed.hides_and_deletes(&[&token, &wrong]);
}

/// An ssh git server: sshd in a container of its own on a network of its
/// own, accepting one public key for root, with fresh host keys.
const GIT_SSH_IMAGE: &str = "haswarm/git-ssh:bookworm";
const SSHD: &str = "set -e; mkdir -p /run/sshd /root/.ssh; printf '%s\\n' \"$AUTHORIZED_KEY\" > /root/.ssh/authorized_keys; chmod 700 /root/.ssh; chmod 600 /root/.ssh/authorized_keys; rm -f /etc/ssh/ssh_host_*; ssh-keygen -A >/dev/null; exec /usr/sbin/sshd -D -e -o PasswordAuthentication=no";

fn keygen(path: &Path) -> String {
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "haswarm-test", "-f"])
            .arg(path),
        "ssh-keygen (openssh-client)",
    );
    std::fs::read_to_string(path.with_extension("pub")).expect("public key")
}

#[test]
fn a_source_over_ssh_fetches_with_its_key_and_holds_on_to_the_host_key() {
    require_swarm();
    require_image(GIT_SSH_IMAGE);
    let mut bed = Private::new("gsssh");
    let server = format!("hsw-gitssh-{}", std::process::id());
    bed.cleanup.named("container", &server);
    bed.cleanup.named("network", &server);
    let key = keygen(&bed.secrets.join("git-key"));
    keygen(&bed.secrets.join("other-key"));
    let publish = || {
        docker(&["exec", &server, "mkdir", "-p", "/srv/deploy.git"]);
        run_ok(
            Command::new("docker").args([
                "cp",
                &format!("{}/.", bed.bare.display()),
                &format!("{server}:/srv/deploy.git"),
            ]),
            "docker cp",
        );
        docker(&[
            "exec",
            &server,
            "chown",
            "-R",
            "root:root",
            "/srv/deploy.git",
        ]);
    };
    docker(&["network", "create", &server]);
    let authorized = format!("AUTHORIZED_KEY={}", key.trim());
    docker(&[
        "run",
        "-d",
        "--name",
        &server,
        "--network",
        &server,
        "-e",
        &authorized,
        GIT_SSH_IMAGE,
        "sh",
        "-c",
        SSHD,
    ]);
    // sshd logs to standard error.
    let logs = || {
        Command::new("docker")
            .args(["logs", &server])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default()
    };
    assert!(
        eventually(Duration::from_secs(20), || logs()
            .contains("Server listening")),
        "sshd did not start: {}",
        logs()
    );
    publish();
    let ip = docker(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &server,
    ]);
    let url = format!("ssh://root@{}/srv/deploy.git", ip.trim());
    let d = &bed.d;

    // A key the server does not know: refused, nothing applied.
    d.apply("gs.yaml", &bed.source(&url, Some("other-key")));
    assert!(
        bed.stalls("AuthenticationFailed", "secret other-key"),
        "{}",
        d.get_json("gs", &bed.gs)
    );
    assert_eq!(d.get_json("sv", &bed.sv), Value::Null);

    // The right key: fetched and applied.
    d.apply("gs.yaml", &bed.source(&url, Some("git-key")));
    d.wait_for(&format!("gs/{}", bed.gs), "condition=Ready", "60s");
    assert_eq!(
        d.get_json("gs", &bed.gs)["status"]["lastAppliedRevision"],
        bed.first.as_str()
    );
    assert_eq!(d.get_json("sv", &bed.sv)["kind"], "SharedVolume");

    // The server's host key changes: the next commit is not fetched from
    // it, and the source says why.
    docker(&[
        "exec",
        &server,
        "sh",
        "-c",
        "rm -f /etc/ssh/ssh_host_*; ssh-keygen -A >/dev/null; kill -HUP 1",
    ]);
    bed.commit_change();
    publish();
    assert!(
        bed.stalls("HostKeyChanged", "Host key verification failed"),
        "{}",
        d.get_json("gs", &bed.gs)
    );
    let v = d.get_json("gs", &bed.gs);
    assert_eq!(
        v["status"]["lastAppliedRevision"],
        bed.first.as_str(),
        "{v}"
    );
    assert_eq!(
        d.get_json("sv", &bed.sv)["spec"]["accessMode"],
        "ReadWriteMany"
    );

    // The private key is nowhere haswarm writes.
    let private = std::fs::read_to_string(bed.secrets.join("git-key")).expect("key");
    let body = private
        .lines()
        .find(|l| l.len() > 40 && !l.starts_with("-----"))
        .expect("a line of the key")
        .to_owned();
    bed.hides_and_deletes(&[&body]);
}
