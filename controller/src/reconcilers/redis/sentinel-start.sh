#!/bin/sh
# Starts one sentinel of a haswarm RedisSentinelGroup.
#
# Sentinel rewrites its own config with what it learns (the current master,
# epochs, known replicas and sentinels), so the config lives in the data
# volume. The first start writes it from /etc/haswarm/sentinel.conf; every
# start then replaces the credentials and timing (they may have changed) and
# keeps what Sentinel learned. The password comes from
# /run/secrets/redis-password and goes only into that file (mode 0600).
set -eu
: "${HASWARM_SELF:?}" "${HASWARM_PREFIX:?}" "${HASWARM_GROUP:?}" "${HASWARM_QUORUM:?}"
: "${HASWARM_DOWN_AFTER_MS:?}" "${HASWARM_FAILOVER_TIMEOUT_MS:?}" "${HASWARM_PARALLEL_SYNCS:?}"
# What it announces: its service name until its slot first moves, then a
# network alias of that incarnation alone.
: "${HASWARM_ANNOUNCE:=$HASWARM_SELF}"

umask 077
pw=$(cat /run/secrets/redis-password)
accept=">$pw"
if [ -s /run/secrets/redis-password-extra ]; then
  accept="$accept >$(cat /run/secrets/redis-password-extra)"
fi
conf=/data/sentinel.conf
g=$HASWARM_GROUP

# ask HOST PORT COMMAND...: the first line of the reply, empty on any failure.
ask() {
  h=$1 p=$2
  shift 2
  REDISCLI_AUTH="$pw" timeout 2 redis-cli --no-auth-warning --raw -h "$h" -p "$p" "$@" 2>/dev/null | head -n 1 || true
}

# A new sentinel (first start, or moved to another node with an empty
# volume) monitors the master the other sentinels follow, else a peer that
# says it is master, else instance 0 (a new group): never blindly instance 0,
# which may be a replica by now.
# Every possible peer is asked at once: a name no task answers to may cost
# a DNS timeout. A wrong pick among the sentinels' answers heals itself: the
# others' hello messages carry a newer configuration epoch.
first_master() {
  d=$(mktemp -d)
  for j in 0 1 2 3 4 5 6 7 8; do
    s="$HASWARM_PREFIX-sentinel-$j"
    [ "$s" = "$HASWARM_SELF" ] || ask "$s" 26379 SENTINEL get-master-addr-by-name "$g" >"$d/s$j" &
    peer="$HASWARM_PREFIX-redis-$j"
    { [ "$(ask "$peer" 6379 ROLE)" = master ] && echo "$peer"; } >"$d/r$j" &
  done
  wait
  m=$(cat "$d"/s* | awk 'NF { print; exit }')
  [ -n "$m" ] || m=$(cat "$d"/r* | awk 'NF { print; exit }')
  rm -rf "$d"
  echo "${m:-$HASWARM_PREFIX-redis-0}"
}

if [ ! -s "$conf" ]; then
  m=$(first_master)
  {
    cat /etc/haswarm/sentinel.conf
    echo "sentinel monitor $g $m 6379 $HASWARM_QUORUM"
  } >"$conf"
fi

# Sentinel's own CONFIG REWRITE can list the monitored master as its own
# replica, once or several times: it writes the master's address in place
# of every replica whose address equals it, and replica names that did not
# resolve (a group restarted all at once, dnsrr names without tasks) all
# do. Twice, Redis refuses the file it wrote ("Duplicate hostname and port
# for replica") and the sentinel crash-loops; once, the sentinel sees that
# "replica" report role master and tells the master to replicate from
# itself, which leaves the group without one. Those lines are dropped here
# (duplicates too); the replicas are rediscovered from the master's INFO.
mon=$(sed -n "s/^sentinel monitor $g \([^ ]*\) \([0-9]*\) .*/\1 \2/p" "$conf" | head -n 1)
tmp="$conf.haswarm"
grep -v \
  -e '^requirepass ' \
  -e '^user default ' \
  -e '^sentinel announce-ip ' \
  -e '^sentinel sentinel-pass ' \
  -e "^sentinel auth-pass $g " \
  -e "^sentinel down-after-milliseconds $g " \
  -e "^sentinel failover-timeout $g " \
  -e "^sentinel parallel-syncs $g " \
  "$conf" |
  sed "s/^\(sentinel monitor $g [^ ]* [0-9]*\) [0-9]*\$/\1 $HASWARM_QUORUM/" |
  awk -v mon="$mon" '/^sentinel known-replica / { dup = seen[$0]++ || $4 " " $5 == mon }
       /^sentinel known-sentinel / { dup = runid[$3 " " $6]++ }
       dup { print "haswarm: dropped a line Sentinel wrote: " $0 > "/dev/stderr"; dup = 0; next }
       { print }' >"$tmp" || true
{
  echo "sentinel announce-ip $HASWARM_ANNOUNCE"
  echo "user default on $accept ~* &* +@all"
  echo "sentinel sentinel-pass $pw"
  echo "sentinel auth-pass $g $pw"
  echo "sentinel down-after-milliseconds $g $HASWARM_DOWN_AFTER_MS"
  echo "sentinel failover-timeout $g $HASWARM_FAILOVER_TIMEOUT_MS"
  echo "sentinel parallel-syncs $g $HASWARM_PARALLEL_SYNCS"
} >>"$tmp"
mv "$tmp" "$conf"
echo "haswarm: starting sentinel $HASWARM_ANNOUNCE for $g"
exec redis-sentinel "$conf"
