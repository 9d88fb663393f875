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

umask 077
pw=$(cat /run/secrets/redis-password)
conf=/data/sentinel.conf
g=$HASWARM_GROUP

if [ ! -s "$conf" ]; then
  {
    cat /etc/haswarm/sentinel.conf
    echo "sentinel monitor $g $HASWARM_PREFIX-redis-0 6379 $HASWARM_QUORUM"
  } >"$conf"
fi

tmp="$conf.haswarm"
grep -v \
  -e '^requirepass ' \
  -e '^sentinel announce-ip ' \
  -e '^sentinel sentinel-pass ' \
  -e "^sentinel auth-pass $g " \
  -e "^sentinel down-after-milliseconds $g " \
  -e "^sentinel failover-timeout $g " \
  -e "^sentinel parallel-syncs $g " \
  "$conf" |
  sed "s/^\(sentinel monitor $g [^ ]* [0-9]*\) [0-9]*\$/\1 $HASWARM_QUORUM/" >"$tmp" || true
{
  echo "sentinel announce-ip $HASWARM_SELF"
  echo "requirepass $pw"
  echo "sentinel sentinel-pass $pw"
  echo "sentinel auth-pass $g $pw"
  echo "sentinel down-after-milliseconds $g $HASWARM_DOWN_AFTER_MS"
  echo "sentinel failover-timeout $g $HASWARM_FAILOVER_TIMEOUT_MS"
  echo "sentinel parallel-syncs $g $HASWARM_PARALLEL_SYNCS"
} >>"$tmp"
mv "$tmp" "$conf"
echo "haswarm: starting sentinel $HASWARM_SELF for $g"
exec redis-sentinel "$conf"
