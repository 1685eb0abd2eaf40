//! The ingest listener: reads batch frames from senders, stores them, acknowledges each in order.
//!
//! One thread per connection, at most [`MAX_CONNECTIONS`] at once (more are closed at
//! once). A frame's fixed head is checked before its body is read, so a hostile or
//! broken peer cannot make the server allocate more than [`logship::wire::MAX_PAYLOAD`]
//! plus the head; a frame that does not parse or authenticate closes the connection
//! (counted), and nothing is stored or acknowledged for it. A connection idle for
//! [`IDLE`] is closed; the sender reconnects when it has more.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use logship::wire::{BATCH_HEAD, MAX_SOURCE};
use logship::{Ack, AckStatus, Batch};

use crate::store::{Ingested, Store};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// An idle connection is closed after this long.
pub const IDLE: Duration = Duration::from_secs(300);
/// Longest pause inside a frame.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// Counters of the listener.
#[derive(Debug, Default)]
pub struct IngestCounters {
    pub connections: AtomicU64,
    pub refused: AtomicU64,
    pub open: AtomicUsize,
    /// Frames that did not parse or authenticate.
    pub rejected: AtomicU64,
    /// Batches that could not be stored (disk or database error); not acknowledged.
    pub store_errors: AtomicU64,
}

/// Serves `listener` until `stop`.
pub fn start(
    listener: TcpListener,
    store: Arc<Store>,
    key: Vec<u8>,
    counters: Arc<IngestCounters>,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let key: Arc<[u8]> = key.into();
    std::thread::Builder::new()
        .name("logd-ingest".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, peer)) => {
                        if counters.open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                            counters.refused.fetch_add(1, Ordering::Relaxed);
                            drop(s);
                            continue;
                        }
                        counters.connections.fetch_add(1, Ordering::Relaxed);
                        counters.open.fetch_add(1, Ordering::Relaxed);
                        let (store, key, c, stop) =
                            (store.clone(), key.clone(), counters.clone(), stop.clone());
                        let spawned = std::thread::Builder::new()
                            .name("logd-conn".into())
                            .spawn(move || {
                                if let Err(why) = serve(s, &store, &key, &c, &stop) {
                                    tracing::debug!(%peer, error = %why, "logd: ingest connection ended");
                                }
                                c.open.fetch_sub(1, Ordering::Relaxed);
                            });
                        if spawned.is_err() {
                            counters.open.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "logd: accept failed");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` on a clean end before the first byte.
fn read_full(s: &mut TcpStream, buf: &mut [u8], stop: &AtomicBool, idle: bool) -> io::Result<bool> {
    let mut got = 0;
    let mut waited = Duration::ZERO;
    let tick = Duration::from_millis(500);
    while got < buf.len() {
        if stop.load(Ordering::Relaxed) {
            return Err(io::Error::other("stopping"));
        }
        match s.read(&mut buf[got..]) {
            Ok(0) if got == 0 && idle => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                got += n;
                waited = Duration::ZERO;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                waited += tick;
                let limit = if idle && got == 0 {
                    IDLE
                } else {
                    FRAME_TIMEOUT
                };
                if waited >= limit {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "peer too slow or idle",
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn serve(
    mut s: TcpStream,
    store: &Store,
    key: &[u8],
    c: &IngestCounters,
    stop: &AtomicBool,
) -> Result<(), String> {
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .and_then(|()| s.set_write_timeout(Some(FRAME_TIMEOUT)))
        .and_then(|()| s.set_nodelay(true))
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; BATCH_HEAD];
    let mut frame = Vec::new();
    loop {
        if !read_full(&mut s, &mut head, stop, true).map_err(|e| e.to_string())? {
            return Ok(());
        }
        let len = match Batch::frame_len(&head) {
            Ok(l) => l,
            Err(e) => {
                c.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = ?s.peer_addr().ok(), error = %e, "logd: refused a frame");
                return Err(e.to_string());
            }
        };
        debug_assert!(len <= BATCH_HEAD + MAX_SOURCE + logship::wire::MAX_PAYLOAD as usize + 32);
        frame.clear();
        frame.extend_from_slice(&head);
        frame.resize(len, 0);
        read_full(&mut s, &mut frame[BATCH_HEAD..], stop, false).map_err(|e| e.to_string())?;
        let batch = match Batch::decode(&frame, key) {
            Ok(b) => b,
            Err(e) => {
                c.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = ?s.peer_addr().ok(), error = %e, "logd: refused a frame");
                return Err(e.to_string());
            }
        };
        let status = match store.ingest(&batch) {
            Ok(Ingested::Duplicate) => AckStatus::Duplicate,
            Ok(Ingested::Stored { .. }) => AckStatus::Stored,
            Err(e) => {
                c.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(source = %batch.source, seq = batch.seq, error = %e, "logd: cannot store a batch; not acknowledged");
                return Err(e.to_string());
            }
        };
        let ack = Ack {
            status,
            stream: batch.stream,
            seq: batch.seq,
        };
        s.write_all(&ack.encode(key)).map_err(|e| e.to_string())?;
    }
}
