#!/usr/bin/env bash
# A/B of ONE reads through every node of a cluster, two builds alternated (A B A B): each run a
# fresh `hearsay dev --nodes N` (RF=3), loaded at ALL, then `hearsay bench` reads at ONE
# spread over all nodes, with the nodes' CPU (reads per server core-second).
#
# Usage: bench/cluster_one_reads_ab.sh [options] BIN_A BIN_B
#   --pairs N        how many A B pairs (default 2)
#   --runs N         measured runs per cluster (default 2)
#   --nodes N        cluster size (default 3)
#   --secs S         measured seconds per run, after a 2 s warm-up (default 8)
#   --records N      keys loaded (default 100000)
#   -h, --help       this text
#
# Stdout: one line per run: label, ops/s, p50 and p99 (µs), server CPU s, ops per server
# core-second, errors. `hearsay bench` is BIN_A's for every run (the client is not under test).
# The cluster uses `hearsay dev`'s fixed ports, 127.0.0.1-N:7379-7381: they must be free.
# Needs jq, redis-cli.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PAIRS=2
RUNS=2
NODES=3
SECS=8
RECORDS=100000
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --pairs) PAIRS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --nodes) NODES=$2; shift 2 ;;
    --secs) SECS=$2; shift 2 ;;
    --records) RECORDS=$2; shift 2 ;;
    -h | --help) usage_from_header; exit 0 ;;
    -*) die "unknown argument '$1' (see --help)" ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
[ ${#ARGS[@]} = 2 ] || die "two binaries needed: BIN_A BIN_B (see --help)"
need jq redis-cli
A=$(hearsay_binary "${ARGS[0]}")
B=$(hearsay_binary "${ARGS[1]}")
bench_init

one() { # BIN LABEL
  local bin=$1 label=$2 r p pid_args=()
  start_dev_cluster "$bin" "$NODES"
  for p in $DEV_NODE_PIDS; do pid_args+=(--server-pid "$p"); done
  "$A" bench --hosts "$DEV_HOSTS" --load --record-count "$RECORDS" --operations 1 --no-progress \
    --concurrency 50 --consistency ALL >/dev/null
  for ((r = 1; r <= RUNS; r++)); do
    "$A" bench --hosts "$DEV_HOSTS" --record-count "$RECORDS" --workload c --distribution uniform \
      --concurrency 50 --duration "$SECS" --warmup 2 --json --no-progress --seed "$r" \
      --consistency ONE "${pid_args[@]}" |
      jq -r --arg b "$label" '.run as $x | "\($b) ONE read: \($x.ops_per_s|floor) ops/s p50 \($x.operations.read.p50_us) p99 \($x.operations.read.p99_us) server_cpu_s \($x.server_cpu_s) ops/core-s \($x.ops / $x.server_cpu_s | floor) errors \($x.errors)"'
  done
  stop_dev_cluster
}
note "start $(date -u +%Y-%m-%dT%H:%M:%SZ), load average: $(load_avg); A=$A B=$B"
for ((i = 1; i <= PAIRS; i++)); do
  one "$A" A
  one "$B" B
done
note "end $(date -u +%Y-%m-%dT%H:%M:%SZ), load average: $(load_avg)"
