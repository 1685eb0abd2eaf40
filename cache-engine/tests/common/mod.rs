//! Test support: a scriptable origin on a loopback port, configs, the cache started from the library, curl and raw-socket clients.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cache_engine::{CacheOptions, CacheServer};
use popnet_config::Config;

/// A request as the origin saw it.
#[derive(Debug, Clone)]
pub struct OriginReq {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl OriginReq {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A gate the origin waits at in the middle of a body until the test opens it.
#[derive(Default)]
pub struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
    fn wait(&self, max: Duration) {
        let g = self.open.lock().unwrap();
        let _ = self.cv.wait_timeout_while(g, max, |o| !*o).unwrap();
    }
}

/// What the origin answers.
#[derive(Clone)]
pub struct OriginResp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Send the body with chunked transfer coding.
    pub chunked: bool,
    /// Send this many body bytes, then wait for the gate before the rest.
    pub gate: Option<(usize, Arc<Gate>)>,
    /// Never answer (keep the connection open).
    pub hang: bool,
}

impl OriginResp {
    pub fn ok(body: impl Into<Vec<u8>>, headers: &[(&str, &str)]) -> OriginResp {
        OriginResp {
            status: 200,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.into(),
            delay: Duration::ZERO,
            chunked: false,
            gate: None,
            hang: false,
        }
    }

    pub fn status(mut self, s: u16) -> OriginResp {
        self.status = s;
        self
    }

    pub fn delay(mut self, d: Duration) -> OriginResp {
        self.delay = d;
        self
    }
}

type Handler = dyn Fn(&OriginReq) -> OriginResp + Send + Sync;

/// A real HTTP/1.1 origin on 127.0.0.1, answering with a handler, recording requests.
pub struct TestOrigin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<OriginReq>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestOrigin {
    pub fn start(handler: impl Fn(&OriginReq) -> OriginResp + Send + Sync + 'static) -> TestOrigin {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        l.set_nonblocking(true).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let (h, seen, stop) = (handler.clone(), seen2.clone(), stop2.clone());
                        std::thread::spawn(move || serve(s, &*h, &seen, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TestOrigin {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Requests seen so far.
    pub fn requests(&self) -> Vec<OriginReq> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    pub fn total(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Stops the origin: the listener closes (connections are refused) and open
    /// connections are closed.
    pub fn kill(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        // Let connection threads notice.
        std::thread::sleep(Duration::from_millis(300));
    }
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut s: TcpStream, h: &Handler, seen: &Mutex<Vec<OriginReq>>, stop: &AtomicBool) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let (req, used) = loop {
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Request::new(&mut hs);
            if let Ok(httparse::Status::Complete(n)) = r.parse(&buf) {
                let headers: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).to_string(),
                        )
                    })
                    .collect();
                let len = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= n + len {
                    break (
                        OriginReq {
                            method: r.method.unwrap().to_string(),
                            path: r.path.unwrap().to_string(),
                            headers,
                            body: buf[n..n + len].to_vec(),
                        },
                        n + len,
                    );
                }
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match s.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        };
        buf.drain(..used);
        seen.lock().unwrap().push(req.clone());
        let resp = h(&req);
        if resp.hang {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return;
        }
        std::thread::sleep(resp.delay);
        let mut head = format!("HTTP/1.1 {} X\r\n", resp.status);
        for (n, v) in &resp.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        let has_body = req.method != "HEAD" && !matches!(resp.status, 204 | 304);
        if resp.chunked {
            head.push_str("Transfer-Encoding: chunked\r\n");
        } else if has_body || req.method == "HEAD" {
            head.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
        }
        head.push_str("\r\n");
        if s.write_all(head.as_bytes()).is_err() {
            return;
        }
        if !has_body {
            continue;
        }
        let (first, gate) = match &resp.gate {
            Some((n, g)) => (&resp.body[..*n], Some(g.clone())),
            None => (&resp.body[..], None),
        };
        let send = |s: &mut TcpStream, part: &[u8]| -> bool {
            if part.is_empty() {
                return true;
            }
            if resp.chunked {
                s.write_all(format!("{:x}\r\n", part.len()).as_bytes())
                    .is_ok()
                    && s.write_all(part).is_ok()
                    && s.write_all(b"\r\n").is_ok()
            } else {
                s.write_all(part).is_ok()
            }
        };
        if !send(&mut s, first) {
            return;
        }
        if let Some(g) = gate {
            g.wait(Duration::from_secs(30));
            if !send(&mut s, &resp.body[first.len()..]) {
                return;
            }
        }
        if resp.chunked && s.write_all(b"0\r\n\r\n").is_err() {
            return;
        }
    }
}

/// A config with one POP ("t", cache on 127.0.0.1:0) and customer "acme" whose
/// static domain cdn.acme.example is fetched from `origins` (name, address, cost).
/// `cache_extra` is appended to the [pops.cache] table.
pub fn config(origins: &[(&str, SocketAddr, f64)], cache_extra: &str) -> Config {
    let mut t = String::from(
        r#"
[network]
name = "test"
version = 1
zone = "popnet.example"

[probes]
report_key = "b931d3d715699ac5770f3adaa5de1107460e972c72dfc63c6498486c5ae09ce5"

[[pops]]
name = "t"
region = "local"
[pops.dns]
listen = ["127.0.0.1:0"]
reports = "127.0.0.1:0"
admin = "127.0.0.1:0"
[pops.cache]
addresses = ["127.0.0.1"]
listen = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
"#,
    );
    t.push_str(cache_extra);
    t.push_str(
        r#"

[[customers]]
name = "acme"
zones = ["acme.example"]
"#,
    );
    for (name, addr, cost) in origins {
        t.push_str(&format!(
            "\n[[customers.origins]]\nname = \"{name}\"\naddresses = [\"{}\"]\nport = {}\ncost = {cost}\n",
            addr.ip(),
            addr.port()
        ));
    }
    t.push_str(
        r#"
[[customers.domains]]
name = "cdn.acme.example"
kind = "static"

[[customers.domains]]
name = "www.acme.example"
kind = "dynamic"

[[customers.records]]
name = "img.acme.example"
type = "CNAME"
value = "cdn.acme.example"
"#,
    );
    Config::from_toml(&t, "test").unwrap_or_else(|e| panic!("test config: {e}\n{t}"))
}

pub const HOST: &str = "cdn.acme.example";

/// The cache, started from the library on loopback ports.
pub struct Cache {
    pub server: Option<CacheServer>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

impl Cache {
    pub fn start(cfg: &Config) -> Cache {
        Cache::start_workers(cfg, 2)
    }

    pub fn start_workers(cfg: &Config, workers: usize) -> Cache {
        let server = CacheServer::start(
            cfg,
            &CacheOptions {
                workers: Some(workers),
                ..CacheOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("cache start: {e}"));
        Cache {
            addr: server.listen[0],
            admin: server.admin,
            server: Some(server),
        }
    }

    /// An origin and a cache in front of it with `cache_extra` settings.
    pub fn with_origin(
        handler: impl Fn(&OriginReq) -> OriginResp + Send + Sync + 'static,
        cache_extra: &str,
    ) -> (TestOrigin, Cache) {
        let o = TestOrigin::start(handler);
        let c = Cache::start(&config(&[("o1", o.addr, 1.0)], cache_extra));
        (o, c)
    }

    pub fn get(&self, path: &str) -> Resp {
        curl(self.addr, HOST, path, &[])
    }

    pub fn curl(&self, path: &str, args: &[&str]) -> Resp {
        curl(self.addr, HOST, path, args)
    }

    /// GET on the admin listener; status and body.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let r = curl_url(&format!("http://{}{}", self.admin, path), &[]);
        (r.status, String::from_utf8_lossy(&r.body).into_owned())
    }

    pub fn admin_json(&self, path: &str) -> serde_json::Value {
        let (s, b) = self.admin_get(path);
        assert_eq!(s, 200, "GET {path}: {b}");
        serde_json::from_str(&b).unwrap_or_else(|e| panic!("{path}: {e}: {b}"))
    }

    /// POST /purge with a JSON body; status and body.
    pub fn purge(&self, json: &str, token: Option<&str>) -> (u16, String) {
        let mut args = vec![
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            json,
        ];
        let auth;
        if let Some(t) = token {
            auth = format!("Authorization: Bearer {t}");
            args.extend(["-H", &auth]);
        }
        let r = curl_url(&format!("http://{}/purge", self.admin), &args);
        (r.status, String::from_utf8_lossy(&r.body).into_owned())
    }

    pub fn stats(&self) -> serde_json::Value {
        self.admin_json("/stats")
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
    }
}

/// A response as a client saw it.
#[derive(Debug, Clone, Default)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn x_cache(&self) -> &str {
        self.header("x-cache").unwrap_or("-")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Runs curl against `http://addr/path` with a Host header.
pub fn curl(addr: SocketAddr, host: &str, path: &str, args: &[&str]) -> Resp {
    let hdr = format!("Host: {host}");
    let mut all: Vec<&str> = vec!["-H", &hdr];
    all.extend_from_slice(args);
    curl_url(&format!("http://{addr}{path}"), &all)
}

/// Runs curl on a URL; the last response's status, headers and body.
pub fn curl_url(url: &str, args: &[&str]) -> Resp {
    let dir = tempfile::tempdir().unwrap();
    let hfile = dir.path().join("h");
    let bfile = dir.path().join("b");
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "30", "-D"])
        .arg(&hfile)
        .arg("-o")
        .arg(&bfile)
        .args(args)
        .arg(url)
        .output()
        .expect("curl must be installed (apt-get install curl)");
    let heads = std::fs::read_to_string(&hfile).unwrap_or_default();
    let body = std::fs::read(&bfile).unwrap_or_default();
    if heads.is_empty() {
        return Resp {
            status: 0,
            headers: vec![(
                "curl-error".into(),
                String::from_utf8_lossy(&out.stderr).into(),
            )],
            body,
        };
    }
    // The last head block (after any 100 Continue).
    let block = heads
        .split("\r\n\r\n")
        .filter(|b| b.starts_with("HTTP/"))
        .last()
        .unwrap_or("");
    let mut lines = block.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body,
    }
}

/// Sends `bytes` on a fresh connection and reads until the server closes it (or
/// `wait` passes); returns everything read and whether the server closed.
pub fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes).unwrap();
    read_all(&mut s, wait)
}

/// Reads until EOF or `wait`; (bytes, closed).
pub fn read_all(s: &mut TcpStream, wait: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

/// Splits a byte stream into HTTP/1.1 responses (Content-Length or chunked bodies;
/// `head_only` marks responses to HEAD).
pub fn parse_responses(mut data: &[u8], head_only: &[bool]) -> Vec<Resp> {
    let mut out = Vec::new();
    let mut i = 0;
    while !data.is_empty() {
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hs);
        let n = match r.parse(data) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => break,
        };
        let headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).to_string(),
                )
            })
            .collect();
        let status = r.code.unwrap();
        let resp_head = Resp {
            status,
            headers,
            body: Vec::new(),
        };
        data = &data[n..];
        let mut body = Vec::new();
        if !head_only.get(i).copied().unwrap_or(false) && !matches!(status, 100 | 204 | 304) {
            if let Some(len) = resp_head.header("content-length") {
                let len: usize = len.parse().unwrap();
                let len = len.min(data.len());
                body = data[..len].to_vec();
                data = &data[len..];
            } else if resp_head.header("transfer-encoding").is_some() {
                loop {
                    let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
                    let size =
                        usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap(), 16)
                            .unwrap();
                    data = &data[line_end + 2..];
                    if size == 0 {
                        data = &data[2..];
                        break;
                    }
                    body.extend_from_slice(&data[..size]);
                    data = &data[size + 2..];
                }
            } else {
                body = data.to_vec();
                data = &[];
            }
        }
        if status != 100 {
            out.push(Resp { body, ..resp_head });
            i += 1;
        }
    }
    out
}

/// Per-path counts in a list of origin requests.
pub fn counts(reqs: &[OriginReq]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in reqs {
        *m.entry(r.path.clone()).or_default() += 1;
    }
    m
}

/// Waits up to `within` for `f`.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Half-closes a stream's write side.
pub fn shut_write(s: &TcpStream) {
    let _ = s.shutdown(Shutdown::Write);
}
