//! The disk tier across process deaths: the real `popnet cache` killed with SIGKILL (during heavy writes, or after them), restarted, and every body it serves compared with the origin's; and large objects streamed from disk with bounded memory.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_engine::demo_origin::{DemoOrigin, body_of_path};
use common::free_port;

const HOST: &str = "static.demo.example";

/// A one-POP network whose cache serves `static.demo.example` from `origin`.
fn config_text(origin: SocketAddr, store: &Path, cache_extra: &str) -> String {
    format!(
        r#"
[network]
name = "disk-test"
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
disk_path = "{}"
{cache_extra}

[[customers]]
name = "demo"
zones = ["demo.example"]

[[customers.origins]]
name = "o"
addresses = ["{}"]
port = {}

[[customers.domains]]
name = "static.demo.example"
kind = "static"
"#,
        store.display(),
        origin.ip(),
        origin.port()
    )
}

/// A `popnet cache` process (killed with SIGKILL on drop).
struct Popnet {
    child: Child,
    http: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
}

impl Popnet {
    fn start(config: &Path, log: &Path) -> Popnet {
        let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_popnet"))
            .args(["--log", "warn", "cache", "--config"])
            .arg(config)
            .args(["--listen", &http.to_string(), "--admin", &admin.to_string()])
            .args(["--workers", "2"])
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("popnet runs");
        let mut p = Popnet {
            child,
            http,
            admin,
            log: log.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("popnet exited ({status}):\n{}", p.log_text());
            }
            if admin_get(p.admin, "/health").is_some_and(|(s, _)| s == 200) {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "popnet did not come up:\n{}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn stats(&self) -> serde_json::Value {
        let (s, b) = admin_get(self.admin, "/stats").expect("stats");
        assert_eq!(s, 200, "{b}");
        serde_json::from_str(&b).unwrap()
    }

    fn disk(&self) -> serde_json::Value {
        self.stats()["tiers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tier"] == "disk")
            .cloned()
            .expect("a disk tier")
    }

    /// Stops it the way an operator does (SIGTERM), waiting for it to exit.
    fn stop(mut self) {
        // SAFETY-free: kill(1) is a separate program.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("popnet did not stop on SIGTERM");
    }
}

impl Drop for Popnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One GET on a fresh connection to the admin listener: status and body.
fn admin_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// A response as a keep-alive client reads it.
struct Resp {
    status: u16,
    x_cache: String,
    body: Vec<u8>,
}

/// A keep-alive HTTP/1.1 client on one raw socket.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.set_nodelay(true)?;
        Ok(Client { s, buf: Vec::new() })
    }

    fn get(&mut self, path: &str) -> std::io::Result<Resp> {
        write!(self.s, "GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n")?;
        let mut chunk = [0u8; 65536];
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = self.s.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let field = |name: &str| {
            head.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        };
        let len: usize = field("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no Content-Length in {head}")))?;
        let x_cache = field("x-cache").unwrap_or_default();
        while self.buf.len() < head_end + len {
            let n = self.s.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let body = self.buf[head_end..head_end + len].to_vec();
        self.buf.drain(..head_end + len);
        Ok(Resp {
            status,
            x_cache,
            body,
        })
    }
}

/// Reads every path back over `conns` connections; returns (hits, wrong bodies as
/// descriptions). Every response must be a 200 with the origin's exact body.
fn read_back(addr: SocketAddr, paths: &[String], conns: usize) -> (usize, Vec<String>) {
    let hits = Arc::new(AtomicU64::new(0));
    let wrong = Arc::new(Mutex::new(Vec::new()));
    let work: Vec<Vec<String>> = (0..conns)
        .map(|k| paths.iter().skip(k).step_by(conns).cloned().collect())
        .collect();
    let threads: Vec<_> = work
        .into_iter()
        .map(|mine| {
            let (hits, wrong) = (hits.clone(), wrong.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr).expect("connect");
                for p in mine {
                    let r = c.get(&p).unwrap_or_else(|e| panic!("GET {p}: {e}"));
                    let want = body_of_path(&p);
                    if r.status != 200 || r.body != want {
                        let at = r.body.iter().zip(&want).position(|(a, b)| a != b);
                        wrong.lock().unwrap().push(format!(
                            "{p}: status {} {} with {} bytes (want {}), first difference at {at:?}",
                            r.status,
                            r.x_cache,
                            r.body.len(),
                            want.len()
                        ));
                    } else if r.x_cache == "HIT" {
                        hits.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let wrong = std::mem::take(&mut *wrong.lock().unwrap());
    (hits.load(Ordering::Relaxed) as usize, wrong)
}

/// The test's working directory, on the target's disk (O_DIRECT needs a real filesystem).
fn workdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn u(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

/// Small store (8 segments of 1 MiB), small objects: many records per segment, many
/// segments sealed and evicted per round.
const SMALL_STORE: &str = "ram_bytes = 1048576\nmax_object_bytes = 393216\ndisk_bytes = 8392704\ndisk_segment_bytes = 1048576";

#[test]
fn restart_after_kill_9_keeps_every_written_object() {
    let origin = DemoOrigin::start(&["127.0.0.1:0".parse().unwrap()]).unwrap();
    let dir = workdir();
    let store = dir.path().join("store");
    let cfg = dir.path().join("popnet.toml");
    std::fs::write(&cfg, config_text(origin.addrs[0], &store, SMALL_STORE)).unwrap();
    let log = dir.path().join("log");
    let p = Popnet::start(&cfg, &log);
    let paths: Vec<String> = (0..120)
        .map(|i| format!("/keep/{i}/{}?max-age=3600", 500 + i * 97))
        .collect();
    let (hits, wrong) = read_back(p.http, &paths, 3);
    assert!(wrong.is_empty(), "{wrong:?}");
    assert_eq!(hits, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while u(&p.disk(), "objects") < paths.len() as u64 {
        assert!(Instant::now() < deadline, "not all written: {}", p.disk());
        std::thread::sleep(Duration::from_millis(20));
    }
    let fetched = origin.requests();
    // A second process on the same store is refused, with the reason.
    let second = Command::new(env!("CARGO_BIN_EXE_popnet"))
        .args(["--log", "warn", "cache", "--config"])
        .arg(&cfg)
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    p.kill9();
    let p = Popnet::start(&cfg, &log);
    assert_eq!(u(&p.disk(), "objects"), paths.len() as u64, "{}", p.disk());
    let (hits, wrong) = read_back(p.http, &paths, 3);
    assert!(wrong.is_empty(), "{wrong:?}");
    assert_eq!(hits, paths.len(), "every object came back from disk");
    assert_eq!(origin.requests(), fetched, "nothing was fetched again");
    // A clean stop seals the open segment; the next start reads only summaries.
    p.stop();
    let p = Popnet::start(&cfg, &log);
    let (hits, wrong) = read_back(p.http, &paths, 3);
    assert!(wrong.is_empty(), "{wrong:?}");
    assert_eq!(hits, paths.len());
    assert_eq!(origin.requests(), fetched);
}

#[test]
fn fifty_kill_9s_during_heavy_writes_never_serve_a_wrong_byte() {
    let origin = DemoOrigin::start(&["127.0.0.1:0".parse().unwrap()]).unwrap();
    let dir = workdir();
    let store = dir.path().join("store");
    let cfg = dir.path().join("popnet.toml");
    std::fs::write(&cfg, config_text(origin.addrs[0], &store, SMALL_STORE)).unwrap();
    let log = dir.path().join("log");
    let started = Instant::now();
    let mut previous: Vec<String> = Vec::new();
    let (mut total_hits, mut total_read) = (0, 0);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut p = Popnet::start(&cfg, &log);
    for round in 0..50 {
        // Heavy writes: three clients asking for objects nobody asked for before, so
        // every request is a miss that the writer appends to the log.
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(Mutex::new(BTreeSet::new()));
        let writers: Vec<_> = (0..3)
            .map(|t| {
                let (stop, asked, addr) = (stop.clone(), asked.clone(), p.http);
                let sizes = [700usize, 3000, 9000, 20000, 47000, 130_000];
                std::thread::spawn(move || {
                    let Ok(mut c) = Client::connect(addr) else {
                        return;
                    };
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let size = sizes[(i * 7 + t) % sizes.len()];
                        let path = format!("/k/{round}/{t}/{i}/{size}?max-age=3600");
                        asked.lock().unwrap().insert(path.clone());
                        if c.get(&path).is_err() {
                            return;
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(60 + next() % 250));
        let pid = p.pid();
        p.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        p = Popnet::start(&cfg, &log);
        // Full read-back: every object of this round and the last (the store holds no
        // more than that), each compared byte for byte with the origin's.
        let mine: Vec<String> = asked.lock().unwrap().iter().cloned().collect();
        let mut all = mine.clone();
        all.extend(previous.iter().cloned());
        let (hits, wrong) = read_back(p.http, &all, 3);
        assert!(
            wrong.is_empty(),
            "round {round} (killed pid {pid}): wrong responses:\n{}\n{}",
            wrong.join("\n"),
            p.log_text()
        );
        total_hits += hits;
        total_read += all.len();
        previous = mine;
    }
    let disk = p.disk();
    assert!(
        total_hits * 4 >= total_read,
        "objects written before a kill should mostly survive it: {total_hits} hits of {total_read} reads; {disk}"
    );
    assert!(
        u(&disk, "evicted") > 0 || u(&disk, "segments_used") > 2,
        "{disk}"
    );
    eprintln!(
        "50 rounds in {:.1} s: {total_read} responses read back, {total_hits} from disk, none wrong",
        started.elapsed().as_secs_f64()
    );
}

fn vm_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[test]
fn large_objects_stream_from_disk_with_bounded_memory() {
    let origin = DemoOrigin::start(&["127.0.0.1:0".parse().unwrap()]).unwrap();
    let dir = workdir();
    let store = dir.path().join("store");
    let cfg = dir.path().join("popnet.toml");
    // 4 segments of 64 MiB; a 24 MiB object, far above RAM's per-object limit.
    std::fs::write(
        &cfg,
        config_text(
            origin.addrs[0],
            &store,
            "ram_bytes = 8388608\nmax_object_bytes = 25165824\ndisk_bytes = 268439552\ndisk_segment_bytes = 67108864",
        ),
    )
    .unwrap();
    let log = dir.path().join("log");
    let path = "/big/24m?max-age=3600";
    let want = body_of_path(path);
    assert_eq!(want.len(), 24 << 20);
    let p = Popnet::start(&cfg, &log);
    let r = Client::connect(p.http).unwrap().get(path).unwrap();
    assert_eq!((r.status, r.x_cache.as_str()), (200, "MISS"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while u(&p.disk(), "objects") < 1 {
        assert!(Instant::now() < deadline, "not written: {}", p.disk());
        std::thread::sleep(Duration::from_millis(20));
    }
    p.stop();
    // A fresh process: its peak memory so far is start-up alone.
    let p = Popnet::start(&cfg, &log);
    let pid = p.pid();
    let base = vm_kib(pid, "VmHWM:");
    // Four clients at once, reading at a modest pace (the server must not run ahead).
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let addr = p.http;
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                write!(
                    s,
                    "GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                let mut got = Vec::new();
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) => panic!("read: {e}"),
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                got
            })
        })
        .collect();
    for c in clients {
        let got = c.join().unwrap();
        let split = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&got[..split]);
        assert!(head.contains("X-Cache: HIT"), "{head}");
        assert!(
            got[split..] == want[..],
            "the body streamed from disk differs"
        );
    }
    let peak = vm_kib(pid, "VmHWM:");
    let grew = peak.saturating_sub(base);
    eprintln!("peak memory {base} KiB at start, {peak} KiB after 4 streams of 24 MiB");
    assert!(
        grew < 24 * 1024,
        "four streams of a 24 MiB object grew peak memory by {grew} KiB (one whole copy would be 24576 KiB)"
    );
    let disk = p.disk();
    assert_eq!(u(&disk, "hits"), 4, "{disk}");
    let st = p.stats();
    let ram = st["tiers"][0].clone();
    assert_eq!(
        u(&ram, "objects"),
        0,
        "a streamed object is not promoted: {ram}"
    );
}
