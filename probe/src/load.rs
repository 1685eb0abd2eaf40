//! The load agent: this box's CPU, memory and network load from /proc, and the local cache's open connections and requests/s from its admin `/stats`.
//!
//! The load reported for the POP's cache (server id = the POP name) is one fraction:
//!
//! ```text
//! load = max of the sources in [pops.probe] load_from (default: all four)
//!   cpu         = 1 - (idle + iowait) / total, over the last interval (/proc/stat)
//!   memory      = 1 - MemAvailable / MemTotal (/proc/meminfo)
//!   network     = the busiest direction of the busiest non-loopback interface with a
//!                 known link speed, as a fraction of that speed (/proc/net/dev,
//!                 /sys/class/net/IF/speed); 0 when no speed is known
//!   connections = connections.open / [pops.cache] max_connections (admin /stats)
//! ```
//!
//! clamped to 0..=1: the resource closest to exhaustion decides. Requests/s (from the
//! `requests.requests` counter) is kept for display, not in the fraction: without a
//! known capacity it is no utilisation.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use popnet_config::LoadSource;
use serde::Serialize;

/// Cumulative CPU jiffies from the first line of /proc/stat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

/// Parses the aggregate `cpu` line of /proc/stat.
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total - idle,
        total,
    })
}

/// Fraction of memory in use (1 − MemAvailable/MemTotal) from /proc/meminfo.
pub fn parse_meminfo(text: &str) -> Option<f32> {
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    };
    let total = field("MemTotal:")?;
    let avail = field("MemAvailable:")?;
    (total > 0).then(|| (1.0 - avail as f64 / total as f64).clamp(0.0, 1.0) as f32)
}

/// Received and sent bytes per interface from /proc/net/dev.
pub fn parse_net_dev(text: &str) -> NetCounters {
    let mut out = HashMap::new();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() >= 9 {
            out.insert(name.trim().to_string(), (f[0], f[8]));
        }
    }
    out
}

/// What the cache's admin `/stats` says that the load agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheFigures {
    pub open: u64,
    pub requests: u64,
}

/// Reads `connections.open` and `requests.requests` from a `/stats` JSON body.
pub fn parse_cache_stats(body: &[u8]) -> Option<CacheFigures> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(CacheFigures {
        open: v.get("connections")?.get("open")?.as_u64()?,
        requests: v.get("requests")?.get("requests")?.as_u64()?,
    })
}

/// One load sample, for reports and display.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LoadFigures {
    pub cpu: f32,
    pub memory: f32,
    pub network: f32,
    /// Open connections / max_connections of the local cache (0 when unknown).
    pub connections: f32,
    pub open_connections: Option<u64>,
    pub requests_per_s: Option<f32>,
    /// The reported fraction.
    pub load: f32,
}

/// Combines the parts `from` names as the module doc says.
pub fn load_fraction(
    cpu: f32,
    memory: f32,
    network: f32,
    connections: f32,
    from: &[LoadSource],
) -> f32 {
    from.iter()
        .map(|s| match s {
            LoadSource::Cpu => cpu,
            LoadSource::Memory => memory,
            LoadSource::Network => network,
            LoadSource::Connections => connections,
        })
        .filter(|v| v.is_finite())
        .fold(0.0f32, f32::max)
        .clamp(0.0, 1.0)
}

/// Received and sent bytes per interface.
type NetCounters = HashMap<String, (u64, u64)>;

/// Keeps the previous counters to turn them into rates.
pub struct LoadAgent {
    root: std::path::PathBuf,
    max_connections: usize,
    from: Vec<LoadSource>,
    cpu: Option<CpuTimes>,
    net: Option<(Instant, NetCounters)>,
    requests: Option<(Instant, u64)>,
}

impl LoadAgent {
    /// An agent reading `/proc` and `/sys` under `root` (`/` in production), reporting
    /// the busiest of the sources in `from`.
    pub fn new(root: &Path, max_connections: usize, from: &[LoadSource]) -> LoadAgent {
        LoadAgent {
            root: root.to_path_buf(),
            max_connections: max_connections.max(1),
            from: from.to_vec(),
            cpu: None,
            net: None,
            requests: None,
        }
    }

    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(rel)).ok()
    }

    /// Takes a sample now; `cache` is the cache's `/stats` when it could be read.
    /// `None` on the very first call (rates need two samples).
    pub fn sample(&mut self, cache: Option<CacheFigures>) -> Option<LoadFigures> {
        let now = Instant::now();
        let cpu_now = self.read("proc/stat").as_deref().and_then(parse_proc_stat);
        let cpu = match (self.cpu, cpu_now) {
            (Some(a), Some(b)) if b.total > a.total => {
                Some((b.busy.saturating_sub(a.busy)) as f32 / (b.total - a.total) as f32)
            }
            _ => None,
        };
        if cpu_now.is_some() {
            self.cpu = cpu_now;
        }
        let memory = self
            .read("proc/meminfo")
            .as_deref()
            .and_then(parse_meminfo)
            .unwrap_or(0.0);
        let net_now = self.read("proc/net/dev").map(|t| parse_net_dev(&t));
        let mut network = 0.0f32;
        if let (Some((then, prev)), Some(cur)) = (&self.net, &net_now) {
            let secs = now.duration_since(*then).as_secs_f32();
            for (name, (rx, tx)) in cur {
                if name == "lo" {
                    continue;
                }
                let Some((prx, ptx)) = prev.get(name) else {
                    continue;
                };
                let Some(mbit) = self
                    .read(&format!("sys/class/net/{name}/speed"))
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .filter(|&s| s > 0)
                else {
                    continue;
                };
                let bytes = rx.saturating_sub(*prx).max(tx.saturating_sub(*ptx));
                if secs > 0.0 {
                    let frac = bytes as f32 * 8.0 / secs / (mbit as f32 * 1e6);
                    network = network.max(frac);
                }
            }
        }
        if let Some(cur) = net_now {
            self.net = Some((now, cur));
        }
        let connections = cache.map_or(0.0, |c| c.open as f32 / self.max_connections as f32);
        let requests_per_s = match (self.requests, cache) {
            (Some((then, prev)), Some(c)) if c.requests >= prev => {
                let secs = now.duration_since(then).as_secs_f32();
                (secs > 0.0).then(|| (c.requests - prev) as f32 / secs)
            }
            _ => None,
        };
        self.requests = cache.map(|c| (now, c.requests));
        let cpu = cpu?;
        Some(LoadFigures {
            cpu,
            memory,
            network,
            connections,
            open_connections: cache.map(|c| c.open),
            requests_per_s,
            load: load_fraction(cpu, memory, network, connections, &self.from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_parsed() {
        let stat = "cpu  100 5 50 800 40 2 3 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        assert_eq!(
            parse_proc_stat(stat),
            Some(CpuTimes {
                busy: 160,
                total: 1000
            })
        );
        assert_eq!(parse_proc_stat("nothing"), None);
        let mem = "MemTotal:       8000000 kB\nMemFree:  1 kB\nMemAvailable:   6000000 kB\n";
        assert_eq!(parse_meminfo(mem), Some(0.25));
        let dev = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes\n    lo: 100 1 0 0 0 0 0 0 200 2 0 0 0 0 0 0\n  eth0: 1000 10 0 0 0 0 0 0 3000 30 0 0 0 0 0 0\n";
        let n = parse_net_dev(dev);
        assert_eq!(n["lo"], (100, 200));
        assert_eq!(n["eth0"], (1000, 3000));
    }

    #[test]
    fn cache_stats_are_read_from_the_admin_json() {
        let body = br#"{"pop":"local","connections":{"open":7,"accepted":9},"requests":{"requests":120,"hits":3}}"#;
        assert_eq!(
            parse_cache_stats(body),
            Some(CacheFigures {
                open: 7,
                requests: 120
            })
        );
        assert_eq!(parse_cache_stats(b"{}"), None);
        assert_eq!(parse_cache_stats(b"not json"), None);
    }

    #[test]
    fn the_busiest_resource_decides() {
        let all = &LoadSource::ALL;
        assert_eq!(load_fraction(0.2, 0.3, 0.0, 0.9, all), 0.9);
        assert_eq!(load_fraction(0.5, 0.1, 0.0, 0.0, all), 0.5);
        assert_eq!(load_fraction(f32::NAN, 0.1, 2.0, 0.0, all), 1.0);
        // Only the named sources count.
        let conns = &[LoadSource::Connections];
        assert_eq!(load_fraction(1.0, 0.9, 0.0, 0.25, conns), 0.25);
        assert_eq!(
            load_fraction(0.7, 0.1, 0.0, 0.25, &[LoadSource::Cpu, LoadSource::Memory]),
            0.7
        );
    }

    #[test]
    fn a_fake_proc_tree_gives_rates() {
        let dir = std::env::temp_dir().join(format!("popnet-load-{}", std::process::id()));
        let w = |rel: &str, text: &str| {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w("proc/meminfo", "MemTotal: 1000 kB\nMemAvailable: 900 kB\n");
        w("proc/stat", "cpu  0 0 0 100 0 0 0 0\n");
        w(
            "proc/net/dev",
            "h\nh\n eth0: 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
        );
        w("sys/class/net/eth0/speed", "1\n");
        let mut a = LoadAgent::new(&dir, 100, &LoadSource::ALL);
        assert!(a.sample(None).is_none(), "the first sample has no rate");
        w("proc/stat", "cpu  30 0 10 160 0 0 0 0\n");
        // 125 kB in well under a second on a 1 Mbit/s link: saturated.
        w(
            "proc/net/dev",
            "h\nh\n eth0: 125000 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
        );
        let f = a
            .sample(Some(CacheFigures {
                open: 20,
                requests: 5,
            }))
            .unwrap();
        assert_eq!(f.cpu, 0.4);
        assert!((f.memory - 0.1).abs() < 1e-6);
        assert!(f.network > 1.0, "{f:?}");
        assert_eq!(f.connections, 0.2);
        assert_eq!(f.load, 1.0);
        assert_eq!(f.open_connections, Some(20));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
