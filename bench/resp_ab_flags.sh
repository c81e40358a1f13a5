#!/usr/bin/env bash
# A/B of two settings of one build, with redis-server (AOF everysec) alongside: starts Hearsay
# twice (server flags A and B), preloads each of the three servers with random SETs, then
# alternates one redis-benchmark run per target (A, B, Redis) for each repetition, recording
# the client's and the server's CPU of every run. CPU separates settings whose throughput is
# within the box's noise.
#
# Usage: bench/resp_ab_flags.sh [options]
#   --flags-a "FLAGS"   server flags of A (default: $FLAGS_A, else none)
#   --flags-b "FLAGS"   server flags of B (default: $FLAGS_B, else none)
#   --hearsay BIN       hearsay binary (default: $HEARSAY, else a release build of this checkout)
#   --reps N            repetitions (default 5)
#   --test set|get      redis-benchmark test (default get)
#   --pipeline P        pipeline depth (default 1)
#   --requests N        requests per run, -n (default 200000)
#   --preload N         SETs (P16) into each server first (default 200000)
#   -h, --help          this text
#   e.g. bench/resp_ab_flags.sh --flags-a "--busy-poll-us 0" --flags-b "--busy-poll-us 50" --reps 6
#
# Stdout: one line per run: rep target(A|B|R) ops/s client_cpu_ms server_cpu_ms
# Needs redis-server, redis-benchmark, redis-cli. Never run it beside a build or another
# benchmark.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BIN=${HEARSAY:-}
FLAGS_A=${FLAGS_A:-}
FLAGS_B=${FLAGS_B:-}
REPS=5
T="get"
P=1
N=200000
PRELOAD=200000
while [ $# -gt 0 ]; do
  case "$1" in
    --flags-a) FLAGS_A=$2; shift 2 ;;
    --flags-b) FLAGS_B=$2; shift 2 ;;
    --hearsay) BIN=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --test) T=$2; shift 2 ;;
    --pipeline) P=$2; shift 2 ;;
    --requests) N=$2; shift 2 ;;
    --preload) PRELOAD=$2; shift 2 ;;
    -h | --help) usage_from_header; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
need redis-server redis-benchmark redis-cli
BIN=$(hearsay_binary "$BIN")
bench_init

A_PORT=$(free_port)
# shellcheck disable=SC2086 # the flags are word lists
start_hearsay a "$BIN" "$A_PORT" $FLAGS_A
PA=$STARTED_PID
B_PORT=$(free_port)
# shellcheck disable=SC2086
start_hearsay b "$BIN" "$B_PORT" $FLAGS_B
PB=$STARTED_PID
R_PORT=$(free_port)
start_redis redis-aof "$R_PORT" aof
PR=$STARTED_PID
for p in "$A_PORT" "$B_PORT" "$R_PORT"; do
  redis-benchmark -p "$p" -t set -c 50 -n "$PRELOAD" -r 1000000 -d 100 -P 16 -q >/dev/null
done
note "A: ${FLAGS_A:-(no flags)}; B: ${FLAGS_B:-(no flags)}; $T, pipeline $P, $N requests"
note "start $(date -u +%Y-%m-%dT%H:%M:%SZ), load average: $(load_avg)"
for ((i = 1; i <= REPS; i++)); do
  for t in "A $PA $A_PORT" "B $PB $B_PORT" "R $PR $R_PORT"; do
    read -r name pid port <<<"$t"
    s0=$(cpu_ticks "$pid")
    client=$(run_client "$BENCH_TMP/run.csv" redis-benchmark -p "$port" -t "$T" -c 50 -n "$N" \
      -r 1000000 -d 100 -P "$P" --csv)
    s1=$(cpu_ticks "$pid")
    rps=$(tail -1 "$BENCH_TMP/run.csv" | tr -d '"' | cut -d, -f2)
    echo "$i $name $rps $client $(ticks_ms $((s1 - s0)))"
  done
done
note "end $(date -u +%Y-%m-%dT%H:%M:%SZ), load average: $(load_avg)"
