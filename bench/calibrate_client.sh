#!/usr/bin/env bash
# Calibrates the load generator (`hearsay bench`) against redis-benchmark on one redis-server
# (no persistence): in each round `hearsay bench` workload A with uniform and zipfian keys,
# then redis-benchmark SET/GET with the same connections, value size and key range. If the
# two clients drive redis-server equally hard, `hearsay bench` is not the bottleneck of the
# other measurements. Compare within a round; report medians. See docs/bench.md, Calibration.
#
# Usage: bench/calibrate_client.sh [options]
#   --hearsay BIN    hearsay binary (default: $HEARSAY, else a release build of this checkout)
#   --rounds N       rounds (default 3)
#   --secs S         measured seconds per hearsay bench run, after 1 s warm-up (default 5)
#   --records N      keys loaded (default 100000)
#   -h, --help       this text
#
# Stdout: tab-separated lines: round, distribution, ops/s, read p50/p99 µs, update p50/p99 µs,
# client cores; then per round redis-benchmark's SET and GET (ops/s, p50, p99 in µs).
# Needs redis-server, redis-benchmark, redis-cli, jq.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BIN=${HEARSAY:-}
ROUNDS=3
SECS=5
RECORDS=100000
while [ $# -gt 0 ]; do
  case "$1" in
    --hearsay) BIN=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --secs) SECS=$2; shift 2 ;;
    --records) RECORDS=$2; shift 2 ;;
    -h | --help) usage_from_header; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
need redis-server redis-benchmark redis-cli jq
BIN=$(hearsay_binary "$BIN")
bench_init

PORT=$(free_port)
start_redis redis "$PORT" nopersist
PID=$STARTED_PID
"$BIN" bench --hosts "127.0.0.1:$PORT" --load --record-count "$RECORDS" --operations 1 \
  --no-progress >/dev/null
note "start $(date -u +%Y-%m-%dT%H:%M:%SZ), load average: $(load_avg)"
printf 'round\tdist\tops/s\tp50_us(read)\tp99_us(read)\tp50_us(update)\tp99_us(update)\tclient_cores\n'
for ((r = 1; r <= ROUNDS; r++)); do
  for dist in uniform zipfian; do
    "$BIN" bench --hosts "127.0.0.1:$PORT" --record-count "$RECORDS" --workload a \
      --distribution "$dist" --concurrency 50 --duration "$SECS" --warmup 1 --json --no-progress \
      --seed "$r" --server-pid "$PID" |
      jq -r --arg r "$r" --arg d "$dist" '[$r, $d, (.run.ops_per_s|floor),
        .run.operations.read.p50_us, .run.operations.read.p99_us,
        .run.operations.update.p50_us, .run.operations.update.p99_us,
        (.run.client_cores_busy*100|floor/100)] | @tsv'
  done
  # The peer: redis-benchmark, same connections, value size and key range (GET and SET).
  redis-benchmark -p "$PORT" -c 50 -n $((SECS * 40000)) -t set,get -d 100 -r "$RECORDS" --csv \
    2>/dev/null | tr -d '"' | awk -F, -v r="$r" \
    '$1 == "SET" || $1 == "GET" { printf "%s\tredis-benchmark-%s\t%d\tp50 %d\tp99 %d\n", r, $1, $2, $5 * 1000, $7 * 1000 }'
done
note "end $(date -u +%Y-%m-%dT%H:%M:%SZ), load average: $(load_avg)"
