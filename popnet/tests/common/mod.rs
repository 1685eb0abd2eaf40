//! Test support: a real `popnet dns` process on loopback, `dig`/`kdig` runs and their parsed output, signed metric reports.
#![allow(dead_code)]

use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use probe::report::{Entry, Health, Report};

/// A `popnet dns` child process, killed on drop.
pub struct Server {
    child: Child,
    _dir: tempfile::TempDir,
    pub config: PathBuf,
    pub dns: SocketAddr,
    pub reports: SocketAddr,
    pub admin: SocketAddr,
    key: Vec<u8>,
    seq: u64,
}

/// A port free for both UDP and TCP on 127.0.0.1 right now, below the kernel's
/// ephemeral range (32768 and up): a port handed out by binding to port 0 can be taken,
/// before the daemon under test binds it, by any outgoing connection of a test running
/// beside it, and then the daemon fails with "address in use". Each call tries the next
/// port after a start that differs per process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let start = (std::process::id().wrapping_mul(7919)
        ^ SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos())
        % SPAN;
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN);
}

pub fn popnet_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_popnet"))
}

/// `popctl`, built next to `popnet` by `cargo test --workspace`.
pub fn popctl_bin() -> PathBuf {
    let p = popnet_bin().with_file_name("popctl");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p popctl` (cargo test --workspace does)",
        p.display()
    );
    p
}

/// `popctl config keygen --out KEY --name NAME`: the key file is written; returns the
/// `[[network.admins]]` entry to put in configs.
pub fn keygen(key: &std::path::Path, name: &str) -> String {
    let out = Command::new(popctl_bin())
        .args(["config", "keygen", "--out"])
        .arg(key)
        .args(["--name", name])
        .output()
        .expect("popctl runs");
    let entry = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && entry.contains("[[network.admins]]"),
        "keygen: {entry}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    entry
}

/// `popctl config sign --key KEY --out SIGNED PLAIN`, which must succeed.
pub fn sign(key: &std::path::Path, plain: &std::path::Path, signed: &std::path::Path) {
    let out = Command::new(popctl_bin())
        .args(["config", "sign", "--key"])
        .arg(key)
        .arg("--out")
        .arg(signed)
        .arg(plain)
        .output()
        .expect("popctl runs");
    assert!(
        out.status.success(),
        "sign: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `config_text` with its `[logs] spool_dir` (when it has `[logs]`) set to `spool`: every
/// daemon of a test spools on its own (a spool is one process's; a second is refused).
pub fn own_spool(config_text: &str, spool: &std::path::Path) -> String {
    let line = format!("spool_dir = \"{}\"", spool.display());
    let mut out = String::with_capacity(config_text.len() + line.len());
    let mut in_logs = false;
    let mut done = false;
    for l in config_text.lines() {
        let t = l.trim_start();
        if t.starts_with('[') {
            if in_logs && !done {
                out.push_str(&line);
                out.push('\n');
                done = true;
            }
            in_logs = t.starts_with("[logs]");
        } else if in_logs && t.starts_with("spool_dir") {
            if !done {
                out.push_str(&line);
                out.push('\n');
                done = true;
            }
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    if in_logs && !done {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn report_key(config_text: &str) -> Vec<u8> {
    let cfg = popnet_config::Config::from_toml(config_text, "test").expect("test config is valid");
    cfg.probes.report_key.as_bytes().to_vec()
}

impl Server {
    /// Starts `popnet dns` with `config_text` on fresh loopback ports, with `workers`
    /// UDP sockets, and waits until it answers.
    pub fn start_with(config_text: &str, workers: usize) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("popnet.toml");
        let config_text = own_spool(config_text, &dir.path().join("spool"));
        std::fs::write(&config, &config_text).expect("write config");
        let config_text = config_text.as_str();
        let key = report_key(config_text);
        for _attempt in 0..5 {
            let dns: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let reports: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let mut child = Command::new(popnet_bin())
                .args(["--log", "warn", "dns", "--config"])
                .arg(&config)
                .args([
                    "--listen",
                    &dns.to_string(),
                    "--reports",
                    &reports.to_string(),
                    "--admin",
                    &admin.to_string(),
                ])
                .args(["--workers", &workers.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn popnet");
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    let mut err = String::new();
                    child.stderr.take().map(|mut e| e.read_to_string(&mut err));
                    if err.contains("Address already in use") {
                        break; // a port was taken meanwhile: try others
                    }
                    panic!("popnet dns exited at start:\n{err}");
                }
                if http_get(admin, "/health").is_ok() {
                    return Server {
                        child,
                        _dir: dir,
                        config,
                        dns,
                        reports,
                        admin,
                        key,
                        seq: 0,
                    };
                }
                assert!(
                    Instant::now() < deadline,
                    "popnet dns did not come up within 15 s"
                );
                std::thread::sleep(Duration::from_millis(30));
            }
        }
        panic!("could not find free ports for popnet dns");
    }

    pub fn start(config_text: &str) -> Server {
        Server::start_with(config_text, 2)
    }

    /// Runs `dig` against this server with the given arguments.
    pub fn dig(&self, args: &[&str]) -> Dig {
        run_dig("dig", self.dns, args)
    }

    /// Runs `kdig` against this server with the given arguments.
    pub fn kdig(&self, args: &[&str]) -> Dig {
        run_dig("kdig", self.dns, args)
    }

    /// The first answer's data for a query (`dig +short` style), in order.
    pub fn answers(&self, name: &str, qtype: &str) -> Vec<String> {
        self.dig(&[name, qtype])
            .answer
            .iter()
            .map(|r| r.data.clone())
            .collect()
    }

    /// Sends a signed report with `entries` (stamped now) to the server.
    pub fn report(&mut self, entries: Vec<Entry>) {
        let key = self.key.clone();
        self.report_with_key(entries, &key);
    }

    /// Sends a report signed with `key`.
    pub fn report_with_key(&mut self, entries: Vec<Entry>, key: &[u8]) {
        self.seq += 1;
        let r = Report {
            sender: "test-probe".into(),
            seq: self.seq,
            sent_at_ms: now_ms(),
            entries,
        };
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.send_to(&r.encode(key).unwrap(), self.reports).unwrap();
    }

    /// GETs an admin path and parses the JSON.
    pub fn admin_json(&self, path: &str) -> serde_json::Value {
        let body = http_get(self.admin, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
    }

    /// Waits (up to `within`) until `f` returns true; returns how long it took.
    pub fn wait_until(&self, within: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < within {
            if f() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// True while the child process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A blocking GET on a loopback admin listener; the body of a 200.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
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

/// Scrapes `/metrics` at `addr` and parses it with a Prometheus text parser: every
/// sample line must parse and belong to a family with `# HELP`.
pub fn scrape(addr: SocketAddr) -> prometheus_parse::Scrape {
    let body = http_get(addr, "/metrics").unwrap_or_else(|e| panic!("GET {addr}/metrics: {e}"));
    let s = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("/metrics of {addr} does not parse: {e}\n{body}"));
    let lines = body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    assert!(lines > 0);
    assert_eq!(s.samples.len(), lines, "lines the parser skipped:\n{body}");
    for x in &s.samples {
        assert!(s.docs.contains_key(&x.metric), "{} has no HELP", x.metric);
    }
    s
}

/// The value of the one sample of `metric` that has every label of `labels`.
pub fn sample(s: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus_parse::Value;
    let found: Vec<f64> = s
        .samples
        .iter()
        .filter(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("{metric} is not a counter or gauge"),
        })
        .collect();
    assert_eq!(found.len(), 1, "{metric}{labels:?}: {found:?}");
    found[0]
}

pub fn load(server: &str, v: f32) -> Entry {
    Entry {
        server: server.into(),
        measured_at_ms: now_ms(),
        load: Some(v),
        ..Entry::default()
    }
}

pub fn health(server: &str, up: bool) -> Entry {
    Entry {
        server: server.into(),
        measured_at_ms: now_ms(),
        health: Some(Health {
            up,
            availability: if up { 1.0 } else { 0.0 },
        }),
        ..Entry::default()
    }
}

pub fn latency(server: &str, view: &str, ms: f32) -> Entry {
    Entry {
        server: server.into(),
        measured_at_ms: now_ms(),
        latency_ms: vec![(view.into(), ms)],
        ..Entry::default()
    }
}

/// One record line of dig's output.
#[derive(Debug, Clone, PartialEq)]
pub struct Rr {
    pub name: String,
    pub ttl: u32,
    pub rtype: String,
    pub data: String,
}

/// dig's output, parsed.
#[derive(Debug, Clone, Default)]
pub struct Dig {
    pub raw: String,
    pub status: String,
    pub flags: Vec<String>,
    pub question: Vec<String>,
    pub answer: Vec<Rr>,
    pub authority: Vec<Rr>,
    pub additional: Vec<Rr>,
    /// The EDNS line (`; EDNS: version: 0, flags: do; udp: 1232`), if an OPT came back.
    pub edns: Option<String>,
    /// `; CLIENT-SUBNET: ...` line, if any.
    pub client_subnet: Option<String>,
    pub got_answer: bool,
}

impl Dig {
    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
}

fn run_dig(tool: &str, server: SocketAddr, args: &[&str]) -> Dig {
    let mut cmd = Command::new(tool);
    cmd.arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string());
    if tool == "dig" {
        cmd.args(["+time=2", "+tries=1"]);
    } else {
        cmd.args(["+time=2", "+retry=0"]);
    }
    cmd.args(args);
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {tool} (install bind9-dnsutils / knot-dnsutils): {e}")
    });
    let mut d = parse_dig(&String::from_utf8_lossy(&out.stdout));
    // Errors (e.g. a refused transfer) go to stderr.
    d.raw.push_str(&String::from_utf8_lossy(&out.stderr));
    d
}

fn parse_rr(line: &str) -> Option<Rr> {
    let mut it = line.split_whitespace();
    let name = it.next()?.to_string();
    let ttl = it.next()?.parse().ok()?;
    let _class = it.next()?;
    let rtype = it.next()?.to_string();
    let data = it.collect::<Vec<_>>().join(" ");
    Some(Rr {
        name,
        ttl,
        rtype,
        data,
    })
}

/// Parses the text output of `dig` or `kdig`.
pub fn parse_dig(raw: &str) -> Dig {
    let mut d = Dig {
        raw: raw.to_string(),
        ..Dig::default()
    };
    let mut section = "";
    for line in raw.lines() {
        let l = line.trim();
        if let Some(rest) = l.split("status: ").nth(1) {
            d.status = rest.split(',').next().unwrap_or("").trim().to_string();
            d.got_answer = true;
        }
        if let Some(rest) = l.strip_prefix(";; flags:") {
            d.flags = rest
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect();
        }
        if l.starts_with("; EDNS:")
            || l.starts_with(";; EDNS PSEUDOSECTION:")
            || l.starts_with(";; Version:")
        {
            d.edns = Some(l.to_string());
        }
        if l.starts_with("; CLIENT-SUBNET:") || l.starts_with(";; CLIENT-SUBNET:") {
            d.client_subnet = Some(l.to_string());
        }
        if l.starts_with(";; QUESTION SECTION") {
            section = "q";
            continue;
        }
        if l.starts_with(";; ANSWER SECTION") {
            section = "an";
            continue;
        }
        if l.starts_with(";; AUTHORITY SECTION") {
            section = "ns";
            continue;
        }
        if l.starts_with(";; ADDITIONAL SECTION") {
            section = "ar";
            continue;
        }
        if l.is_empty() || l.starts_with(";;") {
            if l.is_empty() {
                section = "";
            }
            continue;
        }
        match section {
            "q" => d.question.push(l.trim_start_matches(';').to_string()),
            "an" => d.answer.extend(parse_rr(l)),
            "ns" => d.authority.extend(parse_rr(l)),
            "ar" => d.additional.extend(parse_rr(l)),
            _ => {}
        }
    }
    d
}

/// The test network: two views on loopback, two POP caches, one customer with two
/// origins in different regions, and names for every record type.
pub const TEST_CONFIG: &str = r#"
[network]
name = "test"
version = 7
zone = "popnet.test.example"

[logs]
key = "8899aabbccddeeff00112233445566778899aabbccddeeff0011223344556677"

[[log_servers]]
name = "log1"
address = "127.0.0.9:5400"
customers = ["shop"]

[probes]
report_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
interval = "500ms"
timeout = "250ms"
stale_after = "2s"
recovery = "1s"

[[views]]
name = "east"
region = "east"
prefixes = ["127.0.0.0/25", "198.51.100.0/24"]

[[views]]
name = "west"
region = "west"
prefixes = ["127.0.0.128/25", "203.0.113.0/24"]

[[pops]]
name = "pop-east"
region = "east"
log_server = "log1"
[pops.dns]
listen = ["127.0.0.1:53"]
reports = "127.0.0.1:5354"
admin = "127.0.0.1:5380"
[pops.cache]
addresses = ["192.0.2.1", "2001:db8::1"]
listen = ["127.0.0.1:8080"]
[pops.probe]
listen = "127.0.0.1:5355"

[[pops]]
name = "pop-west"
region = "west"
[pops.cache]
addresses = ["192.0.2.2"]
listen = ["127.0.0.2:8080"]

[[customers]]
name = "shop"
zones = ["shop.example"]

[[customers.origins]]
name = "east"
addresses = ["203.0.113.10", "2001:db8:1::10"]
region = "east"

[[customers.origins]]
name = "west"
addresses = ["203.0.113.20"]
region = "west"

[[customers.domains]]
name = "www.shop.example"
kind = "dynamic"
[customers.domains.policy]
ttl = 30

[[customers.domains]]
name = "sticky.shop.example"
kind = "dynamic"
[customers.domains.policy]
ttl = 30
persistence = "60s"

[[customers.domains]]
name = "pair.shop.example"
kind = "dynamic"
[customers.domains.policy]
answers = 2

[[customers.domains]]
name = "img.shop.example"
kind = "static"
[customers.domains.policy]
ttl = 60

[[customers.records]]
name = "shop.example"
type = "TXT"
value = "v=spf1 -all"

[[customers.records]]
name = "shop.example"
type = "MX"
value = "10 mail.shop.example"

[[customers.records]]
name = "mail.shop.example"
type = "A"
value = "203.0.113.25"

[[customers.records]]
name = "static.shop.example"
type = "CNAME"
value = "img.shop.example"

[[customers.records]]
name = "away.shop.example"
type = "CNAME"
value = "elsewhere.example"

[[customers.records]]
name = "deep.a.b.shop.example"
type = "A"
value = "203.0.113.30"

[[customers.records]]
name = "big.shop.example"
type = "TXT"
value = "BIGTXT"
"#;

/// The test config with a TXT record too large for 512 bytes.
pub fn test_config() -> String {
    TEST_CONFIG.replace("BIGTXT", &"x".repeat(700))
}

/// A `popnet` child process, killed with SIGKILL on drop; its stderr goes to a log file.
pub struct Proc {
    pub child: Child,
    log: PathBuf,
    what: String,
}

impl Proc {
    /// Starts `popnet --log info <args>`, appending its stderr to `log`.
    pub fn spawn(args: &[&str], log: &std::path::Path) -> Proc {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(popnet_bin())
            .args(["--log", "info"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("popnet runs");
        Proc {
            child,
            log: log.to_owned(),
            what: args.join(" "),
        }
    }

    /// Starts `popnet --log info <args>` and waits until `health`'s `/health` answers 200.
    pub fn start(args: &[&str], health: SocketAddr, log: &std::path::Path) -> Proc {
        let mut p = Proc::spawn(args, log);
        p.wait_until(&format!("/health on {health}"), || {
            http_get(health, "/health").is_ok()
        });
        p
    }

    /// Waits until `ready`, failing with the process's log if it exits or takes a minute.
    pub fn wait_until(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "popnet {} exited ({status}) before {what}:\n{}",
                    self.what,
                    self.log_text()
                );
            }
            if ready() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "popnet {}: no {what} within a minute:\n{}",
                self.what,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "popnet {} exited {status}", self.what);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("popnet {} did not stop on SIGTERM", self.what);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What curl saw of one response.
#[derive(Debug)]
pub struct Seen {
    pub status: u16,
    pub x_cache: String,
    /// Head and body bytes received.
    pub bytes: u64,
}

/// Fetches every path from the cache with one curl run (one connection, keep-alive).
pub fn curl(http: SocketAddr, host: &str, paths: &[String]) -> Vec<Seen> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60", "-H", &format!("Host: {host}")])
        .args([
            "-w",
            "%{http_code} %{size_header} %{size_download} %header{x-cache}\\n",
        ]);
    for p in paths {
        cmd.args(["-o", "/dev/null", &format!("http://{http}{p}")]);
    }
    let out = cmd.output().expect("curl runs");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let seen: Vec<Seen> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Seen {
                status: f[0].parse().unwrap(),
                bytes: f[1].parse::<u64>().unwrap() + f[2].parse::<u64>().unwrap(),
                x_cache: f.get(3).unwrap_or(&"").to_string(),
            }
        })
        .collect();
    assert_eq!(seen.len(), paths.len(), "curl wrote {text}");
    seen
}

/// Waits until `ok`, failing after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
