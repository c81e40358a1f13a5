#!/usr/bin/env bash
# A/B of two settings of one build, with redis-server (appendonly everysec) alongside: starts
# Hearsay twice (flags FLAGS_A and FLAGS_B), preloads each server with 200K random SETs, then
# alternates one redis-benchmark run per target (A, B, Redis) for REPS repetitions.
# Usage: FLAGS_A="--busy-poll-us 0" FLAGS_B="--busy-poll-us 50" [T=get] [P=1] [N=200000] \
#          bench_ab_flags.sh path/to/hearsay [reps]
#   -> one line per run: rep target(A|B|R) ops/s client_cpu_ms server_cpu_ms
# Client and server CPU (user + system) separate settings whose throughput is within the
# box's noise; never run this beside a build or another benchmark.
set -euo pipefail
BIN=${1:?usage: bench_ab_flags.sh path/to/hearsay [reps]}
REPS=${2:-5}
P=${P:-1}; N=${N:-200000}; T=${T:-get}
FLAGS_A=${FLAGS_A:-}; FLAGS_B=${FLAGS_B:-}
TMP=$(mktemp -d)
A_PORT=17711; B_PORT=17712; R_PORT=17713
# shellcheck disable=SC2086 # the flags are word lists
"$BIN" server --data-dir "$TMP/a" --listen 127.0.0.1:$A_PORT --admin-listen 127.0.0.1:0 \
  --cluster-listen 127.0.0.1:0 --sync-mode periodic $FLAGS_A >"$TMP/a.log" 2>&1 &
PA=$!
# shellcheck disable=SC2086
"$BIN" server --data-dir "$TMP/b" --listen 127.0.0.1:$B_PORT --admin-listen 127.0.0.1:0 \
  --cluster-listen 127.0.0.1:0 --sync-mode periodic $FLAGS_B >"$TMP/b.log" 2>&1 &
PB=$!
mkdir -p "$TMP/aof"
redis-server --port $R_PORT --save '' --appendonly yes --appendfsync everysec --dir "$TMP/aof" \
  --daemonize yes --pidfile "$TMP/r.pid" >/dev/null
cleanup() {
  kill "$PA" "$PB" 2>/dev/null || true
  [ -f "$TMP/r.pid" ] && kill "$(cat "$TMP/r.pid")" 2>/dev/null || true
  sleep 0.5; rm -rf "$TMP"
}
trap cleanup EXIT
for p in $A_PORT $B_PORT $R_PORT; do
  for _ in $(seq 1 100); do redis-cli -p $p ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
done
PR=$(cat "$TMP/r.pid")
for p in $A_PORT $B_PORT $R_PORT; do
  redis-benchmark -p $p -t set -c 50 -n 200000 -r 1000000 -d 100 -P 16 -q >/dev/null
done
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_MS=$((1000 / $(getconf CLK_TCK)))
echo "# start $(date -u +%H:%M:%S) UTC, load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for i in $(seq 1 "$REPS"); do
  for t in "A $PA $A_PORT" "B $PB $B_PORT" "R $PR $R_PORT"; do
    read -r name pid port <<<"$t"
    s0=$(cpu "$pid")
    rps=$(/usr/bin/time -f "%U %S" -o "$TMP/ct" redis-benchmark -p "$port" -t "$T" -c 50 -n "$N" \
      -r 1000000 -d 100 -P "$P" --csv 2>/dev/null | tail -1 | tr -d '"' | cut -d, -f2)
    s1=$(cpu "$pid")
    echo "$i $name $rps $(awk '{printf "%d", ($1 + $2) * 1000}' "$TMP/ct") $(( (s1 - s0) * TICK_MS ))"
  done
done
echo "# end $(date -u +%H:%M:%S) UTC, load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
