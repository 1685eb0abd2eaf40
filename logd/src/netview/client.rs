//! A small HTTP client for the DNS servers' and caches' admin listeners (one request per connection, bounded answers).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer read.
const MAX_ANSWER: u64 = 8 << 20;

/// Sends one request; returns the status and body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&[u8]>,
    body: Option<&[u8]>,
) -> Result<(u16, Vec<u8>), String> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {}\r\n", hex::encode(t)));
    }
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body.unwrap_or_default()))
        .map_err(|e| format!("cannot send to {addr}: {e}"))?;
    let mut buf = Vec::new();
    s.take(MAX_ANSWER)
        .read_to_end(&mut buf)
        .map_err(|e| format!("no answer from {addr}: {e}"))?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&buf) {
        Ok(httparse::Status::Complete(n)) => Ok((resp.code.unwrap_or(0), buf[n..].to_vec())),
        _ => Err(format!("{addr} did not answer HTTP")),
    }
}

/// GETs JSON from an admin listener.
pub fn get_json(
    addr: SocketAddr,
    path: &str,
    token: Option<&[u8]>,
) -> Result<serde_json::Value, String> {
    let (status, body) = request(addr, "GET", path, token, None)?;
    if status != 200 {
        return Err(format!(
            "{addr}{path} answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{addr}{path} did not return JSON: {e}"))
}
