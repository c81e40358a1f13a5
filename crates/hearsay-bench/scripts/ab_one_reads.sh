#!/bin/bash
# A/B: ONE reads through all three nodes of a 3-node RF=3 cluster, two builds alternated:
# edit the two `run <binary> <label>` pairs at the bottom. Needs jq and redis-cli.
set -u
run() {
  B=$1; D=/tmp/ab/c; rm -rf $D; mkdir -p $D; : > /tmp/ab/pids
  for i in 1 2 3; do
    NO_COLOR=1 $B server --listen 127.0.0.1:3${i}379 --admin-listen 127.0.0.1:3${i}380 --cluster-listen 127.0.0.1:3${i}381 \
      --seeds 127.0.0.1:31381 --data-dir $D/d$i --sync-mode periodic >$D/out$i 2>$D/err$i &
    echo $! >> /tmp/ab/pids
    if [ $i = 1 ]; then for t in $(seq 1 100); do grep -q listening $D/out1 && break; sleep 0.2; done; fi
  done
  for i in 1 2 3; do for t in $(seq 1 150); do grep -q listening $D/out$i && break; sleep 0.2; done; done
  for t in $(seq 1 100); do n=0; for p in 31379 32379 33379; do c=$(redis-cli -p $p MEMBERS | grep -c '^UN$'); [ "$c" = 3 ] && n=$((n+1)); done; [ $n = 3 ] && break; sleep 0.3; done
  H=127.0.0.1:31379,127.0.0.1:32379,127.0.0.1:33379
  $B bench --hosts $H --load --record-count 100000 --operations 1 --no-progress --concurrency 50 --consistency ALL >/dev/null
  for r in 1 2; do
    $B bench --hosts $H --record-count 100000 --workload c --distribution uniform --concurrency 50 --duration 8 --warmup 2 --json --no-progress --seed $r --consistency ONE $(for p in $(cat /tmp/ab/pids); do echo --server-pid $p; done) \
     | jq -r --arg b "$2" '.run as $x | "\($b) ONE read: \($x.ops_per_s|floor) ops/s p50 \($x.operations.read.p50_us) p99 \($x.operations.read.p99_us) server_cpu_s \($x.server_cpu_s) ops/core-s \($x.ops / $x.server_cpu_s | floor) errors \($x.errors)"'
  done
  for p in $(cat /tmp/ab/pids); do kill $p; done; for p in $(cat /tmp/ab/pids); do while kill -0 $p 2>/dev/null; do sleep 0.2; done; done
}
mkdir -p /tmp/ab
echo "start $(uptime)"
run /work/target-matrix/release/hearsay old
run /work/ci1/target/release/hearsay new
run /work/target-matrix/release/hearsay old
run /work/ci1/target/release/hearsay new
echo "end $(uptime)"
