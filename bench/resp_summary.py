#!/usr/bin/env python3
"""Summarises the CSV of bench/resp_vs_redis.sh (one file or several runs pooled).

Usage: bench/resp_summary.py RUN.csv [RUN.csv ...]

Prints a Markdown table: per pipeline, test and target, the median ops/s over all rounds of
all files, its range, the median p50 and p99, and, against redis-aof, the median (and mean)
of the per-round ratios (each target's ops/s divided by redis-aof's in the same round of the
same run) with how many rounds were at or above 1. The per-round ratio is the figure to
quote: absolute ops/s move with the box's load, ratios within one round much less.
"""
import csv
import statistics
import sys
from collections import defaultdict

PEER = "redis-aof"


def main(paths):
    if not paths or paths[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if paths else 2
    rows = []  # (run, round, pipeline, test, target, rps, p50, p99)
    for run, path in enumerate(paths):
        with open(path, newline="") as f:
            lines = [l for l in f if l.strip() and not l.startswith("#")]
        for r in csv.DictReader(lines):
            rows.append((run, r["round"], int(r["pipeline"]), r["test"], r["target"],
                         float(r["rps"]), float(r["p50_ms"]), float(r["p99_ms"])))
    if not rows:
        print("no results", file=sys.stderr)
        return 1
    peer = {(run, rnd, p, t): rps for run, rnd, p, t, tgt, rps, _, _ in rows if tgt == PEER}
    by_line = defaultdict(list)
    order = []
    for run, rnd, p, t, tgt, rps, p50, p99 in rows:
        key = (p, t, tgt)
        if key not in by_line:
            order.append(key)
        ratio = rps / peer[(run, rnd, p, t)] if (run, rnd, p, t) in peer else None
        by_line[key].append((rps, p50, p99, ratio))
    targets = []
    for _, _, tgt in order:
        if tgt not in targets:
            targets.append(tgt)
    print(f"| pipeline | test | target | ops/s (median) | range | p50 ms | p99 ms "
          f"| vs {PEER}: median of per-round ratios (mean), rounds >= 1 |")
    print("|---|---|---|---|---|---|---|---|")
    for p, t in sorted({(p, t) for p, t, _ in order}, key=lambda x: (x[0], x[1] != "SET")):
        for tgt in targets:
            v = by_line.get((p, t, tgt))
            if not v:
                continue
            rps = [x[0] for x in v]
            ratios = [x[3] for x in v if x[3] is not None]
            if tgt == PEER:
                vs = "1.00"
            elif ratios:
                vs = (f"{statistics.median(ratios):.2f} ({statistics.mean(ratios):.2f}), "
                      f"{sum(x >= 1 for x in ratios)} of {len(ratios)}")
            else:
                vs = "-"
            print(f"| {p} | {t} | {tgt} | {statistics.median(rps):,.0f} "
                  f"| {min(rps):,.0f}–{max(rps):,.0f} "
                  f"| {statistics.median(x[1] for x in v):.3f} "
                  f"| {statistics.median(x[2] for x in v):.3f} | {vs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
