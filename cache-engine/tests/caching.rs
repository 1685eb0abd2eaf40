//! Caching behaviour through curl against a real origin: hits, misses, freshness, revalidation, HEAD, ranges, Vary, invalidation.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;

fn cacheable(body: &str) -> OriginResp {
    OriginResp::ok(body, &[("Cache-Control", "max-age=60"), ("ETag", "\"e1\"")])
}

#[test]
fn miss_then_hit_with_age_via_and_one_origin_request() {
    let (o, c) = Cache::with_origin(|_| cacheable("hello world\n"), "");
    let a = c.get("/a.txt");
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), "hello world\n");
    assert_eq!(a.x_cache(), "MISS");
    assert_eq!(a.header("via"), Some("1.1 t (popnet)"));
    let b = c.get("/a.txt");
    assert_eq!(b.status, 200);
    assert_eq!(b.x_cache(), "HIT");
    assert_eq!(b.text(), "hello world\n");
    assert!(b.header("age").is_some());
    assert_eq!(b.header("etag"), Some("\"e1\""));
    assert_eq!(o.count("/a.txt"), 1);
    // The query is part of the key; the host's case and port are not.
    assert_eq!(c.get("/a.txt?v=2").x_cache(), "MISS");
    let other_case = curl(c.addr, "CDN.Acme.Example:8080", "/a.txt", &[]);
    assert_eq!(other_case.x_cache(), "HIT");
    // A CNAME of the static domain is served as the same customer.
    assert_eq!(curl(c.addr, "img.acme.example", "/i.png", &[]).status, 200);
    assert_eq!(o.total(), 3);
}

#[test]
fn hop_by_hop_fields_are_stripped_and_forwarded_request_is_clean() {
    let (o, c) = Cache::with_origin(
        |_| {
            OriginResp::ok(
                "x",
                &[
                    ("Cache-Control", "max-age=60"),
                    ("Connection", "X-Secret"),
                    ("X-Secret", "hop"),
                    ("Keep-Alive", "timeout=5"),
                    ("X-Kept", "end-to-end"),
                ],
            )
        },
        "",
    );
    let r = c.curl(
        "/h",
        &[
            "-H",
            "Connection: X-Client-Hop",
            "-H",
            "X-Client-Hop: 1",
            "-H",
            "X-E2E: 2",
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-secret"), None);
    assert_eq!(r.header("keep-alive"), None);
    assert_eq!(r.header("x-kept"), Some("end-to-end"));
    let seen = &o.requests()[0];
    assert_eq!(seen.header("host"), Some(HOST));
    assert_eq!(seen.header("x-client-hop"), None);
    assert_eq!(seen.header("x-e2e"), Some("2"));
    assert_eq!(seen.header("via"), Some("1.1 t (popnet)"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
}

#[test]
fn freshness_directives_decide_what_is_stored() {
    let (o, c) = Cache::with_origin(
        |r| {
            let cc = match r.path.as_str() {
                "/no-store" => "no-store",
                "/private" => "private, max-age=60",
                "/s-maxage" => "max-age=0, s-maxage=60",
                "/zero" => "max-age=0",
                _ => "max-age=60",
            };
            OriginResp::ok(format!("body of {}", r.path), &[("Cache-Control", cc)])
        },
        "",
    );
    for (path, second) in [
        ("/no-store", "PASS"),
        ("/private", "PASS"),
        ("/s-maxage", "HIT"),
        ("/plain", "HIT"),
    ] {
        let first = c.get(path);
        assert_eq!(first.status, 200, "{path}");
        assert_eq!(first.text(), format!("body of {path}"));
        let again = c.get(path);
        assert_eq!(again.x_cache(), second, "{path}");
        assert_eq!(again.text(), format!("body of {path}"));
    }
    assert_eq!(o.count("/no-store"), 2);
    assert_eq!(o.count("/private"), 2);
    assert_eq!(o.count("/s-maxage"), 1);
    assert_eq!(o.count("/plain"), 1);
    // max-age=0 without a validator is not worth storing.
    c.get("/zero");
    c.get("/zero");
    assert_eq!(o.count("/zero"), 2);
}

#[test]
fn expires_age_and_heuristic_freshness() {
    let now = std::time::SystemTime::now();
    let date = httpdate::fmt_http_date(now);
    let expires = httpdate::fmt_http_date(now + Duration::from_secs(60));
    let past = httpdate::fmt_http_date(now - Duration::from_secs(3600));
    let lm = httpdate::fmt_http_date(now - Duration::from_secs(1000));
    let (o, c) = Cache::with_origin(
        move |r| match r.path.as_str() {
            "/expires" => OriginResp::ok("e", &[("Date", &date), ("Expires", &expires)]),
            "/expired" => OriginResp::ok(
                "x",
                &[("Date", &date), ("Expires", &past), ("ETag", "\"x\"")],
            ),
            // Already 60 s old upstream with a 60 s lifetime: stale on arrival.
            "/aged" => OriginResp::ok(
                "a",
                &[
                    ("Date", &date),
                    ("Cache-Control", "max-age=60"),
                    ("Age", "60"),
                    ("ETag", "\"a\""),
                ],
            ),
            // No explicit freshness: 10 % of the time since Last-Modified.
            "/heuristic" => OriginResp::ok("h", &[("Date", &date), ("Last-Modified", &lm)]),
            _ => OriginResp::ok("n", &[("Date", &date)]).status(302),
        },
        "",
    );
    for p in ["/expires", "/expired", "/aged", "/heuristic"] {
        assert_eq!(c.get(p).x_cache(), "MISS", "{p}");
    }
    // A 302 without explicit freshness is not storable: passed.
    assert_eq!(c.get("/redirect").x_cache(), "PASS");
    assert_eq!(c.get("/expires").x_cache(), "HIT");
    assert_eq!(c.get("/heuristic").x_cache(), "HIT");
    assert_ne!(c.get("/expired").x_cache(), "HIT");
    let aged = c.get("/aged");
    assert_ne!(aged.x_cache(), "HIT");
    assert_ne!(c.get("/redirect").x_cache(), "HIT");
    assert_eq!(o.count("/expires"), 1);
    assert_eq!(o.count("/heuristic"), 1);
    assert_eq!(o.count("/expired"), 2);
    assert_eq!(o.count("/aged"), 2);
    assert_eq!(o.count("/redirect"), 2);
    let meta = c.admin_json("/object?url=http://cdn.acme.example/heuristic");
    let lifetime = meta["objects"][0]["lifetime_s"].as_u64().unwrap();
    // 10 % of the 1000 s since Last-Modified.
    assert!((99..=101).contains(&lifetime), "{lifetime}");
}

#[test]
fn stale_objects_are_revalidated_and_304_updates_stored_headers() {
    let version = Arc::new(AtomicU32::new(1));
    let v = version.clone();
    let (o, c) = Cache::with_origin(
        move |r| {
            let n = v.load(Ordering::SeqCst);
            let tag = "\"t1\"";
            if r.header("if-none-match") == Some(tag) {
                let mut resp = OriginResp::ok("", &[("Cache-Control", "max-age=1"), ("ETag", tag)]);
                resp.headers.push(("X-Version".into(), n.to_string()));
                return resp.status(304);
            }
            let mut resp =
                OriginResp::ok("the body", &[("Cache-Control", "max-age=1"), ("ETag", tag)]);
            resp.headers.push(("X-Version".into(), n.to_string()));
            resp
        },
        "",
    );
    let a = c.get("/r");
    assert_eq!((a.x_cache(), a.header("x-version")), ("MISS", Some("1")));
    assert_eq!(c.get("/r").x_cache(), "HIT");
    version.store(2, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(2100));
    let b = c.get("/r");
    assert_eq!(b.status, 200);
    assert_eq!(b.x_cache(), "REVALIDATED");
    assert_eq!(b.text(), "the body");
    assert_eq!(
        b.header("x-version"),
        Some("2"),
        "the 304's fields replace the stored ones"
    );
    let h = c.get("/r");
    assert_eq!(h.x_cache(), "HIT");
    assert_eq!(h.header("x-version"), Some("2"));
    let reqs = o.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].header("if-none-match"), None);
    assert_eq!(reqs[1].header("if-none-match"), Some("\"t1\""));
}

#[test]
fn no_cache_revalidates_every_time_and_client_conditionals_get_304() {
    let (o, c) = Cache::with_origin(
        |r| {
            let lm = "Mon, 01 Jan 2024 00:00:00 GMT";
            if r.path == "/nc" && r.header("if-none-match") == Some("\"n\"") {
                return OriginResp::ok("", &[("ETag", "\"n\""), ("Cache-Control", "no-cache")])
                    .status(304);
            }
            OriginResp::ok(
                "content",
                &[
                    ("ETag", "\"n\""),
                    ("Cache-Control", "no-cache, max-age=60"),
                    ("Last-Modified", lm),
                ],
            )
        },
        "",
    );
    assert_eq!(c.get("/nc").x_cache(), "MISS");
    assert_eq!(c.get("/nc").x_cache(), "REVALIDATED");
    assert_eq!(o.count("/nc"), 2);
    let cond = c.curl("/nc", &["-H", "If-None-Match: \"n\""]);
    assert_eq!(cond.status, 304);
    assert!(cond.body.is_empty());
    let ims = c.curl(
        "/nc",
        &["-H", "If-Modified-Since: Tue, 02 Jan 2024 00:00:00 GMT"],
    );
    assert_eq!(ims.status, 304);
    let older = c.curl(
        "/nc",
        &["-H", "If-Modified-Since: Sun, 31 Dec 2023 00:00:00 GMT"],
    );
    assert_eq!(older.status, 200);
    assert_eq!(older.text(), "content");
}

#[test]
fn head_is_served_from_the_cache_without_a_body() {
    let (o, c) = Cache::with_origin(|_| cacheable("0123456789"), "");
    let h = c.curl("/h", &["-I"]);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some("10"));
    // (curl -I writes the head where the body would go: no body bytes follow it.)
    assert!(!h.text().contains("0123456789"));
    // The HEAD miss filled the cache with a GET.
    assert_eq!(o.requests()[0].method, "GET");
    let g = c.get("/h");
    assert_eq!((g.x_cache(), g.text().as_str()), ("HIT", "0123456789"));
    let h2 = c.curl("/h", &["-I"]);
    assert_eq!(
        (h2.x_cache(), h2.header("content-length")),
        ("HIT", Some("10"))
    );
    assert_eq!(o.total(), 1);
}

#[test]
fn single_ranges_from_cached_objects_206_and_416() {
    let body: String = (0..1000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let b2 = body.clone();
    let (o, c) = Cache::with_origin(move |_| cacheable(&b2), "");
    // A range on a miss: fetched whole, answered partially.
    let m = c.curl("/r", &["-r", "10-19"]);
    assert_eq!(m.status, 206);
    assert_eq!(m.text(), &body[10..20]);
    assert_eq!(m.header("content-range"), Some("bytes 10-19/1000"));
    assert!(o.requests()[0].header("range").is_none());
    let h = c.curl("/r", &["-r", "990-"]);
    assert_eq!((h.status, h.x_cache()), (206, "HIT"));
    assert_eq!(h.text(), &body[990..]);
    let suffix = c.curl("/r", &["-r", "-5"]);
    assert_eq!(suffix.text(), &body[995..]);
    assert_eq!(suffix.header("content-range"), Some("bytes 995-999/1000"));
    let bad = c.curl("/r", &["-r", "5000-"]);
    assert_eq!(bad.status, 416);
    assert_eq!(bad.header("content-range"), Some("bytes */1000"));
    // Several ranges: the whole object (allowed by RFC 9110 §14.2).
    let multi = c.curl("/r", &["-r", "0-1,5-6"]);
    assert_eq!((multi.status, multi.body.len()), (200, 1000));
    // If-Range with another validator: the whole object.
    let ir = c.curl("/r", &["-r", "0-9", "-H", "If-Range: \"other\""]);
    assert_eq!((ir.status, ir.body.len()), (200, 1000));
    let ir_ok = c.curl("/r", &["-r", "0-9", "-H", "If-Range: \"e1\""]);
    assert_eq!(ir_ok.status, 206);
    assert_eq!(o.total(), 1);
}

#[test]
fn vary_keeps_one_variant_per_request_header_value() {
    let (o, c) = Cache::with_origin(
        |r| {
            let enc = r.header("accept-encoding").unwrap_or("none").to_string();
            OriginResp::ok(
                format!("for {enc}"),
                &[("Cache-Control", "max-age=60"), ("Vary", "Accept-Encoding")],
            )
        },
        "",
    );
    let g1 = c.curl("/v", &["-H", "Accept-Encoding: gzip"]);
    assert_eq!((g1.x_cache(), g1.text().as_str()), ("MISS", "for gzip"));
    let b1 = c.curl("/v", &["-H", "Accept-Encoding: br"]);
    assert_eq!((b1.x_cache(), b1.text().as_str()), ("MISS", "for br"));
    let g2 = c.curl("/v", &["-H", "Accept-Encoding: gzip"]);
    assert_eq!((g2.x_cache(), g2.text().as_str()), ("HIT", "for gzip"));
    let b2 = c.curl("/v", &["-H", "Accept-Encoding: br"]);
    assert_eq!((b2.x_cache(), b2.text().as_str()), ("HIT", "for br"));
    assert_eq!(o.count("/v"), 2);
    let meta = c.admin_json("/object?url=http://cdn.acme.example/v");
    assert_eq!(meta["objects"].as_array().unwrap().len(), 2);
}

#[test]
fn unsafe_methods_are_passed_with_their_body_and_invalidate() {
    let (o, c) = Cache::with_origin(
        |r| match r.method.as_str() {
            "GET" => cacheable("cached"),
            _ => OriginResp::ok(
                format!("got {} bytes", r.body.len()),
                &[("Location", "/other")],
            )
            .status(201),
        },
        "",
    );
    assert_eq!(c.get("/item").x_cache(), "MISS");
    assert_eq!(c.get("/other").x_cache(), "MISS");
    assert_eq!(c.get("/item").x_cache(), "HIT");
    let p = c.curl("/item", &["-X", "POST", "--data-binary", "0123456789"]);
    assert_eq!((p.status, p.text().as_str()), (201, "got 10 bytes"));
    assert_eq!(p.x_cache(), "PASS");
    let post = o
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(post.body, b"0123456789");
    assert_eq!(
        c.get("/item").x_cache(),
        "MISS",
        "the POST invalidated the target"
    );
    assert_eq!(c.get("/other").x_cache(), "MISS", "and its Location");
    // A chunked request body is de-chunked for the origin.
    let big = "z".repeat(5000);
    let d = c.curl(
        "/item",
        &[
            "-X",
            "PUT",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &big,
        ],
    );
    assert_eq!((d.status, d.text()), (201, "got 5000 bytes".to_string()));
    // Too large a body is refused with 413 before anything reaches the origin.
    let before = o.total();
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge");
    std::fs::write(&huge, vec![b'y'; 2 << 20]).unwrap();
    let arg = format!("@{}", huge.display());
    let t = c.curl("/item", &["-X", "POST", "--data-binary", &arg]);
    assert_eq!(t.status, 413);
    assert_eq!(o.total(), before);
}

#[test]
fn unknown_and_dynamic_hosts_get_a_clear_error_and_no_fetch() {
    let (o, c) = Cache::with_origin(|_| cacheable("x"), "");
    let u = curl(c.addr, "unknown.example", "/x", &[]);
    assert_eq!(u.status, 421);
    assert!(
        u.text()
            .contains("no customer of this network serves host \"unknown.example\""),
        "{}",
        u.text()
    );
    let d = curl(c.addr, "www.acme.example", "/x", &[]);
    assert_eq!(d.status, 421);
    assert!(d.text().contains("dynamic name"), "{}", d.text());
    assert_eq!(o.total(), 0);
}

#[test]
fn large_bodies_stream_to_the_client_while_they_arrive() {
    let gate = Arc::new(Gate::default());
    let g = gate.clone();
    let body: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    let b2 = body.clone();
    let (_o, c) = Cache::with_origin(
        move |_| {
            let mut r = OriginResp::ok(b2.clone(), &[("Cache-Control", "max-age=60")]);
            r.gate = Some((1 << 20, g.clone()));
            r
        },
        "",
    );
    // Read the first MiB while the origin holds back the rest: only possible if the
    // cache streams (a store-then-forward cache would deadlock here).
    let mut s = std::net::TcpStream::connect(c.addr).unwrap();
    use std::io::{Read, Write};
    s.write_all(format!("GET /big HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let head_end = loop {
        let n = s
            .read(&mut buf)
            .expect("first bytes before the origin finished");
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
        if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n")
            && got.len() >= p + 4 + (1 << 20)
        {
            break p + 4;
        }
    };
    assert_eq!(&got[head_end..head_end + (1 << 20)], &body[..1 << 20]);
    gate.open();
    let (rest, _) = read_all(&mut s, Duration::from_secs(20));
    got.extend_from_slice(&rest);
    let resp = parse_responses(&got, &[]);
    assert_eq!(resp[0].status, 200);
    assert_eq!(resp[0].body.len(), body.len());
    assert!(resp[0].body == body);
    // And it was stored whole.
    let h = c.get("/big");
    assert_eq!(h.x_cache(), "HIT");
    assert!(h.body == body);
}

#[test]
fn chunked_origin_bodies_are_stored_and_served_with_length() {
    let (_o, c) = Cache::with_origin(
        |_| {
            let mut r = OriginResp::ok(vec![b'q'; 100_000], &[("Cache-Control", "max-age=60")]);
            r.chunked = true;
            r
        },
        "",
    );
    let a = c.get("/c");
    assert_eq!((a.status, a.body.len()), (200, 100_000));
    let b = c.get("/c");
    assert_eq!(b.x_cache(), "HIT");
    assert_eq!(b.header("content-length"), Some("100000"));
}
