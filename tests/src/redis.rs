//! RedisSentinelGroup test helpers shared by the fault tests: redis-cli
//! shells on a group's network, and a writer counting the writes a replica
//! acknowledged.

use std::time::Duration;

use crate::docker::{eventually, secret_value};
use crate::pg::At;
use crate::Daemon;

/// The image with `redis-server`, `redis-sentinel` and `redis-cli` (`prepare.sh` builds it).
pub const IMAGE: &str = "haswarm/redis:bookworm";

/// The redis-cli of the shell scripts: quiet, one second at most.
pub const CLI: &str = "timeout 1 redis-cli --no-auth-warning --raw";

/// Runs `sh -c script` in a container on group `name`'s network, with
/// redis-cli and the group's password in `REDISCLI_AUTH` (an environment
/// variable of a test's own container, never a command line); `how` says
/// how it runs (`--rm`, or `-d` and a name).
pub fn shell(at: At, name: &str, password: &str, how: &[&str], script: &str) -> String {
    let env = [format!("REDISCLI_AUTH={password}")];
    at.run(how, (&format!("{name}-net"), &env), IMAGE, script)
}

/// Group `name`'s password, read from the secret its status names.
pub fn password(d: &Daemon, at: At, name: &str) -> String {
    let secret = d.get_json("rsg", name)["status"]["passwordSecret"]
        .as_str()
        .unwrap_or_else(|| panic!("no password secret: {}", d.get_json("rsg", name)))
        .to_owned();
    let password = secret_value(&|a: &[&str]| at.manager(a), &secret, IMAGE);
    assert!(!password.is_empty(), "the password was not read");
    password
}

/// A shell function `master` printing the master's host as the sentinels
/// of group `name` answer it, as a Sentinel client asks.
pub fn ask_master(name: &str) -> String {
    format!(
        "master() {{ for s in 0 1 2; do m=$({CLI} -h {name}-sentinel-$s -p 26379 SENTINEL get-master-addr-by-name {name} 2>/dev/null | head -1); [ -n \"$m\" ] && {{ echo $m; return; }}; done; }}"
    )
}

/// Starts a writer, the container `<name>-writer`, that sets numbered keys
/// `k<i>` on the master the sentinels name, each followed by `WAIT 1`: a
/// number is printed (with the time) only once the master took it (`OK`:
/// a refused write, `NOREPLICAS` or `READONLY`, leaves nothing for `WAIT`
/// to wait on, so `WAIT` alone would count it) and a replica acknowledged
/// it; a failed attempt is retried with the same number. Returns the
/// container's name once 30 writes went through.
pub fn start_writer(at: At, name: &str, password: &str) -> String {
    let writer = format!("{name}-writer");
    let script = format!(
        "{}; i=1; while :; do m=$(master); r=''; [ -n \"$m\" ] && r=$(printf 'SET k%s %s\\nWAIT 1 1000\\n' $i $i | {CLI} -h $m 2>/dev/null); if [ \"$(echo \"$r\" | head -1)\" = OK ] && [ \"$(echo \"$r\" | tail -1)\" -ge 1 ] 2>/dev/null; then echo \"$i $(date +%s.%N)\"; i=$((i+1)); else sleep 0.1; fi; done",
        ask_master(name)
    );
    shell(at, name, password, &["-d", "--name", &writer], &script);
    assert!(
        eventually(Duration::from_secs(60), || acked(at, &writer).len() >= 30),
        "the writer does not write"
    );
    writer
}

/// What a writer printed: (number, unix time) of each acknowledged write.
pub fn acked(at: At, writer: &str) -> Vec<(u64, f64)> {
    at.docker(&["logs", writer])
        .lines()
        .filter_map(|l| {
            let (i, t) = l.trim().split_once(' ')?;
            Some((i.parse().ok()?, t.parse().ok()?))
        })
        .collect()
}

/// How many of the writer's acknowledged keys the instance `host` holds,
/// and how many there were.
pub fn present(
    at: At,
    name: &str,
    password: &str,
    host: &str,
    writes: &[(u64, f64)],
) -> (u64, usize) {
    let keys: Vec<String> = writes.iter().map(|(i, _)| format!("k{i}")).collect();
    let out = shell(
        at,
        name,
        password,
        &["--rm"],
        &format!("{CLI} -h {host} EXISTS {}", keys.join(" ")),
    );
    (out.trim().parse().unwrap_or(0), writes.len())
}

/// The acknowledged writes the instance `host` lacks.
pub fn missing(
    at: At,
    name: &str,
    password: &str,
    host: &str,
    writes: &[(u64, f64)],
) -> Vec<(u64, f64)> {
    let numbers: Vec<String> = writes.iter().map(|(i, _)| i.to_string()).collect();
    let out = shell(
        at,
        name,
        password,
        &["--rm"],
        &format!(
            "for i in {}; do [ \"$({CLI} -h {host} EXISTS k$i)\" = 1 ] || echo $i; done",
            numbers.join(" ")
        ),
    );
    let gone: Vec<u64> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
    writes
        .iter()
        .filter(|(i, _)| gone.contains(i))
        .copied()
        .collect()
}
