//! Shipping to a real log server over loopback: hostile frames refused, and records that survive a log server restart exactly once.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use logd::{Logd, LogdOptions};
use logship::wire::ACK_LEN;
use logship::{Ack, AckStatus, Batch, Kind, Shipper, ShipperConfig};
use popnet_config::Config;

const KEY_HEX: &str = "00112233445566778899aabbccddeeff";

fn config() -> Config {
    let text = popnet_config::demo_without_logs().replace(
        "name = \"local\"\nregion = \"local\"\n",
        "name = \"local\"\nregion = \"local\"\nlog_server = \"main\"\n",
    ) + &format!(
        r#"
[logs]
key = "{KEY_HEX}"
batch_records = 50
batch_interval = "50ms"

[[log_servers]]
name = "main"
address = "127.0.0.1:5400"
customers = ["demo"]
"#
    );
    Config::from_toml(&text, "test").unwrap()
}

fn key() -> Vec<u8> {
    hex::decode(KEY_HEX).unwrap()
}

fn start_logd(cfg: &Config, data: &Path, listen: SocketAddr) -> Logd {
    Logd::start(
        cfg,
        &LogdOptions {
            listen: Some(listen),
            admin: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(data.to_path_buf()),
            ..LogdOptions::default()
        },
    )
    .unwrap()
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn line(i: u64) -> String {
    format!(
        "{{\"ts_ms\":{},\"pop\":\"local\",\"customer\":\"demo\",\"client\":\"127.0.0.1:9\",\"method\":\"GET\",\"host\":\"static.demo.example\",\"path\":\"/obj/{i}\",\"status\":200,\"bytes\":{},\"cache\":\"HIT\"}}\n",
        now_ms(),
        100 + i
    )
}

/// True when the peer closed the connection (read returned 0 or reset).
fn closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut b = [0u8; 64];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

#[test]
fn hostile_frames_close_the_connection_and_valid_ones_are_acknowledged_once() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config();
    let logd = start_logd(&cfg, d.path(), "127.0.0.1:0".parse().unwrap());
    let addr = logd.listen;
    let good = Batch::seal(
        Kind::Access,
        [9; 16],
        1,
        now_ms(),
        2,
        "local/cache",
        (line(1) + &line(2)).as_bytes(),
    )
    .unwrap()
    .encode(&key());

    // Not a frame at all.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&[b'G'; 100]).unwrap();
    assert!(closed(&mut s));
    // A head announcing a payload over the limit: refused before any body is read.
    let mut huge = good.clone();
    huge[48..52].copy_from_slice(&u32::MAX.to_be_bytes());
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&huge[..logship::wire::BATCH_HEAD]).unwrap();
    assert!(closed(&mut s));
    // A frame under another key.
    let forged = Batch::decode(&good, &key())
        .unwrap()
        .encode(b"not the network's key");
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&forged).unwrap();
    assert!(closed(&mut s));
    assert_eq!(logd.ctx.ingest.rejected.load(Ordering::Relaxed), 3);
    assert_eq!(logd.ctx.store.counters.records.load(Ordering::Relaxed), 0);

    // The real one: stored, then a duplicate on the same and on a new connection.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut ack = [0u8; ACK_LEN];
    for want in [AckStatus::Stored, AckStatus::Duplicate] {
        s.write_all(&good).unwrap();
        s.read_exact(&mut ack).unwrap();
        let a = Ack::decode(&ack, &key()).unwrap();
        assert_eq!((a.status, a.stream, a.seq), (want, [9; 16], 1));
    }
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&good).unwrap();
    s.read_exact(&mut ack).unwrap();
    assert_eq!(
        Ack::decode(&ack, &key()).unwrap().status,
        AckStatus::Duplicate
    );
    assert_eq!(logd.ctx.store.counters.records.load(Ordering::Relaxed), 2);
    assert_eq!(
        logd.ctx.store.counters.duplicates.load(Ordering::Relaxed),
        2
    );
    logd.stop();
}

#[test]
fn records_shipped_across_a_log_server_restart_are_stored_exactly_once() {
    let data = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let cfg = config();
    let logd = start_logd(&cfg, data.path(), "127.0.0.1:0".parse().unwrap());
    let addr = logd.listen;
    let mut sc = ShipperConfig::from_config(&cfg, "local", "cache", Kind::Access).unwrap();
    sc.spool_dir = spool.path().to_path_buf();
    sc.resolver = None;
    for d in &mut sc.routes.destinations {
        d.address = addr;
    }
    let shipper = Shipper::start(sc.clone()).unwrap();
    const N: u64 = 3000;
    let mut bytes = 0;
    for i in 0..N {
        bytes += 100 + i;
        shipper.write_lines(line(i).as_bytes());
        if i == N / 3 {
            // Stop the log server while batches are in flight; records keep coming.
            wait_for("some records stored", Duration::from_secs(60), || {
                logd.ctx.store.counters.records.load(Ordering::Relaxed) > 0
            });
            break;
        }
    }
    let stored_before = logd.ctx.store.counters.records.load(Ordering::Relaxed);
    logd.stop();
    for i in N / 3 + 1..N {
        bytes += 100 + i;
        shipper.write_lines(line(i).as_bytes());
    }
    // While it is down, batches wait in the spool.
    wait_for("batches spooled", Duration::from_secs(60), || {
        let s = shipper.stats();
        s.destinations[0].spool_batches > 0 && s.records_in == N
    });
    // The sender itself restarts too: its spool carries over.
    drop(shipper);
    let logd = start_logd(&cfg, data.path(), addr);
    let shipper = Shipper::start(sc).unwrap();
    wait_for("every record stored", Duration::from_secs(120), || {
        shipper.stats().destinations[0].spool_batches == 0
    });
    let st = logd
        .ctx
        .store
        .stats("demo", logd::time::now() - 3600, 86_400)
        .unwrap();
    assert_eq!(
        st.total.requests, N,
        "stored before the restart: {stored_before}"
    );
    assert_eq!(st.total.bytes, bytes);
    let streams = logd.ctx.store.streams().unwrap();
    assert_eq!(streams.iter().map(|s| s.records).sum::<u64>(), N);
    assert_eq!(streams.iter().map(|s| s.missing).sum::<u64>(), 0);
    // The raw file holds each record once.
    let raw = logd
        .ctx
        .store
        .raw("demo", logd::time::now(), Kind::Access, 1 << 26)
        .unwrap();
    let mut paths: Vec<String> = raw
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice::<logship::AccessRecord>(l)
                .unwrap()
                .path
        })
        .collect();
    // Records made in the last seconds of an hour may sit in the next hour's file.
    paths.extend(
        logd.ctx
            .store
            .raw("demo", logd::time::now() - 3600, Kind::Access, 1 << 26)
            .unwrap()
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice::<logship::AccessRecord>(l)
                    .unwrap()
                    .path
            }),
    );
    paths.sort();
    let before = paths.len();
    paths.dedup();
    assert_eq!((before, paths.len()), (N as usize, N as usize));
    shipper.stop();
    logd.stop();
}
