//! Loopback servers for the probe's tests: a tiny HTTP server, closed ports, a listener whose backlog is full.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the test HTTP server answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Send the body chunked (in three pieces).
    pub chunked: bool,
    /// No Content-Length: the body ends with the connection.
    pub no_length: bool,
}

impl Reply {
    pub fn ok(body: &str) -> Reply {
        Reply {
            status: 200,
            body: body.to_string(),
            delay: Duration::ZERO,
            chunked: false,
            no_length: false,
        }
    }
}

/// A running test HTTP server (one thread per connection).
pub struct HttpServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    /// Connections open now, and the most open at once.
    pub open: Arc<AtomicUsize>,
    pub max_open: Arc<AtomicUsize>,
    /// When each connection was accepted.
    pub accepted: Arc<Mutex<Vec<Instant>>>,
}

impl HttpServer {
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

pub fn http_server(reply: Reply) -> HttpServer {
    http_server_on("127.0.0.1:0".parse().unwrap(), reply)
}

pub fn http_server_on(at: SocketAddr, reply: Reply) -> HttpServer {
    let l = TcpListener::bind(at).unwrap();
    let addr = l.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let open = Arc::new(AtomicUsize::new(0));
    let max_open = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let (rq, op, mx, ac) = (
        requests.clone(),
        open.clone(),
        max_open.clone(),
        accepted.clone(),
    );
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            ac.lock().unwrap().push(Instant::now());
            let n = op.fetch_add(1, Ordering::SeqCst) + 1;
            mx.fetch_max(n, Ordering::SeqCst);
            let (reply, rq, op) = (reply.clone(), rq.clone(), op.clone());
            std::thread::spawn(move || {
                // A connection counts as open until its answer is complete: the count
                // drops before the last bytes go out, so it never runs ahead of the
                // client's own count of open checks.
                let mut closed = false;
                serve(s, &reply, &rq, &mut || {
                    op.fetch_sub(1, Ordering::SeqCst);
                    closed = true;
                });
                if !closed {
                    op.fetch_sub(1, Ordering::SeqCst);
                }
            });
        }
    });
    HttpServer {
        addr,
        requests,
        open,
        max_open,
        accepted,
    }
}

fn serve(
    mut s: TcpStream,
    reply: &Reply,
    requests: &Mutex<Vec<String>>,
    answered: &mut dyn FnMut(),
) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    requests
        .lock()
        .unwrap()
        .push(String::from_utf8_lossy(&head).into_owned());
    std::thread::sleep(reply.delay);
    let mut out = format!("HTTP/1.1 {} Test\r\nConnection: close\r\n", reply.status);
    if reply.chunked {
        out.push_str("Transfer-Encoding: chunked\r\n\r\n");
        let b = reply.body.as_bytes();
        let third = b.len() / 3;
        for part in [&b[..third], &b[third..2 * third], &b[2 * third..]] {
            out.push_str(&format!("{:x}\r\n", part.len()));
            out.push_str(std::str::from_utf8(part).unwrap());
            out.push_str("\r\n");
        }
        out.push_str("0\r\n\r\n");
    } else if reply.no_length {
        out.push_str("\r\n");
        out.push_str(&reply.body);
    } else {
        out.push_str(&format!("Content-Length: {}\r\n\r\n", reply.body.len()));
        out.push_str(&reply.body);
    }
    // Written in two pieces, so readers see the body arrive after the head.
    let bytes = out.as_bytes();
    let half = bytes.len() / 2;
    let _ = s.write_all(&bytes[..half]);
    let _ = s.flush();
    std::thread::sleep(Duration::from_millis(2));
    answered();
    let _ = s.write_all(&bytes[half..]);
}

/// A loopback port nothing listens on (TCP and UDP) right now.
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// A listener that never accepts, its backlog filled: further SYNs are dropped, so a
/// connect to it neither succeeds nor is refused. Keep the returned value alive.
pub fn full_backlog() -> ((socket2::Socket, Vec<TcpStream>), SocketAddr) {
    full_backlog_on("127.0.0.1:0".parse().unwrap())
}

/// [`full_backlog`] on a given address.
pub fn full_backlog_on(at: SocketAddr) -> ((socket2::Socket, Vec<TcpStream>), SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(at), Type::STREAM, None).unwrap();
    s.bind(&at.into()).unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let mut held = Vec::new();
    for _ in 0..16 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(c) => held.push(c),
            Err(_) => return ((s, held), addr),
        }
    }
    panic!("the backlog of {addr} never filled");
}

/// A UDP port on 0.0.0.0 that nothing is bound to right now (datagrams to it draw an
/// ICMP port unreachable).
pub fn closed_udp_port() -> u16 {
    let u = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    u.local_addr().unwrap().port()
}
