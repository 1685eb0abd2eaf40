//! A three-POP network in namespaces: real `popnet dns`, `popnet cache` and `popnet probe` processes, a resolver and two customer origins, joined by the delaying router.
//!
//! Sites and addresses (documentation ranges only):
//!
//! | site       | address        | runs                                                     |
//! |------------|----------------|----------------------------------------------------------|
//! | `dns`      | 192.0.2.53     | `popnet dns` (POP a's DNS server; admin 127.0.0.1:5380)  |
//! | `pop-a/b/c`| 192.0.2.10/20/30 | `popnet cache` on :80, `popnet probe` (latency on :5355) |
//! | `res`      | 198.51.100.53  | the resolver: `dig` and raw queries come from here       |
//! | `origin-x/y` | 203.0.113.10/20 | an HTTP origin whose response time the test sets      |
//!
//! The POPs get different one-way delays, so the probes measure different round trips to
//! the resolver; an origin's response time stands for its load.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::delaynet::DelayNet;
use crate::netns::{Guard, bin};

pub const DNS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
pub const RESOLVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
pub const POPS: [(&str, Ipv4Addr); 3] = [
    ("pop-a", Ipv4Addr::new(192, 0, 2, 10)),
    ("pop-b", Ipv4Addr::new(192, 0, 2, 20)),
    ("pop-c", Ipv4Addr::new(192, 0, 2, 30)),
];
pub const ORIGINS: [(&str, Ipv4Addr); 2] = [
    ("origin-x", Ipv4Addr::new(203, 0, 113, 10)),
    ("origin-y", Ipv4Addr::new(203, 0, 113, 20)),
];
/// Connections a lab cache accepts; the load agent reports open ÷ this.
pub const CACHE_MAX_CONNECTIONS: usize = 40;

/// The probe interval of the lab.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The lab's network config.
pub fn config() -> String {
    let mut c = String::from(
        r#"
[network]
name = "poplab"
version = 1
zone = "popnet.lab.example"

[probes]
report_key = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
interval = "1s"
timeout = "900ms"
stale_after = "3s"
recovery = "2s"
resolver_refresh = "2s"
resolver_stale_after = "6s"
overload_response = "1s"
"#,
    );
    for (name, addr) in POPS {
        c.push_str(&format!(
            r#"
[[pops]]
name = "{name}"
region = "r-{name}"
"#
        ));
        if name == "pop-a" {
            c.push_str(&format!(
                r#"[pops.dns]
listen = ["{DNS}:53"]
reports = "{DNS}:5354"
admin = "127.0.0.1:5380"
"#
            ));
        }
        c.push_str(&format!(
            r#"[pops.cache]
addresses = ["{addr}"]
listen = ["{addr}:80"]
admin = "127.0.0.1:5381"
max_connections = {CACHE_MAX_CONNECTIONS}
idle_timeout = "300s"
workers = 1
[pops.probe]
listen = "{addr}:5355"
# The POPs share one host's CPU and memory: their load is their cache's connections.
load_from = ["connections"]
"#
        ));
    }
    c.push_str(
        r#"
[[customers]]
name = "shop"
zones = ["shop.example"]
"#,
    );
    for (name, addr) in ORIGINS {
        c.push_str(&format!(
            r#"
[[customers.origins]]
name = "{}"
addresses = ["{addr}"]
port = 80
region = "r-origins"
[customers.origins.check]
kind = "http"
path = "/health"
"#,
            name.trim_start_matches("origin-")
        ));
    }
    c.push_str(
        r#"
[[customers.domains]]
name = "www.shop.example"
kind = "dynamic"
[customers.domains.policy]
ttl = 5

[[customers.domains]]
name = "img.shop.example"
kind = "static"
[customers.domains.policy]
ttl = 5
"#,
    );
    c
}

/// An HTTP origin in its namespace: `/health` and everything else answered 200 after
/// the current delay (its "load").
pub struct Origin {
    pub delay_ms: Arc<AtomicU64>,
    pub requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Origin {
    fn start(net: &DelayNet, site: &str, addr: Ipv4Addr, name: &'static str) -> Origin {
        let o = Origin {
            delay_ms: Arc::default(),
            requests: Arc::default(),
            stop: Arc::default(),
        };
        let listener = net.within(site, move || {
            TcpListener::bind((addr, 80)).unwrap_or_else(|e| panic!("origin {addr}:80: {e}"))
        });
        listener.set_nonblocking(true).unwrap();
        let (delay, requests, stop) = (o.delay_ms.clone(), o.requests.clone(), o.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (delay, requests) = (delay.clone(), requests.clone());
                        std::thread::spawn(move || serve_origin(s, name, &delay, &requests));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        o
    }

    pub fn set_delay(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::Relaxed);
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_origin(mut s: TcpStream, name: &str, delay: &AtomicU64, requests: &AtomicU64) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        // One request head at a time (keep-alive: the cache and probes may reuse it).
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.len() > 16 * 1024 {
                return;
            }
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
        buf.drain(..end);
        requests.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(delay.load(Ordering::Relaxed)));
        let body = format!("origin {name} ok\n");
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nCache-Control: max-age=60\r\n\r\n",
            body.len()
        );
        if s.write_all(head.as_bytes()).is_err() || s.write_all(body.as_bytes()).is_err() {
            return;
        }
    }
}

/// The running lab.
pub struct PopLab {
    pub net: DelayNet,
    pub config: PathBuf,
    _dir: TempDir,
    dns: Option<Guard>,
    caches: Vec<Option<Guard>>,
    probes: Vec<Option<Guard>>,
    pub origins: Vec<Origin>,
    logs: PathBuf,
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pop_index(pop: &str) -> usize {
    POPS.iter()
        .position(|(n, _)| *n == pop)
        .unwrap_or_else(|| panic!("no POP {pop}"))
}

impl PopLab {
    /// Builds the sites, sets the POPs' one-way delays (ms) and starts every process.
    pub fn start(delays_ms: [u64; 3]) -> PopLab {
        let mut sites: Vec<(&str, Vec<Ipv4Addr>)> =
            vec![("dns", vec![DNS]), ("res", vec![RESOLVER])];
        sites.extend(POPS.iter().map(|(n, a)| (*n, vec![*a])));
        sites.extend(ORIGINS.iter().map(|(n, a)| (*n, vec![*a])));
        let refs: Vec<(&str, &[Ipv4Addr])> =
            sites.iter().map(|(n, a)| (*n, a.as_slice())).collect();
        let net = DelayNet::new(&refs);
        for ((name, _), ms) in POPS.iter().zip(delays_ms) {
            net.set_delay(name, Duration::from_millis(ms));
        }
        let dir = std::env::temp_dir().join(format!(
            "popnet-lab-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        std::fs::create_dir_all(&dir).expect("lab directory");
        let config = dir.join("network.toml");
        std::fs::write(&config, self::config()).expect("write the lab config");
        let origins = ORIGINS
            .iter()
            .map(|(n, a)| Origin::start(&net, n, *a, n))
            .collect();
        let mut lab = PopLab {
            net,
            config,
            logs: dir.clone(),
            _dir: TempDir(dir),
            dns: None,
            caches: vec![None, None, None],
            probes: vec![None, None, None],
            origins,
        };
        lab.start_dns();
        for (pop, _) in POPS {
            lab.start_cache(pop);
            lab.start_probe(pop);
        }
        lab
    }

    fn spawn(&self, site: &str, role: &str, extra: &[&str], log: &str) -> Guard {
        let log = std::fs::File::create(self.logs.join(log)).expect("log file");
        let child = self
            .net
            .cmd(site, bin("popnet"))
            .args(["--log", "info", role, "--config"])
            .arg(&self.config)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn popnet {role} in {site}: {e}"));
        Guard(child)
    }

    /// What a process wrote to its log so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.logs.join(name)).unwrap_or_default()
    }

    pub fn start_dns(&mut self) {
        self.dns = Some(self.spawn(
            "dns",
            "dns",
            &["--pop", "pop-a", "--workers", "1"],
            "dns.log",
        ));
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.admin("/health").is_err() {
            assert!(
                Instant::now() < deadline,
                "popnet dns did not come up:\n{}",
                self.log("dns.log")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn start_cache(&mut self, pop: &str) {
        let i = pop_index(pop);
        let log = format!("cache-{pop}.log");
        let g = self.spawn(pop, "cache", &["--pop", pop], &log);
        self.caches[i] = Some(g);
        let addr = SocketAddr::from((POPS[i].1, 80));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self
            .net
            .within(pop, move || TcpStream::connect(addr).is_ok())
        {
            assert!(
                Instant::now() < deadline,
                "popnet cache in {pop} did not come up:\n{}",
                self.log(&log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills `pop`'s cache with SIGKILL (a crash, not a clean stop); returns when it is dead.
    pub fn kill_cache(&mut self, pop: &str) -> Instant {
        let g = self.caches[pop_index(pop)].take().expect("cache running");
        kill(g)
    }

    pub fn start_probe(&mut self, pop: &str) {
        let i = pop_index(pop);
        self.probes[i] =
            Some(self.spawn(pop, "probe", &["--pop", pop], &format!("probe-{pop}.log")));
    }

    pub fn kill_probe(&mut self, pop: &str) -> Instant {
        let g = self.probes[pop_index(pop)].take().expect("probe running");
        kill(g)
    }

    /// GET `path` from the DNS server's admin listener (inside its namespace).
    pub fn admin(&self, path: &str) -> Result<String, String> {
        let path = path.to_string();
        self.net.within("dns", move || {
            http_get(SocketAddr::from(([127, 0, 0, 1], 5380)), &path)
        })
    }

    pub fn admin_json(&self, path: &str) -> serde_json::Value {
        let body = self
            .admin(path)
            .unwrap_or_else(|e| panic!("admin {path}: {e}"));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("admin {path}: {e}: {body}"))
    }

    /// `dig +short` from the resolver for `name`'s A records.
    pub fn dig(&self, name: &str) -> Vec<String> {
        let out = self
            .net
            .cmd("res", "dig")
            .args([
                &format!("@{DNS}"),
                "+short",
                "+time=1",
                "+tries=2",
                name,
                "A",
            ])
            .output()
            .expect("run dig (install bind9-dnsutils)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with(';'))
            .map(str::to_string)
            .collect()
    }

    /// A UDP socket in the resolver's namespace for fast repeated queries.
    pub fn resolver_socket(&self) -> UdpSocket {
        self.net.within("res", || {
            let s = UdpSocket::bind((RESOLVER, 0)).expect("resolver socket");
            s.connect((DNS, 53)).expect("connect");
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            s
        })
    }

    /// Holds `n` idle connections to `pop`'s cache (from the resolver's site) until the
    /// returned sockets are dropped.
    pub fn hold_connections(&self, pop: &str, n: usize) -> Vec<TcpStream> {
        let addr = SocketAddr::from((POPS[pop_index(pop)].1, 80));
        self.net.within("res", move || {
            (0..n)
                .map(|_| {
                    TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                        .expect("connect to the cache")
                })
                .collect()
        })
    }

    /// Polls `f` every 100 ms for up to `limit`; the time it took to hold, if it did.
    pub fn wait_until(
        &self,
        limit: Duration,
        mut f: impl FnMut(&PopLab) -> bool,
    ) -> Option<Duration> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if f(self) {
                return Some(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for PopLab {
    fn drop(&mut self) {
        // Processes first (their sockets live in the namespaces DelayNet removes).
        self.dns.take();
        for g in self.caches.iter_mut().chain(self.probes.iter_mut()) {
            g.take();
        }
    }
}

fn kill(g: Guard) -> Instant {
    let mut g = g;
    let _ = g.0.kill();
    let _ = g.0.wait();
    let at = Instant::now();
    drop(g);
    at
}

/// A blocking HTTP/1.1 GET; the body of a 200 answer.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let (head, body) = out.split_once("\r\n\r\n").ok_or("no head")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or("").to_string());
    }
    Ok(body.to_string())
}

/// A DNS query for `name` A with id `id` (RD clear, no EDNS).
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The IPv4 addresses in the answer section of `resp` to a [`query`] with id `id`.
pub fn answer_addrs(resp: &[u8], id: u16) -> Option<Vec<Ipv4Addr>> {
    let m = dns_wire::Message::decode(resp).ok()?;
    if m.header.id != id {
        return None;
    }
    Some(
        m.answers
            .iter()
            .filter_map(|r| match r.rdata {
                dns_wire::RData::A(a) => Some(a),
                _ => None,
            })
            .collect(),
    )
}
