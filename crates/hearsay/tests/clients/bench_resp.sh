#!/usr/bin/env bash
# Side-by-side RESP benchmark: Hearsay (periodic sync) vs redis-server with AOF everysec vs
# redis-server without persistence, each target in turn, the order reversed every other round
# (see BENCHMARKING.md).
# Usage: bench_resp.sh path/to/release/hearsay [rounds] [path/to/other/hearsay]
#   -> CSV lines on stdout. With a second binary (an A/B of old vs new), it runs as target
#   "hearsay-b" in the same rounds, on its own port and data directory.
set -euo pipefail
HEARSAY=${1:?usage: bench_resp.sh path/to/hearsay [rounds] [path/to/other/hearsay]}
ROUNDS=${2:-3}
HEARSAY_B=${3:-}
TMP=$(mktemp -d)
H_PORT=17501; HB_PORT=17502; AOF_PORT=16391; MEM_PORT=16392
"$HEARSAY" server --data-dir "$TMP/hearsay" --listen 127.0.0.1:$H_PORT --admin-listen 127.0.0.1:0 \
  --cluster-listen 127.0.0.1:0 --sync-mode periodic >"$TMP/hearsay.log" 2>&1 &
HPID=$!
HBPID=
TARGETS="hearsay:$H_PORT"
if [ -n "$HEARSAY_B" ]; then
  "$HEARSAY_B" server --data-dir "$TMP/hearsay-b" --listen 127.0.0.1:$HB_PORT \
    --admin-listen 127.0.0.1:0 --cluster-listen 127.0.0.1:0 --sync-mode periodic \
    >"$TMP/hearsay-b.log" 2>&1 &
  HBPID=$!
  TARGETS="$TARGETS hearsay-b:$HB_PORT"
fi
TARGETS="$TARGETS redis-aof:$AOF_PORT redis-nopersist:$MEM_PORT"
mkdir -p "$TMP/aof"
redis-server --port $AOF_PORT --save '' --appendonly yes --appendfsync everysec --dir "$TMP/aof" \
  --daemonize yes --pidfile "$TMP/aof.pid" >/dev/null
redis-server --port $MEM_PORT --save '' --appendonly no --daemonize yes --pidfile "$TMP/mem.pid" >/dev/null
cleanup() {
  kill "$HPID" 2>/dev/null || true
  if [ -n "$HBPID" ]; then kill "$HBPID" 2>/dev/null || true; fi
  for f in aof mem; do [ -f "$TMP/$f.pid" ] && kill "$(cat "$TMP/$f.pid")" 2>/dev/null || true; done
  sleep 0.5; rm -rf "$TMP"
}
trap cleanup EXIT
for t in $TARGETS; do
  p=${t##*:}
  for _ in $(seq 1 100); do redis-cli -p $p ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
done
# Ratios are only comparable within one run on a shared box: record how busy it was.
echo "# start $(date -u +%H:%M:%S) UTC, load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "round,target,pipeline,test,rps,avg_ms,min_ms,p50_ms,p95_ms,p99_ms,max_ms"
REVERSED=$(echo $TARGETS | tr ' ' '\n' | tac | tr '\n' ' ')
for r in $(seq 1 "$ROUNDS"); do
  # Even rounds run the targets in reverse order, so that no target always follows the same
  # one (whose background work, a flush or a compaction, may still be running).
  order=$TARGETS
  if [ $((r % 2)) -eq 0 ]; then order=$REVERSED; fi
  for P in 1 16; do
    for t in $order; do
      name=${t%%:*}; port=${t##*:}
      redis-benchmark -p "$port" -t set,get -c 50 -n 200000 -r 1000000 -d 100 -P "$P" --csv 2>/dev/null \
        | grep -v '^"test"' | tr -d '"' | sed "s/^/$r,$name,$P,/"
    done
  done
done
echo "# end $(date -u +%H:%M:%S) UTC, load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "# hearsay peak RSS: $(grep VmHWM /proc/$HPID/status | awk '{print $2 " " $3}')" >&2
if [ -n "$HBPID" ]; then
  echo "# hearsay-b peak RSS: $(grep VmHWM /proc/$HBPID/status | awk '{print $2 " " $3}')" >&2
fi
