#!/usr/bin/env bash
# Puts the local Docker engine in swarm mode (a single-node swarm) if it is not already.
set -euo pipefail

state=$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || true)
case "$state" in
  active)
    echo "testbed: swarm already active" ;;
  inactive|"")
    # Advertise the address of the default route's interface (eth0 on this machine kind).
    iface=$(ip -4 route show default 2>/dev/null | awk '{print $5; exit}')
    addr=$(ip -4 -o addr show "${iface:-eth0}" 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -1)
    docker swarm init --advertise-addr "${addr:-127.0.0.1}" >/dev/null
    echo "testbed: swarm initialised (advertising ${addr:-127.0.0.1})" ;;
  *)
    echo "testbed: swarm state is '$state'; fix it by hand (docker swarm leave --force?)" >&2
    exit 1 ;;
esac
