//! `popnet probe` end to end: real `popnet dns`, `popnet cache` and `popnet probe` processes and demo origins on loopback; the DNS server's `/servers` shows what the probe measured.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cache_engine::demo_origin::{DemoOrigin, body_of_path};
use common::{free_port, http_get, popctl_bin, popnet_bin};
use serde_json::Value;

const INTERVAL: Duration = Duration::from_millis(500);

/// A child process killed on drop.
struct Proc(Child, &'static str);

impl Proc {
    fn start(args: &[&str], config: &Path, what: &'static str) -> Proc {
        let child = Command::new(popnet_bin())
            .args(["--log", "warn"])
            .args(args)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn popnet");
        Proc(child, what)
    }

    /// Panics with its stderr if it has exited.
    fn alive(&mut self) {
        if let Ok(Some(st)) = self.0.try_wait() {
            let mut err = String::new();
            self.0.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("popnet {} exited ({st}):\n{err}", self.1);
        }
    }

    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The test network on loopback; `ports` are dns, reports, admin, cache, cache admin
/// and probe.
fn config(ports: &[u16; 6], east: SocketAddr, west: SocketAddr) -> String {
    let [dns, reports, admin, cache, cache_admin, probe] = *ports;
    let body_xxh3 = probe::check::body_xxh3_hex(&body_of_path("/health/300"));
    format!(
        r#"
[network]
name = "probetest"
version = 1
zone = "popnet.test.example"

[probes]
report_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
interval = "500ms"
timeout = "300ms"
stale_after = "3s"
recovery = "1s"

[[views]]
name = "loopback"
region = "local"
prefixes = ["127.0.0.0/8"]

[[pops]]
name = "p1"
region = "local"
[pops.dns]
listen = ["127.0.0.1:{dns}"]
reports = "127.0.0.1:{reports}"
admin = "127.0.0.1:{admin}"
[pops.cache]
addresses = ["127.0.0.1"]
listen = ["127.0.0.1:{cache}"]
admin = "127.0.0.1:{cache_admin}"
workers = 1
max_connections = 100
[pops.probe]
listen = "127.0.0.1:{probe}"

[[customers]]
name = "shop"
zones = ["shop.example"]

[[customers.origins]]
name = "east"
addresses = ["{east_ip}"]
port = {east_port}
region = "local"
[customers.origins.check]
kind = "http"
path = "/health/300"
body_xxh3 = "{body_xxh3}"

[[customers.origins]]
name = "west"
addresses = ["{west_ip}"]
port = {west_port}
region = "local"

[[customers.domains]]
name = "www.shop.example"
kind = "dynamic"

[[customers.domains]]
name = "img.shop.example"
kind = "static"
"#,
        east_ip = east.ip(),
        east_port = east.port(),
        west_ip = west.ip(),
        west_port = west.port(),
    )
}

fn servers(admin: SocketAddr) -> Vec<Value> {
    let body = http_get(admin, "/servers").unwrap_or_else(|_| "[]".into());
    serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn server(list: &[Value], id: &str) -> Value {
    list.iter()
        .find(|s| s["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Age (ms) of a figure, if present.
fn age(v: &Value) -> Option<u64> {
    v.get("age_ms").and_then(Value::as_u64)
}

fn fresh_up(s: &Value, within_ms: u64) -> bool {
    s["health"]["state"] == "up" && age(&s["rtt_ms"]).is_some_and(|a| a <= within_ms)
}

/// Polls `/servers` until `ok` holds or `limit` passes; returns the last list.
fn until(admin: SocketAddr, limit: Duration, ok: impl Fn(&[Value]) -> bool) -> (bool, Vec<Value>) {
    let end = Instant::now() + limit;
    loop {
        let list = servers(admin);
        if ok(&list) {
            return (true, list);
        }
        if Instant::now() > end {
            return (false, list);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn probe_reports_health_and_load_follows_a_dead_origin_and_survives_a_restart() {
    let east = DemoOrigin::start(&["127.0.0.1:0".parse().unwrap()]).unwrap();
    let west = DemoOrigin::start(&["127.0.0.2:0".parse().unwrap()]).unwrap();
    let (e, w) = (east.addrs[0], west.addrs[0]);
    let ports: [u16; 6] = std::array::from_fn(|_| free_port());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("popnet.toml");
    std::fs::write(&cfg, config(&ports, e, w)).unwrap();
    let admin: SocketAddr = ([127, 0, 0, 1], ports[2]).into();
    let mut dns = Proc::start(&["dns"], &cfg, "dns");
    let mut cache = Proc::start(&["cache"], &cfg, "cache");
    let mut probe = Proc::start(&["probe"], &cfg, "probe");

    // Every target up with fresh figures, the POP cache with a load.
    let (ok, list) = until(admin, Duration::from_secs(15), |l| {
        ["p1", "shop/east", "shop/west"]
            .iter()
            .all(|id| fresh_up(&server(l, id), 1_500))
            && age(&server(l, "p1")["load"]).is_some_and(|a| a <= 1_500)
    });
    dns.alive();
    cache.alive();
    probe.alive();
    assert!(ok, "not every target fresh and up: {list:#?}");
    let p1 = server(&list, "p1");
    let load = p1["load"]["value"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&load), "{p1}");
    assert_eq!(server(&list, "shop/east")["health"]["availability"], 1.0);

    // A dead origin is down within two intervals (plus delivery on a busy box).
    west.stop();
    let killed = Instant::now();
    let (ok, list) = until(admin, Duration::from_secs(5), |l| {
        server(l, "shop/west")["health"]["state"] == "down"
    });
    let took = killed.elapsed();
    assert!(ok, "shop/west never went down: {list:#?}");
    eprintln!("shop/west was reported down {took:?} after it died");
    assert!(
        took <= 2 * INTERVAL + Duration::from_millis(800),
        "down after {took:?}"
    );
    assert!(fresh_up(&server(&list, "shop/east"), 1_500), "{list:#?}");
    // And up again when it comes back.
    let west = DemoOrigin::start(&[w]).unwrap();
    let (ok, list) = until(admin, Duration::from_secs(5), |l| {
        server(l, "shop/west")["health"]["state"] == "up"
    });
    assert!(ok, "shop/west never came back: {list:#?}");

    // A killed probe's figures age; a restarted one (sequence back at 0) is believed.
    probe.kill();
    let (ok, list) = until(admin, Duration::from_secs(5), |l| {
        age(&server(l, "shop/east")["rtt_ms"]).is_some_and(|a| a >= 1_000)
    });
    assert!(ok, "figures kept coming after the probe died: {list:#?}");
    let mut probe = Proc::start(&["probe"], &cfg, "probe");
    let (ok, list) = until(admin, Duration::from_secs(10), |l| {
        ["p1", "shop/east", "shop/west"]
            .iter()
            .all(|id| fresh_up(&server(l, id), 800))
    });
    probe.alive();
    assert!(
        ok,
        "the restarted probe's reports were not taken: {list:#?}"
    );
    let stats: Value = serde_json::from_str(&http_get(admin, "/stats").unwrap()).unwrap();
    eprintln!("{}", stats["reports"]);
    drop((east, west));
}

#[test]
fn popnet_up_demo_ends_with_every_target_up_in_popctl_metrics() {
    // The demo's own ports (5353-5355, 5380, 5381, 8080, 8081): only this test and
    // cli.rs run the demo, in different test binaries (which cargo runs one at a time).
    let mut up = Proc(
        Command::new(popnet_bin())
            .args(["--log", "warn", "up"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        "up",
    );
    let admin: SocketAddr = "127.0.0.1:5380".parse().unwrap();
    let (ok, list) = until(admin, Duration::from_secs(20), |l| {
        ["local", "demo/origin-a", "demo/origin-b"]
            .iter()
            .all(|id| fresh_up(&server(l, id), 2_000))
            && server(l, "local")["load"].get("value").is_some()
    });
    up.alive();
    assert!(ok, "{list:#?}");
    let out = Command::new(popctl_bin())
        .args(["--json", "metrics"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for id in ["local", "demo/origin-a", "demo/origin-b"] {
        let s = server(v.as_array().unwrap(), id);
        assert_eq!(s["health"]["state"], "up", "{id}: {s}");
        assert!(age(&s["rtt_ms"]).is_some_and(|a| a <= 2_000), "{id}: {s}");
    }
    // The table the README shows.
    let out = Command::new(popctl_bin()).arg("metrics").output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    for id in ["local", "demo/origin-a", "demo/origin-b"] {
        let row = table.lines().find(|l| l.starts_with(id)).unwrap_or("");
        assert!(row.contains(" up "), "{table}");
    }
}

#[test]
fn a_wrong_pop_or_a_busy_latency_socket_is_an_error_that_says_so() {
    let out = Command::new(popnet_bin())
        .args(["probe", "--pop", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no POP is named \"nope\"; the config has local"),
        "{err}"
    );

    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let at = busy.local_addr().unwrap().to_string();
    let out = Command::new(popnet_bin())
        .args(["probe", "--listen", &at])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot bind the latency-probe socket {at}")),
        "{err}"
    );
}
