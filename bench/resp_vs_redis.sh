#!/usr/bin/env bash
# RESP server vs Redis: one Hearsay node (`hearsay server`, periodic commit-log sync) against
# redis-server with AOF (appendfsync everysec) and redis-server without persistence, driven by
# redis-benchmark; each target in turn, the order reversed every other round (so no target
# always runs right after the same other one, whose flush or compaction may still be running).
# Compare targets within a round: see docs/benchmarks.md, "RESP server vs Redis".
#
# Usage: bench/resp_vs_redis.sh [options]
#   --hearsay BIN       hearsay binary (default: $HEARSAY, else a release build of this checkout)
#   --hearsay-b BIN     a second build, run as target "hearsay-b" in the same rounds (an A/B)
#   --rounds N          rounds (default 3)
#   --requests N        requests per redis-benchmark run, -n (default 200000)
#   --keys N            key space, -r (default 1000000)
#   --clients N         connections, -c (default 50)
#   --pipelines "P..."  pipeline depths (default "1 16")
#   -h, --help          this text
#
# Stdout: CSV, one line per round, target, pipeline and test (SET, GET):
#   round,target,pipeline,test,rps,avg_ms,min_ms,p50_ms,p95_ms,p99_ms,max_ms
# Stderr: load average at the start and end, peak RSS, then the summary of bench/resp_summary.py
# (median ops/s per target; median of the per-round ratios to redis-aof). Save stdout to pool
# several runs: bench/resp_summary.py run1.csv run2.csv ...
# Needs redis-server, redis-benchmark, redis-cli, python3. Values are 100 bytes. Never run it
# beside a build or another benchmark: the client and the servers share the cores.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BIN=${HEARSAY:-}
BIN_B=
ROUNDS=3
REQUESTS=200000
KEYS=1000000
CLIENTS=50
PIPELINES="1 16"
while [ $# -gt 0 ]; do
  case "$1" in
    --hearsay) BIN=$2; shift 2 ;;
    --hearsay-b) BIN_B=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --keys) KEYS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --pipelines) PIPELINES=$2; shift 2 ;;
    -h | --help) usage_from_header; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
need redis-server redis-benchmark redis-cli python3
BIN=$(hearsay_binary "$BIN")
if [ -n "$BIN_B" ]; then BIN_B=$(hearsay_binary "$BIN_B"); fi
bench_init

TARGETS=()
PIDS=()
port=$(free_port)
start_hearsay hearsay "$BIN" "$port"
TARGETS+=("hearsay:$port"); PIDS+=("$STARTED_PID")
if [ -n "$BIN_B" ]; then
  port=$(free_port)
  start_hearsay hearsay-b "$BIN_B" "$port"
  TARGETS+=("hearsay-b:$port"); PIDS+=("$STARTED_PID")
fi
port=$(free_port)
start_redis redis-aof "$port" aof
TARGETS+=("redis-aof:$port")
port=$(free_port)
start_redis redis-nopersist "$port" nopersist
TARGETS+=("redis-nopersist:$port")

OUT=$BENCH_TMP/results.csv
# Ratios are only comparable within one run on a shared box: record how busy it was.
note "start $(date -u +%Y-%m-%dT%H:%M:%SZ), load average: $(load_avg)"
note "hearsay: $BIN${BIN_B:+; hearsay-b: $BIN_B}"
echo "round,target,pipeline,test,rps,avg_ms,min_ms,p50_ms,p95_ms,p99_ms,max_ms" | tee "$OUT"
for ((r = 1; r <= ROUNDS; r++)); do
  order=("${TARGETS[@]}")
  if [ $((r % 2)) -eq 0 ]; then
    order=()
    for ((i = ${#TARGETS[@]} - 1; i >= 0; i--)); do order+=("${TARGETS[$i]}"); done
  fi
  for P in $PIPELINES; do
    for t in "${order[@]}"; do
      name=${t%%:*}
      port=${t##*:}
      redis-benchmark -p "$port" -t set,get -c "$CLIENTS" -n "$REQUESTS" -r "$KEYS" -d 100 \
        -P "$P" --csv 2>/dev/null | grep -v '^"test"' | tr -d '"' | sed "s/^/$r,$name,$P,/" |
        tee -a "$OUT"
    done
  done
done
note "end $(date -u +%Y-%m-%dT%H:%M:%SZ), load average: $(load_avg)"
note "hearsay peak RSS: $(peak_rss "${PIDS[0]}")"
if [ -n "$BIN_B" ]; then note "hearsay-b peak RSS: $(peak_rss "${PIDS[1]}")"; fi
python3 "$BENCH_DIR/resp_summary.py" "$OUT" >&2
