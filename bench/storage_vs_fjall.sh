#!/usr/bin/env bash
# Storage engine vs fjall: runs the criterion-free bench crates/hearsay-storage/benches/
# engine_vs_fjall.rs (each engine in its own child process of the same binary, rounds in
# alternating order, medians with [min-max]); prints a Markdown table of both engines and
# hearsay / fjall per line. See docs/benchmarks.md, "Storage engine vs fjall".
#
# Usage: bench/storage_vs_fjall.sh [options]
#   --keys N       keys written (default 1000000)
#   --reads N      point reads per read phase (default 200000)
#   --rounds N     rounds, order alternated (default 2)
#   --dir DIR      where the engines write (default: target/bench-storage in this checkout,
#                  i.e. the checkout's disk; not /tmp, which may be a RAM disk elsewhere)
#   -h, --help     this text
#
# The experiment knobs of the bench (BENCH_KEEP_DIR, BENCH_TRACE_PHASES, BENCH_BLOCK_BYTES)
# pass through the environment; see the bench's header.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KEYS=1000000
READS=200000
ROUNDS=2
DIR=
while [ $# -gt 0 ]; do
  case "$1" in
    --keys) KEYS=$2; shift 2 ;;
    --reads) READS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --dir) DIR=$2; shift 2 ;;
    -h | --help) usage_from_header; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
need cargo
if [ -z "$DIR" ]; then DIR=$(cargo_target_dir)/bench-storage; fi
mkdir -p "$DIR"
note "start $(date -u +%Y-%m-%dT%H:%M:%SZ), load average: $(load_avg); engines write under $DIR"
cd "$REPO_ROOT"
BENCH_DIR=$DIR BENCH_KEYS=$KEYS BENCH_ROUNDS=$ROUNDS BENCH_READS=$READS \
  cargo bench -q -p hearsay-storage --bench engine_vs_fjall
note "end $(date -u +%Y-%m-%dT%H:%M:%SZ), load average: $(load_avg)"
