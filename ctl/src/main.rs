//! `popctl`: inspect and operate a popnet network from the command line.

mod cache;
mod config;
mod http;
mod logs;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Parser, Subcommand};
use popnet_config::Config;
use serde_json::Value;

#[derive(Parser)]
#[command(
    name = "popctl",
    version,
    about = "Inspect and operate a popnet network"
)]
struct Cli {
    #[command(flatten)]
    target: Target,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Which box to talk to.
#[derive(Args)]
struct Target {
    /// The network's config file; default: the built-in demo that `popnet up` runs.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The POP to talk to, when the config has several.
    #[arg(long, global = true, value_name = "NAME")]
    pop: Option<String>,
    /// Admin listener address, instead of the one in the config.
    #[arg(long, global = true, value_name = "ADDR")]
    admin: Option<SocketAddr>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Configs: check, keys and signatures, push to every box, every box's state.
    #[command(subcommand)]
    Config(config::ConfigCmd),
    /// The DNS server: counters and current answers.
    #[command(subcommand)]
    Dns(DnsCmd),
    /// Figures the DNS server holds per server: health, load, loss, latency, and their ages.
    Metrics,
    /// The HTTP cache: purge, stats, stored objects.
    #[command(subcommand)]
    Cache(cache::CacheCmd),
    /// A customer's traffic from the log server that keeps it: requests, bytes, hits and
    /// misses, status classes, per POP, DNS answers.
    Stats {
        /// A customer name from the config ("-" for the records of no customer).
        #[arg(value_name = "CUSTOMER")]
        customer: String,
        /// How far back: a span ("30m", "6h", "7d") or a UTC date ("2026-11-01", "2026-11-01T08:00").
        #[arg(long, default_value = "1h", value_name = "WHEN")]
        since: String,
    },
    /// A customer's bill for a month: bytes served × the fee per GB in the config.
    Bill {
        /// A customer name from the config.
        #[arg(value_name = "CUSTOMER")]
        customer: String,
        /// The month, YYYY-MM (UTC); default: this month so far.
        #[arg(long, value_name = "YYYY-MM")]
        month: Option<String>,
    },
}

#[derive(Subcommand)]
enum DnsCmd {
    /// Query, rcode, report and XDP counters.
    Stats,
    /// The answer chosen for every balanced domain, view and address family, with the ranking.
    Selections,
    /// The resolvers this server sees, the dynamic view each joined and every POP's round trip to it.
    Resolvers,
    /// The XDP answer map, read back from the kernel.
    #[command(subcommand)]
    Map(MapCmd),
}

#[derive(Subcommand)]
enum MapCmd {
    /// Every entry (optionally filtered).
    List {
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "type")]
        qtype: Option<String>,
        #[arg(long)]
        view: Option<String>,
    },
    /// The entries for one name and type (in one view, with `*` entries that hold in all).
    Get {
        name: String,
        #[arg(value_name = "TYPE")]
        qtype: String,
        view: Option<String>,
    },
}

/// An error already printed.
#[derive(Debug)]
pub(crate) struct Failed;

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed")
    }
}

impl std::error::Error for Failed {}

fn load(path: Option<&PathBuf>) -> Result<Config> {
    match path {
        None => Ok(Config::demo()),
        Some(p) => Config::load(p).map_err(|e| anyhow!("{e}")),
    }
}

/// The admin address and token of the target box's DNS server.
fn dns_admin(t: &Target) -> Result<(SocketAddr, Option<Vec<u8>>)> {
    let cfg = load(t.config.as_ref())?;
    let pop = cfg
        .local_pop(t.pop.as_deref(), |p| p.dns.is_some())
        .map_err(|e| anyhow!("{e}"))?;
    let dns = pop
        .dns
        .as_ref()
        .ok_or_else(|| anyhow!("POP {:?} runs no DNS server", pop.name))?;
    let token = dns.admin_token.as_ref().map(|s| s.as_bytes().to_vec());
    Ok((t.admin.unwrap_or(dns.admin), token))
}

fn fetch(t: &Target, path: &str) -> Result<Value> {
    let (addr, token) = dns_admin(t)?;
    let body = http::get(addr, path, token.as_deref())?;
    serde_json::from_slice(&body).with_context(|| format!("{addr}{path} did not return JSON"))
}

/// The XDP part of `dns stats`.
fn print_xdp(x: &Value) {
    match x["state"].as_str() {
        Some("attached") => {
            let ifaces: Vec<String> = items(&x["interfaces"]).iter().map(text).collect();
            let c = &x["counters"];
            let passed: Vec<String> = c["passed"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(_, n)| n.as_u64() != Some(0))
                        .map(|(k, n)| format!("{k} {n}"))
                        .collect()
                })
                .unwrap_or_default();
            println!(
                "xdp      attached to {} ({}) · answered {} · passed {}{}",
                ifaces.join(", "),
                text(&x["mode"]),
                num(c, &["answered"]),
                num(c, &["passed_total"]),
                if passed.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", passed.join(", "))
                }
            );
            for (cpu, row) in items(&c["per_cpu"]).iter().enumerate() {
                let vals: Vec<u64> = items(row).iter().filter_map(Value::as_u64).collect();
                let answered = vals.first().copied().unwrap_or(0);
                let passed: u64 = vals.iter().skip(1).sum();
                println!("         cpu{cpu}: answered {answered} · passed {passed}");
            }
            let w = &x["writer"];
            println!(
                "         map: generation {} · {} entries ({} too large, answered in userspace) · last write {} µs{}",
                num(w, &["generation"]),
                num(w, &["entries"]),
                num(w, &["skipped"]),
                num(w, &["last_publish_us"]),
                match &w["last_error"] {
                    Value::String(e) => format!(" · last error: {e}"),
                    _ => String::new(),
                }
            );
        }
        Some("unavailable") => println!(
            "xdp      unavailable: {} (answering from userspace only)",
            text(&x["reason"])
        ),
        _ => println!("xdp      off (no interface configured)"),
    }
}

/// The elements of a JSON array (none if it is not one).
fn items(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn num(v: &Value, path: &[&str]) -> u64 {
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

/// Prints rows as aligned columns.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) {
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

fn figure(v: &Value, unit: &str) -> String {
    match v {
        Value::Null => "-".into(),
        f => format!(
            "{:.3}{unit} ({:.1}s)",
            f.get("value").and_then(Value::as_f64).unwrap_or(f64::NAN),
            f.get("age_ms").and_then(Value::as_u64).unwrap_or(0) as f64 / 1000.0
        ),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Config(cmd) => config::run(&cmd, cli.target.config.as_ref(), cli.json)?,
        Cmd::Stats { customer, since } => logs::stats(
            &load(cli.target.config.as_ref())?,
            &customer,
            &since,
            cli.target.pop.as_deref(),
            cli.target.admin,
            cli.json,
        )?,
        Cmd::Bill { customer, month } => logs::bill(
            &load(cli.target.config.as_ref())?,
            &customer,
            month.as_deref(),
            cli.target.pop.as_deref(),
            cli.target.admin,
            cli.json,
        )?,
        Cmd::Cache(cmd) => cache::run(
            &cmd,
            &load(cli.target.config.as_ref())?,
            cli.target.pop.as_deref(),
            cli.target.admin,
            cli.json,
        )?,
        Cmd::Dns(DnsCmd::Stats) => {
            let v = fetch(&cli.target, "/stats")?;
            if cli.json {
                return print_json(&v);
            }
            let q = |k: &str| num(&v, &["queries", k]);
            let r = |k: &str| num(&v, &["reports", k]);
            println!(
                "POP {} · up {}s · answer table generation {} ({} entries)",
                text(&v["pop"]),
                num(&v, &["uptime_s"]),
                num(&v, &["answer_table", "generation"]),
                num(&v, &["answer_table", "entries"])
            );
            println!(
                "queries  received {}  answered {} ({} precomputed)  truncated {}  dropped {} (short {}, responses {}, oversize {})",
                q("received"),
                q("answered"),
                q("precomputed"),
                q("truncated"),
                q("dropped"),
                q("dropped_short"),
                q("dropped_response"),
                q("dropped_oversize")
            );
            println!(
                "rcodes   NOERROR {}  NXDOMAIN {}  REFUSED {}  FORMERR {}  NOTIMP {}  SERVFAIL {}  BADVERS {}  other {}",
                q("noerror"),
                q("nxdomain"),
                q("refused"),
                q("formerr"),
                q("notimp"),
                q("servfail"),
                q("badvers"),
                q("other_rcode")
            );
            println!(
                "reports  accepted {}  bad MAC {}  malformed {}  bad version {}  replayed {}  stale {}  future {}  entries {} (unknown server {}, unknown view {}, stale {})",
                r("accepted"),
                r("bad_mac"),
                r("malformed"),
                r("bad_version"),
                r("replayed"),
                r("stale"),
                r("future"),
                r("entries"),
                r("unknown_server"),
                r("unknown_view"),
                r("stale_entries")
            );
            let rs = |k: &str| num(&v, &["resolvers", k]);
            println!(
                "resolvers tracked {}  in a near view {}  latency requests {} ({} addresses)  responses {}  refused {}  unreachable {}  rate-limited {}  evicted {}",
                rs("tracked"),
                rs("assigned"),
                rs("requests_sent"),
                rs("addresses_requested"),
                rs("responses"),
                rs("bad_responses"),
                rs("unreachable"),
                rs("rate_limited"),
                rs("evicted")
            );
            print_xdp(&v["xdp"]);
        }
        Cmd::Dns(DnsCmd::Map(cmd)) => {
            let (name, qtype, view) = match &cmd {
                MapCmd::List { name, qtype, view } => (name.clone(), qtype.clone(), view.clone()),
                MapCmd::Get { name, qtype, view } => {
                    (Some(name.clone()), Some(qtype.clone()), view.clone())
                }
            };
            let mut query = Vec::new();
            for (k, v) in [("name", name), ("type", qtype), ("view", view)] {
                if let Some(v) = v {
                    if !v
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._*".contains(&b))
                    {
                        return Err(anyhow!("{k} {v:?} has characters a DNS {k} cannot have"));
                    }
                    query.push(format!("{k}={v}"));
                }
            }
            let path = if query.is_empty() {
                "/xdp/map".to_string()
            } else {
                format!("/xdp/map?{}", query.join("&"))
            };
            let v = fetch(&cli.target, &path)?;
            if cli.json {
                return print_json(&v);
            }
            let entries = items(&v);
            if entries.is_empty() && matches!(cmd, MapCmd::Get { .. }) {
                return Err(anyhow!(
                    "no XDP map entry for that name and type (userspace answers it)"
                ));
            }
            let rows: Vec<Vec<String>> = entries
                .iter()
                .map(|e| {
                    let records: Vec<String> = ["answer", "authority", "additional"]
                        .iter()
                        .flat_map(|sec| items(&e[*sec]).iter().map(text).collect::<Vec<_>>())
                        .collect();
                    vec![
                        text(&e["name"]),
                        text(&e["qtype"]),
                        text(&e["view"]),
                        text(&e["rcode"]),
                        records.join(" | "),
                    ]
                })
                .collect();
            table(&["NAME", "TYPE", "VIEW", "RCODE", "RECORDS"], &rows);
        }
        Cmd::Dns(DnsCmd::Selections) => {
            let v = fetch(&cli.target, "/selections")?;
            if cli.json {
                return print_json(&v);
            }
            let rows: Vec<Vec<String>> = items(&v)
                .iter()
                .map(|s| {
                    let chosen: Vec<String> = items(&s["chosen"]).iter().map(text).collect();
                    let ranking: Vec<String> = items(&s["ranking"])
                        .iter()
                        .map(|r| {
                            format!(
                                "{} {} {:.3}",
                                text(&r["server"]),
                                text(&r["tier"]),
                                r["score"].as_f64().unwrap_or(f64::NAN)
                            )
                        })
                        .collect();
                    vec![
                        text(&s["domain"]),
                        text(&s["view"]),
                        text(&s["family"]),
                        chosen.join(","),
                        ranking.join(" · "),
                    ]
                })
                .collect();
            table(
                &[
                    "DOMAIN",
                    "VIEW",
                    "FAMILY",
                    "ANSWER",
                    "RANKING (server tier score)",
                ],
                &rows,
            );
        }
        Cmd::Dns(DnsCmd::Resolvers) => {
            let v = fetch(&cli.target, "/resolvers")?;
            if cli.json {
                return print_json(&v);
            }
            let st = |k: &str| num(&v, &["stats", k]);
            println!(
                "{} resolvers tracked, {} in a near view · {} requests ({} addresses) sent, {} responses, {} refused, {} rate-limited",
                st("tracked"),
                st("assigned"),
                st("requests_sent"),
                st("addresses_requested"),
                st("responses"),
                st("bad_responses"),
                st("rate_limited"),
            );
            let rows: Vec<Vec<String>> = items(&v["resolvers"])
                .iter()
                .map(|r| {
                    let rtt: Vec<String> = items(&r["rtt"])
                        .iter()
                        .map(|m| {
                            let ms = m["ms"]
                                .as_f64()
                                .map_or("-".to_string(), |ms| format!("{ms:.1}ms"));
                            let age = m["age_s"]
                                .as_u64()
                                .map_or(String::new(), |a| format!(" {a}s"));
                            let stale = if m["stale"] == true { " stale" } else { "" };
                            format!("{} {ms}{age}{stale}", text(&m["pop"]))
                        })
                        .collect();
                    vec![
                        text(&r["address"]),
                        text(&r["prefix_view"]),
                        r["near_view"].as_str().unwrap_or("-").to_string(),
                        format!("{}s", num(r, &["seen_s_ago"])),
                        rtt.join(" · "),
                    ]
                })
                .collect();
            table(
                &["RESOLVER", "VIEW", "NEAR VIEW", "SEEN", "RTT (pop ms age)"],
                &rows,
            );
        }
        Cmd::Metrics => {
            let v = fetch(&cli.target, "/servers")?;
            if cli.json {
                return print_json(&v);
            }
            let rows: Vec<Vec<String>> = items(&v)
                .iter()
                .map(|s| {
                    let lat: Vec<String> = items(&s["latency_ms"])
                        .iter()
                        .map(|p| format!("{} {}", text(&p[0]), figure(&p[1], "ms")))
                        .collect();
                    vec![
                        text(&s["id"]),
                        text(&s["kind"]),
                        text(&s["region"]),
                        text(&s["tier"]),
                        text(&s["health"]["state"]),
                        figure(&s["load"], ""),
                        figure(&s["loss"], ""),
                        figure(&s["rtt_ms"], "ms"),
                        if lat.is_empty() {
                            "-".into()
                        } else {
                            lat.join(", ")
                        },
                    ]
                })
                .collect();
            table(
                &[
                    "SERVER",
                    "KIND",
                    "REGION",
                    "TIER",
                    "HEALTH",
                    "LOAD (age)",
                    "LOSS (age)",
                    "RTT (age)",
                    "LATENCY PER VIEW (age)",
                ],
                &rows,
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Failed>() => ExitCode::from(1),
        Err(e) if e.is::<config::Incomplete>() => ExitCode::from(2),
        Err(e) => {
            eprintln!("popctl: {e:#}");
            ExitCode::from(1)
        }
    }
}
