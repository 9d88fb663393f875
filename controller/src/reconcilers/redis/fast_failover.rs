//! Redis fast failover: when the master's container is proven dead, one
//! sentinel is asked to fail over at once rather than after `downAfter`.
//! Whether to ask is decided here, purely, from what status remembers and
//! what the asked sentinel and the replicas say.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use haswarm_crds::redis::{FastFailover, RedisSentinelGroupStatus};
use haswarm_crds::{EventType, RedisSentinelGroup};

use super::observe::{self, SentinelView};
use super::render;
use super::sentinels::{at_sentinel, probe};
use crate::runtime::controller::event;
use crate::runtime::{Context, ReconcileError};
use crate::store::Record;
use crate::swarm::{NodeInfo, SwarmError};

/// The master to fail over fast, if any: the master the last pass knew,
/// answering (`status.master`) or not (`status.unreachable_master`, none
/// took over from it), unless fast failover is off or was asked for this
/// master already. A pass that reads the sentinels just after the kill
/// finds the master's link dropped at once, long before `downAfter`: the
/// pass the container's end triggers must still act on it. Forgets an
/// asked failover once the sentinels follow another master or twice the
/// failover timeout has passed (Sentinel would not start another one
/// sooner either). Pure.
pub(super) fn due(
    rsg: &RedisSentinelGroup,
    status: &mut RedisSentinelGroupStatus,
    now: DateTime<Utc>,
) -> Option<String> {
    let master = status
        .master
        .clone()
        .or_else(|| status.unreachable_master.clone());
    let timeout = rsg.spec.sentinels.failover_timeout.to_std() * 2;
    if let Some(asked) = &status.fast_failover {
        let moved = master.as_ref().is_some_and(|m| *m != asked.master);
        let old = (now - asked.asked).to_std().is_ok_and(|age| age > timeout);
        if moved || old {
            status.fast_failover = None;
        }
    }
    if !rsg.spec.sentinels.fast_failover {
        return None;
    }
    let master = master?;
    let asked = status
        .fast_failover
        .as_ref()
        .is_some_and(|a| a.master == master);
    (!asked).then_some(master)
}

/// The script that shows the sentinel at `host` (see
/// [`observe::OWN_SENTINEL`]) as [`observe::parse`] reads it (TILT, the
/// master and its flags, the replicas), then, under `#offsets`, each
/// replica's role and replication offset read from the replica itself, all
/// at once: `<host> <role> <offset>`. With the master dead, the offsets no
/// longer move.
pub fn probe_script(group: &str, host: &str) -> String {
    format!(
        "export REDISCLI_AUTH=\"$(cat {pw})\"; c='timeout 2 redis-cli --no-auth-warning --raw'; \
         s=$($c -h {host} -p 26379 INFO sentinel) || exit 0; echo '#sentinel'; echo \"$s\"; \
         echo '#master'; $c -h {host} -p 26379 SENTINEL master {group}; \
         r=$($c -h {host} -p 26379 SENTINEL replicas {group} | tr -d '\\r'); echo '#replicas'; echo \"$r\"; \
         echo '#offsets'; \
         for h in $(echo \"$r\" | awk 'p {{ print; p = 0 }} $0 == \"ip\" {{ p = 1 }}'); do \
           ( i=$($c -h \"$h\" -p 6379 INFO replication | tr -d '\\r'); \
             echo \"$h $(echo \"$i\" | sed -n 's/^role://p') $(echo \"$i\" | sed -n 's/^slave_repl_offset://p')\" ) & \
         done; wait",
        pw = render::PASSWORD_FILE
    )
}

/// What [`probe_script`] printed: the sentinel's view (hosts as announced)
/// and each replica's (role, offset) by announced host.
pub(super) fn parse_probe(out: &str) -> (SentinelView, BTreeMap<String, (String, u64)>) {
    let (view, offsets) = out.split_once("#offsets").unwrap_or((out, ""));
    let offsets = offsets
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (host, role, offset) = (f.next()?, f.next()?, f.next()?.parse().ok()?);
            Some((host.to_owned(), (role.to_owned(), offset)))
        })
        .collect();
    (observe::parse(view), offsets)
}

/// Whether the sentinel seen in `view` flags the master down or fails it
/// over: the sentinels act on their own, and no other is asked. Pure.
pub(super) fn acting(view: &SentinelView) -> bool {
    ["down", "failover"]
        .iter()
        .any(|f| view.master_flags.contains(f))
}

/// Whether the sentinel seen in `view` may be asked to fail `master` (a
/// service name) over now, given each replica's (role, offset) read from
/// the replica: it is not in TILT (it would act only after), follows
/// `master`, and neither it nor another flags the master down yet (their
/// own failover is not raced); and every replica it could promote (not
/// down, priority not 0) holds every write any replica it knows received.
/// Sentinel picks among those by the offsets it last read, up to 10 s old;
/// each of them being complete, its pick loses nothing a replica had
/// acknowledged. A replica that did not answer may hold more: then
/// nothing is asked. Pure.
pub(super) fn verdict(
    view: &SentinelView,
    offsets: &BTreeMap<String, (String, u64)>,
    master: &str,
) -> Result<(), String> {
    if view.tilt {
        return Err("it is in TILT mode".into());
    }
    let follows = view
        .master
        .as_deref()
        .map(|h| render::member_of_announced(h).0);
    if follows != Some(master) {
        return Err(format!(
            "it follows {}",
            view.master.as_deref().unwrap_or("no master")
        ));
    }
    if acting(view) {
        return Err(format!("the sentinels act already ({})", view.master_flags));
    }
    let mut max = 0;
    for r in &view.replicas {
        match offsets.get(&r.host) {
            Some((role, offset)) if role == "slave" => max = max.max(*offset),
            Some((role, _)) => return Err(format!("replica {} is {role}", r.host)),
            None => return Err(format!("replica {} did not answer", r.host)),
        }
    }
    let candidates: Vec<_> = view
        .replicas
        .iter()
        .filter(|r| !r.flags.contains("down") && !r.flags.contains("disconnected"))
        .filter(|r| r.priority != Some(0))
        .collect();
    if candidates.is_empty() {
        return Err("it knows no replica it could promote".into());
    }
    for r in candidates {
        let offset = offsets.get(&r.host).map_or(0, |(_, o)| *o);
        if offset < max {
            return Err(format!(
                "replica {} is {} bytes behind another",
                r.host,
                max - offset
            ));
        }
    }
    Ok(())
}

/// Asks one sentinel to fail the master over when it is proven dead and
/// [`due`] and [`verdict`] allow, records it in status and says so in an
/// event. Returns whether one was asked.
pub(super) async fn fast_failover(
    ctx: &Context,
    (rsg, obj): (&RedisSentinelGroup, &Record),
    nodes: &[NodeInfo],
    status: &mut RedisSentinelGroupStatus,
) -> Result<bool, ReconcileError> {
    let Some(master) = due(rsg, status, Utc::now()) else {
        return Ok(false);
    };
    if !ctx.swarm.proven_dead(&master, nodes).await? {
        return Ok(false);
    }
    let name = rsg.metadata.name.as_str();
    let group = rsg.spec.master_group(&rsg.metadata);
    // The highest-numbered sentinel is asked first. Clients are given the
    // sentinels in index order (`get -o env`) and ask the first that
    // answers. The sentinel that carries a failover out names the old
    // master, not down yet, until the failover ends (about a second after
    // the promotion: it must see the other replicas follow), while the
    // others follow the promoted replica as soon as its hello reaches them.
    // Asking sentinel 0 made clients wait for that second (bench: about 1 s
    // of failed writes after the first `+switch-master`).
    let sentinels: Vec<String> = (0..usize::from(rsg.spec.sentinels.count))
        .rev()
        .map(|j| render::sentinel_name(name, j))
        .collect();
    // The sentinels on this node first, reached in their own containers;
    // only when none runs here, the others through a container of the group.
    let mut through: Option<String> = None;
    for second_round in [false, true] {
        if second_round {
            through = probe(ctx, rsg).await?;
            if through.is_none() {
                break;
            }
        }
        let mut answered = false;
        for sentinel in &sentinels {
            let script = |host: &str| probe_script(&group, host);
            let out = match at_sentinel(ctx, sentinel, through.as_deref(), script).await {
                Ok(Some(out)) => out,
                Ok(None) => continue,
                Err(SwarmError::TimedOut(why)) => {
                    tracing::warn!(sentinel, why, "a sentinel did not answer");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            answered = true;
            let (view, offsets) = parse_probe(&out);
            if acting(&view) {
                tracing::info!(
                    sentinel,
                    flags = view.master_flags,
                    "the sentinels fail over already"
                );
                return Ok(false);
            }
            if let Err(why) = verdict(&view, &offsets, &master) {
                tracing::info!(
                    sentinel,
                    master,
                    why,
                    "no fast failover through this sentinel"
                );
                continue;
            }
            ask(
                ctx,
                (rsg, obj),
                (&master, sentinel, through.as_deref()),
                status,
            )
            .await?;
            return Ok(true);
        }
        if answered {
            break;
        }
    }
    Ok(false)
}

/// Sends `SENTINEL FAILOVER` to `sentinel` (through the container
/// `through`, see [`at_sentinel`]) and records it in status and an event.
/// A request that timed out is recorded as asked too: the sentinel may have
/// started, and no other may be asked beside it.
async fn ask(
    ctx: &Context,
    (rsg, obj): (&RedisSentinelGroup, &Record),
    (master, sentinel, through): (&str, &str, Option<&str>),
    status: &mut RedisSentinelGroupStatus,
) -> Result<(), ReconcileError> {
    let group = rsg.spec.master_group(&rsg.metadata);
    let command =
        |host: &str| observe::sentinel_command(host, &format!("SENTINEL FAILOVER {group}"));
    let (answer, timed_out) = match at_sentinel(ctx, sentinel, through, command).await {
        Ok(answer) => (answer.unwrap_or_default(), false),
        Err(SwarmError::TimedOut(why)) => (why, true),
        Err(e) => return Err(e.into()),
    };
    let answer = answer.trim();
    if answer != "OK" && !timed_out {
        tracing::info!(sentinel, answer, "fast failover not started");
        return Ok(());
    }
    status.fast_failover = Some(FastFailover {
        master: master.to_owned(),
        sentinel: sentinel.to_owned(),
        asked: Utc::now(),
    });
    // Recorded at once, not with the pass's notices: its time is when the
    // sentinel was asked (the failover bench reads it).
    event(
        ctx,
        obj,
        EventType::Warning,
        "FastFailover",
        &format!(
            "the container of master {master} ended on a node that answers: asked {sentinel} to fail over now rather than after downAfter {}s{}",
            rsg.spec.sentinels.down_after.as_millis() as f64 / 1000.0,
            if timed_out { " (it did not answer in time)" } else { "" }
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests;
