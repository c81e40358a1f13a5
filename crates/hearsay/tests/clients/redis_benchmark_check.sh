#!/usr/bin/env bash
# A short redis-benchmark run that must complete with no errors.
# Usage: redis_benchmark_check.sh PORT
set -euo pipefail
PORT=${1:?usage: redis_benchmark_check.sh PORT}
out=$(redis-benchmark -p "$PORT" -t set,get -c 20 -n 20000 -r 10000 -d 100 -P 4 -q 2>&1)
echo "$out" | tr '\r' '\n' | grep -E 'requests per second' || true
if echo "$out" | grep -qiE 'error|timeout|refused'; then
  echo "redis-benchmark reported errors:"; echo "$out"; exit 1
fi
echo "$out" | grep -q 'SET: .*requests per second' && echo "$out" | grep -q 'GET: .*requests per second' \
  || { echo "redis-benchmark did not finish both tests"; echo "$out"; exit 1; }
