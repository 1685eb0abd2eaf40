//! A small blocking HTTP/1.1 server for the admin API: bounded heads and bodies, timeouts, one request per connection.
//!
//! Every connection gets a thread, at most [`MAX_CONNECTIONS`] at once (more get 503).
//! A request head must arrive within [`HEAD_TIMEOUT`] and hold at most [`MAX_HEAD`]
//! bytes, a body at most [`MAX_BODY`] bytes with a `Content-Length` (chunked bodies
//! get 411); anything malformed gets a 400 naming the problem. The handler sees a
//! parsed [`Request`] and returns a [`Response`]; a panic in a handler is caught and
//! answered 500, so one bad request cannot take the listener down.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const MAX_CONNECTIONS: usize = 64;
pub const MAX_HEAD: usize = 16 * 1024;
pub const MAX_BODY: usize = 64 * 1024;
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path, percent-decoded.
    pub path: String,
    pub query: HashMap<String, String>,
    /// Header names lowercased; a repeated header keeps its first value.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub peer: SocketAddr,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// The value of a cookie.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.header("cookie")?.split(';').find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
    }

    /// The body as an `application/x-www-form-urlencoded` form.
    pub fn form(&self) -> Result<HashMap<String, String>, String> {
        let ct = self.header("content-type").unwrap_or("");
        if !ct.starts_with("application/x-www-form-urlencoded") {
            return Err(format!(
                "expected a form (application/x-www-form-urlencoded), got {ct:?}"
            ));
        }
        let text =
            std::str::from_utf8(&self.body).map_err(|_| "the form is not UTF-8".to_string())?;
        parse_query(text)
    }

    /// The bearer token of an `Authorization` header.
    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization")?
            .strip_prefix("Bearer ")
            .map(str::trim)
    }
}

/// A response to write.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type: content_type.into(),
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Response {
        let mut b: String = body.into();
        if !b.ends_with('\n') {
            b.push('\n');
        }
        Response::new(status, "text/plain; charset=utf-8", b)
    }

    pub fn json<T: serde::Serialize>(status: u16, v: &T) -> Response {
        match serde_json::to_vec_pretty(v) {
            Ok(mut b) => {
                b.push(b'\n');
                Response::new(status, "application/json", b)
            }
            Err(e) => Response::text(500, format!("cannot encode the answer: {e}")),
        }
    }

    pub fn html(status: u16, body: String) -> Response {
        Response::new(status, "text/html; charset=utf-8", body)
    }

    pub fn redirect(to: &str) -> Response {
        let mut r = Response::new(303, "text/plain; charset=utf-8", format!("see {to}\n"));
        r.headers.push(("Location".into(), to.into()));
        r
    }

    pub fn with_header(mut self, k: &str, v: impl Into<String>) -> Response {
        self.headers.push((k.into(), v.into()));
        self
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes (and, in forms, turns `+` into a space).
pub fn percent_decode(s: &str, plus_is_space: bool) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let (Some(h), Some(l)) = (
                    b.get(i + 1).copied().and_then(hex_val),
                    b.get(i + 2).copied().and_then(hex_val),
                ) else {
                    return Err(format!("bad percent-escape in {s:?}"));
                };
                out.push(h << 4 | l);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

/// Parses `a=1&b=2` (form encoding); a repeated key keeps its first value.
pub fn parse_query(q: &str) -> Result<HashMap<String, String>, String> {
    let mut m = HashMap::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k, true)?;
        let v = percent_decode(v, true)?;
        m.entry(k).or_insert(v);
    }
    Ok(m)
}

/// Percent-encodes a query value.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Counters of a listener.
#[derive(Debug, Default)]
pub struct HttpCounters {
    pub requests: AtomicU64,
    pub bad_requests: AtomicU64,
    pub refused: AtomicU64,
    pub handler_panics: AtomicU64,
    pub open: AtomicUsize,
}

pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Serves `listener` with `handler` until `stop`.
pub fn serve(
    name: &str,
    listener: TcpListener,
    handler: Handler,
    counters: Arc<HttpCounters>,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let tname = name.to_string();
    std::thread::Builder::new()
        .name(tname.clone())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, peer)) => {
                        if counters.open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                            counters.refused.fetch_add(1, Ordering::Relaxed);
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
                            let _ = write_response(
                                &mut s,
                                &Response::text(503, "busy; try again"),
                                false,
                            );
                            continue;
                        }
                        counters.open.fetch_add(1, Ordering::Relaxed);
                        let (h, c) = (handler.clone(), counters.clone());
                        let spawned = std::thread::Builder::new()
                            .name(format!("{tname}-conn"))
                            .spawn(move || {
                                connection(s, peer, &h, &c);
                                c.open.fetch_sub(1, Ordering::Relaxed);
                            });
                        if spawned.is_err() {
                            counters.open.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "http accept failed");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
}

/// Why a request could not be read.
enum ReadError {
    Closed,
    Reply(Response),
}

fn bad(status: u16, msg: impl Into<String>) -> ReadError {
    ReadError::Reply(Response::text(status, msg))
}

fn read_request(s: &mut TcpStream, peer: SocketAddr) -> Result<Request, ReadError> {
    let started = Instant::now();
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    let head_len;
    let mut req_line;
    loop {
        if started.elapsed() > HEAD_TIMEOUT {
            return Err(bad(408, "the request head took too long"));
        }
        let n = match s.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Err(ReadError::Closed),
            Ok(0) => return Err(bad(400, "the connection closed inside the request head")),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if buf.is_empty() {
                    return Err(ReadError::Closed);
                }
                return Err(bad(408, "the request head took too long"));
            }
            Err(_) => return Err(ReadError::Closed),
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Request::new(&mut headers);
        match r.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                head_len = len;
                req_line = (
                    r.method.unwrap_or("").to_string(),
                    r.path.unwrap_or("").to_string(),
                    HashMap::new(),
                );
                for h in r.headers.iter() {
                    let v = std::str::from_utf8(h.value)
                        .map_err(|_| bad(400, format!("header {} is not UTF-8", h.name)))?;
                    req_line
                        .2
                        .entry(h.name.to_ascii_lowercase())
                        .or_insert_with(|| v.trim().to_string());
                }
                break;
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return Err(bad(
                        431,
                        format!("the request head is over {MAX_HEAD} bytes"),
                    ));
                }
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(bad(431, "more than 64 headers"));
            }
            Err(e) => return Err(bad(400, format!("malformed request: {e}"))),
        }
    }
    if head_len > MAX_HEAD {
        return Err(bad(
            431,
            format!("the request head is over {MAX_HEAD} bytes"),
        ));
    }
    let (method, target, headers) = req_line;
    if headers.contains_key("transfer-encoding") {
        return Err(bad(
            411,
            "chunked bodies are not accepted; send Content-Length",
        ));
    }
    let len = match headers.get("content-length") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| bad(400, format!("Content-Length {v:?} is not a number")))?,
    };
    if len > MAX_BODY {
        return Err(bad(413, format!("the body is over {MAX_BODY} bytes")));
    }
    let mut body = buf[head_len..].to_vec();
    if body.len() > len {
        body.truncate(len); // one request per connection: anything after it is ignored
    }
    while body.len() < len {
        if started.elapsed() > HEAD_TIMEOUT + IO_TIMEOUT {
            return Err(bad(408, "the request body took too long"));
        }
        let want = (len - body.len()).min(chunk.len());
        match s.read(&mut chunk[..want]) {
            Ok(0) => return Err(bad(400, "the connection closed inside the body")),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(_) => return Err(bad(408, "the request body took too long")),
        }
    }
    if target.len() > 4096 {
        return Err(bad(414, "the request target is over 4096 bytes"));
    }
    if !target.starts_with('/') {
        return Err(bad(
            400,
            "the request target must be a path starting with /",
        ));
    }
    let (raw_path, raw_query) = target.split_once('?').unwrap_or((&target, ""));
    let path = percent_decode(raw_path, false).map_err(|e| bad(400, e))?;
    if path.contains('\0') {
        return Err(bad(400, "the path holds a NUL byte"));
    }
    let query = parse_query(raw_query).map_err(|e| bad(400, e))?;
    Ok(Request {
        method,
        path,
        query,
        headers,
        body,
        peer,
    })
}

fn write_response(s: &mut TcpStream, r: &Response, head_only: bool) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    for (k, v) in &r.headers {
        // Handlers never put line breaks into header values; refuse to if one did.
        if k.contains(['\r', '\n']) || v.contains(['\r', '\n']) {
            continue;
        }
        head.push_str(k);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    if !head_only {
        s.write_all(&r.body)?;
    }
    s.flush()
}

fn connection(mut s: TcpStream, peer: SocketAddr, handler: &Handler, c: &HttpCounters) {
    if s.set_nonblocking(false).is_err()
        || s.set_read_timeout(Some(IO_TIMEOUT)).is_err()
        || s.set_write_timeout(Some(IO_TIMEOUT)).is_err()
    {
        return;
    }
    let resp = match read_request(&mut s, peer) {
        Err(ReadError::Closed) => return,
        Err(ReadError::Reply(r)) => {
            c.bad_requests.fetch_add(1, Ordering::Relaxed);
            r
        }
        Ok(req) => {
            c.requests.fetch_add(1, Ordering::Relaxed);
            let head_only = req.method == "HEAD";
            let r = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(&req))) {
                Ok(r) => r,
                Err(_) => {
                    c.handler_panics.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(path = %req.path, "http handler panicked");
                    Response::text(500, "internal error")
                }
            };
            let _ = write_response(&mut s, &r, head_only);
            let _ = s.shutdown(std::net::Shutdown::Write);
            return;
        }
    };
    let _ = write_response(&mut s, &resp, false);
    let _ = s.shutdown(std::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode() {
        let q = parse_query("a=1+2&b=%2Fx%3F&a=dup&c").unwrap();
        assert_eq!(q["a"], "1 2");
        assert_eq!(q["b"], "/x?");
        assert_eq!(q["c"], "");
        assert!(parse_query("a=%zz").is_err());
        assert!(parse_query("a=%ff").is_err()); // not UTF-8
        assert_eq!(percent_decode("/a%20b+c", false).unwrap(), "/a b+c");
        assert_eq!(encode_component("a b/é"), "a%20b%2F%C3%A9");
    }
}
