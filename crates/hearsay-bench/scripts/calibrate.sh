#!/usr/bin/env bash
# Calibrates `hearsay bench` against redis-server and redis-benchmark on this box, alternating
# the three in each round (the box is shared and noisy: compare within a round, report medians).
# Usage: crates/hearsay-bench/scripts/calibrate.sh [rounds] [seconds]
# Needs: redis-server, redis-benchmark, jq; builds the bench example in release.
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROUNDS=${1:-3}
SECS=${2:-5}
PORT=${PORT:-6393}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p hearsay-bench --example bench
BENCH=$CARGO_TARGET_DIR/release/examples/bench
DIR=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$DIR/redis.pid" --dir "$DIR" >/dev/null
for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
PID=$(cat "$DIR/redis.pid")
trap 'kill "$PID" 2>/dev/null; rm -rf "$DIR"' EXIT

$BENCH --hosts 127.0.0.1:$PORT --load --record-count 100000 --operations 1 --no-progress >/dev/null
echo "round dist ops/s p50_us(read) p99_us(read) p50_us(update) p99_us(update) client_cores"
for r in $(seq "$ROUNDS"); do
  for dist in uniform zipfian; do
    $BENCH --hosts 127.0.0.1:$PORT --record-count 100000 --workload a --distribution $dist \
      --concurrency 50 --duration "$SECS" --warmup 1 --json --no-progress --seed $r \
      --server-pid "$PID" |
      jq -r --arg r "$r" --arg d "$dist" '[$r, $d, (.run.ops_per_s|floor),
        .run.operations.read.p50_us, .run.operations.read.p99_us,
        .run.operations.update.p50_us, .run.operations.update.p99_us,
        (.run.client_cores_busy*100|floor/100)] | @tsv'
  done
  # The peer: redis-benchmark, same connections, value size and key range (GET and SET).
  redis-benchmark -p "$PORT" -c 50 -n $((SECS * 40000)) -t set,get -d 100 -r 100000 --csv \
    2>/dev/null | tr -d '"' | awk -F, -v r="$r" \
    '$1 == "SET" || $1 == "GET" { printf "%s\tredis-benchmark-%s\t%d\tp50 %d\tp99 %d\n", r, $1, $2, $5 * 1000, $7 * 1000 }'
done
