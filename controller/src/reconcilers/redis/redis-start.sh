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
#   1. a sentinel that knows the group names the master: replicate it (or be
#      it, when it names this instance); while the sentinels see the master
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
set -eu
: "${HASWARM_SELF:?}" "${HASWARM_PREFIX:?}" "${HASWARM_GROUP:?}" "${HASWARM_INDEX:?}"
: "${HASWARM_DOWN_WAIT_S:=30}"

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

# The master a sentinel names; while that sentinel sees the master down or
# is failing over, "wait" instead (then "down:MASTER" once the wait is over):
# a restarted master must not take its role back while the sentinels are
# replacing it.
sentinel_master() {
  for j in 0 1 2 3 4 5 6 7 8; do
    s="$HASWARM_PREFIX-sentinel-$j"
    m=$(ask "$s" 26379 SENTINEL get-master-addr-by-name "$HASWARM_GROUP")
    if [ -n "$m" ]; then
      flags=$(REDISCLI_AUTH="$pw" timeout 2 redis-cli --no-auth-warning --raw -h "$s" -p 26379 \
        SENTINEL master "$HASWARM_GROUP" 2>/dev/null | awk 'p { print; exit } $0 == "flags" { p = 1 }' || true)
      case "$flags" in
        *down* | *failover* | *promoted*) echo "down:$m" ;;
        *) echo "$m" ;;
      esac
      return
    fi
  done
}

peer_master() {
  for i in 0 1 2 3 4 5 6 7 8; do
    peer="$HASWARM_PREFIX-redis-$i"
    [ "$peer" = "$HASWARM_SELF" ] && continue
    if [ "$(ask "$peer" 6379 ROLE)" = master ]; then
      echo "$peer"
      return
    fi
  done
}

master=""
waited=0
down_waited=0
while :; do
  master=$(sentinel_master)
  case "$master" in
    down:*)
      if [ "$down_waited" -lt "$HASWARM_DOWN_WAIT_S" ]; then
        [ "$down_waited" = 0 ] && echo "haswarm: the sentinels see ${master#down:} down or are failing over; waiting for their verdict"
        sleep 1
        down_waited=$((down_waited + 1))
        continue
      fi
      master=${master#down:}
      echo "haswarm: no failover after ${HASWARM_DOWN_WAIT_S}s: following the sentinels' master $master"
      ;;
  esac
  [ -n "$master" ] && break
  master=$(peer_master)
  [ -n "$master" ] && break
  if [ "$HASWARM_INDEX" = 0 ] && [ ! -e "$marker" ]; then
    master=$HASWARM_SELF
    echo "haswarm: new group: starting as its first master"
    break
  fi
  if [ "$waited" -ge 60 ]; then
    master="$HASWARM_PREFIX-redis-0"
    echo "haswarm: no sentinel or master answers; starting as a replica of $master"
    break
  fi
  sleep 2
  waited=$((waited + 2))
done

{
  cat /etc/haswarm/redis.conf
  echo "replica-announce-ip $HASWARM_SELF"
  echo "user default on $accept ~* &* +@all"
  echo "masterauth $pw"
  if [ "$master" != "$HASWARM_SELF" ]; then
    echo "replicaof $master 6379"
  fi
} >"$conf"
: >"$marker"
if [ "$master" = "$HASWARM_SELF" ]; then
  echo "haswarm: starting $HASWARM_SELF as master of $HASWARM_GROUP"
else
  echo "haswarm: starting $HASWARM_SELF as a replica of $master"
fi
exec redis-server "$conf"
