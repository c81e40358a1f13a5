//! String commands: GET, SET (and its variants SETNX, SETEX, PSETEX), GETDEL, GETEX, MGET,
//! MSET.

use super::{
    NOT_INTEGER_ERR, SYNTAX_ERR, ServerState, Session, parse_int, store_error, wrong_arity,
};
use crate::resp::Reply;
use crate::store::{Action, Condition, Expiry, Mutation, Outcome};
use bytes::Bytes;

#[derive(Clone, Copy, PartialEq, Eq)]
enum ExpireFlag {
    Ex,
    Px,
    ExAt,
    PxAt,
}

#[derive(Default)]
struct ExtOpts {
    nx: bool,
    xx: bool,
    get: bool,
    keepttl: bool,
    persist: bool,
    expire: Option<(ExpireFlag, Bytes)>,
}

/// Parses SET / GETEX options exactly as Redis's `parseExtendedStringArgumentsOrReply`:
/// conflicting or unknown options are a syntax error; the numeric value is checked later.
fn parse_ext(args: &[Bytes], from: usize, is_set: bool) -> Result<ExtOpts, &'static str> {
    let mut o = ExtOpts::default();
    let mut j = from;
    while j < args.len() {
        let opt = &args[j][..];
        let has_next = j + 1 < args.len();
        let expire_set = o.expire.is_some();
        let is = |s: &str| opt.eq_ignore_ascii_case(s.as_bytes());
        let exp_kind = |f: ExpireFlag| o.expire.as_ref().is_some_and(|(k, _)| *k != f);
        if is("nx") && !o.xx && is_set {
            o.nx = true;
        } else if is("xx") && !o.nx && is_set {
            o.xx = true;
        } else if is("get") && is_set {
            o.get = true;
        } else if is("keepttl") && !o.persist && !expire_set && is_set {
            o.keepttl = true;
        } else if is("persist") && !is_set && !expire_set && !o.keepttl {
            o.persist = true;
        } else if (is("ex") || is("px") || is("exat") || is("pxat"))
            && !o.keepttl
            && !o.persist
            && has_next
        {
            let f = if is("ex") {
                ExpireFlag::Ex
            } else if is("px") {
                ExpireFlag::Px
            } else if is("exat") {
                ExpireFlag::ExAt
            } else {
                ExpireFlag::PxAt
            };
            if exp_kind(f) {
                return Err(SYNTAX_ERR);
            }
            o.expire = Some((f, args[j + 1].clone()));
            j += 1;
        } else {
            return Err(SYNTAX_ERR);
        }
        j += 1;
    }
    Ok(o)
}

/// Turns an expire argument into an absolute time in ms, as Redis's
/// `getExpireMillisecondsOrReply`: non-integers and non-positive or overflowing values fail.
fn expire_at_ms(flag: ExpireFlag, raw: &[u8], now_ms: u64, cmd: &str) -> Result<u64, String> {
    let n = parse_int(raw).ok_or_else(|| NOT_INTEGER_ERR.to_string())?;
    let invalid = || format!("ERR invalid expire time in '{cmd}' command");
    let seconds = matches!(flag, ExpireFlag::Ex | ExpireFlag::ExAt);
    if n <= 0 || (seconds && n > i64::MAX / 1000) {
        return Err(invalid());
    }
    let ms = if seconds { n * 1000 } else { n };
    let at = if matches!(flag, ExpireFlag::Ex | ExpireFlag::Px) {
        ms.checked_add(now_ms as i64).ok_or_else(invalid)?
    } else {
        ms
    };
    Ok(at as u64)
}

pub async fn get(state: &ServerState, s: &mut Session, args: Vec<Bytes>, out: &mut Reply) {
    let key = args.into_iter().nth(1).unwrap_or_default();
    match state.store.get(&s.ctx, key).await {
        Ok(Some(e)) => out.bulk(&e.value),
        Ok(None) => out.null(),
        Err(e) => store_error(out, &e),
    }
}

async fn write_one(
    state: &ServerState,
    s: &Session,
    m: Mutation,
    out: &mut Reply,
) -> Option<Outcome> {
    match state.store.write(&s.ctx, vec![m]).await {
        Ok(mut v) => v.pop(),
        Err(e) => {
            store_error(out, &e);
            None
        }
    }
}

pub async fn set(state: &ServerState, s: &mut Session, args: Vec<Bytes>, out: &mut Reply) {
    let opts = match parse_ext(&args, 3, true) {
        Ok(o) => o,
        Err(e) => return out.error(e),
    };
    let expiry = if let Some((flag, raw)) = &opts.expire {
        match expire_at_ms(*flag, raw, state.store.now_ms(), "set") {
            Ok(at) => Expiry::AtMs(at),
            Err(e) => return out.error(&e),
        }
    } else if opts.keepttl {
        Expiry::Keep
    } else {
        Expiry::Never
    };
    let condition = if opts.nx {
        Condition::Absent
    } else if opts.xx {
        Condition::Present
    } else {
        Condition::Always
    };
    let mut it = args.into_iter().skip(1);
    let key = it.next().unwrap_or_default();
    let value = it.next().unwrap_or_default();
    let m = Mutation {
        key,
        condition,
        action: Action::Put { value, expiry },
        want_previous: opts.get,
    };
    let Some(o) = write_one(state, s, m, out).await else {
        return;
    };
    if opts.get {
        match o.previous {
            Some(e) => out.bulk(&e.value),
            None => out.null(),
        }
    } else if o.applied {
        out.ok();
    } else {
        out.null();
    }
}

pub async fn setnx(state: &ServerState, s: &mut Session, args: Vec<Bytes>, out: &mut Reply) {
    let mut it = args.into_iter().skip(1);
    let m = Mutation {
        key: it.next().unwrap_or_default(),
        want_previous: false,
        condition: Condition::Absent,
        action: Action::Put {
            value: it.next().unwrap_or_default(),
            expiry: Expiry::Never,
        },
    };
    if let Some(o) = write_one(state, s, m, out).await {
        out.int(i64::from(o.applied));
    }
}

/// SETEX key seconds value / PSETEX key milliseconds value.
pub async fn setex(
    state: &ServerState,
    s: &mut Session,
    args: Vec<Bytes>,
    out: &mut Reply,
    ms: bool,
) {
    let (flag, name) = if ms {
        (ExpireFlag::Px, "psetex")
    } else {
        (ExpireFlag::Ex, "setex")
    };
    let at = match expire_at_ms(flag, &args[2], state.store.now_ms(), name) {
        Ok(at) => at,
        Err(e) => return out.error(&e),
    };
    let mut it = args.into_iter();
    let key = it.nth(1).unwrap_or_default();
    let value = it.nth(1).unwrap_or_default();
    let m = Mutation {
        key,
        want_previous: false,
        condition: Condition::Always,
        action: Action::Put {
            value,
            expiry: Expiry::AtMs(at),
        },
    };
    if write_one(state, s, m, out).await.is_some() {
        out.ok();
    }
}

pub async fn getdel(state: &ServerState, s: &mut Session, args: Vec<Bytes>, out: &mut Reply) {
    let m = Mutation {
        key: args.into_iter().nth(1).unwrap_or_default(),
        want_previous: true,
        condition: Condition::Present,
        action: Action::Delete,
    };
    if let Some(o) = write_one(state, s, m, out).await {
        match o.previous {
            Some(e) => out.bulk(&e.value),
            None => out.null(),
        }
    }
}

pub async fn getex(state: &ServerState, s: &mut Session, args: Vec<Bytes>, out: &mut Reply) {
    let opts = match parse_ext(&args, 2, false) {
        Ok(o) => o,
        Err(e) => return out.error(e),
    };
    let action = if let Some((flag, raw)) = &opts.expire {
        match expire_at_ms(*flag, raw, state.store.now_ms(), "getex") {
            Ok(at) => Some((Condition::Present, Action::SetExpiry(Some(at)))),
            Err(e) => return out.error(&e),
        }
    } else if opts.persist {
        Some((Condition::PresentWithExpiry, Action::SetExpiry(None)))
    } else {
        None
    };
    let key = args.into_iter().nth(1).unwrap_or_default();
    let Some((condition, action)) = action else {
        return get(state, s, vec![Bytes::new(), key], out).await;
    };
    let m = Mutation {
        key,
        condition,
        action,
        want_previous: true,
    };
    if let Some(o) = write_one(state, s, m, out).await {
        match o.previous {
            Some(e) => out.bulk(&e.value),
            None => out.null(),
        }
    }
}

pub async fn mget(state: &ServerState, s: &mut Session, args: Vec<Bytes>, out: &mut Reply) {
    let keys: Vec<Bytes> = args.into_iter().skip(1).collect();
    match state.store.get_many(&s.ctx, keys).await {
        Ok(values) => {
            out.array(values.len());
            for v in values {
                match v {
                    Some(e) => out.bulk(&e.value),
                    None => out.null(),
                }
            }
        }
        Err(e) => store_error(out, &e),
    }
}

pub async fn mset(state: &ServerState, s: &mut Session, args: Vec<Bytes>, out: &mut Reply) {
    if args.len() % 2 != 1 {
        return wrong_arity(out, "mset");
    }
    let mut it = args.into_iter().skip(1);
    let mut ms = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        ms.push(Mutation::put(k, v));
    }
    match state.store.write(&s.ctx, ms).await {
        Ok(_) => out.ok(),
        Err(e) => store_error(out, &e),
    }
}
