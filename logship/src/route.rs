//! Which log server keeps which customer's records, and finding a log server's address through popnet's own DNS.
//!
//! A record of a customer that a `[[log_servers]]` entry lists goes to that log server;
//! any other record (no customer, or a customer nobody lists) goes to the log server of
//! the POP it comes from (`[[pops]] log_server`). A destination is reached by its DNS
//! name in the network's zone, as the seed's WebCache asks for `log.<name>.<zone>`:
//! the POP's own log server is `log.<pop>.<zone>`, any other `<server>.log.<zone>`. The
//! port is the one in the config (DNS A/AAAA records carry none).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use dns_wire::{Header, Message, Name, Question, RClass, RData, RType, Rcode};
use popnet_config::Config;

/// A log server records are shipped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Its name in `[[log_servers]]`.
    pub name: String,
    /// Its DNS name in the network's zone.
    pub dns_name: String,
    /// The configured address (its port is used; its IP when DNS cannot be asked).
    pub address: SocketAddr,
}

/// Routing of records by customer.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    pub destinations: Vec<Destination>,
    by_customer: HashMap<String, usize>,
    /// The POP's own log server, for everything else.
    fallback: Option<usize>,
}

impl Routes {
    /// The routes of records coming from `pop`.
    pub fn build(cfg: &Config, pop: &str) -> Routes {
        let zone = cfg.network.zone.trim_end_matches('.');
        let own = cfg.pop(pop).and_then(|p| p.log_server.as_deref());
        let mut r = Routes::default();
        for l in &cfg.log_servers {
            let dns_name = if own == Some(l.name.as_str()) {
                format!("log.{pop}.{zone}")
            } else {
                format!("{}.log.{zone}", l.name)
            };
            let i = r.destinations.len();
            r.destinations.push(Destination {
                name: l.name.clone(),
                dns_name,
                address: l.address,
            });
            for c in &l.customers {
                r.by_customer.insert(c.clone(), i);
            }
            if own == Some(l.name.as_str()) {
                r.fallback = Some(i);
            }
        }
        r
    }

    /// The destination (index into [`Routes::destinations`]) of a customer's records.
    pub fn route(&self, customer: &str) -> Option<usize> {
        self.by_customer.get(customer).copied().or(self.fallback)
    }

    pub fn is_empty(&self) -> bool {
        self.destinations.is_empty()
    }
}

/// Why a name could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    #[error("{0:?} is not a domain name: {1}")]
    Name(String, String),
    #[error("cannot ask {server}: {source}")]
    Io {
        server: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{server} sent an answer that does not parse: {why}")]
    Malformed { server: SocketAddr, why: String },
    #[error("{server} answered {rcode} for {name}")]
    Rcode {
        server: SocketAddr,
        name: String,
        rcode: String,
    },
    #[error("{server} has no address for {name}")]
    NoAddress { server: SocketAddr, name: String },
}

/// Asks `server` (UDP, two tries) for the A and AAAA records of `name`.
pub fn resolve(
    server: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<Vec<IpAddr>, ResolveError> {
    let qname =
        Name::from_ascii(name).map_err(|e| ResolveError::Name(name.into(), e.to_string()))?;
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let io = |source| ResolveError::Io { server, source };
    let sock = UdpSocket::bind(bind).map_err(io)?;
    sock.connect(server).map_err(io)?;
    sock.set_read_timeout(Some(timeout)).map_err(io)?;
    let mut out = Vec::new();
    for qtype in [RType::A, RType::AAAA] {
        let mut id_bytes = [0u8; 2];
        getrandom::fill(&mut id_bytes).map_err(|e| io(std::io::Error::other(e.to_string())))?;
        let id = u16::from_be_bytes(id_bytes);
        let mut header = Header {
            id,
            ..Header::default()
        };
        header.set_rd(false);
        let q = Message {
            header,
            questions: vec![Question {
                name: qname.clone(),
                qtype,
                qclass: RClass::IN,
            }],
            ..Message::default()
        };
        let wire = q.encode();
        let mut buf = [0u8; 4096];
        let mut reply = None;
        'tries: for _ in 0..2 {
            sock.send(&wire).map_err(io)?;
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => match Message::decode(&buf[..n]) {
                        Ok(m) if m.header.id == id && m.header.qr() => {
                            reply = Some(m);
                            break 'tries;
                        }
                        // Not ours (a late answer to the first try): keep waiting.
                        Ok(_) => continue,
                        Err(e) => {
                            return Err(ResolveError::Malformed {
                                server,
                                why: e.to_string(),
                            });
                        }
                    },
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        continue 'tries;
                    }
                    Err(e) => return Err(io(e)),
                }
            }
        }
        let Some(m) = reply else {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}"),
            )));
        };
        let rcode = m.rcode();
        if rcode != Rcode::NOERROR {
            return Err(ResolveError::Rcode {
                server,
                name: name.into(),
                rcode: rcode.to_string(),
            });
        }
        for r in &m.answers {
            match r.rdata {
                RData::A(a) => out.push(IpAddr::V4(a)),
                RData::Aaaa(a) => out.push(IpAddr::V6(a)),
                _ => {}
            }
        }
    }
    if out.is_empty() {
        return Err(ResolveError::NoAddress {
            server,
            name: name.into(),
        });
    }
    Ok(out)
}

/// The DNS server this POP's daemons ask: `[logs] resolver`, else the POP's own DNS
/// server, else the first DNS server of the network.
pub fn resolver_for(cfg: &Config, pop: &str) -> Option<SocketAddr> {
    if let Some(r) = cfg.logs.resolver {
        return Some(r);
    }
    let own = cfg.pop(pop).and_then(|p| p.dns.as_ref());
    let any = || cfg.pops.iter().find_map(|p| p.dns.as_ref());
    own.or_else(any)
        .and_then(|d| d.listen.first().copied())
        .map(|a| {
            if a.ip().is_unspecified() {
                let lo: IpAddr = if a.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                };
                SocketAddr::new(lo, a.port())
            } else {
                a
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        let text = popnet_config::demo_without_logs()
            + r#"
[logs]
key = "00112233445566778899aabbccddeeff"

[[log_servers]]
name = "main"
address = "127.0.0.1:5400"

[[log_servers]]
name = "special"
address = "127.0.0.2:5400"
customers = ["demo"]
"#;
        let text = text.replace(
            "name = \"local\"\nregion = \"local\"\n",
            "name = \"local\"\nregion = \"local\"\nlog_server = \"main\"\n",
        );
        Config::from_toml(&text, "test").unwrap()
    }

    #[test]
    fn customers_go_to_their_log_server_and_the_rest_to_the_pops() {
        let r = Routes::build(&cfg(), "local");
        assert_eq!(r.destinations.len(), 2);
        let d = &r.destinations[r.route("demo").unwrap()];
        assert_eq!(d.name, "special");
        assert_eq!(d.dns_name, "special.log.popnet.example");
        let d = &r.destinations[r.route("-").unwrap()];
        assert_eq!(d.name, "main");
        assert_eq!(d.dns_name, "log.local.popnet.example");
        assert_eq!(r.route("nobody"), r.route("-"));
    }

    #[test]
    fn the_resolver_is_the_pops_dns_server() {
        assert_eq!(
            resolver_for(&cfg(), "local"),
            Some("127.0.0.1:5353".parse().unwrap())
        );
    }
}
