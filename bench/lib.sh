# shellcheck shell=bash
# Shared helpers of the benchmark scripts in bench/. Source it, then call bench_init once the
# arguments are parsed:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   ...parse arguments...
#   bench_init
#
# bench_init makes a temporary directory ($BENCH_TMP) and installs an EXIT trap that stops
# every process started through these helpers (by its PID: SIGTERM, then SIGKILL after a
# deadline) and removes the directory. Nothing here sleeps a fixed time to wait for a server:
# readiness is polled (PING, or `hearsay dev`'s "cluster ready") against a deadline.
#
# Environment:
#   HEARSAY          the hearsay binary to use (default: `cargo build --release -p hearsay` of
#                    this checkout, then ${CARGO_TARGET_DIR:-target}/release/hearsay)
#   READY_TIMEOUT_S  how long a server may take to answer PING (default 60)
#   STOP_TIMEOUT_S   how long a server may take to exit after SIGTERM (default 30)

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)
READY_TIMEOUT_S=${READY_TIMEOUT_S:-60}
STOP_TIMEOUT_S=${STOP_TIMEOUT_S:-30}
CLK_TCK=$(getconf CLK_TCK)
BENCH_TMP=
_BENCH_PIDS=()

die() { echo "$(basename "$0"): $*" >&2; exit 1; }
# note: a line on stderr (stdout carries the results).
note() { echo "# $*" >&2; }

# usage_from_header: prints the script's leading comment block (its --help text).
usage_from_header() {
  awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
}

# need CMD...: fails unless every command is on PATH.
need() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 ||
      die "needs '$c' on PATH (see docs/benchmarks.md, Prerequisites)"
  done
}

bench_init() {
  BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/hearsay-bench.XXXXXX")
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

bench_cleanup() {
  local i
  for ((i = ${#_BENCH_PIDS[@]} - 1; i >= 0; i--)); do
    stop_pid "${_BENCH_PIDS[$i]}"
  done
  _BENCH_PIDS=()
  if [ -n "$BENCH_TMP" ]; then rm -rf "$BENCH_TMP"; fi
}

# track_pid PID: stop this process when the script exits.
track_pid() { _BENCH_PIDS+=("$1"); }

# untrack_pid PID...: forget processes already stopped (so a reused PID is never signalled).
untrack_pid() {
  local keep=() p q drop
  for p in "${_BENCH_PIDS[@]}"; do
    drop=
    for q in "$@"; do if [ "$p" = "$q" ]; then drop=1; fi; done
    if [ -z "$drop" ]; then keep+=("$p"); fi
  done
  _BENCH_PIDS=("${keep[@]}")
}

# stop_pid PID: SIGTERM, wait up to STOP_TIMEOUT_S for it to exit, then SIGKILL.
stop_pid() {
  local pid=$1 deadline=$((SECONDS + STOP_TIMEOUT_S))
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      note "PID $pid still running ${STOP_TIMEOUT_S}s after SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
  done
  wait "$pid" 2>/dev/null || true
}

# stop_server PID: stops one server started by these helpers now, and forgets it.
stop_server() {
  stop_pid "$1"
  untrack_pid "$1"
}

# cargo_target_dir: cargo's target directory for this checkout ($CARGO_TARGET_DIR or target/),
# as an absolute path.
cargo_target_dir() {
  local target=${CARGO_TARGET_DIR:-target}
  case "$target" in /*) ;; *) target=$REPO_ROOT/$target ;; esac
  echo "$target"
}

# hearsay_binary [PATH]: prints the hearsay binary to use: PATH if given, else $HEARSAY, else
# a release build of this checkout (cargo's output goes to stderr; quick when up to date).
hearsay_binary() {
  local bin=${1:-${HEARSAY:-}}
  if [ -z "$bin" ]; then
    need cargo
    note "building hearsay (cargo build --release -p hearsay; set HEARSAY=path to skip)"
    (cd "$REPO_ROOT" && cargo build --release -q -p hearsay) >&2 || die "cargo build failed"
    bin=$(cargo_target_dir)/release/hearsay
  fi
  case "$bin" in */*) ;; *) bin=$(command -v "$bin" || echo "$bin") ;; esac
  [ -x "$bin" ] || die "no hearsay binary at $bin"
  echo "$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
}

# free_port: prints a TCP port on 127.0.0.1 that nothing is bound to now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# port_in_use HOST PORT: true if something accepts connections there.
port_in_use() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_ready HOST PORT PID LOG: polls PING until the server answers PONG; fails (printing the
# end of LOG) if PID exits first or READY_TIMEOUT_S passes.
wait_ready() {
  local host=$1 port=$2 pid=$3 log=$4 deadline=$((SECONDS + READY_TIMEOUT_S))
  until [ "$(redis-cli -h "$host" -p "$port" PING 2>/dev/null)" = PONG ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$log" >&2 || true
      die "the server on $host:$port (PID $pid) exited before it answered PING"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 "$log" >&2 || true
      die "no PONG from $host:$port within ${READY_TIMEOUT_S}s"
    fi
    sleep 0.05
  done
}

# start_hearsay NAME BIN PORT [server flags...]: a single-node `hearsay server` (LocalStore: no
# seeds; periodic commit-log sync, fsync every 1000 ms) on 127.0.0.1:PORT, its data and log
# under $BENCH_TMP/NAME. Sets STARTED_PID and STARTED_ADMIN (host:port of its admin API).
start_hearsay() {
  local name=$1 bin=$2 port=$3 admin
  shift 3
  need redis-cli
  if port_in_use 127.0.0.1 "$port"; then die "port $port is already in use"; fi
  admin=$(free_port)
  mkdir -p "$BENCH_TMP/$name"
  "$bin" server --data-dir "$BENCH_TMP/$name/data" --listen "127.0.0.1:$port" \
    --admin-listen "127.0.0.1:$admin" --cluster-listen 127.0.0.1:0 --sync-mode periodic "$@" \
    >"$BENCH_TMP/$name/log" 2>&1 &
  STARTED_PID=$!
  # shellcheck disable=SC2034 # read by the scripts that source this file
  STARTED_ADMIN=127.0.0.1:$admin
  track_pid "$STARTED_PID"
  wait_ready 127.0.0.1 "$port" "$STARTED_PID" "$BENCH_TMP/$name/log"
}

# start_redis NAME PORT aof|nopersist: redis-server on 127.0.0.1:PORT (a foreground child, so
# its PID is known without a pid file), its files under $BENCH_TMP/NAME. `aof`: appendonly
# yes, appendfsync everysec; `nopersist`: no RDB snapshots, no AOF. Sets STARTED_PID.
start_redis() {
  local name=$1 port=$2 mode=$3 persist
  case "$mode" in
    aof) persist=(--appendonly yes --appendfsync everysec) ;;
    nopersist) persist=(--appendonly no) ;;
    *) die "start_redis: the mode is aof or nopersist, not '$mode'" ;;
  esac
  need redis-server redis-cli
  if port_in_use 127.0.0.1 "$port"; then die "port $port is already in use"; fi
  mkdir -p "$BENCH_TMP/$name"
  redis-server --port "$port" --bind 127.0.0.1 --save '' "${persist[@]}" \
    --dir "$BENCH_TMP/$name" --daemonize no >"$BENCH_TMP/$name/log" 2>&1 &
  STARTED_PID=$!
  track_pid "$STARTED_PID"
  wait_ready 127.0.0.1 "$port" "$STARTED_PID" "$BENCH_TMP/$name/log"
}

# start_dev_cluster BIN N: `hearsay dev --nodes N --fresh` with its data under $BENCH_TMP/dev;
# waits for its "cluster ready" line (every node sees N members UN). Node i listens on
# 127.0.0.i:7379 (client), :7380 (admin), :7381 (cluster): `hearsay dev` has fixed ports, so
# those must be free. Sets DEV_PID, DEV_NODE_PIDS (space-separated, node 1 first) and
# DEV_HOSTS (comma-separated client addresses, node 1 first).
start_dev_cluster() {
  local bin=$1 n=$2 i log=$BENCH_TMP/dev.log deadline
  for ((i = 1; i <= n; i++)); do
    if port_in_use "127.0.0.$i" 7379; then
      die "127.0.0.$i:7379 is in use (another hearsay dev?); hearsay dev needs its fixed ports"
    fi
  done
  : >"$log" # exists before the child's redirection does, for the poll below
  "$bin" dev --nodes "$n" --data-dir "$BENCH_TMP/dev" --fresh >"$log" 2>&1 &
  DEV_PID=$!
  track_pid "$DEV_PID"
  deadline=$((SECONDS + READY_TIMEOUT_S + 60))
  until grep -q "cluster ready" "$log"; do
    if ! kill -0 "$DEV_PID" 2>/dev/null; then
      cat "$log" >&2
      die "hearsay dev exited before the cluster was ready"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      cat "$log" >&2
      die "hearsay dev: no 'cluster ready' within $((READY_TIMEOUT_S + 60))s"
    fi
    sleep 0.2
  done
  # The nodes are dev's children, started in order (node 1 first).
  DEV_NODE_PIDS=$(pgrep -P "$DEV_PID" | sort -n | tr '\n' ' ' | sed 's/ $//')
  if [ "$(wc -w <<<"$DEV_NODE_PIDS")" != "$n" ]; then
    die "hearsay dev has children '$DEV_NODE_PIDS', not $n nodes"
  fi
  # The EXIT trap stops in reverse order: hearsay dev first (it stops its nodes gracefully),
  # then whatever is left of the nodes.
  untrack_pid "$DEV_PID"
  for i in $DEV_NODE_PIDS; do track_pid "$i"; done
  track_pid "$DEV_PID"
  DEV_HOSTS=
  for ((i = 1; i <= n; i++)); do DEV_HOSTS=${DEV_HOSTS:+$DEV_HOSTS,}127.0.0.$i:7379; done
}

# stop_dev_cluster: stops the cluster of start_dev_cluster now (SIGTERM to hearsay dev).
stop_dev_cluster() {
  local p
  stop_pid "$DEV_PID"
  for p in $DEV_NODE_PIDS; do stop_pid "$p"; done
  # shellcheck disable=SC2086 # a list of PIDs
  untrack_pid "$DEV_PID" $DEV_NODE_PIDS
}

# cpu_ticks PID: user + system CPU of the process (all its threads) so far, in clock ticks.
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

# thread_ticks PID REGEX...: CPU ticks of the process's threads whose whole name (comm, cut to
# 15 characters by the kernel) matches each extended REGEX, one sum per regex, then the total
# of all threads. E.g. `thread_ticks $PID hearsay-io-0 hearsay-flush 'hearsay-compact|hearsay-idle-co'`.
thread_ticks() {
  local pid=$1 t v c all=0 i
  shift
  local pats=("$@") sums=()
  for i in "${!pats[@]}"; do sums[i]=0; done
  for t in /proc/"$pid"/task/*; do
    v=$(sed 's/^.*) //' "$t/stat" 2>/dev/null | awk '{print $12 + $13}') || continue
    [ -n "$v" ] || continue
    c=$(cat "$t/comm" 2>/dev/null || true)
    all=$((all + v))
    for i in "${!pats[@]}"; do
      if [[ $c =~ ^(${pats[$i]})$ ]]; then sums[i]=$((sums[i] + v)); fi
    done
  done
  echo "${sums[*]} $all"
}

# ticks_ms TICKS: clock ticks as milliseconds.
ticks_ms() { echo $(($1 * 1000 / CLK_TCK)); }

# peak_rss PID: the process's peak resident set (VmHWM), e.g. "209 MiB".
peak_rss() { awk '/^VmHWM/ { printf "%d MiB\n", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || true; }

# load_avg: the 1, 5 and 15 minute load averages.
load_avg() { cut -d' ' -f1-3 /proc/loadavg; }

# run_client OUT CMD...: runs a client command with its stdout in OUT (its stderr dropped) and
# prints the CPU it used in milliseconds (user + system, from the shell's `time`).
run_client() {
  local out=$1 t TIMEFORMAT='%3U %3S'
  shift
  t=$({ time "$@" >"$out" 2>/dev/null; } 2>&1) || die "client command failed: $*"
  awk '{ printf "%d\n", ($1 + $2) * 1000 }' <<<"$t"
}
