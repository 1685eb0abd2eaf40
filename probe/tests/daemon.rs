//! The daemon in-process: its reports reach every DNS server's report socket, signed, numbered from 0, stamped, every round; its stats keep response-time distributions.

mod support;

use std::collections::HashMap;
use std::net::UdpSocket;
use std::time::Duration;

use popnet_config::Config;
use probe::report::Report;
use probe::{ProbeDaemon, ProbeOptions};
use support::{Reply, closed_port, http_server};

const KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn key() -> Vec<u8> {
    (0..KEY_HEX.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&KEY_HEX[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn reports_go_to_every_dns_server_each_round_numbered_and_stamped() {
    let origin = http_server(Reply::ok("fine"));
    let dead = closed_port();
    let dns_a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns_b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let text = format!(
        r#"
[network]
name = "t"
version = 1
zone = "popnet.internal"

[probes]
report_key = "{KEY_HEX}"
interval = "200ms"
timeout = "150ms"
stale_after = "1s"

[[pops]]
name = "a"
region = "r"
[pops.dns]
listen = ["127.0.0.1:1"]
reports = "{ra}"
admin = "127.0.0.1:1"

[[pops]]
name = "b"
region = "r"
[pops.dns]
listen = ["127.0.0.1:1"]
reports = "{rb}"
admin = "127.0.0.1:2"
[pops.probe]
listen = "127.0.0.1:0"

[[customers]]
name = "shop"
zones = ["shop.example"]

[[customers.origins]]
name = "up"
addresses = ["127.0.0.1"]
port = {up}
[customers.origins.check]
kind = "http"
path = "/status"
body_contains = "fine"

[[customers.origins]]
name = "dead"
addresses = ["127.0.0.1"]
port = {dead}
"#,
        ra = dns_a.local_addr().unwrap(),
        rb = dns_b.local_addr().unwrap(),
        up = origin.addr.port(),
        dead = dead.port(),
    );
    let cfg = Config::from_toml(&text, "test").expect("valid config");
    let before = probe::unix_ms();
    let d = ProbeDaemon::start(&cfg, &ProbeOptions::default()).unwrap();
    assert_eq!(d.pop, "b", "the only POP with [pops.probe]");
    assert_eq!(d.targets, vec!["shop/up", "shop/dead"]);
    assert!(d.latency.is_some_and(|a| a.port() != 0));

    std::thread::sleep(Duration::from_millis(1300));
    let stats = d.stats();
    d.stop();
    // Everything sent is in the sockets' buffers now.
    let mut per_sock = Vec::new();
    for s in [&dns_a, &dns_b] {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut reports = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = s.recv_from(&mut buf) {
            reports.push(Report::decode(&buf[..n], &key()).expect("signed"));
        }
        per_sock.push(reports);
    }

    for reports in &per_sock {
        assert!(!reports.is_empty());
        assert_eq!(reports[0].seq, 0, "a new probe counts from 0");
        for w in reports.windows(2) {
            assert!(w[1].seq > w[0].seq);
            assert!(w[1].sent_at_ms >= w[0].sent_at_ms);
        }
        assert!(
            reports
                .iter()
                .all(|r| r.sender == "b" && r.sent_at_ms >= before)
        );
    }
    // Every round is reported, not only changes; the dead origin is down from its
    // second failed round on.
    assert_eq!(
        per_sock[0].len(),
        per_sock[1].len(),
        "the same reports to both"
    );
    let mut rounds: HashMap<&str, Vec<bool>> = HashMap::new();
    for r in &per_sock[1] {
        for e in &r.entries {
            let h = e.health.expect("health every round");
            rounds.entry(e.server.as_str()).or_default().push(h.up);
            if e.server == "shop/up" {
                assert!(e.rtt_ms.is_some_and(|ms| ms > 0.0), "{e:?}");
            } else {
                assert_eq!(e.rtt_ms, None);
            }
        }
    }
    assert!(rounds["shop/up"].len() >= 4, "{rounds:?}");
    assert!(rounds["shop/up"].iter().all(|&up| up));
    let dead_rounds = &rounds["shop/dead"];
    assert!(dead_rounds.len() >= 4, "{rounds:?}");
    assert!(dead_rounds[0], "one failure is not down yet: {rounds:?}");
    assert!(dead_rounds[1..].iter().all(|&up| !up), "{rounds:?}");

    let up = &stats.targets[0];
    assert_eq!((up.id.as_str(), up.check), ("shop/up", "http"));
    let total = up.total.expect("a distribution");
    assert!(total.count >= 5 && total.p50_ms > 0.0, "{up:?}");
    assert!(up.first_byte.is_some() && up.connect.is_some());
    let dead = &stats.targets[1];
    assert!(
        !dead.up && dead.availability == 0.0 && dead.total.is_none(),
        "{dead:?}"
    );
    assert!(
        dead.last_error
            .as_deref()
            .is_some_and(|e| e.contains("refused"))
    );
    assert!(stats.reports_sent >= 10, "{stats:?}");
    assert_eq!(stats.report_errors, 0);
}
