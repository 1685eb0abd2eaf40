//! The popnet configuration tree: one TOML file describing the whole network, loaded and validated.
//!
//! Every daemon and `popctl` read the network through this crate. [`Config::from_toml`]
//! parses and validates; a config that is returned is consistent (every reference
//! resolves, every name parses), and every problem found is reported with its path and
//! what to do, not only the first.

pub mod duration;
pub mod edit;
mod error;
mod model;
mod records;
mod secret;
mod validate;

use std::net::IpAddr;
use std::path::Path;

pub use error::{ConfigError, Problem};
pub use model::*;
pub use records::{MAX_TXT_BYTES, RecordProblem, RecordValue, parse_record};
pub use secret::{MIN_SECRET_BYTES, Secret};
pub use validate::{MAX_ANSWERS, MAX_TTL, MAX_VIEWS, validate};

/// The built-in demo network run by `popnet up` without `--config`: one POP on loopback
/// and the demo customer (`www.demo.example` dynamic, `static.demo.example` static).
pub const DEMO_TOML: &str = include_str!("../../examples/single-pop.toml");

/// [`DEMO_TOML`] without its log server (`[logs]`, `[[log_servers]]` and the POP's
/// `log_server`), for tests and configs that bring their own.
pub fn demo_without_logs() -> String {
    let cut = DEMO_TOML
        .find("\n# The log server:")
        .unwrap_or(DEMO_TOML.len());
    DEMO_TOML[..cut]
        .replace(
            "# Its records go to this log server (found as log.local.popnet.example in popnet's DNS).\n",
            "",
        )
        .replace("log_server = \"main\"\n", "")
        + "\n"
}

impl Config {
    /// Parses and validates a config. `origin` names the source in error messages (a
    /// file path, or `<built-in demo>`).
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| syntax(origin, text, ".", &e))?;
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            syntax(origin, text, &path, e.inner())
        })?;
        let problems = validate(&cfg);
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid {
                origin: origin.to_string(),
                problems,
            })
        }
    }

    /// Reads, parses and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, &path.display().to_string())
    }

    /// The built-in demo config (see [`DEMO_TOML`]).
    pub fn demo() -> Config {
        match Config::from_toml(DEMO_TOML, "<built-in demo>") {
            Ok(c) => c,
            // The demo is part of the binary and covered by tests; a broken one is a
            // build defect, not an input error.
            Err(e) => panic!("the built-in demo config is invalid: {e}"),
        }
    }

    /// The POP named `name`.
    pub fn pop(&self, name: &str) -> Option<&Pop> {
        self.pops.iter().find(|p| p.name == name)
    }

    /// The customer named `name`.
    pub fn customer(&self, name: &str) -> Option<&Customer> {
        self.customers.iter().find(|c| c.name == name)
    }

    /// SOA RNAME of every zone.
    pub fn hostmaster(&self) -> String {
        match &self.network.hostmaster {
            Some(h) => h.clone(),
            None => format!("hostmaster.{}", self.network.zone.trim_end_matches('.')),
        }
    }

    /// The POP this box is, given an explicit choice or, failing that, the only POP that
    /// runs the service `has`.
    pub fn local_pop(
        &self,
        explicit: Option<&str>,
        has: impl Fn(&Pop) -> bool,
    ) -> Result<&Pop, String> {
        match explicit {
            Some(name) => self.pop(name).ok_or_else(|| {
                let names: Vec<&str> = self.pops.iter().map(|p| p.name.as_str()).collect();
                format!(
                    "no POP is named {name:?}; the config has {}",
                    names.join(", ")
                )
            }),
            None => {
                let with: Vec<&Pop> = self.pops.iter().filter(|p| has(p)).collect();
                match with.as_slice() {
                    [one] => Ok(one),
                    [] => Err("no POP in the config runs this service".to_string()),
                    many => Err(format!(
                        "the config has {} POPs running this service ({}); choose one with --pop",
                        many.len(),
                        many.iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                }
            }
        }
    }
}

impl Configd {
    /// The box named `name`.
    pub fn get(&self, name: &str) -> Option<&ConfigBox> {
        self.boxes.iter().find(|b| b.name == name)
    }

    /// The box that controls `name` (none for a master or an unknown box).
    pub fn parent(&self, name: &str) -> Option<&ConfigBox> {
        self.boxes
            .iter()
            .find(|b| b.controls.iter().any(|c| c == name))
    }

    /// The boxes `name` sends a pushed config to, in config order.
    pub fn children(&self, name: &str) -> Vec<&ConfigBox> {
        match self.get(name) {
            Some(b) => b.controls.iter().filter_map(|c| self.get(c)).collect(),
            None => Vec::new(),
        }
    }

    /// The masters, in config order.
    pub fn master_boxes(&self) -> Vec<&ConfigBox> {
        self.masters.iter().filter_map(|m| self.get(m)).collect()
    }

    /// The parent of `name`, its parent, and so on up to a master (bounded, so a
    /// config that was never validated cannot loop).
    pub fn ancestors(&self, name: &str) -> Vec<&ConfigBox> {
        let mut out: Vec<&ConfigBox> = Vec::new();
        let mut at = name;
        while let Some(p) = self.parent(at) {
            if out.iter().any(|b| b.name == p.name) || out.len() > self.boxes.len() {
                break;
            }
            out.push(p);
            at = &p.name;
        }
        out
    }

    /// `name` and every box below it, parents before children.
    pub fn subtree(&self, name: &str) -> Vec<&ConfigBox> {
        let mut out: Vec<&ConfigBox> = Vec::new();
        let mut todo: Vec<&str> = vec![name];
        while let Some(n) = todo.pop() {
            if out.iter().any(|b| b.name == n) || out.len() > self.boxes.len() {
                continue;
            }
            if let Some(b) = self.get(n) {
                out.push(b);
                todo.extend(b.controls.iter().rev().map(String::as_str));
            }
        }
        out
    }

    /// The box that runs POP `pop`'s services.
    pub fn box_of_pop(&self, pop: &str) -> Option<&ConfigBox> {
        self.boxes.iter().find(|b| b.pop.as_deref() == Some(pop))
    }
}

impl Config {
    /// The name a config daemon's TLS certificate must carry:
    /// `configd.<box>.<network.zone>`.
    pub fn configd_tls_name(&self, box_name: &str) -> String {
        format!(
            "configd.{box_name}.{}",
            self.network.zone.trim_end_matches('.')
        )
    }
}

impl Customer {
    /// The origin named `name`.
    pub fn origin(&self, name: &str) -> Option<&Origin> {
        self.origins.iter().find(|o| o.name == name)
    }
}

impl Domain {
    /// The origins serving this domain, in config order.
    pub fn origins<'c>(&self, customer: &'c Customer) -> Vec<&'c Origin> {
        match &self.origins {
            Some(names) => names.iter().filter_map(|n| customer.origin(n)).collect(),
            None => customer.origins.iter().collect(),
        }
    }

    /// The POPs whose caches serve this (static) domain, in config order; empty for a
    /// dynamic domain.
    pub fn pops<'c>(&self, cfg: &'c Config) -> Vec<&'c Pop> {
        if self.kind == DomainKind::Dynamic {
            return Vec::new();
        }
        match &self.pops {
            Some(names) => names
                .iter()
                .filter_map(|n| cfg.pop(n))
                .filter(|p| p.cache.is_some())
                .collect(),
            None => cfg.pops.iter().filter(|p| p.cache.is_some()).collect(),
        }
    }
}

impl DnsService {
    /// Addresses published for this name server: `addresses`, or the listen addresses.
    pub fn effective_addresses(&self) -> Vec<IpAddr> {
        if !self.addresses.is_empty() {
            return self.addresses.clone();
        }
        let mut v: Vec<IpAddr> = Vec::new();
        for a in &self.listen {
            if !v.contains(&a.ip()) {
                v.push(a.ip());
            }
        }
        v
    }
}

/// The id of a POP's cache in metric reports: the POP name.
pub fn pop_server_id(pop: &str) -> String {
    pop.to_string()
}

/// The id of a customer origin in metric reports: `customer/origin`.
pub fn origin_server_id(customer: &str, origin: &str) -> String {
    format!("{customer}/{origin}")
}

fn syntax(origin: &str, text: &str, path: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = match e.span() {
        Some(span) => line_col(text, span.start),
        None => (0, 0),
    };
    ConfigError::Syntax {
        origin: origin.to_string(),
        line,
        column,
        path: if path.is_empty() {
            ".".to_string()
        } else {
            path.to_string()
        },
        message: e.message().trim().to_string(),
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
