//! The plumbing of popnet's small admin listeners (the probe's and the DNS server's): an accept thread, one bounded, token-checked GET per connection, plain replies.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HEAD: usize = 16 * 1024;

/// A GET that passed the token check: its path and query (without the `?`).
pub struct AdminRequest {
    pub path: String,
    pub query: String,
}

/// Runs `handle` for every connection on `listener`, on a thread named `name`, until
/// `stopped()` says so (checked at least every 20 ms).
pub fn serve(
    name: &str,
    listener: TcpListener,
    stopped: impl Fn() -> bool + Send + 'static,
    handle: impl Fn(TcpStream) -> io::Result<()> + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let what = name.to_string();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            while !stopped() {
                match listener.accept() {
                    Ok((s, _)) => {
                        if let Err(e) = handle(s) {
                            tracing::debug!(listener = %what, error = %e, "admin request failed");
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => {
                        tracing::warn!(listener = %what, error = %e, "admin accept failed");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
}

/// Reads one request head from `s` (blocking, with timeouts). A head that is too large
/// or malformed, a missing or wrong `Authorization: Bearer <token hex>` where `token` is
/// set, and any method but GET are answered here (431, 400, 401, 405) and give `None`,
/// as does a connection closed before a whole head.
pub fn read_request(s: &mut TcpStream, token: Option<&[u8]>) -> io::Result<Option<AdminRequest>> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let (method, target, auth) = loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let auth = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                    .map(|h| h.value.to_vec());
                break (
                    req.method.unwrap_or("").to_string(),
                    req.path.unwrap_or("/").to_string(),
                    auth,
                );
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                reply(s, 431, "text/plain", b"request head too large\n")?;
                return Ok(None);
            }
            Err(e) => {
                reply(
                    s,
                    400,
                    "text/plain",
                    format!("bad request: {e}\n").as_bytes(),
                )?;
                return Ok(None);
            }
        }
    };
    if let Some(token) = token {
        let want = format!("Bearer {}", hex::encode(token));
        if auth.as_deref() != Some(want.as_bytes()) {
            reply(
                s,
                401,
                "text/plain",
                b"missing or wrong admin token (Authorization: Bearer <hex>)\n",
            )?;
            return Ok(None);
        }
    }
    if method != "GET" {
        reply(s, 405, "text/plain", b"only GET is supported\n")?;
        return Ok(None);
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    Ok(Some(AdminRequest {
        path: path.to_string(),
        query: query.to_string(),
    }))
}

/// Writes a whole response and closes the exchange (`Connection: close`).
pub fn reply(s: &mut TcpStream, status: u16, ctype: &str, body: &[u8]) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.flush()
}
