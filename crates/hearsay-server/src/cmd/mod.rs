//! The command layer: one table of every command (name, arity, flags, key positions, docs),
//! argument checks in Redis's order (unknown command, arity, authentication), and one module
//! per command group. Handlers write their reply straight into the connection's buffer.

mod cluster_cmds;
mod connection;
mod keys;
mod server_cmds;
mod strings;

pub mod glob;
pub mod state;

pub use state::{ClientInfo, ServerState, ServerStats, Session};

use crate::resp::Reply;
use crate::store::StoreError;
use bytes::Bytes;

/// Identifies a handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdId {
    Get,
    Set,
    Ping,
    Echo,
    Hello,
    Auth,
    Quit,
    Select,
    SetNx,
    SetEx,
    PSetEx,
    GetDel,
    GetEx,
    Del,
    Unlink,
    Exists,
    MGet,
    MSet,
    Expire,
    PExpire,
    ExpireAt,
    PExpireAt,
    Ttl,
    PTtl,
    Persist,
    Type,
    Scan,
    DbSize,
    Info,
    Config,
    Command,
    Client,
    Time,
    Consistency,
    Use,
    Keyspace,
    Ring,
    Members,
    GetEndpoints,
}

/// One row of the command table, with what COMMAND INFO and COMMAND DOCS report.
#[derive(Debug)]
pub struct CommandSpec {
    pub name: &'static str,
    pub id: CmdId,
    /// Redis arity: `n` exactly n arguments (name included), `-n` at least n.
    pub arity: i32,
    pub flags: &'static [&'static str],
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
    pub categories: &'static [&'static str],
    pub group: &'static str,
    pub since: &'static str,
    pub summary: &'static str,
    pub complexity: &'static str,
    /// `(name, arity, flags, summary)` of each subcommand.
    pub subcommands: &'static [(&'static str, i32, &'static [&'static str], &'static str)],
}

const W: &[&str] = &["write", "denyoom", "fast"];
const WF: &[&str] = &["write", "fast"];
const R: &[&str] = &["readonly", "fast"];
const CONN: &[&str] = &["noscript", "loading", "stale", "fast"];

macro_rules! spec {
    ($name:expr, $id:ident, $arity:expr, $flags:expr, $fk:expr, $lk:expr, $st:expr, $cats:expr, $group:expr, $since:expr, $summary:expr, $cx:expr) => {
        CommandSpec {
            name: $name,
            id: CmdId::$id,
            arity: $arity,
            flags: $flags,
            first_key: $fk,
            last_key: $lk,
            step: $st,
            categories: $cats,
            group: $group,
            since: $since,
            summary: $summary,
            complexity: $cx,
            subcommands: &[],
        }
    };
}

/// Every command, most frequent first (lookup is a linear scan over a few dozen names).
pub static COMMANDS: &[CommandSpec] = &[
    spec!(
        "get",
        Get,
        2,
        R,
        1,
        1,
        1,
        &["@read", "@string", "@fast"],
        "string",
        "1.0.0",
        "Get the value of a key",
        "O(1)"
    ),
    spec!(
        "set",
        Set,
        -3,
        &["write", "denyoom"],
        1,
        1,
        1,
        &["@write", "@string", "@slow"],
        "string",
        "1.0.0",
        "Set the string value of a key",
        "O(1)"
    ),
    spec!(
        "ping",
        Ping,
        -1,
        &["fast", "sentinel"],
        0,
        0,
        0,
        &["@fast", "@connection"],
        "connection",
        "1.0.0",
        "Ping the server",
        "O(1)"
    ),
    spec!(
        "mget",
        MGet,
        -2,
        R,
        1,
        -1,
        1,
        &["@read", "@string", "@fast"],
        "string",
        "1.0.0",
        "Get the values of all the given keys",
        "O(N) where N is the number of keys to retrieve."
    ),
    spec!(
        "mset",
        MSet,
        -3,
        &["write", "denyoom"],
        1,
        -1,
        2,
        &["@write", "@string", "@slow"],
        "string",
        "1.0.1",
        "Set multiple keys to multiple values",
        "O(N) where N is the number of keys to set."
    ),
    spec!(
        "del",
        Del,
        -2,
        &["write"],
        1,
        -1,
        1,
        &["@keyspace", "@write", "@slow"],
        "generic",
        "1.0.0",
        "Delete a key",
        "O(N) where N is the number of keys that will be removed."
    ),
    spec!(
        "unlink",
        Unlink,
        -2,
        WF,
        1,
        -1,
        1,
        &["@keyspace", "@write", "@fast"],
        "generic",
        "4.0.0",
        "Delete a key asynchronously in another thread. Otherwise it is just as DEL, but non blocking.",
        "O(1) for each key removed regardless of its size."
    ),
    spec!(
        "exists",
        Exists,
        -2,
        R,
        1,
        -1,
        1,
        &["@keyspace", "@read", "@fast"],
        "generic",
        "1.0.0",
        "Determine if a key exists",
        "O(N) where N is the number of keys to check."
    ),
    spec!(
        "echo",
        Echo,
        2,
        &["fast"],
        0,
        0,
        0,
        &["@fast", "@connection"],
        "connection",
        "1.0.0",
        "Echo the given string",
        "O(1)"
    ),
    spec!(
        "hello",
        Hello,
        -1,
        CONN,
        0,
        0,
        0,
        &["@fast", "@connection"],
        "connection",
        "6.0.0",
        "Handshake with Redis",
        "O(1)"
    ),
    spec!(
        "auth",
        Auth,
        -2,
        &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy"
        ],
        0,
        0,
        0,
        &["@fast", "@connection"],
        "connection",
        "1.0.0",
        "Authenticate to the server",
        "O(N) where N is the number of passwords defined for the user"
    ),
    spec!(
        "quit",
        Quit,
        -1,
        &[
            "allow_busy",
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth"
        ],
        0,
        0,
        0,
        &["@fast", "@connection"],
        "connection",
        "1.0.0",
        "Close the connection",
        "O(1)"
    ),
    spec!(
        "select",
        Select,
        2,
        &["loading", "stale", "fast"],
        0,
        0,
        0,
        &["@keyspace", "@fast"],
        "connection",
        "2.0.0",
        "Change the selected database for the current connection",
        "O(1)"
    ),
    spec!(
        "setnx",
        SetNx,
        3,
        W,
        1,
        1,
        1,
        &["@write", "@string", "@fast"],
        "string",
        "1.0.0",
        "Set the value of a key, only if the key does not exist",
        "O(1)"
    ),
    spec!(
        "setex",
        SetEx,
        4,
        &["write", "denyoom"],
        1,
        1,
        1,
        &["@write", "@string", "@slow"],
        "string",
        "2.0.0",
        "Set the value and expiration of a key",
        "O(1)"
    ),
    spec!(
        "psetex",
        PSetEx,
        4,
        &["write", "denyoom"],
        1,
        1,
        1,
        &["@write", "@string", "@slow"],
        "string",
        "2.6.0",
        "Set the value and expiration in milliseconds of a key",
        "O(1)"
    ),
    spec!(
        "getdel",
        GetDel,
        2,
        WF,
        1,
        1,
        1,
        &["@write", "@string", "@fast"],
        "string",
        "6.2.0",
        "Get the value of a key and delete the key",
        "O(1)"
    ),
    spec!(
        "getex",
        GetEx,
        -2,
        WF,
        1,
        1,
        1,
        &["@write", "@string", "@fast"],
        "string",
        "6.2.0",
        "Get the value of a key and optionally set its expiration",
        "O(1)"
    ),
    spec!(
        "expire",
        Expire,
        -3,
        WF,
        1,
        1,
        1,
        &["@keyspace", "@write", "@fast"],
        "generic",
        "1.0.0",
        "Set a key's time to live in seconds",
        "O(1)"
    ),
    spec!(
        "pexpire",
        PExpire,
        -3,
        WF,
        1,
        1,
        1,
        &["@keyspace", "@write", "@fast"],
        "generic",
        "2.6.0",
        "Set a key's time to live in milliseconds",
        "O(1)"
    ),
    spec!(
        "expireat",
        ExpireAt,
        -3,
        WF,
        1,
        1,
        1,
        &["@keyspace", "@write", "@fast"],
        "generic",
        "1.2.0",
        "Set the expiration for a key as a UNIX timestamp",
        "O(1)"
    ),
    spec!(
        "pexpireat",
        PExpireAt,
        -3,
        WF,
        1,
        1,
        1,
        &["@keyspace", "@write", "@fast"],
        "generic",
        "2.6.0",
        "Set the expiration for a key as a UNIX timestamp specified in milliseconds",
        "O(1)"
    ),
    spec!(
        "ttl",
        Ttl,
        2,
        R,
        1,
        1,
        1,
        &["@keyspace", "@read", "@fast"],
        "generic",
        "1.0.0",
        "Get the time to live for a key in seconds",
        "O(1)"
    ),
    spec!(
        "pttl",
        PTtl,
        2,
        R,
        1,
        1,
        1,
        &["@keyspace", "@read", "@fast"],
        "generic",
        "2.6.0",
        "Get the time to live for a key in milliseconds",
        "O(1)"
    ),
    spec!(
        "persist",
        Persist,
        2,
        WF,
        1,
        1,
        1,
        &["@keyspace", "@write", "@fast"],
        "generic",
        "2.2.0",
        "Remove the expiration from a key",
        "O(1)"
    ),
    spec!(
        "type",
        Type,
        2,
        R,
        1,
        1,
        1,
        &["@keyspace", "@read", "@fast"],
        "generic",
        "1.0.0",
        "Determine the type stored at key",
        "O(1)"
    ),
    spec!(
        "scan",
        Scan,
        -2,
        &["readonly"],
        0,
        0,
        0,
        &["@keyspace", "@read", "@slow"],
        "generic",
        "2.8.0",
        "Incrementally iterate the keys space",
        "O(1) for every call. O(N) for a complete iteration."
    ),
    spec!(
        "dbsize",
        DbSize,
        1,
        R,
        0,
        0,
        0,
        &["@keyspace", "@read", "@fast"],
        "server",
        "1.0.0",
        "Return the number of keys in the selected database",
        "O(1)"
    ),
    spec!(
        "info",
        Info,
        -1,
        &["loading", "stale"],
        0,
        0,
        0,
        &["@slow", "@dangerous"],
        "server",
        "1.0.0",
        "Get information and statistics about the server",
        "O(1)"
    ),
    CommandSpec {
        subcommands: &[
            (
                "get",
                -3,
                &["admin", "noscript", "loading", "stale"],
                "Get the values of configuration parameters",
            ),
            (
                "help",
                2,
                &["loading", "stale"],
                "Show helpful text about the different subcommands",
            ),
        ],
        ..spec!(
            "config",
            Config,
            -2,
            &[],
            0,
            0,
            0,
            &["@slow"],
            "server",
            "2.0.0",
            "A container for server configuration commands",
            "Depends on subcommand."
        )
    },
    CommandSpec {
        subcommands: &[
            (
                "count",
                2,
                &["loading", "stale"],
                "Get total number of Redis commands",
            ),
            (
                "docs",
                -2,
                &["loading", "stale"],
                "Get array of specific Redis command documentation",
            ),
            (
                "info",
                -2,
                &["loading", "stale"],
                "Get array of specific Redis command details, or all when no argument is given.",
            ),
            (
                "help",
                2,
                &["loading", "stale"],
                "Show helpful text about the different subcommands",
            ),
        ],
        ..spec!(
            "command",
            Command,
            -1,
            &["loading", "stale"],
            0,
            0,
            0,
            &["@slow", "@connection"],
            "server",
            "2.8.13",
            "Get array of Redis command details",
            "O(N) where N is the total number of Redis commands"
        )
    },
    CommandSpec {
        subcommands: &[
            (
                "id",
                2,
                &["noscript", "loading", "stale"],
                "Returns the client ID for the current connection",
            ),
            (
                "setname",
                3,
                &["noscript", "loading", "stale"],
                "Set the current connection name",
            ),
            (
                "getname",
                2,
                &["noscript", "loading", "stale"],
                "Get the current connection name",
            ),
            (
                "setinfo",
                4,
                &["noscript", "loading", "stale"],
                "Set client or connection specific info",
            ),
            (
                "list",
                -2,
                &["admin", "noscript", "loading", "stale"],
                "Get the list of client connections",
            ),
            (
                "info",
                2,
                &["noscript", "loading", "stale"],
                "Returns information about the current client connection.",
            ),
            (
                "help",
                2,
                &["loading", "stale"],
                "Show helpful text about the different subcommands",
            ),
        ],
        ..spec!(
            "client",
            Client,
            -2,
            &[],
            0,
            0,
            0,
            &["@slow"],
            "connection",
            "2.4.0",
            "A container for client connection commands",
            "Depends on subcommand."
        )
    },
    spec!(
        "time",
        Time,
        1,
        &["loading", "stale", "fast"],
        0,
        0,
        0,
        &["@fast"],
        "server",
        "2.6.0",
        "Return the current server time",
        "O(1)"
    ),
    spec!(
        "consistency",
        Consistency,
        -1,
        CONN,
        0,
        0,
        0,
        &["@connection", "@fast"],
        "hearsay",
        "0.1.0",
        "Show or set the consistency level of this connection's requests (as cqlsh)",
        "O(1)"
    ),
    spec!(
        "use",
        Use,
        2,
        CONN,
        0,
        0,
        0,
        &["@connection", "@fast"],
        "hearsay",
        "0.1.0",
        "Use a keyspace for this connection's requests (as cqlsh)",
        "O(1)"
    ),
    spec!(
        "keyspace",
        Keyspace,
        -2,
        &[],
        0,
        0,
        0,
        &["@keyspace", "@slow"],
        "hearsay",
        "0.1.0",
        "List, inspect, create and drop keyspaces",
        "Depends on subcommand."
    ),
    spec!(
        "ring",
        Ring,
        -1,
        &["loading", "stale"],
        0,
        0,
        0,
        &["@slow"],
        "hearsay",
        "0.1.0",
        "The token ring: each vnode range's end token and replicas",
        "O(N) where N is the number of vnodes"
    ),
    spec!(
        "members",
        Members,
        1,
        &["loading", "stale"],
        0,
        0,
        0,
        &["@slow"],
        "hearsay",
        "0.1.0",
        "The cluster members and their state (as nodetool status)",
        "O(N) where N is the number of members"
    ),
    spec!(
        "getendpoints",
        GetEndpoints,
        2,
        &["readonly", "fast"],
        1,
        1,
        1,
        &["@read", "@fast"],
        "hearsay",
        "0.1.0",
        "A key's token and its replicas (as nodetool getendpoints)",
        "O(log N)"
    ),
];

/// Finds a command by name, case-insensitively, without allocating.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|c| c.name.len() == name.len() && c.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Whether `n` arguments (command name included) satisfy a Redis arity.
pub fn arity_ok(arity: i32, n: usize) -> bool {
    if arity >= 0 {
        n == arity as usize
    } else {
        n >= arity.unsigned_abs() as usize
    }
}

/// Lossy text of an argument, for error messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn wrong_arity(out: &mut Reply, name: &str) {
    out.error(&format!(
        "ERR wrong number of arguments for '{name}' command"
    ));
}

/// Redis's reply to a command it does not know.
pub fn unknown_command(out: &mut Reply, args: &[Bytes]) {
    let mut list = String::new();
    for a in args.iter().skip(1) {
        if list.len() >= 128 {
            break;
        }
        let room = 128 - list.len();
        let t = text(a);
        let t: String = t.chars().take(room).collect();
        list.push_str(&format!("'{t}' "));
    }
    let name: String = text(&args[0]).chars().take(128).collect();
    out.error(&format!(
        "ERR unknown command '{name}', with args beginning with: {list}"
    ));
}

pub fn unknown_subcommand(out: &mut Reply, sub: &[u8], cmd: &str) {
    let sub: String = text(sub).chars().take(128).collect();
    out.error(&format!(
        "ERR unknown subcommand '{sub}'. Try {} HELP.",
        cmd.to_ascii_uppercase()
    ));
}

pub const SYNTAX_ERR: &str = "ERR syntax error";
pub const NOT_INTEGER_ERR: &str = "ERR value is not an integer or out of range";

pub fn store_error(out: &mut Reply, e: &StoreError) {
    match e {
        StoreError::Unavailable(m) => out.error(&format!("ERR {m}")),
        // Already carries its code (UNAVAILABLE, TIMEOUT, ...), as Cassandra's errors do.
        StoreError::Cluster { .. } => out.error(&e.to_string()),
        StoreError::Invalid(m) => out.error(&format!("ERR {m}")),
        other => out.error(&format!("ERR {other}")),
    }
}

/// Parses an integer argument as Redis's `getLongLongFromObject` does.
pub fn parse_int(b: &[u8]) -> Option<i64> {
    crate::resp::request::parse_i64_strict(b)
}

/// What the connection must do after a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    Continue,
    /// Send the reply, then close (QUIT).
    Close,
}

/// Runs one command. The reply (always exactly one) is appended to `out`.
pub async fn execute(
    state: &ServerState,
    session: &mut Session,
    args: Vec<Bytes>,
    out: &mut Reply,
) -> After {
    state.stats.inc_commands();
    let Some(first) = args.first() else {
        return After::Continue;
    };
    let Some(spec) = lookup(first) else {
        unknown_command(out, &args);
        return After::Continue;
    };
    session.info.set_last_command(spec.id);
    if !arity_ok(spec.arity, args.len()) {
        wrong_arity(out, spec.name);
        return After::Continue;
    }
    if !session.authenticated && !matches!(spec.id, CmdId::Auth | CmdId::Hello | CmdId::Quit) {
        out.error("NOAUTH Authentication required.");
        return After::Continue;
    }
    match spec.id {
        CmdId::Get => strings::get(state, session, args, out).await,
        CmdId::Set => strings::set(state, session, args, out).await,
        CmdId::SetNx => strings::setnx(state, session, args, out).await,
        CmdId::SetEx => strings::setex(state, session, args, out, false).await,
        CmdId::PSetEx => strings::setex(state, session, args, out, true).await,
        CmdId::GetDel => strings::getdel(state, session, args, out).await,
        CmdId::GetEx => strings::getex(state, session, args, out).await,
        CmdId::MGet => strings::mget(state, session, args, out).await,
        CmdId::MSet => strings::mset(state, session, args, out).await,
        CmdId::Del | CmdId::Unlink => keys::del(state, session, args, out).await,
        CmdId::Exists => keys::exists(state, session, args, out).await,
        CmdId::Expire => keys::expire(state, session, args, out, keys::ExpireKind::Expire).await,
        CmdId::PExpire => keys::expire(state, session, args, out, keys::ExpireKind::PExpire).await,
        CmdId::ExpireAt => {
            keys::expire(state, session, args, out, keys::ExpireKind::ExpireAt).await
        }
        CmdId::PExpireAt => {
            keys::expire(state, session, args, out, keys::ExpireKind::PExpireAt).await
        }
        CmdId::Ttl => keys::ttl(state, session, args, out, false).await,
        CmdId::PTtl => keys::ttl(state, session, args, out, true).await,
        CmdId::Persist => keys::persist(state, session, args, out).await,
        CmdId::Type => keys::type_(state, session, args, out).await,
        CmdId::Scan => keys::scan(state, session, args, out).await,
        CmdId::DbSize => keys::dbsize(state, session, out).await,
        CmdId::Ping => connection::ping(args, out),
        CmdId::Echo => out.bulk(&args[1]),
        CmdId::Hello => connection::hello(state, session, args, out),
        CmdId::Auth => connection::auth(state, session, args, out),
        CmdId::Quit => {
            out.ok();
            return After::Close;
        }
        CmdId::Select => connection::select(args, out),
        CmdId::Info => server_cmds::info(state, session, args, out).await,
        CmdId::Config => server_cmds::config(state, args, out),
        CmdId::Command => server_cmds::command(args, out),
        CmdId::Client => server_cmds::client(state, session, args, out),
        CmdId::Time => server_cmds::time(state, out),
        CmdId::Consistency => cluster_cmds::consistency(session, args, out),
        CmdId::Use => cluster_cmds::use_keyspace(state, session, args, out),
        CmdId::Keyspace => cluster_cmds::keyspace(state, session, args, out).await,
        CmdId::Ring => cluster_cmds::ring(state, session, args, out),
        CmdId::Members => cluster_cmds::members(state, session, out),
        CmdId::GetEndpoints => cluster_cmds::getendpoints(state, session, args, out),
    }
    After::Continue
}

#[cfg(test)]
mod tests;
