#!/usr/bin/env bash
# Prepares this machine for haswarm's end-to-end tests: a reachable Docker
# engine in swarm mode and the test images. Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if ! docker info >/dev/null 2>&1; then
  echo "testbed: no Docker engine answers (is dockerd running, and DOCKER_HOST right?)" >&2
  exit 1
fi
"$here/swarm-init.sh"
"$here/build-images.sh"
# The multi-node tests start their beds concurrently: build the node image once, here.
"$here/dind.sh" image
