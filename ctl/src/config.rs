//! `popctl config`: check, keys and signatures, the two-phase push, every box's state.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use configd::push::{PushOptions, PushReport};
use configd::wire::{BoxReport, Outcome};
use configd::{AdminKey, SignedConfig};
use popnet_config::Config;
use serde_json::json;

use crate::{Failed, table};

#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Validate config files; prints every problem with its place.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print the built-in demo config (a starting point for your own).
    Demo,
    /// Make an admin key (ed25519, PKCS#8 PEM, mode 0600) and print the
    /// [[network.admins]] entry that lets it sign.
    Keygen {
        /// Where to write the private key (must not exist).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The admin's name, for the printed entry.
        #[arg(long, default_value = "admin")]
        name: String,
    },
    /// Sign a config with an admin key (replacing any signature it has).
    Sign {
        #[arg(long, value_name = "KEYFILE")]
        key: PathBuf,
        /// Write the signed file here instead of replacing FILE.
        #[arg(long, value_name = "OUT")]
        out: Option<PathBuf>,
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Check a signed config the way a box would: signed by an admin of the running
    /// config (--running, default: of the file itself) and, with --running, newer.
    Verify {
        #[arg(long, value_name = "FILE")]
        running: Option<PathBuf>,
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Push a signed config to every box of the tree it describes, in two phases:
    /// PREPARE (every box verifies and holds it), then COMMIT (every box switches), or
    /// ABORT everywhere if any box failed or did not answer in time. Exit status: 0 all
    /// switched, 1 aborted (nobody switched), 2 committed but a box has not confirmed
    /// (it catches up from its parent when it is back).
    Push {
        /// Admin key signing the push commands.
        #[arg(long, value_name = "KEYFILE")]
        key: PathBuf,
        /// How long each phase may take (default: configd.timeout of the file).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        timeout: Option<Duration>,
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Every box's running and pending version, and its local daemons, gathered down
    /// the tree of the network's config (--config).
    Status {
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    popnet_config::duration::parse(s)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

pub(crate) fn load_key(path: &Path) -> Result<AdminKey> {
    AdminKey::load(path).map_err(|e| anyhow!("{e}"))
}

fn short(s: &str) -> &str {
    &s[..s.len().min(8)]
}

fn age(since_ms: u64) -> String {
    let now = configd::sign::unix_ms();
    let s = now.saturating_sub(since_ms) / 1000;
    match s {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

fn outcome(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::Failed => "FAILED",
        Outcome::Unreached => "UNREACHED",
    }
}

fn print_boxes(rows: &[BoxReport]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|b| {
            vec![
                b.name.clone(),
                outcome(b.outcome).to_string(),
                b.message.clone(),
            ]
        })
        .collect();
    table(&["BOX", "RESULT", "DETAIL"], &rows);
}

fn print_push(r: &PushReport) {
    println!(
        "push {} of version {}{}",
        short(&r.push),
        r.version,
        r.signer
            .as_ref()
            .map(|s| format!(" (signed by {s})"))
            .unwrap_or_default()
    );
    println!(
        "PREPARE: {} of {} boxes hold it ({} ms)",
        r.prepare
            .iter()
            .filter(|b| b.outcome == Outcome::Ok)
            .count(),
        r.prepare.len(),
        r.prepared_ms.saturating_sub(r.started_ms)
    );
    print_boxes(&r.prepare);
    if r.committed {
        println!(
            "COMMIT: {} of {} boxes switched ({} ms from the start{})",
            r.decision
                .iter()
                .filter(|b| b.outcome == Outcome::Ok)
                .count(),
            r.decision.len(),
            r.finished_ms.saturating_sub(r.started_ms),
            r.last_switch_ms
                .map(|t| format!(
                    "; last switch {} ms after the start",
                    t.saturating_sub(r.started_ms)
                ))
                .unwrap_or_default()
        );
    } else {
        println!("ABORT: no box switched");
    }
    print_boxes(&r.decision);
    for p in &r.problems {
        eprintln!("popctl: {p}");
    }
}

/// Runs one `popctl config` command. `network` is the `--config` file, if given.
pub fn run(cmd: &ConfigCmd, network: Option<&PathBuf>, json_out: bool) -> Result<()> {
    match cmd {
        ConfigCmd::Check { files } => {
            let mut bad = false;
            for f in files {
                match Config::load(f) {
                    Ok(c) => println!(
                        "{}: valid (version {}, {} POPs, {} customers, {} balanced domains{})",
                        f.display(),
                        c.network.version,
                        c.pops.len(),
                        c.customers.len(),
                        c.customers.iter().map(|c| c.domains.len()).sum::<usize>(),
                        c.configd
                            .as_ref()
                            .map(|d| format!(", {} config boxes", d.boxes.len()))
                            .unwrap_or_default()
                    ),
                    Err(e) => {
                        bad = true;
                        eprintln!("{e}");
                    }
                }
            }
            if bad {
                return Err(Failed.into());
            }
        }
        ConfigCmd::Demo => print!("{}", popnet_config::DEMO_TOML),
        ConfigCmd::Keygen { out, name } => {
            let key = AdminKey::generate().map_err(|e| anyhow!("{e}"))?;
            key.save(out).map_err(|e| anyhow!("{e}"))?;
            if json_out {
                println!(
                    "{}",
                    json!({"name": name, "key": key.public_b64(), "file": out})
                );
            } else {
                eprintln!(
                    "popctl: wrote the private key to {} (keep it secret); add this to [network] of the config:",
                    out.display()
                );
                println!(
                    "[[network.admins]]\nname = {name:?}\nkey = \"{}\"",
                    key.public_b64()
                );
            }
        }
        ConfigCmd::Sign { key, out, file } => {
            let key = load_key(key)?;
            let text = read(file)?;
            // Refuse to sign what no box would take.
            let body = text.clone();
            Config::from_toml(&body, &file.display().to_string()).map_err(|e| anyhow!("{e}"))?;
            let signed = configd::sign_config(&text, &key);
            let parsed = SignedConfig::parse(signed.clone(), &file.display().to_string())
                .map_err(|e| anyhow!("{e}"))?;
            let target = out.as_ref().unwrap_or(file);
            configd::store::write_atomic(target, signed.as_bytes()).map_err(|e| anyhow!("{e}"))?;
            match parsed.accept_first() {
                Ok(who) => eprintln!(
                    "popctl: signed version {} as {who}: {}",
                    parsed.version(),
                    target.display()
                ),
                Err(_) => eprintln!(
                    "popctl: signed version {} ({}), but the key is not among the file's own admins: boxes that run it will refuse your next config",
                    parsed.version(),
                    target.display()
                ),
            }
        }
        ConfigCmd::Verify { running, file } => {
            let signed = SignedConfig::parse(read(file)?, &file.display().to_string())
                .map_err(|e| anyhow!("{e}"))?;
            let who = match running {
                Some(r) => {
                    let cur = Config::load(r).map_err(|e| anyhow!("{e}"))?;
                    signed.accept(&cur).map_err(|e| anyhow!("{e}"))?
                }
                None => signed.accept_first().map_err(|e| anyhow!("{e}"))?,
            };
            if json_out {
                println!(
                    "{}",
                    json!({"version": signed.version(), "signer": who, "digest": signed.digest})
                );
            } else {
                println!(
                    "{}: version {} signed by {who} (sha256 {})",
                    file.display(),
                    signed.version(),
                    signed.digest
                );
            }
        }
        ConfigCmd::Push { key, timeout, file } => {
            let key = load_key(key)?;
            let text = read(file)?;
            let report = configd::push::push(text, &key, &PushOptions { timeout: *timeout })
                .map_err(|e| anyhow!("{}: {e}", file.display()))?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_push(&report);
            }
            if !report.committed {
                bail!(Failed);
            }
            if !report.complete() {
                return Err(Incomplete.into());
            }
        }
        ConfigCmd::Status { timeout } => {
            let path = network.ok_or_else(|| {
                anyhow!("say which network with --config FILE (its current config)")
            })?;
            let cfg = Config::load(path).map_err(|e| anyhow!("{e}"))?;
            let boxes = configd::push::status(&cfg, *timeout).map_err(|e| anyhow!("{e}"))?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&boxes)?);
            } else {
                print_status(&boxes);
            }
            if boxes.iter().any(|b| b.outcome != Outcome::Ok) {
                bail!(Failed);
            }
        }
    }
    Ok(())
}

/// A push that committed but that not every box confirmed (exit status 2).
#[derive(Debug)]
pub struct Incomplete;

impl std::fmt::Display for Incomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("committed, but not every box confirmed")
    }
}

impl std::error::Error for Incomplete {}

fn print_status(boxes: &[BoxReport]) {
    let rows: Vec<Vec<String>> = boxes
        .iter()
        .map(|b| match &b.status {
            Some(s) if b.outcome == Outcome::Ok => {
                let local: Vec<String> = s
                    .local
                    .iter()
                    .map(|l| {
                        let state = match (l.ok, l.version) {
                            (Some(true), Some(v)) => format!("v{v}"),
                            (Some(false), Some(v)) => format!("KEPT OLD, refused v{v}"),
                            _ => "reloading".to_string(),
                        };
                        format!("{}[{}] {state}", l.role, l.pid)
                    })
                    .collect();
                vec![
                    b.name.clone(),
                    s.pop.clone().unwrap_or_else(|| "-".into()),
                    format!("{}", s.running.version),
                    format!("{} ({})", s.running.signer, age(s.running.since_ms)),
                    s.pending
                        .as_ref()
                        .map(|p| format!("{} (push {})", p.version, short(&p.push)))
                        .unwrap_or_else(|| "-".into()),
                    if local.is_empty() {
                        "-".into()
                    } else {
                        local.join(", ")
                    },
                    s.last_error.clone().unwrap_or_default(),
                ]
            }
            _ => vec![
                b.name.clone(),
                "-".into(),
                "?".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                format!("{}: {}", outcome(b.outcome), b.message),
            ],
        })
        .collect();
    table(
        &[
            "BOX",
            "POP",
            "RUNNING",
            "SIGNED BY",
            "PENDING",
            "LOCAL DAEMONS",
            "NOTE",
        ],
        &rows,
    );
    for l in boxes
        .iter()
        .filter_map(|b| b.status.as_ref())
        .flat_map(|s| s.local.iter().map(move |l| (s, l)))
        .filter(|(_, l)| l.ok == Some(false))
    {
        eprintln!(
            "popctl: box {}: {} (pid {}) kept its old config: {}",
            l.0.name,
            l.1.role,
            l.1.pid,
            l.1.message.clone().unwrap_or_default()
        );
    }
}
