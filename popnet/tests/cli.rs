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

#[test]
fn popnet_up_serves_the_demo_names_and_stops_cleanly() {
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
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("NOERROR 3"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

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
