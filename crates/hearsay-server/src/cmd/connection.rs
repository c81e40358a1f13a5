//! Connection commands: PING, HELLO, AUTH, SELECT (ECHO and QUIT are one-liners in `mod.rs`).

use super::{NOT_INTEGER_ERR, ServerState, Session, parse_int};
use crate::resp::{Protocol, Reply};
use bytes::Bytes;
use std::sync::atomic::Ordering;

/// Redis's version we claim to be compatible with (INFO, HELLO). Clients switch features on
/// it; 7.2 is the first with CLIENT SETINFO, which redis-py sends.
pub const REDIS_VERSION: &str = "7.2.4";

pub fn ping(args: Vec<Bytes>, out: &mut Reply) {
    match args.get(1) {
        Some(msg) if args.len() == 2 => out.bulk(msg),
        Some(_) => super::wrong_arity(out, "ping"),
        None => out.simple("PONG"),
    }
}

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// Checks credentials for the only user, `default`. Without a configured password, `default`
/// accepts any password (Redis's `nopass`).
fn check(state: &ServerState, user: &[u8], pass: &[u8]) -> bool {
    if user != b"default" {
        return false;
    }
    match &state.config.server.password {
        None => true,
        Some(p) => constant_time_eq(p.as_bytes(), pass),
    }
}

/// Compares without an early exit, so response timing does not reveal a password prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn auth(state: &ServerState, s: &mut Session, args: Vec<Bytes>, out: &mut Reply) {
    match args.len() {
        2 => {
            if state.config.server.password.is_none() {
                return out.error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
            }
            if check(state, b"default", &args[1]) {
                s.authenticated = true;
                out.ok();
            } else {
                out.error(WRONGPASS);
            }
        }
        3 => {
            if check(state, &args[1], &args[2]) {
                s.authenticated = true;
                out.ok();
            } else {
                out.error(WRONGPASS);
            }
        }
        _ => out.error(super::SYNTAX_ERR),
    }
}

/// Client names (and CLIENT SETINFO values) may not hold spaces or non-printable bytes.
pub fn valid_name(b: &[u8]) -> bool {
    b.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

pub const BAD_NAME: &str =
    "ERR Client names cannot contain spaces, newlines or special characters.";

pub fn hello(state: &ServerState, s: &mut Session, args: Vec<Bytes>, out: &mut Reply) {
    let mut ver = None;
    if let Some(v) = args.get(1) {
        match parse_int(v) {
            None => return out.error("ERR Protocol version is not an integer or out of range"),
            Some(v) if !(2..=3).contains(&v) => {
                return out.error("NOPROTO unsupported protocol version");
            }
            Some(v) => ver = Some(v),
        }
    }
    let mut creds = None;
    let mut name = None;
    let mut j = 2;
    while j < args.len() {
        let more = args.len() - 1 - j;
        let opt = &args[j];
        if opt.eq_ignore_ascii_case(b"auth") && more >= 2 {
            creds = Some((args[j + 1].clone(), args[j + 2].clone()));
            j += 2;
        } else if opt.eq_ignore_ascii_case(b"setname") && more >= 1 {
            name = Some(args[j + 1].clone());
            j += 1;
        } else {
            return out.error(&format!(
                "ERR Syntax error in HELLO option '{}'",
                super::text(opt)
            ));
        }
        j += 1;
    }
    if let Some((user, pass)) = creds {
        if !check(state, &user, &pass) {
            return out.error(WRONGPASS);
        }
        s.authenticated = true;
    }
    if !s.authenticated {
        return out.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    if let Some(n) = name {
        if !valid_name(&n) {
            return out.error(BAD_NAME);
        }
        *s.info.name.lock() = if n.is_empty() {
            None
        } else {
            Some(super::text(&n))
        };
    }
    if let Some(v) = ver {
        s.proto = if v == 3 {
            Protocol::Resp3
        } else {
            Protocol::Resp2
        };
        out.proto = s.proto;
        s.info.resp.store(v as u8, Ordering::Relaxed);
    }
    out.map(7);
    out.bulk(b"server");
    out.bulk(b"redis");
    out.bulk(b"version");
    out.bulk(REDIS_VERSION.as_bytes());
    out.bulk(b"proto");
    out.int(s.proto.version());
    out.bulk(b"id");
    out.int(s.info.id as i64);
    out.bulk(b"mode");
    out.bulk(b"standalone");
    out.bulk(b"role");
    out.bulk(b"master");
    out.bulk(b"modules");
    out.array(0);
}

pub fn select(args: Vec<Bytes>, out: &mut Reply) {
    match parse_int(&args[1]) {
        None => out.error(NOT_INTEGER_ERR),
        // One logical database: keyspaces, not numbered databases, separate data here.
        Some(0) => out.ok(),
        Some(_) => out.error("ERR DB index is out of range"),
    }
}
