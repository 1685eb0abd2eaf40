//! The XDP fast path on a real veth between two namespaces: dig is answered in the driver, misses by userspace, selector changes reach the map within 100 ms, and nothing is left behind.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dns_wire::{Message, Name, Question, RClass, RType};
use hwtests::frames::{self, Datagram};
use hwtests::netns::{Guard, Lab, bin, in_netns, raw_exchange};
use hwtests::{XDP_CONFIG, privileged};
use probe::report::{Entry, Health, Report};
use serde_json::Value;

const ADMIN: &str = "127.0.0.1:5380";

/// The test network, served on the lab's addresses (and a VLAN address), reports on
/// the server's veth address.
fn config() -> String {
    XDP_CONFIG
        .replace(
            "listen = [\"192.0.2.1:53\", \"[2001:db8::1]:53\"]",
            "listen = [\"192.0.2.1:53\", \"[2001:db8::1]:53\", \"203.0.113.1:53\"]",
        )
        .replace(
            "reports = \"127.0.0.1:5354\"",
            "reports = \"192.0.2.1:5354\"",
        )
}

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(lab: &Lab, cfg_path: &std::path::Path) -> Server {
    let child = lab
        .cmd(&lab.server, bin("popnet").to_str().unwrap())
        .args(["--log", "info", "dns", "--config"])
        .arg(cfg_path)
        .args(["--xdp", &lab.server_if, "--workers", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn popnet in the server namespace");
    let mut s = Server { child };
    let deadline = Instant::now() + Duration::from_secs(20);
    while stats(lab).is_none() {
        if let Ok(Some(_)) = s.child.try_wait() {
            let out = std::mem::replace(&mut s.child, Command::new("true").spawn().unwrap())
                .wait_with_output()
                .unwrap();
            panic!(
                "popnet dns exited: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "popnet dns did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    s
}

/// The pass program on the client's end of the veth, attached: replies sent with
/// XDP_TX reach the client only once its end runs XDP too.
fn peer_pass(lab: &Lab) -> Guard {
    let g = Guard(
        lab.cmd(&lab.client, bin("popnet").to_str().unwrap())
            .args(["xdp-pass", &lab.client_if])
            .stderr(Stdio::null())
            .spawn()
            .expect("peer pass program"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab.has_xdp(&lab.client, &lab.client_if) {
        assert!(
            Instant::now() < deadline,
            "the peer pass program did not attach"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    g
}

/// `popctl dns stats --json` run inside the server namespace.
fn stats(lab: &Lab) -> Option<Value> {
    let out = lab
        .cmd(&lab.server, bin("popctl").to_str().unwrap())
        .args(["--admin", ADMIN, "dns", "stats", "--json"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn xdp_answered(v: &Value) -> u64 {
    v["xdp"]["counters"]["answered"]
        .as_u64()
        .expect("xdp counters in stats")
}

fn userspace_received(v: &Value) -> u64 {
    v["queries"]["received"].as_u64().unwrap()
}

/// dig run inside the client namespace; returns its short answer lines.
fn dig(lab: &Lab, server: &str, src: &str, name: &str, qtype: &str) -> Vec<String> {
    let out = lab
        .cmd(&lab.client, "dig")
        .args([
            &format!("@{server}"),
            "-b",
            src,
            "+short",
            "+tries=1",
            "+time=2",
            name,
            qtype,
        ])
        .output()
        .expect("run dig");
    assert!(
        out.status.success(),
        "dig @{server} -b {src} {name} {qtype} failed: {}{}\nserver stats: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        stats(lab).map(|v| v.to_string()).unwrap_or_default()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::default();
    m.header.id = id;
    m.questions.push(Question {
        name: Name::from_ascii(name).unwrap(),
        qtype: RType::A,
        qclass: RClass::IN,
    });
    m.encode()
}

#[test]
fn dig_is_answered_in_the_driver_and_misses_by_userspace() {
    if !privileged("dig_is_answered_in_the_driver_and_misses_by_userspace") {
        return;
    }
    let lab = Lab::new();
    let names = (lab.server.clone(), lab.client.clone());
    {
        let dir = tempdir();
        let cfg = dir.join("popnet.toml");
        std::fs::write(&cfg, config()).unwrap();
        let _peer = peer_pass(&lab);
        let server = start_server(&lab, &cfg);
        assert!(
            lab.has_xdp(&lab.server, &lab.server_if),
            "no XDP program on the server end"
        );

        // Each of these is answered by the program: its counter moves, userspace's does not.
        let cases = [
            (
                "192.0.2.1",
                "198.51.100.7",
                "www.shop.example",
                "A",
                "203.0.113.10",
            ),
            (
                "192.0.2.1",
                "198.51.100.200",
                "www.shop.example",
                "A",
                "203.0.113.20",
            ),
            (
                "192.0.2.1",
                "198.51.100.7",
                "www.shop.example",
                "AAAA",
                "2001:db8:1::10",
            ),
            (
                "2001:db8::1",
                "2001:db8:100::7",
                "www.shop.example",
                "A",
                "203.0.113.10",
            ),
            // The west view is far from the one (east) POP: the west origin beats it.
            (
                "2001:db8::1",
                "2001:db8:200::7",
                "img.shop.example",
                "AAAA",
                "2001:db8:2::20",
            ),
            (
                "2001:db8::1",
                "2001:db8:100::7",
                "img.shop.example",
                "AAAA",
                "2001:db8::10",
            ),
        ];
        for (server_addr, src, name, qtype, want) in cases {
            let before = stats(&lab).unwrap();
            let got = dig(&lab, server_addr, src, name, qtype);
            assert_eq!(got, [want], "{name} {qtype} via {server_addr} from {src}");
            let after = stats(&lab).unwrap();
            assert_eq!(
                xdp_answered(&after),
                xdp_answered(&before) + 1,
                "{name} {qtype} via {server_addr}: not answered by XDP: {}",
                after["xdp"]
            );
            assert_eq!(
                userspace_received(&after),
                userspace_received(&before),
                "{name} {qtype} via {server_addr} reached userspace"
            );
        }

        // With an 802.1Q tag. This kernel has no VLAN devices, so the client sends the
        // tagged query as a raw frame and reads the tagged reply the same way.
        let before = stats(&lab).unwrap();
        let mut d = Datagram::query(
            "203.0.113.7".parse().unwrap(),
            "203.0.113.1".parse().unwrap(),
            40100,
            query(0x7777, "www.shop.example"),
        );
        d.vlan = Some(100);
        d.src_mac = lab.mac(&lab.client, &lab.client_if);
        d.dst_mac = lab.mac(&lab.server, &lab.server_if);
        let frame = frames::build(&d);
        let ifc = lab.client_if.clone();
        let reply = in_netns(&lab.client, move || {
            raw_exchange(&ifc, &frame, Duration::from_secs(2), |r| {
                r.vlan == Some(100) && frames::parse(&r.wire()).is_ok_and(|d| d.sport == 53)
            })
        })
        .expect("no tagged reply");
        let r = frames::parse(&reply.wire()).unwrap();
        let m = Message::decode(&r.payload).unwrap();
        assert_eq!(m.header.id, 0x7777);
        assert_eq!(
            m.answers[0].rdata.to_string(),
            "203.0.113.20",
            "203.0.113.0/24 is in the west view"
        );
        let after = stats(&lab).unwrap();
        assert_eq!(xdp_answered(&after), xdp_answered(&before) + 1);

        // A miss goes to userspace, which answers it.
        let before = stats(&lab).unwrap();
        let out = lab
            .cmd(&lab.client, "dig")
            .args([
                "@192.0.2.1",
                "+tries=1",
                "+time=2",
                "nothing.shop.example",
                "A",
            ])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("status: NXDOMAIN"));
        let after = stats(&lab).unwrap();
        assert_eq!(xdp_answered(&after), xdp_answered(&before));
        assert_eq!(userspace_received(&after), userspace_received(&before) + 1);
        assert!(after["xdp"]["counters"]["passed"]["miss"].as_u64().unwrap() >= 1);

        // popctl dns map shows the entries the program answers from.
        let out = lab
            .cmd(&lab.server, bin("popctl").to_str().unwrap())
            .args([
                "--admin",
                ADMIN,
                "dns",
                "map",
                "get",
                "www.shop.example",
                "A",
                "east",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("203.0.113.10"),
            "popctl dns map get: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // A selector change reaches the program within 100 ms: report the east origin down
        // and watch the answer for the east view move to west, answered by XDP.
        let report = Report {
            sender: "hwtest".into(),
            seq: 1,
            sent_at_ms: now_ms(),
            entries: vec![Entry {
                server: "shop/east".into(),
                measured_at_ms: now_ms(),
                health: Some(Health {
                    up: false,
                    availability: 0.0,
                }),
                ..Entry::default()
            }],
        }
        .encode(
            popnet_config::Config::from_toml(&config(), "test")
                .unwrap()
                .probes
                .report_key
                .as_bytes(),
        )
        .unwrap();
        let before = stats(&lab).unwrap();
        let took = in_netns(&lab.client, move || {
            let sock = UdpSocket::bind("198.51.100.7:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let server: SocketAddr = "192.0.2.1:53".parse().unwrap();
            let t0 = Instant::now();
            sock.send_to(&report, "192.0.2.1:5354").unwrap();
            let mut id = 0u16;
            let mut buf = [0u8; 512];
            while t0.elapsed() < Duration::from_secs(2) {
                id += 1;
                sock.send_to(&query(id, "www.shop.example"), server)
                    .unwrap();
                let Ok(n) = sock.recv(&mut buf) else { continue };
                let m = Message::decode(&buf[..n]).unwrap();
                if m.header.id == id
                    && m.answers
                        .first()
                        .is_some_and(|r| r.rdata.to_string() == "203.0.113.20")
                {
                    return Some(t0.elapsed());
                }
            }
            None
        });
        let took = took.expect("the answer never moved to the west origin");
        let after = stats(&lab).unwrap();
        assert!(
            took <= Duration::from_millis(100),
            "the change took {took:?} to reach answers"
        );
        assert_eq!(
            userspace_received(&after),
            userspace_received(&before),
            "queries during the change reached userspace"
        );

        // Stopping the server detaches the program.
        Command::new("kill")
            .arg(server.child.id().to_string())
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while lab.has_xdp(&lab.server, &lab.server_if) {
            assert!(
                Instant::now() < deadline,
                "the XDP program is still attached after popnet exited"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(server);
        let _ = std::fs::remove_dir_all(dir);
    }
    drop(lab);
    assert!(
        !Lab::exists(&names.0) && !Lab::exists(&names.1),
        "namespaces left behind"
    );
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("popnet-hw-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn an_interface_with_another_program_is_an_error_naming_the_fix() {
    if !privileged("an_interface_with_another_program_is_an_error_naming_the_fix") {
        return;
    }
    let lab = Lab::new();
    let dir = tempdir();
    let cfg = dir.join("popnet.toml");
    std::fs::write(&cfg, config()).unwrap();
    // Someone else's program on the server end.
    let _other = Guard(
        lab.cmd(&lab.server, bin("popnet").to_str().unwrap())
            .args(["xdp-pass", &lab.server_if])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab.has_xdp(&lab.server, &lab.server_if) {
        assert!(
            Instant::now() < deadline,
            "the other program did not attach"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = lab
        .cmd(&lab.server, bin("popnet").to_str().unwrap())
        .args(["dns", "--config"])
        .arg(&cfg)
        .args(["--xdp", &lab.server_if])
        .output()
        .unwrap();
    assert!(!out.status.success(), "popnet started on a busy interface");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already has an XDP program")
            && err.contains(&format!("ip link set dev {} xdp off", lab.server_if)),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn without_the_privilege_it_answers_from_userspace_and_says_so_once() {
    if !privileged("without_the_privilege_it_answers_from_userspace_and_says_so_once") {
        return;
    }
    let lab = Lab::new();
    let dir = tempdir();
    let cfg = dir.join("popnet.toml");
    // An unprivileged port, admin elsewhere: the server runs as nobody.
    std::fs::write(
        &cfg,
        config()
            .replace("192.0.2.1:53\"", "192.0.2.1:5300\"")
            .replace(
                "\"[2001:db8::1]:53\", \"203.0.113.1:53\"",
                "\"[2001:db8::1]:5300\"",
            ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&dir).unwrap().permissions();
    use std::os::unix::fs::PermissionsExt;
    perms.set_mode(0o755);
    std::fs::set_permissions(&dir, perms).unwrap();
    let server = Guard(
        lab.cmd(&lab.server, "setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--",
            ])
            .arg(bin("popnet"))
            .args(["dns", "--config"])
            .arg(&cfg)
            .args(["--xdp", &lab.server_if, "--reports", "192.0.2.1:5301"])
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut answer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while answer.is_empty() && Instant::now() < deadline {
        let out = lab
            .cmd(&lab.client, "dig")
            .args([
                "@192.0.2.1",
                "-p",
                "5300",
                "-b",
                "198.51.100.7",
                "+short",
                "+tries=1",
                "+time=1",
                "www.shop.example",
                "A",
            ])
            .output()
            .unwrap();
        answer = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with(';'))
            .map(str::to_string)
            .collect();
    }
    assert_eq!(
        answer,
        ["203.0.113.10"],
        "no answer from the unprivileged server"
    );
    // Queries are answered while the XDP program loads; the admin listener starts last.
    let deadline = Instant::now() + Duration::from_secs(15);
    let st = loop {
        if let Some(v) = stats(&lab) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the admin listener did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(st["xdp"]["state"], "unavailable", "{}", st["xdp"]);
    assert!(
        st["xdp"]["reason"]
            .as_str()
            .unwrap()
            .contains("no privilege"),
        "{}",
        st["xdp"]
    );
    assert!(!lab.has_xdp(&lab.server, &lab.server_if));
    drop(server);
    let err = std::fs::read_to_string(dir.join("stderr")).unwrap();
    assert_eq!(
        err.matches("XDP fast path unavailable").count(),
        1,
        "stderr: {err:?}"
    );
    assert!(err.contains("answering from userspace only"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_reload_republishes_the_xdp_map() {
    if !privileged("a_reload_republishes_the_xdp_map") {
        return;
    }
    let lab = Lab::new();
    let dir = tempdir();
    let cfg = dir.join("popnet.toml");
    std::fs::write(&cfg, config()).unwrap();
    let _peer = peer_pass(&lab);
    let server = start_server(&lab, &cfg);
    assert!(lab.has_xdp(&lab.server, &lab.server_if));
    let ask = |name: &str| dig(&lab, "192.0.2.1", "198.51.100.7", name, "A");
    assert_eq!(ask("mail.shop.example"), ["203.0.113.25"]);
    assert!(
        ask("new.shop.example").is_empty(),
        "not in the first config"
    );

    // The new config changes one answer and adds a name; SIGHUP reloads it.
    let next = config().replace("value = \"203.0.113.25\"", "value = \"203.0.113.26\"")
        + "\n[[customers.records]]\nname = \"new.shop.example\"\ntype = \"A\"\nvalue = \"203.0.113.27\"\n";
    std::fs::write(&cfg, next).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while ask("new.shop.example") != ["203.0.113.27"] {
        assert!(
            Instant::now() < deadline,
            "the reload did not publish new.shop.example"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Both come from the driver now, with the new values: the map was rewritten.
    for (name, want) in [
        ("new.shop.example", "203.0.113.27"),
        ("mail.shop.example", "203.0.113.26"),
    ] {
        let before = stats(&lab).unwrap();
        assert_eq!(ask(name), [want], "{name}");
        let after = stats(&lab).unwrap();
        assert_eq!(
            xdp_answered(&after),
            xdp_answered(&before) + 1,
            "{name}: not answered by XDP: {}",
            after["xdp"]
        );
        assert_eq!(
            userspace_received(&after),
            userspace_received(&before),
            "{name}"
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the log server (run in the server namespace) has of shop's DNS answers in the
/// last hour: (domain, server) → answers.
fn logged_answers(lab: &Lab) -> Option<Vec<(String, String, u64)>> {
    let out = lab
        .cmd(&lab.server, "curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "http://127.0.0.1:5391/api/stats?customer=shop&since=1h",
        ])
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let mut rows: Vec<(String, String, u64)> = v["dns"]
        .as_array()?
        .iter()
        .map(|r| {
            (
                r["domain"].as_str().unwrap_or_default().to_string(),
                r["server"].as_str().unwrap_or_default().to_string(),
                r["answers"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    rows.sort();
    Some(rows)
}

#[test]
fn answers_sent_in_the_driver_reach_the_log_server() {
    if !privileged("answers_sent_in_the_driver_reach_the_log_server") {
        return;
    }
    let lab = Lab::new();
    let dir = tempdir();
    let cfg = dir.join("popnet.toml");
    // The POP's log server runs in the server namespace, on its loopback.
    let text = config().replace("[pops.dns]\n", "log_server = \"main\"\n[pops.dns]\n")
        + &format!(
            "\n[logs]\nkey = \"6f1e0c2b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f\"\nspool_dir = \"{}\"\nbatch_interval = \"100ms\"\n\n[[log_servers]]\nname = \"main\"\naddress = \"127.0.0.1:5390\"\nadmin = \"127.0.0.1:5391\"\ncustomers = [\"shop\"]\ndata_dir = \"{}\"\n",
            dir.join("spool").display(),
            dir.join("logd").display()
        );
    std::fs::write(&cfg, text).unwrap();
    let _logd = Guard(
        lab.cmd(&lab.server, bin("popnet").to_str().unwrap())
            .args(["logd", "--config"])
            .arg(&cfg)
            .stderr(Stdio::null())
            .spawn()
            .expect("popnet logd in the server namespace"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while logged_answers(&lab).is_none() {
        assert!(Instant::now() < deadline, "logd did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _peer = peer_pass(&lab);
    let _server = start_server(&lab, &cfg);
    let before = stats(&lab).unwrap();
    // Twelve answers from the east view, eight from the west, all sent by the program.
    for _ in 0..12 {
        assert_eq!(
            dig(&lab, "192.0.2.1", "198.51.100.7", "www.shop.example", "A"),
            ["203.0.113.10"]
        );
    }
    for _ in 0..8 {
        assert_eq!(
            dig(&lab, "192.0.2.1", "198.51.100.200", "www.shop.example", "A"),
            ["203.0.113.20"]
        );
    }
    // All twenty went out of the driver (userspace meanwhile answers the server's own
    // lookups of its log server's name, so its counter is not compared).
    let after = stats(&lab).unwrap();
    assert_eq!(xdp_answered(&after) - xdp_answered(&before), 20);
    let want = vec![
        ("www.shop.example".to_string(), "shop/east".to_string(), 12),
        ("www.shop.example".to_string(), "shop/west".to_string(), 8),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = logged_answers(&lab).unwrap_or_default();
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the log server has {got:?}, not {want:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_dir_all(dir);
}
