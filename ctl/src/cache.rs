//! `popctl cache`: purge, counters and stored-object metadata from a POP cache's admin listener.

use std::net::SocketAddr;

use anyhow::{Context, Result, anyhow};
use clap::{ArgGroup, Subcommand};
use popnet_config::Config;
use serde_json::{Value, json};

use crate::http;

#[derive(Subcommand)]
pub enum CacheCmd {
    /// Purge one URL (all its variants), every URL under a prefix, or everything of a customer.
    #[command(group(ArgGroup::new("what").required(true).args(["url", "prefix", "customer"])))]
    Purge {
        /// e.g. http://static.demo.example/obj/1k
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// e.g. http://static.demo.example/obj/ (or http://HOST for a whole host)
        #[arg(long, value_name = "URL")]
        prefix: Option<String>,
        /// A customer name from the config.
        #[arg(long, value_name = "NAME")]
        customer: Option<String>,
        /// Purge the cache of every POP, through the config daemons' tree of the
        /// network's config (--config); needs --key. Prints one line per box and POP.
        #[arg(long, requires = "key")]
        all_pops: bool,
        /// With --all-pops: an admin key of the network's config, signing the command.
        #[arg(long, value_name = "KEYFILE")]
        key: Option<std::path::PathBuf>,
        /// With --all-pops: how long the tree may take (default: configd.timeout).
        #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
        timeout: Option<std::time::Duration>,
    },
    /// Requests (hits, misses, stale...), connections, origin fetches, and per tier (RAM,
    /// disk): objects, bytes, hit ratio, evictions, checksum failures, I/O errors.
    Stats,
    /// What the cache holds for one URL: age, size, tier (and place on disk), hits, validators.
    Get {
        /// e.g. http://static.demo.example/obj/1k
        #[arg(value_name = "URL")]
        url: String,
    },
}

/// The admin address and token of the target box's cache.
fn cache_admin(
    cfg: &Config,
    pop: Option<&str>,
    admin: Option<SocketAddr>,
) -> Result<(SocketAddr, Option<Vec<u8>>)> {
    let pop = cfg
        .local_pop(pop, |p| p.cache.is_some())
        .map_err(|e| anyhow!("{e}"))?;
    let cache = pop.cache.as_ref().ok_or_else(|| {
        anyhow!(
            "POP {:?} runs no cache (it has no [pops.cache] table)",
            pop.name
        )
    })?;
    let token = cache.admin_token.as_ref().map(|s| s.as_bytes().to_vec());
    Ok((admin.unwrap_or(cache.admin), token))
}

/// Percent-encodes a query parameter value.
fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len() * 3);
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn parse(body: &[u8], what: &str) -> Result<Value> {
    serde_json::from_slice(body).with_context(|| format!("{what} did not return JSON"))
}

fn n(v: &Value, path: &[&str]) -> u64 {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// Prints rows as aligned columns.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// The body of `POST /purge` and a phrase saying what it purges.
fn purge_body(
    url: &Option<String>,
    prefix: &Option<String>,
    customer: &Option<String>,
) -> Result<(Value, String)> {
    Ok(match (url, prefix, customer) {
        (Some(u), _, _) => (json!({ "url": u }), format!("URL {u}")),
        (_, Some(p), _) => (json!({ "prefix": p }), format!("every URL under {p}")),
        (_, _, Some(c)) => (
            json!({ "customer": c }),
            format!("everything of customer {c}"),
        ),
        _ => return Err(anyhow!("say what to purge: --url, --prefix or --customer")),
    })
}

/// `popctl cache purge --all-pops`: a signed purge command down the config daemons'
/// tree; every box purges its POP's cache. Fails if any box did not.
fn purge_all_pops(
    cfg: &Config,
    key: &configd::AdminKey,
    body: Value,
    what: &str,
    timeout: Option<std::time::Duration>,
    json: bool,
) -> Result<()> {
    let boxes = configd::push::purge(cfg, key, body, timeout).map_err(|e| anyhow!("{e}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&boxes)?);
    } else {
        println!(
            "purge of {what} through the tree of {:?}:",
            cfg.network.name
        );
        let rows: Vec<Vec<String>> = boxes
            .iter()
            .map(|b| {
                vec![
                    b.name.clone(),
                    b.pop.clone().unwrap_or_else(|| "-".into()),
                    format!("{:?}", b.outcome).to_lowercase(),
                    b.purged.map_or_else(|| "-".into(), |n| n.to_string()),
                    b.message.clone(),
                ]
            })
            .collect();
        table(&["BOX", "POP", "RESULT", "PURGED", "DETAIL"], &rows);
    }
    let failed: Vec<&str> = boxes
        .iter()
        .filter(|b| b.outcome != configd::wire::Outcome::Ok)
        .map(|b| b.name.as_str())
        .collect();
    if !failed.is_empty() {
        return Err(anyhow!(
            "not purged on {} (see above); run the purge again when they are reachable",
            failed.join(", ")
        ));
    }
    Ok(())
}

/// Runs one `popctl cache` command against the cache of `pop` (or the config's only
/// cache), at `admin` if given, else at the config's `[pops.cache] admin`.
pub fn run(
    cmd: &CacheCmd,
    cfg: &Config,
    pop: Option<&str>,
    admin: Option<SocketAddr>,
    json: bool,
) -> Result<()> {
    if let CacheCmd::Purge {
        url,
        prefix,
        customer,
        all_pops: true,
        key,
        timeout,
    } = cmd
    {
        let (body, what) = purge_body(url, prefix, customer)?;
        let key = key.as_ref().ok_or_else(|| {
            anyhow!("--all-pops needs --key KEYFILE (an admin key of the network's config)")
        })?;
        return purge_all_pops(
            cfg,
            &crate::config::load_key(key)?,
            body,
            &what,
            *timeout,
            json,
        );
    }
    let (addr, token) = cache_admin(cfg, pop, admin)?;
    let token = token.as_deref();
    match cmd {
        CacheCmd::Purge {
            url,
            prefix,
            customer,
            ..
        } => {
            let (body, what) = purge_body(url, prefix, customer)?;
            let reply = http::post_json(addr, "/purge", token, body.to_string().as_bytes())?;
            let v = parse(&reply, "/purge")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("purged {what}: {} objects removed", n(&v, &["purged"]));
            }
        }
        CacheCmd::Stats => {
            let v = parse(&http::get(addr, "/stats", token)?, "/stats")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let r = |k: &str| n(&v, &["requests", k]);
            let c = |k: &str| n(&v, &["connections", k]);
            let o = |k: &str| n(&v, &["origin", k]);
            let total = r("requests");
            let ratio = if total > 0 {
                format!(
                    "{:.1} %",
                    100.0 * (r("hits") + r("stale")) as f64 / total as f64
                )
            } else {
                "-".into()
            };
            println!(
                "POP {} · up {}s · {} workers · customers {}",
                text(&v["pop"]),
                n(&v, &["uptime_s"]),
                n(&v, &["workers"]),
                v["customers"]
                    .as_array()
                    .map(|a| a.iter().map(text).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            );
            println!(
                "requests     {total}  hit {}  miss {}  stale {}  revalidated {}  pass {}  error {}  coalesced {}  (hit ratio {ratio})",
                r("hits"),
                r("misses"),
                r("stale"),
                r("revalidated"),
                r("pass"),
                r("errors"),
                r("coalesced")
            );
            println!(
                "status       2xx {}  3xx {}  4xx {}  5xx {}  refused as bad {}  sent {}",
                r("status_2xx"),
                r("status_3xx"),
                r("status_4xx"),
                r("status_5xx"),
                r("rejected"),
                bytes(r("bytes_out"))
            );
            println!(
                "connections  open {}  accepted {}  refused (max) {}  timeouts head {} body {} idle {} send {}",
                c("open"),
                c("accepted"),
                c("refused"),
                c("timeouts_head"),
                c("timeouts_body"),
                c("timeouts_idle"),
                c("timeouts_send")
            );
            println!(
                "origin       requests {}  in flight {}  stored {}  304 {}  connect failures {}  timeouts {}  broken {}  received {}",
                o("requests"),
                o("in_flight"),
                o("stored"),
                o("not_modified"),
                o("connect_failures"),
                o("timeouts"),
                o("broken"),
                bytes(o("bytes"))
            );
            let rows: Vec<Vec<String>> = v["tiers"]
                .as_array()
                .map(|a| a.as_slice())
                .unwrap_or(&[])
                .iter()
                .map(|t| {
                    let looked = n(t, &["hits"]) + n(t, &["misses"]);
                    vec![
                        text(&t["tier"]),
                        text(&t["eviction"]),
                        n(t, &["objects"]).to_string(),
                        format!(
                            "{} / {}",
                            bytes(n(t, &["bytes"])),
                            bytes(n(t, &["capacity"]))
                        ),
                        if looked > 0 {
                            format!(
                                "{:.1} % of {looked}",
                                100.0 * n(t, &["hits"]) as f64 / looked as f64
                            )
                        } else {
                            "-".into()
                        },
                        n(t, &["inserted"]).to_string(),
                        n(t, &["evicted"]).to_string(),
                        n(t, &["purged"]).to_string(),
                        n(t, &["rewritten"]).to_string(),
                        n(t, &["checksum_failures"]).to_string(),
                        n(t, &["io_errors"]).to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    "TIER",
                    "EVICTION",
                    "OBJECTS",
                    "BYTES",
                    "HIT RATIO",
                    "INSERTED",
                    "EVICTED",
                    "PURGED",
                    "2ND CHANCE",
                    "CHECKSUM FAIL",
                    "IO ERRORS",
                ],
                &rows,
            );
        }
        CacheCmd::Get { url } => {
            let path = format!("/object?url={}", encode(url));
            let v = parse(&http::get(addr, &path, token)?, "/object")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v["objects"]
                .as_array()
                .map(|a| a.as_slice())
                .unwrap_or(&[])
                .iter()
                .map(|o| {
                    let tier = match o["disk_offset"].as_u64() {
                        Some(at) => format!("{} @ {at}", text(&o["tier"])),
                        None => text(&o["tier"]),
                    };
                    vec![
                        text(&o["key"]),
                        tier,
                        text(&o["status"]),
                        bytes(n(o, &["size"])),
                        format!("{}s / {}s", n(o, &["age_s"]), n(o, &["lifetime_s"])),
                        if o["fresh"] == Value::Bool(true) {
                            "fresh"
                        } else {
                            "stale"
                        }
                        .into(),
                        n(o, &["hits"]).to_string(),
                        text(&o["etag"]),
                        text(&o["last_modified"]),
                    ]
                })
                .collect();
            table(
                &[
                    "KEY",
                    "TIER",
                    "STATUS",
                    "SIZE",
                    "AGE / LIFETIME",
                    "STATE",
                    "HITS",
                    "ETAG",
                    "LAST-MODIFIED",
                ],
                &rows,
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding() {
        assert_eq!(encode("http://h/p?q=1&r"), "http%3A%2F%2Fh%2Fp%3Fq%3D1%26r");
    }
}
