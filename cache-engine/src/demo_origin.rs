//! A small real HTTP/1.1 origin for the demo and the tests: deterministic bodies whose size the path names.
//!
//! `GET /obj/1k` answers 1024 bytes, `/obj/1m` 1 MiB, `/x/300` 300 bytes (the last
//! path segment, an optional `k`/`m` suffix, an optional extension: `/a/2k.bin`);
//! any other path answers 1 KiB. Bodies are printable and depend only on the path, so
//! every origin of a demo serves the same object. Responses carry `ETag`,
//! `Last-Modified`, `Cache-Control: public, max-age=60` (`?max-age=N` changes it),
//! `Date` and `X-Origin` (the address that answered). `If-None-Match` with the
//! current tag gets 304; `HEAD` gets the head only; `POST`, `PUT`, `PATCH` and `DELETE`
//! get a small uncacheable 200. Keep-alive, pipelining-safe, one thread per
//! connection; [`DemoOrigin::requests`] counts every request answered.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use xxhash_rust::xxh3::xxh3_64;

use crate::http::{format_date, parse_u64, unix_now};

/// Largest body the demo origin generates.
pub const MAX_DEMO_BODY: u64 = 64 << 20;
/// `Last-Modified` of every demo object (2024-01-01T00:00:00Z).
pub const DEMO_LAST_MODIFIED: u64 = 1_704_067_200;

/// A running demo origin.
pub struct DemoOrigin {
    /// The addresses it listens on (port 0 resolved).
    pub addrs: Vec<SocketAddr>,
    requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// The body size a path asks for.
pub fn size_of_path(path: &str) -> u64 {
    let path = path.split('?').next().unwrap_or("");
    let last = path.rsplit('/').next().unwrap_or("");
    let stem = last.split('.').next().unwrap_or("");
    let (digits, mult) = match stem.as_bytes().last() {
        Some(b'k' | b'K') => (&stem[..stem.len() - 1], 1024),
        Some(b'm' | b'M') => (&stem[..stem.len() - 1], 1 << 20),
        _ => (stem, 1),
    };
    parse_u64(digits.as_bytes())
        .and_then(|n| n.checked_mul(mult))
        .map_or(1024, |n| n.min(MAX_DEMO_BODY))
}

/// The body served for a path.
pub fn body_of_path(path: &str) -> Vec<u8> {
    let clean = path.split('?').next().unwrap_or("");
    let size = size_of_path(clean) as usize;
    let seed = xxh3_64(clean.as_bytes()) as usize;
    (0..size)
        .map(|i| {
            if i % 64 == 63 {
                b'\n'
            } else {
                b'a' + ((seed + i) % 26) as u8
            }
        })
        .collect()
}

/// The entity tag of a path's object.
pub fn etag_of_path(path: &str) -> String {
    let clean = path.split('?').next().unwrap_or("");
    format!(
        "\"{:016x}\"",
        xxh3_64(clean.as_bytes()) ^ size_of_path(clean)
    )
}

impl DemoOrigin {
    /// Listens on every address and answers until stopped.
    pub fn start(addrs: &[SocketAddr]) -> io::Result<DemoOrigin> {
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let mut bound = Vec::new();
        let mut listeners = Vec::new();
        for a in addrs {
            let l = TcpListener::bind(a)?;
            bound.push(l.local_addr()?);
            l.set_nonblocking(true)?;
            listeners.push(l);
        }
        let mut threads = Vec::new();
        for l in listeners {
            let stop = stop.clone();
            let requests = requests.clone();
            let me = l.local_addr()?;
            threads.push(
                std::thread::Builder::new()
                    .name("demo-origin".into())
                    .spawn(move || accept_loop(l, me, stop, requests))?,
            );
        }
        Ok(DemoOrigin {
            addrs: bound,
            requests,
            stop,
            threads,
        })
    }

    /// Requests answered so far (over every address).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Stops listening; open connections end at their next request.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for DemoOrigin {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(l: TcpListener, me: SocketAddr, stop: Arc<AtomicBool>, requests: Arc<AtomicU64>) {
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((s, _)) => {
                let stop = stop.clone();
                let requests = requests.clone();
                let _ = std::thread::Builder::new()
                    .name("demo-origin-conn".into())
                    .spawn(move || {
                        let _ = serve(s, me, &stop, &requests);
                    });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn serve(
    mut s: TcpStream,
    me: SocketAddr,
    stop: &AtomicBool,
    requests: &AtomicU64,
) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_millis(250)))?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        // One complete request head (and its body, if any) from the buffer.
        let (head_len, method, path, inm, body_len, close) = loop {
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut hs);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let get = |name: &str| {
                        req.headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
                    };
                    let body_len = get("content-length")
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    let close = req.version == Some(0)
                        || get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
                    break (
                        n,
                        req.method.unwrap_or("").to_string(),
                        req.path.unwrap_or("/").to_string(),
                        get("if-none-match"),
                        body_len,
                        close,
                    );
                }
                Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => {}
                _ => {
                    s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
                    return Ok(());
                }
            }
            match s.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        };
        while buf.len() < head_len + body_len {
            match s.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        buf.drain(..head_len + body_len);
        requests.fetch_add(1, Ordering::Relaxed);
        let date = format_date(unix_now());
        let conn = if close { "Connection: close\r\n" } else { "" };
        match method.as_str() {
            "GET" | "HEAD" => {
                let max_age = path
                    .split_once('?')
                    .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("max-age=")))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(60);
                let etag = etag_of_path(&path);
                let common = format!(
                    "Date: {date}\r\nServer: popnet-demo-origin\r\nETag: {etag}\r\nLast-Modified: {}\r\nCache-Control: public, max-age={max_age}\r\nX-Origin: {me}\r\n{conn}",
                    format_date(DEMO_LAST_MODIFIED)
                );
                if inm.as_deref() == Some(etag.as_str()) {
                    write!(s, "HTTP/1.1 304 Not Modified\r\n{common}\r\n")?;
                } else {
                    let body = body_of_path(&path);
                    write!(
                        s,
                        "HTTP/1.1 200 OK\r\n{common}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )?;
                    if method == "GET" {
                        s.write_all(&body)?;
                    }
                }
            }
            "POST" | "PUT" | "PATCH" | "DELETE" => {
                write!(
                    s,
                    "HTTP/1.1 200 OK\r\nDate: {date}\r\nServer: popnet-demo-origin\r\nCache-Control: no-store\r\nX-Origin: {me}\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n{conn}\r\naccepted\n"
                )?;
            }
            _ => {
                write!(
                    s,
                    "HTTP/1.1 405 Method Not Allowed\r\nDate: {date}\r\nAllow: GET, HEAD, POST, PUT, PATCH, DELETE\r\nContent-Length: 0\r\n{conn}\r\n"
                )?;
            }
        }
        if close {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_bodies() {
        assert_eq!(size_of_path("/obj/1k"), 1024);
        assert_eq!(size_of_path("/obj/1m"), 1 << 20);
        assert_eq!(size_of_path("/a/300?x=1"), 300);
        assert_eq!(size_of_path("/a/2k.bin"), 2048);
        assert_eq!(size_of_path("/anything"), 1024);
        assert_eq!(size_of_path("/huge/100000m"), MAX_DEMO_BODY);
        assert_eq!(body_of_path("/obj/1k"), body_of_path("/obj/1k?max-age=5"));
        assert_ne!(body_of_path("/a/1k"), body_of_path("/b/1k"));
        assert_ne!(etag_of_path("/a/1k"), etag_of_path("/a/2k"));
    }
}
