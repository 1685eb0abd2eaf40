//! HTTP/1.1 message syntax (RFC 9110, 9112): request heads and their framing rules, chunked bodies, ranges, dates.
//!
//! [`parse_request`] reads a request head with `httparse` (no allocation) and applies
//! the rules a proxy needs to stay in sync with its client: one `Host`, a request
//! target in origin or absolute form, `Content-Length` and `Transfer-Encoding` never
//! together (request smuggling), only the `chunked` coding, bounded head, line and
//! header counts. Every rejection is a [`Reject`] with its status code and a message.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest request head (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Longest request target.
pub const MAX_TARGET: usize = 8 * 1024;
/// Most header fields in a request head.
pub const MAX_HEADERS: usize = 96;

/// Methods the cache distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
        }
    }

    /// Unsafe methods invalidate what the cache holds for their target (RFC 9111 §4.4).
    pub fn is_unsafe(self) -> bool {
        matches!(
            self,
            Method::Post | Method::Put | Method::Patch | Method::Delete
        )
    }
}

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// A parsed and validated request head, borrowing from the receive buffer.
#[derive(Debug)]
pub struct Request<'b, 'h> {
    pub method: Method,
    /// The request target in origin form (`/path?query`).
    pub target: &'b str,
    /// The host (from `Host` or an absolute-form target), as sent (may carry a port).
    pub host: &'b str,
    pub http10: bool,
    /// The client wants the connection kept open after this request.
    pub keep_alive: bool,
    pub body: BodyFraming,
    pub expect_continue: bool,
    pub headers: &'h [httparse::Header<'b>],
    /// Bytes of the head, CRLF CRLF included.
    pub head_len: usize,
}

impl Request<'_, '_> {
    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        header(self.headers, name)
    }
}

/// The first value of `name` among `headers`.
pub fn header<'b>(headers: &[httparse::Header<'b>], name: &str) -> Option<&'b [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Why a request is refused before it is served; the connection is closed after the
/// error response, since where the next request starts is no longer certain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reject {
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    #[error("request head larger than {MAX_HEAD} bytes or more than {MAX_HEADERS} header fields")]
    HeadTooLarge,
    #[error("request target longer than {MAX_TARGET} bytes")]
    UriTooLong,
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
    #[error("request body larger than the configured max_request_body")]
    BodyTooLarge,
    #[error("the request took too long to arrive")]
    Timeout,
}

impl Reject {
    pub fn status(&self) -> u16 {
        match self {
            Reject::BadRequest(_) => 400,
            Reject::HeadTooLarge => 431,
            Reject::UriTooLong => 414,
            Reject::NotImplemented(_) => 501,
            Reject::BodyTooLarge => 413,
            Reject::Timeout => 408,
        }
    }
}

/// Parses the request head at the start of `buf`. `Ok(None)`: incomplete so far.
pub fn parse_request<'b, 'h>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>; MAX_HEADERS],
) -> Result<Option<Request<'b, 'h>>, Reject> {
    let mut req = httparse::Request::new(headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= MAX_HEAD {
                return Err(too_large(buf));
            }
            // A request line longer than any target we accept will never be served.
            if !buf.contains(&b'\n') && buf.len() > MAX_TARGET + 64 {
                return Err(Reject::UriTooLong);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(Reject::HeadTooLarge),
        Err(httparse::Error::Version) => {
            return Err(Reject::BadRequest("unsupported HTTP version"));
        }
        Err(httparse::Error::Token) => {
            return Err(Reject::BadRequest("invalid token in the request line"));
        }
        Err(httparse::Error::HeaderName) => {
            return Err(Reject::BadRequest("invalid header field name"));
        }
        Err(httparse::Error::HeaderValue) => {
            return Err(Reject::BadRequest("invalid header field value"));
        }
        Err(httparse::Error::NewLine) => return Err(Reject::BadRequest("invalid line ending")),
        Err(_) => return Err(Reject::BadRequest("unparsable request head")),
    };
    if head_len > MAX_HEAD {
        return Err(too_large(buf));
    }
    let method_s = req.method.unwrap_or("");
    let raw_target = req.path.unwrap_or("");
    let http10 = req.version == Some(0);
    let headers: &'h [httparse::Header<'b>] = req.headers;
    if raw_target.len() > MAX_TARGET {
        return Err(Reject::UriTooLong);
    }
    let method = match method_s {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        "CONNECT" => {
            return Err(Reject::NotImplemented(
                "CONNECT: this is not a forward proxy",
            ));
        }
        "TRACE" => return Err(Reject::NotImplemented("TRACE is disabled")),
        _ => return Err(Reject::NotImplemented("unknown method")),
    };

    let mut host_hdr: Option<&'b str> = None;
    let mut hosts = 0;
    let mut length: Option<u64> = None;
    let mut te: Option<&'b [u8]> = None;
    let mut te_count = 0;
    let mut close = false;
    let mut keep = false;
    let mut expect_continue = false;
    for h in headers {
        let n = h.name;
        if n.eq_ignore_ascii_case("host") {
            hosts += 1;
            host_hdr = Some(
                std::str::from_utf8(h.value)
                    .map_err(|_| Reject::BadRequest("Host is not ASCII"))?
                    .trim(),
            );
        } else if n.eq_ignore_ascii_case("content-length") {
            for part in h.value.split(|&b| b == b',') {
                let v =
                    parse_u64(trim(part)).ok_or(Reject::BadRequest("invalid Content-Length"))?;
                if length.is_some_and(|l| l != v) {
                    return Err(Reject::BadRequest("conflicting Content-Length values"));
                }
                length = Some(v);
            }
        } else if n.eq_ignore_ascii_case("transfer-encoding") {
            te_count += 1;
            te = Some(h.value);
        } else if n.eq_ignore_ascii_case("connection") {
            for t in h.value.split(|&b| b == b',') {
                let t = trim(t);
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    keep = true;
                }
            }
        } else if n.eq_ignore_ascii_case("expect") {
            if trim(h.value).eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(Reject::BadRequest("unsupported Expect"));
            }
        }
    }

    let body = match (te, length) {
        (Some(_), Some(_)) => {
            return Err(Reject::BadRequest(
                "both Content-Length and Transfer-Encoding (refused: request smuggling)",
            ));
        }
        (Some(_), None) if http10 => {
            return Err(Reject::BadRequest(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        (Some(v), None) => {
            if te_count > 1 {
                return Err(Reject::NotImplemented(
                    "only a single Transfer-Encoding: chunked is supported",
                ));
            }
            let codings: Vec<&[u8]> = v.split(|&b| b == b',').map(trim).collect();
            match codings.as_slice() {
                [c] if c.eq_ignore_ascii_case(b"chunked") => BodyFraming::Chunked,
                cs if cs
                    .last()
                    .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")) =>
                {
                    return Err(Reject::NotImplemented(
                        "transfer codings other than chunked are not supported",
                    ));
                }
                cs if cs.iter().any(|c| c.eq_ignore_ascii_case(b"chunked")) => {
                    return Err(Reject::BadRequest(
                        "chunked is not the final transfer coding",
                    ));
                }
                _ => {
                    return Err(Reject::NotImplemented(
                        "transfer codings other than chunked are not supported",
                    ));
                }
            }
        }
        (None, Some(0)) | (None, None) => BodyFraming::None,
        (None, Some(n)) => BodyFraming::Length(n),
    };

    // The request target: origin form, or absolute form whose authority wins over Host.
    let (target, abs_host) = if raw_target.starts_with('/') {
        (raw_target, None)
    } else if let Some(rest) = strip_prefix_ci(raw_target, "http://") {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (auth, path) = rest.split_at(end);
        if auth.is_empty() || auth.contains('@') {
            return Err(Reject::BadRequest(
                "invalid authority in the request target",
            ));
        }
        if !path.starts_with('/') {
            return Err(Reject::BadRequest(
                "an absolute request target needs a path (e.g. http://host/)",
            ));
        }
        (path, Some(auth))
    } else if raw_target == "*" && method == Method::Options {
        ("*", None)
    } else {
        return Err(Reject::BadRequest(
            "request target is not a path or an http URL",
        ));
    };
    if target.bytes().any(|b| b == b'#' || b <= b' ' || b == 0x7f) {
        return Err(Reject::BadRequest(
            "invalid character in the request target",
        ));
    }
    if hosts > 1 {
        return Err(Reject::BadRequest("more than one Host header"));
    }
    let host = match (abs_host, host_hdr) {
        (Some(a), _) => a,
        (None, Some(h)) if !h.is_empty() => h,
        (None, _) if http10 => "",
        (None, _) => return Err(Reject::BadRequest("missing Host header")),
    };
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']' | b'_'))
    {
        return Err(Reject::BadRequest("invalid Host"));
    }
    let keep_alive = if http10 { keep && !close } else { !close };
    Ok(Some(Request {
        method,
        target,
        host,
        http10,
        keep_alive,
        body,
        expect_continue,
        headers,
        head_len,
    }))
}

fn too_large(buf: &[u8]) -> Reject {
    let first_line = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    if first_line > MAX_TARGET {
        Reject::UriTooLong
    } else {
        Reject::HeadTooLarge
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len()
        && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes()))
    .then(|| &s[prefix.len()..])
}

/// Trims optional whitespace (SP, HTAB) at both ends.
pub fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// A decimal number of at most 19 digits.
pub fn parse_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Header fields that only concern one connection (RFC 9110 §7.6.1), never forwarded
/// or stored.
pub fn is_hop_by_hop(name: &str) -> bool {
    const HOP: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// The field names listed in `Connection` headers, which are hop-by-hop too.
pub fn connection_tokens<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> Vec<String> {
    let mut out = Vec::new();
    for (n, v) in headers {
        if n.eq_ignore_ascii_case("connection") {
            for t in v.split(|&b| b == b',') {
                let t = trim(t);
                if !t.is_empty() {
                    out.push(String::from_utf8_lossy(t).to_ascii_lowercase());
                }
            }
        }
    }
    out
}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        421 => "Misdirected Request",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Parses an HTTP date (IMF-fixdate and the obsolete forms) to Unix seconds.
pub fn parse_date(v: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(trim(v)).ok()?;
    let t = httpdate::parse_http_date(s).ok()?;
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Formats Unix seconds as an IMF-fixdate.
pub fn format_date(secs: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

/// A `Date: ...\r\n` line, formatted at most once per second.
pub struct DateLine {
    secs: u64,
    line: String,
}

impl Default for DateLine {
    fn default() -> Self {
        DateLine::new()
    }
}

impl DateLine {
    pub fn new() -> DateLine {
        let secs = unix_now();
        DateLine {
            secs,
            line: format!("Date: {}\r\n", format_date(secs)),
        }
    }

    /// The line for `now` (Unix seconds).
    pub fn get(&mut self, now: u64) -> &str {
        if now != self.secs {
            self.secs = now;
            self.line = format!("Date: {}\r\n", format_date(now));
        }
        &self.line
    }
}

/// A decoding error of a chunked body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    #[error("invalid chunk size line")]
    BadSize,
    #[error("missing CRLF after chunk data")]
    BadDelimiter,
    #[error("chunk extension or trailer section too long")]
    TooLong,
    #[error("chunked body larger than allowed")]
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size {
        digits: u8,
        ext: bool,
    },
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// Reading trailer lines; `line` = bytes of the current line so far.
    Trailer {
        line: usize,
    },
    TrailerLf {
        line: usize,
    },
    Done,
}

/// An incremental decoder of the chunked transfer coding (RFC 9112 §7.1). Trailers are
/// read and dropped.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
    size: u64,
    remaining: u64,
    total: u64,
    limit: u64,
    meta: usize,
}

const MAX_CHUNK_META: usize = 8192;

impl ChunkedDecoder {
    /// A decoder that fails once the decoded body would exceed `limit` bytes.
    pub fn new(limit: u64) -> ChunkedDecoder {
        ChunkedDecoder {
            state: ChunkState::Size {
                digits: 0,
                ext: false,
            },
            size: 0,
            remaining: 0,
            total: 0,
            limit,
            meta: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes from `input`, passing payload slices to `out`. Returns the bytes of
    /// `input` consumed (input after the end of the body is left alone).
    pub fn decode(
        &mut self,
        input: &[u8],
        mut out: impl FnMut(&[u8]),
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Done => return Ok(i),
                ChunkState::Size { digits, ext } => {
                    self.meta += 1;
                    if self.meta > MAX_CHUNK_META {
                        return Err(ChunkError::TooLong);
                    }
                    if ext {
                        if b == b'\r' {
                            self.state = ChunkState::SizeLf;
                        } else if b == b'\n' {
                            return Err(ChunkError::BadSize);
                        }
                    } else if let Some(d) = (b as char).to_digit(16) {
                        if digits >= 15 {
                            return Err(ChunkError::BadSize);
                        }
                        self.size = self.size * 16 + u64::from(d);
                        self.state = ChunkState::Size {
                            digits: digits + 1,
                            ext: false,
                        };
                    } else if digits > 0 && (b == b';' || b == b' ' || b == b'\t') {
                        self.state = ChunkState::Size { digits, ext: true };
                    } else if digits > 0 && b == b'\r' {
                        self.state = ChunkState::SizeLf;
                    } else {
                        return Err(ChunkError::BadSize);
                    }
                    i += 1;
                }
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadSize);
                    }
                    i += 1;
                    if self.size == 0 {
                        self.state = ChunkState::Trailer { line: 0 };
                    } else {
                        self.total = self.total.saturating_add(self.size);
                        if self.total > self.limit {
                            return Err(ChunkError::TooLarge);
                        }
                        self.remaining = self.size;
                        self.state = ChunkState::Data;
                    }
                }
                ChunkState::Data => {
                    let n = ((input.len() - i) as u64).min(self.remaining) as usize;
                    out(&input[i..i + n]);
                    i += n;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = ChunkState::DataCr;
                    }
                }
                ChunkState::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::BadDelimiter);
                    }
                    self.state = ChunkState::DataLf;
                    i += 1;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadDelimiter);
                    }
                    self.size = 0;
                    self.meta = 0;
                    self.state = ChunkState::Size {
                        digits: 0,
                        ext: false,
                    };
                    i += 1;
                }
                ChunkState::Trailer { line } => {
                    self.meta += 1;
                    if self.meta > MAX_CHUNK_META {
                        return Err(ChunkError::TooLong);
                    }
                    if b == b'\r' {
                        self.state = ChunkState::TrailerLf { line };
                    } else if b == b'\n' {
                        return Err(ChunkError::BadDelimiter);
                    } else {
                        self.state = ChunkState::Trailer { line: line + 1 };
                    }
                    i += 1;
                }
                ChunkState::TrailerLf { line } => {
                    if b != b'\n' {
                        return Err(ChunkError::BadDelimiter);
                    }
                    i += 1;
                    self.state = if line == 0 {
                        ChunkState::Done
                    } else {
                        ChunkState::Trailer { line: 0 }
                    };
                }
            }
        }
        Ok(i)
    }
}

/// A byte range of a representation, resolved against its length: `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

/// What a `Range` header asks of a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAsk {
    /// No usable single range (absent, several ranges, other units, syntax errors):
    /// serve the whole representation (RFC 9110 §14.2 allows ignoring Range).
    Full,
    Partial(ByteRange),
    /// 416.
    Unsatisfiable,
}

/// Resolves a `Range` header value against a length.
pub fn resolve_range(value: &[u8], len: u64) -> RangeAsk {
    let v = trim(value);
    let Some(spec) = v
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case(b"bytes="))
        .map(|_| trim(&v[6..]))
    else {
        return RangeAsk::Full;
    };
    if spec.contains(&b',') {
        return RangeAsk::Full;
    }
    let Some(dash) = spec.iter().position(|&b| b == b'-') else {
        return RangeAsk::Full;
    };
    let (a, b) = (trim(&spec[..dash]), trim(&spec[dash + 1..]));
    match (a.is_empty(), b.is_empty()) {
        (true, true) => RangeAsk::Full,
        (true, false) => {
            // Suffix: the last `n` bytes.
            let Some(n) = parse_u64(b) else {
                return RangeAsk::Full;
            };
            if n == 0 || len == 0 {
                return RangeAsk::Unsatisfiable;
            }
            RangeAsk::Partial(ByteRange {
                start: len.saturating_sub(n),
                end: len,
            })
        }
        (false, _) => {
            let Some(start) = parse_u64(a) else {
                return RangeAsk::Full;
            };
            let last = if b.is_empty() {
                None
            } else {
                match parse_u64(b) {
                    Some(l) if l >= start => Some(l),
                    _ => return RangeAsk::Full,
                }
            };
            if start >= len {
                return RangeAsk::Unsatisfiable;
            }
            let end = last.map_or(len, |l| (l + 1).min(len));
            RangeAsk::Partial(ByteRange { start, end })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Summary = (Method, String, String, BodyFraming, bool);

    fn parse(text: &str) -> Result<Option<Summary>, Reject> {
        let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
        parse_request(text.as_bytes(), &mut h).map(|r| {
            r.map(|r| {
                (
                    r.method,
                    r.target.to_string(),
                    r.host.to_string(),
                    r.body,
                    r.keep_alive,
                )
            })
        })
    }

    #[test]
    fn framing_rules() {
        let ok = parse("GET /a?b HTTP/1.1\r\nHost: X.example\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(ok.0, Method::Get);
        assert_eq!(ok.1, "/a?b");
        assert!(ok.4);
        let abs = parse("GET http://h.example/p HTTP/1.1\r\nHost: other\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((abs.1.as_str(), abs.2.as_str()), ("/p", "h.example"));
        assert_eq!(
            parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
                .unwrap_err()
                .status(),
            501
        );
        assert_eq!(
            parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 4\r\n\r\n")
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            parse("GET / HTTP/1.1\r\n\r\n").unwrap_err(),
            Reject::BadRequest("missing Host header")
        );
        assert_eq!(
            parse("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            parse("BREW / HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap_err()
                .status(),
            501
        );
        assert!(parse("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        let ten = parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!ten.4);
        let long = format!(
            "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
            "a".repeat(MAX_TARGET + 10)
        );
        assert_eq!(parse(&long).unwrap_err(), Reject::UriTooLong);
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD)
        );
        assert_eq!(parse(&big).unwrap_err(), Reject::HeadTooLarge);
    }

    #[test]
    fn chunked_decoding() {
        let mut d = ChunkedDecoder::new(1000);
        let mut out = Vec::new();
        let input = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        // Feed byte by byte to exercise every state boundary.
        let mut used = 0;
        for i in 0..input.len() {
            used += d
                .decode(&input[i..i + 1], |b| out.extend_from_slice(b))
                .unwrap();
            if d.is_done() {
                break;
            }
        }
        assert!(d.is_done());
        assert_eq!(out, b"hello world");
        assert_eq!(&input[used..], b"NEXT");
        let mut d = ChunkedDecoder::new(4);
        assert_eq!(
            d.decode(b"5\r\nhello\r\n", |_| {}),
            Err(ChunkError::TooLarge)
        );
        let mut d = ChunkedDecoder::new(100);
        assert_eq!(d.decode(b"zz\r\n", |_| {}), Err(ChunkError::BadSize));
        let mut d = ChunkedDecoder::new(100);
        assert_eq!(d.decode(b"1\r\nab", |_| {}), Err(ChunkError::BadDelimiter));
    }

    #[test]
    fn ranges() {
        let r = |s: &str| resolve_range(s.as_bytes(), 100);
        let p = |start, end| RangeAsk::Partial(ByteRange { start, end });
        assert_eq!(r("bytes=0-9"), p(0, 10));
        assert_eq!(r("bytes=90-"), p(90, 100));
        assert_eq!(r("bytes=-10"), p(90, 100));
        assert_eq!(r("bytes=-1000"), p(0, 100));
        assert_eq!(r("bytes=50-5000"), p(50, 100));
        assert_eq!(r("bytes=100-"), RangeAsk::Unsatisfiable);
        assert_eq!(r("bytes=-0"), RangeAsk::Unsatisfiable);
        assert_eq!(r("bytes=0-1,5-6"), RangeAsk::Full);
        assert_eq!(r("items=0-1"), RangeAsk::Full);
        assert_eq!(r("bytes=5-1"), RangeAsk::Full);
    }
}
