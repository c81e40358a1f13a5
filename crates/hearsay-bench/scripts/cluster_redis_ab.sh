#!/bin/bash
# A fresh 3-node cluster (RF=3, periodic sync) of BIN on loopback ports 31379-33381, then
# redis-benchmark SET/GET at P1 and P16 through node 1 (default level ONE); CSV lines tagged TAG.
# usage: cluster_redis_ab.sh BIN TAG   (alternate two builds: A B A B)
BIN=$1; TAG=$2; D=/tmp/cab-$TAG; rm -rf $D; mkdir -p $D
PIDS=""
for i in 1 2 3; do
  $BIN server --listen 127.0.0.1:3${i}379 --admin-listen 127.0.0.1:3${i}380 --cluster-listen 127.0.0.1:3${i}381 \
    --seeds 127.0.0.1:31381 --data-dir $D/d$i --sync-mode periodic > $D/log$i 2>&1 &
  PIDS="$PIDS $!"
done
for i in $(seq 1 100); do
  n=$(redis-cli -p 31379 MEMBERS 2>/dev/null | grep -c UN); [ "$n" -ge 3 ] && break; sleep 0.2
done
for p in 1 16; do
  redis-benchmark -p 31379 -t set,get -c 50 -n 100000 -r 100000 -d 100 -P $p --csv 2>/dev/null | sed "s/^/$TAG,P$p,/" | grep -v '"test"'
done
kill $PIDS; wait
