#!/usr/bin/env bash
# Gossip simulation: the real Gossiper in the deterministic simulator (hearsay-sim's
# gossip-bench), from a converged cluster: rounds until a new state is everywhere (full
# protocol and anti-entropy only) against the ideal epidemics, bytes per node per round, time
# from a crash to SUSPECT/DOWN everywhere, false SUSPECT/DOWN. Runs the configurations of the
# table in docs/benchmarks.md, "Gossip simulation", each with its published seed.
#
# Usage: bench/gossip.sh [options]
#   --sizes "N..."   cluster sizes among 100, 1000, 10000 (default "100 1000"; 10000 takes
#                    ~8 GiB of RAM and ~8 minutes: the simulator holds N^2 member records)
#   --trials N       dissemination trials per configuration (default: 20; 5 at N = 10000)
#   --crashes N      crashes per configuration (default: 5; 2 at N = 10000)
#   --ideals         also the ideal epidemics alone (1000 trials each, every size given)
#   -h, --help       this text
#
# Prints Markdown tables. Every figure but the wall-clock column is virtual time or a count:
# it does not depend on the machine. The other probes of gossip-bench (GOSSIP_BENCH_MONITOR_PROBE,
# _SPREAD_PROBE, _CRASH_PROBE, _MEMORY_PROBE) and their commands: docs/bench-history/gossip-2026-12-04.md.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZES="100 1000"
TRIALS=
CRASHES=
IDEALS=
while [ $# -gt 0 ]; do
  case "$1" in
    --sizes) SIZES=$2; shift 2 ;;
    --trials) TRIALS=$2; shift 2 ;;
    --crashes) CRASHES=$2; shift 2 ;;
    --ideals) IDEALS=1; shift ;;
    -h | --help) usage_from_header; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
need cargo
note "building gossip-bench (cargo build --release -p hearsay-sim --bin gossip-bench)"
(cd "$REPO_ROOT" && cargo build --release -q -p hearsay-sim --bin gossip-bench) >&2
B=$(cargo_target_dir)/release/gossip-bench

note "start $(date -u +%Y-%m-%dT%H:%M:%SZ), load average: $(load_avg)"
for n in $SIZES; do
  case "$n" in
    100) "$B" --nodes 100 --trials "${TRIALS:-20}" --crashes "${CRASHES:-5}" --seed 3 ;;
    1000)
      "$B" --nodes 1000 --modes pushpull --loss 0,0.1 --trials "${TRIALS:-20}" --crashes "${CRASHES:-5}" --seed 5
      "$B" --nodes 1000 --modes push,pull --loss 0,0.1 --trials "${TRIALS:-20}" --crashes "${CRASHES:-5}" --seed 5
      ;;
    10000) "$B" --nodes 10000 --modes pushpull --loss 0,0.1 --trials "${TRIALS:-5}" --crashes "${CRASHES:-2}" --seed 7 ;;
    *) die "size $n: the published configurations are 100, 1000 and 10000" ;;
  esac
done
if [ -n "$IDEALS" ]; then
  GOSSIP_BENCH_IDEALS=1 "$B" --nodes "$(tr ' ' ',' <<<"$SIZES")" --loss 0,0.1
fi
note "end $(date -u +%Y-%m-%dT%H:%M:%SZ), load average: $(load_avg)"
