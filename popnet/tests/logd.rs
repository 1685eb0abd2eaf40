//! The log server end to end: real `popnet cache`, `popnet dns` and `popnet logd` processes, requests made with curl, rollups that add up to them exactly, and a logd killed with SIGKILL mid-shipping that still ends with every record once.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use cache_engine::demo_origin::DemoOrigin;
use common::{Proc, curl, free_port, sample, scrape, wait_for};

const HOST: &str = "static.demo.example";

/// The addresses and directories of one test network.
struct Net {
    dir: tempfile::TempDir,
    config: PathBuf,
    dns: SocketAddr,
    dns_admin: SocketAddr,
    logd: SocketAddr,
    logd_admin: SocketAddr,
}

impl Net {
    /// [`Net::new`] with a probe on the POP (admin listener on `admin`), checking every
    /// 200 ms: the origin with an HTTP GET of /obj/1k, the POP cache t with a TCP
    /// connect to `dead_port`, where nothing listens.
    fn with_probe(origin: SocketAddr, dead_port: u16, admin: SocketAddr) -> Net {
        let net = Net::new(origin, 5000);
        let text = std::fs::read_to_string(&net.config).unwrap();
        let probe_port = free_port();
        let text = text
            .replacen(
                "report_key =",
                "interval = \"200ms\"\ntimeout = \"150ms\"\nstale_after = \"2s\"\nreport_key =",
                1,
            )
            .replacen(
                "[[customers]]",
                &format!(
                    "[pops.cache.check]\nkind = \"tcp\"\nport = {dead_port}\n\n[pops.probe]\nlisten = \"127.0.0.1:{probe_port}\"\nadmin = \"{admin}\"\n\n[[customers]]"
                ),
                1,
            )
            .replacen(
                &format!("port = {}\n", origin.port()),
                &format!(
                    "port = {}\n[customers.origins.check]\nkind = \"http\"\npath = \"/obj/1k\"\n",
                    origin.port()
                ),
                1,
            );
        std::fs::write(&net.config, text).unwrap();
        net
    }

    /// A one-POP network whose cache serves `static.demo.example` from `origin` and
    /// ships its access log to the log server "main", which keeps customer "demo".
    fn new(origin: SocketAddr, batch_records: usize) -> Net {
        let dir = tempfile::tempdir().unwrap();
        let dns: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let dns_admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let logd: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let logd_admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let text = format!(
            r#"
[network]
name = "logd-test"
version = 1
zone = "popnet.example"

[probes]
report_key = "b931d3d715699ac5770f3adaa5de1107460e972c72dfc63c6498486c5ae09ce5"

[logs]
key = "4f1e0c2b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"
spool_dir = "{spool}"
batch_records = {batch_records}
batch_interval = "100ms"

[[pops]]
name = "t"
region = "local"
log_server = "main"
[pops.dns]
listen = ["{dns}"]
reports = "127.0.0.1:0"
admin = "{dns_admin}"
[pops.cache]
addresses = ["127.0.0.1"]
listen = ["127.0.0.1:0"]
admin = "127.0.0.1:0"

[[customers]]
name = "demo"
fee_per_gb = 0.5
zones = ["demo.example"]

[[customers.origins]]
name = "o"
addresses = ["{oip}"]
port = {oport}

[[customers.domains]]
name = "static.demo.example"
kind = "static"

[[customers.domains]]
name = "www.demo.example"
kind = "dynamic"

[[log_servers]]
name = "main"
address = "{logd}"
admin = "{logd_admin}"
customers = ["demo"]
data_dir = "{data}"
"#,
            spool = dir.path().join("spool").display(),
            data = dir.path().join("logd").display(),
            oip = origin.ip(),
            oport = origin.port(),
        );
        let config = dir.path().join("popnet.toml");
        std::fs::write(&config, text).unwrap();
        Net {
            dir,
            config,
            dns,
            dns_admin,
            logd,
            logd_admin,
        }
    }
}

/// Starts `popnet cache` on fresh ports; returns it with its HTTP and admin addresses.
fn start_cache(net: &Net) -> (Proc, SocketAddr, SocketAddr) {
    let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let p = Proc::start(
        &[
            "cache",
            "--config",
            net.config.to_str().unwrap(),
            "--listen",
            &http.to_string(),
            "--admin",
            &admin.to_string(),
            "--workers",
            "2",
        ],
        admin,
        &net.dir.path().join("cache.log"),
    );
    (p, http, admin)
}

fn start_logd(net: &Net) -> Proc {
    Proc::start(
        &["logd", "--config", net.config.to_str().unwrap()],
        net.logd_admin,
        &net.dir.path().join("logd.log"),
    )
}

/// One GET on a fresh connection: status and body.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
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

fn json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = get(addr, path).unwrap_or_else(|| panic!("GET {path} failed"));
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

fn u(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

/// `popctl`, built next to `popnet` by `cargo test --workspace`.
fn popctl(args: &[&str]) -> std::process::Output {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_popnet")).with_file_name("popctl");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p popctl` (cargo test --workspace does)",
        p.display()
    );
    Command::new(p).args(args).output().expect("popctl runs")
}

fn popctl_json(args: &[&str]) -> serde_json::Value {
    let out = popctl(args);
    assert!(
        out.status.success(),
        "popctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "popctl {args:?} --json is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn records_from_a_real_cache_reach_logd_and_the_rollups_add_up() {
    let origin = DemoOrigin::start(&["127.0.0.1:0".parse().unwrap()]).unwrap();
    let net = Net::new(origin.addrs[0], 5000);
    // The cache finds the log server as log.t.popnet.example through popnet's own DNS.
    let _dns = Proc::start(
        &["dns", "--config", net.config.to_str().unwrap()],
        net.dns_admin,
        &net.dir.path().join("dns.log"),
    );
    let logd = start_logd(&net);
    let (cache, http, cache_admin) = start_cache(&net);

    // Ten objects, each fetched three times: ten misses, then twenty hits.
    let paths: Vec<String> = (1..=10).map(|i| format!("/obj/{i}k")).collect();
    let mut seen = curl(http, HOST, &paths);
    seen.extend(curl(http, HOST, &paths));
    seen.extend(curl(http, HOST, &paths));
    // A host no customer has: kept under "-" by the POP's log server.
    let stray = curl(
        http,
        "nobody.example",
        &["/x".to_string(), "/y".to_string()],
    );
    let want_bytes: u64 = seen.iter().map(|s| s.bytes).sum();
    let hits = seen.iter().filter(|s| s.x_cache.starts_with("HIT")).count() as u64;
    let misses = seen
        .iter()
        .filter(|s| s.x_cache.starts_with("MISS"))
        .count() as u64;
    assert_eq!((hits, misses), (20, 10), "{seen:?}");
    assert!(seen.iter().all(|s| s.status == 200));

    let stats = |c: &str| json(net.logd_admin, &format!("/api/stats?customer={c}&since=1h"));
    wait_for("30 requests in logd", Duration::from_secs(60), || {
        u(&stats("demo")["total"], "requests") >= 30
    });
    // Nothing more arrives later.
    std::thread::sleep(Duration::from_millis(1500));
    let s = stats("demo");
    let t = &s["total"];
    assert_eq!(s["resolution"], "minute");
    assert_eq!(u(t, "requests"), 30);
    assert_eq!(u(t, "bytes"), want_bytes, "bytes served, head and body");
    assert_eq!((u(t, "hits"), u(t, "misses")), (20, 10));
    assert_eq!(u(t, "s2xx"), 30);
    assert_eq!(u(&s["per_pop"]["t"], "requests"), 30);
    let s = stats("-");
    assert_eq!(u(&s["total"], "requests"), stray.len() as u64);
    assert_eq!(
        u(&s["total"], "bytes"),
        stray.iter().map(|s| s.bytes).sum::<u64>()
    );

    // The last hour's graph: 60 one-minute points summing to the same.
    let g = json(net.logd_admin, "/api/series?customer=demo&range=hour");
    let points = g["points"].as_array().unwrap();
    assert_eq!(points.len(), 60);
    assert_eq!(points.iter().map(|p| u(p, "requests")).sum::<u64>(), 30);
    assert_eq!(
        points.iter().map(|p| u(p, "bytes")).sum::<u64>(),
        want_bytes
    );
    // The hour rollups hold the same, and so does the bill of this month.
    let s = json(net.logd_admin, "/api/stats?customer=demo&since=30d");
    assert_eq!(s["resolution"], "hour");
    assert_eq!(u(&s["total"], "requests"), 30);
    let bill = json(net.logd_admin, "/api/bill?customer=demo");
    assert_eq!((u(&bill, "requests"), u(&bill, "bytes")), (30, want_bytes));
    assert_eq!(bill["fee_per_gb"], 0.5);

    // The raw records: one line per request, with the bytes curl received.
    let (status, raw) = get(net.logd_admin, "/api/raw?customer=demo&hour=0s").unwrap();
    assert_eq!(status, 200);
    let (_, earlier) = get(net.logd_admin, "/api/raw?customer=demo&hour=1h").unwrap();
    let recs: Vec<serde_json::Value> = raw
        .lines()
        .chain(earlier.lines())
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 30);
    assert_eq!(recs.iter().map(|r| u(r, "bytes")).sum::<u64>(), want_bytes);

    // popctl asks the log server that keeps the customer (found in the config).
    let cfg = net.config.to_str().unwrap();
    let v = popctl_json(&["--config", cfg, "stats", "demo", "--since", "30m", "--json"]);
    assert_eq!(
        (u(&v["total"], "requests"), u(&v["total"], "bytes")),
        (30, want_bytes)
    );
    assert_eq!(u(&v["total"], "hits"), 20);
    let v = popctl_json(&["--config", cfg, "--json", "bill", "demo"]);
    assert_eq!((u(&v, "requests"), u(&v, "bytes")), (30, want_bytes));
    let month = v["month"].as_str().unwrap().to_string();
    let v = popctl_json(&["--config", cfg, "--json", "bill", "demo", "--month", &month]);
    assert_eq!(u(&v, "bytes"), want_bytes);
    let v = popctl_json(&[
        "--config", cfg, "--json", "bill", "demo", "--month", "2020-01",
    ]);
    assert_eq!((u(&v, "requests"), u(&v, "bytes")), (0, 0));
    let out = popctl(&["--config", cfg, "stats", "demo"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("requests 30") && text.contains("hits 20  misses 10"),
        "{text}"
    );
    let out = popctl(&["--config", cfg, "bill", "demo"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("bytes served {want_bytes} ")) && text.contains("fee 0.5 per GB"),
        "{text}"
    );
    // Mistakes are named, with what to do.
    let out = popctl(&["--config", cfg, "stats", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no customer named \"nobody\"") && err.contains("demo"),
        "{err}"
    );
    let out = popctl(&["--config", cfg, "bill", "demo", "--month", "2026-13"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(1) && err.contains("write YYYY-MM"),
        "{err}"
    );
    let out = popctl(&["--config", cfg, "stats", "demo", "--since", "yesterday"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(1) && err.contains("answered 400") && err.contains("\"6h\""),
        "{err}"
    );

    // Every daemon's /metrics parses and says the same.
    let c = scrape(cache_admin);
    assert_eq!(
        sample(&c, "popnet_cache_requests_total", &[("cache", "HIT")]),
        20.0
    );
    assert_eq!(
        sample(&c, "popnet_cache_requests_total", &[("cache", "MISS")]),
        10.0
    );
    let all_bytes = want_bytes + stray.iter().map(|s| s.bytes).sum::<u64>();
    assert_eq!(
        sample(&c, "popnet_cache_sent_bytes_total", &[]),
        all_bytes as f64
    );
    assert_eq!(sample(&c, "popnet_logship_records_total", &[]), 32.0);
    assert_eq!(
        sample(
            &c,
            "popnet_logship_spool_batches",
            &[("destination", "main")]
        ),
        0.0
    );
    // The cache found the log server as log.t.popnet.example through popnet's DNS.
    assert_eq!(
        sample(
            &c,
            "popnet_logship_destination_info",
            &[
                ("dns_name", "log.t.popnet.example"),
                ("resolved_by", "dns"),
                ("address", &net.logd.to_string())
            ]
        ),
        1.0
    );
    let l = scrape(net.logd_admin);
    assert_eq!(sample(&l, "popnet_logd_records_total", &[]), 32.0);
    assert_eq!(sample(&l, "popnet_logd_rejected_frames_total", &[]), 0.0);
    let d = scrape(net.dns_admin);
    assert!(sample(&d, "popnet_dns_queries_answered_total", &[]) >= 2.0);
    assert!(sample(&d, "popnet_dns_responses_total", &[("rcode", "NOERROR")]) >= 2.0);
    cache.stop();
    logd.stop();
    origin.stop();
}

/// Asks `dig` the DNS server at `dns` `n` times for `name`/`qtype` (one dig run, one
/// try each, `+tcp` if `tcp`); returns the answer lines it printed.
fn dig(dns: SocketAddr, name: &str, qtype: &str, n: usize, tcp: bool) -> Vec<String> {
    let mut cmd = Command::new("dig");
    cmd.args([
        &format!("@{}", dns.ip()),
        "-p",
        &dns.port().to_string(),
        "+short",
        "+tries=1",
        "+time=10",
    ]);
    if tcp {
        cmd.arg("+tcp");
    }
    for _ in 0..n {
        cmd.args([name, qtype]);
    }
    let out = cmd.output().expect("dig runs");
    assert!(
        out.status.success(),
        "dig failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The answers logd holds for customer `c`: (pop, domain, server, server kind) → answers.
fn dns_rows(logd_admin: SocketAddr, c: &str) -> std::collections::BTreeMap<String, u64> {
    let s = json(logd_admin, &format!("/api/stats?customer={c}&since=1h"));
    let mut out = std::collections::BTreeMap::new();
    for r in s["dns"].as_array().unwrap() {
        let k = format!(
            "{} {} {} {}",
            r["pop"].as_str().unwrap(),
            r["domain"].as_str().unwrap(),
            r["server"].as_str().unwrap(),
            r["server_kind"].as_str().unwrap()
        );
        *out.entry(k).or_default() += u(r, "answers");
    }
    out
}

#[test]
fn dns_answers_of_a_real_dns_server_reach_logd_and_add_up_to_the_queries() {
    let origin = DemoOrigin::start(&["127.0.0.1:0".parse().unwrap()]).unwrap();
    let net = Net::new(origin.addrs[0], 5000);
    let logd = start_logd(&net);
    let dns = Proc::start(
        &[
            "dns",
            "--config",
            net.config.to_str().unwrap(),
            "--workers",
            "2",
        ],
        net.dns_admin,
        &net.dir.path().join("dns.log"),
    );
    // Static: the POP cache t (127.0.0.1); dynamic: the origin demo/o. Over UDP and TCP.
    assert_eq!(dig(net.dns, HOST, "A", 7, false), vec!["127.0.0.1"; 7]);
    assert_eq!(dig(net.dns, HOST, "A", 3, true), vec!["127.0.0.1"; 3]);
    let oip = origin.addrs[0].ip().to_string();
    assert_eq!(
        dig(net.dns, "www.demo.example", "A", 5, false),
        vec![oip.clone(); 5]
    );
    // No address handed out: AAAA of names without IPv6 (NODATA), names not ours
    // (REFUSED), a name that does not exist (NXDOMAIN).
    assert!(dig(net.dns, HOST, "AAAA", 2, false).is_empty());
    assert!(dig(net.dns, "example.com", "A", 2, false).is_empty());
    assert!(dig(net.dns, "nothing.demo.example", "A", 2, false).is_empty());

    let want = |stat: u64, dynamic: u64| {
        std::collections::BTreeMap::from([
            (format!("t {HOST} t pop-cache"), stat),
            ("t www.demo.example demo/o origin".to_string(), dynamic),
        ])
    };
    wait_for("15 answers in logd", Duration::from_secs(60), || {
        dns_rows(net.logd_admin, "demo").values().sum::<u64>() >= 15
    });
    // Counted once each: nothing more arrives in the following intervals.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(dns_rows(net.logd_admin, "demo"), want(10, 5));
    assert!(dns_rows(net.logd_admin, "-").is_empty());

    // The raw records say which view and type.
    let (status, raw) = get(net.logd_admin, "/api/raw?customer=demo&kind=dns&hour=0s").unwrap();
    assert_eq!(status, 200, "{raw}");
    let (_, earlier) = get(net.logd_admin, "/api/raw?customer=demo&kind=dns&hour=1h").unwrap();
    let recs: Vec<serde_json::Value> = raw
        .lines()
        .chain(earlier.lines())
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!recs.is_empty());
    for r in &recs {
        assert_eq!(
            (r["view"].as_str(), r["qtype"].as_str()),
            (Some("default"), Some("A")),
            "{r}"
        );
        assert!(u(r, "from_ms") <= u(r, "ts_ms"), "{r}");
    }
    assert_eq!(recs.iter().map(|r| u(r, "answers")).sum::<u64>(), 15);

    // The DNS server's /metrics shows its shipper.
    let d = scrape(net.dns_admin);
    assert!(sample(&d, "popnet_logship_records_total", &[("source", "t/dns")]) >= 2.0);
    assert_eq!(
        sample(
            &d,
            "popnet_logship_spool_batches",
            &[("destination", "main")]
        ),
        0.0
    );

    // Answers counted just before a clean stop are drained and shipped as it stops.
    assert_eq!(
        dig(net.dns, "www.demo.example", "A", 4, false),
        vec![oip; 4]
    );
    dns.stop();
    wait_for("19 answers in logd", Duration::from_secs(30), || {
        dns_rows(net.logd_admin, "demo").values().sum::<u64>() >= 19
    });
    assert_eq!(dns_rows(net.logd_admin, "demo"), want(10, 9));
    logd.stop();
    origin.stop();
}

/// The probe results logd holds for customer `c`: target → (checks, failures).
fn probe_rows(logd_admin: SocketAddr, c: &str) -> std::collections::BTreeMap<String, (u64, u64)> {
    let s = json(logd_admin, &format!("/api/stats?customer={c}&since=1h"));
    let mut out = std::collections::BTreeMap::new();
    for r in s["probes"].as_array().unwrap() {
        assert_eq!(r["pop"], "t", "{r}");
        let e = out
            .entry(r["target"].as_str().unwrap().to_string())
            .or_insert((0, 0));
        e.0 += u(r, "checks");
        e.1 += u(r, "failures");
    }
    out
}

#[test]
fn probe_results_of_a_real_probe_reach_logd_and_add_up_to_the_checks_made() {
    let origin = DemoOrigin::start(&["127.0.0.1:0".parse().unwrap()]).unwrap();
    // Nothing listens on the POP cache's check port: every check of it fails.
    let dead_port = free_port();
    let probe_admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let net = Net::with_probe(origin.addrs[0], dead_port, probe_admin);
    let logd = start_logd(&net);
    let probe = Proc::start(
        &[
            "probe",
            "--config",
            net.config.to_str().unwrap(),
            "--no-icmp",
        ],
        probe_admin,
        &net.dir.path().join("probe.log"),
    );
    // The origin's checks are kept under its customer, the POP cache's under "-".
    wait_for(
        "5 rounds of both targets in logd",
        Duration::from_secs(60),
        || {
            probe_rows(net.logd_admin, "demo")
                .get("demo/o")
                .is_some_and(|c| c.0 >= 5)
                && probe_rows(net.logd_admin, "-")
                    .get("t")
                    .is_some_and(|c| c.0 >= 5)
        },
    );
    // The probe's /metrics parses, and says what logd will hold: every round it counted
    // is (or soon is) a record in logd.
    let m = scrape(probe_admin);
    let up = |t: &str| sample(&m, "popnet_probe_target_up", &[("target", t)]);
    assert_eq!((up("demo/o"), up("t")), (1.0, 0.0));
    let rounds = |t: &str| sample(&m, "popnet_probe_target_rounds_total", &[("target", t)]);
    let failures = |t: &str| sample(&m, "popnet_probe_target_failures_total", &[("target", t)]);
    let (o_rounds, t_rounds) = (rounds("demo/o") as u64, rounds("t") as u64);
    assert!(o_rounds >= 5 && t_rounds >= 5, "{o_rounds} {t_rounds}");
    assert_eq!(failures("demo/o"), 0.0);
    assert_eq!(failures("t"), t_rounds as f64);
    // A round's record is handed to the shipper at the probe's next 100 ms flush.
    wait_for(
        "the probe's shipper to take every round /metrics counted",
        Duration::from_secs(30),
        || {
            let m = scrape(probe_admin);
            sample(&m, "popnet_logship_records_total", &[("source", "t/probe")])
                >= (o_rounds + t_rounds) as f64
        },
    );
    wait_for(
        "logd to hold what /metrics counted",
        Duration::from_secs(30),
        || {
            probe_rows(net.logd_admin, "demo")["demo/o"].0 >= o_rounds
                && probe_rows(net.logd_admin, "-")["t"].0 >= t_rounds
        },
    );
    let (status, stats) = get(probe_admin, "/stats").unwrap();
    assert_eq!(status, 200, "{stats}");
    assert!(stats.contains("\"demo/o\""), "{stats}");
    probe.stop();
    // Every GET the origin served is one passed check in logd (but the one a stop may
    // have cut short before its response was read).
    std::thread::sleep(Duration::from_millis(500));
    let served = origin.requests();
    let demo = probe_rows(net.logd_admin, "demo");
    assert_eq!(demo.len(), 1, "{demo:?}");
    let (checks, failures) = demo["demo/o"];
    assert_eq!(failures, 0, "{demo:?}");
    assert!(
        checks == served || checks + 1 == served,
        "logd has {checks} checks of the origin, which served {served} requests"
    );
    let pops = probe_rows(net.logd_admin, "-");
    assert_eq!(pops.len(), 1, "{pops:?}");
    let (t_checks, t_failures) = pops["t"];
    assert_eq!(t_failures, t_checks, "every check of a dead port fails");
    assert!(
        t_checks.abs_diff(checks) <= 2,
        "same interval: {t_checks} vs {checks}"
    );

    // The raw records: one per round, with the HTTP status and the reason of a failure.
    let raw = |c: &str| -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for hour in ["1h", "0s"] {
            let (status, text) = get(
                net.logd_admin,
                &format!("/api/raw?customer={c}&kind=probe&hour={hour}"),
            )
            .unwrap();
            assert_eq!(status, 200, "{text}");
            out.extend(
                text.lines()
                    .filter(|l| !l.is_empty())
                    .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()),
            );
        }
        out
    };
    let recs = raw("demo");
    assert_eq!(recs.len() as u64, checks);
    assert!(
        recs.iter()
            .all(|r| r["ok"] == true && r["status"] == 200 && r["target"] == "demo/o"),
        "{recs:?}"
    );
    let recs = raw("-");
    assert_eq!(recs.len() as u64, t_checks);
    assert!(
        recs.iter()
            .all(|r| r["ok"] == false && r["error"].is_string()),
        "{recs:?}"
    );
    logd.stop();
    origin.stop();
}

#[test]
fn a_logd_killed_during_shipping_ends_with_every_record_exactly_once() {
    let origin = DemoOrigin::start(&["127.0.0.1:0".parse().unwrap()]).unwrap();
    // Small batches: many numbered batches in flight when logd dies.
    let net = Net::new(origin.addrs[0], 10);
    let logd = start_logd(&net);
    let (cache, http, cache_admin) = start_cache(&net);
    let total_requests = |addr| {
        get(addr, "/api/stats?customer=demo&since=1h")
            .filter(|(s, _)| *s == 200)
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
            .map_or(0, |v| u(&v["total"], "requests"))
    };

    const ROUNDS: usize = 12;
    const PER_ROUND: usize = 50;
    let mut bytes = 0u64;
    let mut made = 0usize;
    let mut logd = Some(logd);
    for round in 0..ROUNDS {
        let paths: Vec<String> = (0..PER_ROUND)
            .map(|i| format!("/r{round}/{}", 100 + i))
            .collect();
        let seen = curl(http, HOST, &paths);
        made += seen.len();
        bytes += seen.iter().map(|s| s.bytes).sum::<u64>();
        if round == 3 {
            // Kill logd once it has stored some of them, while batches are in flight.
            wait_for("logd to store records", Duration::from_secs(60), || {
                total_requests(net.logd_admin) > 0
            });
            logd.take().unwrap().kill9();
        }
        if round == 8 {
            logd = Some(start_logd(&net));
        }
    }
    let logd = logd.unwrap();
    wait_for("every record in logd", Duration::from_secs(120), || {
        total_requests(net.logd_admin) >= made as u64
    });
    std::thread::sleep(Duration::from_millis(1500));
    let s = json(net.logd_admin, "/api/stats?customer=demo&since=1h");
    assert_eq!(u(&s["total"], "requests"), made as u64);
    assert_eq!(u(&s["total"], "bytes"), bytes);
    let streams = json(net.logd_admin, "/api/streams");
    let records: u64 = streams
        .as_array()
        .unwrap()
        .iter()
        .map(|s| u(s, "records"))
        .sum();
    let missing: u64 = streams
        .as_array()
        .unwrap()
        .iter()
        .map(|s| u(s, "missing"))
        .sum();
    assert_eq!((records, missing), (made as u64, 0), "{streams}");
    // Each request's raw record once.
    let mut paths: Vec<String> = ["0s", "1h"]
        .iter()
        .flat_map(|h| {
            let (_, raw) =
                get(net.logd_admin, &format!("/api/raw?customer=demo&hour={h}")).unwrap();
            raw.lines()
                .filter(|l| !l.is_empty())
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["path"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(paths.len(), made);
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), made);
    // The shipping did span the kill: the cache had to connect again, and its spool is empty.
    let c = scrape(cache_admin);
    assert!(
        sample(
            &c,
            "popnet_logship_connects_total",
            &[("destination", "main")]
        ) >= 2.0
    );
    assert_eq!(sample(&c, "popnet_logship_records_total", &[]), made as f64);
    assert_eq!(
        sample(
            &c,
            "popnet_logship_spool_batches",
            &[("destination", "main")]
        ),
        0.0
    );
    cache.stop();
    logd.stop();
    origin.stop();
}
