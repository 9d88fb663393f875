#!/usr/bin/env bash
# The whole test suite in two lanes at once: the tests on the local engine's
# swarm, and those on Docker-in-Docker beds (the files under tests/tests that
# use `Bed`), which have engines and swarms of their own. Either lane spends
# most of its time waiting on timers rather than on the cores, so running
# them side by side takes about as long as the longer one. Each output line
# names its lane; arguments go to every cargo call (e.g. --locked). Exits
# non-zero when either lane fails.
set -uo pipefail
cd "$(dirname "$0")/.."

# Build once, so that the lanes do not wait on each other's build.
cargo test --workspace --no-run "$@" || exit $?

# Tests on the local swarm that run in the beds lane, to even the lanes
# out. Stop 27 moved backup (394 s) here: the local lane took 1,735 s and
# the beds lane 1,910 s. Stop 28's control-plane test (a bed of three
# managers, about 10 minutes) joined the beds lane, so backup went back to
# the local lane, which grew by less (the mirror's tests, about 3 minutes).
# A test named here must use names of its own, as it runs beside the local
# lane's tests as the tests of one binary run beside each other.
beside_beds=()

beds=()
local=()
for f in tests/tests/*.rs; do
  t=$(basename "$f" .rs)
  if grep -q 'Bed::' "$f" || [[ " ${beside_beds[*]} " == *" $t "* ]]; then
    beds+=(--test "$t")
  else
    local+=(--test "$t")
  fi
done

# Runs a command with its output prefixed by the lane's name.
# Its last line says how long the lane took: CI's time is the longer lane's.
lane() {
  local name=$1 start=$SECONDS status
  shift
  "$@" 2>&1 | sed -u "s/^/[$name] /"
  status=${PIPESTATUS[0]}
  echo "[$name] lane took $((SECONDS - start)) s"
  return "$status"
}

# Every lane goes on past a failing test binary (--no-fail-fast), so that
# one run shows every failure: without it, cargo stops a lane at the first.
local_lane() {
  local status=0
  cargo test --no-fail-fast --workspace --exclude haswarm-testbed "$@" || status=$?
  cargo test --no-fail-fast -p haswarm-testbed --lib "${local[@]}" "$@" || status=$?
  return "$status"
}

lane beds cargo test --no-fail-fast -p haswarm-testbed "${beds[@]}" "$@" &
beds_pid=$!
lane local local_lane "$@" &
local_pid=$!
wait "$local_pid"
local_status=$?
wait "$beds_pid"
beds_status=$?
echo "lanes: local exited ${local_status}, beds exited ${beds_status}"
[ "$local_status" -eq 0 ] && [ "$beds_status" -eq 0 ]
