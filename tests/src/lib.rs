//! haswarm's test bed harness: a real `haswarmd` child process on a
//! temporary socket, the real `haswarmctl` pointed at it, and helpers for the
//! Docker engine the end-to-end tests use. The daemon is killed (by its own
//! handle) and its folder removed when the harness is dropped, even when a
//! test fails. Scripts that prepare the machine are in `testbed/`.

#![allow(clippy::missing_panics_doc)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` and returns its standard output, trimmed; a command that
/// fails fails the test with `what` and its standard error.
pub fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what} does not run: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Writes a line to the process's standard error past the test harness's
/// capture, so CI's output keeps a passing test's figures too
/// (`[figures] ...` lines), not only a failing one's.
#[macro_export]
macro_rules! figure {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

pub mod at_exit;
pub mod bench;
mod diagnose;
pub mod dind;
pub mod docker;
pub mod faults;
pub mod git_http;
pub mod pg;
pub mod redis;
pub mod s3;

/// The folder holding the workspace's binaries (`target/debug`), found from
/// the running test executable (`target/debug/deps/...`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps folder");
    deps.parent().expect("target profile folder").to_path_buf()
}

/// A workspace binary, built first: a test of one package cannot rely on
/// cargo having built another package's binaries.
pub fn bin(package: &str, name: &str) -> PathBuf {
    static BUILD: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let dir = bin_dir();
    let mut built = BUILD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", package, "--bin", name]);
        if dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.current_dir(repo()).status().expect("cargo runs");
        assert!(status.success(), "building {name} failed");
        built.push(name.to_owned());
    }
    dir.join(name)
}

/// `haswarmd`.
pub fn haswarmd_bin() -> PathBuf {
    bin("haswarm-controller", "haswarmd")
}

/// `haswarmctl`.
pub fn haswarmctl_bin() -> PathBuf {
    bin("haswarm-cli", "haswarmctl")
}

/// A running daemon.
#[derive(Debug)]
pub struct Daemon {
    /// The running haswarmd (a restart replaces it).
    child: std::sync::Mutex<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub tcp: Option<String>,
    /// Flags and environment it was started with, for a restart.
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Its process id, which the watchdog kills (a restart changes it).
    pid: std::sync::Arc<std::sync::atomic::AtomicU32>,
    _watchdog: Option<Watchdog>,
}

/// How long one end-to-end test may run once its daemon started, unless
/// `HASWARM_TEST_BUDGET` (seconds, 0 for none) says otherwise. A test that
/// hangs would otherwise run into CI's overall limit, which prints nothing
/// about which test hung or what the controller was doing.
const DEFAULT_BUDGET: Duration = Duration::from_secs(1200);

static NO_BUDGET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Benches run many failovers with one daemon: no per-test budget.
pub fn no_budget() {
    NO_BUDGET.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn budget() -> Option<Duration> {
    if NO_BUDGET.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    match std::env::var("HASWARM_TEST_BUDGET") {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(0) => None,
            Ok(s) => Some(Duration::from_secs(s)),
            Err(_) => Some(DEFAULT_BUDGET),
        },
        Err(_) => Some(DEFAULT_BUDGET),
    }
}

/// How long a test past its budget has to unwind once its daemon is gone.
const UNWIND_GRACE: Duration = Duration::from_secs(120);

/// Stops a test that outlives its budget: prints the test's name and the
/// tail of its daemon's log (to the process's stderr directly: the harness
/// captures only the test thread's print macros), then kills the daemon. A
/// test waiting on its daemon then fails and unwinds, so its cleanup guards
/// still remove what it created; one stuck elsewhere ends the whole test
/// process after [`UNWIND_GRACE`], once the guards' work registered in
/// [`at_exit`] is done.
#[derive(Debug)]
struct Watchdog {
    _done: std::sync::mpsc::Sender<()>,
    test: String,
    started: Instant,
    overran: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Watchdog {
    fn start(
        budget: Duration,
        log: PathBuf,
        daemon: std::sync::Arc<std::sync::atomic::AtomicU32>,
    ) -> Self {
        let (done, rx) = std::sync::mpsc::channel::<()>();
        let test = std::thread::current()
            .name()
            .unwrap_or("an unnamed test")
            .to_owned();
        let name = test.clone();
        let overran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = overran.clone();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(budget) {
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(150)..];
                let mut err = std::io::stderr().lock();
                let _ = writeln!(
                    err,
                    "\n==== {test} ran past its budget of {} s (HASWARM_TEST_BUDGET); \
                     killing its daemon ====\n---- last {} lines of haswarmd's log ----\n{}",
                    budget.as_secs(),
                    tail.len(),
                    tail.join("\n")
                );
                let _ = err.flush();
                drop(err);
                // The daemon is this test's own child: stop it by its id.
                let pid = daemon.load(std::sync::atomic::Ordering::Relaxed);
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    rx.recv_timeout(UNWIND_GRACE)
                {
                    let _ = writeln!(
                        std::io::stderr().lock(),
                        "==== {test} did not end within {} s of its daemon's kill; \
                         removing what the tests created, then ending the test process ====",
                        UNWIND_GRACE.as_secs()
                    );
                    at_exit::run_all();
                    std::process::exit(124);
                }
            }
        });
        Self {
            _done: done,
            test: name,
            started: Instant::now(),
            overran,
        }
    }
}

impl Drop for Watchdog {
    /// Says how long each daemon of a test lived, past the harness's
    /// capture, so CI's output shows where its minutes go.
    fn drop(&mut self) {
        let _ = writeln!(
            std::io::stderr().lock(),
            "[testbed] {}: daemon ran {} s",
            self.test,
            self.started.elapsed().as_secs()
        );
        // A test that got through once its daemon was killed still failed.
        if self.overran.load(std::sync::atomic::Ordering::Relaxed) && !std::thread::panicking() {
            panic!("{} ran past its budget (HASWARM_TEST_BUDGET)", self.test);
        }
    }
}

impl Daemon {
    /// Starts an API-only daemon (no reconcilers) on a fresh data folder and
    /// waits until it serves.
    pub fn start() -> Self {
        Self::start_with(&["--no-controllers"])
    }

    /// Starts a daemon with reconcilers (it will talk to the local engine).
    pub fn start_with_controllers(extra: &[&str]) -> Self {
        Self::start_with(extra)
    }

    /// Starts a daemon with the given flags.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[])
    }

    /// Starts a daemon with the given flags and environment variables.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("hsw")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let socket = dir.path().join("d.sock");
        let args: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let (child, tcp, ready) = spawn(dir.path(), &socket, &args, &env);
        let pid = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(child.id()));
        let _watchdog =
            budget().map(|b| Watchdog::start(b, dir.path().join("haswarmd.log"), pid.clone()));
        let d = Self {
            child: std::sync::Mutex::new(child),
            dir,
            socket,
            tcp,
            args,
            env,
            pid,
            _watchdog,
        };
        if !ready {
            d.stop();
            panic!("haswarmd did not become ready");
        }
        d
    }

    /// Kills the daemon with SIGKILL, as a crash or an OOM kill would (no
    /// shutdown path runs), then starts it again on the same data folder
    /// with the same flags and environment, and waits until it serves.
    /// A daemon given `--listen` on port 0 would come back on another
    /// port: that is refused rather than followed.
    pub fn kill_and_restart(&self) {
        self.restart_after_kill(false);
    }

    /// As [`Daemon::kill_and_restart`], deleting the data folder between
    /// the kill and the start, as when haswarmd moves to another node: a
    /// daemon with a mirror rebuilds its store from it. Returns how long
    /// the start took until the daemon served.
    pub fn kill_wipe_and_restart(&self) -> Duration {
        self.restart_after_kill(true)
    }

    fn restart_after_kill(&self, wipe: bool) -> Duration {
        self.stop();
        if wipe {
            let data = self.dir.path().join("data");
            std::fs::remove_dir_all(&data)
                .unwrap_or_else(|e| panic!("cannot delete {}: {e}", data.display()));
        }
        if let Ok(mut log) = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("haswarmd.log"))
        {
            let _ = writeln!(
                log,
                "==== the test killed haswarmd with SIGKILL; starting it again ===="
            );
        }
        let started = Instant::now();
        let (child, tcp, ready) = spawn(self.dir.path(), &self.socket, &self.args, &self.env);
        let took = started.elapsed();
        figure!(
            "[figures] haswarmd killed with SIGKILL{}; serving again {:.1} s after its restart",
            if wipe {
                " and its data folder deleted"
            } else {
                ""
            },
            took.as_secs_f64()
        );
        self.pid
            .store(child.id(), std::sync::atomic::Ordering::Relaxed);
        *self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = child;
        assert!(ready, "haswarmd did not become ready after its restart");
        assert_eq!(tcp, self.tcp, "the restarted daemon listens where it did");
        took
    }

    /// `GET path` on the daemon's unix socket, as a scraper or a health
    /// check would: the status code and the body.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        self.http("GET", path)
    }

    /// `METHOD path` with an empty body on the daemon's unix socket (a
    /// webhook's POST, say): the status code and the body.
    pub fn http(&self, method: &str, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: haswarm\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .expect("request sent");
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("response read");
        let code = raw
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = raw
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (code, body)
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haswarmd.log")).unwrap_or_default()
    }

    /// Writes `text` as `file` in the daemon's folder and applies it; the apply must succeed.
    #[track_caller]
    pub fn apply(&self, file: &str, text: &str) {
        let path = self.dir.path().join(file);
        std::fs::write(&path, text).expect("manifest written");
        assert_code(&self.ctl(&["apply", "-f", &path.display().to_string()]), 0);
    }

    /// `haswarmctl wait TARGET --for=FOR --timeout=TIMEOUT`; the wait must succeed.
    #[track_caller]
    pub fn wait_for(&self, target: &str, for_: &str, timeout: &str) {
        let o = self.ctl(&[
            "wait",
            target,
            &format!("--for={for_}"),
            &format!("--timeout={timeout}"),
        ]);
        assert_code(&o, 0);
    }

    /// The `--server` value for this daemon.
    pub fn server(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// `haswarmctl get KIND NAME -o json`, parsed; `Null` when the daemon
    /// says there is no such object. Any other failure panics: a check that
    /// an object or a field of it is absent must not pass because the
    /// daemon did not answer.
    pub fn get_json(&self, kind: &str, name: &str) -> serde_json::Value {
        let o = self.ctl(&["get", kind, name, "-o", "json"]);
        match o.status.code() {
            Some(0) => serde_json::from_str(&stdout(&o))
                .unwrap_or_else(|e| panic!("get {kind} {name}: not JSON ({e}): {}", stdout(&o))),
            Some(5) if stderr(&o).contains("not found") => serde_json::Value::Null,
            code => panic!(
                "haswarmctl get {kind} {name} failed ({code:?}): {}",
                stderr(&o)
            ),
        }
    }

    /// A RedisSentinelGroup's master as its status reports it (empty when unknown).
    pub fn redis_master(&self, name: &str) -> String {
        self.get_json("rsg", name)["status"]["master"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs haswarmctl against this daemon.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_stdin(args, None)
    }

    /// Runs haswarmctl with standard input.
    pub fn ctl_stdin(&self, args: &[&str], input: Option<&str>) -> Output {
        let mut child = self.ctl_command(args).spawn().expect("haswarmctl runs");
        if let Some(i) = input {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(i.as_bytes())
                .expect("written");
        } else {
            drop(child.stdin.take());
        }
        child.wait_with_output().expect("finishes")
    }

    /// A haswarmctl command ready to spawn, pointed at this daemon.
    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(haswarmctl_bin());
        c.args(args)
            .current_dir(repo())
            .env("HASWARM_SERVER", self.server())
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// A library client for this daemon.
    pub fn client(&self) -> haswarm_controller::client::Client {
        haswarm_controller::client::Client::new(haswarm_controller::client::Endpoint::Unix(
            self.socket.clone(),
        ))
    }

    /// Events of resource `plural/name` as (reason, message), by when they
    /// first happened; panics when the daemon does not answer.
    pub fn events(&self, plural: &str, name: &str) -> Vec<(String, String)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut ev = rt
            .block_on(self.client().events(plural, name))
            .expect("events");
        ev.sort_by_key(|e| e.first_timestamp);
        ev.into_iter().map(|e| (e.reason, e.message)).collect()
    }

    /// Asserts that none of `secrets` shows where a secret must never be:
    /// the specs, logs, environment and command lines of every service of
    /// resource `kind/name` (`short` is its short kind for haswarmctl),
    /// haswarmctl's `get -o yaml|json|env` and `describe`, and haswarmd's log.
    pub fn assert_secrets_hidden(&self, kind: &str, short: &str, name: &str, secrets: &[&str]) {
        let mut places = Vec::new();
        for s in docker::owned_services(kind, name) {
            places.push((
                format!("service {s}"),
                docker::docker(&["service", "inspect", &s]),
            ));
            places.push((format!("logs of {s}"), docker::service_logs(&s)));
            let c = docker::service_container(&s);
            if !c.is_empty() {
                for (what, file) in [("environment", "environ"), ("command line", "cmdline")] {
                    places.push((
                        format!("{what} of {s}"),
                        docker::docker(&["exec", &c, "cat", &format!("/proc/1/{file}")]),
                    ));
                }
            }
        }
        for args in [
            vec!["get", short, name, "-o", "yaml"],
            vec!["get", short, name, "-o", "json"],
            vec!["get", short, name, "-o", "env"],
            vec!["describe", short, name],
        ] {
            let o = self.ctl(&args);
            places.push((
                format!("haswarmctl {}", args.join(" ")),
                format!("{}{}", stdout(&o), stderr(&o)),
            ));
        }
        places.push(("haswarmd's log".to_owned(), self.log()));
        for (place, text) in &places {
            for secret in secrets {
                assert!(!text.contains(secret), "a secret appears in {place}");
            }
        }
    }

    /// Kills the daemon (only this child) and reaps it.
    pub fn stop(&self) {
        let mut child = self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Starts haswarmd on `dir`'s data folder, its log appended to
/// `dir/haswarmd.log`; the child, its TCP address when `--listen` was
/// given, and whether it said it serves within 20 s.
fn spawn(
    dir: &Path,
    socket: &Path,
    extra: &[String],
    env: &[(String, String)],
) -> (Child, Option<String>, bool) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("haswarmd.log"))
        .expect("log file");
    let mut child = Command::new(haswarmd_bin())
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--socket")
        .arg(socket)
        .args(extra)
        .env("HASWARM_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("haswarmd starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let listens = extra.iter().any(|a| a == "--listen");
    let mut tcp = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ready = false;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Some(a) = line.strip_prefix("haswarmd ready on http://") {
                    tcp = Some(a.to_owned());
                }
                if line.starts_with("haswarmd ready on unix://") {
                    ready = true;
                }
                if ready && (!listens || tcp.is_some()) {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    (child, tcp, ready)
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        // A failing test shows what the controller did (the harness prints a
        // test's captured output only when it fails).
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(120)..];
            // Swarm's view first: CI's summary of a failure keeps the start.
            eprintln!(
                "---- haswarm's services on the daemon's engine ----\n{}",
                diagnose::swarm_state(
                    self.env
                        .iter()
                        .find(|(k, _)| k == "DOCKER_HOST")
                        .map(|(_, v)| v.as_str())
                )
            );
            eprintln!(
                "---- last {} lines of haswarmd's log ----\n{}",
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts an exit code, showing the output when it differs.
#[track_caller]
pub fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// Filters for snapshots: what changes from run to run (uids, times, ages,
/// temporary paths).
pub fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "<uid>",
        ),
        (
            r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)",
            "<time>",
        ),
        // Ages: the last column of get tables, and describe's "(5s ago)".
        (r"(?m)   \d{1,3}[smhd]$", "   <age>"),
        (r"\b\d{1,3}[smhd] ago", "<age> ago"),
        (r"/tmp/hsw[^/\s]*", "<tmp>"),
    ]
}

/// Held by tests that must not run alongside the others of their binary:
/// on a 2-core machine, two Redis groups failing over at once (or three
/// Docker-in-Docker beds) starve the sentinels' timers into TILT mode.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
