//! UDP workers: one SO_REUSEPORT socket and thread per core per listen address.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::respond::{Outcome, Transport, respond};
use crate::server::{SeenFilter, Shared, StartError, transient};
use crate::stats::Counters;
use crate::sys::Batch;

/// Datagrams handled per system call.
const BATCH: usize = 32;
/// How often a blocked worker wakes to check for shutdown.
const WAKE: Duration = Duration::from_millis(200);

/// Binds `addr` once without SO_REUSEPORT to make sure nobody else holds it (two
/// servers sharing a port through SO_REUSEPORT would each see half the queries).
fn check_free(addr: SocketAddr, proto: &'static str) -> Result<(), StartError> {
    let ty = if proto == "udp" {
        Type::DGRAM
    } else {
        Type::STREAM
    };
    let s = Socket::new(Domain::for_address(addr), ty, None)
        .map_err(|e| StartError::bind(addr, proto, e))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)
            .map_err(|e| StartError::bind(addr, proto, e))?;
    }
    s.bind(&addr.into())
        .map_err(|e| StartError::bind(addr, proto, e))
}

/// A UDP socket in the SO_REUSEPORT group of `addr`.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // A larger receive buffer absorbs bursts; the kernel caps it at rmem_max.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.set_read_timeout(Some(WAKE))?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Binds `workers` sockets on every address and starts their threads. Returns the
/// threads and the address actually bound for each requested one (port 0 resolved).
pub fn start(
    listen: &[SocketAddr],
    workers: usize,
    shared: &Arc<Shared>,
) -> Result<(Vec<JoinHandle<()>>, Vec<SocketAddr>), StartError> {
    let mut threads = Vec::new();
    let mut bound = Vec::new();
    for &addr in listen {
        if addr.port() != 0 {
            check_free(addr, "udp")?;
        }
        let first = bind_reuseport(addr).map_err(|e| StartError::bind(addr, "udp", e))?;
        let actual = first
            .local_addr()
            .map_err(|e| StartError::bind(addr, "udp", e))?;
        bound.push(actual);
        let mut socks = vec![first];
        for _ in 1..workers {
            socks.push(bind_reuseport(actual).map_err(|e| StartError::bind(actual, "udp", e))?);
        }
        for (i, sock) in socks.into_iter().enumerate() {
            let counters = shared.new_counters();
            let shared = shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || worker(sock, shared, counters))
                .map_err(|e| StartError::bind(actual, "udp", e))?;
            threads.push(t);
        }
    }
    Ok((threads, bound))
}

fn worker(sock: UdpSocket, shared: Arc<Shared>, counters: Arc<Counters>) {
    let mut batch = Batch::new(BATCH);
    let mut seen = SeenFilter::default();
    let payload = shared.udp_payload;
    while !shared.stop.load(Ordering::Relaxed) {
        let n = match batch.recv(&sock) {
            Ok(n) => n,
            Err(e) if transient(&e) => {
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "udp receive failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let table = shared.table.load();
        for i in 0..n {
            let (packet, src, cut, reply) = batch.slot(i);
            reply.clear();
            let Some(src) = src.filter(|_| !cut) else {
                counters.record_oversize();
                continue;
            };
            let o = respond(&table, payload, packet, src.ip(), Transport::Udp, reply);
            match o {
                Outcome::Dropped(_) => reply.clear(),
                Outcome::Answered { .. } => seen.note(&shared, src.ip()),
            }
            counters.record(&o);
        }
        drop(table);
        if let Err(e) = batch.send(&sock, n) {
            tracing::debug!(error = %e, "udp send failed");
        }
    }
}
