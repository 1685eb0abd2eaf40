//! Origin fetches through real sockets: coalescing, stale-while-revalidate, stale-if-error, failover, timeouts.

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_hundred_concurrent_misses_cause_exactly_one_origin_request() {
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 256) as u8).collect();
    let b2 = body.clone();
    let (o, c) = Cache::with_origin(
        move |_| {
            OriginResp::ok(b2.clone(), &[("Cache-Control", "max-age=60")])
                .delay(Duration::from_millis(700))
        },
        "",
    );
    let addr = c.addr;
    let barrier = Arc::new(Barrier::new(100));
    let threads: Vec<_> = (0..100)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let (data, _) = raw(
                    addr,
                    format!("GET /hot HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                    Duration::from_secs(30),
                );
                parse_responses(&data, &[]).pop().expect("a response")
            })
        })
        .collect();
    let resps: Vec<Resp> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(o.count("/hot"), 1, "exactly one origin request");
    for r in &resps {
        assert_eq!(r.status, 200);
        assert!(r.body == body, "every client got the whole body");
    }
    let misses = resps.iter().filter(|r| r.x_cache() == "MISS").count();
    assert!(misses >= 1);
    let stats = c.stats();
    assert_eq!(stats["origin"]["requests"], 1);
    assert!(stats["requests"]["coalesced"].as_u64().unwrap() >= 1);
}

#[test]
fn waiters_do_not_share_a_private_response() {
    let (o, c) = Cache::with_origin(
        |r| {
            let who = r.header("x-user").unwrap_or("?").to_string();
            OriginResp::ok(format!("for {who}"), &[("Cache-Control", "private")])
                .delay(Duration::from_millis(500))
        },
        "",
    );
    let addr = c.addr;
    let barrier = Arc::new(Barrier::new(5));
    let threads: Vec<_> = (0..5)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let r = curl(addr, HOST, "/me", &["-H", &format!("X-User: u{i}")]);
                (i, r)
            })
        })
        .collect();
    for t in threads {
        let (i, r) = t.join().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.text(),
            format!("for u{i}"),
            "a private response went to another client"
        );
    }
    assert_eq!(o.count("/me"), 5);
}

#[test]
fn stale_while_revalidate_answers_at_once_and_refreshes_in_the_background() {
    let n = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let n2 = n.clone();
    let (o, c) = Cache::with_origin(
        move |_| {
            let v = n2.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let delay = if v > 1 {
                Duration::from_secs(4)
            } else {
                Duration::ZERO
            };
            let cc = if v > 1 {
                "max-age=60"
            } else {
                "max-age=1, stale-while-revalidate=60"
            };
            OriginResp::ok(format!("v{v}"), &[("Cache-Control", cc)]).delay(delay)
        },
        "",
    );
    assert_eq!(c.get("/s").text(), "v1");
    std::thread::sleep(Duration::from_millis(2100));
    let t0 = Instant::now();
    let s = c.get("/s");
    assert_eq!((s.x_cache(), s.text().as_str()), ("STALE", "v1"));
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "did not wait for the slow origin"
    );
    assert!(eventually(Duration::from_secs(10), || c.get("/s").text() == "v2"));
    assert_eq!(c.get("/s").x_cache(), "HIT");
    assert_eq!(o.count("/s"), 2);
}

#[test]
fn stale_if_error_serves_stale_when_the_origin_dies_and_must_revalidate_does_not() {
    let (mut o, c) = Cache::with_origin(
        |r| {
            let cc = if r.path == "/strict" {
                "max-age=1, must-revalidate, stale-if-error=60"
            } else if r.path == "/plain" {
                "max-age=1"
            } else {
                "max-age=1, stale-if-error=60"
            };
            OriginResp::ok(
                format!("was {}", r.path),
                &[("Cache-Control", cc), ("ETag", "\"z\"")],
            )
        },
        "",
    );
    for p in ["/soft", "/strict", "/plain"] {
        assert_eq!(c.get(p).status, 200);
    }
    o.kill();
    std::thread::sleep(Duration::from_millis(2100));
    let soft = c.get("/soft");
    assert_eq!(
        (soft.status, soft.x_cache(), soft.text().as_str()),
        (200, "STALE", "was /soft")
    );
    let strict = c.get("/strict");
    assert_eq!(
        strict.status,
        502,
        "must-revalidate forbids stale: {}",
        strict.text()
    );
    let plain = c.get("/plain");
    assert_eq!(plain.status, 502);
    assert!(
        plain.text().contains("no origin could be reached"),
        "{}",
        plain.text()
    );
}

#[test]
fn stale_if_error_also_covers_origin_5xx() {
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f2 = fail.clone();
    let (_o, c) = Cache::with_origin(
        move |_| {
            if f2.load(std::sync::atomic::Ordering::SeqCst) {
                OriginResp::ok("boom", &[]).status(503)
            } else {
                OriginResp::ok(
                    "good",
                    &[
                        ("Cache-Control", "max-age=1, stale-if-error=60"),
                        ("ETag", "\"g\""),
                    ],
                )
            }
        },
        "",
    );
    assert_eq!(c.get("/x").text(), "good");
    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(2100));
    let r = c.get("/x");
    assert_eq!(
        (r.status, r.x_cache(), r.text().as_str()),
        (200, "STALE", "good")
    );
}

#[test]
fn a_connect_failure_tries_the_next_origin() {
    // A port nobody listens on, ranked first (cheaper).
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let o = TestOrigin::start(|_| {
        OriginResp::ok("from the live one", &[("Cache-Control", "max-age=60")])
    });
    let c = Cache::start(&config(&[("dead", dead, 0.5), ("live", o.addr, 1.0)], ""));
    let r = c.get("/f");
    assert_eq!((r.status, r.text().as_str()), (200, "from the live one"));
    let s = c.stats();
    assert!(s["origin"]["connect_failures"].as_u64().unwrap() >= 1);
    // The dead address is now ranked last: the next miss goes straight to the live one.
    let before = s["origin"]["connect_failures"].as_u64().unwrap();
    assert_eq!(c.get("/g").status, 200);
    assert_eq!(
        c.stats()["origin"]["connect_failures"].as_u64().unwrap(),
        before
    );
}

#[test]
fn no_origin_reachable_is_a_clear_502() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let c = Cache::start(&config(&[("dead", dead, 1.0)], ""));
    let r = c.get("/x");
    assert_eq!(r.status, 502);
    assert_eq!(r.x_cache(), "ERROR");
    assert!(r.text().contains("dead"), "{}", r.text());
}

#[test]
fn an_origin_that_does_not_answer_in_time_gives_504() {
    let (o, c) = Cache::with_origin(
        |_| {
            let mut r = OriginResp::ok("", &[]);
            r.hang = true;
            r
        },
        "origin_timeout = \"1s\"\n",
    );
    let t0 = Instant::now();
    let r = c.get("/slow");
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(c.stats()["origin"]["timeouts"], 1);
    drop(o);
}

#[test]
fn origin_connections_are_reused() {
    let (o, c) = Cache::with_origin(
        |_| OriginResp::ok("k", &[("Cache-Control", "no-store")]),
        "",
    );
    for i in 0..5 {
        assert_eq!(c.get(&format!("/k{i}")).status, 200);
    }
    assert_eq!(o.total(), 5);
    assert!(c.stats()["origin"]["reused_connections"].as_u64().unwrap() >= 3);
}
