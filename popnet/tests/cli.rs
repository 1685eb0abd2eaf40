//! The binaries as users run them: `popnet up` on a fresh box, bad configs, bad arguments, popctl config checks.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{http_get, parse_dig, popctl_bin, popnet_bin};

/// Kills the child if the test fails before it is waited for.
struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    fn get(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("child")
    }
    fn take(&mut self) -> std::process::Child {
        self.0.take().expect("child")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `popctl --json <args>`, which must succeed.
fn popctl_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(popctl_bin())
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "popctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn popnet_up_serves_the_demo_names_and_stops_cleanly() {
    // The demo's log server keeps its data and the senders' spools under
    // /tmp/popnet-demo: start from nothing, as on a fresh machine.
    match std::fs::remove_dir_all("/tmp/popnet-demo") {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("cannot remove /tmp/popnet-demo (the demo's log data): {e}"),
    }
    let mut child = KillOnDrop(Some(
        Command::new(popnet_bin())
            .args(["--log", "warn", "up"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let admin = "127.0.0.1:5380".parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while http_get(admin, "/health").is_err() {
        if let Ok(Some(st)) = child.get().try_wait() {
            let out = child.take().wait_with_output().unwrap();
            panic!(
                "popnet up exited ({st}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "popnet up did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let dig = |name: &str, t: &str| {
        let out = Command::new("dig")
            .args(["@127.0.0.1", "-p", "5353", "+time=2", "+tries=1", name, t])
            .output()
            .unwrap();
        parse_dig(&String::from_utf8_lossy(&out.stdout))
    };
    let www = dig("www.demo.example", "A");
    assert_eq!(www.status, "NOERROR", "{}", www.raw);
    assert_eq!(www.answer[0].data, "127.0.0.1");
    let st = dig("static.demo.example", "A");
    assert_eq!(st.answer[0].data, "127.0.0.1");
    assert_eq!(dig("static.demo.example", "AAAA").answer[0].data, "::1");
    let out = Command::new(popctl_bin())
        .args(["dns", "stats"])
        .output()
        .unwrap();
    assert!(out.status.success());
    // The three digs, and the log shippers' lookups of log.local.popnet.example once they
    // have records to send (the answers the digs got are counted exactly in logd below).
    let text = String::from_utf8_lossy(&out.stdout);
    let noerror: u64 = text
        .split("NOERROR ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no NOERROR count in {text}"));
    assert!(noerror >= 3, "{text}");

    // The cache answers on 127.0.0.1:8080 in front of the built-in demo origin: a miss, then a hit.
    let curl = |path: &str| {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %header{x-cache} %{size_download}",
                "-H",
                "Host: static.demo.example",
            ])
            .arg(format!("http://127.0.0.1:8080{path}"))
            .output()
            .expect("curl (apt-get install curl)");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(curl("/obj/1k"), "200 MISS 1024");
    assert_eq!(curl("/obj/1k"), "200 HIT 1024");
    let out = Command::new(popctl_bin())
        .args(["cache", "stats", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["requests"]["hits"], 1, "{v}");

    // `popnet up` runs the demo's log server: the cache's access log, the DNS server's
    // answers and the probe's checks reach it, and popctl stats shows them.
    let stats = || popctl_json(&["stats", "demo"]);
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let answers = |v: &serde_json::Value| {
        v["dns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| n(&r["answers"]))
            .sum::<u64>()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = stats();
        if n(&v["total"]["requests"]) >= 2 && answers(&v) >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the log server did not get the records: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The three answers with addresses the digs above got, and the two requests.
    std::thread::sleep(Duration::from_millis(1500));
    let v = stats();
    assert_eq!(n(&v["total"]["requests"]), 2, "{v}");
    assert_eq!(
        (n(&v["total"]["hits"]), n(&v["total"]["misses"])),
        (1, 1),
        "{v}"
    );
    assert_eq!(answers(&v), 3, "{v}");
    let probes = v["probes"].as_array().unwrap();
    for origin in ["demo/origin-a", "demo/origin-b"] {
        assert!(
            probes
                .iter()
                .any(|p| p["target"] == origin && n(&p["checks"]) >= 1),
            "{origin}: {v}"
        );
    }
    // The demo probe's admin listener: /metrics with the targets it checks.
    let metrics = http_get("127.0.0.1:5382".parse().unwrap(), "/metrics").unwrap();
    assert!(
        metrics.contains("popnet_probe_target_up{pop=\"local\",target=\"demo/origin-a\""),
        "{metrics}"
    );
    let out = Command::new(popctl_bin())
        .args(["stats", "demo"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("requests 2") && text.contains("hits 1  misses 1"),
        "{text}"
    );

    // SIGTERM stops it with status 0.
    send_signal(child.get().id(), 15);
    let out = child.take().wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("dig @127.0.0.1 -p 5353 www.demo.example")
    );
}

fn send_signal(pid: u32, sig: i32) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn a_broken_config_is_refused_with_every_problem_and_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    let text = popnet_config::DEMO_TOML
        .replace("name = \"origin-b\"", "name = \"origin-a\"")
        .replace(
            "prefixes = [\"127.0.0.0/8\", \"::1/128\"]",
            "prefixes = [\"127.0.0.1/8\"]",
        );
    std::fs::write(&f, text).unwrap();
    let out = Command::new(popnet_bin())
        .args(["dns", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("customers[0].origins[1].name: origin \"origin-a\" is defined twice"),
        "{err}"
    );
    assert!(
        err.contains("views[0].prefixes[0]: 127.0.0.1/8 has host bits set; write 127.0.0.0/8"),
        "{err}"
    );

    // popctl config check says the same, and exits 1.
    let out = Command::new(popctl_bin())
        .args(["config", "check"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has host bits set"));

    // A TOML syntax error names the line.
    std::fs::write(&f, "[network]\nname = \"x\"\nversion = one\n").unwrap();
    let out = Command::new(popnet_bin())
        .args(["dns", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:3:"), "{err}");

    // A missing file.
    let out = Command::new(popnet_bin())
        .args(["dns", "--config", "/nonexistent/popnet.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot read config /nonexistent/popnet.toml")
    );
}

#[test]
fn wrong_arguments_are_usage_errors() {
    let out = Command::new(popnet_bin())
        .args(["dns", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("invalid value 'not-an-address' for '--listen <ADDR>'")
    );
    let out = Command::new(popnet_bin())
        .args(["dns", "--pop", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no POP is named \"nowhere\"; the config has local")
    );
    let out = Command::new(popctl_bin())
        .args(["dns", "frobnicate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
