//! The log server's admin listener over a real socket: the token, and every bad query answered with what to do.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use logd::{Logd, LogdOptions};
use popnet_config::Config;

const TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90";

fn config() -> Config {
    let text = popnet_config::demo_without_logs().replace(
        "name = \"local\"\nregion = \"local\"\n",
        "name = \"local\"\nregion = \"local\"\nlog_server = \"main\"\n",
    ) + &format!(
        r#"
[logs]
key = "00112233445566778899aabbccddeeff"

[[log_servers]]
name = "main"
address = "127.0.0.1:5400"
admin_token = "{TOKEN}"

[[log_servers]]
name = "eu"
address = "127.0.0.1:5401"
customers = ["demo"]
"#
    );
    Config::from_toml(&text, "test").unwrap()
}

fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, out.split_once("\r\n\r\n").unwrap().1.to_string())
}

#[test]
fn queries_need_the_token_and_bad_ones_say_what_to_do() {
    let d = tempfile::tempdir().unwrap();
    let logd = Logd::start(
        &config(),
        &LogdOptions {
            name: Some("main".into()),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            admin: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(d.path().to_path_buf()),
            ..LogdOptions::default()
        },
    )
    .unwrap();
    let a = logd.admin;
    let t = Some(TOKEN);
    assert_eq!(get(a, "/health", None).0, 200);
    let (status, body) = get(a, "/api/stats?customer=-", None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(get(a, "/api/stats?customer=-", Some("00ff")).0, 401);
    assert_eq!(get(a, "/metrics", None).0, 401);
    // The POP's log server keeps the records of no customer.
    let (status, body) = get(a, "/api/stats?customer=-&since=2h", t);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"resolution\": \"minute\""), "{body}");
    let (status, body) = get(a, "/api/stats", t);
    assert_eq!(
        (status, body.as_str()),
        (400, "add ?customer=... to the request\n")
    );
    let (status, body) = get(a, "/api/stats?customer=demo", t);
    assert_eq!(status, 404);
    assert!(
        body.contains("kept by log server \"eu\", not by \"main\""),
        "{body}"
    );
    let (status, body) = get(a, "/api/stats?customer=-&since=soon", t);
    assert_eq!(status, 400);
    assert!(body.contains("\"30m\""), "{body}");
    let (status, body) = get(a, "/api/bill?customer=-&month=2026-13", t);
    assert_eq!(status, 400, "{body}");
    let (status, body) = get(a, "/api/series?customer=-&range=year", t);
    assert_eq!(status, 400);
    assert!(body.contains("not hour, day or month"), "{body}");
    let (status, body) = get(a, "/api/raw?customer=-&hour=0s&kind=mail", t);
    assert_eq!(status, 400);
    assert!(body.contains("not access, dns or probe"), "{body}");
    let (status, body) = get(a, "/nothing", t);
    assert_eq!(status, 404);
    assert!(body.contains("/api/stats"), "{body}");
    let (status, body) = get(a, "/metrics", t);
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE popnet_logd_batches_total counter\npopnet_logd_batches_total{log_server=\"main\"} 0\n"), "{body}");
    logd.stop();
}

#[test]
fn a_config_without_this_log_server_is_refused_by_name() {
    let d = tempfile::tempdir().unwrap();
    let err = Logd::start(
        &config(),
        &LogdOptions {
            name: Some("asia".into()),
            data_dir: Some(d.path().to_path_buf()),
            ..LogdOptions::default()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("no log server is named \"asia\"; the config has main, eu"),
        "{err}"
    );
    let err = Logd::start(&config(), &LogdOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("say which with --name"), "{err}");
}
