//! Live reload of the cache role: a new config's customers, hosts and origins, on the listeners and workers already running.
//!
//! [`CacheServer::prepare_reload`] checks the new config for this POP and builds its host
//! routes; [`CacheServer::apply_reload`] swaps them in (`Shared::routes`). A request
//! already routed keeps the route it started with; the next one uses the new routes.
//! Stored objects stay (a purge removes what must go). Settings bound to sockets,
//! threads and the store (listen addresses, admin listener and token, workers, RAM and
//! disk sizes, limits, timeouts, the access log) keep their running values until a
//! restart; the reload says which ones changed.

use std::sync::PoisonError;

use popnet_config::Config;

use crate::routes::Routes;
use crate::server::CacheServer;

/// Why a config cannot be reloaded (the cache keeps the old one).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    #[error("{0}")]
    Pop(String),
}

/// A checked config, ready to be applied.
pub struct CacheReload {
    cfg: Config,
    routes: Routes,
    hosts: usize,
    restart: Vec<&'static str>,
}

impl CacheReload {
    /// The changed settings that keep their running values until a restart.
    pub fn needs_restart(&self) -> &[&'static str] {
        &self.restart
    }
}

impl CacheServer {
    /// Checks `cfg` for this cache's POP and builds its routes.
    pub fn prepare_reload(&self, cfg: &Config) -> Result<CacheReload, ReloadError> {
        let pop = cfg.pop(&self.pop).ok_or_else(|| {
            ReloadError::Pop(format!(
                "POP {:?} is not in the new config; this cache keeps the old one (restart it with --pop of a POP of the new config)",
                self.pop
            ))
        })?;
        let svc = pop.cache.as_ref().ok_or_else(|| {
            ReloadError::Pop(format!(
                "POP {:?} runs no cache in the new config; stop this one instead",
                self.pop
            ))
        })?;
        let routes = Routes::build(cfg, &self.pop);
        let hosts = routes.hosts();
        let old = self.config.lock().unwrap_or_else(PoisonError::into_inner);
        let mut restart = Vec::new();
        if let Some(was) = old.pop(&self.pop).and_then(|p| p.cache.as_ref()) {
            let o = &self.opts;
            let mut changed = |cond: bool, name: &'static str| {
                if cond {
                    restart.push(name);
                }
            };
            changed(o.listen.is_none() && was.listen != svc.listen, "listen");
            changed(o.admin.is_none() && was.admin != svc.admin, "admin");
            changed(was.admin_token != svc.admin_token, "admin_token");
            changed(o.workers.is_none() && was.workers != svc.workers, "workers");
            changed(was.ram_bytes != svc.ram_bytes, "ram_bytes");
            changed(
                was.max_object_bytes != svc.max_object_bytes,
                "max_object_bytes",
            );
            changed(
                was.max_connections != svc.max_connections,
                "max_connections",
            );
            changed(
                was.max_request_body != svc.max_request_body,
                "max_request_body",
            );
            changed(
                was.head_timeout != svc.head_timeout
                    || was.body_timeout != svc.body_timeout
                    || was.idle_timeout != svc.idle_timeout
                    || was.send_timeout != svc.send_timeout,
                "client timeouts",
            );
            changed(
                was.origin_connect_timeout != svc.origin_connect_timeout
                    || was.origin_timeout != svc.origin_timeout,
                "origin timeouts",
            );
            changed(was.access_log != svc.access_log, "access_log");
        }
        Ok(CacheReload {
            cfg: cfg.clone(),
            routes,
            hosts,
            restart,
        })
    }

    /// Switches to prepared routes; returns how many hosts they route.
    pub fn apply_reload(&self, r: CacheReload) -> usize {
        self.shared().routes.store(std::sync::Arc::new(r.routes));
        if !r.restart.is_empty() {
            tracing::warn!(settings = %r.restart.join(", "), "cache: these settings changed but keep their running values until a restart");
        }
        *self.config.lock().unwrap_or_else(PoisonError::into_inner) = r.cfg;
        tracing::info!(hosts = r.hosts, "cache: reloaded");
        r.hosts
    }
}
