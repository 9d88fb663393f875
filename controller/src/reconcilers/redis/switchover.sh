# A switchover that loses no acknowledged write, run in a sentinel's container
# by haswarmd. Set before this text: G (the monitored group), P (how long a
# pause lasts, ms) and PW (the password file). Prints what happened, the
# sentinel's answer to SENTINEL FAILOVER (OK) on the last line.
#
# Why each step:
# - Nothing is paused unless this sentinel knows a replica it could promote:
#   a sentinel just reset knows none for up to 10 s (it reads them from the
#   master's INFO), and would answer NOGOODSLAVE.
# - The master stops taking writes (CLIENT PAUSE WRITE) and every replica the
#   sentinels could promote must be online at its offset within W, else the
#   pause ends and nothing happens: a replica behind would be promoted
#   without the last writes. W is short because a pause also holds the
#   sentinels' hello PUBLISH on their link to the master, and their PINGs
#   queue behind it: held past down-after, the master looks down to them and
#   they fail over on their own, racing this one.
# - The pause is renewed until the old master is a replica. A write the old
#   master took after a lapse, acknowledged by a replica the sentinels had not
#   moved yet, would be lost when that replica resyncs from the new master.
# - The old master follows the promoted replica as soon as one says it is
#   master: the sentinels reconfigure it only 8 s or more after the failover
#   ends, too late for a pause. A replica of the new master refuses the writes
#   it held (READONLY), and its own replicas are cut off from it.
# - Nothing is paused while this sentinel is in TILT mode (its event loop
#   stalled, as on a host name that does not resolve): it answers OK to
#   SENTINEL FAILOVER but carries it out only once TILT ends, up to 30 s
#   later, long after the pause. The old master then takes writes again, a
#   replica the failover leaves out acknowledges them, and they are lost
#   when it resyncs from the promoted one (seen in a drain: 14 writes).
# - A Redis without CLIENT PAUSE WRITE (before 6.2) fails over unpaused.
export REDISCLI_AUTH="$(cat "$PW")"
c='timeout 3 redis-cli --no-auth-warning --raw'
role() { $c -h "$1" -p 6379 INFO replication | tr -d '\r' | sed -n 's/^role://p'; }

tilt=$($c -p 26379 INFO sentinel | tr -d '\r' | sed -n 's/^sentinel_tilt://p')
[ "$tilt" = 0 ] || { echo "this sentinel is in TILT mode (sentinel_tilt:${tilt:-unknown})"; exit 0; }
m=$($c -p 26379 SENTINEL get-master-addr-by-name "$G" | head -n 1)
[ -n "$m" ] || { echo 'no master known'; exit 0; }
paused=0
replicas=""
eligible=$($c -p 26379 SENTINEL replicas "$G" |
  awk 'p { if ($0 == "slave") n++; p = 0 } $0 == "flags" { p = 1 } END { print n + 0 }')
[ "$eligible" -ge 1 ] || { echo 'this sentinel knows no replica it could promote yet'; exit 0; }
if [ "$($c -h "$m" -p 6379 CLIENT PAUSE "$P" WRITE)" = OK ]; then
  paused=1
  end=$(($(date +%s%3N) + W))
  while :; do
    info=$($c -h "$m" -p 6379 INFO replication | tr -d '\r')
    off=$(echo "$info" | sed -n 's/^master_repl_offset://p')
    caught=$(echo "$info" | grep -c "^slave[0-9]*:.*state=online,offset=$off,")
    [ -n "$off" ] && [ "$caught" -ge "$eligible" ] && break
    if [ "$(date +%s%3N)" -ge "$end" ]; then
      $c -h "$m" -p 6379 CLIENT UNPAUSE >/dev/null
      echo 'replicas did not catch up'
      exit 0
    fi
    sleep 0.05
  done
  replicas=$(echo "$info" | sed -n 's/^slave[0-9]*:ip=\([^,]*\),.*/\1/p')
  # A fresh pause from here: catching up may have used most of the first.
  $c -h "$m" -p 6379 CLIENT PAUSE "$P" WRITE >/dev/null
  echo "paused $m at offset $off"
else
  replicas=$($c -h "$m" -p 6379 INFO replication | tr -d '\r' |
    sed -n 's/^slave[0-9]*:ip=\([^,]*\),.*/\1/p')
  echo 'no CLIENT PAUSE WRITE: failing over unpaused'
fi

a=$($c -p 26379 SENTINEL FAILOVER "$G")
if [ "$a" = OK ]; then
  deadline=$(($(date +%s) + 8))
  while [ "$(date +%s)" -le "$deadline" ]; do
    [ "$(role "$m")" = slave ] && { echo "$m is a replica now"; break; }
    [ $paused = 1 ] && $c -h "$m" -p 6379 CLIENT PAUSE "$P" WRITE >/dev/null
    for h in $replicas; do
      if [ "$(role "$h")" = master ]; then
        $c -h "$m" -p 6379 REPLICAOF "$h" 6379 >/dev/null && echo "$m follows $h, promoted"
        break
      fi
    done
    sleep 0.1
  done
fi
[ $paused = 1 ] && $c -h "$m" -p 6379 CLIENT UNPAUSE >/dev/null
echo "$a"
