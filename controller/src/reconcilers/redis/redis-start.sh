#!/bin/sh
# Starts one data instance of a haswarm RedisSentinelGroup.
#
# The fixed settings come from /etc/haswarm/redis.conf (a Swarm config), the
# password from /run/secrets/redis-password (a Swarm secret), and during a
# rotation a second accepted one from /run/secrets/redis-password-extra. The password is
# written only into the runtime config in the data volume (mode 0600): never
# onto a command line or into the environment of the service.
#
# The role is decided here, at every start:
#   1. the sentinels name the master (the one with the highest configuration
#      epoch is believed): replicate it (or be it, when it names this
#      instance); while the sentinels see the master
#      down or fail over, wait for their verdict, for at most
#      HASWARM_DOWN_WAIT_S seconds: a master that stays down that long with
#      no failover has no replica to fail over to (every member restarted at
#      once), and the one the sentinels last followed, which has the most
#      recent data, must come back as the master;
#   2. else a peer that is master: replicate it;
#   3. else, only for instance 0 of a group that never started (no marker in
#      the volume): become the first master;
#   4. else wait for one of the above; after a minute start as a replica of
#      instance 0 and let the sentinels fix the topology. Never a master.
# So a former master that restarts after a failover comes back as a replica.
#
# The instance announces HASWARM_ANNOUNCE (its service name until its slot
# first moves, then a network alias of that incarnation alone): the master
# the sentinels name is this instance only when they name that, never when
# they name an incarnation it replaced.
set -eu
: "${HASWARM_SELF:?}" "${HASWARM_PREFIX:?}" "${HASWARM_GROUP:?}" "${HASWARM_INDEX:?}"
: "${HASWARM_DOWN_WAIT_S:=30}" "${HASWARM_ANNOUNCE:=$HASWARM_SELF}"
me=$HASWARM_ANNOUNCE
# Every index a member may have (the resource allows 9 of each).
ALL="0 1 2 3 4 5 6 7 8"

umask 077
pw=$(cat /run/secrets/redis-password)
# During a password rotation a second secret holds the other password that
# must keep working (the old one, or the new one not used yet).
accept=">$pw"
if [ -s /run/secrets/redis-password-extra ]; then
  accept="$accept >$(cat /run/secrets/redis-password-extra)"
fi
marker=/data/.haswarm-initialized
conf=/data/haswarm-redis.conf

# ask HOST PORT COMMAND...: the first line of the reply, empty on any failure.
ask() {
  h=$1 p=$2
  shift 2
  REDISCLI_AUTH="$pw" timeout 2 redis-cli --no-auth-warning --raw -h "$h" -p "$p" "$@" 2>/dev/null | head -n 1 || true
}

# What sentinel $1 says of the group, as "EPOCH TILT MASTER FLAGS" (its
# configuration epoch, 1 while it is in TILT mode or did not say, the master
# it names and that master's flags); nothing when it does not answer.
sentinel_view() {
  reply=$(REDISCLI_AUTH="$pw" timeout 2 redis-cli --no-auth-warning --raw -h "$1" -p 26379 \
    SENTINEL master "$HASWARM_GROUP" 2>/dev/null || true)
  [ -n "$reply" ] || return 0
  tilt=$(REDISCLI_AUTH="$pw" timeout 2 redis-cli --no-auth-warning --raw -h "$1" -p 26379 \
    INFO sentinel 2>/dev/null | tr -d '\r' | sed -n 's/^sentinel_tilt://p' || true)
  printf '%s\n' "$reply" | tr -d '\r' | awk -v tilt="${tilt:-1}" '
    NR % 2 == 1 { k = $0; next }
    { v[k] = $0 }
    END { if (v["ip"] != "") print (v["config-epoch"] == "" ? 0 : v["config-epoch"]), tilt, v["ip"], v["flags"] }'
}

# The master the sentinels name; while they see it down or fail over,
# "down:MASTER" instead (the caller waits for their verdict): a restarted
# master must not take its role back while the sentinels are replacing it.
# Every sentinel is asked and the one with the highest configuration epoch
# is believed: a sentinel that restarted with this instance (the same
# engine) still names the master it knew, and in TILT mode it flags
# nothing down. Never the first to answer: that once brought a replaced
# master back as a second master. Among equal epochs one not in TILT is
# believed; when only sentinels in TILT answer, their word is "down:".
sentinel_master() {
  # Every possible sentinel at once: a name no task answers to may cost a
  # DNS timeout (Swarm forwards it to the host's resolvers), and this runs
  # every second while the instance waits.
  d=$(mktemp -d)
  for j in $ALL; do
    sentinel_view "$HASWARM_PREFIX-sentinel-$j" >"$d/$j" &
  done
  wait
  best=$(cat "$d"/* | awk 'NF == 4' | sort -k1,1nr -k2,2n | head -n 1)
  rm -rf "$d"
  [ -n "$best" ] || return 0
  # shellcheck disable=SC2086 # four words: epoch, tilt, master, flags
  set -- $best
  case "$4" in
    *down* | *failover* | *promoted*) echo "down:$3" ;;
    *) if [ "$2" = 0 ]; then echo "$3"; else echo "down:$3"; fi ;;
  esac
}

# The lowest-numbered peer that says it is master, all asked at once.
peer_master() {
  d=$(mktemp -d)
  for i in $ALL; do
    peer="$HASWARM_PREFIX-redis-$i"
    [ "$peer" = "$HASWARM_SELF" ] && continue
    { [ "$(ask "$peer" 6379 ROLE)" = master ] && echo "$peer"; } >"$d/$i" &
  done
  wait
  cat "$d"/* | head -n 1
  rm -rf "$d"
}

master=""
started=$(date +%s)
down_waited=0
while :; do
  # The sentinels and the peers are asked at once: either may cost a
  # bounded wait (a name whose task is still starting answers nothing),
  # and a new group's instances wait on both.
  d=$(mktemp -d)
  sentinel_master >"$d/sentinels" &
  peer_master >"$d/peers" &
  wait
  master=$(cat "$d/sentinels")
  peer=$(cat "$d/peers")
  rm -rf "$d"
  case "$master" in
    down:*)
      # Counted in seconds, not rounds: asking sentinels that do not
      # answer takes time of its own.
      [ "$down_waited" = 0 ] && down_since=$(date +%s) &&
        echo "haswarm: the sentinels see ${master#down:} down or are failing over; waiting for their verdict"
      down_waited=$(($(date +%s) - down_since + 1))
      if [ "$down_waited" -le "$HASWARM_DOWN_WAIT_S" ]; then
        sleep 1
        continue
      fi
      master=${master#down:}
      echo "haswarm: no failover after ${HASWARM_DOWN_WAIT_S}s: following the sentinels' master $master"
      ;;
  esac
  [ -n "$master" ] && break
  master=$peer
  [ -n "$master" ] && break
  if [ "$HASWARM_INDEX" = 0 ] && [ ! -e "$marker" ]; then
    master=$me
    echo "haswarm: new group: starting as its first master"
    break
  fi
  if [ $(($(date +%s) - started)) -ge 60 ]; then
    master="$HASWARM_PREFIX-redis-0"
    echo "haswarm: no sentinel or master answers; starting as a replica of $master"
    break
  fi
  sleep 1
done

{
  cat /etc/haswarm/redis.conf
  echo "replica-announce-ip $me"
  echo "user default on $accept ~* &* +@all"
  echo "masterauth $pw"
  if [ "$master" != "$me" ]; then
    echo "replicaof $master 6379"
  fi
} >"$conf"
: >"$marker"
if [ "$master" = "$me" ]; then
  echo "haswarm: starting $me as master of $HASWARM_GROUP"
else
  echo "haswarm: starting $me as a replica of $master"
fi
exec redis-server "$conf"
