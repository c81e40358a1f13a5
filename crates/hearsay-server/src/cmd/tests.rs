//! Command semantics against the in-memory store: replies compared byte-for-byte with what
//! Redis 7 sends.

use super::*;
use crate::config::NodeConfig;
use crate::resp::{Frame, FrameLimits, Protocol, decode};
use crate::store::memory::MemoryStore;
use std::net::SocketAddr;
use std::sync::Arc;

struct Harness {
    state: ServerState,
    store: Arc<MemoryStore>,
    session: Session,
}

impl Harness {
    fn new(password: Option<&str>) -> Harness {
        let store = Arc::new(MemoryStore::new(1_000_000));
        let mut config = NodeConfig::default();
        config.server.password = password.map(str::to_string);
        let state = ServerState::new(store.clone(), config);
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let info = Arc::new(ClientInfo::new(state.next_client_id(), addr, addr));
        state.register(info.clone());
        let session = Session::new(info, password.is_some());
        Harness {
            state,
            store,
            session,
        }
    }

    fn raw(&mut self, args: &[&str]) -> Vec<u8> {
        let args = args
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        let mut out = Reply::new(self.session.proto);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(execute(&self.state, &mut self.session, args, &mut out));
        out.buf.to_vec()
    }

    fn run(&mut self, args: &[&str]) -> Frame {
        let raw = self.raw(args);
        let (f, used) = decode(&raw, &FrameLimits::default()).unwrap().unwrap();
        assert_eq!(used, raw.len(), "exactly one reply");
        f
    }

    fn advance_ms(&self, ms: u64) {
        self.store
            .now_ms
            .fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

fn bulk(s: &str) -> Frame {
    Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}
fn err(s: &str) -> Frame {
    Frame::Error(Bytes::copy_from_slice(s.as_bytes()))
}
fn ok() -> Frame {
    Frame::Simple(Bytes::from_static(b"OK"))
}

#[test]
fn get_set_and_options() {
    let mut h = Harness::new(None);
    assert_eq!(h.run(&["GET", "a"]), Frame::Null);
    assert_eq!(h.run(&["SET", "a", "1"]), ok());
    assert_eq!(h.run(&["get", "a"]), bulk("1"));
    assert_eq!(h.run(&["SET", "a", "2", "NX"]), Frame::Null);
    assert_eq!(h.run(&["SET", "b", "2", "XX"]), Frame::Null);
    assert_eq!(h.run(&["SET", "a", "3", "XX", "GET"]), bulk("1"));
    assert_eq!(h.run(&["SET", "a", "4", "NX", "GET"]), bulk("3"));
    assert_eq!(h.run(&["SET", "c", "1", "GET"]), Frame::Null);
    assert_eq!(
        h.run(&["SET", "a", "b", "nx", "xx"]),
        err("ERR syntax error")
    );
    assert_eq!(
        h.run(&["SET", "a", "b", "ex", "10", "px", "100"]),
        err("ERR syntax error")
    );
    assert_eq!(
        h.run(&["SET", "a", "b", "keepttl", "ex", "10"]),
        err("ERR syntax error")
    );
    assert_eq!(h.run(&["SET", "a", "b", "foo"]), err("ERR syntax error"));
    assert_eq!(h.run(&["SET", "a", "b", "ex"]), err("ERR syntax error"));
    assert_eq!(
        h.run(&["SET", "a", "b", "ex", "0"]),
        err("ERR invalid expire time in 'set' command")
    );
    assert_eq!(
        h.run(&["SET", "a", "b", "ex", "-1"]),
        err("ERR invalid expire time in 'set' command")
    );
    assert_eq!(
        h.run(&["SET", "a", "b", "ex", "abc"]),
        err("ERR value is not an integer or out of range")
    );
    assert_eq!(
        h.run(&["SET", "a", "b", "ex", "99999999999999999"]),
        err("ERR invalid expire time in 'set' command")
    );
    assert_eq!(
        h.run(&["SET", "a"]),
        err("ERR wrong number of arguments for 'set' command")
    );
    assert_eq!(
        h.run(&["GET", "a", "b"]),
        err("ERR wrong number of arguments for 'get' command")
    );
}

#[test]
fn ttl_family() {
    let mut h = Harness::new(None);
    assert_eq!(h.run(&["TTL", "k"]), Frame::Integer(-2));
    h.run(&["SET", "k", "v"]);
    assert_eq!(h.run(&["TTL", "k"]), Frame::Integer(-1));
    assert_eq!(h.run(&["EXPIRE", "k", "10"]), Frame::Integer(1));
    assert_eq!(h.run(&["TTL", "k"]), Frame::Integer(10));
    assert_eq!(h.run(&["PTTL", "k"]), Frame::Integer(10_000));
    assert_eq!(h.run(&["EXPIRE", "k", "5", "GT"]), Frame::Integer(0));
    assert_eq!(h.run(&["EXPIRE", "k", "5", "LT"]), Frame::Integer(1));
    assert_eq!(h.run(&["EXPIRE", "k", "50", "NX"]), Frame::Integer(0));
    assert_eq!(h.run(&["EXPIRE", "k", "50", "XX"]), Frame::Integer(1));
    assert_eq!(
        h.run(&["EXPIRE", "k", "1", "nx", "xx"]),
        err("ERR NX and XX, GT or LT options at the same time are not compatible")
    );
    assert_eq!(
        h.run(&["EXPIRE", "k", "1", "gt", "lt"]),
        err("ERR GT and LT options at the same time are not compatible")
    );
    assert_eq!(
        h.run(&["EXPIRE", "k", "1", "foo"]),
        err("ERR Unsupported option foo")
    );
    assert_eq!(
        h.run(&["EXPIRE", "k", "abc"]),
        err("ERR value is not an integer or out of range")
    );
    assert_eq!(
        h.run(&["EXPIRE", "k", "99999999999999999"]),
        err("ERR invalid expire time in 'expire' command")
    );
    assert_eq!(h.run(&["PERSIST", "k"]), Frame::Integer(1));
    assert_eq!(h.run(&["PERSIST", "k"]), Frame::Integer(0));
    assert_eq!(h.run(&["TTL", "k"]), Frame::Integer(-1));
    // Persistent keys count as an infinite TTL: GT never applies, LT always does.
    assert_eq!(h.run(&["EXPIRE", "k", "100", "GT"]), Frame::Integer(0));
    assert_eq!(h.run(&["PEXPIRE", "k", "1500"]), Frame::Integer(1));
    assert_eq!(h.run(&["TTL", "k"]), Frame::Integer(2));
    h.advance_ms(1_499);
    assert_eq!(h.run(&["PTTL", "k"]), Frame::Integer(1));
    h.advance_ms(1);
    assert_eq!(h.run(&["GET", "k"]), Frame::Null);
    h.run(&["SET", "k", "v"]);
    let at = (crate::store::Store::now_ms(&*h.store) / 1000 + 100).to_string();
    assert_eq!(h.run(&["EXPIREAT", "k", &at]), Frame::Integer(1));
    assert!(matches!(h.run(&["TTL", "k"]), Frame::Integer(99 | 100)));
    // A time in the past deletes the key and still answers 1.
    assert_eq!(h.run(&["PEXPIREAT", "k", "1"]), Frame::Integer(1));
    assert_eq!(h.run(&["EXISTS", "k"]), Frame::Integer(0));
    assert_eq!(h.run(&["EXPIRE", "missing", "10"]), Frame::Integer(0));
}

#[test]
fn setex_getex_getdel_setnx() {
    let mut h = Harness::new(None);
    assert_eq!(h.run(&["SETEX", "a", "10", "v"]), ok());
    assert_eq!(h.run(&["TTL", "a"]), Frame::Integer(10));
    assert_eq!(
        h.run(&["SETEX", "a", "0", "v"]),
        err("ERR invalid expire time in 'setex' command")
    );
    assert_eq!(
        h.run(&["PSETEX", "a", "0", "v"]),
        err("ERR invalid expire time in 'psetex' command")
    );
    assert_eq!(
        h.run(&["SETEX", "a", "abc", "v"]),
        err("ERR value is not an integer or out of range")
    );
    assert_eq!(h.run(&["PSETEX", "b", "2500", "v"]), ok());
    assert_eq!(h.run(&["PTTL", "b"]), Frame::Integer(2500));
    assert_eq!(h.run(&["GETEX", "b", "PERSIST"]), bulk("v"));
    assert_eq!(h.run(&["TTL", "b"]), Frame::Integer(-1));
    assert_eq!(h.run(&["GETEX", "b", "EX", "7"]), bulk("v"));
    assert_eq!(h.run(&["TTL", "b"]), Frame::Integer(7));
    assert_eq!(h.run(&["GETEX", "b"]), bulk("v"));
    assert_eq!(
        h.run(&["GETEX", "b", "persist", "ex", "10"]),
        err("ERR syntax error")
    );
    assert_eq!(h.run(&["GETEX", "b", "foo"]), err("ERR syntax error"));
    assert_eq!(
        h.run(&["GETEX", "b", "ex", "0"]),
        err("ERR invalid expire time in 'getex' command")
    );
    assert_eq!(h.run(&["GETEX", "nope", "ex", "5"]), Frame::Null);
    assert_eq!(h.run(&["GETDEL", "b"]), bulk("v"));
    assert_eq!(h.run(&["GETDEL", "b"]), Frame::Null);
    assert_eq!(h.run(&["SETNX", "n", "1"]), Frame::Integer(1));
    assert_eq!(h.run(&["SETNX", "n", "2"]), Frame::Integer(0));
    assert_eq!(h.run(&["GET", "n"]), bulk("1"));
    // KEEPTTL keeps the expiry of the version it replaces.
    h.run(&["SET", "t", "1", "EX", "100"]);
    h.run(&["SET", "t", "2", "KEEPTTL"]);
    assert_eq!(h.run(&["TTL", "t"]), Frame::Integer(100));
    h.run(&["SET", "t", "3"]);
    assert_eq!(h.run(&["TTL", "t"]), Frame::Integer(-1));
}

#[test]
fn multi_key_commands() {
    let mut h = Harness::new(None);
    assert_eq!(h.run(&["MSET", "a", "1", "b", "2"]), ok());
    assert_eq!(
        h.run(&["MSET", "a"]),
        err("ERR wrong number of arguments for 'mset' command")
    );
    assert_eq!(
        h.run(&["MSET", "a", "1", "b"]),
        err("ERR wrong number of arguments for 'mset' command")
    );
    assert_eq!(
        h.run(&["MGET", "a", "x", "b"]),
        Frame::Array(vec![bulk("1"), Frame::Null, bulk("2")])
    );
    assert_eq!(h.run(&["EXISTS", "a", "a", "x"]), Frame::Integer(2));
    assert_eq!(h.run(&["DEL", "a", "a", "x"]), Frame::Integer(1));
    assert_eq!(h.run(&["UNLINK", "b"]), Frame::Integer(1));
    assert_eq!(h.run(&["DBSIZE"]), Frame::Integer(0));
    assert_eq!(
        h.run(&["TYPE", "b"]),
        Frame::Simple(Bytes::from_static(b"none"))
    );
    h.run(&["SET", "b", "x"]);
    assert_eq!(
        h.run(&["TYPE", "b"]),
        Frame::Simple(Bytes::from_static(b"string"))
    );
    assert_eq!(h.run(&["DBSIZE"]), Frame::Integer(1));
}

#[test]
fn scan_visits_every_key_once_in_token_order() {
    let mut h = Harness::new(None);
    for i in 0..57 {
        h.run(&["SET", &format!("key:{i}"), "v"]);
    }
    h.run(&["SET", "other", "v"]);
    let mut cursor = "0".to_string();
    let mut seen = Vec::new();
    for _ in 0..100 {
        let Frame::Array(v) = h.run(&["SCAN", &cursor, "MATCH", "key:*", "COUNT", "7"]) else {
            panic!()
        };
        let [Frame::Bulk(c), Frame::Array(keys)] = &v[..] else {
            panic!("{v:?}")
        };
        cursor = String::from_utf8(c.to_vec()).unwrap();
        for k in keys {
            let Frame::Bulk(k) = k else { panic!() };
            seen.push(String::from_utf8(k.to_vec()).unwrap());
        }
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(cursor, "0");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 57);
    assert_eq!(seen.len(), 57);
    let tokens: Vec<_> = seen
        .iter()
        .map(|k| hearsay_ring::token_of(k.as_bytes()))
        .collect();
    assert!(tokens.windows(2).all(|w| w[0] <= w[1]), "token order");
    assert_eq!(h.run(&["SCAN", "abc"]), err("ERR invalid cursor"));
    assert_eq!(h.run(&["SCAN", "0", "COUNT", "0"]), err("ERR syntax error"));
    assert_eq!(
        h.run(&["SCAN", "0", "COUNT", "abc"]),
        err("ERR value is not an integer or out of range")
    );
    assert_eq!(h.run(&["SCAN", "0", "foo"]), err("ERR syntax error"));
    let Frame::Array(v) = h.run(&["SCAN", "0", "COUNT", "1000", "TYPE", "hash"]) else {
        panic!()
    };
    assert_eq!(v[1], Frame::Array(vec![]));
}

#[test]
fn connection_commands_and_errors() {
    let mut h = Harness::new(None);
    assert_eq!(h.run(&["PING"]), Frame::Simple(Bytes::from_static(b"PONG")));
    assert_eq!(h.run(&["PING", "hi"]), bulk("hi"));
    assert_eq!(
        h.run(&["PING", "a", "b"]),
        err("ERR wrong number of arguments for 'ping' command")
    );
    assert_eq!(h.run(&["ECHO", "x"]), bulk("x"));
    assert_eq!(h.run(&["SELECT", "0"]), ok());
    assert_eq!(h.run(&["SELECT", "1"]), err("ERR DB index is out of range"));
    assert_eq!(
        h.run(&["SELECT", "abc"]),
        err("ERR value is not an integer or out of range")
    );
    assert_eq!(
        h.run(&["foo", "a", "b"]),
        err("ERR unknown command 'foo', with args beginning with: 'a' 'b' ")
    );
    assert_eq!(
        h.run(&["CONFIG", "foo"]),
        err("ERR unknown subcommand 'foo'. Try CONFIG HELP.")
    );
    assert_eq!(
        h.run(&["CONFIG", "GET"]),
        err("ERR wrong number of arguments for 'config|get' command")
    );
    assert_eq!(
        h.run(&["CLIENT", "foo"]),
        err("ERR unknown subcommand 'foo'. Try CLIENT HELP.")
    );
    assert_eq!(
        h.run(&["COMMAND", "COUNT", "x"]),
        err("ERR wrong number of arguments for 'command|count' command")
    );
    assert_eq!(
        h.run(&["AUTH", "foo"]),
        err(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"
        )
    );
    assert_eq!(
        h.run(&["AUTH", "a", "b"]),
        err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert_eq!(
        h.run(&["HELLO", "4"]),
        err("NOPROTO unsupported protocol version")
    );
    assert_eq!(
        h.run(&["HELLO", "abc"]),
        err("ERR Protocol version is not an integer or out of range")
    );
    assert_eq!(
        h.run(&["HELLO", "3", "foo"]),
        err("ERR Syntax error in HELLO option 'foo'")
    );
    let raw = h.raw(&["HELLO", "3"]);
    assert!(
        raw.starts_with(b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(h.session.proto, Protocol::Resp3);
    assert_eq!(h.raw(&["GET", "nothing"]), b"_\r\n");
    let Frame::Map(m) = h.run(&["CONFIG", "GET", "save"]) else {
        panic!()
    };
    assert_eq!(m, vec![(bulk("save"), bulk(""))]);
    let Frame::Map(m) = h.run(&["CONFIG", "GET", "append*", "SYNC-MODE"]) else {
        panic!()
    };
    assert_eq!(m.len(), 3);
    assert_eq!(h.run(&["QUIT"]), ok());
}

#[test]
fn client_and_introspection() {
    let mut h = Harness::new(None);
    assert_eq!(h.run(&["CLIENT", "ID"]), Frame::Integer(1));
    assert_eq!(h.run(&["CLIENT", "GETNAME"]), Frame::Null);
    assert_eq!(
        h.run(&["CLIENT", "SETNAME", "a b"]),
        err("ERR Client names cannot contain spaces, newlines or special characters.")
    );
    assert_eq!(h.run(&["CLIENT", "SETNAME", "app"]), ok());
    assert_eq!(h.run(&["CLIENT", "GETNAME"]), bulk("app"));
    assert_eq!(h.run(&["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]), ok());
    assert_eq!(
        h.run(&["CLIENT", "SETINFO", "foo", "bar"]),
        err("ERR Unrecognized option 'foo'")
    );
    let Frame::Bulk(list) = h.run(&["CLIENT", "LIST"]) else {
        panic!()
    };
    let list = String::from_utf8(list.to_vec()).unwrap();
    assert!(
        list.starts_with("id=1 addr=127.0.0.1:1 ")
            && list.contains("name=app")
            && list.contains("lib-name=redis-py"),
        "{list}"
    );
    assert_eq!(
        h.run(&["CLIENT", "LIST", "TYPE", "foo"]),
        err("ERR Unknown client type 'foo'")
    );
    let Frame::Integer(n) = h.run(&["COMMAND", "COUNT"]) else {
        panic!()
    };
    assert_eq!(n as usize, COMMANDS.len());
    let Frame::Array(infos) = h.run(&["COMMAND", "INFO", "get", "nope"]) else {
        panic!()
    };
    assert_eq!(infos[1], Frame::Null);
    let Frame::Array(get) = &infos[0] else {
        panic!()
    };
    assert_eq!(get[0], bulk("get"));
    assert_eq!(get[1], Frame::Integer(2));
    let Frame::Array(all) = h.run(&["COMMAND"]) else {
        panic!()
    };
    assert_eq!(all.len(), COMMANDS.len());
    let Frame::Array(docs) = h.run(&["COMMAND", "DOCS", "set"]) else {
        panic!()
    };
    assert_eq!(docs[0], bulk("set"));
    let Frame::Bulk(info) = h.run(&["INFO"]) else {
        panic!()
    };
    let info = String::from_utf8(info.to_vec()).unwrap();
    for needle in [
        "# Server\r\n",
        "redis_version:",
        "loading:0",
        "role:master",
        "# Keyspace",
        "# Clients",
        "# Memory",
        "# Stats",
        "# Persistence",
    ] {
        assert!(info.contains(needle), "{needle} in {info}");
    }
    let Frame::Bulk(info) = h.run(&["INFO", "clients"]) else {
        panic!()
    };
    assert!(!String::from_utf8_lossy(&info).contains("# Server"));
    let Frame::Array(t) = h.run(&["TIME"]) else {
        panic!()
    };
    assert_eq!(t.len(), 2);
}

#[test]
fn auth_gates_everything_but_auth_hello_quit() {
    let mut h = Harness::new(Some("s3cret"));
    assert_eq!(h.run(&["GET", "a"]), err("NOAUTH Authentication required."));
    assert_eq!(h.run(&["PING"]), err("NOAUTH Authentication required."));
    // Unknown commands and arity are reported before authentication, as Redis does.
    assert_eq!(
        h.run(&["GET"]),
        err("ERR wrong number of arguments for 'get' command")
    );
    assert_eq!(
        h.run(&["HELLO", "3"]),
        err(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"
        )
    );
    assert_eq!(
        h.run(&["AUTH", "wrong"]),
        err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert_eq!(
        h.run(&["HELLO", "3", "AUTH", "default", "wrong"]),
        err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert!(matches!(
        h.run(&["HELLO", "3", "AUTH", "default", "s3cret", "SETNAME", "x"]),
        Frame::Map(_)
    ));
    assert_eq!(h.run(&["GET", "a"]), Frame::Null);
    let mut h = Harness::new(Some("s3cret"));
    assert_eq!(h.run(&["AUTH", "s3cret"]), ok());
    assert_eq!(h.run(&["PING"]), Frame::Simple(Bytes::from_static(b"PONG")));
}
