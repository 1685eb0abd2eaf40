//! Benchmark driver (run by `benches/probe-capacity.sh`): how many TCP-connect targets one `popnet probe` keeps on a 1 s interval, and its CPU for them.
//!
//! For each N it starts local TCP listeners (accepting and closing everything), writes a
//! config with N origins spread over them, runs `popnet probe` on it with its reports
//! sent here, lets it warm up, then for a window of whole seconds measures the probe
//! process's on-CPU time (the sum of `/proc/PID/task/*/schedstat`, the scheduler's
//! clock) and counts, per target, the report entries in the window that say it is up
//! (a round's entry is stamped when the round ends, so a target's rounds fall one per
//! second give or take the odd pair straddling a second boundary).
//!
//! ```text
//! cargo run --release -p probe --example capacity -- POPNET_BIN [SECONDS] N...
//! ```

use std::collections::HashMap;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use probe::report::Report;

const KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const LISTENERS: usize = 50;
const WARMUP: Duration = Duration::from_secs(3);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(bin) = args.first() else {
        eprintln!("usage: capacity POPNET_BIN [SECONDS] N...");
        std::process::exit(2);
    };
    let mut rest: Vec<usize> = args[1..].iter().filter_map(|a| a.parse().ok()).collect();
    let seconds = if rest.len() > 1 { rest.remove(0) } else { 10 };
    let ns = if rest.is_empty() {
        vec![100, 1000, 5000]
    } else {
        rest
    };
    println!(
        "| targets | probe CPU (% of one core) | CPU per round (µs) | rounds up / expected | fewest rounds of a target | seconds with a round up |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for n in ns {
        let r = run(bin, n, seconds as u64);
        println!(
            "| {n} | {:.1} | {:.1} | {} / {} | {} of {seconds} | {:.2} % |",
            r.cpu_fraction * 100.0,
            r.cpu_fraction * 1e6 / r.rounds_per_s.max(1.0),
            (r.rounds_per_s * seconds as f64).round(),
            r.expected,
            r.fewest,
            100.0 * r.covered as f64 / r.expected.max(1) as f64,
        );
    }
}

struct Outcome {
    cpu_fraction: f64,
    /// Fewest rounds reported up for one target in the window.
    fewest: usize,
    covered: usize,
    expected: usize,
    rounds_per_s: f64,
}

/// Accepts and drops every connection on `LISTENERS` loopback ports.
fn listeners(stop: Arc<AtomicBool>) -> Vec<u16> {
    let mut poll = Poll::new().expect("poll");
    let mut ls = Vec::new();
    let mut ports = Vec::new();
    for i in 0..LISTENERS {
        let mut l = TcpListener::bind("127.0.0.1:0".parse().unwrap()).expect("bind");
        ports.push(l.local_addr().unwrap().port());
        poll.registry()
            .register(&mut l, Token(i), Interest::READABLE)
            .unwrap();
        ls.push(l);
    }
    std::thread::spawn(move || {
        let mut events = Events::with_capacity(256);
        while !stop.load(Ordering::Relaxed) {
            let _ = poll.poll(&mut events, Some(Duration::from_millis(100)));
            for e in events.iter() {
                let l = &ls[e.token().0];
                loop {
                    match l.accept() {
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    }
                }
            }
        }
    });
    ports
}

fn config(n: usize, ports: &[u16], reports: SocketAddr, probe_port: u16) -> String {
    let mut c = format!(
        r#"[network]
name = "bench"
version = 1
zone = "popnet.internal"

[probes]
report_key = "{KEY_HEX}"
interval = "1s"
timeout = "500ms"
stale_after = "5s"

[[pops]]
name = "bench"
region = "local"
[pops.dns]
listen = ["127.0.0.1:1"]
reports = "{reports}"
admin = "127.0.0.1:1"
[pops.probe]
listen = "127.0.0.1:{probe_port}"

[[customers]]
name = "c"
zones = ["customer.example"]
"#
    );
    for i in 0..n {
        c.push_str(&format!(
            "\n[[customers.origins]]\nname = \"o{i}\"\naddresses = [\"127.0.0.1\"]\nport = {}\n",
            ports[i % ports.len()]
        ));
    }
    c
}

fn cpu_ns(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn run(bin: &str, n: usize, seconds: u64) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let ports = listeners(stop.clone());
    let sock = {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        let _ = s.set_recv_buffer_size(8 << 20);
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        UdpSocket::from(s)
    };
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let reports = sock.local_addr().unwrap();
    let probe_port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("popnet-capacity-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bench.toml");
    std::fs::File::create(&cfg)
        .unwrap()
        .write_all(config(n, &ports, reports, probe_port).as_bytes())
        .unwrap();
    let mut child: Child = Command::new(bin)
        .args(["--log", "error", "probe", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn popnet probe");

    // (target, unix second) pairs reported up.
    let seen: Arc<Mutex<HashMap<String, Vec<u64>>>> = Arc::default();
    let rx_stop = Arc::new(AtomicBool::new(false));
    let rx = {
        let seen = seen.clone();
        let rx_stop = rx_stop.clone();
        std::thread::spawn(move || {
            let key = hex(KEY_HEX);
            let mut buf = vec![0u8; 65_536];
            while !rx_stop.load(Ordering::Relaxed) {
                let Ok((len, _)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(r) = Report::decode(&buf[..len], &key) else {
                    continue;
                };
                let mut s = seen.lock().unwrap();
                for e in r.entries {
                    if e.health.is_some_and(|h| h.up) {
                        s.entry(e.server).or_default().push(e.measured_at_ms / 1000);
                    }
                }
            }
        })
    };
    std::thread::sleep(WARMUP);
    if let Ok(Some(st)) = child.try_wait() {
        eprintln!("popnet probe exited during warm-up ({st})");
        std::process::exit(1);
    }
    // Start the window on a whole second.
    let now_ms = probe::unix_ms();
    std::thread::sleep(Duration::from_millis(1000 - now_ms % 1000));
    let first_sec = probe::unix_ms() / 1000;
    let cpu0 = cpu_ns(child.id());
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu1 = cpu_ns(child.id());
    let wall = t0.elapsed();
    let last_sec = first_sec + seconds; // exclusive
    // Let the last second's reports arrive.
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    rx_stop.store(true, Ordering::Relaxed);
    let _ = rx.join();
    stop.store(true, Ordering::Relaxed);
    let _ = std::fs::remove_dir_all(&dir);

    let s = seen.lock().unwrap();
    let mut covered = 0;
    let mut rounds = 0;
    let mut fewest = usize::MAX;
    for i in 0..n {
        let Some(secs) = s.get(&format!("c/o{i}")) else {
            fewest = 0;
            continue;
        };
        let mut in_window: Vec<u64> = secs
            .iter()
            .copied()
            .filter(|&t| t >= first_sec && t < last_sec)
            .collect();
        rounds += in_window.len();
        fewest = fewest.min(in_window.len());
        in_window.sort();
        in_window.dedup();
        covered += in_window.len();
    }
    Outcome {
        fewest: if n == 0 { 0 } else { fewest },
        cpu_fraction: (cpu1 - cpu0) as f64 / wall.as_nanos() as f64,
        covered,
        expected: n * seconds as usize,
        rounds_per_s: rounds as f64 / seconds as f64,
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
