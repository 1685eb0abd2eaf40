//! The probe's admin listener: `/health`, `/stats` (JSON) and `/metrics` (Prometheus text) over HTTP/1.1, one request per connection.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;

use logship::LineSink;

use crate::admin_http::{self, reply};
use crate::daemon::{ProbeStats, Shared, lock};
use crate::responder::ResponderStatsHandle;

/// Everything the admin listener reads.
pub(crate) struct AdminContext {
    pub pop: String,
    pub started: Instant,
    pub shared: Arc<Shared>,
    /// The latency responder's counters (replaced when a reload restarts it).
    pub latency: std::sync::Mutex<Option<ResponderStatsHandle>>,
    pub log: Option<Arc<dyn LineSink>>,
    pub token: Option<Vec<u8>>,
}

impl AdminContext {
    pub fn stats(&self) -> ProbeStats {
        let st = lock(&self.shared.state);
        ProbeStats {
            pop: self.pop.clone(),
            targets: st
                .ids
                .iter()
                .zip(&st.health)
                .map(|((id, kind), h)| h.snapshot(id, kind))
                .collect(),
            engine: st.engine,
            reports_sent: self.shared.reports_sent.load(Ordering::Relaxed),
            report_errors: self.shared.report_errors.load(Ordering::Relaxed),
            load: st.load,
            latency: self
                .latency
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .map(ResponderStatsHandle::get),
        }
    }
}

/// Starts the admin thread on an already bound listener; it stops with the probe.
pub(crate) fn start(listener: TcpListener, ctx: Arc<AdminContext>) -> io::Result<JoinHandle<()>> {
    let stop = ctx.clone();
    admin_http::serve(
        "probe-admin",
        listener,
        move || stop.shared.stop.load(Ordering::Relaxed),
        move |s| handle(s, &ctx),
    )
}

fn handle(mut s: TcpStream, ctx: &AdminContext) -> io::Result<()> {
    let Some(req) = admin_http::read_request(&mut s, ctx.token.as_deref())? else {
        return Ok(());
    };
    match req.path.as_str() {
        "/health" => reply(&mut s, 200, "text/plain", b"ok\n"),
        "/stats" => {
            let body = serde_json::to_vec_pretty(&ctx.stats()).unwrap_or_default();
            reply(&mut s, 200, "application/json", &body)
        }
        "/metrics" => reply(&mut s, 200, promtext::CONTENT_TYPE, metrics(ctx).as_bytes()),
        _ => reply(
            &mut s,
            404,
            "text/plain",
            b"not found; try /health, /stats, /metrics\n",
        ),
    }
}

/// The probe's counters in the Prometheus text format.
pub(crate) fn metrics(ctx: &AdminContext) -> String {
    let st = ctx.stats();
    let pop = st.pop.as_str();
    let l = [("pop", pop)];
    let mut m = promtext::Metrics::new();
    m.gauge(
        "popnet_probe_uptime_seconds",
        "Seconds since the probe started.",
    )
    .sample(&l, ctx.started.elapsed().as_secs());
    {
        let mut f = m.gauge(
            "popnet_probe_target_up",
            "1 while the target passes its service checks (two failed rounds in a row make it down).",
        );
        for t in &st.targets {
            f.sample(
                &[("pop", pop), ("target", &t.id), ("check", t.check)],
                u64::from(t.up),
            );
        }
    }
    {
        let mut f = m.counter(
            "popnet_probe_target_rounds_total",
            "Finished check rounds per target.",
        );
        for t in &st.targets {
            f.sample(&[("pop", pop), ("target", &t.id)], t.rounds);
        }
    }
    {
        let mut f = m.counter(
            "popnet_probe_target_failures_total",
            "Failed check rounds per target.",
        );
        for t in &st.targets {
            f.sample(&[("pop", pop), ("target", &t.id)], t.failures);
        }
    }
    let e = &st.engine;
    m.counter("popnet_probe_rounds_total", "Check rounds finished.")
        .sample(&l, e.rounds_done);
    m.counter(
        "popnet_probe_rounds_skipped_total",
        "Rounds not started because the previous one was still running.",
    )
    .sample(&l, e.skipped);
    m.counter(
        "popnet_probe_rounds_overrun_total",
        "Rounds that ended without a result (no check slot in time, or a local error).",
    )
    .sample(&l, e.overrun);
    m.counter(
        "popnet_probe_checks_total",
        "Checks by result (passed, failed, timed_out, local_error).",
    )
    .sample(&[("pop", pop), ("result", "passed")], e.checks_passed)
    .sample(&[("pop", pop), ("result", "failed")], e.checks_failed)
    .sample(&[("pop", pop), ("result", "timed_out")], e.checks_timed_out)
    .sample(&[("pop", pop), ("result", "local_error")], e.local_errors);
    m.gauge(
        "popnet_probe_max_open_checks",
        "Most checks open at once so far.",
    )
    .sample(&l, e.max_open);
    m.counter(
        "popnet_probe_reports_sent_total",
        "Report datagrams sent to DNS servers.",
    )
    .sample(&l, st.reports_sent);
    m.counter(
        "popnet_probe_report_errors_total",
        "Report datagrams that could not be sent or encoded.",
    )
    .sample(&l, st.report_errors);
    if let Some(load) = &st.load {
        m.gauge(
            "popnet_probe_load_ratio",
            "The POP's reported load (0..1) and its parts.",
        )
        .sample(&[("pop", pop), ("part", "reported")], f64::from(load.load))
        .sample(&[("pop", pop), ("part", "cpu")], f64::from(load.cpu))
        .sample(&[("pop", pop), ("part", "memory")], f64::from(load.memory))
        .sample(
            &[("pop", pop), ("part", "network")],
            f64::from(load.network),
        )
        .sample(
            &[("pop", pop), ("part", "connections")],
            f64::from(load.connections),
        );
    }
    if let Some(r) = &st.latency {
        m.counter(
            "popnet_probe_latency_requests_total",
            "Latency-probe requests accepted from DNS servers.",
        )
        .sample(&l, r.requests);
        m.counter(
            "popnet_probe_latency_dropped_requests_total",
            "Latency-probe requests dropped, by reason.",
        )
        .sample(&[("pop", pop), ("reason", "bad_mac")], r.bad_mac)
        .sample(&[("pop", pop), ("reason", "malformed")], r.malformed)
        .sample(&[("pop", pop), ("reason", "stale")], r.stale)
        .sample(
            &[("pop", pop), ("reason", "rate_limited")],
            r.rate_limited_requests,
        );
        m.counter(
            "popnet_probe_latency_measurements_total",
            "Resolver latency measurements finished, by method (no_answer: none answered).",
        )
        .sample(&[("pop", pop), ("method", "icmp")], r.by_icmp)
        .sample(&[("pop", pop), ("method", "dns")], r.by_dns)
        .sample(&[("pop", pop), ("method", "tcp")], r.by_tcp)
        .sample(&[("pop", pop), ("method", "no_answer")], r.no_answer);
    }
    if let Some(log) = &ctx.log {
        log.metrics(&mut m);
    }
    m.finish()
}
