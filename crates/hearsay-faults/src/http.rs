//! A minimal blocking HTTP/1.1 GET for the nodes' admin API (JSON views). The harness does
//! not link `hearsay-server` (a large build) just for its CLI client.

use anyhow::{Context, bail};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Connect timeout: the admin listener is on the bridge or loopback; a node that does not
/// accept within this long is down or paused, which the caller wants to know quickly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Read timeout: a `/v1/local/scan` page of 10 000 cells is a few MB of JSON built on the
/// node's blocking pool; on a loaded 2-core machine that takes well under this.
const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest answer accepted: a scan page is bounded by the node (10 000 cells, ~3 MB).
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// `GET path` on `addr`; the status code and body.
pub fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .with_context(|| format!("connect to admin API {addr}"))?;
    s.set_read_timeout(Some(READ_TIMEOUT))?;
    s.set_write_timeout(Some(READ_TIMEOUT))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.take(MAX_ANSWER_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .with_context(|| format!("read answer of {addr}{path}"))?;
    if raw.len() > MAX_ANSWER_BYTES {
        bail!("answer of {addr}{path} exceeds {MAX_ANSWER_BYTES} bytes");
    }
    parse_response(&raw).with_context(|| format!("answer of {addr}{path}"))
}

/// `GET path` expecting `200` and a JSON body.
pub fn get_json(addr: SocketAddr, path: &str) -> anyhow::Result<serde_json::Value> {
    let (status, body) = get(addr, path)?;
    if status != 200 {
        bail!(
            "{addr}{path} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    serde_json::from_slice(&body).with_context(|| format!("{addr}{path}: not JSON"))
}

/// Splits a complete HTTP/1.1 response into status and body (length-delimited, chunked, or
/// up to the close).
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).context("headers not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .context("bad status line")?;
    let mut length = None;
    let mut chunked = false;
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "content-length" {
            length = Some(value.parse::<usize>().context("bad content-length")?);
        } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let body = &raw[end + 4..];
    if chunked {
        return Ok((status, dechunk(body)?));
    }
    match length {
        Some(n) if body.len() < n => bail!("body cut short: {} of {n} bytes", body.len()),
        Some(n) => Ok((status, body[..n].to_vec())),
        None => Ok((status, body.to_vec())),
    }
}

fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk header")?;
        let size_text = std::str::from_utf8(&b[..eol])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            bail!("chunk cut short");
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_with_length_chunks_or_close() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(r).unwrap(), (200, b"{}".to_vec()));
        let r = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n";
        assert_eq!(parse_response(r).unwrap(), (404, b"abc".to_vec()));
        let r = b"HTTP/1.1 200 OK\r\n\r\nxyz";
        assert_eq!(parse_response(r).unwrap(), (200, b"xyz".to_vec()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nab").is_err());
        assert!(parse_response(b"garbage").is_err());
    }
}
