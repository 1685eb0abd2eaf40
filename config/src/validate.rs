//! Semantic validation: every problem in a parsed config, each with its path and what to do.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use dns_wire::Name;
use ipnet::IpNet;

use crate::error::Problem;
use crate::model::*;
use crate::records::{RecordValue, parse_record};

/// Longest TTL accepted anywhere (one week).
pub const MAX_TTL: u32 = 604_800;
/// Most addresses one answer may carry.
pub const MAX_ANSWERS: usize = 16;
/// Most views a network may define (view ids are 16-bit; 0 is the default view).
pub const MAX_VIEWS: usize = 4096;

struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    /// Parses a domain name, recording a problem if it is not one.
    fn name(&mut self, path: &str, text: &str) -> Option<Name> {
        match Name::from_ascii(text) {
            Ok(n) if n.label_count() > 0 => Some(n),
            Ok(_) => {
                self.add(
                    path,
                    "the root name is not allowed here",
                    "write a full domain name such as \"www.example.com\"",
                );
                None
            }
            Err(e) => {
                self.add(
                    path,
                    format!("{text:?} is not a domain name ({e})"),
                    "write a name such as \"www.example.com\"",
                );
                None
            }
        }
    }

    fn unique<'a>(&mut self, path: &str, what: &str, names: impl Iterator<Item = &'a str>) {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, n) in names.enumerate() {
            let key = n.to_ascii_lowercase();
            if let Some(first) = seen.get(&key) {
                self.add(
                    format!("{path}[{i}].name"),
                    format!("{what} {n:?} is defined twice (first at {path}[{first}])"),
                    format!("give every {what} a unique name"),
                );
            } else {
                seen.insert(key, i);
            }
        }
    }

    /// Names that become DNS labels or ids: lowercase letters, digits, hyphens.
    fn label(&mut self, path: &str, text: &str) {
        let ok = !text.is_empty()
            && text.len() <= 63
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !text.starts_with('-')
            && !text.ends_with('-');
        if !ok {
            self.add(
                path,
                format!("{text:?} is not a valid name here"),
                "use 1-63 lowercase letters, digits and inner hyphens, e.g. \"iad1\"",
            );
        }
    }

    fn fraction(&mut self, path: &str, v: f64, max: f64) {
        if !(v.is_finite() && v >= 0.0 && v <= max) {
            self.add(
                path,
                format!("{v} is out of range"),
                format!("use a number from 0 to {max}"),
            );
        }
    }

    fn nonnegative(&mut self, path: &str, v: f64) {
        if !(v.is_finite() && v >= 0.0) {
            self.add(
                path,
                format!("{v} is not a non-negative number"),
                "use a number >= 0",
            );
        }
    }

    fn ttl(&mut self, path: &str, ttl: u32) {
        if ttl > MAX_TTL {
            self.add(
                path,
                format!("TTL {ttl} is longer than a week"),
                format!("use at most {MAX_TTL} seconds"),
            );
        }
    }

    fn serving_address(&mut self, path: &str, ip: &IpAddr) {
        if ip.is_unspecified() || ip.is_multicast() {
            self.add(
                path,
                format!("{ip} cannot be handed out to clients"),
                "write the unicast address clients should connect to",
            );
        }
    }
}

/// Checks a parsed config and returns every problem found (empty = valid).
pub fn validate(cfg: &Config) -> Vec<Problem> {
    let mut p = Problems(Vec::new());
    let net_zone = network(&mut p, cfg);
    dns_settings(&mut p, &cfg.dns);
    probes(&mut p, &cfg.probes);
    views(&mut p, &cfg.views);
    pops(&mut p, cfg);
    customers(&mut p, cfg, net_zone.as_ref());
    log_servers(&mut p, cfg);
    configd(&mut p, cfg);
    p.0
}

fn network(p: &mut Problems, cfg: &Config) -> Option<Name> {
    let n = &cfg.network;
    if n.name.trim().is_empty() {
        p.add(
            "network.name",
            "the network has no name",
            "set network.name, e.g. \"popnet\"",
        );
    }
    if n.version == 0 {
        p.add(
            "network.version",
            "version 0 is reserved",
            "start at version 1 and raise it with every change",
        );
    }
    let zone = p.name("network.zone", &n.zone);
    if let Some(h) = &n.hostmaster {
        p.name("network.hostmaster", h);
    }
    p.unique(
        "network.admins",
        "admin",
        n.admins.iter().map(|a| a.name.as_str()),
    );
    for (i, a) in n.admins.iter().enumerate() {
        if a.name.trim().is_empty() {
            p.add(
                format!("network.admins[{i}].name"),
                "the admin has no name",
                "name the admin, e.g. \"alice\"",
            );
        }
        match base64::engine::general_purpose::STANDARD.decode(a.key.trim()) {
            Ok(k) if k.len() == 32 => {}
            Ok(k) => p.add(
                format!("network.admins[{i}].key"),
                format!("an ed25519 public key is 32 bytes, this is {}", k.len()),
                "paste the public key printed by `popctl config keygen`",
            ),
            Err(e) => p.add(
                format!("network.admins[{i}].key"),
                format!("not base64 ({e})"),
                "paste the public key printed by `popctl config keygen`",
            ),
        }
    }
    let s = &n.soa;
    for (field, v) in [
        ("ttl", s.ttl),
        ("refresh", s.refresh),
        ("retry", s.retry),
        ("expire", s.expire),
    ] {
        if v == 0 {
            p.add(
                format!("network.soa.{field}"),
                "must not be 0",
                "use a positive number of seconds",
            );
        }
    }
    if s.negative_ttl > 86_400 {
        p.add(
            "network.soa.negative_ttl",
            format!("{} s is too long to cache negative answers", s.negative_ttl),
            "use at most 86400 (RFC 2308 suggests 1-3 hours)",
        );
    }
    zone
}

fn dns_settings(p: &mut Problems, d: &DnsSettings) {
    if !(512..=4096).contains(&d.udp_payload) {
        p.add(
            "dns.udp_payload",
            format!("{} is outside 512..4096", d.udp_payload),
            "use 1232 (the DNS flag day value)",
        );
    }
    if d.tcp_max_connections == 0 {
        p.add(
            "dns.tcp_max_connections",
            "0 would refuse every TCP client",
            "use a positive number such as 1024",
        );
    }
    if d.tcp_idle_timeout < Duration::from_millis(100) {
        p.add(
            "dns.tcp_idle_timeout",
            "shorter than 100ms",
            "use a few seconds, e.g. \"10s\"",
        );
    }
    if d.workers > 1024 {
        p.add(
            "dns.workers",
            format!("{} workers is too many", d.workers),
            "use 0 (one per core) or the number of cores",
        );
    }
}

fn probes(p: &mut Problems, s: &ProbeSettings) {
    if s.interval.is_zero() {
        p.add("probes.interval", "must not be 0", "use e.g. \"1s\"");
    }
    if s.timeout.is_zero() || s.timeout > s.interval {
        p.add(
            "probes.timeout",
            "must be positive and no longer than probes.interval",
            "use e.g. half the interval",
        );
    }
    if s.stale_after <= s.interval {
        p.add(
            "probes.stale_after",
            "must be longer than probes.interval, or every figure goes stale between two reports",
            "use about three intervals",
        );
    }
    check(p, "probes.cache_check", &s.cache_check);
    if s.resolver_refresh < Duration::from_secs(1) {
        p.add(
            "probes.resolver_refresh",
            "shorter than 1s",
            "use e.g. \"60s\"",
        );
    }
    if s.resolver_stale_after <= s.resolver_refresh {
        p.add(
            "probes.resolver_stale_after",
            "must be longer than probes.resolver_refresh, or resolver latencies go stale between measurements",
            "use about three refresh intervals",
        );
    }
    if s.resolver_max == 0 || s.resolver_rate == 0 {
        p.add(
            "probes",
            "resolver_max and resolver_rate must be positive",
            "leave them out for the defaults (100000 resolvers, 1000/s)",
        );
    }
    if s.overload_response < Duration::from_millis(10) {
        p.add(
            "probes.overload_response",
            "must be at least 10ms: every origin would count as overloaded",
            "use the response time at which an origin is saturated, e.g. \"1s\"",
        );
    }
}

fn check(p: &mut Problems, path: &str, c: &Check) {
    if c.port == Some(0) {
        p.add(
            format!("{path}.port"),
            "port 0 cannot be probed",
            "leave it out to probe the service port",
        );
    }
    match c.kind {
        CheckKind::Http => {
            if !c.path.starts_with('/') {
                p.add(
                    format!("{path}.path"),
                    format!("{:?} does not start with '/'", c.path),
                    "write an absolute path such as \"/health\"",
                );
            }
            if !(100..=599).contains(&c.expect_status) {
                p.add(
                    format!("{path}.expect_status"),
                    format!("{} is not an HTTP status", c.expect_status),
                    "use e.g. 200",
                );
            }
            if let Some(h) = &c.body_xxh3
                && (h.len() != 16 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                p.add(
                    format!("{path}.body_xxh3"),
                    format!("{h:?} is not 16 hex digits"),
                    "write the xxh3-64 of the expected body in hex",
                );
            }
        }
        CheckKind::Dns => match &c.query_name {
            Some(n) => {
                p.name(&format!("{path}.query_name"), n);
            }
            None => p.add(
                format!("{path}.query_name"),
                "a dns check needs a name to query",
                "set query_name",
            ),
        },
        CheckKind::Tcp | CheckKind::None => {
            if c.body_contains.is_some() || c.body_xxh3.is_some() {
                p.add(
                    path,
                    "body checks only apply to kind = \"http\"",
                    "set kind = \"http\" or remove the body check",
                );
            }
        }
    }
}

fn views(p: &mut Problems, views: &[View]) {
    if views.len() > MAX_VIEWS {
        p.add(
            "views",
            format!("{} views is more than {MAX_VIEWS}", views.len()),
            "merge views",
        );
    }
    p.unique("views", "view", views.iter().map(|v| v.name.as_str()));
    let mut owner: HashMap<IpNet, usize> = HashMap::new();
    for (i, v) in views.iter().enumerate() {
        p.label(&format!("views[{i}].name"), &v.name);
        if v.prefixes.is_empty() {
            p.add(
                format!("views[{i}].prefixes"),
                "the view has no prefixes",
                "list the resolver prefixes of this view, e.g. [\"198.51.100.0/24\"]",
            );
        }
        for (j, net) in v.prefixes.iter().enumerate() {
            if net.trunc() != *net {
                p.add(
                    format!("views[{i}].prefixes[{j}]"),
                    format!("{net} has host bits set"),
                    format!("write {}", net.trunc()),
                );
            }
            if let Some(&first) = owner.get(&net.trunc()) {
                p.add(
                    format!("views[{i}].prefixes[{j}]"),
                    format!("{net} is also a prefix of views[{first}]"),
                    "a prefix belongs to one view; remove one of them",
                );
            } else {
                owner.insert(net.trunc(), i);
            }
        }
    }
}

fn pops(p: &mut Problems, cfg: &Config) {
    if cfg.pops.is_empty() {
        p.add(
            "pops",
            "the network has no POP",
            "add at least one [[pops]] table",
        );
        return;
    }
    p.unique("pops", "POP", cfg.pops.iter().map(|x| x.name.as_str()));
    if !cfg.pops.iter().any(|x| x.dns.is_some()) {
        p.add(
            "pops",
            "no POP runs a DNS server, so nothing would answer",
            "add a [pops.dns] table to at least one POP",
        );
    }
    for (i, pop) in cfg.pops.iter().enumerate() {
        let at = format!("pops[{i}]");
        p.label(&format!("{at}.name"), &pop.name);
        if pop.region.trim().is_empty() {
            p.add(
                format!("{at}.region"),
                "the POP has no region",
                "set region, e.g. \"us-east\"",
            );
        }
        p.nonnegative(&format!("{at}.cost"), pop.cost);
        if let Some(pr) = &pop.probe
            && let Some(admin) = pr.admin
            && !admin.ip().is_loopback()
            && pr.admin_token.is_none()
        {
            p.add(
                format!("{at}.probe.admin_token"),
                format!("the probe admin listener {admin} is not on loopback and has no token"),
                "set admin_token (e.g. `openssl rand -hex 32`) or listen on 127.0.0.1",
            );
        }
        if let Some(pr) = &pop.probe
            && pr.load_from.is_empty()
        {
            p.add(
                format!("{at}.probe.load_from"),
                "no load source: the POP would always report itself idle",
                "list at least one of \"cpu\", \"memory\", \"network\", \"connections\", or leave it out for all four",
            );
        }
        if let Some(d) = &pop.dns {
            if d.listen.is_empty() {
                p.add(
                    format!("{at}.dns.listen"),
                    "the DNS server listens nowhere",
                    "add an address such as \"192.0.2.1:53\"",
                );
            }
            let addrs = d.effective_addresses();
            if d.addresses.is_empty() && addrs.iter().any(|a| a.is_unspecified()) {
                p.add(
                    format!("{at}.dns.addresses"),
                    "the DNS server listens on a wildcard address, which cannot be published as its NS address",
                    "list its public addresses in addresses = [...]",
                );
            }
            for (j, a) in d.addresses.iter().enumerate() {
                p.serving_address(&format!("{at}.dns.addresses[{j}]"), a);
            }
            for (j, ifc) in d.xdp_interfaces.iter().enumerate() {
                if ifc.is_empty()
                    || ifc.len() > 15
                    || ifc.contains(['/', ' ', '\t'])
                    || ifc == "."
                    || ifc == ".."
                {
                    p.add(
                        format!("{at}.dns.xdp_interfaces[{j}]"),
                        format!("{ifc:?} is not a network interface name"),
                        "write the name `ip link` shows, e.g. \"eth0\" (at most 15 characters)",
                    );
                }
            }
            if !d.xdp_interfaces.is_empty() {
                let ports: std::collections::BTreeSet<u16> =
                    d.listen.iter().map(|a| a.port()).collect();
                if ports.len() > 1 {
                    p.add(
                        format!("{at}.dns.listen"),
                        "the XDP fast path answers one port, but the listen addresses use several",
                        "listen on one port, or leave xdp_interfaces empty",
                    );
                }
            }
        }
        if let Some(c) = &pop.cache {
            if c.addresses.is_empty() {
                p.add(
                    format!("{at}.cache.addresses"),
                    "the cache has no address to hand out",
                    "list the addresses clients connect to",
                );
            }
            for (j, a) in c.addresses.iter().enumerate() {
                p.serving_address(&format!("{at}.cache.addresses[{j}]"), a);
            }
            if c.listen.is_empty() {
                p.add(
                    format!("{at}.cache.listen"),
                    "the cache listens nowhere",
                    "add an address such as \"192.0.2.1:80\"",
                );
            }
            if let Some(chk) = &c.check {
                check(p, &format!("{at}.cache.check"), chk);
            }
            if !c.admin.ip().is_loopback() && c.admin_token.is_none() {
                p.add(
                    format!("{at}.cache.admin_token"),
                    format!("the cache admin listener {} is not on loopback and has no token, so anyone reaching it could purge", c.admin),
                    "set admin_token (e.g. `openssl rand -hex 32`) or listen on 127.0.0.1",
                );
            }
            if c.ram_bytes < 1 << 20 {
                p.add(
                    format!("{at}.cache.ram_bytes"),
                    format!("{} bytes is less than 1 MiB", c.ram_bytes),
                    "give the RAM tier at least 1048576 bytes, e.g. 268435456 (256 MiB)",
                );
            }
            if c.disk_path.is_none()
                && (c.max_object_bytes == 0 || c.max_object_bytes > c.ram_bytes)
            {
                p.add(
                    format!("{at}.cache.max_object_bytes"),
                    format!(
                        "{} must be positive and at most ram_bytes ({})",
                        c.max_object_bytes, c.ram_bytes
                    ),
                    "use a fraction of ram_bytes, e.g. ram_bytes / 8",
                );
            }
            if let Some(path) = &c.disk_path {
                const SEGMENT_SLACK: u64 = 128 << 10;
                let seg = c.disk_segment_bytes;
                if path.as_os_str().is_empty() {
                    p.add(
                        format!("{at}.cache.disk_path"),
                        "the disk tier's path is empty",
                        "write a file path such as \"/var/cache/popnet/store\" (or a block device), or leave disk_path out for RAM only",
                    );
                }
                if seg < 1 << 20 || !seg.is_multiple_of(4096) {
                    p.add(
                        format!("{at}.cache.disk_segment_bytes"),
                        format!("{seg} is not a multiple of 4096 of at least 1 MiB"),
                        "use e.g. 67108864 (64 MiB)",
                    );
                } else if c.disk_bytes.saturating_sub(4096) / seg < 4 {
                    p.add(
                        format!("{at}.cache.disk_bytes"),
                        format!(
                            "{} bytes hold fewer than 4 segments of {seg} bytes",
                            c.disk_bytes
                        ),
                        format!(
                            "give the disk tier at least {} bytes, or make disk_segment_bytes smaller",
                            4 * seg + 4096
                        ),
                    );
                }
                if c.max_object_bytes == 0 || c.max_object_bytes + SEGMENT_SLACK > seg / 2 {
                    p.add(
                        format!("{at}.cache.max_object_bytes"),
                        format!(
                            "{} must be positive and fit in half a disk segment less 128 KiB ({})",
                            c.max_object_bytes,
                            (seg / 2).saturating_sub(SEGMENT_SLACK)
                        ),
                        format!(
                            "raise disk_segment_bytes to at least {} or lower max_object_bytes",
                            (2 * (c.max_object_bytes + SEGMENT_SLACK)).div_ceil(1 << 20) << 20
                        ),
                    );
                }
            }
            if c.max_connections == 0 {
                p.add(
                    format!("{at}.cache.max_connections"),
                    "0 would refuse every client",
                    "use a positive number such as 10000",
                );
            }
            if c.workers > 1024 {
                p.add(
                    format!("{at}.cache.workers"),
                    format!("{} workers is too many", c.workers),
                    "use 0 (one per core) or the number of cores",
                );
            }
            for (field, d) in [
                ("head_timeout", c.head_timeout),
                ("body_timeout", c.body_timeout),
                ("idle_timeout", c.idle_timeout),
                ("send_timeout", c.send_timeout),
                ("origin_connect_timeout", c.origin_connect_timeout),
                ("origin_timeout", c.origin_timeout),
            ] {
                if d < Duration::from_millis(100) {
                    p.add(
                        format!("{at}.cache.{field}"),
                        "shorter than 100ms",
                        "use at least \"100ms\"; a few seconds is usual",
                    );
                }
            }
            if c.access_log
                .as_ref()
                .is_some_and(|l| l.as_os_str().is_empty())
            {
                p.add(
                    format!("{at}.cache.access_log"),
                    "the access log path is empty",
                    "write a file path, or leave access_log out for no log",
                );
            }
        }
        if let Some(l) = &pop.log_server
            && !cfg.log_servers.iter().any(|s| &s.name == l)
        {
            p.add(
                format!("{at}.log_server"),
                format!("no log server is named {l:?}"),
                "name one of the [[log_servers]]",
            );
        }
    }
}

fn customers(p: &mut Problems, cfg: &Config, net_zone: Option<&Name>) {
    p.unique(
        "customers",
        "customer",
        cfg.customers.iter().map(|c| c.name.as_str()),
    );
    // Every zone of the network, with the customer that owns it.
    let mut zones: Vec<(Name, String)> = Vec::new();
    if let Some(z) = net_zone {
        zones.push((z.clone(), "network.zone".to_string()));
    }
    // Every name that holds a balanced domain or records, for conflict checks.
    let mut domains: HashMap<Name, String> = HashMap::new();
    let mut cnames: HashMap<Name, String> = HashMap::new();
    let mut others: HashMap<Name, String> = HashMap::new();
    let mut addr_records: Vec<(Name, String)> = Vec::new();

    for (ci, c) in cfg.customers.iter().enumerate() {
        let at = format!("customers[{ci}]");
        p.label(&format!("{at}.name"), &c.name);
        p.nonnegative(&format!("{at}.fee_per_gb"), c.fee_per_gb);
        if c.zones.is_empty() {
            p.add(
                format!("{at}.zones"),
                "the customer has no zone",
                "list the zones delegated to the network, e.g. [\"shop.example\"]",
            );
        }
        let mut own: Vec<Name> = Vec::new();
        for (zi, z) in c.zones.iter().enumerate() {
            let path = format!("{at}.zones[{zi}]");
            let Some(name) = p.name(&path, z) else {
                continue;
            };
            if let Some((_, other)) = zones
                .iter()
                .find(|(o, _)| name.is_subdomain_of(o) || o.is_subdomain_of(&name))
            {
                p.add(&path, format!("zone {z} overlaps {other}"), "zones of the network must not contain one another; serve the names inside one zone");
                continue;
            }
            zones.push((name.clone(), path));
            own.push(name);
        }
        let inside = |n: &Name| own.iter().any(|z| n.is_subdomain_of(z));

        p.unique(
            &format!("{at}.origins"),
            "origin",
            c.origins.iter().map(|o| o.name.as_str()),
        );
        for (oi, o) in c.origins.iter().enumerate() {
            let op = format!("{at}.origins[{oi}]");
            p.label(&format!("{op}.name"), &o.name);
            if o.addresses.is_empty() {
                p.add(
                    format!("{op}.addresses"),
                    "the origin has no address",
                    "list its addresses, e.g. [\"203.0.113.10\"]",
                );
            }
            for (j, a) in o.addresses.iter().enumerate() {
                p.serving_address(&format!("{op}.addresses[{j}]"), a);
            }
            if o.port == 0 {
                p.add(
                    format!("{op}.port"),
                    "port 0",
                    "write the origin's HTTP port, e.g. 80",
                );
            }
            if !(o.weight.is_finite() && o.weight > 0.0) {
                p.add(
                    format!("{op}.weight"),
                    format!("{} is not a positive number", o.weight),
                    "use a relative capacity such as 1.0",
                );
            }
            p.nonnegative(&format!("{op}.cost"), o.cost);
            if let Some(chk) = &o.check {
                check(p, &format!("{op}.check"), chk);
            }
        }

        for (di, d) in c.domains.iter().enumerate() {
            let dp = format!("{at}.domains[{di}]");
            if let Some(name) = p.name(&format!("{dp}.name"), &d.name) {
                if !inside(&name) {
                    p.add(
                        format!("{dp}.name"),
                        format!("{} is not inside any zone of customer {:?}", d.name, c.name),
                        "add its zone to the customer's zones or fix the name",
                    );
                } else if let Some(first) = domains.insert(name.to_lowercase(), dp.clone()) {
                    p.add(
                        format!("{dp}.name"),
                        format!("{} is already balanced by {first}", d.name),
                        "define each domain once",
                    );
                }
            }
            let origins = match &d.origins {
                Some(list) => {
                    for (j, o) in list.iter().enumerate() {
                        if !c.origins.iter().any(|x| &x.name == o) {
                            p.add(
                                format!("{dp}.origins[{j}]"),
                                format!("customer {:?} has no origin named {o:?}", c.name),
                                "name one of the customer's [[customers.origins]]",
                            );
                        }
                    }
                    list.len()
                }
                None => c.origins.len(),
            };
            if origins == 0 {
                let why = match d.kind {
                    DomainKind::Dynamic => "a dynamic domain is answered with its origins",
                    DomainKind::Static => "the caches have nowhere to fetch its content from",
                };
                p.add(
                    format!("{dp}.origins"),
                    format!("no origin servers ({why})"),
                    format!("add [[customers.origins]] to customer {:?}", c.name),
                );
            }
            match d.kind {
                DomainKind::Static => {
                    let serving: Vec<&Pop> = match &d.pops {
                        Some(list) => list
                            .iter()
                            .enumerate()
                            .filter_map(|(j, name)| {
                                match cfg.pops.iter().find(|x| &x.name == name) {
                                    Some(pop) if pop.cache.is_some() => Some(pop),
                                    Some(_) => {
                                        p.add(
                                            format!("{dp}.pops[{j}]"),
                                            format!("POP {name:?} runs no cache"),
                                            "name a POP with a [pops.cache] table",
                                        );
                                        None
                                    }
                                    None => {
                                        p.add(
                                            format!("{dp}.pops[{j}]"),
                                            format!("no POP is named {name:?}"),
                                            "name one of the [[pops]]",
                                        );
                                        None
                                    }
                                }
                            })
                            .collect(),
                        None => cfg.pops.iter().filter(|x| x.cache.is_some()).collect(),
                    };
                    if serving.is_empty() && d.pops.as_ref().is_none_or(|l| l.is_empty()) {
                        p.add(
                            format!("{dp}.pops"),
                            "no POP cache serves this static domain",
                            "add a [pops.cache] table to a POP, or make the domain dynamic",
                        );
                    }
                }
                DomainKind::Dynamic => {
                    if d.pops.is_some() {
                        p.add(
                            format!("{dp}.pops"),
                            "a dynamic domain is served by origins, not POP caches",
                            "remove pops, or make the domain static",
                        );
                    }
                }
            }
            policy(p, &format!("{dp}.policy"), &d.policy);
        }

        for (ri, r) in c.records.iter().enumerate() {
            let rp = format!("{at}.records[{ri}]");
            let Some(name) = p.name(&format!("{rp}.name"), &r.name) else {
                continue;
            };
            if !inside(&name) {
                p.add(
                    format!("{rp}.name"),
                    format!("{} is not inside any zone of customer {:?}", r.name, c.name),
                    "add its zone to the customer's zones or fix the name",
                );
                continue;
            }
            p.ttl(&format!("{rp}.ttl"), r.ttl);
            match parse_record(&r.rtype, &r.value) {
                Err(e) => p.add(format!("{rp}.value"), e.problem, e.fix),
                Ok(RecordValue::Cname(_)) => {
                    if own.contains(&name) {
                        p.add(
                            &rp,
                            "a CNAME cannot stand at a zone apex (RFC 1912 §2.4)",
                            "use A/AAAA records at the apex",
                        );
                    }
                    if let Some(first) = cnames.insert(name.to_lowercase(), rp.clone()) {
                        p.add(
                            &rp,
                            format!("a second CNAME for {} (first at {first})", r.name),
                            "a name has at most one CNAME",
                        );
                    }
                }
                Ok(v) => {
                    if matches!(v, RecordValue::A(_) | RecordValue::Aaaa(_)) {
                        addr_records.push((name.to_lowercase(), rp.clone()));
                    }
                    others.entry(name.to_lowercase()).or_insert(rp.clone());
                }
            }
        }
    }

    // A CNAME owns its name alone (RFC 1034 §3.6.2).
    for (name, at) in &cnames {
        if let Some(other) = others.get(name) {
            p.add(
                at,
                format!("{name} has a CNAME and other records ({other})"),
                "remove the CNAME or the other records",
            );
        }
        if let Some(d) = domains.get(name) {
            p.add(
                at,
                format!("{name} has a CNAME and is a balanced domain ({d})"),
                "remove the CNAME or the domain",
            );
        }
    }
    for (name, at) in &addr_records {
        if let Some(d) = domains.get(name) {
            p.add(
                at,
                format!("{name} is a balanced domain ({d}); its addresses come from the selector"),
                "remove the A/AAAA record",
            );
        }
    }
}

fn policy(p: &mut Problems, at: &str, pol: &Policy) {
    p.ttl(&format!("{at}.ttl"), pol.ttl);
    if pol.answers == 0 || pol.answers > MAX_ANSWERS {
        p.add(
            format!("{at}.answers"),
            format!("{} addresses per answer", pol.answers),
            format!("use 1 to {MAX_ANSWERS}"),
        );
    }
    if pol.persistence > Duration::from_secs(86_400) {
        p.add(
            format!("{at}.persistence"),
            "longer than a day",
            "use at most \"1d\"",
        );
    }
    p.fraction(&format!("{at}.hysteresis"), pol.hysteresis, 1.0);
    let w = &pol.weights;
    for (name, v) in [
        ("health", w.health),
        ("load", w.load),
        ("latency", w.latency),
        ("loss", w.loss),
        ("cost", w.cost),
    ] {
        p.nonnegative(&format!("{at}.weights.{name}"), v);
    }
    if w.health + w.load + w.latency + w.loss + w.cost <= 0.0 {
        p.add(
            format!("{at}.weights"),
            "every weight is 0, so no server would be preferred",
            "give at least one metric a positive weight",
        );
    }
}

fn log_servers(p: &mut Problems, cfg: &Config) {
    p.unique(
        "log_servers",
        "log server",
        cfg.log_servers.iter().map(|l| l.name.as_str()),
    );
    let mut managed: HashMap<&str, usize> = HashMap::new();
    for (i, l) in cfg.log_servers.iter().enumerate() {
        p.label(&format!("log_servers[{i}].name"), &l.name);
        let mut seen = HashSet::new();
        for (j, c) in l.customers.iter().enumerate() {
            if !cfg.customers.iter().any(|x| &x.name == c) {
                p.add(
                    format!("log_servers[{i}].customers[{j}]"),
                    format!("no customer is named {c:?}"),
                    "name one of the [[customers]]",
                );
            }
            if !seen.insert(c) {
                p.add(
                    format!("log_servers[{i}].customers[{j}]"),
                    format!("{c:?} is listed twice"),
                    "list each customer once",
                );
            } else if let Some(first) = managed.insert(c.as_str(), i)
                && first != i
            {
                p.add(
                    format!("log_servers[{i}].customers[{j}]"),
                    format!(
                        "{c:?} is already kept by log_servers[{first}] ({:?})",
                        cfg.log_servers[first].name
                    ),
                    "give every customer one log server",
                );
            }
        }
        if l.address.port() == 0 || l.address.ip().is_unspecified() {
            p.add(
                format!("log_servers[{i}].address"),
                format!("{} is not an address senders can connect to", l.address),
                "write the log server's own address and port, e.g. \"192.0.2.100:5400\"",
            );
        }
        if l.data_dir.as_os_str().is_empty() {
            p.add(
                format!("log_servers[{i}].data_dir"),
                "the data directory is empty",
                "write a directory such as \"/var/lib/popnet/log\"",
            );
        }
        if l.minute_retention < Duration::from_secs(3600) {
            p.add(
                format!("log_servers[{i}].minute_retention"),
                "minute rollups must be kept at least an hour (the last-hour graphs read them)",
                "use e.g. \"3days\"",
            );
        }
        if l.raw_retention < Duration::from_secs(3600) {
            p.add(
                format!("log_servers[{i}].raw_retention"),
                "raw records must be kept at least an hour (a file holds one hour)",
                "use e.g. \"90days\"",
            );
        }
        if let Some(f) = &l.origin_form {
            if f.admin_key.as_os_str().is_empty() {
                p.add(
                    format!("log_servers[{i}].origin_form.admin_key"),
                    "the admin key's path is empty",
                    "write the path of a key made by `popctl config keygen`, e.g. \"/etc/popnet/netview.pem\"",
                );
            }
            if f.max_origins == 0 || f.max_origins > 1000 {
                p.add(
                    format!("log_servers[{i}].origin_form.max_origins"),
                    format!("{} origins per customer is out of range", f.max_origins),
                    "use 1 to 1000 (default 16)",
                );
            }
            if cfg.configd.is_none() {
                p.add(
                    format!("log_servers[{i}].origin_form"),
                    "the origin form pushes changes through configd, but the config has no [configd] tree",
                    "add [configd] with masters and [[configd.boxes]], or remove origin_form",
                );
            }
        }
    }
    if !cfg.log_servers.is_empty() {
        if cfg.logs.key.is_none() {
            p.add(
                "logs.key",
                "there are log servers but no key authenticating record batches",
                "add key = \"<hex>\" to [logs] (generate one with `openssl rand -hex 32`)",
            );
        }
        // Log servers are named <name>.log.<zone>; a POP named "log" would own that node.
        for (i, pop) in cfg.pops.iter().enumerate() {
            if pop.name == "log" {
                p.add(
                    format!("pops[{i}].name"),
                    "\"log\" is taken by the log servers' names (<server>.log.<zone>)",
                    "rename the POP",
                );
            }
        }
    }
    let l = &cfg.logs;
    if l.spool_dir.as_os_str().is_empty() {
        p.add(
            "logs.spool_dir",
            "the spool directory is empty",
            "write a directory such as \"/var/spool/popnet\"",
        );
    }
    if l.batch_records == 0 || l.batch_records > 100_000 {
        p.add(
            "logs.batch_records",
            format!("{} is out of range", l.batch_records),
            "use 1 to 100000 records per batch, e.g. 5000",
        );
    }
    if l.batch_interval < Duration::from_millis(10) || l.batch_interval > Duration::from_secs(300) {
        p.add(
            "logs.batch_interval",
            "a batch must be sealed between 10 ms and 5 minutes after its first record",
            "use e.g. \"1s\"",
        );
    }
    if l.spool_max_bytes < 1 << 20 {
        p.add(
            "logs.spool_max_bytes",
            format!("{} bytes cannot hold a batch", l.spool_max_bytes),
            "use at least 1048576, e.g. 1073741824 (1 GiB)",
        );
    }
}

fn configd(p: &mut Problems, cfg: &Config) {
    let Some(d) = &cfg.configd else {
        return;
    };
    if cfg.network.admins.is_empty() {
        p.add(
            "network.admins",
            "the config is distributed by [configd] but names no admin, so no box would accept any config",
            "add [[network.admins]] with the public key printed by `popctl config keygen`",
        );
    }
    if d.boxes.is_empty() {
        p.add(
            "configd.boxes",
            "no box runs a config daemon",
            "add [[configd.boxes]] with name, address and controls",
        );
        return;
    }
    p.unique(
        "configd.boxes",
        "box",
        d.boxes.iter().map(|b| b.name.as_str()),
    );
    let mut addresses: HashMap<std::net::SocketAddr, usize> = HashMap::new();
    let mut pops_seen: HashMap<&str, usize> = HashMap::new();
    // The box that controls each box, as first seen.
    let mut parent: HashMap<&str, usize> = HashMap::new();
    for (i, b) in d.boxes.iter().enumerate() {
        let at = format!("configd.boxes[{i}]");
        p.label(&format!("{at}.name"), &b.name);
        if b.address.port() == 0 || b.address.ip().is_unspecified() || b.address.ip().is_multicast()
        {
            p.add(
                format!("{at}.address"),
                format!("{} cannot be connected to", b.address),
                "write the address and port other boxes reach this box's configd at, e.g. \"192.0.2.10:5390\" (`popnet configd --listen` can listen on a wildcard)",
            );
        }
        if let Some(first) = addresses.insert(b.address, i) {
            p.add(
                format!("{at}.address"),
                format!(
                    "{} is also the address of configd.boxes[{first}]",
                    b.address
                ),
                "give every box its own address",
            );
        }
        if let Some(pop) = &b.pop {
            if cfg.pop(pop).is_none() {
                p.add(
                    format!("{at}.pop"),
                    format!("no POP is named {pop:?}"),
                    "name one of the [[pops]], or leave pop out for a box without POP services",
                );
            } else if let Some(first) = pops_seen.insert(pop.as_str(), i) {
                p.add(
                    format!("{at}.pop"),
                    format!("POP {pop:?} is already on configd.boxes[{first}]"),
                    "put each POP on one box",
                );
            }
        }
        let mut own = HashSet::new();
        for (j, c) in b.controls.iter().enumerate() {
            let cp = format!("{at}.controls[{j}]");
            if !own.insert(c.as_str()) {
                p.add(&cp, format!("{c:?} is listed twice"), "list each box once");
                continue;
            }
            if c == &b.name {
                p.add(
                    &cp,
                    "a box cannot control itself",
                    "remove it from controls",
                );
            } else if d.get(c).is_none() {
                p.add(
                    &cp,
                    format!("no box is named {c:?}"),
                    "name one of the [[configd.boxes]]",
                );
            } else if d.masters.iter().any(|m| m == c) {
                p.add(
                    &cp,
                    format!("{c:?} is a master, which popctl itself sends to"),
                    "remove it from controls or from configd.masters",
                );
            } else if let Some(&first) = parent.get(c.as_str()) {
                p.add(
                    &cp,
                    format!("{c:?} is already controlled by {:?}", d.boxes[first].name),
                    "a box has one parent; remove one of them",
                );
            } else {
                parent.insert(c.as_str(), i);
            }
        }
        match (&d.tls, &b.tls_cert, &b.tls_key) {
            (Some(_), Some(_), Some(_)) | (None, None, None) => {}
            (Some(_), _, _) => p.add(
                &at,
                "with [configd.tls] every box needs tls_cert and tls_key",
                format!(
                    "give the paths (on that box) of its PEM certificate for {} and its key",
                    cfg.configd_tls_name(&b.name)
                ),
            ),
            (None, _, _) => p.add(
                &at,
                "tls_cert and tls_key are set but there is no [configd.tls]",
                "add [configd.tls] with the CA, or remove tls_cert and tls_key",
            ),
        }
        for (field, path) in [("tls_cert", &b.tls_cert), ("tls_key", &b.tls_key)] {
            if path.as_ref().is_some_and(|x| x.as_os_str().is_empty()) {
                p.add(
                    format!("{at}.{field}"),
                    "the path is empty",
                    "write the file's path on that box",
                );
            }
        }
    }
    if d.masters.is_empty() {
        p.add(
            "configd.masters",
            "no master, so a push would reach no box",
            "name the boxes popctl sends to first, e.g. [\"iad1\"]",
        );
    }
    let mut masters = HashSet::new();
    for (i, m) in d.masters.iter().enumerate() {
        if !masters.insert(m.as_str()) {
            p.add(
                format!("configd.masters[{i}]"),
                format!("{m:?} is listed twice"),
                "list each master once",
            );
        } else if d.get(m).is_none() {
            p.add(
                format!("configd.masters[{i}]"),
                format!("no box is named {m:?}"),
                "name one of the [[configd.boxes]]",
            );
        }
    }
    // Every box must hang below a master (a box controlled by nobody, or a ring of
    // boxes controlling each other, would never get a pushed config).
    let mut reached: HashSet<&str> = HashSet::new();
    let mut todo: Vec<&str> = d.masters.iter().map(String::as_str).collect();
    while let Some(n) = todo.pop() {
        if !reached.insert(n) {
            continue;
        }
        if let Some(b) = d.get(n) {
            todo.extend(b.controls.iter().map(String::as_str));
        }
    }
    for (i, b) in d.boxes.iter().enumerate() {
        if !reached.contains(b.name.as_str()) {
            p.add(
                format!("configd.boxes[{i}]"),
                format!(
                    "box {:?} is below no master, so no push would reach it",
                    b.name
                ),
                "add it to the controls of a box, or to configd.masters",
            );
        }
    }
    for (i, pop) in cfg.pops.iter().enumerate() {
        if !pops_seen.contains_key(pop.name.as_str()) {
            p.add(
                format!("pops[{i}]"),
                format!(
                    "POP {:?} is on no box of [configd], so it would never get a pushed config",
                    pop.name
                ),
                format!("set pop = {:?} on the box that runs it", pop.name),
            );
        }
    }
    if d.timeout < Duration::from_millis(100) || d.timeout > Duration::from_secs(600) {
        p.add(
            "configd.timeout",
            "must be from 100ms to 10m",
            "use a few seconds, e.g. \"10s\"",
        );
    }
    if d.recovery_interval < Duration::from_millis(100) {
        p.add(
            "configd.recovery_interval",
            "shorter than 100ms",
            "use a few seconds, e.g. \"5s\"",
        );
    }
    if let Some(tls) = &d.tls
        && let Err(e) = pem_certificates(&tls.ca)
    {
        p.add(
            "configd.tls.ca",
            e,
            "paste the CA certificate in PEM (-----BEGIN CERTIFICATE----- ...) between triple quotes",
        );
    }
}

/// Checks that `text` is one or more PEM certificates; returns how many.
fn pem_certificates(text: &str) -> Result<usize, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut rest = text;
    let mut n = 0;
    while let Some(start) = rest.find(BEGIN) {
        let body = &rest[start + BEGIN.len()..];
        let Some(end) = body.find(END) else {
            return Err(format!("certificate {} has no {END} line", n + 1));
        };
        let b64: String = body[..end].split_whitespace().collect();
        match base64::engine::general_purpose::STANDARD.decode(&b64) {
            Ok(der) if der.len() > 32 => n += 1,
            Ok(_) => return Err(format!("certificate {} is too short", n + 1)),
            Err(e) => return Err(format!("certificate {} is not base64 ({e})", n + 1)),
        }
        rest = &body[end + END.len()..];
    }
    if n == 0 {
        return Err("no PEM certificate found".to_string());
    }
    Ok(n)
}
