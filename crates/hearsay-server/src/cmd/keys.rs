//! Keyspace commands: DEL, UNLINK, EXISTS, EXPIRE and friends, TTL, PTTL, PERSIST, TYPE, SCAN,
//! DBSIZE.

use super::{NOT_INTEGER_ERR, SYNTAX_ERR, ServerState, Session, glob, parse_int, store_error};
use crate::resp::Reply;
use crate::store::{Action, Condition, Mutation, cursor_of, token_of_cursor};
use bytes::Bytes;

/// Most SCAN COUNT we honour: one call must stay a bounded amount of work and reply.
pub const SCAN_COUNT_MAX: usize = 100_000;

pub async fn del(state: &ServerState, s: &mut Session, args: Vec<Bytes>, out: &mut Reply) {
    let ms = args
        .into_iter()
        .skip(1)
        .map(|key| Mutation {
            key,
            want_previous: false,
            condition: Condition::Present,
            action: Action::Delete,
        })
        .collect();
    match state.store.write(&s.ctx, ms).await {
        Ok(outcomes) => out.int(outcomes.iter().filter(|o| o.applied).count() as i64),
        Err(e) => store_error(out, &e),
    }
}

pub async fn exists(state: &ServerState, s: &mut Session, args: Vec<Bytes>, out: &mut Reply) {
    let keys = args.into_iter().skip(1).collect();
    match state.store.get_many(&s.ctx, keys).await {
        Ok(v) => out.int(v.iter().filter(|e| e.is_some()).count() as i64),
        Err(e) => store_error(out, &e),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpireKind {
    Expire,
    PExpire,
    ExpireAt,
    PExpireAt,
}

impl ExpireKind {
    fn name(self) -> &'static str {
        match self {
            ExpireKind::Expire => "expire",
            ExpireKind::PExpire => "pexpire",
            ExpireKind::ExpireAt => "expireat",
            ExpireKind::PExpireAt => "pexpireat",
        }
    }
}

/// EXPIRE / PEXPIRE / EXPIREAT / PEXPIREAT key time [NX|XX|GT|LT], as Redis 7.
pub async fn expire(
    state: &ServerState,
    s: &mut Session,
    args: Vec<Bytes>,
    out: &mut Reply,
    kind: ExpireKind,
) {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in &args[3..] {
        let is = |s: &str| opt.eq_ignore_ascii_case(s.as_bytes());
        if is("nx") {
            nx = true;
        } else if is("xx") {
            xx = true;
        } else if is("gt") {
            gt = true;
        } else if is("lt") {
            lt = true;
        } else {
            return out.error(&format!("ERR Unsupported option {}", super::text(opt)));
        }
    }
    if nx && (xx || gt || lt) {
        return out.error("ERR NX and XX, GT or LT options at the same time are not compatible");
    }
    if gt && lt {
        return out.error("ERR GT and LT options at the same time are not compatible");
    }
    let Some(n) = parse_int(&args[2]) else {
        return out.error(NOT_INTEGER_ERR);
    };
    let invalid = || format!("ERR invalid expire time in '{}' command", kind.name());
    let seconds = matches!(kind, ExpireKind::Expire | ExpireKind::ExpireAt);
    if seconds && !(i64::MIN / 1000..=i64::MAX / 1000).contains(&n) {
        return out.error(&invalid());
    }
    let mut when = if seconds { n * 1000 } else { n };
    if matches!(kind, ExpireKind::Expire | ExpireKind::PExpire) {
        match when.checked_add(state.store.now_ms() as i64) {
            Some(w) => when = w,
            None => return out.error(&invalid()),
        }
    }
    // A time at or before the epoch is simply "in the past": the key is deleted.
    let at = when.max(0) as u64;
    let condition = if nx {
        Condition::PresentWithoutExpiry
    } else if xx && gt {
        Condition::ExpiryGreater(at)
    } else if xx && lt {
        Condition::ExpiryLess(at)
    } else if xx {
        Condition::PresentWithExpiry
    } else if gt {
        Condition::ExpiryGreater(at)
    } else if lt {
        Condition::ExpiryLess(at)
    } else {
        Condition::Present
    };
    let m = Mutation {
        key: args.into_iter().nth(1).unwrap_or_default(),
        want_previous: false,
        condition,
        action: Action::SetExpiry(Some(at)),
    };
    match state.store.write(&s.ctx, vec![m]).await {
        Ok(o) => out.int(i64::from(o.first().is_some_and(|o| o.applied))),
        Err(e) => store_error(out, &e),
    }
}

pub async fn ttl(
    state: &ServerState,
    s: &mut Session,
    args: Vec<Bytes>,
    out: &mut Reply,
    ms: bool,
) {
    let key = args.into_iter().nth(1).unwrap_or_default();
    match state.store.get(&s.ctx, key).await {
        Ok(None) => out.int(-2),
        Ok(Some(e)) => match e.expires_at_ms {
            None => out.int(-1),
            Some(at) => {
                let left = at.saturating_sub(state.store.now_ms()) as i64;
                out.int(if ms { left } else { (left + 500) / 1000 });
            }
        },
        Err(e) => store_error(out, &e),
    }
}

pub async fn persist(state: &ServerState, s: &mut Session, args: Vec<Bytes>, out: &mut Reply) {
    let m = Mutation {
        key: args.into_iter().nth(1).unwrap_or_default(),
        want_previous: false,
        condition: Condition::PresentWithExpiry,
        action: Action::SetExpiry(None),
    };
    match state.store.write(&s.ctx, vec![m]).await {
        Ok(o) => out.int(i64::from(o.first().is_some_and(|o| o.applied))),
        Err(e) => store_error(out, &e),
    }
}

pub async fn type_(state: &ServerState, s: &mut Session, args: Vec<Bytes>, out: &mut Reply) {
    let key = args.into_iter().nth(1).unwrap_or_default();
    match state.store.get(&s.ctx, key).await {
        Ok(Some(_)) => out.simple("string"),
        Ok(None) => out.simple("none"),
        Err(e) => store_error(out, &e),
    }
}

/// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]. The cursor is the next token in
/// ring order (see `store::cursor_of`), so a full iteration returns every key present
/// throughout exactly once, in token order.
pub async fn scan(state: &ServerState, s: &mut Session, args: Vec<Bytes>, out: &mut Reply) {
    let cursor = match std::str::from_utf8(&args[1])
        .ok()
        .and_then(|t| t.parse::<u64>().ok())
    {
        Some(c) => c,
        None => return out.error("ERR invalid cursor"),
    };
    let mut count: usize = 10;
    let mut pattern: Option<Bytes> = None;
    let mut type_filter: Option<Bytes> = None;
    let mut j = 2;
    while j < args.len() {
        let opt = &args[j];
        let has_next = j + 1 < args.len();
        if opt.eq_ignore_ascii_case(b"count") && has_next {
            match parse_int(&args[j + 1]) {
                None => return out.error(NOT_INTEGER_ERR),
                Some(n) if n < 1 => return out.error(SYNTAX_ERR),
                Some(n) => count = (n as u64).min(SCAN_COUNT_MAX as u64) as usize,
            }
        } else if opt.eq_ignore_ascii_case(b"match") && has_next {
            pattern = Some(args[j + 1].clone());
        } else if opt.eq_ignore_ascii_case(b"type") && has_next {
            type_filter = Some(args[j + 1].clone());
        } else {
            return out.error(SYNTAX_ERR);
        }
        j += 2;
    }
    let page = match state
        .store
        .scan(&s.ctx, token_of_cursor(cursor), count)
        .await
    {
        Ok(p) => p,
        Err(e) => return store_error(out, &e),
    };
    // Every value is a string; TYPE anything-else filters everything out.
    let type_ok = type_filter
        .as_ref()
        .is_none_or(|t| t.eq_ignore_ascii_case(b"string"));
    let keys: Vec<&Bytes> = page
        .entries
        .iter()
        .map(|(k, _)| k)
        .filter(|k| type_ok && pattern.as_ref().is_none_or(|p| glob::matches(p, k, false)))
        .collect();
    out.array(2);
    out.bulk(cursor_of(page.next).to_string().as_bytes());
    out.array(keys.len());
    for k in keys {
        out.bulk(k);
    }
}

pub async fn dbsize(state: &ServerState, s: &mut Session, out: &mut Reply) {
    match state.store.count_keys(&s.ctx).await {
        Ok(n) => out.int(n as i64),
        Err(e) => store_error(out, &e),
    }
}
