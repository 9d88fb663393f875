//! What the sentinels say about the group, read inside one of the group's
//! containers (the password never leaves them), and parsed here. Parsing is
//! pure.

/// The host a script reaches the sentinel of its own container at. A
/// sentinel on another node is reached at its service name over the group's
/// network, from a container of the group on the engine's node: the engine
/// can exec only into containers on its own node.
pub const OWN_SENTINEL: &str = "127.0.0.1";

/// How often a sentinel reads `INFO` from the master and replicas, in
/// milliseconds. Sentinel learns replicas, and replicas' roles and links,
/// only from these reads, and reads every 10 s by default: a replica that
/// linked just after a read is unknown to the sentinels, and cannot be
/// promoted, for up to 10 s more. That wait was the largest part of a new
/// group's time to Ready and of every member's return during a roll. A
/// read a second costs the instances one `INFO` per sentinel per second.
pub const SENTINEL_INFO_PERIOD_MS: u64 = 1_000;

/// The script that asks the sentinel at `host` (see [`OWN_SENTINEL`]) about
/// the group: the master as Sentinel sees it, its replicas, the other
/// sentinels, and the master's replication offset. Every call is bounded: a
/// sentinel resolving the name of a member that is gone blocks for seconds,
/// and a missing answer only leaves its section empty. A sentinel that does
/// not answer at all (its node lost, its container frozen) prints nothing
/// after one bounded call.
///
/// It also sets the sentinel's INFO period to [`SENTINEL_INFO_PERIOD_MS`]
/// (`SENTINEL DEBUG`, Redis 7.0 and newer; an older sentinel refuses it,
/// and keeps its 10 s). The setting lives only in the sentinel process, so
/// every look sets it again: a restarted sentinel gets it at the next pass.
pub fn sentinel_query(group: &str, host: &str) -> String {
    format!(
        "export REDISCLI_AUTH=\"$(cat {pw})\"; c='timeout 3 redis-cli --no-auth-warning --raw'; \
         s=$($c -h {host} -p 26379 INFO sentinel) || exit 0; \
         $c -h {host} -p 26379 SENTINEL DEBUG info-period {SENTINEL_INFO_PERIOD_MS} >/dev/null 2>&1; \
         echo '#sentinel'; echo \"$s\"; \
         echo '#master'; $c -h {host} -p 26379 SENTINEL master {group}; \
         echo '#replicas'; $c -h {host} -p 26379 SENTINEL replicas {group}; \
         echo '#sentinels'; $c -h {host} -p 26379 SENTINEL sentinels {group}; \
         m=$($c -h {host} -p 26379 SENTINEL get-master-addr-by-name {group} | head -n 1); \
         echo '#info'; [ -n \"$m\" ] && $c -h \"$m\" -p 6379 INFO replication",
        pw = super::render::PASSWORD_FILE
    )
}

/// A script that runs one command against the sentinel at `host` (see
/// [`OWN_SENTINEL`]), with the password read in the container it runs in,
/// and prints the answer.
pub fn sentinel_command(host: &str, command: &str) -> String {
    format!(
        "REDISCLI_AUTH=\"$(cat {pw})\" timeout 5 redis-cli --no-auth-warning --raw -h {host} -p 26379 {command}",
        pw = super::render::PASSWORD_FILE
    )
}

/// A switchover that loses no acknowledged write, run in a sentinel
/// container (`switchover.sh` says why each step): the master's writes are
/// held until the replicas the sentinels could promote are at its offset,
/// then `SENTINEL FAILOVER`; the hold lasts until the old master follows
/// the promoted replica, which it is told to as soon as one is master.
/// `pause_ms` is how long one renewal of the hold lasts if this script
/// dies; `catch_up_ms` how long the replicas may take to reach the
/// master's offset before the hold ends and nothing happens. Prints what
/// happened, the sentinel's answer (`OK`) last.
pub fn graceful_failover(group: &str, pause_ms: u64, catch_up_ms: u64) -> String {
    format!(
        "G='{group}' P={pause_ms} W={catch_up_ms} PW='{pw}'\n{script}",
        pw = super::render::PASSWORD_FILE,
        script = include_str!("switchover.sh")
    )
}

/// The sentinel that remembers members which left the group (more sentinels
/// than there are, or replicas that are not instances), when it is safe to
/// reset it: no sentinel is still rediscovering the group after a reset.
pub fn stale_sentinel(
    views: &[(String, SentinelView)],
    sentinels: usize,
    instances: &[String],
) -> Option<String> {
    let others = u32::try_from(sentinels.saturating_sub(1)).unwrap_or(u32::MAX);
    if views.iter().any(|(_, v)| v.other_sentinels < others) {
        return None;
    }
    views
        .iter()
        .find(|(_, v)| {
            v.other_sentinels > others || v.replicas.iter().any(|r| !instances.contains(&r.host))
        })
        .map(|(name, _)| name.clone())
}

/// A replica as Sentinel reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaView {
    /// Host (the instance's service name, since instances announce host names).
    pub host: String,
    /// Whether the replication link is up.
    pub link_up: bool,
    /// The replica's replication offset.
    pub offset: Option<u64>,
    /// Sentinel flags (`slave`, `s_down`...).
    pub flags: String,
    /// `replica-priority` as Sentinel last read it: 0 is never promoted.
    pub priority: Option<u32>,
}

/// The group as one sentinel sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SentinelView {
    /// The master's host, when known.
    pub master: Option<String>,
    /// Sentinel flags of the master (`master`, `s_down`, `o_down`).
    pub master_flags: String,
    /// Other sentinels this one knows.
    pub other_sentinels: u32,
    /// The quorum it applies.
    pub quorum: u32,
    /// The configuration epoch of what it knows: higher is more recent.
    pub config_epoch: u64,
    /// Replicas.
    pub replicas: Vec<ReplicaView>,
    /// The master's replication offset.
    pub master_offset: Option<u64>,
    /// Replicas connected to the master, as the master itself reports them
    /// now (Sentinel's replica table is refreshed only every 10 s).
    pub connected: Vec<ConnectedReplica>,
    /// Whether the master itself answered, as a master (`role:master` in
    /// its `INFO replication`): without that, `connected` is empty because
    /// nobody answered, not because no replica is connected.
    pub master_answered: bool,
    /// The other sentinels this one knows, as it sees them.
    pub peers: Vec<PeerView>,
    /// Whether this sentinel is in TILT mode: its event loop stalled (slow
    /// DNS answers, a starved CPU, a clock jump), so for 30 s it neither
    /// votes nor fails anything over.
    pub tilt: bool,
}

/// Another sentinel, as a sentinel sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerView {
    /// Host it announces (the sentinel's service name).
    pub host: String,
    /// Sentinel flags (`sentinel`, `s_down`, `disconnected`).
    pub flags: String,
    /// Milliseconds since its last hello reached this sentinel (hellos go
    /// out every 2 s, over the sender's own connection to the master).
    pub last_hello_ms: Option<u64>,
}

/// A hello younger than this says its sender is alive: more than two of
/// Sentinel's 2 s hello periods.
const HELLO_FRESH_MS: u64 = 5_000;

impl PeerView {
    /// Whether it serves, whatever Swarm says of its node: it answers this
    /// sentinel's pings, or its hellos still arrive. The second matters
    /// when a node's engine alone stopped: the manager takes the node's
    /// tasks out of service discovery, so the others can no longer reach
    /// it by name, while the connections it opened itself carry on.
    pub fn answers(&self) -> bool {
        let reached = !self.flags.contains("s_down") && !self.flags.contains("disconnected");
        reached || self.last_hello_ms.is_some_and(|ms| ms < HELLO_FRESH_MS)
    }
}

/// A replica in the master's `INFO replication`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectedReplica {
    /// Host it announces (the instance's service name).
    pub host: String,
    /// `online` once the initial sync is done.
    pub state: String,
    /// Its acknowledged replication offset.
    pub offset: u64,
}

impl ConnectedReplica {
    fn parse(value: &str) -> Option<Self> {
        let mut r = Self::default();
        for field in value.split(',') {
            match field.split_once('=')? {
                ("ip", v) => r.host = v.to_owned(),
                ("state", v) => r.state = v.to_owned(),
                ("offset", v) => r.offset = v.parse().ok()?,
                _ => {}
            }
        }
        (!r.host.is_empty()).then_some(r)
    }
}

impl SentinelView {
    /// Whether the master is reachable and not flagged down.
    pub fn master_up(&self) -> bool {
        self.master.is_some()
            && !self.master_flags.contains("down")
            && !self.master_flags.contains("disconnected")
    }
}

/// What a host the sentinels or the master name stands for, given the
/// current incarnation of each member (`current(service)`, `None` for a
/// name that is no member's): the member's service name when it is the
/// current incarnation's announced name, `"<host> (replaced)"` for an
/// incarnation that was replaced (back from a lost node, or remembered by
/// a sentinel), which names no member, and anything else as it is.
pub fn member_name(host: &str, current: impl Fn(&str) -> Option<u32>) -> String {
    let (service, incarnation) = super::render::member_of_announced(host);
    match current(service) {
        Some(n) if n == incarnation => service.to_owned(),
        Some(_) => format!("{host} (replaced)"),
        None => host.to_owned(),
    }
}

impl SentinelView {
    /// The view with its hosts named as [`member_name`] says: members by
    /// their service, as status names them, and replaced incarnations as
    /// no member at all (so they count as departed).
    #[must_use]
    pub fn resolve(mut self, current: impl Fn(&str) -> Option<u32>) -> Self {
        let name = |h: &mut String| *h = member_name(h, &current);
        if let Some(m) = &mut self.master {
            name(m);
        }
        self.replicas.iter_mut().for_each(|r| name(&mut r.host));
        self.connected.iter_mut().for_each(|r| name(&mut r.host));
        self.peers.iter_mut().for_each(|p| name(&mut p.host));
        self
    }
}

/// The master as status reports it, from what it reported before.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportedMaster {
    /// The master, only while it answers.
    pub master: Option<String>,
    /// The last master, while it does not answer and none took over.
    pub unreachable: Option<String>,
    /// (from, to) when another master took over.
    pub changed: Option<(String, String)>,
    /// Set when the master has just stopped answering.
    pub went_unreachable: Option<String>,
}

/// What status says of the master, given what it said (`before`: master,
/// unreachable master) and the master the sentinels name now, `up` when
/// they see it answering. A master they flag down is not reported: status
/// never names a master that does not answer. Pure.
pub fn reported_master(
    before: (Option<&str>, Option<&str>),
    named: Option<&str>,
    up: bool,
) -> ReportedMaster {
    let master = named.filter(|_| up).map(str::to_owned);
    let last = before.0.or(before.1);
    // The sentinels following another master is the change, whether it
    // answers them yet or not: a promoted replica they still call
    // disconnected for a moment (seen after a fast failover) would
    // otherwise become the unreachable one, and answering later, no change.
    let changed = match (last, named) {
        (Some(b), Some(n)) if b != n => Some((b.to_owned(), n.to_owned())),
        _ => None,
    };
    let unreachable = match (&master, named) {
        (Some(_), _) => None,
        (None, Some(n)) => Some(n.to_owned()),
        // No sentinel names one: the last one still does not answer.
        (None, None) => last.map(str::to_owned),
    };
    let went_unreachable = unreachable.clone().filter(|u| before.1 != Some(u.as_str()));
    ReportedMaster {
        master,
        unreachable,
        changed,
        went_unreachable,
    }
}

fn pairs(lines: &[&str]) -> Vec<(String, String)> {
    lines
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].trim().to_owned(), c[1].trim().to_owned()))
        .collect()
}

/// A list of entries as `redis-cli --raw` prints it (`SENTINEL replicas`,
/// `SENTINEL sentinels`): key and value lines, each entry opening with `name`.
fn entries(lines: &[&str]) -> Vec<Vec<(String, String)>> {
    let mut out: Vec<Vec<(String, String)>> = Vec::new();
    for (k, v) in pairs(lines) {
        if k == "name" {
            out.push(Vec::new());
        }
        if let Some(e) = out.last_mut() {
            e.push((k, v));
        }
    }
    out
}

/// Parses the output of [`sentinel_query`].
pub fn parse(output: &str) -> SentinelView {
    let mut section = "";
    let (mut master, mut replicas, mut info) = (Vec::new(), Vec::new(), Vec::new());
    let mut peers = Vec::new();
    let mut tilt = false;
    for line in output.lines() {
        match line.trim() {
            "#sentinel" => section = "sentinel",
            "#master" => section = "master",
            "#replicas" => section = "replicas",
            "#info" => section = "info",
            "#sentinels" => section = "sentinels",
            l => match section {
                "master" => master.push(l),
                "replicas" => replicas.push(l),
                "sentinels" => peers.push(l),
                "info" => info.push(l),
                "sentinel" => tilt |= l.strip_prefix("sentinel_tilt:") == Some("1"),
                _ => {}
            },
        }
    }
    let mut view = SentinelView {
        tilt,
        ..SentinelView::default()
    };
    for (k, v) in pairs(&master) {
        match k.as_str() {
            "ip" => view.master = Some(v),
            "flags" => view.master_flags = v,
            "num-other-sentinels" => view.other_sentinels = v.parse().unwrap_or(0),
            "quorum" => view.quorum = v.parse().unwrap_or(0),
            "config-epoch" => view.config_epoch = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    for entry in entries(&replicas) {
        let mut r = ReplicaView::default();
        for (k, v) in entry {
            match k.as_str() {
                "ip" => r.host = v,
                "flags" => r.flags = v,
                "master-link-status" => r.link_up = v == "ok",
                "slave-repl-offset" => r.offset = v.parse().ok(),
                "slave-priority" => r.priority = v.parse().ok(),
                _ => {}
            }
        }
        view.replicas.push(r);
    }
    for entry in entries(&peers) {
        let mut p = PeerView::default();
        for (k, v) in entry {
            match k.as_str() {
                "ip" => p.host = v,
                "flags" => p.flags = v,
                "last-hello-message" => p.last_hello_ms = v.parse().ok(),
                _ => {}
            }
        }
        view.peers.push(p);
    }
    view.master_answered = info.iter().any(|l| l.trim() == "role:master");
    view.master_offset = info
        .iter()
        .find_map(|l| l.trim().strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse().ok());
    view.connected = info
        .iter()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            let n = k.strip_prefix("slave")?;
            (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .then(|| ConnectedReplica::parse(v))
                .flatten()
        })
        .collect();
    view
}

/// Fails unless `sh -n` parses `script`: a script haswarm runs in a
/// container must at least be valid shell.
#[cfg(test)]
pub fn assert_valid_shell(script: &str) {
    let out = std::process::Command::new("sh")
        .args(["-n", "-c", script])
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A sentinel's view of a healthy group `c` of 3, for the reconcilers'
/// table tests: master c-redis-0, both replicas online (c-redis-2 10 bytes
/// behind), two other sentinels.
#[cfg(test)]
pub fn healthy_test_view() -> SentinelView {
    let mut v = parse(
        "#master\nip\nc-redis-0\nflags\nmaster\n\
         #replicas\nname\nc-redis-1:6379\nip\nc-redis-1\nflags\nslave\n\
         name\nc-redis-2:6379\nip\nc-redis-2\nflags\nslave\n\
         #info\nrole:master\r\nmaster_repl_offset:100\r\n\
         slave0:ip=c-redis-1,port=6379,state=online,offset=100,lag=0\r\n\
         slave1:ip=c-redis-2,port=6379,state=online,offset=90,lag=0\r\n",
    );
    v.other_sentinels = 2;
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switchover_script_is_valid_shell() {
        let script = graceful_failover("cache", 8000, 1000);
        assert_valid_shell(&script);
        assert!(
            script.starts_with("G='cache' P=8000 W=1000 ")
                && script.contains("CLIENT PAUSE \"$P\" WRITE")
                && script.contains("SENTINEL FAILOVER \"$G\"")
        );
        // The old master follows the promoted replica itself: the sentinels
        // would tell it only after the hold could have lapsed.
        assert!(script.contains("REPLICAOF \"$h\" 6379"));
        // Nothing is held unless this sentinel knows a replica to promote.
        let pause = script.find("CLIENT PAUSE \"$P\"").expect("pauses");
        let known = script.find("knows no replica").expect("checks");
        assert!(known < pause);
    }

    const SAMPLE: &str = "#master\nname\ncache\nip\ncache-redis-1\nport\n6379\nflags\nmaster\nnum-slaves\n2\nnum-other-sentinels\n2\nquorum\n2\n#replicas\nname\ncache-redis-0:6379\nip\ncache-redis-0\nport\n6379\nflags\nslave\nmaster-link-status\nok\nslave-repl-offset\n1200\nname\ncache-redis-2:6379\nip\ncache-redis-2\nport\n6379\nflags\nslave,s_down\nmaster-link-status\nerr\nslave-repl-offset\n900\n#info\n# Replication\r\nrole:master\r\nconnected_slaves:1\r\nslave0:ip=cache-redis-0,port=6379,state=online,offset=1200,lag=0\r\nmaster_repl_offset:1250\r\n";

    #[test]
    fn sentinel_output_parses() {
        let v = parse(SAMPLE);
        assert_eq!(v.master.as_deref(), Some("cache-redis-1"));
        assert!(v.master_up());
        assert_eq!((v.other_sentinels, v.quorum), (2, 2));
        assert_eq!(v.master_offset, Some(1250));
        assert_eq!(v.replicas.len(), 2);
        assert_eq!(
            v.replicas[0],
            ReplicaView {
                host: "cache-redis-0".into(),
                link_up: true,
                offset: Some(1200),
                flags: "slave".into(),
                priority: None,
            }
        );
        assert!(!v.replicas[1].link_up);
        assert_eq!(
            v.connected,
            [ConnectedReplica {
                host: "cache-redis-0".into(),
                state: "online".into(),
                offset: 1200
            }]
        );
    }

    #[test]
    fn the_other_sentinels_parse_with_whether_they_answer() {
        let text = format!(
            "{SAMPLE}#sentinels\nname\nabc\nip\ncache-sentinel-1\nport\n26379\nrunid\nabc\nflags\nsentinel\nlast-hello-message\n800\nname\ndef\nip\ncache-sentinel-2\nport\n26379\nrunid\ndef\nflags\ns_down,sentinel\nlast-hello-message\n31000\n"
        );
        let v = parse(&text);
        assert_eq!(
            v.peers,
            [
                PeerView {
                    host: "cache-sentinel-1".into(),
                    flags: "sentinel".into(),
                    last_hello_ms: Some(800),
                },
                PeerView {
                    host: "cache-sentinel-2".into(),
                    flags: "s_down,sentinel".into(),
                    last_hello_ms: Some(31000),
                }
            ]
        );
        assert!(v.peers[0].answers());
        assert!(!v.peers[1].answers());
        let peer = |flags: &str, last_hello_ms| PeerView {
            host: "x".into(),
            flags: flags.into(),
            last_hello_ms,
        };
        assert!(!peer("sentinel,disconnected", None).answers());
        // Out of reach by name, but its hellos still arrive: it serves.
        assert!(peer("s_down,sentinel,disconnected", Some(1500)).answers());
        assert!(!peer("s_down,sentinel", Some(5000)).answers());
        // The sections around it still parse.
        assert_eq!(v.replicas.len(), 2);
        assert_eq!(v.master.as_deref(), Some("cache-redis-1"));
    }

    #[test]
    fn a_sentinel_in_tilt_mode_says_so() {
        assert!(!parse(SAMPLE).tilt);
        let tilted = format!(
            "#sentinel\r\n# Sentinel\r\nsentinel_masters:1\r\nsentinel_tilt:1\r\nsentinel_tilt_since_seconds:3\r\n{SAMPLE}"
        );
        let v = parse(&tilted);
        assert!(v.tilt);
        assert_eq!(v.master.as_deref(), Some("cache-redis-1"));
        assert!(!parse(&tilted.replace("sentinel_tilt:1", "sentinel_tilt:0")).tilt);
    }

    #[test]
    fn a_down_master_or_empty_answer_is_not_up() {
        assert!(
            !parse(&SAMPLE.replace("flags\nmaster\n", "flags\nmaster,s_down,o_down\n")).master_up()
        );
        assert_eq!(parse(""), SentinelView::default());
    }

    #[test]
    fn sentinels_that_remember_departed_members_are_reset_one_at_a_time() {
        let instances: Vec<String> = (0..3).map(|i| format!("cache-redis-{i}")).collect();
        let view = parse(SAMPLE);
        let views = |others: [u32; 3]| -> Vec<(String, SentinelView)> {
            others
                .iter()
                .enumerate()
                .map(|(j, o)| {
                    (
                        format!("cache-sentinel-{j}"),
                        SentinelView {
                            other_sentinels: *o,
                            ..view.clone()
                        },
                    )
                })
                .collect()
        };
        assert_eq!(stale_sentinel(&views([2, 2, 2]), 3, &instances), None);
        assert_eq!(
            stale_sentinel(&views([2, 4, 4]), 3, &instances).as_deref(),
            Some("cache-sentinel-1")
        );
        // Sentinel 0 was just reset and has not heard the others yet: wait.
        assert_eq!(stale_sentinel(&views([0, 4, 4]), 3, &instances), None);
        // A replica that is no instance any more (scaled down from 3 to 2).
        assert_eq!(
            stale_sentinel(&views([2, 2, 2]), 3, &instances[..2]).as_deref(),
            Some("cache-sentinel-0")
        );
    }

    #[test]
    fn hosts_are_named_by_member_and_replaced_incarnations_by_none() {
        // cache-redis-2 moved once, cache-sentinel-1 twice.
        let current = |s: &str| match s {
            "cache-redis-2" | "cache-sentinel-1" => Some(if s.contains("redis") { 1 } else { 2 }),
            s if s.starts_with("cache-redis-") || s.starts_with("cache-sentinel-") => Some(0),
            _ => None,
        };
        for (host, named) in [
            ("cache-redis-0", "cache-redis-0"),
            ("cache-redis-2-i1", "cache-redis-2"),
            ("cache-redis-2", "cache-redis-2 (replaced)"),
            ("cache-sentinel-1-i1", "cache-sentinel-1-i1 (replaced)"),
            ("cache-sentinel-1-i2", "cache-sentinel-1"),
            ("cache-redis-0-i1", "cache-redis-0-i1 (replaced)"),
            ("10.0.0.9", "10.0.0.9"),
        ] {
            assert_eq!(member_name(host, current), named, "{host}");
        }
        // cache-redis-2 moved: the master lists its new incarnation and its
        // old one, back from a lost node; a sentinel remembers the old one.
        let text = SAMPLE.replace("ip=cache-redis-0,", "ip=cache-redis-2-i1,");
        let text = format!(
            "{}slave1:ip=cache-redis-2,port=6379,state=online,offset=1200,lag=0\r\n#sentinels\nname\nabc\nip\ncache-sentinel-1-i2\nflags\nsentinel\n",
            text.trim_end_matches("master_repl_offset:1250\r\n")
        );
        let v = parse(&text).resolve(current);
        assert_eq!(v.master.as_deref(), Some("cache-redis-1"));
        let connected: Vec<&str> = v.connected.iter().map(|r| r.host.as_str()).collect();
        assert_eq!(connected, ["cache-redis-2", "cache-redis-2 (replaced)"]);
        let replicas: Vec<&str> = v.replicas.iter().map(|r| r.host.as_str()).collect();
        assert_eq!(replicas, ["cache-redis-0", "cache-redis-2 (replaced)"]);
        assert_eq!(v.peers[0].host, "cache-sentinel-1");
        // The sentinel remembering the replaced incarnation is reset.
        let instances: Vec<String> = (0..3).map(|i| format!("cache-redis-{i}")).collect();
        let views: Vec<(String, SentinelView)> = (0..3)
            .map(|j| {
                (
                    format!("cache-sentinel-{j}"),
                    SentinelView {
                        other_sentinels: 2,
                        ..v.clone()
                    },
                )
            })
            .collect();
        assert_eq!(
            stale_sentinel(&views, 3, &instances).as_deref(),
            Some("cache-sentinel-0")
        );
    }

    #[test]
    fn commands_read_the_password_from_the_file() {
        let c = sentinel_command("g-sentinel-1", "SENTINEL FAILOVER g");
        assert!(
            c.contains("cat /run/secrets/redis-password") && c.ends_with("SENTINEL FAILOVER g")
        );
        assert!(c.contains("-h g-sentinel-1 -p 26379"));
    }

    #[test]
    fn the_query_reads_the_password_from_the_file() {
        let q = sentinel_query("dify-master-group", OWN_SENTINEL);
        assert!(q.contains("cat /run/secrets/redis-password"));
        assert!(q.contains("-h 127.0.0.1 -p 26379 SENTINEL master dify-master-group"));
        // Another node's sentinel is asked at its name, every call of it.
        let q = sentinel_query("g", "g-sentinel-2");
        assert_eq!(q.matches("-h g-sentinel-2 -p 26379").count(), 6);
        assert!(!q.contains("127.0.0.1"));
        assert!(q.contains("SENTINEL DEBUG info-period 1000 >/dev/null 2>&1;"));
        assert_valid_shell(&q);
    }

    #[test]
    fn status_names_only_a_master_that_answers() {
        let r = |before: (Option<&str>, Option<&str>), named: Option<&str>, up: bool| {
            reported_master(before, named, up)
        };
        let some = |s: &str| Some(s.to_owned());
        // Up: reported; a new one is a change from the last one known.
        assert_eq!(
            r((None, None), Some("g-redis-0"), true).master,
            some("g-redis-0")
        );
        assert_eq!(r((None, None), Some("g-redis-0"), true).changed, None);
        let moved = r((Some("g-redis-0"), None), Some("g-redis-1"), true);
        assert_eq!(
            moved.changed,
            Some(("g-redis-0".into(), "g-redis-1".into()))
        );
        // Flagged down: not reported, remembered as unreachable once.
        let down = r((Some("g-redis-0"), None), Some("g-redis-0"), false);
        assert_eq!(down.master, None);
        assert_eq!(down.unreachable, some("g-redis-0"));
        assert_eq!(down.went_unreachable, some("g-redis-0"));
        assert_eq!(down.changed, None);
        let still = r((None, Some("g-redis-0")), Some("g-redis-0"), false);
        assert_eq!(still.unreachable, some("g-redis-0"));
        assert_eq!(still.went_unreachable, None);
        // No sentinel names one: the last one stays unreachable.
        assert_eq!(
            r((None, Some("g-redis-0")), None, false).unreachable,
            some("g-redis-0")
        );
        // The failover: the change is from the unreachable one.
        let over = r((None, Some("g-redis-0")), Some("g-redis-2"), true);
        assert_eq!(over.master, some("g-redis-2"));
        assert_eq!(over.unreachable, None);
        assert_eq!(over.changed, Some(("g-redis-0".into(), "g-redis-2".into())));
        // The sentinels follow the promoted one before their link to it
        // is up: the change is said then, and not again once it answers.
        let promoted = r((None, Some("g-redis-0")), Some("g-redis-2"), false);
        assert_eq!(
            promoted.changed,
            Some(("g-redis-0".into(), "g-redis-2".into()))
        );
        assert_eq!(promoted.unreachable, some("g-redis-2"));
        assert_eq!(
            r((None, Some("g-redis-2")), Some("g-redis-2"), true).changed,
            None
        );
        // It came back itself (a full restart): no change.
        assert_eq!(
            r((None, Some("g-redis-0")), Some("g-redis-0"), true).changed,
            None
        );
    }
}
