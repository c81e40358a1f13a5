#!/usr/bin/env bash
# Runs the acceptance benchmark matrix against servers that are already running (e.g. started
# by `hearsay dev --nodes 3`, or `--nodes 1` for the single-node baseline): for each consistency
# level, a write-only and a read-only run, several rounds, then redis-benchmark against the
# first host. Prints markdown rows for docs/benchmarks.md.
#
#   HOSTS=127.0.0.1:7379,127.0.0.2:7379,127.0.0.3:7379 PIDS="$(pgrep -d' ' -f 'hearsay server')" \
#   RF=3 LEVELS="ONE QUORUM ALL" crates/hearsay-bench/scripts/matrix.sh
#
# LEVELS="-" sends no CONSISTENCY (plain Redis). Needs jq, redis-benchmark; BENCH defaults to
# the release example binary (build: cargo build --release -p hearsay-bench --example bench),
# or set BENCH="hearsay bench".
set -euo pipefail
HOSTS=${HOSTS:-127.0.0.1:7379}
PIDS=${PIDS:-}
RF=${RF:-1}
LEVELS=${LEVELS:-ONE QUORUM ALL}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
RECORDS=${RECORDS:-100000}
CONC=${CONC:-50}
BENCH=${BENCH:-${CARGO_TARGET_DIR:-target}/release/examples/bench}

pid_args=()
for p in $PIDS; do pid_args+=(--server-pid "$p"); done
level_args() { if [ "$1" = "-" ]; then :; else echo "--consistency $1"; fi; }

# Load at the strongest level given (the last one: list LEVELS weakest first) so every replica
# starts with every key.
load_level=-
for l in $LEVELS; do load_level=$l; done
# shellcheck disable=SC2046
$BENCH --hosts "$HOSTS" --load --record-count "$RECORDS" --operations 1 --no-progress \
  --concurrency "$CONC" --json $(level_args "$load_level") |
  jq -r --arg l "$load_level" '"load (\($l)): \(.load.ops // "?") keys, \(.load.ops_per_s // 0 | floor) ops/s, \(.load.errors // "?") errors"'
echo

# The last column is replica writes per server core-second (writes only): each acknowledged
# write is applied on RF replicas whatever the level (the level only says how many acks the
# coordinator waits for), which is the unit of Cassandra's published 3-4k anchor.
echo "| round | level | op | ops/s | p50 µs | p99 µs | p99.9 µs | errors | client cores | server CPU s | ops per server core-s | replica writes per server core-s |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for r in $(seq "$ROUNDS"); do
  for level in $LEVELS; do
    for op in write read; do
      if [ "$op" = write ]; then mix=(--workload custom --update-proportion 1); k=update
      else mix=(--workload c); k=read; fi
      # shellcheck disable=SC2046
      $BENCH --hosts "$HOSTS" --record-count "$RECORDS" "${mix[@]}" --distribution uniform \
        --concurrency "$CONC" --duration "$SECS" --warmup 2 --json --no-progress --seed "$r" \
        $(level_args "$level") "${pid_args[@]}" |
        jq -r --arg r "$r" --arg l "$level" --arg op "$op" --arg k "$k" --argjson rf "$RF" '
          .run as $x | $x.operations[$k] as $o |
          ($x.errors_by_kind // {} | to_entries | map("\(.key):\(.value)") | join(" ")) as $ek |
          "| \($r) | \($l) | \($op) | \($x.ops_per_s|floor) | \($o.p50_us) | \($o.p99_us) | \($o.p999_us) | \($x.errors)\(if $ek == "" then "" else " (\($ek))" end) | \(($x.client_cores_busy // 0)*100|floor/100) | \(if $x.server_cpu_s then ($x.server_cpu_s*100|round/100) else "-" end) | \(if $x.server_cpu_s then ($x.ops / $x.server_cpu_s | floor) else "-" end) | \(if $x.server_cpu_s and $op == "write" then ($x.ops * $rf / $x.server_cpu_s | floor) else "-" end) |"'
    done
  done
done
host=${HOSTS%%,*}
echo
echo "redis-benchmark -h ${host%:*} -p ${host##*:} -c $CONC -d 100 -r $RECORDS -t set,get:"
redis-benchmark -h "${host%:*}" -p "${host##*:}" -c "$CONC" -n $((SECS * 20000)) -d 100 \
  -r "$RECORDS" -t set,get --csv
