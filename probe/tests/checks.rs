//! Each service check against real loopback servers: HTTP (status, body checks, chunked, slow, refused), TCP (open, closed, full backlog), DNS (answering, silent).

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use probe::check::{CheckSpec, HttpCheck, check_once, dns_question};
use support::{Reply, closed_port, full_backlog, http_server};

const T: Duration = Duration::from_millis(400);

fn http(path: &str) -> HttpCheck {
    HttpCheck::get(path)
}

#[test]
fn http_up_records_connect_first_byte_and_last_byte() {
    let srv = http_server(Reply::ok("hello, probe"));
    let o = check_once(srv.addr, &CheckSpec::Http(http("/health")), T).unwrap();
    assert!(o.passed(), "{o:?}");
    assert_eq!(o.status, Some(200));
    let (c, f) = (o.connect.unwrap(), o.first_byte.unwrap());
    assert!(c <= f && f <= o.total, "{o:?}");
    // The request the server saw.
    let req = srv.requests().pop().unwrap();
    assert!(req.starts_with("GET /health HTTP/1.1\r\n"), "{req}");
    assert!(req.contains(&format!("Host: {}\r\n", srv.addr)), "{req}");
}

#[test]
fn http_wrong_status_fails() {
    let srv = http_server(Reply {
        status: 503,
        ..Reply::ok("busy")
    });
    let o = check_once(srv.addr, &CheckSpec::Http(http("/")), T).unwrap();
    assert_eq!(o.status, Some(503));
    assert!(o.result.unwrap_err().contains("status 503, expected 200"));
    // And a check that expects 503 passes.
    let mut c = http("/");
    c.expect_status = 503;
    assert!(
        check_once(srv.addr, &CheckSpec::Http(c), T)
            .unwrap()
            .passed()
    );
}

#[test]
fn http_body_contains_passes_and_fails() {
    let srv = http_server(Reply::ok("<html>status: all good</html>"));
    let mut c = http("/");
    c.body_contains = Some(b"all good".to_vec());
    assert!(
        check_once(srv.addr, &CheckSpec::Http(c.clone()), T)
            .unwrap()
            .passed()
    );
    c.body_contains = Some(b"all bad".to_vec());
    let o = check_once(srv.addr, &CheckSpec::Http(c), T).unwrap();
    assert!(o.result.unwrap_err().contains("does not contain"));
}

#[test]
fn http_body_xxh3_passes_and_fails() {
    let body = "the exact expected body\n";
    let srv = http_server(Reply::ok(body));
    let mut c = http("/");
    c.body_xxh3 = Some(xxhash_rust::xxh3::xxh3_64(body.as_bytes()));
    assert!(
        check_once(srv.addr, &CheckSpec::Http(c.clone()), T)
            .unwrap()
            .passed()
    );
    c.body_xxh3 = Some(xxhash_rust::xxh3::xxh3_64(b"something else"));
    let o = check_once(srv.addr, &CheckSpec::Http(c), T).unwrap();
    assert!(o.result.unwrap_err().contains("xxh3"));
}

#[test]
fn http_chunked_and_close_delimited_bodies_are_checked_whole() {
    let body = "part one, part two, part three";
    for reply in [
        Reply {
            chunked: true,
            ..Reply::ok(body)
        },
        Reply {
            no_length: true,
            ..Reply::ok(body)
        },
    ] {
        let srv = http_server(reply);
        let mut c = http("/");
        c.body_contains = Some(b"part three".to_vec());
        c.body_xxh3 = Some(xxhash_rust::xxh3::xxh3_64(body.as_bytes()));
        let o = check_once(srv.addr, &CheckSpec::Http(c), T).unwrap();
        assert!(o.passed(), "{o:?}");
    }
}

#[test]
fn http_config_checks_resolve_to_specs() {
    let c = popnet_config::Check {
        kind: popnet_config::CheckKind::Http,
        body_xxh3: Some("00000000000000ff".into()),
        ..popnet_config::Check::default()
    };
    let Some(CheckSpec::Http(h)) = CheckSpec::from_config(&c).unwrap() else {
        panic!("not an http spec");
    };
    assert_eq!(h.body_xxh3, Some(0xff));
    assert_eq!(h.path, "/");
}

#[test]
fn http_slow_server_hits_the_timeout() {
    let srv = http_server(Reply {
        delay: Duration::from_secs(3),
        ..Reply::ok("late")
    });
    let o = check_once(srv.addr, &CheckSpec::Http(http("/")), T).unwrap();
    let e = o.result.clone().unwrap_err();
    assert!(e.contains("no response head in time"), "{e}");
    assert!(o.connect.is_some(), "it did connect");
    assert!(
        o.total >= T && o.total < T + Duration::from_secs(2),
        "{o:?}"
    );
}

#[test]
fn http_and_tcp_refused_fail() {
    let addr = closed_port();
    let o = check_once(addr, &CheckSpec::Http(http("/")), T).unwrap();
    assert!(!o.passed());
    let o = check_once(addr, &CheckSpec::Tcp { refused_ok: false }, T).unwrap();
    assert!(o.result.unwrap_err().to_lowercase().contains("refused"));
    // A latency probe counts the RST as an answer.
    assert!(
        check_once(addr, &CheckSpec::Tcp { refused_ok: true }, T)
            .unwrap()
            .passed()
    );
}

#[test]
fn tcp_listening_passes() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let o = check_once(
        l.local_addr().unwrap(),
        &CheckSpec::Tcp { refused_ok: false },
        T,
    )
    .unwrap();
    assert!(o.passed(), "{o:?}");
    assert!(o.connect.is_some());
}

#[test]
fn tcp_to_a_listener_with_a_full_backlog_times_out() {
    let (_l, addr) = full_backlog();
    let o = check_once(addr, &CheckSpec::Tcp { refused_ok: true }, T).unwrap();
    assert!(
        o.result.clone().unwrap_err().contains("connect timed out"),
        "{o:?}"
    );
    assert!(o.total >= T, "{o:?}");
}

fn dns_spec() -> CheckSpec {
    CheckSpec::Dns {
        question: dns_question("ns.example").unwrap(),
        refused_ok: false,
    }
}

#[test]
fn dns_any_response_with_the_right_id_is_up() {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap();
    let responder = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        // First a stray datagram with another id, then REFUSED with the query's id.
        s.send_to(&[0xde, 0xad, 0x81, 0x05, 0, 0, 0, 0, 0, 0, 0, 0], from)
            .unwrap();
        let mut r = buf[..n].to_vec();
        r[2] |= 0x80;
        r[3] = 0x05;
        s.send_to(&r, from).unwrap();
        buf[..n].to_vec()
    });
    let o = check_once(addr, &dns_spec(), T).unwrap();
    assert!(o.passed(), "{o:?}");
    let q = responder.join().unwrap();
    // A type A query for the name, recursion not desired.
    assert_eq!(&q[2..6], &[0, 0, 0, 1]);
    assert_eq!(&q[12..], dns_question("ns.example").unwrap().as_slice());
    assert_eq!(&q[q.len() - 4..], &[0, 1, 0, 1]);
}

#[test]
fn dns_silence_times_out_and_a_closed_port_fails() {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let o = check_once(s.local_addr().unwrap(), &dns_spec(), T).unwrap();
    assert!(
        o.result.clone().unwrap_err().contains("no DNS response"),
        "{o:?}"
    );
    assert!(o.total >= T);
    let closed: SocketAddr = {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        u.local_addr().unwrap()
    };
    let o = check_once(closed, &dns_spec(), T).unwrap();
    assert!(!o.passed());
    assert!(
        o.total < T,
        "an ICMP port unreachable ends it at once: {o:?}"
    );
}
