//! The admin listener through curl: purge (URL, prefix, customer), stats, object metadata, the token; and the access log.

mod common;

use std::time::Duration;

use common::*;

fn origin() -> impl Fn(&OriginReq) -> OriginResp + Send + Sync + 'static {
    |r: &OriginReq| {
        OriginResp::ok(
            format!("body {}", r.path),
            &[("Cache-Control", "max-age=300"), ("ETag", "\"p\"")],
        )
    }
}

#[test]
fn purge_one_url_a_prefix_or_a_customer() {
    let (o, c) = Cache::with_origin(origin(), "");
    for p in ["/a/1", "/a/2", "/b/1", "/b/2?q=1"] {
        assert_eq!(c.get(p).x_cache(), "MISS");
        assert_eq!(c.get(p).x_cache(), "HIT");
    }
    let (s, b) = c.purge(r#"{"url":"http://cdn.acme.example/a/1"}"#, None);
    assert_eq!((s, b.contains("\"purged\": 1")), (200, true), "{b}");
    assert_eq!(c.get("/a/1").x_cache(), "MISS");
    assert_eq!(c.get("/a/2").x_cache(), "HIT");
    let (s, b) = c.purge(r#"{"prefix":"http://cdn.acme.example/b/"}"#, None);
    assert_eq!((s, b.contains("\"purged\": 2")), (200, true), "{b}");
    assert_eq!(c.get("/b/1").x_cache(), "MISS");
    assert_eq!(c.get("/b/2?q=1").x_cache(), "MISS");
    assert_eq!(c.get("/a/2").x_cache(), "HIT");
    let (s, b) = c.purge(r#"{"customer":"acme"}"#, None);
    assert_eq!(s, 200, "{b}");
    for p in ["/a/1", "/a/2", "/b/1"] {
        assert_eq!(c.get(p).x_cache(), "MISS", "{p}");
    }
    assert_eq!(o.count("/a/2"), 2);
    // Bad purges are explained.
    let (s, b) = c.purge(r#"{"customer":"nobody"}"#, None);
    assert_eq!(s, 404, "{b}");
    let (s, b) = c.purge(r#"{"url":"ftp://x/y"}"#, None);
    assert_eq!(s, 400, "{b}");
    let (s, b) = c.purge("not json", None);
    assert_eq!(s, 400);
    assert!(b.contains("\"prefix\""), "{b}");
}

#[test]
fn a_purge_during_a_fetch_keeps_the_old_response_out() {
    let (o, c) = Cache::with_origin(
        |r| {
            OriginResp::ok(
                format!("body {}", r.path),
                &[("Cache-Control", "max-age=300")],
            )
            .delay(Duration::from_millis(1500))
        },
        "",
    );
    let addr = c.addr;
    let t = std::thread::spawn(move || curl(addr, HOST, "/slow", &[]));
    // Purge while the origin is answering.
    assert!(eventually(Duration::from_secs(10), || o.count("/slow") == 1));
    let (s, _) = c.purge(r#"{"url":"http://cdn.acme.example/slow"}"#, None);
    assert_eq!(s, 200);
    assert_eq!(t.join().unwrap().status, 200);
    assert_eq!(c.get("/slow").x_cache(), "MISS");
    assert_eq!(o.count("/slow"), 2);
}

#[test]
fn stats_and_object_metadata() {
    let (_o, c) = Cache::with_origin(origin(), "");
    c.get("/m");
    c.get("/m");
    c.get("/m");
    let s = c.stats();
    assert_eq!(s["pop"], "t");
    assert_eq!(s["requests"]["requests"], 3);
    assert_eq!(s["requests"]["misses"], 1);
    assert_eq!(s["requests"]["hits"], 2);
    assert_eq!(s["tiers"][0]["tier"], "ram");
    assert_eq!(s["tiers"][0]["eviction"], "s3-fifo");
    assert_eq!(s["tiers"][0]["objects"], 1);
    assert!(s["requests"]["bytes_out"].as_u64().unwrap() > 0);
    let m = c.admin_json("/object?url=http%3A%2F%2Fcdn.acme.example%2Fm");
    let obj = &m["objects"][0];
    assert_eq!(obj["tier"], "ram");
    assert_eq!(obj["size"], 7);
    assert_eq!(obj["hits"], 2);
    assert_eq!(obj["status"], 200);
    assert_eq!(obj["fresh"], true);
    assert_eq!(obj["lifetime_s"], 300);
    assert_eq!(obj["etag"], "\"p\"");
    assert!(obj["age_s"].as_u64().unwrap() <= 5);
    let (st, _) = c.admin_get("/object?url=http://cdn.acme.example/none");
    assert_eq!(st, 404);
}

#[test]
fn the_admin_token_is_required_when_configured() {
    let token = "00112233445566778899aabbccddeeff";
    let (_o, c) = Cache::with_origin(origin(), &format!("admin_token = \"{token}\"\n"));
    c.get("/t");
    let (s, _) = c.admin_get("/stats");
    assert_eq!(s, 401);
    let (s, _) = c.purge(r#"{"url":"http://cdn.acme.example/t"}"#, None);
    assert_eq!(s, 401);
    assert_eq!(
        c.get("/t").x_cache(),
        "HIT",
        "an unauthenticated purge did nothing"
    );
    let (s, _) = c.purge(r#"{"url":"http://cdn.acme.example/t"}"#, Some(token));
    assert_eq!(s, 200);
    assert_eq!(c.get("/t").x_cache(), "MISS");
    let auth = format!("Authorization: Bearer {token}");
    let r = curl_url(&format!("http://{}/stats", c.admin), &["-H", &auth]);
    assert_eq!(r.status, 200);
}

#[test]
fn the_access_log_has_one_record_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let (_o, c) = Cache::with_origin(origin(), &format!("access_log = \"{}\"\n", log.display()));
    c.get("/l");
    c.get("/l");
    curl(c.addr, "nobody.example", "/x", &[]);
    let mut s = std::net::TcpStream::connect(c.addr).unwrap();
    use std::io::Write;
    s.write_all(b"BAD\r\n\r\n").unwrap();
    read_all(&mut s, Duration::from_secs(5));
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(5), || lines().len() == 4),
        "{:?}",
        lines()
    );
    // Workers write their own batches: find the records by content, not by order.
    let l = lines();
    let find = |f: &dyn Fn(&serde_json::Value) -> bool| l.iter().find(|r| f(r)).cloned().unwrap();
    let miss = find(&|r| r["path"] == "/l" && r["cache"] == "MISS");
    assert_eq!(miss["customer"], "acme");
    assert_eq!(miss["pop"], "t");
    assert_eq!(miss["status"], 200);
    assert_eq!(miss["method"], "GET");
    assert_eq!(miss["host"], "cdn.acme.example");
    assert_eq!(miss["origin"], "o1");
    assert!(miss["bytes"].as_u64().unwrap() > 7);
    assert!(miss["origin_us"].as_u64().is_some());
    assert!(miss["total_us"].as_u64().unwrap() >= miss["ttfb_us"].as_u64().unwrap());
    let hit = find(&|r| r["path"] == "/l" && r["cache"] == "HIT");
    assert_eq!(hit["origin"], serde_json::Value::Null);
    let unknown = find(&|r| r["status"] == 421);
    assert_eq!(
        (unknown["customer"].as_str(), unknown["cache"].as_str()),
        (Some("-"), Some("ERROR"))
    );
    assert_eq!(find(&|r| r["status"] == 400)["method"], "-");
}
