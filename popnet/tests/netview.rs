//! NetView end to end: real `popnet dns`, `popnet cache` and `popnet logd --netview` processes; login, CSRF, isolation between customers, hostile input and purges over raw HTTP sockets and curl, and a customer driving the real pages in headless Chromium (DevTools protocol) whose screenshot shows the chart.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cache_engine::demo_origin::DemoOrigin;
use common::{Proc, Seen, curl, free_port, wait_for};

const DEMO_HOST: &str = "static.demo.example";
const OTHER_HOST: &str = "static.other.example";
const ALICE: (&str, &str) = ("alice", "alice's long password");
const BOB: (&str, &str) = ("bob", "bob's long password!");
const ROOT: (&str, &str) = ("root", "the admin's password");
/// The chart colours of hits and misses (logd/src/netview/chart.rs).
const HIT_RGB: [u8; 3] = [0x2b, 0x8a, 0x3e];
const MISS_RGB: [u8; 3] = [0xe8, 0x59, 0x0c];

fn local(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// Runs `popctl` (built next to `popnet` by `cargo test --workspace`).
fn popctl(args: &[&str]) -> std::process::Output {
    Command::new(common::popctl_bin())
        .args(args)
        .output()
        .expect("popctl runs")
}

/// A one-POP network under configd (one box, "m"): customers "demo" and "other" (both
/// served by the cache from one demo origin; demo also has the dynamic name
/// www.demo.example answered with up to four origins), the log server "main" keeping
/// both, with NetView on and its origin form signing with admin key "netview".
struct Net {
    dir: tempfile::TempDir,
    /// The signed config configd starts with.
    config: PathBuf,
    users: PathBuf,
    configd: SocketAddr,
    dns: SocketAddr,
    dns_admin: SocketAddr,
    cache_http: SocketAddr,
    cache_admin: SocketAddr,
    logd_admin: SocketAddr,
    netview: SocketAddr,
}

impl Net {
    fn new(origin: SocketAddr) -> Net {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("netview.pem");
        let admins = common::keygen(&key, "netview");
        let configd = local(free_port());
        let dns = local(free_port());
        let dns_admin = local(free_port());
        let cache_http = local(free_port());
        let cache_admin = local(free_port());
        let logd = local(free_port());
        let logd_admin = local(free_port());
        let netview = local(free_port());
        let text = format!(
            r#"
[network]
name = "netview-test"
version = 1
zone = "popnet.example"
{admins}
[probes]
report_key = "b931d3d715699ac5770f3adaa5de1107460e972c72dfc63c6498486c5ae09ce5"

[logs]
key = "4f1e0c2b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"
spool_dir = "{spool}"
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
listen = ["{cache_http}"]
admin = "{cache_admin}"

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
[customers.domains.policy]
answers = 4

[[customers]]
name = "other"
fee_per_gb = 0.7
zones = ["other.example"]
[[customers.origins]]
name = "o"
addresses = ["{oip}"]
port = {oport}
[[customers.domains]]
name = "static.other.example"
kind = "static"

[[log_servers]]
name = "main"
address = "{logd}"
admin = "{logd_admin}"
netview = "{netview}"
customers = ["demo", "other"]
data_dir = "{data}"
[log_servers.origin_form]
admin_key = "{key}"
allow_private = true

[configd]
masters = ["m"]
[[configd.boxes]]
name = "m"
address = "{configd}"
pop = "t"
"#,
            key = key.display(),
            spool = dir.path().join("spool").display(),
            data = dir.path().join("logd").display(),
            oip = origin.ip(),
            oport = origin.port(),
        );
        let plain = dir.path().join("popnet.toml");
        std::fs::write(&plain, text).unwrap();
        let config = dir.path().join("popnet.signed.toml");
        common::sign(&key, &plain, &config);
        let users = dir.path().join("logd").join("netview-users.toml");
        Net {
            dir,
            config,
            users,
            configd,
            dns,
            dns_admin,
            cache_http,
            cache_admin,
            logd_admin,
            netview,
        }
    }

    /// configd's local socket.
    fn socket(&self) -> PathBuf {
        self.dir.path().join("configd").join("configd.sock")
    }

    /// Adds a NetView user with `popnet netview-user add`, the password on stdin.
    fn add_user(&self, (name, password): (&str, &str), customer: Option<&str>) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_popnet"));
        cmd.args([
            "netview-user",
            "--users",
            self.users.to_str().unwrap(),
            "add",
            name,
        ]);
        match customer {
            Some(c) => cmd.args(["--customer", c]),
            None => cmd.arg("--admin"),
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "netview-user add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// configd, then dns, logd (with NetView) and cache following it, each up; users
    /// alice (demo), bob (other) and root (admin).
    fn start(&self) -> Vec<Proc> {
        self.add_user(ALICE, Some("demo"));
        self.add_user(BOB, Some("other"));
        self.add_user(ROOT, None);
        let log = |n: &str| self.dir.path().join(n);
        let state = self.dir.path().join("configd");
        let mut configd = Proc::spawn(
            &[
                "configd",
                "--name",
                "m",
                "--state",
                state.to_str().unwrap(),
                "--bootstrap",
                self.config.to_str().unwrap(),
            ],
            &log("configd.log"),
        );
        let sock = self.socket();
        configd.wait_until("configd's local socket", || {
            sock.exists() && TcpStream::connect(self.configd).is_ok()
        });
        let sock = sock.to_str().unwrap();
        let dns = Proc::start(&["dns", "--configd", sock], self.dns_admin, &log("dns.log"));
        let logd = Proc::start(&["logd", "--configd", sock], self.netview, &log("logd.log"));
        let cache = Proc::start(
            &["cache", "--configd", sock, "--workers", "2"],
            self.cache_admin,
            &log("cache.log"),
        );
        vec![configd, dns, logd, cache]
    }

    /// The addresses `dig +short` gets for `name` (A) from the POP's DNS server.
    fn dig(&self, name: &str) -> Vec<String> {
        let out = Command::new("dig")
            .args([
                &format!("@{}", self.dns.ip()),
                "-p",
                &self.dns.port().to_string(),
                "+short",
                "+time=2",
                "+tries=1",
                name,
                "A",
            ])
            .output()
            .expect("dig runs (bind9-dnsutils)");
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        v.sort();
        v
    }

    /// Requests `paths` of `host` through the cache and waits until logd has them all.
    fn traffic(&self, host: &str, customer: &str, paths: &[String]) -> Vec<Seen> {
        let before = self.logged(customer);
        let seen = curl(self.cache_http, host, paths);
        let want = before + paths.len() as u64;
        wait_for("the requests in logd", Duration::from_secs(60), || {
            self.logged(customer) >= want
        });
        seen
    }

    /// Requests of `customer` logd has in its rollups for the last hour.
    fn logged(&self, customer: &str) -> u64 {
        let (status, body) = http(
            self.logd_admin,
            "GET",
            &format!("/api/stats?customer={customer}&since=1h"),
            &[],
            None,
        )
        .expect("logd admin answers");
        assert_eq!(status.code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["total"]["requests"].as_u64().unwrap()
    }
}

/// Status line and headers of a response.
#[derive(Debug)]
struct Head {
    code: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `name=value` of every Set-Cookie.
    fn cookies(&self) -> HashMap<String, String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .filter_map(|(_, v)| {
                let (kv, _) = v.split_once(';').unwrap_or((v, ""));
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect()
    }
}

/// One request on a fresh connection, raw bytes on a socket.
fn http_raw(addr: SocketAddr, request: &[u8]) -> Option<(Head, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    s.write_all(request).ok()?;
    // Read to the end of the body: Content-Length if given (Chromium's DevTools server
    // keeps the connection open), else to EOF.
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match s.read(&mut chunk) {
            Ok(n) => n,
            Err(_) if !out.is_empty() => 0,
            Err(_) => return None,
        };
        out.extend_from_slice(&chunk[..n]);
        if let Some(i) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..i]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|l| out.len() >= i + 4 + l) {
                break;
            }
        }
        if n == 0 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let code = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect();
    Some((Head { code, headers }, body.to_string()))
}

/// One request with cookies and an optional form body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookies: &[(&str, &str)],
    form: Option<&str>,
) -> Option<(Head, String)> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !cookies.is_empty() {
        let c: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        req.push_str(&format!("Cookie: {}\r\n", c.join("; ")));
    }
    if let Some(f) = form {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            f.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(form.unwrap_or(""));
    http_raw(addr, req.as_bytes())
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The value of the hidden `csrf` input of a page.
fn csrf_of(page: &str) -> String {
    let i = page
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field in {page}"));
    let rest = &page[i + 19..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// A logged-in session: its cookie and its CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

/// Logs in through the login form as a browser would (its pre-login cookie and token).
fn login(nv: SocketAddr, (user, password): (&str, &str)) -> Session {
    let (h, page) = http(nv, "GET", "/login", &[], None).unwrap();
    assert_eq!(h.code, 200);
    let pre = h.cookies()["nv_login"].clone();
    let form = format!(
        "csrf={}&user={}&password={}",
        csrf_of(&page),
        enc(user),
        enc(password)
    );
    let (h, body) = http(nv, "POST", "/login", &[("nv_login", &pre)], Some(&form)).unwrap();
    assert_eq!(h.code, 303, "login of {user}: {body}");
    let cookie = h.cookies()["nv_session"].clone();
    assert_eq!(
        h.cookies()["nv_login"],
        "",
        "the pre-login token is dropped"
    );
    let (h, page) = http(nv, "GET", "/network", &[("nv_session", &cookie)], None).unwrap();
    assert_eq!(h.code, 200, "{page}");
    Session {
        csrf: csrf_of(&page),
        cookie,
    }
}

impl Session {
    fn get(&self, nv: SocketAddr, path: &str) -> (Head, String) {
        http(nv, "GET", path, &[("nv_session", &self.cookie)], None).unwrap()
    }

    fn post(&self, nv: SocketAddr, path: &str, form: &str) -> (Head, String) {
        http(
            nv,
            "POST",
            path,
            &[("nv_session", &self.cookie)],
            Some(form),
        )
        .unwrap()
    }
}

fn x_cache(net: &Net, host: &str, path: &str) -> String {
    let s = curl(net.cache_http, host, &[path.to_string()]);
    assert_eq!(s[0].status, 200);
    s[0].x_cache.clone()
}

/// The demo origin on 127.0.0.1 and 127.0.0.2, one port: the second address is the
/// origin server the tests add through NetView (the cache may fetch from it then).
fn two_address_origin() -> DemoOrigin {
    let port = free_port();
    DemoOrigin::start(&[local(port), SocketAddr::from(([127, 0, 0, 2], port))])
        .expect("the demo origin listens on 127.0.0.1 and 127.0.0.2")
}

/// The version in configd's durable store (what the box runs).
fn configd_version(net: &Net) -> u32 {
    let t = std::fs::read_to_string(net.dir.path().join("configd").join("running.toml")).unwrap();
    popnet_config::Config::from_toml(&t, "configd's store")
        .unwrap()
        .network
        .version
}

/// Ten objects of each customer fetched twice: ten misses, then ten hits.
fn make_traffic(net: &Net) {
    let paths: Vec<String> = (1..=10).map(|i| format!("/obj/{i}k")).collect();
    for (host, customer) in [(DEMO_HOST, "demo"), (OTHER_HOST, "other")] {
        let mut seen = net.traffic(host, customer, &paths);
        seen.extend(net.traffic(host, customer, &paths));
        let hits = seen.iter().filter(|s| s.x_cache.starts_with("HIT")).count();
        assert_eq!(hits, 10, "{seen:?}");
    }
}

#[test]
fn netview_login_csrf_isolation_hostile_input_and_purge() {
    let origin = two_address_origin();
    let net = Net::new(origin.addrs[0]);
    let _procs = net.start();
    make_traffic(&net);
    let nv = net.netview;

    // Logged out: pages redirect to the login form, posts are refused.
    let (h, _) = http(nv, "GET", "/c/demo", &[], None).unwrap();
    assert_eq!((h.code, h.header("location")), (303, Some("/login")));
    let (h, _) = http(nv, "POST", "/c/demo/purge", &[], Some("url=x")).unwrap();
    assert_eq!(h.code, 401);
    // A made-up session cookie is no session.
    let fake = "ab".repeat(32);
    for bad in [fake.as_str(), "x", "%00;;=", &"z".repeat(5000)] {
        let (h, _) = http(nv, "GET", "/c/demo", &[("nv_session", bad)], None).unwrap();
        assert_eq!(h.code, 303, "cookie {bad:?}");
    }

    // Login: the form's token must match its pre-login cookie; wrong passwords fail.
    let (h, page) = http(nv, "GET", "/login", &[], None).unwrap();
    let pre = h.cookies()["nv_login"].clone();
    let token = csrf_of(&page);
    assert_eq!(token, pre);
    // A second tab, or a request that lands on the login form, keeps that token.
    let (h, page) = http(nv, "GET", "/login", &[("nv_login", &pre)], None).unwrap();
    assert_eq!(csrf_of(&page), pre);
    assert_eq!(h.cookies()["nv_login"], pre);
    let (h, _) = http(nv, "GET", "/favicon.ico", &[], None).unwrap();
    assert_eq!(h.code, 404);
    assert!(h.cookies().is_empty());
    // A pre-login cookie that is not one of ours is replaced.
    let (h, page) = http(nv, "GET", "/login", &[("nv_login", "<x>")], None).unwrap();
    assert_ne!(csrf_of(&page), "<x>");
    assert_eq!(h.cookies()["nv_login"], csrf_of(&page));
    let form = |user: &str, pw: &str, csrf: &str| {
        format!("csrf={csrf}&user={}&password={}", enc(user), enc(pw))
    };
    let (h, body) = http(
        nv,
        "POST",
        "/login",
        &[],
        Some(&form(ALICE.0, ALICE.1, &token)),
    )
    .unwrap();
    assert_eq!(h.code, 403, "no pre-login cookie: {body}");
    let other_token = "0".repeat(64);
    let (h, _) = http(
        nv,
        "POST",
        "/login",
        &[("nv_login", &pre)],
        Some(&form(ALICE.0, ALICE.1, &other_token)),
    )
    .unwrap();
    assert_eq!(h.code, 403, "token and cookie differ");
    let (h, body) = http(
        nv,
        "POST",
        "/login",
        &[("nv_login", &pre)],
        Some(&form(ALICE.0, "wrong password", &token)),
    )
    .unwrap();
    assert_eq!(h.code, 401);
    assert!(body.contains("Wrong user name or password"), "{body}");
    assert!(!h.cookies().contains_key("nv_session"));
    let (h, _) = http(
        nv,
        "POST",
        "/login",
        &[("nv_login", &pre)],
        Some(&form("mallory", ALICE.1, &token)),
    )
    .unwrap();
    assert_eq!(h.code, 401);

    let alice = login(nv, ALICE);
    let bob = login(nv, BOB);
    let root = login(nv, ROOT);
    assert_ne!(alice.csrf, bob.csrf);

    // Alice's own pages: graphs with her traffic, her bill.
    let (h, page) = alice.get(nv, "/");
    assert_eq!((h.code, h.header("location")), (303, Some("/c/demo")));
    for range in ["hour", "day", "month"] {
        let (h, page) = alice.get(nv, &format!("/c/demo?range={range}"));
        assert_eq!(h.code, 200, "{page}");
        assert!(h.header("content-security-policy").is_some());
        for chart in ["traffic-requests", "traffic-bytes", "traffic-pops"] {
            assert!(
                page.contains(&format!("id=\"{chart}\"")),
                "{range}: {chart}"
            );
        }
        // 20 requests: 10 hits and 10 misses, drawn as bars in the hit and miss colours.
        assert!(page.contains("data-total=\"20\""), "{range}: {page}");
        assert!(page.contains("fill=\"#2b8a3e\"><title>hits: "), "{range}");
        assert!(page.contains("fill=\"#e8590c\"><title>misses: "), "{range}");
        assert!(!page.contains("static.other.example"));
    }
    let _ = page;
    let (h, bill) = alice.get(nv, "/c/demo/bill");
    assert_eq!(h.code, 200, "{bill}");
    let api_bill: serde_json::Value = {
        let (_, b) = http(net.logd_admin, "GET", "/api/bill?customer=demo", &[], None).unwrap();
        serde_json::from_str(&b).unwrap()
    };
    let bytes = api_bill["bytes"].as_u64().unwrap();
    assert!(bytes > 20 * 1000, "{api_bill}");
    let grouped = {
        let s = bytes.to_string();
        let mut o = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                o.push('\u{202f}');
            }
            o.push(c);
        }
        o
    };
    assert!(
        bill.contains(&grouped),
        "bill shows {grouped} bytes: {bill}"
    );
    assert!(bill.contains("id=\"bill\""));
    let (h, _) = alice.get(nv, "/c/demo/bill?month=2026-13");
    assert_eq!(h.code, 400);
    let (h, _) = alice.get(nv, "/c/demo/bill?month=<script>");
    assert_eq!(h.code, 400);

    // Another customer's pages, bill and purge are the same 404 as a customer that does
    // not exist; admin pages too. Path tricks do not get around it.
    let (h, missing) = alice.get(nv, "/c/nosuch");
    assert_eq!(h.code, 404);
    for path in [
        "/c/other",
        "/c/other?range=day",
        "/c/other/bill",
        "/c/other/bill?month=2026-01",
        "/c/demo/../other",
        "/c/demo%2F..%2Fother",
        "/c//other",
        "/c/OTHER",
        "/admin",
        "/pop/t",
        "/c/demo/nosuch",
    ] {
        let (h, body) = alice.get(nv, path);
        assert_eq!(h.code, 404, "{path}: {body}");
        assert_eq!(body, missing, "{path}");
        assert!(!body.contains("static.other.example"));
    }
    let (h, body) = alice.post(
        nv,
        "/c/other/purge",
        &format!(
            "csrf={}&url={}&scope=url",
            alice.csrf,
            enc("http://static.other.example/obj/1k")
        ),
    );
    assert_eq!(h.code, 404, "{body}");
    // Bob's own pages work for Bob.
    let (h, page) = bob.get(nv, "/c/other");
    assert_eq!(h.code, 200);
    assert!(page.contains("data-total=\"20\""));

    // The admin: every customer, each POP, any customer's page.
    let (h, page) = root.get(nv, "/admin");
    assert_eq!(h.code, 200, "{page}");
    assert!(page.contains("href=\"/c/demo\"") && page.contains("href=\"/c/other\""));
    assert!(page.contains("data-total=\"40\""), "{page}");
    let (h, page) = root.get(nv, "/pop/t?range=day");
    assert_eq!(h.code, 200);
    assert!(page.contains("data-total=\"40\""), "{page}");
    let (h, _) = root.get(nv, "/pop/nosuch");
    assert_eq!(h.code, 404);
    let (h, page) = root.get(nv, "/c/other/bill");
    assert_eq!(h.code, 200, "{page}");

    // Purge forms: CSRF token required and checked per session.
    let purge_form = |csrf: &str, url: &str| format!("csrf={csrf}&url={}&scope=url", enc(url));
    let url1 = "http://static.demo.example/obj/1k";
    for bad in ["", "0", bob.csrf.as_str()] {
        let (h, _) = alice.post(nv, "/c/demo/purge", &purge_form(bad, url1));
        assert_eq!(h.code, 403, "csrf {bad:?}");
    }
    let (h, _) = alice.post(nv, "/c/demo/purge", &format!("url={}", enc(url1)));
    assert_eq!(h.code, 403);
    // Still cached: nothing was purged by the refused forms.
    assert!(x_cache(&net, DEMO_HOST, "/obj/1k").starts_with("HIT"));
    assert!(x_cache(&net, OTHER_HOST, "/obj/1k").starts_with("HIT"));
    // Names that are not Alice's, and URLs that are not URLs.
    for url in [
        "http://static.other.example/obj/1k",
        "http://demo.example.evil.example/x",
        "ftp://static.demo.example/x",
        "static.demo.example/x",
        "http://user@static.demo.example/x",
        "http://static.demo.example/a b",
        "",
    ] {
        let (h, body) = alice.post(nv, "/c/demo/purge", &purge_form(&alice.csrf, url));
        assert_eq!(h.code, 400, "{url}: {body}");
        assert!(body.contains("id=\"purge-result\""), "{body}");
    }
    assert!(x_cache(&net, OTHER_HOST, "/obj/1k").starts_with("HIT"));
    // What the user typed comes back escaped.
    let (h, body) = alice.post(
        nv,
        "/c/demo/purge",
        &purge_form(&alice.csrf, "http://<b>evil</b>.example/"),
    );
    assert_eq!(h.code, 400);
    assert!(!body.contains("<b>evil"), "{body}");
    assert!(body.contains("&lt;b&gt;evil"), "{body}");
    // Hostile bodies: not a form, bad escapes, too big, chunked.
    let (h, _) = http_raw(
        nv,
        format!(
            "POST /c/demo/purge HTTP/1.1\r\nCookie: nv_session={}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}",
            alice.cookie
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(h.code, 400);
    let (h, _) = alice.post(nv, "/c/demo/purge", "csrf=%zz&url=%ff");
    assert_eq!(h.code, 400);
    // (Only the head is sent: the server refuses before reading the body.)
    let (h, _) = http_raw(
        nv,
        format!(
            "POST /c/demo/purge HTTP/1.1\r\nCookie: nv_session={}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000000\r\n\r\n",
            alice.cookie
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(h.code, 413);
    let (h, _) = http_raw(
        nv,
        b"POST /login HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(h.code, 411);
    let (h, _) = http_raw(nv, b"GARBAGE\r\n\r\n").unwrap();
    assert_eq!(h.code, 400);
    let (h, _) = alice.get(nv, "/c/demo?range=%3Cscript%3E");
    assert_eq!(h.code, 200, "an unknown range is the last hour");
    let (h, _) = http(nv, "PUT", "/c/demo", &[("nv_session", &alice.cookie)], None).unwrap();
    assert_eq!(h.code, 405);

    // The purge: every POP cache drops the object; the next request is a miss, then a hit.
    let (h, body) = alice.post(nv, "/c/demo/purge", &purge_form(&alice.csrf, url1));
    assert_eq!(h.code, 200, "{body}");
    assert!(body.contains("Purged"), "{body}");
    assert!(x_cache(&net, DEMO_HOST, "/obj/1k").starts_with("MISS"));
    assert!(x_cache(&net, DEMO_HOST, "/obj/1k").starts_with("HIT"));
    assert!(x_cache(&net, DEMO_HOST, "/obj/2k").starts_with("HIT"));
    assert!(x_cache(&net, OTHER_HOST, "/obj/1k").starts_with("HIT"));
    // A prefix purge takes everything under it.
    let (h, body) = alice.post(
        nv,
        "/c/demo/purge",
        &format!(
            "csrf={}&url={}&scope=prefix",
            alice.csrf,
            enc("http://static.demo.example/obj/")
        ),
    );
    assert_eq!(h.code, 200, "{body}");
    for p in ["/obj/2k", "/obj/3k"] {
        assert!(x_cache(&net, DEMO_HOST, p).starts_with("MISS"), "{p}");
    }
    assert!(x_cache(&net, OTHER_HOST, "/obj/2k").starts_with("HIT"));

    // The network page: the POP, its cache, and the DNS server's answers for Alice's names
    // only; the admin sees everyone's.
    let (h, page) = alice.get(nv, "/network");
    assert_eq!(h.code, 200);
    assert!(page.contains("id=\"pops\""), "{page}");
    assert!(page.contains("id=\"servers-t\""), "{page}");
    assert!(page.contains("id=\"selections-t\""), "{page}");
    assert!(page.contains(">static.demo.example<"), "{page}");
    assert!(!page.contains("static.other.example"), "{page}");
    assert!(!page.contains("other/o"), "{page}");
    let (h, page) = root.get(nv, "/network");
    assert_eq!(h.code, 200);
    assert!(page.contains(">static.demo.example<") && page.contains(">static.other.example<"));
    // (What Alice's page leaves out is there: the other customer's origin.)
    assert!(page.contains("other/o"), "{page}");

    // Logout needs the token, and ends the session.
    let (h, _) = alice.post(nv, "/logout", "csrf=nope");
    assert_eq!(h.code, 403);
    let (h, _) = alice.post(nv, "/logout", &format!("csrf={}", alice.csrf));
    assert_eq!(h.code, 303);
    let (h, _) = alice.get(nv, "/c/demo");
    assert_eq!((h.code, h.header("location")), (303, Some("/login")));
    let (h, _) = bob.get(nv, "/c/other");
    assert_eq!(h.code, 200, "Bob's session is his own");

    // The counters of all this on logd's /metrics.
    let (_, metrics) = http(net.logd_admin, "GET", "/metrics", &[], None).unwrap();
    for line in [
        "popnet_netview_logins_total{log_server=\"main\",result=\"ok\"} 3",
        "popnet_netview_purges_total{log_server=\"main\",result=\"ok\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

// ---- headless Chromium over the DevTools protocol ----

/// The chromium binary, or None (the test is skipped unless POPNET_HWTESTS=1).
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.is_file())
}

/// A headless Chromium, killed on drop, and a DevTools connection to its page.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: tungstenite::WebSocket<TcpStream>,
    next_id: u64,
}

impl Browser {
    fn start(bin: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1100,2400",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                // Nothing leaves loopback: no background services, every other host
                // through a proxy that is not there, and no name resolves.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--disable-domain-reliability",
                "--disable-client-side-phishing-detection",
                "--no-default-browser-check",
                "--proxy-server=127.0.0.1:9",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium runs");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID" on stderr.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let browser_url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                panic!("chromium did not open its DevTools port");
            }
        };
        let port: u16 = browser_url
            .strip_prefix("ws://127.0.0.1:")
            .and_then(|r| r.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected DevTools URL {browser_url}"));
        let devtools = local(port);
        // The page target's own socket.
        let mut page_url = None;
        wait_for("chromium's page target", Duration::from_secs(30), || {
            let Some((h, body)) = http(devtools, "GET", "/json/list", &[], None) else {
                return false;
            };
            if h.code != 200 {
                return false;
            }
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            page_url = v.as_array().into_iter().flatten().find_map(|t| {
                (t["type"] == "page")
                    .then(|| t["webSocketDebuggerUrl"].as_str().map(str::to_string))
                    .flatten()
            });
            page_url.is_some()
        });
        let page_url = page_url.unwrap();
        let stream = TcpStream::connect(devtools).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let (ws, _) = tungstenite::client(page_url.as_str(), stream).expect("DevTools handshake");
        Browser {
            child,
            _profile: profile,
            ws,
            next_id: 0,
        }
    }

    /// Sends a DevTools command and returns its result (events in between are skipped).
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = serde_json::json!({ "id": id, "method": method, "params": params });
        self.ws
            .send(tungstenite::Message::Text(msg.to_string().into()))
            .unwrap();
        loop {
            let m = self.ws.read().unwrap_or_else(|e| panic!("{method}: {e}"));
            let tungstenite::Message::Text(t) = m else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            if v["id"].as_u64() == Some(id) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates a JavaScript expression in the page; its value.
    fn eval(&mut self, js: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": js, "returnByValue": true }),
        );
        assert!(r.get("exceptionDetails").is_none(), "{js}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until the page at `path` has loaded.
    fn wait_page(&mut self, path: &str) {
        let js = "location.pathname + ' ' + document.readyState";
        let want = format!("{path} complete");
        let t = Instant::now();
        loop {
            let v = self.eval(js);
            if v.as_str() == Some(want.as_str()) {
                return;
            }
            if t.elapsed() > Duration::from_secs(60) {
                let text = self.eval("document.body ? document.body.innerText : ''");
                panic!("the browser is at {v}, not {want}; the page says {text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pixels of `rgb` (within 3 per channel) in a PNG.
fn count_colour(png_bytes: &[u8], rgb: [u8; 3]) -> (usize, (u32, u32)) {
    let dec = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        c => panic!("unexpected PNG colour type {c:?}"),
    };
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let n = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .filter(|p| (0..3).all(|i| p[i].abs_diff(rgb[i]) <= 3))
        .count();
    (n, (info.width, info.height))
}

#[test]
fn chromium_customer_logs_in_sees_a_chart_purges_and_adds_an_origin() {
    let Some(bin) = chromium() else {
        assert!(
            std::env::var("POPNET_HWTESTS").as_deref() != Ok("1"),
            "chromium is not installed but POPNET_HWTESTS=1 requires this test: apt-get install chromium"
        );
        eprintln!("SKIPPED: chromium is not installed (apt-get install chromium)");
        return;
    };
    let origin = two_address_origin();
    let net = Net::new(origin.addrs[0]);
    let _procs = net.start();
    make_traffic(&net);
    let nv = net.netview;

    let mut b = Browser::start(&bin);
    b.call("Page.enable", serde_json::json!({}));
    // Straight to a customer page: the browser is sent to the login form.
    b.call(
        "Page.navigate",
        serde_json::json!({ "url": format!("http://{nv}/c/demo") }),
    );
    b.wait_page("/login");
    // A wrong password first: the form says so.
    b.eval(
        "document.getElementById('user').value = 'alice';\
         document.getElementById('password').value = 'not the password';\
         document.getElementById('login-button').click(); true",
    );
    wait_for("the login error", Duration::from_secs(60), || {
        b.eval("document.readyState == 'complete' && !!document.getElementById('login-error')")
            == serde_json::Value::Bool(true)
    });
    b.eval(&format!(
        "document.getElementById('user').value = 'alice';\
         document.getElementById('password').value = {};\
         document.getElementById('login-button').click(); true",
        serde_json::Value::String(ALICE.1.into())
    ));
    b.wait_page("/c/demo");
    assert_eq!(
        b.eval("document.getElementById('traffic-requests').getAttribute('data-total')"),
        "20"
    );
    // The bars of the requests chart, as drawn: its plot area (below the title and
    // legend, above the axis labels) in a screenshot.
    let r = b.eval(
        "(() => { const r = document.getElementById('traffic-requests').getBoundingClientRect();\
          return [r.left + scrollX, r.top + scrollY, r.width, r.height]; })()",
    );
    let f = |i: usize| r[i].as_f64().unwrap();
    let (x, y, w, h) = (f(0), f(1), f(2), f(3));
    assert!(w > 700.0 && h > 200.0, "chart box {r}");
    let shot = |b: &mut Browser, top: f64, height: f64| -> Vec<u8> {
        let s = b.call(
            "Page.captureScreenshot",
            serde_json::json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": { "x": x, "y": y + top, "width": w, "height": height, "scale": 1 }
            }),
        );
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(s["data"].as_str().unwrap())
            .unwrap()
    };
    let plot = shot(&mut b, 36.0, h - 36.0 - 36.0);
    let out = net.dir.path().join("chart.png");
    std::fs::write(&out, &plot).unwrap();
    let (hits, size) = count_colour(&plot, HIT_RGB);
    let (misses, _) = count_colour(&plot, MISS_RGB);
    assert!(size.0 >= 700, "screenshot {size:?}");
    assert!(
        hits >= 20 && misses >= 20,
        "the chart's plot area ({}) shows {hits} hit and {misses} miss pixels",
        out.display()
    );
    // The legend's swatches (drawn whatever the data) are above the crop.
    let legend = shot(&mut b, 0.0, 34.0);
    assert!(
        count_colour(&legend, HIT_RGB).0 > 0,
        "the legend is above the crop"
    );

    // The purge form, filled in and sent by the browser.
    assert!(x_cache(&net, DEMO_HOST, "/obj/5k").starts_with("HIT"));
    b.eval(
        "document.getElementById('purge-url').value = 'http://static.demo.example/obj/5k';\
         document.getElementById('purge-button').click(); true",
    );
    b.wait_page("/c/demo/purge");
    let result = b.eval("document.getElementById('purge-result').textContent");
    assert!(
        result.as_str().is_some_and(|t| t.starts_with("Purged")),
        "{result}"
    );
    assert!(x_cache(&net, DEMO_HOST, "/obj/5k").starts_with("MISS"));

    // The origin form, filled in and sent by the browser; the DNS answers follow.
    assert_eq!(net.dig("www.demo.example"), ["127.0.0.1"]);
    b.call(
        "Page.navigate",
        serde_json::json!({ "url": format!("http://{nv}/c/demo/origins") }),
    );
    b.wait_page("/c/demo/origins");
    b.eval(&format!(
        "document.getElementById('origin-name').value = 'o2';\
         document.getElementById('origin-addresses').value = '127.0.0.2';\
         document.getElementById('origin-port').value = '{}';\
         document.getElementById('add-origin-button').click(); true",
        origin.addrs[0].port()
    ));
    wait_for("the origin form's result", Duration::from_secs(60), || {
        b.eval("document.readyState == 'complete' && !!document.getElementById('origin-result')")
            == serde_json::Value::Bool(true)
    });
    let result = b.eval("document.getElementById('origin-result').textContent");
    assert!(
        result
            .as_str()
            .is_some_and(|t| t.starts_with("Done: added origin o2")),
        "{result}"
    );
    wait_for(
        "the DNS answers to include the new origin",
        Duration::from_secs(30),
        || net.dig("www.demo.example") == ["127.0.0.1", "127.0.0.2"],
    );

    // Typing another customer's page into the address bar: not found.
    b.call(
        "Page.navigate",
        serde_json::json!({ "url": format!("http://{nv}/c/other") }),
    );
    b.wait_page("/c/other");
    assert_eq!(b.eval("document.title"), "Not found · NetView");
    assert_eq!(
        b.eval("document.body.innerText.includes('static.other.example')"),
        false
    );
}

#[test]
fn a_customer_adds_and_removes_an_origin_and_the_dns_answers_follow() {
    let origin = two_address_origin();
    let port = origin.addrs[0].port();
    let net = Net::new(origin.addrs[0]);
    let _procs = net.start();
    let nv = net.netview;
    const WWW: &str = "www.demo.example";
    assert_eq!(net.dig(WWW), ["127.0.0.1"]);

    let alice = login(nv, ALICE);
    let (h, page) = alice.get(nv, "/c/demo/origins");
    assert_eq!(h.code, 200, "{page}");
    assert!(page.contains("id=\"add-origin\""), "{page}");
    assert!(page.contains("Running config: version 1."), "{page}");
    let (_, dash) = alice.get(nv, "/c/demo");
    assert!(dash.contains("href=\"/c/demo/origins\""), "{dash}");

    let add = |name: &str, addresses: &str, port: &str, extra: &str| {
        format!(
            "csrf={}&name={}&addresses={}&port={}{extra}",
            alice.csrf,
            enc(name),
            enc(addresses),
            enc(port)
        )
    };
    let p = port.to_string();
    // Refused, each with its reason, and nothing pushed.
    for (form, says) in [
        (add("o2", "not-an-ip", &p, ""), "is not an IP address"),
        (add("o2", "0.0.0.0", &p, ""), "not a unicast address"),
        (add("o2", "224.0.0.1", &p, ""), "not a unicast address"),
        (add("o", "127.0.0.2", &p, ""), "already has an origin named"),
        (add("Bad Name!", "127.0.0.2", &p, ""), "The name must be"),
        (add("o2", "127.0.0.2", "70000", ""), "is not a port"),
        (
            add("o2", "127.0.0.2", &p, "&region=nowhere"),
            "is not a region",
        ),
        (add("o2", "127.0.0.2", &p, "&weight=-1"), "is not a weight"),
        (add("o2", "", &p, ""), "Give the origin"),
        (
            add("o2", "127.0.0.2", &p, "&check=http&path=no%20slash"),
            "must start with /",
        ),
    ] {
        let (h, body) = alice.post(nv, "/c/demo/origins", &form);
        assert_eq!(h.code, 400, "{form}: {body}");
        assert!(body.contains("Nothing was changed"), "{form}: {body}");
        assert!(body.contains(says), "{form} should say {says:?}: {body}");
    }
    // Removing the customer's only origin would leave its names without servers: the
    // whole changed config is checked first.
    let (h, body) = alice.post(
        nv,
        "/c/demo/origins/remove",
        &format!("csrf={}&name=o", alice.csrf),
    );
    assert_eq!(h.code, 400, "{body}");
    assert!(body.contains("is not valid"), "{body}");
    let (h, body) = alice.post(
        nv,
        "/c/demo/origins/remove",
        &format!("csrf={}&name=nope", alice.csrf),
    );
    assert_eq!(h.code, 400, "{body}");
    assert!(body.contains("has no origin named"), "{body}");
    // No CSRF token; another customer's user; no session: refused before anything.
    let (h, _) = alice.post(nv, "/c/demo/origins", "name=o2&addresses=127.0.0.2");
    assert_eq!(h.code, 403);
    let bob = login(nv, BOB);
    let (h, _) = bob.post(
        nv,
        "/c/demo/origins",
        &format!("csrf={}&name=o2&addresses=127.0.0.2", bob.csrf),
    );
    assert_eq!(h.code, 404);
    let (h, _) = bob.get(nv, "/c/demo/origins");
    assert_eq!(h.code, 404);
    let (h, _) = http(
        nv,
        "POST",
        "/c/demo/origins",
        &[],
        Some("name=o2&addresses=127.0.0.2"),
    )
    .unwrap();
    assert_eq!(h.code, 401);
    // The key is read at every change: without it, nothing is pushed (503), and the
    // customer is not shown where it lives.
    let key = net.dir.path().join("netview.pem");
    let aside = net.dir.path().join("netview.pem.aside");
    std::fs::rename(&key, &aside).unwrap();
    let (h, body) = alice.post(
        nv,
        "/c/demo/origins",
        &add("o2", "127.0.0.2", &p, "&check=tcp"),
    );
    std::fs::rename(&aside, &key).unwrap();
    assert_eq!(h.code, 503, "{body}");
    assert!(body.contains("admin key cannot be read"), "{body}");
    assert!(!body.contains("netview.pem"), "{body}");
    assert_eq!(configd_version(&net), 1, "nothing was pushed");
    assert_eq!(net.dig(WWW), ["127.0.0.1"]);

    // Added: a new version, signed by the log server's key, pushed through configd; the
    // DNS server (following configd) answers with the new origin too.
    let (h, body) = alice.post(
        nv,
        "/c/demo/origins",
        &add("o2", "127.0.0.2", &p, "&check=tcp"),
    );
    assert_eq!(h.code, 200, "{body}");
    assert!(
        body.contains("Done: added origin o2 (127.0.0.2); version 2 runs on every box."),
        "{body}"
    );
    assert!(body.contains("id=\"push-report\""), "{body}");
    assert!(body.contains("<td>m</td>"), "{body}");
    assert_eq!(configd_version(&net), 2);
    wait_for(
        "the DNS answers to include 127.0.0.2",
        Duration::from_secs(30),
        || net.dig(WWW) == ["127.0.0.1", "127.0.0.2"],
    );
    let stored =
        std::fs::read_to_string(net.dir.path().join("configd").join("running.toml")).unwrap();
    assert!(stored.contains("name = \"o2\""), "{stored}");
    assert!(
        stored
            .lines()
            .last()
            .unwrap()
            .starts_with("# popnet-signature v1 key="),
        "{stored}"
    );
    let (_, page) = alice.get(nv, "/c/demo/origins");
    assert!(page.contains("Running config: version 2."), "{page}");
    assert!(page.contains("id=\"remove-o2\""), "{page}");
    // The cache follows too, and still serves (from either address).
    assert_eq!(
        curl(net.cache_http, DEMO_HOST, &["/obj/3k".to_string()])[0].status,
        200
    );

    // Removed again: the answers drop it.
    let (h, body) = alice.post(
        nv,
        "/c/demo/origins/remove",
        &format!("csrf={}&name=o2", alice.csrf),
    );
    assert_eq!(h.code, 200, "{body}");
    assert!(body.contains("Done: removed origin o2"), "{body}");
    assert_eq!(configd_version(&net), 3);
    wait_for(
        "the DNS answers to drop 127.0.0.2",
        Duration::from_secs(30),
        || net.dig(WWW) == ["127.0.0.1"],
    );

    // An admin pushes version 4 with popctl: the log server follows configd, so its
    // page shows the origin that push added, and the next change builds on it.
    let running =
        std::fs::read_to_string(net.dir.path().join("configd").join("running.toml")).unwrap();
    let o3 = popnet_config::edit::NewOrigin {
        name: "o3".into(),
        addresses: vec!["127.0.0.2".parse().unwrap()],
        port,
        region: None,
        weight: 1.0,
        check: popnet_config::edit::NewCheck::Default,
    };
    let v4 = popnet_config::edit::add_origin(&running, "demo", &o3, &[], "test").unwrap();
    let plain = net.dir.path().join("v4.toml");
    std::fs::write(&plain, &v4.text).unwrap();
    let signed = net.dir.path().join("v4.signed.toml");
    common::sign(&key, &plain, &signed);
    let out = popctl(&[
        "config",
        "push",
        "--key",
        key.to_str().unwrap(),
        signed.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "popctl config push: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("NetView to show version 4", Duration::from_secs(30), || {
        let (_, page) = alice.get(nv, "/c/demo/origins");
        page.contains("Running config: version 4.") && page.contains("id=\"remove-o3\"")
    });
    let (h, body) = alice.post(
        nv,
        "/c/demo/origins/remove",
        &format!("csrf={}&name=o3", alice.csrf),
    );
    assert_eq!(h.code, 200, "{body}");
    assert!(body.contains("version 5 runs on every box"), "{body}");

    // The changes are counted in /metrics.
    let (_, metrics) = http(net.logd_admin, "GET", "/metrics", &[], None).unwrap();
    let line = |result: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("popnet_netview_origin_changes_total{")
                    && l.contains(&format!("result=\"{result}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no origin change counter for {result}: {metrics}"))
    };
    assert_eq!(line("pushed"), 3);
    assert_eq!(line("refused"), 13);
}
