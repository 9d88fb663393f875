#!/usr/bin/env bash
# A multi-node Docker Swarm on one machine, as Docker-in-Docker nodes built
# from Debian's packages (recipe: ../shared/DESIGN.md, "Test bed").
#
#   dind.sh image                 build haswarm/dind-node:bookworm if missing (debootstrap + docker import)
#   dind.sh up BED N [SHARED]     start N nodes on network BED-net; node 1 inits the swarm, the others join
#                                 (nodes 2..HASWARM_DIND_MANAGERS as managers, the rest as workers);
#                                 SHARED (a host folder) is bind-mounted at /srv/shared on every node (the
#                                 "pre-mounted network path" pattern) and at /srv/partial on nodes 1..N-1 only,
#                                 so the last node lacks that one (for mount-failure tests); images are loaded
#                                 (the probe, Redis, and those HASWARM_DIND_IMAGES names)
#   dind.sh addr BED I            print node I's address on the test network
#   dind.sh restart BED I         restart node I's container (its engine restarts; state is kept)
#   dind.sh stop BED I            stop node I's container (the node is lost until `down`)
#   dind.sh lose BED I            node loss: freeze node I's workloads and engine. The containers running on
#                                 node I now are frozen through their own cgroups (cgroup v1 freezer, or v2
#                                 cgroup.freeze), as they sit beside the node's cgroup, not under it; then the
#                                 node container is paused (its engine and Swarm agent). Containers started on
#                                 the node later (none can start while it is paused) are not covered
#   dind.sh restore BED I         undo `lose`: thaw those containers first, then unpause the node (its workloads
#                                 run a moment before their engine and agent react, as on a node coming back);
#                                 a node that is not lost is left alone
#   dind.sh partition BED I       engine-only partition: pause node I's container (its engine and Swarm agent)
#                                 and leave its containers running and serving
#   dind.sh heal BED I            undo `partition`
#   dind.sh down BED              thaw what `lose` froze, remove BED's nodes, their volumes and the network
#
# Everything created carries the label io.haswarm.testbed=BED, and `down`
# removes exactly that; `lose` records what it froze in /tmp/hsw-lost-BED-I,
# `partition` the containers it left running in /tmp/hsw-cut-BED-I.
set -euo pipefail

IMAGE=haswarm/dind-node:bookworm
LOAD_IMAGES=(haswarm/probe:latest haswarm/redis:bookworm)

mirror() {
  grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1 \
    || true
}

build_image() {
  if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "testbed: $IMAGE present"
    return
  fi
  if ! command -v debootstrap >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null 2>&1 || {
      apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
    }
  fi
  local root m
  root=$(mktemp -d /tmp/hsw-rootfs.XXXXXX)
  trap 'rm -rf "${root:-}"; trap - RETURN' RETURN
  m=$(mirror)
  if [ -z "$m" ]; then
    m=$(grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -1)
  fi
  echo "testbed: debootstrap of $IMAGE (about a minute)"
  debootstrap --variant=minbase --include=docker.io,iptables,iproute2,procps,ca-certificates bookworm "$root" "$m" >/dev/null
  tar -C "$root" -c . | docker import - "$IMAGE" >/dev/null
  echo "testbed: built $IMAGE"
}

node() { echo "$1-node$2"; }

addr() {
  docker inspect -f "{{(index .NetworkSettings.Networks \"$1-net\").IPAddress}}" "$(node "$1" "$2")"
}

wait_engine() {
  local n=$1
  for _ in $(seq 1 120); do
    if docker exec "$n" docker info >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "testbed: the engine in $n did not start" >&2
  docker logs "$n" 2>&1 | tail -20 >&2
  return 1
}

up() {
  local bed=$1 count=$2 shared=${3:-}
  build_image
  docker network create --label io.haswarm.testbed="$bed" "$bed-net" >/dev/null
  # The nested engines get this machine's own resolvers. A node's
  # resolv.conf names only Docker's loopback resolver, which a nested engine
  # ignores and replaces with public resolvers unreachable from here; the
  # embedded DNS of Docker 20.10 then never answers a name no container has
  # (a stopped task's), and every such lookup blocks until the client gives
  # up: seconds in which single-threaded redis-sentinel goes into TILT and
  # fails nothing over. A Swarm whose resolvers answer behaves like this.
  local dns=() ns
  for ns in $(awk '$1 == "nameserver" { print $2 }' /etc/resolv.conf 2>/dev/null); do
    case "$ns" in 127.* | ::1) ;; *) dns+=(--dns "$ns") ;; esac
  done
  if [ "${#dns[@]}" = 0 ]; then
    echo "testbed: warning: /etc/resolv.conf names no resolver reachable from the nodes; lookups of stopped tasks' names will be slow" >&2
  fi
  for i in $(seq 1 "$count"); do
    local n mounts=()
    n=$(node "$bed" "$i")
    if [ -n "$shared" ]; then
      mounts=(-v "$shared:/srv/shared")
      if [ "$i" -lt "$count" ]; then mounts+=(-v "$shared:/srv/partial"); fi
    fi
    docker run -d --name "$n" --hostname "$n" --label io.haswarm.testbed="$bed" \
      --cap-add ALL --cap-drop SYS_RESOURCE \
      --security-opt seccomp=unconfined --security-opt apparmor=unconfined --security-opt systempaths=unconfined \
      --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
      --mount "type=volume,source=$n-data,target=/var/lib/docker,volume-label=io.haswarm.testbed=$bed" \
      --tmpfs /run "${mounts[@]}" --network "$bed-net" \
      "$IMAGE" dockerd --host unix:///var/run/docker.sock --host tcp://0.0.0.0:2375 "${dns[@]}" >/dev/null
  done
  for i in $(seq 1 "$count"); do wait_engine "$(node "$bed" "$i")"; done
  local lead token
  lead=$(node "$bed" 1)
  docker exec "$lead" docker swarm init --advertise-addr "$(addr "$bed" 1)" >/dev/null
  local managers=${HASWARM_DIND_MANAGERS:-1} worker_token manager_token
  worker_token=$(docker exec "$lead" docker swarm join-token -q worker)
  manager_token=$(docker exec "$lead" docker swarm join-token -q manager)
  for i in $(seq 2 "$count"); do
    token=$worker_token
    if [ "$i" -le "$managers" ]; then token=$manager_token; fi
    docker exec "$(node "$bed" "$i")" docker swarm join --token "$token" "$(addr "$bed" 1):2377" >/dev/null
  done
  # Images go to every node (no registry to pull from): saved once, loaded
  # into the nodes side by side. HASWARM_DIND_IMAGES names extra images a
  # test needs (the Postgres image is large; only its tests load it).
  local tar pids=()
  tar=$(mktemp /tmp/hsw-images.XXXXXX)
  # shellcheck disable=SC2206
  local images=("${LOAD_IMAGES[@]}" ${HASWARM_DIND_IMAGES:-})
  docker save "${images[@]}" -o "$tar"
  for i in $(seq 1 "$count"); do
    docker exec -i "$(node "$bed" "$i")" docker load <"$tar" >/dev/null &
    pids+=($!)
  done
  local failed=0
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
  rm -f "$tar"
  if [ "$failed" != 0 ]; then echo "testbed: loading ${images[*]} into $bed failed" >&2; return 1; fi
  echo "testbed: $bed up with $count nodes; manager at tcp://$(addr "$bed" 1):2375"
}

# Node loss. With `--cgroupns host` and the host's cgroup tree mounted, a
# node's engine puts its containers' cgroups beside the node's own (cgroupfs
# driver: /sys/fs/cgroup/freezer/docker/ID on cgroup v1), so `docker pause`
# of the node freezes its engine only. Each container is frozen on its own.

lost_file() { echo "/tmp/hsw-lost-$1-$2"; }

# The freezer control file of the cgroup of the container with full id $1:
# freezer.state (cgroup v1) or cgroup.freeze (v2).
freezer_of() {
  local id=$1 dir found=()
  if [ -d /sys/fs/cgroup/freezer ]; then
    for dir in $(find /sys/fs/cgroup/freezer -maxdepth 4 -type d \( -name "$id" -o -name "docker-$id.scope" \) 2>/dev/null || true); do
      if [ -f "$dir/freezer.state" ]; then found+=("$dir/freezer.state"); fi
    done
  fi
  if [ "${#found[@]}" = 0 ]; then
    for dir in $(find /sys/fs/cgroup -maxdepth 4 -type d \( -name "$id" -o -name "docker-$id.scope" \) 2>/dev/null || true); do
      if [ -f "$dir/cgroup.freeze" ]; then found+=("$dir/cgroup.freeze"); fi
    done
  fi
  [ "${#found[@]}" != 0 ] || return 1
  printf '%s\n' "${found[@]}"
}

# Sets the freezer control file $1 to frozen ($2 = 1) or thawed ($2 = 0)
# and waits until the kernel says so.
set_frozen() {
  local file=$1 on=$2 want value
  case "$file" in
    */freezer.state)
      if [ "$on" = 1 ]; then value=FROZEN; want=FROZEN; else value=THAWED; want=THAWED; fi
      ;;
    */cgroup.freeze) value=$on want="frozen $on" ;;
    *) echo "testbed: not a freezer file: $file" >&2; return 1 ;;
  esac
  for _ in $(seq 1 100); do
    [ -e "$file" ] || return 0 # the container is gone: nothing left to freeze or thaw
    echo "$value" >"$file" 2>/dev/null || true
    case "$file" in
      */freezer.state) [ "$(cat "$file" 2>/dev/null)" = "$want" ] && return 0 ;;
      *) grep -qx "$want" "${file%/cgroup.freeze}/cgroup.events" 2>/dev/null && return 0 ;;
    esac
    sleep 0.1
  done
  [ -e "$file" ] || return 0
  echo "testbed: $file did not become $want" >&2
  return 1
}

# Pauses node container $1. runc's freeze gives up ("unable to freeze") when
# a process of the node is caught mid-fork or in an uninterruptible wait
# (stop 26's CI met it once); it leaves the node thawed, so asking again
# is safe, and a node that a later try froze is simply paused.
pause_node() {
  local n=$1 try err
  for try in 1 2 3 4 5; do
    if err=$(docker pause "$n" 2>&1 >/dev/null); then return 0; fi
    [ "$(docker inspect -f '{{.State.Paused}}' "$n" 2>/dev/null)" = true ] && return 0
    echo "testbed: pausing $n (try $try): $err" >&2
    sleep 0.5
  done
  echo "testbed: $n could not be paused: $err" >&2
  return 1
}

lose() {
  local bed=$1 i=$2 n record ids id files f
  n=$(node "$bed" "$i")
  record=$(lost_file "$bed" "$i")
  if [ -e "$record" ]; then
    echo "testbed: $n is lost already (restore it first)" >&2
    return 1
  fi
  # The containers are listed before anything is frozen (a paused node's
  # engine does not answer), and their cgroups found before one is frozen.
  ids=$(docker exec "$n" docker ps -q --no-trunc)
  : >"$record"
  for id in $ids; do
    if ! files=$(freezer_of "$id"); then
      echo "testbed: no cgroup v1 freezer.state or v2 cgroup.freeze found for container $id of $n under /sys/fs/cgroup" >&2
      rm -f "$record"
      return 1
    fi
    echo "$files" >>"$record"
  done
  # Recorded before frozen: a failure part way leaves `restore` and `down`
  # what to thaw.
  while read -r f; do
    [ -n "$f" ] || continue
    set_frozen "$f" 1
  done <"$record"
  pause_node "$n"
}

# Thaws what `lose` froze on node $2 of bed $1 (the record stays).
thaw() {
  local record f
  record=$(lost_file "$1" "$2")
  [ -e "$record" ] || return 0
  while read -r f; do
    [ -n "$f" ] || continue
    set_frozen "$f" 0
  done <"$record"
}

restore() {
  local bed=$1 i=$2 n record
  n=$(node "$bed" "$i")
  record=$(lost_file "$bed" "$i")
  [ -e "$record" ] || return 0
  thaw "$bed" "$i"
  if [ "$(docker inspect -f '{{.State.Paused}}' "$n" 2>/dev/null)" = true ]; then
    docker unpause "$n" >/dev/null
  fi
  rm -f "$record"
}

# An engine-only partition: node $2's engine and Swarm agent are paused,
# its containers keep running and serving (with `--cgroupns host` they sit
# beside the node's cgroup, so `docker pause` of the node leaves them be).
# Their ids are recorded for `down`, which cannot ask a paused engine.
cut_file() { echo "/tmp/hsw-cut-$1-$2"; }
partition() {
  local bed=$1 i=$2 n
  n=$(node "$bed" "$i")
  docker exec "$n" docker ps -q --no-trunc >"$(cut_file "$bed" "$i")"
  pause_node "$n"
}
heal() {
  local bed=$1 i=$2 n
  n=$(node "$bed" "$i")
  if [ "$(docker inspect -f '{{.State.Paused}}' "$n" 2>/dev/null)" = true ]; then
    docker unpause "$n" >/dev/null
  fi
  rm -f "$(cut_file "$bed" "$i")"
}

down() {
  local bed=$1
  # A node whose containers are frozen cannot be removed: its init is
  # killed but stays a zombie until every process of its PID namespace has
  # died, and a frozen one cannot (`docker rm -f` gives up after 10 s). So
  # thaw them first; `docker rm -f` handles the node's own pause.
  # The nodes' containers die with their nodes, unknown to their engines,
  # whose cgroups (beside the nodes') are then left behind, empty: their ids
  # are gathered first (from running nodes' engines and from the records of
  # lost nodes), and the cgroups removed after the nodes.
  local record i f dir nested=()
  for record in /tmp/hsw-lost-"$bed"-*; do
    [ -e "$record" ] || continue
    i=${record#/tmp/hsw-lost-"$bed"-}
    case "$i" in
      '' | *[!0-9]*) continue ;; # another bed's, whose name starts with "$bed-"
    esac
    thaw "$bed" "$i"
    while read -r f; do
      dir=${f%/*}
      dir=${dir##*/docker-}
      nested+=("${dir##*/}")
    done <"$record"
    rm -f "$record"
  done
  for record in /tmp/hsw-cut-"$bed"-*; do
    [ -e "$record" ] || continue
    i=${record#/tmp/hsw-cut-"$bed"-}
    case "$i" in
      '' | *[!0-9]*) continue ;;
    esac
    # shellcheck disable=SC2207
    nested+=($(cat "$record"))
    rm -f "$record"
  done
  local ids id
  ids=$(docker ps -aq --filter "label=io.haswarm.testbed=$bed")
  for id in $ids; do
    if [ "$(docker inspect -f '{{.State.Running}} {{.State.Paused}}' "$id" 2>/dev/null)" = "true false" ]; then
      # shellcheck disable=SC2207
      nested+=($(timeout 10 docker exec "$id" docker ps -aq --no-trunc 2>/dev/null || true))
    fi
  done
  if [ -n "$ids" ]; then docker rm -f -v $ids >/dev/null; fi
  for id in "${nested[@]}"; do
    id=${id%.scope}
    [ -n "$id" ] || continue
    find /sys/fs/cgroup -maxdepth 4 -depth -type d \( -name "$id" -o -name "docker-$id.scope" \) \
      -exec rmdir {} + 2>/dev/null || true
  done
  local vols
  vols=$(docker volume ls -q --filter "label=io.haswarm.testbed=$bed")
  if [ -n "$vols" ]; then docker volume rm -f $vols >/dev/null; fi
  docker network rm "$bed-net" >/dev/null 2>&1 || true
}

case "${1:-}" in
  image) build_image ;;
  up) up "$2" "$3" "${4:-}" ;;
  addr) addr "$2" "$3" ;;
  restart) docker restart "$(node "$2" "$3")" >/dev/null ;;
  stop) docker stop "$(node "$2" "$3")" >/dev/null ;;
  lose) lose "$2" "$3" ;;
  restore) restore "$2" "$3" ;;
  partition) partition "$2" "$3" ;;
  heal) heal "$2" "$3" ;;
  down) down "$2" ;;
  *) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 2 ;;
esac
