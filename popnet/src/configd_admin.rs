//! The admin listener of `popnet configd --admin ADDR`: /health, /status (the box's state as JSON) and /metrics (Prometheus text), loopback only.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use anyhow::{Context, Result, bail};
use configd::daemon::Observer;
use probe::admin_http::{read_request, reply, serve};

/// Binds `addr` (a loopback address: the listener has no token) and serves until `stop`.
pub fn start(addr: SocketAddr, d: Observer, stop: Arc<AtomicBool>) -> Result<JoinHandle<()>> {
    if !addr.ip().is_loopback() {
        bail!(
            "--admin {addr}: configd's admin listener has no token, so it must be on loopback; use e.g. 127.0.0.1:5383 and scrape it from this box"
        );
    }
    let l = TcpListener::bind(addr).with_context(|| {
        format!("cannot listen on {addr} (configd admin); is another configd using it? choose another --admin")
    })?;
    tracing::info!(admin = %addr, "configd: admin listener (/health, /status, /metrics)");
    serve(
        "configd-admin",
        l,
        move || stop.load(Ordering::Relaxed),
        move |mut s| {
            let Some(req) = read_request(&mut s, None)? else {
                return Ok(());
            };
            match req.path.as_str() {
                "/health" => reply(&mut s, 200, "text/plain", b"ok\n"),
                "/status" => {
                    let body = serde_json::to_vec_pretty(&d.status()).unwrap_or_default();
                    reply(&mut s, 200, "application/json", &body)
                }
                "/metrics" => reply(&mut s, 200, promtext::CONTENT_TYPE, d.metrics().as_bytes()),
                _ => reply(
                    &mut s,
                    404,
                    "text/plain",
                    b"configd's admin listener serves /health, /status and /metrics\n",
                ),
            }
        },
    )
    .context("cannot start the configd admin thread")
}
