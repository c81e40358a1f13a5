#!/usr/bin/env bash
# Per-phase CPU of the bench_resp.sh sequence against one server at a time: for each round,
# SET P1, GET P1, SET P16, GET P16 (one redis-benchmark run each), the ops/s, the server's CPU
# (all threads; its client event loop; its flush thread; its compaction threads, normal and
# idle priority), the wall time, the client's CPU, the p99 latency and (Hearsay) the block
# cache misses, read from the admin API's /v1/stats. Server
# CPU per phase separates two builds or settings where throughput alone is client-bound noise.
# Usage: bench_phases.sh path/to/hearsay|redis [rounds] [extra server flags...]
#   e.g. bench_phases.sh target/release/hearsay 3 --block-cache-bytes 268435456
set -euo pipefail
BIN=${1:?usage: bench_phases.sh path/to/hearsay|redis [rounds] [extra server flags...]}
ROUNDS=${2:-3}
shift $(( $# >= 2 ? 2 : 1 ))
TMP=$(mktemp -d)
PORT=17601
ADMIN_PORT=17602
if [ "$BIN" = redis ]; then
  mkdir -p "$TMP/aof"
  redis-server --port $PORT --save '' --appendonly yes --appendfsync everysec --dir "$TMP/aof" \
    --daemonize yes --pidfile "$TMP/pid" >/dev/null
  sleep 0.5
  PID=$(cat "$TMP/pid")
  LOOP=redis-server
else
  "$BIN" server --data-dir "$TMP/data" --listen 127.0.0.1:$PORT --admin-listen 127.0.0.1:$ADMIN_PORT \
    --cluster-listen 127.0.0.1:0 --sync-mode periodic "$@" >"$TMP/log" 2>&1 &
  PID=$!
  LOOP=hearsay-io-0
fi
cleanup() { kill "$PID" 2>/dev/null || true; sleep 0.3; rm -rf "$TMP"; }
trap cleanup EXIT
for _ in $(seq 1 100); do redis-cli -p $PORT ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
TICK_MS=$((1000 / $(getconf CLK_TCK)))
# CPU ticks (user + system) of the whole server, its event-loop thread, its flush thread and
# its compaction threads (thread names are cut to 15 characters).
ticks() {
  local all=0 loop=0 flush=0 compact=0 v c
  for t in /proc/"$PID"/task/*; do
    v=$(awk '{print $14+$15}' "$t/stat" 2>/dev/null || echo 0)
    c=$(cat "$t/comm" 2>/dev/null || true)
    all=$((all + v))
    case "$c" in
      "$LOOP") loop=$((loop + v)) ;;
      hearsay-flush) flush=$((flush + v)) ;;
      hearsay-compact | hearsay-idle-co) compact=$((compact + v)) ;;
    esac
  done
  echo "$all $loop $flush $compact"
}
# Block cache misses so far (Hearsay only; empty for Redis).
misses() {
  [ "$BIN" = redis ] && return 0
  curl -s "127.0.0.1:$ADMIN_PORT/v1/stats" | python3 -c '
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
echo "round,test,pipeline,rps,p99_ms,server_cpu_ms,loop_cpu_ms,flush_cpu_ms,compaction_cpu_ms,wall_ms,client_cpu_ms,cache_misses"
phase() { # test pipeline round
  local a la fa ca b lb fb cb t0 t1 line ma mb
  ma=$(misses)
  read -r a la fa ca < <(ticks)
  t0=$(date +%s%N)
  line=$(/usr/bin/time -f "%U %S" -o "$TMP/ctime" redis-benchmark -p $PORT -t "$1" -c 50 \
    -n 200000 -r 1000000 -d 100 -P "$2" --csv 2>/dev/null | grep -v '^"test"' | tr -d '"' \
    | head -1)
  t1=$(date +%s%N)
  read -r b lb fb cb < <(ticks)
  mb=$(misses)
  echo "$3,$1,$2,$(echo "$line" | cut -d, -f2),$(echo "$line" | cut -d, -f7),$(( (b - a) * TICK_MS )),$(( (lb - la) * TICK_MS )),$(( (fb - fa) * TICK_MS )),$(( (cb - ca) * TICK_MS )),$(( (t1 - t0) / 1000000 )),$(awk '{printf "%d", ($1 + $2) * 1000}' "$TMP/ctime"),${mb:+$((mb - ma))}"
}
for r in $(seq 1 "$ROUNDS"); do
  phase set 1 "$r"; phase get 1 "$r"; phase set 16 "$r"; phase get 16 "$r"
done
