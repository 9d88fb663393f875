#!/bin/sh
# Runs a data member (the command given) behind a fence: a member frozen
# with its node never serves as primary after the thaw, not for a moment.
#
# The fence is a lease the kernel keeps, in the task's own network
# namespace: TCP traffic to the member's ports (HASWARM_FENCE_PORTS), new
# or established, from other hosts or over loopback (a health check, a
# client exec'd into the container), passes only while the lease holds.
# This loop renews it five times a second by sending itself a UDP
# datagram, which a rule turns into a set element with a timeout of
# HASWARM_FENCE_S seconds. A
# frozen node freezes this loop too, while the kernel's clock goes on, so
# when the node thaws the lease has run out and the ports are closed before
# any process here runs again. The loop is the first to see it: it woke
# more than HASWARM_FENCE_S seconds late. If the member is then primary
# (HASWARM_FENCE_KIND: postgres, redis), another member may have taken
# over meanwhile (the limit is shorter than Patroni's leader key or the
# sentinels' down-after), so every process here is killed at once and
# Swarm decides what runs next: a replaced task stays down, a task still
# wanted restarts and asks the cluster for its role as at any start.
# A replica renews and goes on.
#
# Renewing forks nothing (bash's /dev/udp, `read -t` on a FIFO for the
# sleep, $EPOCHREALTIME for the clock): a fence that cost a fork or two a
# second per member slowed loaded nodes enough to matter. It wakes often
# because a sleep interrupted by the freeze runs its full length again
# after the thaw: the member's unix socket, which no lease covers, is open
# that long (seen: a thawed Redis master answered an exec'd client once
# with a one-second sleep). Without bash,
# nft or the NET_ADMIN capability the member runs unfenced, and says so.
if [ -z "${BASH_VERSION:-}" ]; then
  if command -v bash >/dev/null 2>&1; then exec bash "$0" "$@"; fi
  echo "haswarm: fence: no bash in the image; running unfenced"
  exec "$@"
fi
set -u
limit=${HASWARM_FENCE_S:?}
ports=${HASWARM_FENCE_PORTS:?}
kind=${HASWARM_FENCE_KIND:?}

# primary: whether the member here serves as the primary now.
primary() {
  case $kind in
    postgres)
      # Running, and not as a standby (Patroni writes standby.signal).
      d=/var/lib/postgresql/data
      [[ -e $d/postmaster.pid && ! -e $d/standby.signal ]]
      ;;
    redis)
      # Sentinel rewrites the runtime config at every role change.
      local key _
      [[ -e /data/haswarm-redis.conf ]] || return 1
      while read -r key _; do
        [[ $key == replicaof || $key == slaveof ]] && return 1
      done </data/haswarm-redis.conf
      return 0
      ;;
    *) return 1 ;;
  esac
}

set_ports=${ports// /, }
if ! nft -f - <<EOF 2>/tmp/haswarm-fence.err; then
add table inet haswarm_fence
flush table inet haswarm_fence
table inet haswarm_fence {
  set lease { type inet_service; flags timeout; }
  chain input {
    type filter hook input priority -10; policy accept;
    iif lo udp dport { $set_ports } update @lease { udp dport timeout ${limit}s } drop
    tcp dport @lease accept
    tcp dport { $set_ports } drop
  }
}
EOF
  echo "haswarm: fence: cannot set the lease ($(head -c 300 /tmp/haswarm-fence.err)); running unfenced"
  exec "$@"
fi

renew() {
  local p
  for p in $ports; do printf x 2>/dev/null >"/dev/udp/127.0.0.1/$p"; done
}
fifo=/tmp/haswarm-fence.$$
mkfifo -m 600 "$fifo" && exec 3<>"$fifo" && rm -f "$fifo"

renew
"$@" &
member=$!
# Swarm's stop signal is for the member; this loop goes on renewing until
# the member has stopped.
trap 'kill -TERM "$member" 2>/dev/null' TERM INT
echo "haswarm: fence: lease of ${limit}s on ports $ports, renewed five times a second"
last=${EPOCHREALTIME/./}
while kill -0 "$member" 2>/dev/null; do
  read -r -t 0.2 -u 3 _
  now=${EPOCHREALTIME/./}
  if ((now - last > limit * 1000000)) && primary; then
    echo "haswarm: fence: woke $(((now - last) / 1000000))s late as the $kind primary; the lease ran out and another member may have taken over: stopping every process here"
    kill -9 -1
    exit 137
  fi
  renew
  last=$now
done
wait "$member"
