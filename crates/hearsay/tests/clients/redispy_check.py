"""redis-py 8 with its default RESP3 against Hearsay: set/get/expire/scan/pipeline.

Usage: python3 redispy_check.py PORT
"""
import sys
import time

import redis

port = int(sys.argv[1])
r = redis.Redis(host="127.0.0.1", port=port, protocol=3, decode_responses=True)
assert r.ping() is True
assert r.execute_command("HELLO", 3)["proto"] == 3
assert r.set("py:a", "1") is True
assert r.get("py:a") == "1"
assert r.get("py:missing") is None
assert r.set("py:a", "2", nx=True) is None
assert r.set("py:a", "3", xx=True, get=True) == "1"
assert r.expire("py:a", 100) is True
assert 99 <= r.ttl("py:a") <= 100
assert r.persist("py:a") is True
assert r.set("py:short", "x", px=200) is True
deadline = time.time() + 5
while r.exists("py:short") and time.time() < deadline:
    time.sleep(0.05)
assert not r.exists("py:short"), "key with a 200 ms TTL did not expire"

pipe = r.pipeline(transaction=False)
for i in range(100):
    pipe.set(f"py:p{i}", i)
for i in range(100):
    pipe.get(f"py:p{i}")
results = pipe.execute()
assert results[:100] == [True] * 100
assert results[100:] == [str(i) for i in range(100)]

keys = set(r.scan_iter(match="py:p*", count=13))
assert keys == {f"py:p{i}" for i in range(100)}, len(keys)
cursor, page = r.scan(0, match="py:*", count=5)
assert isinstance(cursor, int)

assert r.mset({"py:m1": "a", "py:m2": "b"}) is True
assert r.mget("py:m1", "py:nope", "py:m2") == ["a", None, "b"]
assert r.delete("py:m1", "py:m2", "py:nope") == 2
assert r.dbsize() >= 101
info = r.info()
assert info["role"] == "master" and info["loading"] == 0
assert r.config_get("appendonly")["appendonly"] in ("yes", "no")
assert r.client_id() > 0
assert r.client_setname("redispy") is True and r.client_getname() == "redispy"
try:
    r.execute_command("SET", "py:a")
    raise AssertionError("wrong arity accepted")
except redis.ResponseError as e:
    assert "wrong number of arguments for 'set' command" in str(e)
print("redis-py checks passed (redis-py %s, RESP3)" % redis.__version__)
