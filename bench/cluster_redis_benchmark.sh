#!/usr/bin/env bash
# redis-benchmark through one node of a fresh cluster: `hearsay dev --nodes N` (RF=3, periodic
# sync), then redis-benchmark SET/GET at each pipeline depth with every connection on node 1,
# at the default level ONE (redis-benchmark sends no CONSISTENCY). For an A/B of two builds,
# alternate them: A B A B, each run a fresh cluster.
#
# Usage: bench/cluster_redis_benchmark.sh [options]
#   --hearsay BIN       hearsay binary (default: $HEARSAY, else a release build of this checkout)
#   --tag TAG           first CSV column (default: the binary's path)
#   --nodes N           cluster size (default 3)
#   --requests N        requests per run, -n (default 100000)
#   --keys N            key space, -r (default 100000)
#   --pipelines "P..."  pipeline depths (default "1 16")
#   -h, --help          this text
#   e.g. for b in OLD/hearsay NEW/hearsay OLD/hearsay NEW/hearsay; do
#          bench/cluster_redis_benchmark.sh --hearsay $b --tag $b; done
#
# Stdout: CSV, TAG,P<depth>,test,rps,avg_ms,min_ms,p50_ms,p95_ms,p99_ms,max_ms.
# The cluster uses `hearsay dev`'s fixed ports, 127.0.0.1-N:7379-7381: they must be free.
# Needs redis-benchmark, redis-cli.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BIN=${HEARSAY:-}
TAG=
NODES=3
REQUESTS=100000
KEYS=100000
PIPELINES="1 16"
while [ $# -gt 0 ]; do
  case "$1" in
    --hearsay) BIN=$2; shift 2 ;;
    --tag) TAG=$2; shift 2 ;;
    --nodes) NODES=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --keys) KEYS=$2; shift 2 ;;
    --pipelines) PIPELINES=$2; shift 2 ;;
    -h | --help) usage_from_header; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
need redis-benchmark redis-cli
BIN=$(hearsay_binary "$BIN")
TAG=${TAG:-$BIN}
bench_init

start_dev_cluster "$BIN" "$NODES"
note "start $(date -u +%Y-%m-%dT%H:%M:%SZ), load average: $(load_avg); $TAG"
for p in $PIPELINES; do
  redis-benchmark -h 127.0.0.1 -p 7379 -t set,get -c 50 -n "$REQUESTS" -r "$KEYS" -d 100 -P "$p" \
    --csv 2>/dev/null | grep -v '"test"' | tr -d '"' | sed "s|^|$TAG,P$p,|"
done
note "end $(date -u +%Y-%m-%dT%H:%M:%SZ), load average: $(load_avg)"
