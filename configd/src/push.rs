//! The admin side: push a signed config down the tree in two phases, read every box's state, purge every POP's cache.
//!
//! [`push`] (what `popctl config push` runs) sends PREPARE to every master at once; each
//! answers for its whole subtree. If every box of the tree holds the config, it sends
//! COMMIT the same way; if any box failed or did not answer in time, it sends ABORT, and
//! no box switches. [`Push`] runs the two phases one by one, for callers that want to
//! look in between. The report names every box and what it did.
//!
//! For another program that changes the config (the log server's origin form): read the
//! running config (e.g. from the local configd with [`crate::local::Subscription`]),
//! change it, raise `network.version`, and call [`sign_and_push`] with an admin key.

use std::time::{Duration, Instant};

use popnet_config::{Config, ConfigBox, Configd};
use serde::Serialize;

use crate::client;
use crate::daemon::subtree_reports;
use crate::net::{Tls, TlsError};
use crate::sign::{AdminKey, Command, KeyError, Op, Refused, SignedCommand, SignedConfig, unix_ms};
use crate::wire::{BoxReport, Outcome, Request};

/// Why a push (or status, or purge) could not even start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    #[error("{0}")]
    Config(#[from] Refused),
    #[error(
        "the config has no [configd] table, so there is no box to send it to; add [configd] with masters and [[configd.boxes]]"
    )]
    NoTree,
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error(
        "the admin key {key} is not one of the config's admins ({admins}); the boxes would refuse its commands"
    )]
    NotAdmin { key: String, admins: String },
}

/// Knobs of a push.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// How long a phase may take; default: the config's `configd.timeout`.
    pub timeout: Option<Duration>,
}

/// What a push did, box by box.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// The push's id (random).
    pub push: String,
    pub version: u32,
    /// The admin who signed the file (by the pushed config's own admin list).
    pub signer: Option<String>,
    /// True if every box held the config and COMMIT was sent.
    pub committed: bool,
    /// Unix ms: start, end of PREPARE, end of COMMIT or ABORT.
    pub started_ms: u64,
    pub prepared_ms: u64,
    pub finished_ms: u64,
    /// When the last box switched (its own clock), for a committed push.
    pub last_switch_ms: Option<u64>,
    /// One report per box of the tree, in tree order.
    pub prepare: Vec<BoxReport>,
    /// The COMMIT (or ABORT) reports.
    pub decision: Vec<BoxReport>,
    /// Why the push was aborted, or which boxes have not confirmed the commit: one line
    /// per box, naming it.
    pub problems: Vec<String>,
}

impl PushReport {
    /// Every box confirmed the commit.
    pub fn complete(&self) -> bool {
        self.committed && self.decision.iter().all(|b| b.outcome == Outcome::Ok)
    }
}

/// A push under way: the config, the admin key, and the tree.
pub struct Push<'k> {
    cfg: SignedConfig,
    key: &'k AdminKey,
    id: String,
    tls: Option<Tls>,
    timeout: Duration,
    started_ms: u64,
}

/// The result of phase one.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub boxes: Vec<BoxReport>,
    pub at_ms: u64,
}

impl Prepared {
    /// True if every box of the tree holds the config.
    pub fn all_ok(&self) -> bool {
        !self.boxes.is_empty() && self.boxes.iter().all(|b| b.outcome == Outcome::Ok)
    }
}

fn tree(cfg: &Config) -> Result<&Configd, PushError> {
    cfg.configd.as_ref().ok_or(PushError::NoTree)
}

fn check_admin(cfg: &Config, key: &AdminKey) -> Result<(), PushError> {
    let me = key.public_b64();
    if cfg.network.admins.iter().any(|a| a.key.trim() == me) {
        return Ok(());
    }
    Err(PushError::NotAdmin {
        key: me,
        admins: cfg
            .network
            .admins
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// How long popctl waits for a master that has `budget`.
fn master_wait(budget: Duration) -> Duration {
    budget + budget / 10 + Duration::from_millis(300)
}

/// Sends `req` to every master at once and gathers one report per box of the tree.
fn ask_masters(
    d: &Configd,
    tls: Option<&Tls>,
    budget: Duration,
    req: impl Fn() -> Request + Sync,
) -> Vec<BoxReport> {
    let masters: Vec<&ConfigBox> = d.master_boxes();
    std::thread::scope(|s| {
        let handles: Vec<_> = masters
            .iter()
            .map(|m| {
                let req = req();
                let m: &ConfigBox = m;
                s.spawn(move || {
                    let answer = client::call(m.address, &m.name, tls, &req, master_wait(budget));
                    subtree_reports(d, m, answer)
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(&masters)
            .flat_map(|(h, m)| {
                h.join()
                    .unwrap_or_else(|_| vec![BoxReport::unreached(&m.name, "internal error")])
            })
            .collect()
    })
}

impl<'k> Push<'k> {
    /// Reads the signed config (refusing an unsigned or invalid one, or one without a
    /// tree) and gets ready to push it with `key` signing the commands.
    pub fn new(
        signed_text: String,
        key: &'k AdminKey,
        opts: &PushOptions,
    ) -> Result<Push<'k>, PushError> {
        let cfg = SignedConfig::parse(signed_text, "the pushed config")?;
        let d = tree(&cfg.config)?;
        check_admin(&cfg.config, key)?;
        let tls = Tls::from_config(&cfg.config, None)?;
        Ok(Push {
            timeout: opts.timeout.unwrap_or(d.timeout),
            id: crate::sign::random_id()?,
            tls,
            key,
            started_ms: unix_ms(),
            cfg,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn config(&self) -> &SignedConfig {
        &self.cfg
    }

    fn command(&self, op: Op) -> Result<SignedCommand, KeyError> {
        let c = Command::new(&self.cfg.config.network.name, op)?;
        Ok(SignedCommand::sign(&c, self.key))
    }

    fn tree(&self) -> &Configd {
        // `new` checked that there is one.
        self.cfg
            .config
            .configd
            .as_ref()
            .unwrap_or_else(|| unreachable!("Push::new requires [configd]"))
    }

    /// Phase one: every box verifies and holds the config.
    pub fn prepare(&self) -> Result<Prepared, PushError> {
        let cmd = self.command(Op::Prepare {
            push: self.id.clone(),
            version: self.cfg.version(),
            digest: self.cfg.digest.clone(),
        })?;
        let budget = self.timeout;
        let boxes = ask_masters(self.tree(), self.tls.as_ref(), budget, || {
            Request::Prepare {
                cmd: cmd.clone(),
                text: self.cfg.text.clone(),
                budget_ms: budget.as_millis() as u64,
            }
        });
        Ok(Prepared {
            boxes,
            at_ms: unix_ms(),
        })
    }

    /// Phase two: every box switches.
    pub fn commit(&self) -> Result<Vec<BoxReport>, PushError> {
        let cmd = self.command(Op::Commit {
            push: self.id.clone(),
            version: self.cfg.version(),
        })?;
        let budget = self.timeout;
        Ok(ask_masters(self.tree(), self.tls.as_ref(), budget, || {
            Request::Commit {
                cmd: cmd.clone(),
                budget_ms: budget.as_millis() as u64,
            }
        }))
    }

    /// Every box drops the config.
    pub fn abort(&self) -> Result<Vec<BoxReport>, PushError> {
        let cmd = self.command(Op::Abort {
            push: self.id.clone(),
        })?;
        let budget = self.timeout;
        Ok(ask_masters(self.tree(), self.tls.as_ref(), budget, || {
            Request::Abort {
                cmd: cmd.clone(),
                budget_ms: budget.as_millis() as u64,
            }
        }))
    }

    /// Both phases: COMMIT if every box prepared, else ABORT.
    pub fn run(self) -> Result<PushReport, PushError> {
        let t0 = Instant::now();
        let prepared = self.prepare()?;
        let committed = prepared.all_ok();
        let mut problems: Vec<String> = prepared
            .boxes
            .iter()
            .filter(|b| b.outcome != Outcome::Ok)
            .map(|b| format!("box {}: {}", b.name, b.message))
            .collect();
        let decision = if committed {
            let d = self.commit()?;
            problems.extend(d.iter().filter(|b| b.outcome != Outcome::Ok).map(|b| {
                format!(
                    "box {} has not confirmed the commit ({}); it fetches version {} from its parent when it is back",
                    b.name,
                    b.message,
                    self.cfg.version()
                )
            }));
            d
        } else {
            self.abort()?
        };
        tracing::debug!(
            elapsed_ms = t0.elapsed().as_millis() as u64,
            committed,
            "push done"
        );
        let last_switch_ms = committed
            .then(|| {
                decision
                    .iter()
                    .filter(|b| b.outcome == Outcome::Ok)
                    .filter_map(|b| b.status.as_ref())
                    .filter(|s| s.running.version == self.cfg.version())
                    .map(|s| s.running.since_ms)
                    .max()
            })
            .flatten();
        Ok(PushReport {
            push: self.id.clone(),
            version: self.cfg.version(),
            signer: self.cfg.verify(&self.cfg.config.network.admins).ok(),
            committed,
            started_ms: self.started_ms,
            prepared_ms: prepared.at_ms,
            finished_ms: unix_ms(),
            last_switch_ms,
            prepare: prepared.boxes,
            decision,
            problems,
        })
    }
}

/// Pushes a signed config with `key` signing the commands (see the module docs).
pub fn push(
    signed_text: String,
    key: &AdminKey,
    opts: &PushOptions,
) -> Result<PushReport, PushError> {
    Push::new(signed_text, key, opts)?.run()
}

/// Signs `text` with `key` and pushes it.
pub fn sign_and_push(
    text: &str,
    key: &AdminKey,
    opts: &PushOptions,
) -> Result<PushReport, PushError> {
    push(crate::sign::sign_config(text, key), key, opts)
}

/// Every box's state, gathered down the tree of `cfg` (the network's current config).
pub fn status(cfg: &Config, timeout: Option<Duration>) -> Result<Vec<BoxReport>, PushError> {
    let d = tree(cfg)?;
    let tls = Tls::from_config(cfg, None)?;
    let budget = timeout.unwrap_or(d.timeout.min(Duration::from_secs(5)));
    Ok(ask_masters(d, tls.as_ref(), budget, || Request::Tree {
        budget_ms: budget.as_millis() as u64,
    }))
}

/// Purges the cache of every POP through the tree of `cfg`. `purge` is the body of the
/// cache admin's `POST /purge` (`{"url": ...}`, `{"prefix": ...}` or `{"customer": ...}`).
pub fn purge(
    cfg: &Config,
    key: &AdminKey,
    purge: serde_json::Value,
    timeout: Option<Duration>,
) -> Result<Vec<BoxReport>, PushError> {
    let d = tree(cfg)?;
    check_admin(cfg, key)?;
    let tls = Tls::from_config(cfg, None)?;
    let c = Command::new(&cfg.network.name, Op::Purge { purge })?;
    let cmd = SignedCommand::sign(&c, key);
    let budget = timeout.unwrap_or(d.timeout);
    Ok(ask_masters(d, tls.as_ref(), budget, || Request::Purge {
        cmd: cmd.clone(),
        budget_ms: budget.as_millis() as u64,
    }))
}
