//! A minimal blocking HTTP/1.1 client (GET, and POST with a JSON body) for the daemons' admin listeners.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Largest admin response read.
const MAX_RESPONSE: usize = 16 << 20;

/// GETs `path` from the admin listener at `addr`; returns the body of a 200 response.
pub fn get(addr: SocketAddr, path: &str, token: Option<&[u8]>) -> Result<Vec<u8>> {
    request(addr, "GET", path, token, None)
}

/// POSTs a JSON `body` to `path` on the admin listener at `addr`; returns the body of
/// a 200 response.
pub fn post_json(
    addr: SocketAddr,
    path: &str,
    token: Option<&[u8]>,
    body: &[u8],
) -> Result<Vec<u8>> {
    request(addr, "POST", path, token, Some(body))
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&[u8]>,
    body: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).with_context(|| {
        format!("cannot reach the admin listener at {addr}; is popnet running there? (`popnet up` starts the demo; --admin ADDR points elsewhere)")
    })?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {}\r\n", hex::encode(t)))
        .unwrap_or_default();
    let framing = body
        .map(|b| {
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            )
        })
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{framing}Connection: close\r\n\r\n"
    )?;
    if let Some(b) = body {
        s.write_all(b)?;
    }
    let mut buf = Vec::new();
    s.take(MAX_RESPONSE as u64)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading the answer of {addr}{path}"))?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(&buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => bail!("{addr}{path}: the response ended inside its head"),
        Err(e) => bail!("{addr}{path}: not an HTTP response ({e})"),
    };
    let body = buf[head_len..].to_vec();
    match resp.code {
        Some(200) => Ok(body),
        Some(code) => bail!(
            "{addr}{path} answered {code}: {}",
            String::from_utf8_lossy(&body).trim()
        ),
        None => bail!("{addr}{path}: no status code"),
    }
}
