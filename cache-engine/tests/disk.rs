//! The disk tier through curl against the real server: persistence across restarts, promotion, streaming, purge, eviction with second chance, damaged and unreadable stores.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use popnet_config::Config;

/// A deterministic body of `n` bytes for `path` (every byte depends on both).
fn body_for(path: &str, n: usize) -> Vec<u8> {
    let seed = path
        .bytes()
        .fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
    (0..n)
        .map(|i| {
            let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
            b'!' + ((x >> 13) % 90) as u8
        })
        .collect()
}

/// An origin answering `/<anything>/<size>` with `body_for(path, size)`, cacheable.
fn sized_origin() -> TestOrigin {
    TestOrigin::start(|r| {
        let path = r.path.split('?').next().unwrap_or("");
        let n: usize = path
            .rsplit('/')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(100);
        OriginResp::ok(
            body_for(path, n),
            &[("Cache-Control", "max-age=3600"), ("ETag", "\"v1\"")],
        )
    })
}

struct Disk {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Disk {
    fn new() -> Disk {
        // Under the target directory: a real disk filesystem (O_DIRECT), unlike tmpfs.
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = tempfile::tempdir_in(base).unwrap();
        let path = dir.path().join("store");
        Disk { _dir: dir, path }
    }

    fn cfg(&self, o: &TestOrigin, extra: &str) -> Config {
        config(
            &[("o1", o.addr, 1.0)],
            &format!("disk_path = \"{}\"\n{extra}", self.path.display()),
        )
    }
}

fn tier<'a>(stats: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    stats["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tier"] == name)
        .unwrap_or_else(|| panic!("no {name} tier in {stats}"))
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

fn flush(c: &Cache) {
    let s = c.server.as_ref().unwrap();
    assert!(
        s.shared().store.flush(Duration::from_secs(10)),
        "the disk writer did not catch up"
    );
}

fn restart(c: &mut Cache, cfg: &Config) {
    c.server.take().unwrap().stop();
    *c = Cache::start(cfg);
}

const SMALL: &str = "ram_bytes = 1048576\nmax_object_bytes = 393216\ndisk_bytes = 8392704\ndisk_segment_bytes = 1048576\n";

#[test]
fn objects_survive_a_restart_and_are_promoted_on_the_second_disk_hit() {
    let o = sized_origin();
    let d = Disk::new();
    let cfg = d.cfg(&o, SMALL);
    let mut c = Cache::start(&cfg);
    for i in 0..10 {
        let r = c.get(&format!("/a/{i}/{}", 1000 + i * 3000));
        assert_eq!((r.status, r.x_cache()), (200, "MISS"));
    }
    flush(&c);
    let st = c.stats();
    let disk = tier(&st, "disk");
    assert_eq!(n(disk, "objects"), 10, "{disk}");
    assert!(n(disk, "bytes") > 10 * 1000);
    restart(&mut c, &cfg);
    let disk = c.stats();
    assert_eq!(
        n(tier(&disk, "disk"), "objects"),
        10,
        "the index is rebuilt"
    );
    assert_eq!(n(tier(&disk, "ram"), "objects"), 0);
    for i in 0..10 {
        let p = format!("/a/{i}/{}", 1000 + i * 3000);
        let r = c.get(&p);
        assert_eq!((r.status, r.x_cache()), (200, "HIT"), "{p}");
        assert_eq!(r.body, body_for(&p, 1000 + i * 3000), "{p}");
        assert_eq!(r.header("etag"), Some("\"v1\""));
    }
    assert_eq!(o.total(), 10, "nothing was fetched again");
    let st = c.stats();
    assert_eq!(n(tier(&st, "disk"), "hits"), 10);
    assert_eq!(
        n(tier(&st, "ram"), "objects"),
        0,
        "one disk hit does not promote"
    );
    // The second disk hit promotes; the third request is a RAM hit.
    c.get("/a/0/1000");
    let st = c.stats();
    assert_eq!(n(tier(&st, "disk"), "hits"), 11);
    assert_eq!(n(tier(&st, "ram"), "objects"), 1);
    let r = c.get("/a/0/1000");
    assert_eq!((r.x_cache(), r.body.len()), ("HIT", 1000));
    let st = c.stats();
    assert_eq!(n(tier(&st, "disk"), "hits"), 11, "served from RAM");
    // Inspection shows both copies, the disk one with its place in the file.
    let obj = c.admin_json("/object?url=http://cdn.acme.example/a/0/1000");
    let tiers: Vec<&str> = obj["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["tier"].as_str().unwrap())
        .collect();
    assert_eq!(tiers, ["ram", "disk"]);
    assert!(obj["objects"][1]["disk_offset"].as_u64().unwrap() >= 8192);
    assert_eq!(obj["objects"][1]["size"], 1000);
}

#[test]
fn large_objects_stream_from_disk_with_ranges_head_and_conditionals() {
    let o = sized_origin();
    let d = Disk::new();
    let cfg = d.cfg(
        &o,
        "ram_bytes = 4194304\nmax_object_bytes = 6291456\ndisk_bytes = 67112960\ndisk_segment_bytes = 16777216\ndisk_promote_max_bytes = 65536\n",
    );
    let mut c = Cache::start(&cfg);
    let p = "/big/3145733";
    let want = body_for(p, 3_145_733);
    assert_eq!(c.get(p).x_cache(), "MISS");
    flush(&c);
    restart(&mut c, &cfg);
    let r = c.get(p);
    assert_eq!((r.status, r.x_cache()), (200, "HIT"));
    assert_eq!(r.header("content-length"), Some("3145733"));
    assert!(r.body == want, "the streamed body differs");
    // A range across a chunk boundary, and one at the very end.
    let r = c.curl(p, &["-H", "Range: bytes=1048570-1048590"]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, want[1_048_570..=1_048_590]);
    let r = c.curl(p, &["-H", "Range: bytes=-7"]);
    assert_eq!(r.body, want[want.len() - 7..]);
    assert_eq!(
        r.header("content-range"),
        Some("bytes 3145726-3145732/3145733")
    );
    let r = c.curl(p, &["-I"]);
    assert_eq!(
        (r.status, r.header("content-length")),
        (200, Some("3145733"))
    );
    assert!(r.body.len() < 2000, "no body for HEAD");
    let r = c.curl(p, &["-H", "If-None-Match: \"v1\""]);
    assert_eq!(r.status, 304);
    assert_eq!(o.total(), 1);
    let st = c.stats();
    assert_eq!(
        n(tier(&st, "ram"), "objects"),
        0,
        "streamed objects are not promoted"
    );
    // Two clients at once, one of them reading slowly: both get every byte.
    let addr = c.addr;
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {p} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => got.extend_from_slice(&buf[..k]),
            }
            std::thread::sleep(Duration::from_micros(300));
        }
        got
    });
    let fast = c.get(p);
    assert!(fast.body == want);
    let got = slow.join().unwrap();
    let split = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(got[split..] == want[..], "the slow client's body differs");
}

#[test]
fn purges_reach_the_disk_and_outlive_a_restart() {
    let o = sized_origin();
    let d = Disk::new();
    let cfg = d.cfg(&o, SMALL);
    let mut c = Cache::start(&cfg);
    for p in ["/p/1/500", "/p/2/600", "/q/1/700"] {
        assert_eq!(c.get(p).x_cache(), "MISS");
    }
    flush(&c);
    let (s, b) = c.purge(r#"{"prefix":"http://cdn.acme.example/p/"}"#, None);
    assert_eq!(s, 200, "{b}");
    assert!(
        b.contains("\"purged\": 4"),
        "two objects in RAM and on disk: {b}"
    );
    let (s, b) = c.purge(r#"{"url":"http://cdn.acme.example/q/1/700"}"#, None);
    assert_eq!(s, 200);
    assert!(b.contains("\"purged\": 2"), "{b}");
    assert_eq!(c.get("/q/1/700").x_cache(), "MISS");
    flush(&c);
    let st = c.stats();
    assert_eq!(n(tier(&st, "disk"), "purged"), 3);
    restart(&mut c, &cfg);
    // The purges were logged: the old copies do not come back.
    assert_eq!(c.get("/p/1/500").x_cache(), "MISS");
    assert_eq!(c.get("/p/2/600").x_cache(), "MISS");
    assert_eq!(
        c.get("/q/1/700").x_cache(),
        "HIT",
        "stored again after its purge"
    );
    assert_eq!(o.count("/p/1/500"), 2);
    assert_eq!(o.count("/q/1/700"), 2);
}

#[test]
fn a_store_smaller_than_the_working_set_evicts_keeps_serving_and_gives_hot_objects_a_second_chance()
{
    let o = sized_origin();
    let d = Disk::new();
    // 8 segments of 1 MiB (one always kept free), objects of 200 KiB, 1 MiB of RAM.
    let cfg = d.cfg(&o, SMALL);
    let mut c = Cache::start(&cfg);
    let hot = "/hot/204800";
    assert_eq!(c.get(hot).x_cache(), "MISS");
    for round in 0..8 {
        for i in 0..8 {
            let p = format!("/cold/{round}/{i}/204800");
            let r = c.get(&p);
            assert_eq!(r.status, 200);
            assert!(r.body == body_for(&p, 204_800), "{p}");
        }
        flush(&c);
        // The hot object is asked for again and again (from RAM or from disk).
        let r = c.get(hot);
        assert_eq!((r.status, r.x_cache()), (200, "HIT"), "round {round}");
        assert!(r.body == body_for(hot, 204_800));
    }
    let st = c.stats();
    let disk = tier(&st, "disk");
    assert!(n(disk, "evicted") > 20, "{disk}");
    assert!(n(disk, "rewritten") >= 1, "{disk}");
    assert!(n(disk, "bytes") <= n(disk, "capacity"), "{disk}");
    assert_eq!(o.count(hot), 1, "the hot object was kept on disk: {disk}");
    // After a restart the hot object is still on disk, and everything reads back
    // right, from disk or from the origin.
    restart(&mut c, &cfg);
    assert_eq!(c.get(hot).x_cache(), "HIT");
    assert_eq!(o.count(hot), 1);
    let mut hits = 0;
    for round in (0..8).rev() {
        for i in 0..8 {
            let p = format!("/cold/{round}/{i}/204800");
            let r = c.get(&p);
            assert_eq!(r.status, 200);
            assert!(r.body == body_for(&p, 204_800), "{p}");
            hits += usize::from(r.x_cache() == "HIT");
        }
    }
    assert!(
        hits >= 8,
        "the last rounds were still on disk ({hits} hits)"
    );
}

/// Flips one byte of a stored record, `at` bytes into it.
fn flip(path: &Path, record: u64, at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, record + at).unwrap();
    b[0] ^= 0x20;
    f.write_all_at(&b, record + at).unwrap();
    f.sync_all().unwrap();
}

fn disk_place(c: &Cache, path: &str) -> (u64, u64) {
    let v = c.admin_json(&format!("/object?url=http://cdn.acme.example{path}"));
    let d = v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["tier"] == "disk")
        .unwrap_or_else(|| panic!("{path} is not on disk: {v}"));
    (
        d["disk_offset"].as_u64().unwrap(),
        d["disk_len"].as_u64().unwrap(),
    )
}

#[test]
fn flipped_bytes_are_detected_and_the_object_is_fetched_again() {
    let o = sized_origin();
    let d = Disk::new();
    let cfg = d.cfg(
        &o,
        "ram_bytes = 4194304\nmax_object_bytes = 6291456\ndisk_bytes = 67112960\ndisk_segment_bytes = 16777216\ndisk_promote_max_bytes = 65536\n",
    );
    let mut c = Cache::start(&cfg);
    let small = "/f/40000";
    let head = "/f/h/30000";
    let large = "/f/l/2500000";
    for p in [small, head, large] {
        assert_eq!(c.get(p).x_cache(), "MISS");
    }
    flush(&c);
    restart(&mut c, &cfg);
    // A byte of a body, a byte of a stored head field, a byte of the second chunk.
    let (off, len) = disk_place(&c, small);
    flip(&d.path, off, len - 5000);
    let (off, _) = disk_place(&c, head);
    flip(&d.path, off, 120);
    let (off, _) = disk_place(&c, large);
    flip(&d.path, off, 1_500_000);

    for p in [small, head] {
        let r = c.get(p);
        assert_eq!(
            (r.status, r.x_cache()),
            (200, "MISS"),
            "{p}: a damaged record is a miss"
        );
        assert!(
            r.body == body_for(p, r.body.len()) && !r.body.is_empty(),
            "{p}"
        );
        assert_eq!(r.header("etag"), Some("\"v1\""));
    }
    // The large one streams: the damaged chunk is never sent, the response stops short.
    let want = body_for(large, 2_500_000);
    let r = c.get(large);
    assert!(
        r.body.len() < want.len(),
        "a damaged chunk must not be sent"
    );
    assert!(want.starts_with(&r.body), "only verified bytes were sent");
    let r = c.get(large);
    assert_eq!((r.status, r.x_cache()), (200, "MISS"));
    assert!(r.body == want);
    let st = c.stats();
    assert_eq!(n(tier(&st, "disk"), "checksum_failures"), 3, "{st}");
    assert_eq!(o.count(small), 2);
    assert_eq!(o.count(large), 2);
    // The fresh copies are good.
    flush(&c);
    restart(&mut c, &cfg);
    for p in [small, head, large] {
        let r = c.get(p);
        assert_eq!((r.status, r.x_cache()), (200, "HIT"), "{p}");
    }
}

#[test]
fn a_store_that_cannot_be_read_turns_hits_into_misses_and_serving_goes_on() {
    let o = sized_origin();
    let d = Disk::new();
    let cfg = d.cfg(&o, SMALL);
    let mut c = Cache::start(&cfg);
    let paths: Vec<String> = (0..8).map(|i| format!("/e/{i}/30000")).collect();
    for p in &paths {
        c.get(p);
    }
    flush(&c);
    restart(&mut c, &cfg);
    // Cut the file under the running server: every read of a record comes back short.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&d.path)
        .unwrap()
        .set_len(4096)
        .unwrap();
    for p in &paths {
        let r = c.get(p);
        assert_eq!((r.status, r.x_cache()), (200, "MISS"), "{p}");
        assert!(r.body == body_for(p, 30_000));
    }
    // Reads past the end come back short (I/O errors); once the refetched objects
    // extend the file again, the hole reads as zeros (bad records). Both are misses.
    let st = c.stats();
    let disk = tier(&st, "disk");
    assert!(n(disk, "io_errors") >= 1, "{st}");
    assert_eq!(
        n(disk, "io_errors") + n(disk, "checksum_failures"),
        8,
        "{st}"
    );
    assert_eq!(o.total(), 16);
    // Refetched objects are written again and served.
    flush(&c);
    for p in &paths {
        assert_eq!(c.get(p).x_cache(), "HIT");
    }
}

#[test]
fn disk_settings_are_checked_with_their_place_and_fix() {
    let bad = |extra: &str| -> String {
        let text = CONFIG.replace("#EXTRA", extra);
        match Config::from_toml(&text, "t") {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    };
    let e = bad("disk_path = \"/tmp/x\"\ndisk_segment_bytes = 1000");
    assert!(e.contains("pops[0].cache.disk_segment_bytes"), "{e}");
    let e = bad(
        "disk_path = \"/tmp/x\"\ndisk_bytes = 3000000\ndisk_segment_bytes = 1048576\nmax_object_bytes = 100000",
    );
    assert!(
        e.contains("pops[0].cache.disk_bytes") && e.contains("4198400"),
        "{e}"
    );
    let e = bad("disk_path = \"/tmp/x\"\nmax_object_bytes = 60000000");
    assert!(
        e.contains("pops[0].cache.max_object_bytes") && e.contains("raise disk_segment_bytes"),
        "{e}"
    );
    let e = bad("disk_path = \"\"");
    assert!(e.contains("pops[0].cache.disk_path"), "{e}");
    // With a disk tier, objects may be larger than RAM.
    assert_eq!(
        bad("ram_bytes = 4194304\ndisk_path = \"/tmp/x\"\nmax_object_bytes = 16777216"),
        ""
    );
    assert!(bad("ram_bytes = 4194304\nmax_object_bytes = 16777216").contains("max_object_bytes"));
}

const CONFIG: &str = r#"
[network]
name = "test"
version = 1
zone = "popnet.example"

[probes]
report_key = "b931d3d715699ac5770f3adaa5de1107460e972c72dfc63c6498486c5ae09ce5"

[[pops]]
name = "t"
region = "local"
[pops.dns]
listen = ["127.0.0.1:0"]
reports = "127.0.0.1:0"
admin = "127.0.0.1:0"
[pops.cache]
addresses = ["127.0.0.1"]
listen = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
#EXTRA

[[customers]]
name = "acme"
zones = ["acme.example"]

[[customers.origins]]
name = "o1"
addresses = ["127.0.0.1"]
port = 9

[[customers.domains]]
name = "cdn.acme.example"
kind = "static"
"#;
