//! What the sentinels say about the group, read inside a sentinel container
//! (the password never leaves it), and parsed here. Parsing is pure.

/// The script run in a sentinel container: the master as Sentinel sees it,
/// its replicas, and the master's replication offset.
pub fn sentinel_query(group: &str) -> String {
    format!(
        "export REDISCLI_AUTH=\"$(cat {pw})\"; c='redis-cli --no-auth-warning --raw'; \
         echo '#master'; $c -p 26379 SENTINEL master {group}; \
         echo '#replicas'; $c -p 26379 SENTINEL replicas {group}; \
         m=$($c -p 26379 SENTINEL get-master-addr-by-name {group} | head -n 1); \
         echo '#info'; [ -n \"$m\" ] && timeout 2 $c -h \"$m\" -p 6379 INFO replication",
        pw = super::render::PASSWORD_FILE
    )
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
    /// Replicas.
    pub replicas: Vec<ReplicaView>,
    /// The master's replication offset.
    pub master_offset: Option<u64>,
}

impl SentinelView {
    /// Whether the master is reachable and not flagged down.
    pub fn master_up(&self) -> bool {
        self.master.is_some()
            && !self.master_flags.contains("down")
            && !self.master_flags.contains("disconnected")
    }
}

fn pairs(lines: &[&str]) -> Vec<(String, String)> {
    lines
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].trim().to_owned(), c[1].trim().to_owned()))
        .collect()
}

/// Parses the output of [`sentinel_query`].
pub fn parse(output: &str) -> SentinelView {
    let mut section = "";
    let (mut master, mut replicas, mut info) = (Vec::new(), Vec::new(), Vec::new());
    for line in output.lines() {
        match line.trim() {
            "#master" => section = "master",
            "#replicas" => section = "replicas",
            "#info" => section = "info",
            l => match section {
                "master" => master.push(l),
                "replicas" => replicas.push(l),
                "info" => info.push(l),
                _ => {}
            },
        }
    }
    let mut view = SentinelView::default();
    for (k, v) in pairs(&master) {
        match k.as_str() {
            "ip" => view.master = Some(v),
            "flags" => view.master_flags = v,
            "num-other-sentinels" => view.other_sentinels = v.parse().unwrap_or(0),
            "quorum" => view.quorum = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    let mut current: Option<ReplicaView> = None;
    for (k, v) in pairs(&replicas) {
        if k == "name" {
            if let Some(r) = current.take() {
                view.replicas.push(r);
            }
            current = Some(ReplicaView::default());
        }
        if let Some(r) = current.as_mut() {
            match k.as_str() {
                "ip" => r.host = v,
                "flags" => r.flags = v,
                "master-link-status" => r.link_up = v == "ok",
                "slave-repl-offset" => r.offset = v.parse().ok(),
                _ => {}
            }
        }
    }
    if let Some(r) = current {
        view.replicas.push(r);
    }
    view.master_offset = info
        .iter()
        .find_map(|l| l.trim().strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse().ok());
    view
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "#master\nname\ncache\nip\ncache-redis-1\nport\n6379\nflags\nmaster\nnum-slaves\n2\nnum-other-sentinels\n2\nquorum\n2\n#replicas\nname\ncache-redis-0:6379\nip\ncache-redis-0\nport\n6379\nflags\nslave\nmaster-link-status\nok\nslave-repl-offset\n1200\nname\ncache-redis-2:6379\nip\ncache-redis-2\nport\n6379\nflags\nslave,s_down\nmaster-link-status\nerr\nslave-repl-offset\n900\n#info\n# Replication\r\nrole:master\r\nconnected_slaves:1\r\nmaster_repl_offset:1250\r\n";

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
                flags: "slave".into()
            }
        );
        assert!(!v.replicas[1].link_up);
    }

    #[test]
    fn a_down_master_or_empty_answer_is_not_up() {
        assert!(
            !parse(&SAMPLE.replace("flags\nmaster\n", "flags\nmaster,s_down,o_down\n")).master_up()
        );
        assert_eq!(parse(""), SentinelView::default());
    }

    #[test]
    fn the_query_reads_the_password_from_the_file() {
        let q = sentinel_query("dify-master-group");
        assert!(q.contains("cat /run/secrets/redis-password"));
        assert!(q.contains("SENTINEL master dify-master-group"));
    }
}
