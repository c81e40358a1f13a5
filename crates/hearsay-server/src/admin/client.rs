//! The operator side of the admin API: a small blocking HTTP/1.1 GET over
//! `std::net::TcpStream` (timeouts on connect and read, a cap on the answer) and the text
//! `hearsay status` and `hearsay getendpoints` print.
//!
//! Blocking and dependency-free on purpose: the CLI makes one request and exits, and the
//! server must stay the only HTTP implementation we carry.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The admin address the CLI uses when none is given (the default `[server] admin_listen`).
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:7380";
/// Connect timeout per address tried: a local or LAN node answers in milliseconds; a
/// firewalled one would otherwise hang the CLI for the kernel's minutes.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for the next bytes of the answer (every handler answers from snapshots).
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read: a status row is under 1 KiB, so this fits clusters of thousands of
/// nodes, and a wrong port that streams forever cannot eat memory.
pub const MAX_RESPONSE_BYTES: u64 = 16 << 20;

/// Why a CLI request failed; the messages are what the operator sees.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot resolve admin address '{addr}': {message}")]
    Resolve { addr: String, message: String },
    #[error(
        "cannot reach the admin API at {addr}: {error} (is the node running, and is this its [server] admin_listen address?)"
    )]
    Connect {
        addr: String,
        /// Shown in the message rather than as a source, so `{:#}` does not repeat it.
        error: std::io::Error,
    },
    #[error("admin API at {addr}: {message}")]
    Protocol { addr: String, message: String },
    #[error("admin API at {addr} answered {status}: {message}")]
    Status {
        addr: String,
        status: u16,
        message: String,
    },
}

/// An HTTP answer: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// `GET path_and_query` from `addr` (host:port; every resolved address is tried in turn).
pub fn get(addr: &str, path_and_query: &str) -> Result<HttpResponse, ClientError> {
    request(addr, "GET", path_and_query)
}

/// `method path_and_query` (no body) to `addr`.
fn request(addr: &str, method: &str, path_and_query: &str) -> Result<HttpResponse, ClientError> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| ClientError::Resolve {
            addr: addr.to_string(),
            message: e.to_string(),
        })?
        .collect();
    let mut last = None;
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let mut stream = stream.ok_or_else(|| ClientError::Connect {
        addr: addr.to_string(),
        error: last.unwrap_or_else(|| std::io::Error::other("no address")),
    })?;
    let io = |e: std::io::Error| ClientError::Protocol {
        addr: addr.to_string(),
        message: e.to_string(),
    };
    stream.set_read_timeout(Some(READ_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(READ_TIMEOUT)).map_err(io)?;
    let request = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nContent-Length: 0\r\nConnection: close\r\nUser-Agent: hearsay-cli\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(io)?;
    if raw.len() as u64 > MAX_RESPONSE_BYTES {
        return Err(ClientError::Protocol {
            addr: addr.to_string(),
            message: format!("answer larger than {MAX_RESPONSE_BYTES} bytes"),
        });
    }
    parse_response(&raw).map_err(|message| ClientError::Protocol {
        addr: addr.to_string(),
        message,
    })
}

/// Parses a complete HTTP/1.1 response (the server closed the connection after it).
pub fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("not an HTTP response (no end of headers)")?;
    let head =
        std::str::from_utf8(&raw[..head_end]).map_err(|_| "response headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x response: '{status_line}'"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line '{status_line}'"))?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length '{value}'"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let rest = &raw[head_end + 4..];
    let body = if chunked {
        decode_chunked(rest)?
    } else if let Some(n) = content_length {
        rest.get(..n)
            .ok_or_else(|| format!("answer cut short: {} of {n} body bytes", rest.len()))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse { status, body })
}

fn decode_chunked(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunked answer cut short")?;
        let size_text = std::str::from_utf8(&b[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = b.get(..size).ok_or("chunked answer cut short")?;
        out.extend_from_slice(chunk);
        b = b.get(size + 2..).ok_or("chunked answer cut short")?;
    }
}

/// `GET` and parse JSON; a non-2xx answer becomes [`ClientError::Status`] with the server's
/// `error` message.
pub fn get_json(addr: &str, path_and_query: &str) -> Result<Value, ClientError> {
    json_of(addr, get(addr, path_and_query)?)
}

/// `POST` (no body) and parse JSON, as [`get_json`].
pub fn post_json(addr: &str, path_and_query: &str) -> Result<Value, ClientError> {
    json_of(addr, request(addr, "POST", path_and_query)?)
}

fn json_of(addr: &str, r: HttpResponse) -> Result<Value, ClientError> {
    let parsed: Result<Value, _> = serde_json::from_slice(&r.body);
    if !(200..300).contains(&r.status) {
        let message = parsed
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&r.body).trim().to_string());
        return Err(ClientError::Status {
            addr: addr.to_string(),
            status: r.status,
            message,
        });
    }
    parsed.map_err(|e| ClientError::Protocol {
        addr: addr.to_string(),
        message: format!("answer is not JSON: {e}"),
    })
}

/// Percent-encodes a query value (every byte but the RFC 3986 unreserved ones).
pub fn percent_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            s.push(b as char);
        } else {
            let _ = write!(s, "%{b:02X}");
        }
    }
    s
}

/// `hearsay status`: fetches `/v1/status` and renders it.
pub fn status(addr: &str, keyspace: &str) -> Result<String, ClientError> {
    let v = get_json(addr, "/v1/status")?;
    Ok(render_status(&v, keyspace))
}

/// `hearsay getendpoints`: fetches `/v1/endpoints` and renders it.
pub fn getendpoints(addr: &str, keyspace: &str, key: &[u8]) -> Result<String, ClientError> {
    let path = format!(
        "/v1/endpoints?keyspace={}&key={}",
        percent_encode(keyspace.as_bytes()),
        percent_encode(key)
    );
    let v = get_json(addr, &path)?;
    Ok(render_endpoints(&v))
}

/// Bytes in the units `nodetool status` uses.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2} {}", UNITS[unit])
}

/// The address a member is shown under: its client (RESP) address, else its cluster one.
fn member_address(m: &Value) -> String {
    m["client_addr"]
        .as_str()
        .or_else(|| m["cluster_addr"].as_str())
        .unwrap_or("?")
        .to_string()
}

/// The `nodetool status`-like table for a `/v1/status` answer; ownership is shown for
/// `keyspace`.
pub fn render_status(v: &Value, keyspace: &str) -> String {
    let members = v["members"].as_array().cloned().unwrap_or_default();
    let known_keyspace = v["keyspaces"]
        .as_array()
        .is_some_and(|ks| ks.iter().any(|k| k["name"].as_str() == Some(keyspace)));
    let mut by_dc: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for m in &members {
        by_dc
            .entry(m["dc"].as_str().unwrap_or("?").to_string())
            .or_default()
            .push(m);
    }
    let mut out = String::new();
    for (i, (dc, mut rows)) in by_dc.into_iter().enumerate() {
        rows.sort_by_key(|m| member_address(m));
        if i > 0 {
            out.push('\n');
        }
        let title = format!("Datacenter: {dc}");
        let _ = writeln!(out, "{title}");
        let _ = writeln!(out, "{}", "=".repeat(title.len()));
        out.push_str("Status=Up/Down\n|/ State=Normal/Leaving/Joining/Moving\n");
        let header = [
            "--",
            "Address",
            "Load",
            "Tokens",
            "Owns (effective)",
            "Host ID",
            "Rack",
        ];
        let table: Vec<[String; 7]> = rows
            .iter()
            .map(|m| {
                let owns = if known_keyspace {
                    m["owns_effective"][keyspace]
                        .as_f64()
                        .map_or_else(|| "?".to_string(), |f| format!("{:.1}%", f * 100.0))
                } else {
                    "?".to_string()
                };
                [
                    m["code"].as_str().unwrap_or("??").to_string(),
                    member_address(m),
                    m["load_bytes"]
                        .as_u64()
                        .map_or_else(|| "?".to_string(), human_bytes),
                    m["tokens"].as_u64().unwrap_or(0).to_string(),
                    owns,
                    m["node_id"].as_str().unwrap_or("?").to_string(),
                    m["rack"].as_str().unwrap_or("?").to_string(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &table {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let line = |cells: &[&str]| {
            let mut l = String::new();
            for (j, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if j + 1 == cells.len() {
                    l.push_str(cell);
                } else {
                    let _ = write!(l, "{cell:<w$}  ");
                }
            }
            l.trim_end().to_string()
        };
        let _ = writeln!(out, "{}", line(&header));
        for row in &table {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            let _ = writeln!(out, "{}", line(&cells));
        }
    }
    if members.is_empty() {
        out.push_str("No members known.\n");
    }
    if !known_keyspace {
        let _ = writeln!(
            out,
            "\nNote: keyspace '{keyspace}' does not exist, so ownership is not shown."
        );
    } else if v["mode"].as_str() == Some("single") {
        out.push_str("\nNote: single-node mode (no [cluster] seeds): this node owns all data.\n");
    }
    out
}

/// `hearsay getendpoints` output: the token, then one replica address per line (primary
/// first).
pub fn render_endpoints(v: &Value) -> String {
    let mut out = String::new();
    let token = v["token"]
        .as_i64()
        .map_or_else(|| "?".to_string(), |t| t.to_string());
    let _ = writeln!(out, "Token: {token}");
    for r in v["replicas"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "{}", member_address(r));
    }
    out
}
