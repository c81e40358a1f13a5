#!/usr/bin/env bash
# Cluster vs single node: what replication costs in server CPU. For each setup, a write-only
# and a read-only `hearsay bench` run per consistency level and round, with the servers' CPU
# (replica writes per server core-second), then redis-benchmark SET/GET against the first
# node. By default: one `hearsay server` (LocalStore, RF=1, level ONE), stopped, then a
# `hearsay dev --nodes 3` cluster (RF=3; ONE, QUORUM, ALL), never both at once.
# See docs/benchmarks.md, "Cluster vs single node".
#
# Usage: bench/cluster_matrix.sh [options]
#   --setups "S..."    which setups, in order: single, cluster (default "single cluster")
#   --nodes N          cluster size for `hearsay dev --nodes N` (default 3; RF = min(N, 3))
#   --external         run against servers you started: HOSTS (comma-separated host:port),
#                      PIDS (server PIDs, for CPU), RF and LEVELS from the environment
#   --hearsay BIN      hearsay binary (default: $HEARSAY, else a release build of this checkout)
#   --rounds N         rounds (default 3)
#   --secs S           measured seconds per run, after a 2 s warm-up (default 10)
#   --records N        keys loaded before the runs (default 100000)
#   --concurrency N    connections (default 50)
#   --requests N       redis-benchmark requests (default SECS x 20000)
#   -h, --help         this text
#
# Stdout: per setup, the load line and Markdown rows:
#   | round | level | op | ops/s | p50 µs | p99 µs | p99.9 µs | errors | client cores |
#   server CPU s | ops per server core-s | replica writes per server core-s |
# then redis-benchmark's CSV. Replica writes per server core-second = write ops x RF / server
# CPU seconds: every acknowledged write is applied on all RF replicas whatever the level
# (the unit of Cassandra's published 3-4k per core-second at RF=3).
# The cluster uses `hearsay dev`'s fixed ports, 127.0.0.1-N:7379-7381: they must be free.
# Needs jq, redis-benchmark, redis-cli. LEVELS="-" (external) sends no CONSISTENCY.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BIN=${HEARSAY:-}
SETUPS="single cluster"
NODES=3
ROUNDS=3
SECS=10
RECORDS=100000
CONC=50
REQUESTS=
while [ $# -gt 0 ]; do
  case "$1" in
    --setups) SETUPS=$2; shift 2 ;;
    --nodes) NODES=$2; shift 2 ;;
    --external) SETUPS=external; shift ;;
    --hearsay) BIN=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --secs) SECS=$2; shift 2 ;;
    --records) RECORDS=$2; shift 2 ;;
    --concurrency) CONC=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    -h | --help) usage_from_header; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
REQUESTS=${REQUESTS:-$((SECS * 20000))}
need jq redis-benchmark redis-cli
BIN=$(hearsay_binary "$BIN")
bench_init

level_args() { if [ "$1" != "-" ]; then echo "--consistency $1"; fi; }

# matrix HOSTS "PIDS" RF "LEVELS"
matrix() {
  local hosts=$1 pids=$2 rf=$3 levels=$4 p l load_level=- r level op mix k host
  local pid_args=()
  for p in $pids; do pid_args+=(--server-pid "$p"); done
  # Load at the strongest level given (the last: list LEVELS weakest first), so every replica
  # starts with every key.
  for l in $levels; do load_level=$l; done
  # shellcheck disable=SC2046 # level_args is a word list
  "$BIN" bench --hosts "$hosts" --load --record-count "$RECORDS" --operations 1 --no-progress \
    --concurrency "$CONC" --json $(level_args "$load_level") |
    jq -r --arg l "$load_level" '"load (\($l)): \(.load.ops // "?") keys, \(.load.ops_per_s // 0 | floor) ops/s, \(.load.errors // "?") errors"'
  echo
  echo "| round | level | op | ops/s | p50 µs | p99 µs | p99.9 µs | errors | client cores | server CPU s | ops per server core-s | replica writes per server core-s |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  for ((r = 1; r <= ROUNDS; r++)); do
    for level in $levels; do
      for op in write read; do
        if [ "$op" = write ]; then
          mix=(--workload custom --update-proportion 1)
          k=update
        else
          mix=(--workload c)
          k="read"
        fi
        # shellcheck disable=SC2046
        "$BIN" bench --hosts "$hosts" --record-count "$RECORDS" "${mix[@]}" --distribution uniform \
          --concurrency "$CONC" --duration "$SECS" --warmup 2 --json --no-progress --seed "$r" \
          $(level_args "$level") "${pid_args[@]}" |
          jq -r --arg r "$r" --arg l "$level" --arg op "$op" --arg k "$k" --argjson rf "$rf" '
            .run as $x | $x.operations[$k] as $o |
            ($x.errors_by_kind // {} | to_entries | map("\(.key):\(.value)") | join(" ")) as $ek |
            "| \($r) | \($l) | \($op) | \($x.ops_per_s|floor) | \($o.p50_us) | \($o.p99_us) | \($o.p999_us) | \($x.errors)\(if $ek == "" then "" else " (\($ek))" end) | \(($x.client_cores_busy // 0)*100|floor/100) | \(if $x.server_cpu_s then ($x.server_cpu_s*100|round/100) else "-" end) | \(if $x.server_cpu_s then ($x.ops / $x.server_cpu_s | floor) else "-" end) | \(if $x.server_cpu_s and $op == "write" then ($x.ops * $rf / $x.server_cpu_s | floor) else "-" end) |"'
      done
    done
  done
  host=${hosts%%,*}
  echo
  echo "redis-benchmark -h ${host%:*} -p ${host##*:} -c $CONC -n $REQUESTS -d 100 -r $RECORDS -t set,get:"
  redis-benchmark -h "${host%:*}" -p "${host##*:}" -c "$CONC" -n "$REQUESTS" -d 100 \
    -r "$RECORDS" -t set,get --csv
}

note "start $(date -u +%Y-%m-%dT%H:%M:%SZ), load average: $(load_avg)"
for setup in $SETUPS; do
  case "$setup" in
    single)
      port=$(free_port)
      start_hearsay single "$BIN" "$port"
      echo "## single node (hearsay server, LocalStore, RF=1)"
      echo
      matrix "127.0.0.1:$port" "$STARTED_PID" 1 ONE
      stop_server "$STARTED_PID"
      ;;
    cluster)
      start_dev_cluster "$BIN" "$NODES"
      rf=$((NODES < 3 ? NODES : 3))
      echo "## $NODES-node cluster (hearsay dev --nodes $NODES, RF=$rf)"
      echo
      matrix "$DEV_HOSTS" "$DEV_NODE_PIDS" "$rf" "ONE QUORUM ALL"
      stop_dev_cluster
      ;;
    external)
      [ -n "${HOSTS:-}" ] || die "--external needs HOSTS (and PIDS, RF, LEVELS)"
      echo "## $HOSTS (RF=${RF:-1})"
      echo
      matrix "$HOSTS" "${PIDS:-}" "${RF:-1}" "${LEVELS:-ONE QUORUM ALL}"
      ;;
    *) die "unknown setup '$setup' (single, cluster)" ;;
  esac
  echo
done
note "end $(date -u +%Y-%m-%dT%H:%M:%SZ), load average: $(load_avg)"
