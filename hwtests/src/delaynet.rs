//! Namespaces joined by a userspace IPv4 router with a real one-way delay per namespace (this kernel has no netem), removed on drop even when a test fails.
//!
//! Every namespace ("site") gets a TUN device holding its addresses, with routes for the
//! documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) through it. A
//! router thread in the test process reads the packets every site sends, and writes each
//! to the site that owns its destination address after the sender's delay plus the
//! receiver's delay: a packet between sites A and B spends `delay(A) + delay(B)` in
//! flight each way, so their round trip is twice that. A site can also be cut off (every
//! packet to or from it dropped) and restored, like a link going down.
//!
//! The kernel has no `sch_netem` (CONFIG_NET_SCH_NETEM is off), so `tc netem` cannot be
//! used here; the packets are still real, sent and received by the kernel's own stacks.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::run;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The TUN device's name inside every site.
pub const TUN: &str = "pntun";

/// One namespace of a [`DelayNet`].
#[derive(Debug, Clone)]
pub struct Site {
    pub name: String,
    /// The namespace (`ip netns` name).
    pub ns: String,
    pub addrs: Vec<Ipv4Addr>,
}

#[derive(Default)]
struct Links {
    delay: Vec<Duration>,
    down: Vec<bool>,
}

/// Counters of the router.
#[derive(Debug, Default)]
pub struct RouterStats {
    pub forwarded: AtomicU64,
    /// No site owns the destination (or not IPv4).
    pub unroutable: AtomicU64,
    /// Sender or receiver cut off.
    pub cut: AtomicU64,
}

/// Sites joined by the delaying router.
pub struct DelayNet {
    sites: Vec<Site>,
    links: Arc<Mutex<Links>>,
    pub stats: Arc<RouterStats>,
    stop: Arc<AtomicBool>,
    router: Option<JoinHandle<()>>,
}

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// Opens a TUN device named [`TUN`] in the calling thread's network namespace.
fn open_tun() -> OwnedFd {
    let path = c"/dev/net/tun";
    // SAFETY: `path` is NUL-terminated; the returned fd is owned below.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    assert!(fd >= 0, "/dev/net/tun: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just opened and is not owned elsewhere.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..TUN.len()].copy_from_slice(TUN.as_bytes());
    // SAFETY: TUNSETIFF reads a `struct ifreq`, which `IfReq` lays out (name, flags,
    // padding to its full size); `req` lives across the call.
    let rc = unsafe { libc::ioctl(owned.as_raw_fd(), TUNSETIFF, &mut req) };
    assert_eq!(rc, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    owned
}

impl DelayNet {
    /// Creates one namespace per `(name, addresses)`, each with a TUN device, and starts
    /// the router. All delays start at zero.
    pub fn new(sites: &[(&str, &[Ipv4Addr])]) -> DelayNet {
        crate::netns::remove_stale("pndl-");
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut net = DelayNet {
            sites: Vec::new(),
            links: Arc::new(Mutex::new(Links::default())),
            stats: Arc::default(),
            stop: Arc::default(),
            router: None,
        };
        let mut fds = Vec::new();
        for (name, addrs) in sites {
            let site = Site {
                name: name.to_string(),
                ns: format!("pndl-{pid}-{n}-{name}"),
                addrs: addrs.to_vec(),
            };
            run(&["ip", "netns", "add", &site.ns]);
            // Pushed before configuring, so Drop removes it if anything below fails.
            net.sites.push(site.clone());
            let fd = crate::netns::in_netns(&site.ns, open_tun);
            fds.push(fd);
            net.ip(name, &["link", "set", "lo", "up"]);
            net.ip(name, &["link", "set", TUN, "up"]);
            for a in addrs.iter() {
                net.ip(name, &["addr", "add", &format!("{a}/32"), "dev", TUN]);
            }
            let src = addrs[0].to_string();
            for range in ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"] {
                net.ip(
                    name,
                    &["route", "add", range, "dev", TUN, "src", src.as_str()],
                );
            }
        }
        {
            let mut l = net.links.lock().unwrap();
            l.delay = vec![Duration::ZERO; sites.len()];
            l.down = vec![false; sites.len()];
        }
        let owners: Vec<(Ipv4Addr, usize)> = net
            .sites
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.addrs.iter().map(move |a| (*a, i)))
            .collect();
        let (links, stats, stop) = (net.links.clone(), net.stats.clone(), net.stop.clone());
        net.router = Some(
            std::thread::Builder::new()
                .name("delaynet-router".into())
                .spawn(move || route(fds, owners, links, stats, stop))
                .expect("spawn the router thread"),
        );
        net
    }

    fn index(&self, site: &str) -> usize {
        self.sites
            .iter()
            .position(|s| s.name == site)
            .unwrap_or_else(|| panic!("no site {site}"))
    }

    pub fn site(&self, site: &str) -> &Site {
        &self.sites[self.index(site)]
    }

    /// The namespace of `site`.
    pub fn ns(&self, site: &str) -> &str {
        &self.site(site).ns
    }

    /// One-way delay of every packet sent or received by `site`.
    pub fn set_delay(&self, site: &str, d: Duration) {
        let i = self.index(site);
        self.links.lock().unwrap().delay[i] = d;
    }

    /// Cuts `site` off (true) or restores it (false).
    pub fn set_down(&self, site: &str, down: bool) {
        let i = self.index(site);
        self.links.lock().unwrap().down[i] = down;
    }

    /// `ip -n NS ARGS...` for `site`.
    pub fn ip(&self, site: &str, args: &[&str]) {
        let ns = self.ns(site).to_string();
        let mut all = vec!["ip", "-n", ns.as_str()];
        all.extend_from_slice(args);
        run(&all);
    }

    /// A command to run inside `site`'s namespace.
    pub fn cmd(&self, site: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.ns(site)]).arg(program);
        c
    }

    /// Runs `f` on a thread inside `site`'s namespace.
    pub fn within<T: Send + 'static>(
        &self,
        site: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        crate::netns::in_netns(self.ns(site), f)
    }
}

impl Drop for DelayNet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.router.take() {
            let _ = r.join();
        }
        for s in &self.sites {
            let _ = Command::new("ip").args(["netns", "del", &s.ns]).status();
        }
    }
}

/// A packet waiting out its delay.
struct Pending {
    due: Instant,
    seq: u64,
    to: usize,
    packet: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Pending) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Pending) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Pending) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(o.due, o.seq))
    }
}

/// The router loop: read from every site, hold each packet for its delay, deliver.
fn route(
    fds: Vec<OwnedFd>,
    owners: Vec<(Ipv4Addr, usize)>,
    links: Arc<Mutex<Links>>,
    stats: Arc<RouterStats>,
    stop: Arc<AtomicBool>,
) {
    let mut queue: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut buf = vec![0u8; 65_536];
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|f| libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        // Deliver what is due.
        while queue.peek().is_some_and(|p| p.0.due <= now) {
            let Reverse(p) = queue.pop().expect("peeked");
            // SAFETY: `packet` is valid for its length; the fd is an open TUN device
            // owned by `fds` for the whole loop.
            let n = unsafe {
                libc::write(
                    fds[p.to].as_raw_fd(),
                    p.packet.as_ptr().cast(),
                    p.packet.len(),
                )
            };
            if n >= 0 {
                stats.forwarded.fetch_add(1, Ordering::Relaxed);
            }
        }
        let wait = queue
            .peek()
            .map_or(Duration::from_millis(20), |p| {
                p.0.due.saturating_duration_since(now)
            })
            .min(Duration::from_millis(20));
        // Round up so a sub-millisecond wait does not spin.
        let ms = (wait.as_micros().div_ceil(1000)) as libc::c_int;
        // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structs.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if rc <= 0 {
            continue;
        }
        for (from, pfd) in pfds.iter().enumerate() {
            if pfd.revents & libc::POLLIN == 0 {
                continue;
            }
            loop {
                // SAFETY: `buf` is valid for writes of its length; the fd is open.
                let n = unsafe { libc::read(pfd.fd, buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    break;
                }
                let packet = &buf[..n as usize];
                // IPv4 only: version nibble 4 and a full fixed header (20 bytes).
                if packet.len() < 20 || packet[0] >> 4 != 4 {
                    stats.unroutable.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
                let Some(&(_, to)) = owners.iter().find(|(a, _)| *a == dst) else {
                    stats.unroutable.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let (delay, cut) = {
                    let l = links.lock().unwrap_or_else(|p| p.into_inner());
                    (l.delay[from] + l.delay[to], l.down[from] || l.down[to])
                };
                if cut {
                    stats.cut.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                seq += 1;
                queue.push(Reverse(Pending {
                    due: Instant::now() + delay,
                    seq,
                    to,
                    packet: packet.to_vec(),
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_take_twice_the_two_delays_and_a_cut_site_is_unreachable() {
        if !crate::privileged("delaynet round trip") {
            return;
        }
        let a: Ipv4Addr = "192.0.2.1".parse().unwrap();
        let b: Ipv4Addr = "198.51.100.1".parse().unwrap();
        let net = DelayNet::new(&[("a", &[a]), ("b", &[b])]);
        net.set_delay("a", Duration::from_millis(30));
        net.set_delay("b", Duration::from_millis(10));
        let server = net.within("b", move || {
            let s = std::net::UdpSocket::bind((b, 7000)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            })
        });
        drop(server);
        let rtt = |net: &DelayNet| {
            net.within("a", move || {
                let s = std::net::UdpSocket::bind((a, 0)).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let t = Instant::now();
                s.send_to(b"ping", (b, 7000)).unwrap();
                let mut buf = [0u8; 64];
                s.recv_from(&mut buf).ok().map(|_| t.elapsed())
            })
        };
        let r = rtt(&net).expect("an echo through the router");
        assert!(
            r >= Duration::from_millis(80) && r < Duration::from_millis(200),
            "round trip {r:?}, want 2 × (30 + 10) ms"
        );
        net.set_down("b", true);
        assert_eq!(rtt(&net), None, "a cut site answered");
        net.set_down("b", false);
        assert!(rtt(&net).is_some());
        assert!(net.stats.cut.load(Ordering::Relaxed) >= 1);
    }
}
