#!/usr/bin/env bash
# Where the CPU goes, per phase of the resp_vs_redis.sh sequence, against one server at a time:
# for each round SET P1, GET P1, SET P16, GET P16 (one redis-benchmark run each), the ops/s and
# p99, the server's CPU (all threads; its client event loop; its flush thread; its compaction
# threads, normal and idle priority), the wall time, the client's CPU and (Hearsay) the block
# cache misses from the admin API's /v1/stats. Server CPU per phase separates two builds or
# settings where throughput alone is client-bound noise; run them alternately (A B A B).
#
# Usage: bench/resp_phases.sh [options] [-- extra hearsay server flags...]
#   --hearsay BIN     hearsay binary (default: $HEARSAY, else a release build of this checkout)
#   --redis           measure redis-server with AOF everysec instead of Hearsay
#   --rounds N        rounds (default 3)
#   --requests N      requests per phase, -n (default 200000)
#   -h, --help        this text
#   e.g. bench/resp_phases.sh --rounds 3 -- --block-cache-bytes 268435456
#
# Stdout: CSV
#   round,test,pipeline,rps,p99_ms,server_cpu_ms,loop_cpu_ms,flush_cpu_ms,compaction_cpu_ms,wall_ms,client_cpu_ms,cache_misses
# CPU is read from /proc/<pid>/task/*/stat (clock ticks, 10 ms each).
# Needs redis-server (for --redis), redis-benchmark, redis-cli, curl, python3.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BIN=${HEARSAY:-}
REDIS=
ROUNDS=3
REQUESTS=200000
while [ $# -gt 0 ]; do
  case "$1" in
    --hearsay) BIN=$2; shift 2 ;;
    --redis) REDIS=1; shift ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    -h | --help) usage_from_header; exit 0 ;;
    --) shift; break ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
need redis-benchmark redis-cli curl python3
if [ -z "$REDIS" ]; then BIN=$(hearsay_binary "$BIN"); fi
bench_init

PORT=$(free_port)
if [ -n "$REDIS" ]; then
  start_redis redis-aof "$PORT" aof
  LOOP=redis-server
  ADMIN=
else
  start_hearsay hearsay "$BIN" "$PORT" "$@"
  LOOP=hearsay-io-0
  ADMIN=$STARTED_ADMIN
fi
PID=$STARTED_PID

# Block cache misses so far (Hearsay only; empty for Redis).
misses() {
  [ -n "$ADMIN" ] || return 0
  curl -s "http://$ADMIN/v1/stats" | python3 -c '
import json, sys
def find(o):
    if isinstance(o, dict):
        if "misses" in o and "inserts" in o:
            return o["misses"]
        for v in o.values():
            r = find(v)
            if r is not None:
                return r
print(find(json.load(sys.stdin)))'
}

note "start $(date -u +%Y-%m-%dT%H:%M:%SZ), load average: $(load_avg)"
echo "round,test,pipeline,rps,p99_ms,server_cpu_ms,loop_cpu_ms,flush_cpu_ms,compaction_cpu_ms,wall_ms,client_cpu_ms,cache_misses"
phase() { # test pipeline round
  local la fa ca a lb fb cb b t0 t1 line ma mb client
  ma=$(misses)
  read -r la fa ca a < <(thread_ticks "$PID" "$LOOP" hearsay-flush 'hearsay-compact|hearsay-idle-co')
  t0=$(date +%s%N)
  client=$(run_client "$BENCH_TMP/phase.csv" redis-benchmark -p "$PORT" -t "$1" -c 50 \
    -n "$REQUESTS" -r 1000000 -d 100 -P "$2" --csv)
  t1=$(date +%s%N)
  read -r lb fb cb b < <(thread_ticks "$PID" "$LOOP" hearsay-flush 'hearsay-compact|hearsay-idle-co')
  mb=$(misses)
  line=$(grep -v '^"test"' "$BENCH_TMP/phase.csv" | tr -d '"' | head -1)
  echo "$3,$1,$2,$(cut -d, -f2 <<<"$line"),$(cut -d, -f7 <<<"$line"),$(ticks_ms $((b - a))),$(ticks_ms $((lb - la))),$(ticks_ms $((fb - fa))),$(ticks_ms $((cb - ca))),$(((t1 - t0) / 1000000)),$client,${mb:+$((mb - ma))}"
}
for ((r = 1; r <= ROUNDS; r++)); do
  phase set 1 "$r"
  phase get 1 "$r"
  phase set 16 "$r"
  phase get 16 "$r"
done
note "end $(date -u +%Y-%m-%dT%H:%M:%SZ), load average: $(load_avg)"
