//! `popctl stats` and `popctl bill`: a customer's traffic and monthly bill, asked of the log server that keeps the customer.

use std::net::SocketAddr;

use anyhow::{Context, Result, anyhow, bail};
use popnet_config::Config;
use serde_json::Value;

use crate::http;

/// The admin address and token of the log server keeping `customer`: the
/// `[[log_servers]]` entry that lists it, else the log server of the POP (`--pop`, or
/// the only log server).
fn log_admin(
    cfg: &Config,
    customer: &str,
    pop: Option<&str>,
    admin: Option<SocketAddr>,
) -> Result<(SocketAddr, Option<Vec<u8>>)> {
    if customer != "-" && cfg.customer(customer).is_none() {
        let names: Vec<&str> = cfg.customers.iter().map(|c| c.name.as_str()).collect();
        bail!(
            "the config has no customer named {customer:?}; its customers are {} (\"-\" is the records of no customer)",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
    }
    if cfg.log_servers.is_empty() {
        bail!("the config has no [[log_servers]]; add one and run `popnet logd` there");
    }
    let listed = cfg
        .log_servers
        .iter()
        .find(|l| l.customers.iter().any(|c| c == customer));
    let server = match listed {
        Some(l) => l,
        None => {
            let by_pop = match pop {
                Some(p) => {
                    let pop = cfg
                        .pop(p)
                        .ok_or_else(|| anyhow!("the config has no POP named {p:?}"))?;
                    pop.log_server.as_deref()
                }
                None => None,
            };
            match (by_pop, cfg.log_servers.as_slice()) {
                (Some(name), _) => cfg
                    .log_servers
                    .iter()
                    .find(|l| l.name == name)
                    .ok_or_else(|| anyhow!("POP log server {name:?} is not in [[log_servers]]"))?,
                (None, [one]) => one,
                (None, _) => bail!(
                    "no [[log_servers]] entry lists customer {customer:?}; say which POP's log server keeps it with --pop NAME, or --admin ADDR"
                ),
            }
        }
    };
    let token = server.admin_token.as_ref().map(|s| s.as_bytes().to_vec());
    Ok((admin.unwrap_or(server.admin), token))
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

fn get(addr: SocketAddr, path: &str, token: Option<&[u8]>) -> Result<Value> {
    let body = http::get(addr, path, token)?;
    serde_json::from_slice(&body).with_context(|| format!("{addr}{path} did not return JSON"))
}

fn n(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM` UTC of Unix seconds.
fn utc(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let s = t.rem_euclid(86_400);
    // Civil date from days since 1970 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        s / 3600,
        (s % 3600) / 60
    )
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

/// `popctl stats CUSTOMER [--since]`.
pub fn stats(
    cfg: &Config,
    customer: &str,
    since: &str,
    pop: Option<&str>,
    admin: Option<SocketAddr>,
    json: bool,
) -> Result<()> {
    let (addr, token) = log_admin(cfg, customer, pop, admin)?;
    let v = get(
        addr,
        &format!(
            "/api/stats?customer={}&since={}",
            encode(customer),
            encode(since)
        ),
        token.as_deref(),
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let t = &v["total"];
    let since_t = v["since"].as_i64().unwrap_or(0);
    println!(
        "customer {customer} since {} UTC ({} rollups)",
        utc(since_t),
        v["resolution"].as_str().unwrap_or("?")
    );
    println!(
        "  requests {}  bytes {}  hit ratio {}",
        n(t, "requests"),
        n(t, "bytes"),
        pct(
            n(t, "hits") + n(t, "stale"),
            n(t, "hits") + n(t, "stale") + n(t, "misses")
        )
    );
    println!(
        "  hits {}  misses {}  stale {}  pass {}  errors {}",
        n(t, "hits"),
        n(t, "misses"),
        n(t, "stale"),
        n(t, "pass"),
        n(t, "errors")
    );
    println!(
        "  2xx {}  3xx {}  4xx {}  5xx {}",
        n(t, "s2xx"),
        n(t, "s3xx"),
        n(t, "s4xx"),
        n(t, "s5xx")
    );
    if let Some(per_pop) = v["per_pop"].as_object()
        && !per_pop.is_empty()
    {
        println!(
            "  {:<12} {:>10} {:>14} {:>8} {:>8}",
            "POP", "requests", "bytes", "hits", "misses"
        );
        for (p, h) in per_pop {
            println!(
                "  {:<12} {:>10} {:>14} {:>8} {:>8}",
                p,
                n(h, "requests"),
                n(h, "bytes"),
                n(h, "hits"),
                n(h, "misses")
            );
        }
    }
    if let Some(dns) = v["dns"].as_array()
        && !dns.is_empty()
    {
        println!("  DNS answers:");
        for r in dns {
            println!(
                "    {} {} → {} ({}): {}",
                r["pop"].as_str().unwrap_or("?"),
                r["domain"].as_str().unwrap_or("?"),
                r["server"].as_str().unwrap_or("?"),
                r["server_kind"].as_str().unwrap_or("?"),
                n(r, "answers")
            );
        }
    }
    if let Some(probes) = v["probes"].as_array()
        && !probes.is_empty()
    {
        println!("  Probe checks (by the POP's probe):");
        for r in probes {
            let checks = n(r, "checks");
            println!(
                "    {} {}: {} checks, {} failed, mean {} ms, max {} ms",
                r["pop"].as_str().unwrap_or("?"),
                r["target"].as_str().unwrap_or("?"),
                checks,
                n(r, "failures"),
                format_args!(
                    "{:.1}",
                    n(r, "total_us") as f64 / checks.max(1) as f64 / 1000.0
                ),
                format_args!("{:.1}", n(r, "max_us") as f64 / 1000.0),
            );
        }
    }
    Ok(())
}

/// `popctl bill CUSTOMER [--month]`.
pub fn bill(
    cfg: &Config,
    customer: &str,
    month: Option<&str>,
    pop: Option<&str>,
    admin: Option<SocketAddr>,
    json: bool,
) -> Result<()> {
    if let Some(m) = month {
        let ok = m.len() == 7
            && m.as_bytes()[4] == b'-'
            && m[..4].parse::<u16>().is_ok()
            && m[5..].parse::<u8>().is_ok_and(|mm| (1..=12).contains(&mm));
        if !ok {
            bail!("--month {m:?} is not a month; write YYYY-MM, e.g. 2026-11");
        }
    }
    let (addr, token) = log_admin(cfg, customer, pop, admin)?;
    let mut path = format!("/api/bill?customer={}", encode(customer));
    if let Some(m) = month {
        path.push_str(&format!("&month={}", encode(m)));
    }
    let v = get(addr, &path, token.as_deref())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "bill of {customer} for {}{}",
        v["month"].as_str().unwrap_or("?"),
        if v["partial"].as_bool() == Some(true) {
            " (the month is not over: so far)"
        } else {
            ""
        }
    );
    println!(
        "  bytes served {} ({:.6} GB) in {} requests",
        n(&v, "bytes"),
        v["gb"].as_f64().unwrap_or(0.0),
        n(&v, "requests")
    );
    println!(
        "  fee {} per GB  →  amount {:.2}",
        v["fee_per_gb"].as_f64().unwrap_or(0.0),
        v["amount"].as_f64().unwrap_or(0.0)
    );
    if let Some(pops) = v["per_pop"].as_array() {
        for p in pops {
            println!(
                "  {:<12} {:>10} requests {:>14} bytes",
                p["pop"].as_str().unwrap_or("?"),
                n(p, "requests"),
                n(p, "bytes")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(1_795_305_600 + 3_660), "2026-11-22 01:01");
    }
}
