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
/// Server side (`server_if`): 192.0.2.1/24 and 2001:db8::1/64. Client side
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

/// Removes labs whose test process is gone.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("pnhw-") else {
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
        remove_stale();
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
            &[
                "-6",
                "route",
                "add",
                "2001:db8:100::/40",
                "dev",
                &lab.server_if,
            ],
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

    /// Adds 802.1Q VLAN `id` on both ends, named `<if>.<id>`: 203.0.113.1/24 on the
    /// server, 203.0.113.7/24 on the client.
    pub fn add_vlan(&self, id: u16) -> (String, String) {
        let s = format!("{}.{id}", self.server_if);
        let c = format!("{}.{id}", self.client_if);
        let ids = id.to_string();
        self.ip(
            &self.server,
            &[
                "link",
                "add",
                "link",
                &self.server_if,
                "name",
                &s,
                "type",
                "vlan",
                "id",
                &ids,
            ],
        );
        self.ip(
            &self.client,
            &[
                "link",
                "add",
                "link",
                &self.client_if,
                "name",
                &c,
                "type",
                "vlan",
                "id",
                &ids,
            ],
        );
        self.ip(&self.server, &["addr", "add", "203.0.113.1/24", "dev", &s]);
        self.ip(&self.client, &["addr", "add", "203.0.113.7/24", "dev", &c]);
        self.ip(&self.server, &["link", "set", &s, "up"]);
        self.ip(&self.client, &["link", "set", &c, "up"]);
        (s, c)
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
