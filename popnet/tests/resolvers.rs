//! Latency-ranked views through real clients: the server asks fake POP probes (real UDP
//! sockets speaking the latency-probe format) about the resolvers `dig` queries from, and
//! the answers follow the round trips the probes report.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, now_ms, test_config};
use probe::latency::{LatencyRequest, LatencyResponse, LatencyResult};

/// The report key of the test config (hex in the file, 32 bytes in use).
fn key() -> Vec<u8> {
    popnet_config::Config::from_toml(&test_config(), "test")
        .unwrap()
        .probes
        .report_key
        .as_bytes()
        .to_vec()
}
const EAST_POP: &str = "192.0.2.1";
const WEST_POP: &str = "192.0.2.2";

/// A POP probe's latency responder: answers every request with the round trips set in
/// `rtt` (microseconds; an address missing from it is unreachable).
struct FakeProbe {
    addr: SocketAddr,
    rtt: Arc<Mutex<HashMap<IpAddr, u32>>>,
    /// While false, requests go unanswered (a dead probe).
    answering: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    addresses: Arc<Mutex<Vec<IpAddr>>>,
    stop: Arc<AtomicBool>,
}

impl FakeProbe {
    fn start(pop: &'static str) -> FakeProbe {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let p = FakeProbe {
            addr: sock.local_addr().unwrap(),
            rtt: Arc::default(),
            answering: Arc::new(AtomicBool::new(true)),
            requests: Arc::default(),
            addresses: Arc::default(),
            stop: Arc::default(),
        };
        let (rtt, answering, requests, addresses, stop) = (
            p.rtt.clone(),
            p.answering.clone(),
            p.requests.clone(),
            p.addresses.clone(),
            p.stop.clone(),
        );
        let key = key();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let req = LatencyRequest::decode(&buf[..n], &key)
                    .expect("the server's latency request verifies with the shared key");
                requests.fetch_add(1, Ordering::Relaxed);
                addresses.lock().unwrap().extend(&req.addrs);
                if !answering.load(Ordering::Relaxed) {
                    continue;
                }
                let table = rtt.lock().unwrap();
                let resp = LatencyResponse {
                    sender: pop.into(),
                    seq: req.seq,
                    sent_at_ms: now_ms(),
                    results: req
                        .addrs
                        .iter()
                        .map(|a| LatencyResult {
                            addr: *a,
                            rtt_us: table.get(a).copied(),
                            measured_at_ms: now_ms(),
                        })
                        .collect(),
                };
                let bytes = resp.encode(&key).unwrap();
                sock.send_to(&bytes, from).unwrap();
            }
        });
        p
    }

    fn set(&self, resolver: &str, ms: u32) {
        self.rtt
            .lock()
            .unwrap()
            .insert(resolver.parse().unwrap(), ms * 1000);
    }
}

impl Drop for FakeProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The test config with both POPs' probes at the fake ones and a 1 s refresh.
fn config(east: &FakeProbe, west: &FakeProbe, extra: &str) -> String {
    test_config()
        .replace(
            "listen = \"127.0.0.1:5355\"",
            &format!("listen = \"{}\"", east.addr),
        )
        .replace(
            "addresses = [\"192.0.2.2\"]\nlisten = [\"127.0.0.2:8080\"]",
            &format!(
                "addresses = [\"192.0.2.2\"]\nlisten = [\"127.0.0.2:8080\"]\n[pops.probe]\nlisten = \"{}\"",
                west.addr
            ),
        )
        .replace(
            "recovery = \"1s\"",
            &format!(
                "recovery = \"1s\"\nresolver_refresh = \"1s\"\nresolver_stale_after = \"3s\"\n{extra}"
            ),
        )
}

fn img_from(s: &Server, from: &str) -> Vec<String> {
    s.dig(&["-b", from, "img.shop.example", "A"])
        .answer
        .iter()
        .map(|r| r.data.clone())
        .collect()
}

fn resolver<'v>(list: &'v serde_json::Value, addr: &str) -> Option<&'v serde_json::Value> {
    list["resolvers"]
        .as_array()?
        .iter()
        .find(|r| r["address"] == addr)
}

#[test]
fn a_resolver_gets_the_pop_its_probes_measured_nearest() {
    let (east, west) = (FakeProbe::start("pop-east"), FakeProbe::start("pop-west"));
    // 127.0.0.5 and .6 are in the east view by prefix; .5 is measured near the west POP.
    east.set("127.0.0.5", 80);
    west.set("127.0.0.5", 5);
    east.set("127.0.0.6", 4);
    west.set("127.0.0.6", 70);
    let s = Server::start(&config(&east, &west, ""));
    assert_eq!(img_from(&s, "127.0.0.5"), [EAST_POP], "before any figures");
    let _ = img_from(&s, "127.0.0.6"); // seen now (figures may already be arriving)
    let moved = s.wait_until(Duration::from_secs(20), || {
        img_from(&s, "127.0.0.5") == [WEST_POP]
    });
    assert!(
        moved.is_some(),
        "the answer did not follow the probes' round trips: {}",
        s.admin_json("/resolvers")
    );
    assert!(
        s.wait_until(Duration::from_secs(15), || {
            resolver(&s.admin_json("/resolvers"), "127.0.0.6")
                .is_some_and(|r| r["near_view"] == "near:pop-east")
        })
        .is_some()
    );
    assert_eq!(
        img_from(&s, "127.0.0.6"),
        [EAST_POP],
        "{}",
        s.admin_json("/selections")
    );

    let list = s.admin_json("/resolvers");
    let r5 = resolver(&list, "127.0.0.5").expect("127.0.0.5 tracked");
    assert_eq!(r5["prefix_view"], "east");
    assert_eq!(r5["near_view"], "near:pop-west");
    let rtt: Vec<(String, f64)> = r5["rtt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["pop"].as_str().unwrap().to_string(),
                m["ms"].as_f64().unwrap(),
            )
        })
        .collect();
    assert!(rtt.contains(&("pop-east".into(), 80.0)), "{r5}");
    assert!(rtt.contains(&("pop-west".into(), 5.0)), "{r5}");
    // Both probes were asked about both resolvers, in batches.
    for p in [&east, &west] {
        let asked = p.addresses.lock().unwrap().clone();
        for a in ["127.0.0.5", "127.0.0.6"] {
            assert!(asked.contains(&a.parse().unwrap()), "{asked:?}");
        }
    }
    let st = s.admin_json("/stats");
    assert!(st["resolvers"]["responses"].as_u64().unwrap() >= 2, "{st}");
    assert_eq!(st["resolvers"]["bad_responses"], 0);

    // popctl shows the same.
    let out = std::process::Command::new(common::popctl_bin())
        .args(["--admin", &s.admin.to_string(), "dns", "resolvers"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("127.0.0.5 "))
        .expect(&text);
    assert!(
        line.contains("near:pop-west") && line.contains("pop-west 5.0ms"),
        "{line}"
    );
}

#[test]
fn a_small_difference_does_not_move_a_resolver_and_stale_figures_fall_back() {
    let (east, west) = (FakeProbe::start("pop-east"), FakeProbe::start("pop-west"));
    east.set("127.0.0.7", 50);
    west.set("127.0.0.7", 20);
    let s = Server::start(&config(&east, &west, ""));
    let _ = img_from(&s, "127.0.0.7");
    assert!(
        s.wait_until(Duration::from_secs(20), || img_from(&s, "127.0.0.7")
            == [WEST_POP])
            .is_some()
    );
    // East 5 % closer than west: inside the margin, nothing moves over two refreshes.
    east.set("127.0.0.7", 19);
    let arrived = s.wait_until(Duration::from_secs(15), || {
        resolver(&s.admin_json("/resolvers"), "127.0.0.7").is_some_and(|r| {
            r["rtt"]
                .as_array()
                .is_some_and(|a| a.iter().any(|m| m["pop"] == "pop-east" && m["ms"] == 19.0))
        })
    });
    assert!(arrived.is_some(), "the new figure never arrived");
    // One more refresh with the same figures changes nothing either (asking meanwhile,
    // so the resolver stays seen).
    let until = std::time::Instant::now() + Duration::from_millis(2500);
    while std::time::Instant::now() < until {
        let _ = img_from(&s, "127.0.0.7");
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = s.admin_json("/resolvers");
    let r7 = resolver(&r, "127.0.0.7").unwrap();
    assert_eq!(r7["near_view"], "near:pop-west", "{r7}");
    assert_eq!(img_from(&s, "127.0.0.7"), [WEST_POP]);
    // Far closer: it moves.
    east.set("127.0.0.7", 5);
    assert!(
        s.wait_until(Duration::from_secs(15), || img_from(&s, "127.0.0.7")
            == [EAST_POP])
            .is_some()
    );
    let _ = img_from(&s, "127.0.0.7");

    // Now west gets much closer but both probes go silent: the figures age past
    // resolver_stale_after (3 s) and the resolver falls back to its prefix view (east).
    east.answering.store(false, Ordering::Relaxed);
    west.answering.store(false, Ordering::Relaxed);
    let silent = std::time::Instant::now();
    assert!(
        s.wait_until(Duration::from_secs(8), || {
            let _ = img_from(&s, "127.0.0.7"); // keep it seen
            resolver(&s.admin_json("/resolvers"), "127.0.0.7")
                .is_some_and(|r| r["near_view"].is_null())
        })
        .is_some(),
        "stale figures kept the resolver in its near view"
    );
    assert!(silent.elapsed() >= Duration::from_secs(2));
    assert_eq!(img_from(&s, "127.0.0.7"), [EAST_POP]);
}

#[test]
fn summed_latencies_count_the_probe_to_server_leg() {
    let (east, west) = (FakeProbe::start("pop-east"), FakeProbe::start("pop-west"));
    // The resolver is a little nearer the east probe, but the east probe is 100 ms from
    // this DNS server (127.0.0.1).
    east.set("127.0.0.8", 10);
    west.set("127.0.0.8", 30);
    east.set("127.0.0.1", 100);
    west.set("127.0.0.1", 1);
    let s = Server::start(&config(&east, &west, "sum_latencies = true"));
    let _ = img_from(&s, "127.0.0.8");
    assert!(
        s.wait_until(Duration::from_secs(20), || {
            resolver(&s.admin_json("/resolvers"), "127.0.0.8")
                .is_some_and(|r| r["near_view"] == "near:pop-west")
        })
        .is_some(),
        "{}",
        s.admin_json("/resolvers")
    );
    // The probes were asked about the server's own address too.
    assert!(
        east.addresses
            .lock()
            .unwrap()
            .contains(&"127.0.0.1".parse().unwrap())
    );
    // The answer follows once the placement is published.
    assert!(
        s.wait_until(Duration::from_secs(10), || img_from(&s, "127.0.0.8")
            == [WEST_POP])
            .is_some(),
        "{:?}",
        img_from(&s, "127.0.0.8")
    );
}

#[test]
fn hostile_latency_responses_are_dropped_and_counted() {
    let (east, west) = (FakeProbe::start("pop-east"), FakeProbe::start("pop-west"));
    let s = Server::start(&config(&east, &west, ""));
    let _ = img_from(&s, "127.0.0.9");
    let good = LatencyResponse {
        sender: "pop-west".into(),
        seq: 1,
        sent_at_ms: now_ms(),
        results: vec![LatencyResult {
            addr: "127.0.0.9".parse().unwrap(),
            rtt_us: Some(1),
            measured_at_ms: now_ms(),
        }],
    };
    let signed = good.encode(&key()).unwrap();
    let wrong_key = good.encode(b"not the key of this deployment.").unwrap();
    let mut oversized = signed.clone();
    oversized.resize(65_000, 0);
    let mut flipped = signed.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    // Signed with our key but from a POP that runs no probe in the config.
    let stranger = LatencyResponse {
        sender: "pop-nowhere".into(),
        ..good.clone()
    }
    .encode(&key())
    .unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let hostile: Vec<Vec<u8>> = vec![
        wrong_key,
        signed[..signed.len() - 5].to_vec(),
        signed[..10].to_vec(),
        oversized,
        flipped,
        stranger,
        b"PNLR".to_vec(),
    ];
    for d in &hostile {
        sock.send_to(d, s.reports).unwrap();
    }
    let want = hostile.len() as u64;
    assert!(
        s.wait_until(Duration::from_secs(10), || {
            s.admin_json("/stats")["resolvers"]["bad_responses"].as_u64() == Some(want)
        })
        .is_some(),
        "{}",
        s.admin_json("/stats")["resolvers"]
    );
    // None of them placed the resolver; the server still answers and reports still work.
    let r = s.admin_json("/resolvers");
    assert!(
        resolver(&r, "127.0.0.9").is_none_or(|r| r["near_view"].is_null()),
        "{r}"
    );
    assert_eq!(img_from(&s, "127.0.0.9"), [EAST_POP]);
}

#[test]
fn resolvers_asking_over_tcp_are_measured_too() {
    let (east, west) = (FakeProbe::start("pop-east"), FakeProbe::start("pop-west"));
    east.set("127.0.0.10", 60);
    west.set("127.0.0.10", 6);
    let s = Server::start(&config(&east, &west, ""));
    let tcp_img = |s: &Server| -> Vec<String> {
        s.dig(&["+tcp", "-b", "127.0.0.10", "img.shop.example", "A"])
            .answer
            .iter()
            .map(|r| r.data.clone())
            .collect()
    };
    assert_eq!(tcp_img(&s), [EAST_POP]);
    assert!(
        s.wait_until(Duration::from_secs(20), || tcp_img(&s) == [WEST_POP])
            .is_some(),
        "{}",
        s.admin_json("/resolvers")
    );
}
