//! Bad input and slow clients over raw sockets: 400/431/414/501/413/408, no smuggling, no leaks between requests, pipelining, timeouts, limits.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cache_engine::demo_origin::{DemoOrigin, body_of_path};
use common::*;

fn origin() -> impl Fn(&OriginReq) -> OriginResp + Send + Sync + 'static {
    |r: &OriginReq| {
        OriginResp::ok(
            format!("body of {}", r.path),
            &[("Cache-Control", "max-age=300")],
        )
    }
}

/// Sends `req` and returns the responses and whether the server closed.
fn exchange(c: &Cache, req: &[u8]) -> (Vec<Resp>, bool) {
    let (data, closed) = raw(c.addr, req, Duration::from_secs(5));
    (parse_responses(&data, &[]), closed)
}

#[test]
fn malformed_requests_get_400_and_the_connection_closes() {
    let (o, c) = Cache::with_origin(origin(), "");
    for bad in [
        "BAD\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: cdn.acme.example\r\nNo colon here\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: cdn.acme.example\r\nContent-Length: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: cdn.acme.example\r\nContent-Length: 1, 2\r\n\r\n",
        "GET /a b HTTP/1.1\r\nHost: cdn.acme.example\r\n\r\n",
        "GET relative HTTP/1.1\r\nHost: cdn.acme.example\r\n\r\n",
        "GET / HTTP/2.0\r\nHost: cdn.acme.example\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: bad host!\r\n\r\n",
    ] {
        let (r, closed) = exchange(&c, bad.as_bytes());
        assert_eq!(r.len(), 1, "{bad:?}");
        assert_eq!(r[0].status, 400, "{bad:?}: {}", r[0].text());
        assert!(
            r[0].text().starts_with("popnet: malformed request"),
            "{}",
            r[0].text()
        );
        assert!(closed, "{bad:?}");
    }
    assert_eq!(o.total(), 0);
    assert!(c.stats()["requests"]["rejected"].as_u64().unwrap() >= 10);
}

#[test]
fn oversized_heads_431_long_targets_414_unknown_codings_501() {
    let (o, c) = Cache::with_origin(origin(), "");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let (r, closed) = exchange(&c, big.as_bytes());
    assert_eq!((r[0].status, closed), (431, true));
    let many: String = (0..200).map(|i| format!("X-{i}: 1\r\n")).collect();
    let (r, _) = exchange(
        &c,
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n{many}\r\n").as_bytes(),
    );
    assert_eq!(r[0].status, 431);
    let long = format!("GET /{} HTTP/1.1\r\nHost: {HOST}\r\n\r\n", "u".repeat(9000));
    let (r, _) = exchange(&c, long.as_bytes());
    assert_eq!(r[0].status, 414);
    // Even before the request line ends.
    let (r, _) = exchange(&c, format!("GET /{}", "u".repeat(20_000)).as_bytes());
    assert_eq!(r[0].status, 414);
    let te = format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: gzip\r\n\r\n");
    let (r, closed) = exchange(&c, te.as_bytes());
    assert_eq!((r[0].status, closed), (501, true));
    let (r, _) = exchange(
        &c,
        format!("BREW / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes(),
    );
    assert_eq!(r[0].status, 501);
    let (r, _) = exchange(
        &c,
        format!("CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes(),
    );
    assert_eq!(r[0].status, 501);
    assert_eq!(o.total(), 0);
}

#[test]
fn content_length_with_transfer_encoding_is_refused_and_nothing_is_smuggled() {
    let (o, c) = Cache::with_origin(origin(), "");
    let attack = format!(
        "POST /x HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
    );
    let (r, closed) = exchange(&c, attack.as_bytes());
    assert_eq!(r.len(), 1, "exactly one response");
    assert_eq!(r[0].status, 400);
    assert!(r[0].text().contains("smuggling"), "{}", r[0].text());
    assert!(closed);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(o.total(), 0, "neither request reached the origin");
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (o, c) = Cache::with_origin(origin(), "");
    c.get("/p2"); // cached beforehand: a hit in the middle of misses
    let mut s = TcpStream::connect(c.addr).unwrap();
    let reqs = format!(
        "GET /p1 HTTP/1.1\r\nHost: {HOST}\r\n\r\nGET /p2 HTTP/1.1\r\nHost: {HOST}\r\n\r\nHEAD /p3 HTTP/1.1\r\nHost: {HOST}\r\n\r\nGET /p3 HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(reqs.as_bytes()).unwrap();
    let (data, closed) = read_all(&mut s, Duration::from_secs(10));
    assert!(closed, "Connection: close on the last request");
    let r = parse_responses(&data, &[false, false, true, false]);
    assert_eq!(r.len(), 4);
    assert_eq!(r[0].text(), "body of /p1");
    assert_eq!(
        (r[1].text().as_str(), r[1].x_cache()),
        ("body of /p2", "HIT")
    );
    assert_eq!((r[2].status, r[2].body.len()), (200, 0));
    assert_eq!(r[3].text(), "body of /p3");
    assert_eq!(c.stats()["connections"]["accepted"], 2);
    assert_eq!(o.total(), 3);
}

#[test]
fn nothing_from_one_request_leaks_into_the_next() {
    let (o, c) = Cache::with_origin(
        |r: &OriginReq| {
            OriginResp::ok(
                format!("body of {} ({} bytes in)", r.path, r.body.len()),
                &[("Cache-Control", "max-age=300"), ("ETag", "\"l\"")],
            )
        },
        "",
    );
    c.get("/l");
    // Range, conditionals and a body on the first request; the second is plain.
    let body = format!("GET /evil HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let reqs = format!(
        "GET /l HTTP/1.1\r\nHost: {HOST}\r\nRange: bytes=0-1\r\nIf-None-Match: \"other\"\r\n\r\nPOST /form HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n{body}GET /l HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (r, _) = exchange(&c, reqs.as_bytes());
    assert_eq!(r.len(), 3);
    assert_eq!((r[0].status, r[0].text().as_str()), (206, "bo"));
    assert_eq!(
        r[1].text(),
        format!("body of /form ({} bytes in)", body.len())
    );
    assert_eq!(
        (r[2].status, r[2].text().as_str()),
        (200, "body of /l (0 bytes in)")
    );
    assert_eq!(
        o.count("/evil"),
        0,
        "a request body was never parsed as a request"
    );
    // A refused request ends the connection: what follows it is never served.
    let reqs = format!(
        "GET / HTTP/1.1\r\nHost: {HOST}\r\nX: {}\r\n\r\nGET /after HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
        "a".repeat(20_000)
    );
    let (r, closed) = exchange(&c, reqs.as_bytes());
    assert_eq!((r.len(), r[0].status, closed), (1, 431, true));
    assert_eq!(o.count("/after"), 0);
}

#[test]
fn expect_100_continue_and_http10() {
    let (o, c) = Cache::with_origin(origin(), "");
    let r = c.curl(
        "/up",
        &[
            "-X",
            "PUT",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            "0123456789",
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(o.requests()[0].body, b"0123456789");
    let (r, closed) = exchange(
        &c,
        format!("GET /old HTTP/1.0\r\nHost: {HOST}\r\n\r\n").as_bytes(),
    );
    assert_eq!(
        (r[0].status, r[0].text().as_str(), closed),
        (200, "body of /old", true)
    );
    let mut s = TcpStream::connect(c.addr).unwrap();
    s.write_all(
        format!("GET /old HTTP/1.0\r\nHost: {HOST}\r\nConnection: keep-alive\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let (data, closed) = read_all(&mut s, Duration::from_millis(700));
    let r = parse_responses(&data, &[]);
    assert_eq!(
        (r[0].header("connection"), closed),
        (Some("keep-alive"), false)
    );
}

#[test]
fn a_slow_client_is_timed_out_with_408() {
    let (o, c) = Cache::with_origin(origin(), "head_timeout = \"1s\"\nbody_timeout = \"1s\"\n");
    // A head that never completes, trickled a byte at a time (slowloris): the head
    // timeout counts from its first byte, so trickling does not extend it.
    let mut s = TcpStream::connect(c.addr).unwrap();
    let t0 = Instant::now();
    let head = format!("GET /slow HTTP/1.1\r\nHost: {HOST}\r\n");
    let mut closed_early = false;
    for b in head.as_bytes().iter().cycle().take(40) {
        if s.write_all(&[*b]).is_err() {
            closed_early = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if t0.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    let (data, closed) = read_all(&mut s, Duration::from_secs(5));
    let r = parse_responses(&data, &[]);
    assert!(closed || closed_early);
    assert_eq!(r[0].status, 408, "{}", String::from_utf8_lossy(&data));
    assert!(t0.elapsed() < Duration::from_secs(8));
    // A body that stops arriving.
    let mut s = TcpStream::connect(c.addr).unwrap();
    s.write_all(
        format!("POST /b HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100\r\n\r\n0123456789")
            .as_bytes(),
    )
    .unwrap();
    let (data, closed) = read_all(&mut s, Duration::from_secs(6));
    assert!(closed);
    assert_eq!(parse_responses(&data, &[])[0].status, 408);
    let st = c.stats();
    assert_eq!(st["connections"]["timeouts_head"], 1);
    assert_eq!(st["connections"]["timeouts_body"], 1);
    assert_eq!(o.total(), 0);
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    let (_o, c) = Cache::with_origin(origin(), "idle_timeout = \"1s\"\n");
    let mut s = TcpStream::connect(c.addr).unwrap();
    s.write_all(format!("GET /i HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .unwrap();
    let t0 = Instant::now();
    let (data, closed) = read_all(&mut s, Duration::from_secs(6));
    assert_eq!(parse_responses(&data, &[])[0].status, 200);
    assert!(closed, "closed after the idle timeout");
    assert!(t0.elapsed() >= Duration::from_millis(900));
    assert_eq!(c.stats()["connections"]["timeouts_idle"], 1);
}

#[test]
fn a_client_that_stops_reading_is_disconnected() {
    let demo = DemoOrigin::start(&["127.0.0.1:0".parse().unwrap()]).unwrap();
    let c = Cache::start(&config(
        &[("demo", demo.addrs[0], 1.0)],
        "send_timeout = \"1s\"\n",
    ));
    // 16 MiB is far more than the socket buffers hold; the client reads nothing.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&c.addr.into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.write_all(format!("GET /obj/16m HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .unwrap();
    assert!(
        eventually(
            Duration::from_secs(20),
            || c.stats()["connections"]["timeouts_send"] == 1
        ),
        "{}",
        c.stats()
    );
    // What the client can still read ends short of the body.
    let (data, _) = read_all(&mut s, Duration::from_secs(5));
    assert!(
        data.len() < (16 << 20),
        "the server gave up on the slow reader"
    );
    // The cache itself is fine, and the connection's slot was freed.
    assert_eq!(c.get("/obj/1k").body, body_of_path("/obj/1k"));
    drop(s);
    assert!(
        eventually(Duration::from_secs(5), || c.stats()["connections"]["open"]
            == 0),
        "{}",
        c.stats()
    );
}

#[test]
fn connections_beyond_the_maximum_get_503() {
    let (_o, c) = Cache::with_origin(origin(), "max_connections = 3\n");
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(c.addr).unwrap())
        .collect();
    assert!(eventually(
        Duration::from_secs(5),
        || c.stats()["connections"]["open"] == 3
    ));
    let (data, closed) = raw(
        c.addr,
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    );
    let r = parse_responses(&data, &[]);
    assert_eq!((r[0].status, closed), (503, true));
    assert!(r[0].text().contains("too many connections"));
    drop(held);
    assert!(eventually(Duration::from_secs(5), || c.get("/ok").status == 200));
    assert_eq!(c.stats()["connections"]["refused"], 1);
    assert!(eventually(
        Duration::from_secs(5),
        || c.stats()["connections"]["open"] == 0
    ));
}

#[test]
fn a_client_that_pipelines_without_reading_gets_every_response_later() {
    let (o, c) = Cache::with_origin(
        |_| OriginResp::ok(vec![b'r'; 16 * 1024], &[("Cache-Control", "max-age=300")]),
        "",
    );
    c.get("/r");
    let mut s = TcpStream::connect(c.addr).unwrap();
    let one = format!("GET /r HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let n = 400;
    let all: String = one.repeat(n - 1)
        + &format!("GET /r HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    let w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut w = w;
        w.write_all(all.as_bytes()).unwrap();
    });
    std::thread::sleep(Duration::from_millis(1000));
    let mut data = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.read_to_end(&mut data).unwrap();
    writer.join().unwrap();
    let r = parse_responses(&data, &[]);
    assert_eq!(r.len(), n);
    assert!(
        r.iter()
            .all(|r| r.status == 200 && r.body.len() == 16 * 1024)
    );
    assert_eq!(o.total(), 1);
}
