#!/usr/bin/env bash
# A scripted redis-cli session: each command's output is compared with what Redis prints.
# Usage: redis_cli_session.sh PORT
set -euo pipefail
PORT=${1:?usage: redis_cli_session.sh PORT}
fail=0
check() { # check "expected output" redis-cli args...
  local want=$1; shift
  local got
  got=$(redis-cli -p "$PORT" "$@" 2>&1)
  if [ "$got" != "$want" ]; then
    echo "FAIL: redis-cli $*"; echo "  want: $want"; echo "  got:  $got"; fail=1
  else
    echo "ok: $*"
  fi
}
check "PONG" ping
check "OK" set cli:a hello
check "hello" get cli:a
check "" get cli:missing
check "OK" set cli:t v EX 100
check "100" ttl cli:t
check "1" persist cli:t
check "-1" ttl cli:t
check "OK" mset cli:x 1 cli:y 2
check $'1\n\n2' mget cli:x cli:nope cli:y
check "2" del cli:x cli:y
check "0" exists cli:x
check "string" type cli:a
check "ERR wrong number of arguments for 'get' command" get
check "ERR syntax error" set cli:a b nx xx
check "ERR unknown command 'nosuch', with args beginning with: 'a' " nosuch a
check "save" config get save
check "OK" select 0
check "ERR DB index is out of range" select 1
# Interactive-style input on stdin (inline and quoting).
got=$(printf 'SET cli:q "a b"\nGET cli:q\n' | redis-cli -p "$PORT")
[ "$got" = $'OK\na b' ] || { echo "FAIL: stdin session: $got"; fail=1; }
# SCAN with --scan walks the whole keyspace by cursor.
n=$(redis-cli -p "$PORT" --scan --pattern 'cli:*' | sort | wc -l)
[ "$n" = 3 ] || { echo "FAIL: --scan found $n keys, want 3"; fail=1; }
redis-cli -p "$PORT" info server | grep -q '^redis_version:' || { echo "FAIL: info"; fail=1; }
redis-cli -p "$PORT" -3 hello 3 | grep -q proto || { echo "FAIL: hello 3"; fail=1; }
exit $fail
