//! DNS over TCP (RFC 7766): length-prefixed messages, several per connection, pipelined.
//!
//! One mio event loop serves every TCP listener. Each connection holds at most one
//! message being read (2 + 65535 bytes) and a bounded queue of responses; while the
//! queue is over its bound the connection is not read, so a client that never reads
//! cannot make the server buffer without limit. Idle connections close after
//! `dns.tcp_idle_timeout`; at `dns.tcp_max_connections` the longest-idle one is closed
//! to admit a new one. A message the server would not answer (shorter than a header, or
//! a response) closes the connection.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::respond::{Outcome, Transport, respond};
use crate::server::{SeenFilter, Shared, StartError};
use crate::stats::Counters;

/// Responses queued beyond this stop reading from the connection.
const MAX_QUEUED: usize = 256 * 1024;
/// Largest read buffer: one length prefix and one message.
const MAX_MESSAGE: usize = 2 + 65_535;
const LISTENER_BASE: usize = 1 << 30;

struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    last: Instant,
    peer: SocketAddr,
    /// The peer closed its side; close once everything queued is written.
    read_closed: bool,
}

/// Binds every TCP listener and starts the event loop thread.
pub fn start(
    listen: &[SocketAddr],
    shared: &Arc<Shared>,
    idle: Duration,
    max_conns: usize,
) -> Result<(JoinHandle<()>, Vec<SocketAddr>), StartError> {
    let mut listeners = Vec::new();
    let mut bound = Vec::new();
    for &addr in listen {
        let l = TcpListener::bind(addr).map_err(|e| StartError::bind(addr, "tcp", e))?;
        bound.push(
            l.local_addr()
                .map_err(|e| StartError::bind(addr, "tcp", e))?,
        );
        listeners.push(l);
    }
    let counters = shared.new_counters();
    let shared = shared.clone();
    let t = std::thread::Builder::new()
        .name("dns-tcp".into())
        .spawn(move || {
            if let Err(e) = run(listeners, shared, counters, idle, max_conns) {
                tracing::error!(error = %e, "dns tcp loop stopped");
            }
        })
        .map_err(|e| {
            StartError::bind(
                listen.first().copied().unwrap_or(([0, 0, 0, 0], 0).into()),
                "tcp",
                e,
            )
        })?;
    Ok((t, bound))
}

fn run(
    mut listeners: Vec<TcpListener>,
    shared: Arc<Shared>,
    counters: Arc<Counters>,
    idle: Duration,
    max_conns: usize,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    for (i, l) in listeners.iter_mut().enumerate() {
        poll.registry()
            .register(l, Token(LISTENER_BASE + i), Interest::READABLE)?;
    }
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(256);
    let mut last_sweep = Instant::now();
    let mut seen = SeenFilter::default();
    let tick = (idle / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));

    while !shared.stop.load(Ordering::Relaxed) {
        if let Err(e) = poll.poll(&mut events, Some(tick)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            let t = ev.token().0;
            if t >= LISTENER_BASE {
                let Some(l) = listeners.get(t - LISTENER_BASE) else {
                    continue;
                };
                accept_all(l, &poll, &mut conns, &mut free, max_conns);
                continue;
            }
            let done = match conns.get_mut(t).and_then(Option::as_mut) {
                Some(c) => !serve(c, &shared, &counters, &mut seen),
                None => false,
            };
            if done {
                close(&poll, &mut conns, &mut free, t);
            }
        }
        if last_sweep.elapsed() >= tick {
            last_sweep = Instant::now();
            for t in 0..conns.len() {
                if conns[t].as_ref().is_some_and(|c| c.last.elapsed() >= idle) {
                    close(&poll, &mut conns, &mut free, t);
                }
            }
        }
    }
    Ok(())
}

fn accept_all(
    l: &TcpListener,
    poll: &Poll,
    conns: &mut Vec<Option<Conn>>,
    free: &mut Vec<usize>,
    max_conns: usize,
) {
    loop {
        let (mut stream, peer) = match l.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                // EMFILE and friends: log, and try again on the next readiness event.
                tracing::warn!(error = %e, "dns tcp accept failed");
                return;
            }
        };
        let open = conns.iter().filter(|c| c.is_some()).count();
        if open >= max_conns {
            // Make room by closing the connection idle for longest (RFC 7766 §6.2.2).
            if let Some((oldest, _)) = conns
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.as_ref().map(|c| (i, c.last)))
                .min_by_key(|&(_, last)| last)
            {
                close(poll, conns, free, oldest);
            }
        }
        let _ = stream.set_nodelay(true);
        let slot = free.pop().unwrap_or_else(|| {
            conns.push(None);
            conns.len() - 1
        });
        if poll
            .registry()
            .register(
                &mut stream,
                Token(slot),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            free.push(slot);
            continue;
        }
        conns[slot] = Some(Conn {
            stream,
            rbuf: Vec::with_capacity(512),
            wbuf: Vec::new(),
            wpos: 0,
            last: Instant::now(),
            peer,
            read_closed: false,
        });
    }
}

fn close(poll: &Poll, conns: &mut [Option<Conn>], free: &mut Vec<usize>, t: usize) {
    if let Some(mut c) = conns.get_mut(t).and_then(Option::take) {
        let _ = poll.registry().deregister(&mut c.stream);
        free.push(t);
    }
}

/// Makes all the progress possible on one connection; false = close it.
fn serve(c: &mut Conn, shared: &Shared, counters: &Counters, seen: &mut SeenFilter) -> bool {
    loop {
        let mut progress = false;
        // Write what is queued.
        while c.wpos < c.wbuf.len() {
            match c.stream.write(&c.wbuf[c.wpos..]) {
                Ok(0) => return false,
                Ok(n) => {
                    c.wpos += n;
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        if c.wpos == c.wbuf.len() {
            c.wbuf.clear();
            c.wpos = 0;
            if c.read_closed {
                return false;
            }
        }
        // Read while the response queue has room.
        if !c.read_closed && c.wbuf.len() - c.wpos < MAX_QUEUED {
            let mut chunk = [0u8; 4096];
            let want = (MAX_MESSAGE - c.rbuf.len()).min(chunk.len());
            if want > 0 {
                match c.stream.read(&mut chunk[..want]) {
                    Ok(0) => {
                        c.read_closed = true;
                        progress = true;
                    }
                    Ok(n) => {
                        c.rbuf.extend_from_slice(&chunk[..n]);
                        c.last = Instant::now();
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                    Err(_) => return false,
                }
            }
        }
        // Answer every complete message.
        while c.rbuf.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([c.rbuf[0], c.rbuf[1]]));
            if c.rbuf.len() < 2 + len {
                break;
            }
            let table = shared.table.load();
            let mut out = Vec::with_capacity(512);
            let o = respond(
                &table,
                shared.udp_payload,
                &c.rbuf[2..2 + len],
                c.peer.ip(),
                Transport::Tcp,
                &mut out,
            );
            counters.record(&o);
            match o {
                Outcome::Dropped(_) => return false,
                Outcome::Answered { .. } => seen.note(shared, c.peer.ip()),
            }
            c.wbuf.extend_from_slice(&(out.len() as u16).to_be_bytes());
            c.wbuf.extend_from_slice(&out);
            c.rbuf.drain(..2 + len);
            c.last = Instant::now();
            progress = true;
        }
        // The peer is gone and everything owed to it is written (a partial message
        // left in `rbuf` can never complete).
        if c.read_closed && c.wbuf.is_empty() {
            return false;
        }
        if !progress {
            return true;
        }
    }
}
