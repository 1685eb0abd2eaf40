//! Measures the disk tier's start-up on a full store: 1 GiB of 64 KiB objects, after a clean stop and after a crash.
//!
//! `disk_startup [PATH] [BYTES] [OBJECT_BYTES]` fills a store (default
//! `/var/tmp/popnet-disk-startup.store`, 1 GiB in 64 MiB segments, 64 KiB objects)
//! until it has evicted, copies the file while its last segment is open (what a
//! `kill -9` leaves), stops cleanly (sealing it), then times `DiskTier::open` three
//! times on the clean store and once on the crash image (which walks and verifies
//! the open segment). Reads bypass the page cache (O_DIRECT).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_engine::key::CacheKey;
use cache_engine::object::{ResponseHead, StoredObject};
use cache_engine::store::{DiskSettings, DiskTier, Tier};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = std::path::PathBuf::from(
        args.get(1)
            .map_or("/var/tmp/popnet-disk-startup.store", String::as_str),
    );
    let bytes: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1 << 30);
    let object: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(64 << 10);
    let settings = DiskSettings {
        path: path.clone(),
        bytes: bytes + 4096,
        segment_bytes: 64 << 20,
        promote_hits: 2,
        promote_max_bytes: 1 << 20,
        max_object_bytes: 16 << 20,
        via: "1.1 bench (popnet)".into(),
    };
    let _ = std::fs::remove_file(&path);
    let t = DiskTier::open(&settings).unwrap_or_else(|e| {
        eprintln!("disk_startup: {e}");
        std::process::exit(1)
    });
    let head = Arc::new(ResponseHead::from_origin(
        200,
        [
            ("Cache-Control", b"max-age=86400".as_slice()),
            ("Content-Type", b"application/octet-stream".as_slice()),
            ("ETag", b"\"0123456789abcdef\"".as_slice()),
        ]
        .into_iter(),
        1_700_000_000,
        1_700_000_000,
        "1.1 bench (popnet)",
    ));
    let body = Bytes::from((0..object).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let started = Instant::now();
    let mut i = 0u64;
    loop {
        let key = CacheKey::from_text(&format!("static.bench.example/objects/{i}.bin"));
        let h = key.hash;
        let o = Arc::new(StoredObject::new(
            key,
            h,
            "bench".into(),
            head.clone(),
            body.clone(),
            1_700_000_000,
        ));
        if t.insert(o, None) {
            i += 1;
        } else {
            t.flush(Duration::from_secs(60));
        }
        if i.is_multiple_of(1024) {
            t.flush(Duration::from_secs(60));
            if t.stats().evicted > 0 {
                break;
            }
        }
    }
    t.flush(Duration::from_secs(60));
    let filled = t.stats();
    println!(
        "filled {} with {i} objects of {object} bytes in {:.1} s: {} live objects, {} MiB live, {} evicted",
        path.display(),
        started.elapsed().as_secs_f64(),
        filled.objects,
        filled.bytes >> 20,
        filled.evicted
    );
    let image = path.with_extension("crash");
    std::fs::copy(&path, &image).expect("copy the crash image");
    drop(t);
    for run in 1..=3 {
        let t0 = Instant::now();
        let t = DiskTier::open(&settings).expect("reopen");
        let took = t0.elapsed();
        println!(
            "clean start {run}: {:.0} ms, {} objects, {} segments from summaries, {} walked",
            took.as_secs_f64() * 1000.0,
            t.report.objects,
            t.report.sealed,
            t.report.walked
        );
    }
    let crash = DiskSettings {
        path: image.clone(),
        ..settings
    };
    let t0 = Instant::now();
    let t = DiskTier::open(&crash).expect("open the crash image");
    println!(
        "start after a crash: {:.0} ms, {} objects, {} segments from summaries, {} walked and verified, {} bad records",
        t0.elapsed().as_secs_f64() * 1000.0,
        t.report.objects,
        t.report.sealed,
        t.report.walked,
        t.report.bad_records
    );
    drop(t);
    let _ = std::fs::remove_file(&image);
    let _ = std::fs::remove_file(&path);
}
