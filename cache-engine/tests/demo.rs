//! The demo origin, the demo config, start-up errors, keep-alive, and the RAM tier's byte bound and scan resistance through curl.

mod common;

use cache_engine::demo_origin::{DemoOrigin, body_of_path, etag_of_path};
use cache_engine::{CacheOptions, CacheServer, StartError};
use common::*;
use popnet_config::Config;

#[test]
fn the_demo_origin_serves_sized_bodies_with_validators() {
    let d = DemoOrigin::start(&[
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    ])
    .unwrap();
    let url = format!("http://{}/obj/1k", d.addrs[0]);
    let r = curl_url(&url, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 1024);
    assert_eq!(r.body, body_of_path("/obj/1k"));
    assert_eq!(r.header("etag"), Some(etag_of_path("/obj/1k").as_str()));
    assert_eq!(r.header("cache-control"), Some("public, max-age=60"));
    assert_eq!(r.header("x-origin"), Some(d.addrs[0].to_string().as_str()));
    assert!(r.header("last-modified").is_some());
    let inm = format!("If-None-Match: {}", etag_of_path("/obj/1k"));
    assert_eq!(curl_url(&url, &["-H", &inm]).status, 304);
    let m = curl_url(&format!("http://{}/obj/1m?max-age=5", d.addrs[1]), &[]);
    assert_eq!(
        (m.body.len(), m.header("cache-control")),
        (1 << 20, Some("public, max-age=5"))
    );
    assert_eq!(d.requests(), 3);

    // Through the cache.
    let c = Cache::start(&config(&[("demo", d.addrs[0], 1.0)], ""));
    let a = c.get("/obj/64k");
    assert_eq!((a.x_cache(), a.body.len()), ("MISS", 65536));
    let b = c.get("/obj/64k");
    assert_eq!(b.x_cache(), "HIT");
    assert_eq!(b.body, body_of_path("/obj/64k"));
    assert_eq!(d.requests(), 4);
}

#[test]
fn the_demo_config_routes_its_static_name_and_refuses_the_dynamic_one() {
    let cfg = Config::demo();
    let svc = cfg.pops[0].cache.as_ref().unwrap();
    assert_eq!(svc.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
    let s = CacheServer::start(
        &cfg,
        &CacheOptions {
            listen: Some(vec!["127.0.0.1:0".parse().unwrap()]),
            admin: Some("127.0.0.1:0".parse().unwrap()),
            workers: Some(1),
            ..CacheOptions::default()
        },
    )
    .unwrap();
    assert_eq!(s.pop, "local");
    let dynamic = curl(s.listen[0], "www.demo.example", "/", &[]);
    assert_eq!(dynamic.status, 421);
    let stat = curl(
        s.listen[0],
        "static.demo.example",
        "/obj/1k",
        &["--max-time", "10"],
    );
    assert_ne!(stat.status, 421, "static.demo.example is routed");
    assert_ne!(stat.status, 0);
    s.stop();
}

#[test]
fn a_taken_port_is_a_bind_error_that_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = config(&[("o", "127.0.0.1:9".parse().unwrap(), 1.0)], "");
    let e = CacheServer::start(
        &cfg,
        &CacheOptions {
            listen: Some(vec![addr]),
            ..CacheOptions::default()
        },
    )
    .err()
    .expect("the port is taken");
    assert!(matches!(e, StartError::Bind { addr: a, .. } if a == addr));
    let msg = e.to_string();
    assert!(
        msg.contains(&addr.to_string()) && msg.contains("another process holds it"),
        "{msg}"
    );
    let e = CacheServer::start(
        &cfg,
        &CacheOptions {
            pop: Some("nowhere".into()),
            ..CacheOptions::default()
        },
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("no POP is named \"nowhere\""), "{e}");
}

#[test]
fn curl_reuses_one_keep_alive_connection() {
    let d = DemoOrigin::start(&["127.0.0.1:0".parse().unwrap()]).unwrap();
    let c = Cache::start(&config(&[("demo", d.addrs[0], 1.0)], ""));
    let u1 = format!("http://{}/a/1k", c.addr);
    let u2 = format!("http://{}/b/2k", c.addr);
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-H",
            &format!("Host: {HOST}"),
            &u1,
            &u2,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(c.stats()["connections"]["accepted"], 1);
    assert_eq!(c.stats()["requests"]["requests"], 2);
}

#[test]
fn the_ram_tier_stays_within_its_bytes_and_a_scan_does_not_flush_hot_objects() {
    let d = DemoOrigin::start(&["127.0.0.1:0".parse().unwrap()]).unwrap();
    // 1 MiB of RAM, 10 KiB objects: room for about 90.
    let c = Cache::start_workers(
        &config(
            &[("demo", d.addrs[0], 1.0)],
            "ram_bytes = 1048576\nmax_object_bytes = 65536\n",
        ),
        1,
    );
    let hot: Vec<String> = (0..20).map(|i| format!("/hot/{i}/10k")).collect();
    for _ in 0..3 {
        for p in &hot {
            assert_eq!(c.get(p).status, 200);
        }
    }
    for i in 0..300 {
        assert_eq!(c.get(&format!("/scan/{i}/10k")).status, 200);
    }
    let st = c.stats();
    let tier = &st["tiers"][0];
    assert!(tier["bytes"].as_u64().unwrap() <= 1 << 20, "{tier}");
    assert!(tier["evicted"].as_u64().unwrap() >= 200, "{tier}");
    let kept = hot.iter().filter(|p| c.get(p).x_cache() == "HIT").count();
    assert_eq!(kept, hot.len(), "the scan evicted hot objects");
    // Larger than max_object_bytes: served, not stored.
    assert_eq!(c.get("/big/100k").body.len(), 100 * 1024);
    assert_ne!(c.get("/big/100k").x_cache(), "HIT");
}

#[test]
fn bad_cache_settings_are_named_with_their_place_and_fix() {
    let text = popnet_config::DEMO_TOML
        .replace(
            "ram_bytes = 268_435_456",
            "ram_bytes = 1000\nmax_connections = 0\nhead_timeout = \"1ms\"",
        )
        .replace("admin = \"127.0.0.1:5381\"", "admin = \"0.0.0.0:5381\"");
    let e = Config::from_toml(&text, "demo")
        .expect_err("invalid")
        .to_string();
    for want in [
        "pops[0].cache.ram_bytes",
        "pops[0].cache.max_object_bytes",
        "pops[0].cache.max_connections",
        "pops[0].cache.head_timeout",
        "pops[0].cache.admin_token",
    ] {
        assert!(e.contains(want), "{want} missing from:\n{e}");
    }
    let typo = popnet_config::DEMO_TOML.replace("ram_bytes = 268_435_456", "ram_byts = 1");
    assert!(
        Config::from_toml(&typo, "demo").is_err(),
        "unknown fields are refused"
    );
}
