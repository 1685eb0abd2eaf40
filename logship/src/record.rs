//! The records the daemons ship, as the log server reads them: one JSON object per line.
//!
//! Every record names its `customer` ("-" for none): that decides which log server
//! keeps it. The cache writes [`AccessRecord`]s (its access-log lines), the DNS server
//! [`DnsRecord`]s (answers handed out per domain, view and server, counted over a few
//! seconds), the probes [`ProbeRecord`]s (one per finished check round).

use serde::{Deserialize, Serialize};

/// The customer of records that belong to none (unknown hosts, POP caches' checks).
pub const NO_CUSTOMER: &str = "-";

/// Just the routing field of any record.
#[derive(Debug, Deserialize)]
pub struct Routing<'a> {
    #[serde(borrow)]
    pub customer: std::borrow::Cow<'a, str>,
}

/// One HTTP request served by a POP cache (the cache's access-log line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessRecord {
    /// Unix time in milliseconds when the response was complete.
    pub ts_ms: u64,
    pub pop: String,
    pub customer: String,
    pub client: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub status: u16,
    /// Bytes sent to the client (head and body).
    pub bytes: u64,
    /// HIT, MISS, STALE, REVALIDATED, PASS or ERROR.
    pub cache: String,
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default)]
    pub ttfb_us: u64,
    #[serde(default)]
    pub total_us: u64,
    #[serde(default)]
    pub origin_us: Option<u64>,
}

/// Answers one DNS server handed out for one balanced name, view, type and server over
/// one interval (`from_ms`..`ts_ms`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsRecord {
    /// End of the interval, Unix milliseconds.
    pub ts_ms: u64,
    /// Start of the interval.
    pub from_ms: u64,
    pub pop: String,
    pub customer: String,
    /// The balanced name asked for.
    pub domain: String,
    pub view: String,
    /// A or AAAA.
    pub qtype: String,
    /// The server whose address was in the answer: a POP name or `customer/origin`.
    pub server: String,
    /// `pop-cache` or `origin`.
    pub server_kind: String,
    /// Answers carrying this server's address.
    pub answers: u64,
}

/// One finished round of a service check by a POP's probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeRecord {
    pub ts_ms: u64,
    /// The POP whose probe checked.
    pub pop: String,
    /// The owner of the target ("-" for POP caches).
    pub customer: String,
    /// The target: a POP name or `customer/origin`.
    pub target: String,
    pub ok: bool,
    /// Time the whole check took.
    pub total_us: u64,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub error: Option<String>,
}

/// The customer a server id belongs to: `customer/origin` → customer, a POP → none.
pub fn customer_of_server(id: &str) -> &str {
    match id.split_once('/') {
        Some((c, _)) if !c.is_empty() => c,
        _ => NO_CUSTOMER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routing_field_is_read_from_any_record() {
        let r: Routing<'_> =
            serde_json::from_str(r#"{"ts_ms":1,"customer":"shop","x":[1,2]}"#).unwrap();
        assert_eq!(r.customer, "shop");
        let r: Routing<'_> = serde_json::from_str(r#"{"customer":"sh\"op"}"#).unwrap();
        assert_eq!(r.customer, "sh\"op");
        assert!(serde_json::from_str::<Routing<'_>>(r#"{"pop":"x"}"#).is_err());
    }

    #[test]
    fn server_ids_name_their_customer() {
        assert_eq!(customer_of_server("shop/east"), "shop");
        assert_eq!(customer_of_server("iad1"), NO_CUSTOMER);
        assert_eq!(customer_of_server("/x"), NO_CUSTOMER);
    }
}
