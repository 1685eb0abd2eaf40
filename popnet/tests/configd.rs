//! Config distribution as operators run it: real `popnet configd` processes in a tree on loopback, `popctl config push|status`, live reload of `popnet dns` under continuous queries, recovery after a box was down.

mod common;

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_engine::demo_origin::DemoOrigin;
use common::{free_port, popctl_bin, popnet_bin, sample, scrape};
use serde_json::Value;

/// Generous: the tests share two cores with other builds.
const PATIENCE: Duration = Duration::from_secs(30);

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn popctl(args: &[&str]) -> Output {
    Command::new(popctl_bin())
        .args(args)
        .output()
        .expect("run popctl")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// One box of the tree: name, its configd port, the boxes it controls.
struct BoxSpec {
    name: String,
    port: u16,
    controls: Vec<String>,
}

/// A network of config daemons on loopback, with its admin key and config files.
struct Lab {
    dir: tempfile::TempDir,
    boxes: Vec<BoxSpec>,
    admin_entry: String,
    key: PathBuf,
    daemons: Vec<Option<Child>>,
    /// Extra TOML appended to every config (before `[configd]`).
    extra: String,
    /// Replacements made in the demo config's text (ports, origins).
    replace: Vec<(String, String)>,
    /// The POP of each box (default: the first box runs POP local).
    box_pops: Vec<(String, String)>,
}

impl Lab {
    /// `tree`: (box, the boxes it controls); the first one is the master.
    fn new(tree: &[(&str, &[&str])]) -> Lab {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("alice.pem");
        let admin_entry = common::keygen(&key, "alice");
        let boxes = tree
            .iter()
            .map(|(name, controls)| BoxSpec {
                name: name.to_string(),
                port: free_port(),
                controls: controls.iter().map(|c| c.to_string()).collect(),
            })
            .collect::<Vec<_>>();
        let n = boxes.len();
        Lab {
            dir,
            boxes,
            admin_entry,
            key,
            daemons: (0..n).map(|_| None).collect(),
            extra: String::new(),
            replace: Vec::new(),
            box_pops: Vec::new(),
        }
    }

    /// Ten boxes in three levels: m controls a1..a3, each of those two leaves.
    fn ten() -> Lab {
        Lab::new(&[
            ("m", &["a1", "a2", "a3"]),
            ("a1", &["b1", "b2"]),
            ("a2", &["b3", "b4"]),
            ("a3", &["b5", "b6"]),
            ("b1", &[]),
            ("b2", &[]),
            ("b3", &[]),
            ("b4", &[]),
            ("b5", &[]),
            ("b6", &[]),
        ])
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The config text of `version`, with `admins` as its admin entries.
    fn config_with(&self, version: u32, admins: &str, extra: &str) -> String {
        let mut t = popnet_config::DEMO_TOML
            .replacen("version = 1\n", &format!("version = {version}\n"), 1)
            .replacen("[probes]\n", &format!("{admins}\n[probes]\n"), 1);
        for (from, to) in &self.replace {
            assert!(t.contains(from.as_str()), "the demo config has no {from:?}");
            t = t.replace(from.as_str(), to);
        }
        t.push_str(&self.extra);
        t.push_str(extra);
        t.push_str(
            "\n[configd]\nmasters = [\"m\"]\ntimeout = \"8s\"\nrecovery_interval = \"300ms\"\n",
        );
        for (i, b) in self.boxes.iter().enumerate() {
            t.push_str(&format!(
                "\n[[configd.boxes]]\nname = \"{}\"\naddress = \"127.0.0.1:{}\"\n",
                b.name, b.port
            ));
            match self.box_pops.iter().find(|(n, _)| *n == b.name) {
                Some((_, pop)) => t.push_str(&format!("pop = \"{pop}\"\n")),
                None if self.box_pops.is_empty() && i == 0 => t.push_str("pop = \"local\"\n"),
                None => {}
            }
            let controls: Vec<String> = b.controls.iter().map(|c| format!("{c:?}")).collect();
            t.push_str(&format!("controls = [{}]\n", controls.join(", ")));
        }
        t
    }

    /// Writes and signs (with popctl, as alice) the config of `version`; returns the
    /// signed file.
    fn signed(&self, version: u32, extra: &str) -> PathBuf {
        let plain = self.path(&format!("v{version}.toml"));
        std::fs::write(&plain, self.config_with(version, &self.admin_entry, extra)).unwrap();
        let signed = self.path(&format!("v{version}.signed.toml"));
        common::sign(&self.key, &plain, &signed);
        signed
    }

    fn index(&self, name: &str) -> usize {
        self.boxes
            .iter()
            .position(|b| b.name == name)
            .unwrap_or_else(|| panic!("no box {name}"))
    }

    fn addr(&self, name: &str) -> SocketAddr {
        ([127, 0, 0, 1], self.boxes[self.index(name)].port).into()
    }

    /// Starts `popnet configd` for box `name` (from `bootstrap` when its store is empty)
    /// and waits until it listens.
    fn start(&mut self, name: &str, bootstrap: &Path) {
        self.start_with(name, bootstrap, &[]);
    }

    /// [`Lab::start`] with more arguments for `popnet configd`.
    fn start_with(&mut self, name: &str, bootstrap: &Path, extra: &[&str]) {
        let i = self.index(name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(&format!("{name}.log")))
            .unwrap();
        let child = Command::new(popnet_bin())
            .args(["--log", "info", "configd", "--name", name, "--state"])
            .arg(self.path(&format!("state-{name}")))
            .arg("--bootstrap")
            .arg(bootstrap)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn popnet configd");
        self.daemons[i] = Some(child);
        let addr = self.addr(name);
        wait_for(&format!("configd {name} to listen on {addr}"), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
    }

    fn start_all(&mut self, bootstrap: &Path) {
        let names: Vec<String> = self.boxes.iter().map(|b| b.name.clone()).collect();
        for n in names {
            self.start(&n, bootstrap);
        }
    }

    fn pid(&self, name: &str) -> u32 {
        self.daemons[self.index(name)]
            .as_ref()
            .expect("box is running")
            .id()
    }

    fn signal(&self, name: &str, sig: &str) {
        let st = Command::new("kill")
            .args([sig, &self.pid(name).to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill {sig} {name}");
    }

    fn kill(&mut self, name: &str) {
        let i = self.index(name);
        if let Some(mut c) = self.daemons[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
    }

    /// `popctl config push FILE --json`: exit code and report.
    fn push(&self, file: &Path, key: &Path) -> (i32, Value, String) {
        let out = popctl(&[
            "--json",
            "config",
            "push",
            "--key",
            key.to_str().unwrap(),
            file.to_str().unwrap(),
        ]);
        let code = out.status.code().unwrap_or(-1);
        let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (code, v, text(&out))
    }

    /// Every box's (name, running version, pending version) from `popctl config status`.
    fn status(&self, network: &Path) -> Vec<(String, Option<u64>, Option<u64>)> {
        let out = popctl(&[
            "--json",
            "--config",
            network.to_str().unwrap(),
            "config",
            "status",
            "--timeout",
            "3s",
        ]);
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status is not JSON ({e}): {}", text(&out)));
        v.as_array()
            .expect("an array of boxes")
            .iter()
            .map(|b| {
                (
                    b["name"].as_str().unwrap().to_string(),
                    b["status"]["running"]["version"].as_u64(),
                    b["status"]["pending"]["version"].as_u64(),
                )
            })
            .collect()
    }

    /// What `name`'s durable store runs (read from disk, not asked).
    fn stored_version(&self, name: &str) -> Option<u32> {
        let t = std::fs::read_to_string(self.path(&format!("state-{name}/running.toml"))).ok()?;
        popnet_config::Config::from_toml(&t, "stored")
            .ok()
            .map(|c| c.network.version)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in self.daemons.iter_mut().flatten() {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_push_switches_all_ten_boxes_of_a_three_level_tree() {
    let mut lab = Lab::ten();
    let v1 = lab.signed(1, "");
    let v2 = lab.signed(2, "");
    lab.start_all(&v1);
    assert!(
        lab.status(&v1)
            .iter()
            .all(|(_, r, p)| *r == Some(1) && p.is_none())
    );

    let (code, report, out) = lab.push(&v2, &lab.key);
    assert_eq!(code, 0, "push failed: {out}");
    assert_eq!(report["committed"], true, "{out}");
    assert_eq!(report["prepare"].as_array().unwrap().len(), 10, "{out}");
    for b in report["decision"].as_array().unwrap() {
        assert_eq!(b["outcome"], "ok", "{out}");
    }
    let st = lab.status(&v2);
    assert_eq!(st.len(), 10);
    for (name, running, pending) in &st {
        assert_eq!(*running, Some(2), "box {name}: {st:?}");
        assert_eq!(*pending, None, "box {name}: {st:?}");
        assert_eq!(lab.stored_version(name), Some(2), "store of {name}");
    }
    // The text report names every box.
    let out = popctl(&["--config", v2.to_str().unwrap(), "config", "status"]);
    assert!(out.status.success(), "{}", text(&out));
    for b in &lab.boxes {
        assert!(text(&out).contains(&b.name), "{}", text(&out));
    }
}

#[test]
fn killing_a_child_mid_prepare_aborts_the_push_and_nobody_switches() {
    let mut lab = Lab::ten();
    let v1 = lab.signed(1, "");
    let v2 = lab.signed(2, "");
    lab.start_all(&v1);
    // b3 stops answering (its kernel still accepts the connection), then dies while the
    // PREPARE waits on it.
    lab.signal("b3", "-STOP");
    let key = lab.key.clone();
    let v2c = v2.clone();
    let pusher = std::thread::spawn(move || {
        popctl(&[
            "--json",
            "config",
            "push",
            "--key",
            key.to_str().unwrap(),
            v2c.to_str().unwrap(),
        ])
    });
    std::thread::sleep(Duration::from_millis(800));
    lab.kill("b3");
    let out = pusher.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the push must abort: {}",
        text(&out)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["committed"], false);
    let problems = report["problems"].to_string();
    assert!(problems.contains("b3"), "the report names b3: {problems}");
    // a2, b3's parent, reports that its subtree failed because of b3.
    // Nobody switched, nobody keeps the pending config.
    let st = lab.status(&v1);
    for (name, running, pending) in &st {
        if name == "b3" {
            assert_eq!(*running, None, "b3 is dead: {st:?}");
            continue;
        }
        assert_eq!(*running, Some(1), "box {name} switched: {st:?}");
        assert_eq!(
            *pending, None,
            "box {name} still holds the aborted config: {st:?}"
        );
        assert_eq!(lab.stored_version(name), Some(1));
    }
    // The text report names the box too.
    let out = popctl(&[
        "config",
        "push",
        "--key",
        lab.key.to_str().unwrap(),
        v2.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("b3"), "{}", text(&out));
}

#[test]
fn bad_signature_unknown_key_and_lower_version_are_refused_with_clear_errors() {
    let mut lab = Lab::new(&[("m", &["c"]), ("c", &[])]);
    let v1 = lab.signed(1, "");
    let v3 = lab.signed(3, "");
    lab.start_all(&v1);
    let (code, _, out) = lab.push(&v3, &lab.key);
    assert_eq!(code, 0, "{out}");

    // A signed file changed afterwards.
    let v4 = lab.signed(4, "");
    let tampered = lab.path("tampered.toml");
    let t = std::fs::read_to_string(&v4)
        .unwrap()
        .replacen("ttl = 20", "ttl = 21", 1);
    std::fs::write(&tampered, t).unwrap();
    let (code, report, out) = lab.push(&tampered, &lab.key);
    assert_eq!(code, 1, "{out}");
    let problems = report["problems"].to_string();
    assert!(
        problems.contains("box m") && problems.contains("signature"),
        "{out}"
    );

    // Signed by a key the running config does not list (the new file lists it).
    let mallory = lab.path("mallory.pem");
    let entry = common::keygen(&mallory, "mallory");
    let foreign = lab.path("foreign.toml");
    std::fs::write(
        &foreign,
        lab.config_with(5, &format!("{}{entry}", lab.admin_entry), ""),
    )
    .unwrap();
    let o = popctl(&[
        "config",
        "sign",
        "--key",
        mallory.to_str().unwrap(),
        foreign.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let (code, report, out) = lab.push(&foreign, &mallory);
    assert_eq!(code, 1, "{out}");
    let problems = report["problems"].to_string();
    assert!(
        problems.contains("box m") && problems.contains("alice"),
        "names who may sign: {out}"
    );

    // A key that is in no config at all is refused by popctl before any box is asked.
    let plain = lab.path("v6.toml");
    std::fs::write(&plain, lab.config_with(6, &lab.admin_entry, "")).unwrap();
    let o = popctl(&[
        "config",
        "sign",
        "--key",
        mallory.to_str().unwrap(),
        plain.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let (code, _, out) = lab.push(&plain, &mallory);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("alice"), "{out}");

    // Older than what runs.
    let v2 = lab.signed(2, "");
    let (code, report, out) = lab.push(&v2, &lab.key);
    assert_eq!(code, 1, "{out}");
    let problems = report["problems"].to_string();
    assert!(
        problems.contains("version 2") && problems.contains("3"),
        "{out}"
    );

    // An unsigned file is refused by popctl itself, saying how to sign it.
    let unsigned = lab.path("v7.toml");
    std::fs::write(&unsigned, lab.config_with(7, &lab.admin_entry, "")).unwrap();
    let (code, _, out) = lab.push(&unsigned, &lab.key);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("popctl config sign"), "{out}");

    // Nothing of it switched anyone.
    for (name, running, pending) in lab.status(&v3) {
        assert_eq!(running, Some(3), "box {name}");
        assert_eq!(pending, None, "box {name}");
    }
}

#[test]
fn a_box_down_during_commit_catches_up_from_its_parent() {
    let mut lab = Lab::ten();
    let v1 = lab.signed(1, "");
    let v2 = lab.signed(2, "");
    lab.start_all(&v1);
    let text2 = std::fs::read_to_string(&v2).unwrap();
    let key = configd::AdminKey::load(&lab.key).unwrap();
    // Phase one through the library popctl uses; then b5 dies and a2's link to b4 is
    // "cut" (b4 frozen), and COMMIT runs.
    let push = configd::push::Push::new(
        text2,
        &key,
        &configd::push::PushOptions {
            timeout: Some(Duration::from_secs(6)),
        },
    )
    .unwrap();
    let prepared = push.prepare().unwrap();
    assert!(prepared.all_ok(), "{:?}", prepared.boxes);
    lab.kill("b5");
    lab.signal("b4", "-STOP");
    let decision = push.commit().unwrap();
    let bad: Vec<&str> = decision
        .iter()
        .filter(|b| b.outcome != configd::wire::Outcome::Ok)
        .map(|b| b.name.as_str())
        .collect();
    assert!(bad.contains(&"b5") && bad.contains(&"b4"), "{decision:?}");
    assert_eq!(bad.len(), 2, "{decision:?}");

    // b4's link comes back: it catches up (the commit it missed, from its parent).
    lab.signal("b4", "-CONT");
    wait_for("b4 to run version 2", || {
        lab.stored_version("b4") == Some(2)
    });
    // b5 comes back, holding version 2 only as pending; it asks its parent.
    assert_eq!(lab.stored_version("b5"), Some(1));
    lab.start("b5", &v1);
    wait_for("b5 to run version 2", || {
        lab.stored_version("b5") == Some(2)
    });
    wait_for("every box on version 2 with nothing pending", || {
        lab.status(&v2)
            .iter()
            .all(|(_, r, p)| *r == Some(2) && p.is_none())
    });
    assert!(lab.log("b5").contains("switched"), "{}", lab.log("b5"));
}

/// Sends queries one after another (each waits for its answer, up to 2 s) until told to
/// stop; counts the sent and the unanswered.
struct Querier {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    handle: std::thread::JoinHandle<()>,
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = vec![(id >> 8) as u8, id as u8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

impl Querier {
    fn start(server: SocketAddr, name: &'static str) -> Querier {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let lost = Arc::new(AtomicU64::new(0));
        let (s, n, l) = (stop.clone(), sent.clone(), lost.clone());
        let handle = std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut id: u16 = 0;
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                id = id.wrapping_add(1);
                sock.send_to(&query(id, name), server).unwrap();
                n.fetch_add(1, Ordering::Relaxed);
                let answered = loop {
                    match sock.recv_from(&mut buf) {
                        // NOERROR with at least one answer, for this id.
                        Ok((len, _)) if len >= 12 && buf[..2] == id.to_be_bytes() => {
                            break buf[3] & 0x0f == 0 && u16::from_be_bytes([buf[6], buf[7]]) > 0;
                        }
                        Ok(_) => continue,
                        Err(_) => break false,
                    }
                };
                if !answered {
                    l.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Querier {
            stop,
            sent,
            lost,
            handle,
        }
    }

    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap();
        (
            self.sent.load(Ordering::Relaxed),
            self.lost.load(Ordering::Relaxed),
        )
    }
}

/// Asks `server` once for `name` A; true if answered NOERROR with an answer.
fn answers(server: SocketAddr, name: &str) -> bool {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    sock.send_to(&query(7, name), server).unwrap();
    let mut buf = [0u8; 1500];
    match sock.recv_from(&mut buf) {
        Ok((len, _)) if len >= 12 => buf[3] & 0x0f == 0 && u16::from_be_bytes([buf[6], buf[7]]) > 0,
        _ => false,
    }
}

const NEW_DOMAIN: &str =
    "\n[[customers.domains]]\nname = \"new.demo.example\"\nkind = \"dynamic\"\n";

#[test]
fn dns_keeps_answering_every_query_while_configd_reloads_it() {
    let mut lab = Lab::new(&[("m", &["c"]), ("c", &[])]);
    let v1 = lab.signed(1, "");
    let v2 = lab.signed(2, NEW_DOMAIN);
    lab.start_all(&v1);
    let sock = lab.path("state-m/configd.sock");
    wait_for("configd's local socket", || sock.exists());
    let dns: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let stderr = std::fs::File::create(lab.path("dns.log")).unwrap();
    let mut server = Command::new(popnet_bin())
        .args(["--log", "info", "dns", "--configd"])
        .arg(&sock)
        .args(["--listen", &dns.to_string()])
        .args(["--reports", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin", &format!("127.0.0.1:{}", free_port())])
        .args(["--workers", "2"])
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let server = Kill(&mut server);
    wait_for("popnet dns to answer", || answers(dns, "www.demo.example"));
    assert!(
        !answers(dns, "new.demo.example"),
        "version 1 has no new.demo.example"
    );
    // configd knows its local daemon.
    wait_for("configd to list the dns daemon", || {
        let out = popctl(&[
            "--json",
            "--config",
            v1.to_str().unwrap(),
            "config",
            "status",
        ]);
        String::from_utf8_lossy(&out.stdout).contains("\"role\": \"dns\"")
    });

    let q = Querier::start(dns, "www.demo.example");
    std::thread::sleep(Duration::from_millis(300));
    let (code, _, out) = lab.push(&v2, &lab.key);
    assert_eq!(code, 0, "{out}");
    wait_for("the new domain to be answered", || {
        answers(dns, "new.demo.example")
    });
    std::thread::sleep(Duration::from_millis(300));
    let (sent, lost) = q.finish();
    assert!(sent > 50, "only {sent} queries were sent");
    assert_eq!(
        lost, 0,
        "{lost} of {sent} queries went unanswered during the reload"
    );

    // The daemon reported its reload to configd, and status shows it.
    wait_for("the dns daemon to report version 2", || {
        let out = popctl(&[
            "--json",
            "--config",
            v2.to_str().unwrap(),
            "config",
            "status",
        ]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v[0]["status"]["local"].as_array().is_some_and(|l| {
            l.iter()
                .any(|d| d["role"] == "dns" && d["version"] == 2 && d["ok"] == true)
        })
    });
    let log = std::fs::read_to_string(lab.path("dns.log")).unwrap();
    assert!(log.contains("reload"), "{log}");

    // Version 3 moves the DNS server to another POP: this server cannot take it, keeps
    // version 2 running, logs why and tells configd, whose status shows it.
    lab.replace = vec![(
        "[pops.dns]\nlisten = [\"127.0.0.1:5353\"]\nreports = \"127.0.0.1:5354\"\nadmin = \"127.0.0.1:5380\"\n".into(),
        String::new(),
    )];
    lab.box_pops = vec![("m".into(), "local".into()), ("c".into(), "other".into())];
    let other = format!(
        "{NEW_DOMAIN}\n[[pops]]\nname = \"other\"\nregion = \"local\"\n[pops.dns]\nlisten = [\"127.0.0.1:{}\"]\nreports = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\n",
        free_port(),
        free_port(),
        free_port()
    );
    let v3 = lab.signed(3, &other);
    let q = Querier::start(dns, "new.demo.example");
    let (code, _, out) = lab.push(&v3, &lab.key);
    assert_eq!(code, 0, "configd takes it: {out}");
    wait_for("the dns daemon to report refusing version 3", || {
        let out = popctl(&[
            "--json",
            "--config",
            v3.to_str().unwrap(),
            "config",
            "status",
        ]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v[0]["status"]["local"].as_array().is_some_and(|l| {
            l.iter().any(|d| {
                d["role"] == "dns"
                    && d["version"] == 3
                    && d["ok"] == false
                    && d["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("no DNS server"))
            })
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    let (sent, lost) = q.finish();
    assert_eq!(lost, 0, "{lost} of {sent} queries went unanswered");
    assert!(answers(dns, "new.demo.example"), "version 2 keeps running");
    let out = popctl(&["--config", v3.to_str().unwrap(), "config", "status"]);
    assert!(text(&out).contains("no DNS server"), "{}", text(&out));
    let log = std::fs::read_to_string(lab.path("dns.log")).unwrap();
    assert!(
        log.contains("reload refused") && log.contains("no DNS server"),
        "{log}"
    );
    drop(server);
}

#[test]
fn a_reload_that_fails_keeps_the_old_config_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("popnet.toml");
    std::fs::write(&file, popnet_config::DEMO_TOML).unwrap();
    let dns: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let log = dir.path().join("dns.log");
    let mut child = Command::new(popnet_bin())
        .args(["--log", "info", "dns", "--config"])
        .arg(&file)
        .args(["--listen", &dns.to_string()])
        .args(["--reports", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin", &format!("127.0.0.1:{}", free_port())])
        .args(["--workers", "1"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let hup = || {
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    let result = std::panic::catch_unwind(|| {
        wait_for("popnet dns to answer", || answers(dns, "www.demo.example"));
        // A config that does not validate: an origin-less dynamic domain.
        let bad = format!(
            "{}\n[[customers.domains]]\nname = \"new.demo.example\"\nkind = \"dynamic\"\norigins = [\"nowhere\"]\n",
            popnet_config::DEMO_TOML
        );
        std::fs::File::create(&file)
            .unwrap()
            .write_all(bad.as_bytes())
            .unwrap();
        hup();
        wait_for("the refusal in the log", || {
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("reload refused")
        });
        let l = std::fs::read_to_string(&log).unwrap();
        assert!(l.contains("nowhere"), "the log says why: {l}");
        assert!(
            answers(dns, "www.demo.example"),
            "the old config still answers"
        );
        assert!(!answers(dns, "new.demo.example"));
        // A good one is then taken.
        std::fs::write(&file, format!("{}{NEW_DOMAIN}", popnet_config::DEMO_TOML)).unwrap();
        hup();
        wait_for("the new domain", || answers(dns, "new.demo.example"));
        assert!(answers(dns, "www.demo.example"));
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// The response head of GET `path` for `host` from the cache (empty if it cannot be
/// reached).
fn cache_head(cache: SocketAddr, host: &str, path: &str) -> String {
    use std::io::Read as _;
    let Ok(mut c) = TcpStream::connect(cache) else {
        return String::new();
    };
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    text.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The head of GET `path` for static.demo.example.
fn cache_get(cache: SocketAddr, path: &str) -> String {
    cache_head(cache, "static.demo.example", path)
}

#[test]
fn cache_purge_all_pops_goes_down_the_tree_and_reports_per_pop() {
    let port = free_port();
    let origin = DemoOrigin::start(&[
        SocketAddr::from(([127, 0, 0, 1], port)),
        SocketAddr::from(([127, 0, 0, 2], port)),
    ])
    .expect("demo origin");
    let cache: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut lab = Lab::new(&[("m", &["c"]), ("c", &[])]);
    lab.replace = vec![
        (
            "addresses = [\"127.0.0.1\", \"::1\"]".into(),
            "addresses = [\"127.0.0.1\"]".into(),
        ),
        ("port = 8081".into(), format!("port = {port}")),
        (
            "listen = [\"127.0.0.1:8080\"]".into(),
            format!("listen = [\"{cache}\"]"),
        ),
        ("\"127.0.0.1:5381\"".into(), format!("\"{admin}\"")),
    ];
    let v1 = lab.signed(1, "");
    lab.start_all(&v1);
    let mut child = Command::new(popnet_bin())
        .args(["--log", "warn", "cache", "--workers", "1", "--config"])
        .arg(&v1)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(lab.path("cache.log")).unwrap())
        .spawn()
        .unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("the cache to listen", || {
            TcpStream::connect_timeout(&cache, Duration::from_millis(200)).is_ok()
        });
        let head = cache_get(cache, "/obj/1k");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        wait_for("the object to be a hit", || {
            cache_get(cache, "/obj/1k").contains("HIT")
        });
        let fetched = origin.requests();

        let key = lab.key.clone();
        let out = popctl(&[
            "--config",
            v1.to_str().unwrap(),
            "cache",
            "purge",
            "--all-pops",
            "--key",
            key.to_str().unwrap(),
            "--customer",
            "demo",
        ]);
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        let row = t
            .lines()
            .find(|l| l.starts_with("m "))
            .unwrap_or_else(|| panic!("no row for box m: {t}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cells[..3], &["m", "local", "ok"], "{t}");
        assert!(cells[3].parse::<u64>().unwrap() >= 1, "{t}");
        assert!(
            t.lines().any(|l| l.starts_with("c ")),
            "box c reports too: {t}"
        );

        // The object is gone: the next request goes to the origin again.
        let head = cache_get(cache, "/obj/1k");
        assert!(
            head.starts_with("HTTP/1.1 200") && !head.contains("HIT"),
            "{head}"
        );
        assert!(origin.requests() > fetched);

        // Without a key it says what to add; with a key the network does not list, every
        // box refuses.
        let out = popctl(&[
            "--config",
            v1.to_str().unwrap(),
            "cache",
            "purge",
            "--all-pops",
            "--customer",
            "demo",
        ]);
        assert!(!out.status.success());
        assert!(text(&out).contains("--key"), "{}", text(&out));
        let other = lab.path("other.pem");
        assert!(
            popctl(&["config", "keygen", "--out", other.to_str().unwrap()])
                .status
                .success()
        );
        let out = popctl(&[
            "--config",
            v1.to_str().unwrap(),
            "cache",
            "purge",
            "--all-pops",
            "--key",
            other.to_str().unwrap(),
            "--customer",
            "demo",
        ]);
        assert!(!out.status.success());
        assert!(
            text(&out).contains("alice"),
            "names the admins: {}",
            text(&out)
        );
    }));
    let _ = child.kill();
    let _ = child.wait();
    origin.stop();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// One GET to the cache for `host`; the status line.
fn cache_status(cache: SocketAddr, host: &str, path: &str) -> String {
    cache_head(cache, host, path)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn popnet_up_reloads_dns_cache_and_probe_from_configd() {
    let port = free_port();
    let origin = DemoOrigin::start(&[
        SocketAddr::from(([127, 0, 0, 1], port)),
        SocketAddr::from(([127, 0, 0, 2], port)),
    ])
    .expect("demo origin");
    let dns: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let cache: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut lab = Lab::new(&[("m", &[])]);
    lab.replace = vec![
        (
            "addresses = [\"127.0.0.1\", \"::1\"]".into(),
            "addresses = [\"127.0.0.1\"]".into(),
        ),
        ("port = 8081".into(), format!("port = {port}")),
        ("\"127.0.0.1:5353\"".into(), format!("\"{dns}\"")),
        (
            "\"127.0.0.1:5354\"".into(),
            format!("\"127.0.0.1:{}\"", free_port()),
        ),
        (
            "\"127.0.0.1:5380\"".into(),
            format!("\"127.0.0.1:{}\"", free_port()),
        ),
        ("\"127.0.0.1:8080\"".into(), format!("\"{cache}\"")),
        (
            "\"127.0.0.1:5381\"".into(),
            format!("\"127.0.0.1:{}\"", free_port()),
        ),
        (
            "\"127.0.0.1:5355\"".into(),
            format!("\"127.0.0.1:{}\"", free_port()),
        ),
    ];
    let v1 = lab.signed(1, "");
    // Version 2: a new static domain (DNS and cache) with a new origin (a new probe
    // target).
    let v2 = lab.signed(
        2,
        &format!(
            "\n[[customers.origins]]\nname = \"origin-c\"\naddresses = [\"127.0.0.2\"]\nport = {port}\nregion = \"local\"\n\n[[customers.domains]]\nname = \"static2.demo.example\"\nkind = \"static\"\n"
        ),
    );
    lab.start_all(&v1);
    let sock = lab.path("state-m/configd.sock");
    wait_for("configd's local socket", || sock.exists());
    let log = lab.path("up.log");
    let mut child = Command::new(popnet_bin())
        .args(["--log", "info", "up", "--configd"])
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("popnet up to answer", || answers(dns, "www.demo.example"));
        wait_for("the cache to serve", || {
            cache_status(cache, "static.demo.example", "/obj/1k").starts_with("HTTP/1.1 200")
        });
        assert!(!answers(dns, "static2.demo.example"));
        let before = cache_status(cache, "static2.demo.example", "/obj/1k");
        assert!(
            before.starts_with("HTTP/1.1 421"),
            "version 1 has no such host: {before}"
        );

        let (code, _, out) = lab.push(&v2, &lab.key);
        assert_eq!(code, 0, "{out}");
        wait_for("DNS to answer the new domain", || {
            answers(dns, "static2.demo.example")
        });
        wait_for("the cache to serve the new host", || {
            cache_status(cache, "static2.demo.example", "/obj/1k").starts_with("HTTP/1.1 200")
        });
        let l = std::fs::read_to_string(&log).unwrap();
        let line = l
            .lines()
            .find(|l| l.contains("reload: version 2"))
            .unwrap_or_else(|| panic!("no reload line: {l}"));
        assert!(
            line.contains("dns reloaded") && line.contains("cache reloaded"),
            "{line}"
        );
        // Version 1 probes origin-a and origin-b (and the POP cache); version 2 adds
        // origin-c.
        let targets = |l: &str| -> usize {
            l.split("probe reloaded (")
                .nth(1)
                .and_then(|t| t.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no probe count in {l}"))
        };
        let mut v1_targets =
            popnet_config::Config::from_toml(&std::fs::read_to_string(&v1).unwrap(), "v1")
                .unwrap()
                .customers
                .iter()
                .map(|c| c.origins.len())
                .sum::<usize>();
        v1_targets += 1;
        assert_eq!(targets(line), v1_targets + 1, "{line}");
        // configd lists the daemon as reloaded.
        wait_for("status to show `up` on version 2", || {
            let out = popctl(&[
                "--json",
                "--config",
                v2.to_str().unwrap(),
                "config",
                "status",
            ]);
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            v[0]["status"]["local"].as_array().is_some_and(|l| {
                l.iter()
                    .any(|d| d["role"] == "up" && d["version"] == 2 && d["ok"] == true)
            })
        });
    }));
    let _ = child.kill();
    let _ = child.wait();
    origin.stop();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn configd_refuses_to_start_with_a_clear_error() {
    let lab = Lab::new(&[("m", &[])]);
    let v1 = lab.signed(1, "");
    let start = |args: &[&str]| {
        let out = Command::new(popnet_bin())
            .args(["configd", "--state"])
            .arg(lab.path("state"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "started: {args:?}");
        text(&out)
    };
    let e = start(&["--name", "m"]);
    assert!(
        e.contains("holds no config yet") && e.contains("--bootstrap"),
        "{e}"
    );
    let missing = lab.path("missing.toml");
    let e = start(&["--name", "m", "--bootstrap", missing.to_str().unwrap()]);
    assert!(e.contains("missing.toml"), "{e}");
    assert_eq!(e.matches("No such file").count(), 1, "said once: {e}");
    let unsigned = lab.path("v1.toml");
    let e = start(&["--name", "m", "--bootstrap", unsigned.to_str().unwrap()]);
    assert!(e.contains("popctl config sign"), "{e}");
    let e = start(&["--name", "nobody", "--bootstrap", v1.to_str().unwrap()]);
    assert!(e.contains("nobody"), "{e}");
}

#[test]
fn configd_admin_serves_health_status_and_metrics() {
    let mut lab = Lab::new(&[("m", &["c"]), ("c", &[])]);
    let v1 = lab.signed(1, "");
    let v2 = lab.signed(2, "");
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    lab.start_with("m", &v1, &["--admin", &admin.to_string()]);
    lab.start("c", &v1);
    wait_for("configd's admin listener", || {
        common::http_get(admin, "/health").is_ok()
    });
    let m = scrape(admin);
    let b = [("box", "m")];
    assert_eq!(sample(&m, "popnet_configd_running_version", &b), 1.0);
    assert_eq!(sample(&m, "popnet_configd_pending_version", &b), 0.0);
    let (code, _, out) = lab.push(&v2, &lab.key);
    assert_eq!(code, 0, "{out}");
    let m = scrape(admin);
    assert_eq!(sample(&m, "popnet_configd_running_version", &b), 2.0);
    assert_eq!(
        sample(
            &m,
            "popnet_configd_prepares_total",
            &[("box", "m"), ("result", "held")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "popnet_configd_switches_total",
            &[("box", "m"), ("how", "commit")]
        ),
        1.0
    );
    assert_eq!(sample(&m, "popnet_configd_error", &b), 0.0);
    // The same version again is refused by the box (not newer): counted, and reported.
    let (code, _, out) = lab.push(&v2, &lab.key);
    assert_ne!(code, 0, "{out}");
    let m = scrape(admin);
    assert_eq!(
        sample(
            &m,
            "popnet_configd_prepares_total",
            &[("box", "m"), ("result", "refused")]
        ),
        1.0
    );
    assert_eq!(sample(&m, "popnet_configd_error", &b), 1.0);
    let status: Value = serde_json::from_str(&common::http_get(admin, "/status").unwrap()).unwrap();
    assert_eq!(status["running"]["version"], 2, "{status}");
    assert!(status["last_error"].as_str().is_some(), "{status}");
    assert!(common::http_get(admin, "/nope").is_err());

    // Off loopback it has no token, so it is refused at start.
    let out = Command::new(popnet_bin())
        .args(["configd", "--name", "c", "--state"])
        .arg(lab.path("state-other"))
        .arg("--bootstrap")
        .arg(&v1)
        .args(["--listen", "127.0.0.1:0", "--admin", "0.0.0.0:5383"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must be on loopback"), "{err}");
}
