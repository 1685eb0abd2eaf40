//! Two network namespaces joined by a veth pair, with documentation addresses, removed on drop even when a test fails.
//!
//! Names carry the test process's pid (`pnhw-<pid>-<n>-s`), so a lab left behind by a
//! killed test run is recognised and removed by the next one.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs a command, panicking with its output if it fails.
pub fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A server namespace and a client namespace joined by one veth pair.
///
/// Server side (`server_if`): 192.0.2.1/24, 203.0.113.1/32 and 2001:db8::1/64. Client side
/// (`client_if`): 198.51.100.7 (view east) and 198.51.100.200 (view west), 2001:db8:100::7
/// and 2001:db8:200::7, with routes to the server through the link.
pub struct Lab {
    pub server: String,
    pub client: String,
    pub server_if: String,
    pub client_if: String,
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the namespaces named `<prefix><pid>-…` whose test process is gone (a test
/// killed before its cleanup ran).
pub(crate) fn remove_stale(prefix: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !pid_alive(pid) {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

impl Lab {
    /// Creates the namespaces, the veth pair, addresses and routes.
    pub fn new() -> Lab {
        remove_stale("pnhw-");
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let lab = Lab {
            server: format!("pnhw-{pid}-{n}-s"),
            client: format!("pnhw-{pid}-{n}-c"),
            server_if: format!("pv{}s{n}", pid % 100_000),
            client_if: format!("pv{}c{n}", pid % 100_000),
        };
        run(&["ip", "netns", "add", &lab.server]);
        run(&["ip", "netns", "add", &lab.client]);
        run(&[
            "ip",
            "link",
            "add",
            &lab.server_if,
            "netns",
            &lab.server,
            "type",
            "veth",
            "peer",
            "name",
            &lab.client_if,
            "netns",
            &lab.client,
        ]);
        for (ns, ifc) in [(&lab.server, &lab.server_if), (&lab.client, &lab.client_if)] {
            lab.ip(ns, &["link", "set", "lo", "up"]);
            lab.ip(ns, &["link", "set", ifc, "up"]);
        }
        lab.ip(
            &lab.server,
            &["addr", "add", "192.0.2.1/24", "dev", &lab.server_if],
        );
        // Served for raw 802.1Q-tagged frames only (this kernel has no VLAN devices).
        lab.ip(
            &lab.server,
            &["addr", "add", "203.0.113.1/32", "dev", &lab.server_if],
        );
        // A veth hands a UDP datagram from a local socket to the peer's NAPI (where XDP
        // runs) only if the peer does UDP GRO forwarding; otherwise it goes straight to
        // the stack and bypasses XDP (kernel veth_skb_is_eligible_for_gro()).
        run(&[
            "ip",
            "netns",
            "exec",
            &lab.server,
            "ethtool",
            "-K",
            &lab.server_if,
            "rx-udp-gro-forwarding",
            "on",
        ]);
        lab.ip(
            &lab.server,
            &[
                "-6",
                "addr",
                "add",
                "2001:db8::1/64",
                "dev",
                &lab.server_if,
                "nodad",
            ],
        );
        lab.ip(
            &lab.server,
            &["route", "add", "198.51.100.0/24", "dev", &lab.server_if],
        );
        lab.ip(
            &lab.server,
            &["-6", "route", "add", "2001:db8::/32", "dev", &lab.server_if],
        );
        for a in ["198.51.100.7/32", "198.51.100.200/32"] {
            lab.ip(&lab.client, &["addr", "add", a, "dev", &lab.client_if]);
        }
        for a in ["2001:db8:100::7/128", "2001:db8:200::7/128"] {
            lab.ip(
                &lab.client,
                &["-6", "addr", "add", a, "dev", &lab.client_if, "nodad"],
            );
        }
        lab.ip(
            &lab.client,
            &[
                "route",
                "add",
                "192.0.2.0/24",
                "dev",
                &lab.client_if,
                "src",
                "198.51.100.7",
            ],
        );
        lab.ip(
            &lab.client,
            &[
                "-6",
                "route",
                "add",
                "2001:db8::/64",
                "dev",
                &lab.client_if,
                "src",
                "2001:db8:100::7",
            ],
        );
        lab
    }

    /// `ip -n NS ARGS...`
    pub fn ip(&self, ns: &str, args: &[&str]) -> Output {
        let mut all = vec!["ip", "-n", ns];
        all.extend_from_slice(args);
        run(&all)
    }

    /// A command run inside namespace `ns`.
    pub fn cmd(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// The MAC address of `iface` in `ns`.
    pub fn mac(&self, ns: &str, iface: &str) -> [u8; 6] {
        let out = self.ip(ns, &["-o", "link", "show", "dev", iface]);
        let text = String::from_utf8_lossy(&out.stdout);
        let hex = text
            .split("link/ether ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .unwrap_or_else(|| panic!("no MAC in {text}"));
        let mut mac = [0u8; 6];
        for (m, h) in mac.iter_mut().zip(hex.split(':')) {
            *m = u8::from_str_radix(h, 16).unwrap_or_else(|e| panic!("MAC {hex}: {e}"));
        }
        mac
    }

    /// True if `iface` in `ns` has an XDP program attached (any mode).
    pub fn has_xdp(&self, ns: &str, iface: &str) -> bool {
        let out = self.ip(ns, &["link", "show", "dev", iface]);
        String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
    }

    /// True while the namespace exists.
    pub fn exists(name: &str) -> bool {
        let out = run(&["ip", "netns", "list"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name))
    }
}

impl Default for Lab {
    fn default() -> Lab {
        Lab::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it (and so the pair).
        for ns in [&self.server, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a thread that has joined network namespace `ns`: sockets it opens live
/// there.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        use std::os::fd::AsRawFd;
        // SAFETY: `file` is an open namespace file; setns only changes this thread's
        // network namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Path of a workspace binary (`popnet`, `popctl`), built by `cargo test --workspace`.
pub fn bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // Tests run from target/<profile>/deps, binaries (benchmarks) from target/<profile>.
    let mut dir = exe.parent().expect("target dir");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target dir");
    }
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build -p {})",
        p.display(),
        if name == "popctl" { "popctl" } else { name }
    );
    p
}

/// A frame received by [`raw_exchange`], with the 802.1Q tag the kernel took off it.
pub struct Received {
    pub frame: Vec<u8>,
    /// The VLAN TCI, if the frame carried a tag (the receive path strips tags into
    /// metadata before packet sockets see the frame; `PACKET_AUXDATA` reports it).
    pub vlan: Option<u16>,
}

impl Received {
    /// The frame as it was on the wire, with its tag put back.
    pub fn wire(&self) -> Vec<u8> {
        match self.vlan {
            None => self.frame.clone(),
            Some(tci) => {
                let mut f = self.frame.clone();
                f.splice(12..12, [0x81, 0x00, (tci >> 8) as u8, tci as u8]);
                f
            }
        }
    }
}

/// Sends `frame` out of `iface` with an AF_PACKET socket (the calling thread must be in
/// the interface's namespace) and returns the first frame received on it within
/// `timeout` that `want` accepts.
pub fn raw_exchange(
    iface: &str,
    frame: &[u8],
    timeout: std::time::Duration,
    want: impl Fn(&Received) -> bool,
) -> Option<Received> {
    let name = std::ffi::CString::new(iface).expect("interface name");
    // SAFETY: `name` is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(ifindex != 0, "no interface {iface} in this namespace");
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket creation; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: sockaddr_ll is plain old data; zero is a valid start.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `sll` is a valid sockaddr_ll of `len` bytes; `fd` is our socket.
    let rc = unsafe { libc::bind(fd, (&sll as *const libc::sockaddr_ll).cast(), len) };
    assert_eq!(rc, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
    let one: libc::c_int = 1;
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 50_000,
    };
    // SAFETY: valid option values of the sizes given, on our socket.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_AUXDATA,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    // SAFETY: `frame` is valid for its length; `sll` addresses the bound interface.
    let sent = unsafe {
        libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sll as *const libc::sockaddr_ll).cast(),
            len,
        )
    };
    assert_eq!(
        sent,
        frame.len() as isize,
        "send raw frame: {}",
        std::io::Error::last_os_error()
    );
    let deadline = std::time::Instant::now() + timeout;
    let mut buf = vec![0u8; 4096];
    let mut control = [0u64; 32];
    let mut found = None;
    while std::time::Instant::now() < deadline {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain old data; the pointers set below outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: `msg` points at `iov` (into `buf`) and `control`, both alive here.
        let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
        if n <= 0 {
            continue;
        }
        let mut vlan = None;
        // SAFETY: walking the control messages the kernel wrote into `control`, with the
        // libc CMSG macros that stay within `msg_controllen`.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                    let aux = std::ptr::read_unaligned(
                        libc::CMSG_DATA(c) as *const libc::tpacket_auxdata
                    );
                    if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                        vlan = Some(aux.tp_vlan_tci);
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        let r = Received {
            frame: buf[..n as usize].to_vec(),
            vlan,
        };
        if want(&r) {
            found = Some(r);
            break;
        }
    }
    // SAFETY: `fd` is ours and not used after this.
    unsafe { libc::close(fd) };
    found
}

/// A child process killed (and reaped) on drop, so a failing test leaves none behind.
pub struct Guard(pub std::process::Child);

impl Guard {
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
