//! A minimal blocking HTTP/1.1 POST of JSON, for a box's own cache admin listener (purge).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Largest response read.
const MAX_RESPONSE: u64 = 1 << 20;

/// POSTs `body` to `path` at `addr`; returns the body of a 200 answer, or why not.
pub fn post_json(
    addr: SocketAddr,
    path: &str,
    token: Option<&[u8]>,
    body: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot reach the cache admin listener at {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {}\r\n", hex::encode(t)))
        .unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body))
        .map_err(|e| format!("{addr}{path}: {e}"))?;
    let mut buf = Vec::new();
    s.take(MAX_RESPONSE)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{addr}{path}: {e}"))?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(&buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(format!("{addr}{path}: truncated answer")),
        Err(e) => return Err(format!("{addr}{path}: not HTTP ({e})")),
    };
    let body = buf[n..].to_vec();
    match resp.code {
        Some(200) => Ok(body),
        Some(c) => Err(format!(
            "{addr}{path} answered {c}: {}",
            String::from_utf8_lossy(&body).trim()
        )),
        None => Err(format!("{addr}{path}: no status")),
    }
}
