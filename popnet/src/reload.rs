//! The roles of this box and their live reload: a new config from configd's local socket, or from the config file on SIGHUP.
//!
//! A reload checks the new config for every role first (parse and validate, then each
//! role's own checks: its POP still there, the catalog compiles, the targets build);
//! only if all of them accept it does any role switch. Otherwise every role keeps the
//! old config and the reason is logged and, with configd, reported back to it (and shown
//! by `popctl config status`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result};
use configd::local::Subscription;
use popnet_config::Config;

/// The running roles of this box.
#[derive(Default)]
pub struct Roles {
    pub dns: Option<crate::Dns>,
    pub cache: Option<crate::Cache>,
    pub probe: Option<crate::Probe>,
    /// The log server (`popnet logd`, or the POP's own in `popnet up`).
    pub logd: Option<logd::Logd>,
}

impl Roles {
    /// Checks `text` for every role, then switches them all; returns what was done, or
    /// why nothing was.
    pub fn reload(&self, text: &str, origin: &str) -> Result<String, String> {
        let cfg = Config::from_toml(text, origin).map_err(|e| e.to_string())?;
        let dns = match &self.dns {
            Some(d) => Some(d.prepare_reload(&cfg).map_err(|e| format!("dns: {e}"))?),
            None => None,
        };
        let cache = match &self.cache {
            Some(c) => Some(
                c.server
                    .prepare_reload(&cfg)
                    .map_err(|e| format!("cache: {e}"))?,
            ),
            None => None,
        };
        let probe = match &self.probe {
            Some(p) => Some(p.prepare_reload(&cfg).map_err(|e| format!("probe: {e}"))?),
            None => None,
        };
        if let Some(l) = &self.logd {
            l.prepare_reload(&cfg).map_err(|e| format!("logd: {e}"))?;
        }
        let mut done = vec![format!("version {}", cfg.network.version)];
        if let (Some(d), Some(r)) = (&self.dns, dns) {
            let restart = r.needs_restart().join(", ");
            d.apply_reload(r);
            done.push(if restart.is_empty() {
                "dns reloaded".to_string()
            } else {
                format!(
                    "dns reloaded (until a restart, these keep their running values: {restart})"
                )
            });
        }
        if let (Some(c), Some(r)) = (&self.cache, cache) {
            let restart = r.needs_restart().join(", ");
            let hosts = c.server.apply_reload(r);
            done.push(if restart.is_empty() {
                format!("cache reloaded ({hosts} hosts)")
            } else {
                format!(
                    "cache reloaded ({hosts} hosts; until a restart, these keep their running values: {restart})"
                )
            });
        }
        if let Some(l) = &self.logd {
            // Every role accepted the config above, so this switches too.
            let restart = l.apply_reload(cfg.clone(), Some(text)).join(", ");
            done.push(if restart.is_empty() {
                "logd reloaded".to_string()
            } else {
                format!(
                    "logd reloaded (until a restart, these keep their running values: {restart})"
                )
            });
        }
        if let (Some(p), Some(r)) = (&self.probe, probe) {
            let n = r.targets().len();
            // Every role has switched by now: a responder that cannot start again is
            // reported, not a refusal.
            match p.apply_reload(r) {
                Ok(()) => done.push(format!("probe reloaded ({n} targets)")),
                Err(e) => {
                    tracing::error!(error = %e, "probe: the latency responder did not restart; it is down until a reload or restart");
                    done.push(format!(
                        "probe reloaded ({n} targets), but its latency responder is down: {e}"
                    ));
                }
            }
        }
        Ok(done.join("; "))
    }

    pub fn stop(self) {
        if let Some(p) = self.probe {
            p.stop();
        }
        if let Some(c) = self.cache {
            c.stop();
        }
        if let Some(d) = self.dns {
            d.stop();
        }
        if let Some(l) = self.logd {
            l.stop();
        }
    }
}

/// Where this box's config comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The built-in demo (no reload).
    Demo,
    /// A file, read again on SIGHUP.
    File(PathBuf),
    /// configd's local socket: every switch arrives by itself; SIGHUP asks again.
    Configd(PathBuf),
}

/// The config a role starts with, and the subscription it came from.
pub struct Start {
    pub cfg: Config,
    /// The config's text (as signed, from configd).
    pub text: String,
    sub: Option<Subscription>,
}

/// Why there is no first config.
#[derive(Debug)]
pub enum FirstError {
    /// The config itself is wrong.
    Config(popnet_config::ConfigError),
    /// configd could not be asked.
    Configd(String),
}

/// Reads the first config from `source`, subscribing as `role` with configd.
pub fn first(source: &Source, role: &str) -> Result<Start, FirstError> {
    match source {
        Source::Demo => Ok(Start {
            cfg: Config::demo(),
            text: popnet_config::DEMO_TOML.to_string(),
            sub: None,
        }),
        Source::File(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| {
                FirstError::Config(popnet_config::ConfigError::Io {
                    path: p.clone(),
                    source,
                })
            })?;
            Ok(Start {
                cfg: Config::from_toml(&text, &p.display().to_string())
                    .map_err(FirstError::Config)?,
                text,
                sub: None,
            })
        }
        Source::Configd(sock) => {
            let (sub, update) = Subscription::connect(sock, role)
                .map_err(|e| FirstError::Configd(e.to_string()))?;
            let cfg = Config::from_toml(
                &update.text,
                &format!("version {} from configd", update.version),
            )
            .map_err(FirstError::Config)?;
            Ok(Start {
                cfg,
                text: update.text,
                sub: Some(sub),
            })
        }
    }
}

type Shared = Arc<Mutex<Option<Roles>>>;

fn reload_from(roles: &Shared, text: &str, origin: &str) -> Result<String, String> {
    let guard = roles.lock().unwrap_or_else(PoisonError::into_inner);
    match guard.as_ref() {
        Some(r) => {
            let result = r.reload(text, origin);
            match &result {
                Ok(m) => tracing::info!(%origin, "reload: {m}"),
                Err(e) => {
                    tracing::error!(%origin, "reload refused, the old config keeps running: {e}")
                }
            }
            result
        }
        None => Err("stopping".to_string()),
    }
}

/// Follows configd: reloads on every config it sends, reports back, reconnects when it
/// goes away.
fn follow(roles: Shared, sock: PathBuf, role: String, mut sub: Subscription, mut version: u32) {
    loop {
        match sub.recv() {
            Ok(u) => {
                if u.version != version {
                    let r = reload_from(
                        &roles,
                        &u.text,
                        &format!("version {} from configd", u.version),
                    );
                    if r.is_ok() {
                        version = u.version;
                    }
                    if let Err(e) = sub.report(u.version, r) {
                        tracing::warn!(error = %e, "reload: cannot report to configd");
                    }
                } else if let Err(e) = sub.report(u.version, Ok("runs it already".to_string())) {
                    tracing::warn!(error = %e, "reload: cannot report to configd");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reload: lost configd; reconnecting");
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    if roles
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .is_none()
                    {
                        return;
                    }
                    match Subscription::connect(&sock, &role) {
                        Ok((s, u)) => {
                            sub = s;
                            let r = if u.version == version {
                                Ok("runs it already".to_string())
                            } else {
                                reload_from(
                                    &roles,
                                    &u.text,
                                    &format!("version {} from configd", u.version),
                                )
                            };
                            if r.is_ok() {
                                version = u.version;
                            }
                            let _ = sub.report(u.version, r);
                            break;
                        }
                        Err(e) => tracing::debug!(error = %e, "reload: configd not back yet"),
                    }
                }
            }
        }
    }
}

/// Runs `roles` until SIGINT or SIGTERM, reloading on configd's word and on SIGHUP.
pub fn run(roles: Roles, source: Source, start: Start, role: &str) -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let roles: Shared = Arc::new(Mutex::new(Some(roles)));
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("cannot install signal handlers")?;
    let version = start.cfg.network.version;
    if let (Source::Configd(sock), Some(mut sub)) = (&source, start.sub) {
        let _ = sub.report(version, Ok("started with it".to_string()));
        let (r, s, role) = (roles.clone(), sock.clone(), role.to_string());
        std::thread::Builder::new()
            .name("popnet-reload".into())
            .spawn(move || follow(r, s, role, sub, version))
            .context("cannot start the reload thread")?;
    }
    for sig in signals.forever() {
        if sig != SIGHUP {
            tracing::info!(signal = sig, "stopping");
            break;
        }
        match &source {
            Source::Demo => tracing::info!("SIGHUP: the built-in demo has nothing to reload"),
            Source::File(p) => match std::fs::read_to_string(p) {
                Ok(text) => {
                    let _ = reload_from(&roles, &text, &p.display().to_string());
                }
                Err(e) => {
                    tracing::error!(file = %p.display(), error = %e, "SIGHUP: cannot read the config; the old one keeps running")
                }
            },
            Source::Configd(sock) => match Subscription::connect(sock, &format!("{role} (SIGHUP)"))
            {
                Ok((_, u)) => {
                    let _ = reload_from(
                        &roles,
                        &u.text,
                        &format!("version {} from configd", u.version),
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: cannot ask configd; the old config keeps running")
                }
            },
        }
    }
    let taken = roles.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(r) = taken {
        r.stop();
    }
    Ok(())
}
