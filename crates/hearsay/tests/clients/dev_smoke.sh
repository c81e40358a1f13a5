#!/usr/bin/env bash
# The README's first command, as CI runs it: `hearsay dev` starts a 3-node cluster on
# 127.0.0.1-3; a write at ALL through node 1 is read at QUORUM through node 3; `hearsay status`
# shows three UN members; Ctrl-C (SIGINT) stops every node and `hearsay dev` exits 0.
#   bash crates/hearsay/tests/clients/dev_smoke.sh target/release/hearsay
set -euo pipefail
BIN=$(realpath "${1:?usage: dev_smoke.sh path/to/hearsay}")
WORK=$(mktemp -d)
LOG="$WORK/dev.log"
DEV_PID=
cleanup() {
  if [ -n "$DEV_PID" ] && kill -0 "$DEV_PID" 2>/dev/null; then kill -9 "$DEV_PID" 2>/dev/null || true; fi
  pkill -9 -f "$WORK/node-" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "dev smoke: FAIL: $*"; echo "--- hearsay dev output:"; cat "$LOG"; exit 1; }

"$BIN" dev --data-dir "$WORK" >"$LOG" 2>&1 &
DEV_PID=$!
# Forming a cluster takes a few gossip rounds plus the join wait; poll with a deadline.
deadline=$((SECONDS + 120))
until grep -q "cluster ready" "$LOG"; do
  kill -0 "$DEV_PID" 2>/dev/null || fail "hearsay dev exited before the cluster was ready"
  [ $SECONDS -lt $deadline ] || fail "no 'cluster ready' within 120 s"
  sleep 0.5
done
echo "dev smoke: cluster ready"

out=$(printf 'CONSISTENCY ALL\nSET dev-smoke-key hello\n' | redis-cli -h 127.0.0.1 -p 7379)
echo "$out" | grep -q "^OK$" || fail "ALL write through node 1: $out"
got=$(printf 'CONSISTENCY QUORUM\nGET dev-smoke-key\n' | redis-cli -h 127.0.0.3 -p 7379 | tail -1)
[ "$got" = hello ] || fail "QUORUM read through node 3 gave '$got'"
status=$("$BIN" status --admin 127.0.0.1:7380)
echo "$status"
[ "$(echo "$status" | grep -c '^UN ')" = 3 ] || fail "hearsay status does not show 3 UN members"

kill -INT "$DEV_PID"
deadline=$((SECONDS + 60))
while kill -0 "$DEV_PID" 2>/dev/null; do
  [ $SECONDS -lt $deadline ] || fail "hearsay dev still running 60 s after SIGINT"
  sleep 0.2
done
rc=0; wait "$DEV_PID" || rc=$?
DEV_PID=
[ "$rc" = 0 ] || fail "hearsay dev exited with $rc after SIGINT"
pgrep -f "$WORK/node-" >/dev/null && fail "nodes still running after hearsay dev exited"
echo "dev smoke: OK"
