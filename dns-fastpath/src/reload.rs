//! Live reload of the DNS role: a new config's catalog, selection state and answers on the sockets already open.
//!
//! [`DnsServer::prepare_reload`] checks and compiles the new config without touching the
//! running server (an error leaves it as it was); [`DnsServer::apply_reload`] then swaps
//! the selection state under the control loop's lock and publishes the first answer
//! table of the new config. Query workers keep their sockets and read the new table on
//! their next query, so no query goes unanswered. What the probes reported about servers
//! that stay (health, load, latency, and the reports' replay guards) is kept; the
//! selection state (persistence windows, hysteresis) and the resolver tracker start
//! afresh. With XDP attached and changed views, the map is emptied, the view tries are
//! rewritten, then the new answers are written ([`crate::xdp::FastPath::replace_views`]).
//! Settings bound to sockets and threads (listen addresses, workers, XDP interfaces,
//! the admin listener, TCP limits, the EDNS payload size) keep their running values
//! until a restart; the reload says which ones changed.

use std::sync::{Arc, PoisonError};

use popnet_config::Config;

use crate::catalog::{Catalog, CatalogError};
use crate::control::ControlState;
use crate::resolvers::Resolvers;
use crate::server::DnsServer;

/// Why a config cannot be reloaded (the server keeps the old one).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    #[error("{0}")]
    Pop(String),
    #[error("the new config cannot be served: {0}")]
    Catalog(#[from] CatalogError),
}

/// A checked and compiled config, ready to be applied.
pub struct DnsReload {
    cfg: Config,
    catalog: Arc<Catalog>,
    resolvers: Resolvers,
    /// Settings that changed but need a restart.
    restart: Vec<&'static str>,
}

impl DnsReload {
    /// The changed settings that keep their running values until a restart.
    pub fn needs_restart(&self) -> &[&'static str] {
        &self.restart
    }
}

impl DnsServer {
    /// Checks `cfg` for this server's POP and compiles it.
    pub fn prepare_reload(&self, cfg: &Config) -> Result<DnsReload, ReloadError> {
        let pop = cfg.pop(&self.pop).ok_or_else(|| {
            ReloadError::Pop(format!(
                "POP {:?} is not in the new config; this server keeps the old one (restart it with --pop of a POP of the new config)",
                self.pop
            ))
        })?;
        let svc = pop.dns.as_ref().ok_or_else(|| {
            ReloadError::Pop(format!(
                "POP {:?} runs no DNS server in the new config; stop this one instead",
                self.pop
            ))
        })?;
        let catalog = Arc::new(Catalog::compile(cfg)?);
        let own = svc
            .effective_addresses()
            .into_iter()
            .find(|a| !a.is_unspecified());
        let resolvers = Resolvers::new(&catalog, &cfg.probes, &pop.name, own);

        let old = self.config.lock().unwrap_or_else(PoisonError::into_inner);
        let mut restart = Vec::new();
        if let Some(was) = old.pop(&self.pop).and_then(|p| p.dns.as_ref()) {
            let o = &self.opts;
            if o.listen.is_none() && was.listen != svc.listen {
                restart.push("pops.dns.listen");
            }
            if o.reports.is_none() && was.reports != svc.reports {
                restart.push("pops.dns.reports");
            }
            if o.admin.is_none() && was.admin != svc.admin {
                restart.push("pops.dns.admin");
            }
            if was.admin_token != svc.admin_token {
                restart.push("pops.dns.admin_token");
            }
            if o.xdp.is_none() && (was.xdp_interfaces != svc.xdp_interfaces) {
                restart.push("pops.dns.xdp_interfaces");
            }
            if o.xdp_mode.is_none() && was.xdp_mode != svc.xdp_mode {
                restart.push("pops.dns.xdp_mode");
            }
        }
        let (a, b) = (&old.dns, &cfg.dns);
        if a.udp_payload != b.udp_payload {
            restart.push("dns.udp_payload");
        }
        if self.opts.workers.is_none() && a.workers != b.workers {
            restart.push("dns.workers");
        }
        if a.tcp_idle_timeout != b.tcp_idle_timeout {
            restart.push("dns.tcp_idle_timeout");
        }
        if a.tcp_max_connections != b.tcp_max_connections {
            restart.push("dns.tcp_max_connections");
        }
        Ok(DnsReload {
            cfg: cfg.clone(),
            catalog,
            resolvers,
            restart,
        })
    }

    /// Switches to a prepared config; returns the new serial (the config's version).
    pub fn apply_reload(&self, r: DnsReload) -> u32 {
        let cfg = &r.cfg;
        let serial = r.catalog.serial;
        {
            let mut st = self.control.lock().unwrap_or_else(PoisonError::into_inner);
            let metrics = st.metrics.carry_over(
                cfg.probes.report_key.as_bytes(),
                cfg.probes.stale_after.as_millis() as u64,
                r.catalog.servers.iter().map(|s| s.id.clone()),
                r.catalog.views.names().map(str::to_string).collect(),
            );
            let views_changed = !same_views(&st.catalog, &r.catalog);
            let mut next = ControlState::new(r.catalog, metrics, r.resolvers, cfg.probes.recovery);
            next.generation = st.generation;
            let Some(table) = next.refresh(true) else {
                unreachable!("a forced refresh always builds a table")
            };
            *st = next;
            let table = Arc::new(table);
            self.shared.table.store(table.clone());
            if let Some(x) = self.shared.xdp.get()
                && let Err(e) = x.reload(table, views_changed)
            {
                tracing::error!(error = %e, "XDP fast path: the new views could not be written; it passes every query to userspace");
            }
            // Tables of the control loop are published under this lock too, so none of
            // the old config can land after this one.
            drop(st);
        }
        if !r.restart.is_empty() {
            tracing::warn!(settings = %r.restart.join(", "), "dns: these settings changed but keep their running values until a restart");
        }
        *self.config.lock().unwrap_or_else(PoisonError::into_inner) = r.cfg;
        tracing::info!(serial, "dns: reloaded");
        serial
    }
}

fn same_views(a: &Catalog, b: &Catalog) -> bool {
    a.views.names().eq(b.views.names()) && a.views.entries().eq(b.views.entries())
}
