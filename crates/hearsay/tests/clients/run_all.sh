#!/usr/bin/env bash
# Real-client checks against a real `hearsay server`: a scripted redis-cli session, redis-py
# with RESP3, and a short redis-benchmark run that must report no errors.
# Usage: run_all.sh path/to/hearsay
set -euo pipefail
HEARSAY=${1:?usage: run_all.sh path/to/hearsay}
HERE="$(cd "$(dirname "$0")" && pwd)"
DATA=$(mktemp -d)
PORT=${HEARSAY_CHECK_PORT:-17379}
LOG="$DATA/hearsay.log"

"$HEARSAY" server --data-dir "$DATA/data" --listen "127.0.0.1:$PORT" \
  --admin-listen 127.0.0.1:0 --cluster-listen 127.0.0.1:0 --sync-mode periodic >"$LOG" 2>&1 &
PID=$!
cleanup() { kill -9 "$PID" 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT

for _ in $(seq 1 300); do
  if redis-cli -p "$PORT" ping 2>/dev/null | grep -q PONG; then break; fi
  sleep 0.1
done
redis-cli -p "$PORT" ping | grep -q PONG || { echo "hearsay did not start"; cat "$LOG"; exit 1; }

echo "--- redis-cli session"
"$HERE/redis_cli_session.sh" "$PORT"
echo "--- redis-py (RESP3)"
python3 "$HERE/redispy_check.py" "$PORT"
echo "--- redis-benchmark"
"$HERE/redis_benchmark_check.sh" "$PORT"

echo "--- graceful shutdown"
kill -TERM "$PID"
if ! wait "$PID"; then echo "hearsay exited non-zero after SIGTERM"; cat "$LOG"; exit 1; fi
echo "all client checks passed"
