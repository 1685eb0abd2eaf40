//! The admin listener: a small HTTP/1.1 JSON endpoint for stats, selections and server figures.
//!
//! | path          | body                                                     |
//! |---------------|----------------------------------------------------------|
//! | `/health`     | `ok`                                                     |
//! | `/stats`      | query counters, report counters, answer-table generation |
//! | `/selections` | per domain, view and family: the answer and its ranking  |
//! | `/servers`    | per server: tier, health, load, loss, latency, ages      |
//! | `/xdp/map`    | the XDP answer map read back from the kernel; `?name=&type=&view=` filter |
//!
//! One request per connection, bounded head size, short timeouts. With a token in the
//! config every request needs `Authorization: Bearer <token hex>`.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use probe::admin_http::{self, reply};
use serde::{Deserialize, Serialize};

use crate::control::ControlState;
use crate::metrics::{ReportCounters, ReportCountersSnapshot};
use crate::resolvers::{ResolverStats, ResolverView};
use crate::server::Shared;
use crate::stats::QueryStats;
use crate::xdp::entries::{EntryView, describe};
use crate::xdp::{WriterStats, XdpCounters, XdpState};

/// What `/stats` returns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatsReply {
    pub pop: String,
    pub uptime_s: u64,
    pub queries: QueryStats,
    pub reports: ReportCountersSnapshot,
    pub answer_table: TableInfo,
    pub xdp: XdpReport,
    /// The resolver tracker (latency probes to the resolvers this server sees).
    pub resolvers: ResolverStats,
}

/// `/resolvers`: the tracker's counters and every resolver it tracks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResolversReply {
    pub stats: ResolverStats,
    pub resolvers: Vec<ResolverView>,
}

/// The XDP fast path in `/stats`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct XdpReport {
    #[serde(flatten)]
    pub state: XdpState,
    /// The program's counters (when attached).
    pub counters: Option<XdpCounters>,
    /// The answer-map writer (when attached).
    pub writer: Option<WriterStats>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableInfo {
    pub generation: u64,
    pub entries: usize,
}

/// Everything the admin listener reads.
pub struct AdminContext {
    pub pop: String,
    pub started: Instant,
    pub shared: Arc<Shared>,
    pub control: Arc<Mutex<ControlState>>,
    pub reports: Arc<ReportCounters>,
    pub token: Option<Vec<u8>>,
    /// The DNS log's sink (its counters go on `/metrics`).
    pub log_sink: Option<Arc<dyn logship::LineSink>>,
}

/// Starts the admin listener thread on an already bound listener.
pub fn start(listener: TcpListener, ctx: AdminContext) -> io::Result<JoinHandle<()>> {
    let shared = ctx.shared.clone();
    admin_http::serve(
        "dns-admin",
        listener,
        move || shared.stop.load(Ordering::Relaxed),
        move |s| handle(s, &ctx),
    )
}

fn handle(mut s: TcpStream, ctx: &AdminContext) -> io::Result<()> {
    let Some(req) = admin_http::read_request(&mut s, ctx.token.as_deref())? else {
        return Ok(());
    };
    let (path, query) = (req.path.as_str(), req.query.as_str());
    let body = match path {
        "/health" => return reply(&mut s, 200, "text/plain", b"ok\n"),
        "/stats" => json(&stats_reply(ctx)),
        "/metrics" => {
            return reply(&mut s, 200, promtext::CONTENT_TYPE, metrics(ctx).as_bytes());
        }
        "/resolvers" => {
            let table = ctx.shared.table.load();
            let st = ctx.control.lock().unwrap_or_else(|p| p.into_inner());
            json(&ResolversReply {
                stats: st.resolvers.stats(),
                resolvers: st.resolvers.list(
                    &table.catalog.views,
                    Instant::now(),
                    crate::metrics::unix_ms(),
                ),
            })
        }
        "/xdp/map" => match xdp_map(ctx, query) {
            Ok(entries) => json(&entries),
            Err(msg) => return reply(&mut s, 404, "text/plain", format!("{msg}\n").as_bytes()),
        },
        "/selections" => json(
            &ctx.control
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .selections(),
        ),
        "/servers" => json(
            &ctx.control
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .servers(),
        ),
        _ => {
            return reply(
                &mut s,
                404,
                "text/plain",
                b"not found; try /stats, /metrics, /selections, /servers, /resolvers\n",
            );
        }
    };
    reply(&mut s, 200, "application/json", &body)
}

fn stats_reply(ctx: &AdminContext) -> StatsReply {
    let table = ctx.shared.table.load();
    let workers = ctx.shared.all_counters();
    StatsReply {
        pop: ctx.pop.clone(),
        uptime_s: ctx.started.elapsed().as_secs(),
        queries: QueryStats::sum(workers.iter().map(|c| c.as_ref())),
        reports: ctx.reports.snapshot(),
        answer_table: TableInfo {
            generation: table.generation,
            entries: table.len(),
        },
        xdp: xdp_report(ctx),
        resolvers: ctx
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .resolvers
            .stats(),
    }
}

/// The DNS server's counters in the Prometheus text format.
pub fn metrics(ctx: &AdminContext) -> String {
    let st = stats_reply(ctx);
    let pop = st.pop.as_str();
    let l = [("pop", pop)];
    let mut m = promtext::Metrics::new();
    m.gauge(
        "popnet_dns_uptime_seconds",
        "Seconds since the DNS server started.",
    )
    .sample(&l, st.uptime_s);
    let q = &st.queries;
    m.counter(
        "popnet_dns_queries_received_total",
        "Queries received in userspace.",
    )
    .sample(&l, q.received);
    m.counter(
        "popnet_dns_queries_answered_total",
        "Queries answered in userspace.",
    )
    .sample(&l, q.answered);
    m.counter(
        "popnet_dns_queries_precomputed_total",
        "Queries answered from the precomputed answer table.",
    )
    .sample(&l, q.precomputed);
    m.counter(
        "popnet_dns_queries_truncated_total",
        "Answers sent with TC=1 (too large for UDP).",
    )
    .sample(&l, q.truncated);
    m.counter(
        "popnet_dns_queries_dropped_total",
        "Datagrams dropped without an answer, by reason.",
    )
    .sample(&[("pop", pop), ("reason", "short")], q.dropped_short)
    .sample(&[("pop", pop), ("reason", "response")], q.dropped_response)
    .sample(&[("pop", pop), ("reason", "oversize")], q.dropped_oversize);
    m.counter("popnet_dns_responses_total", "Responses sent, by RCODE.")
        .sample(&[("pop", pop), ("rcode", "NOERROR")], q.noerror)
        .sample(&[("pop", pop), ("rcode", "FORMERR")], q.formerr)
        .sample(&[("pop", pop), ("rcode", "SERVFAIL")], q.servfail)
        .sample(&[("pop", pop), ("rcode", "NXDOMAIN")], q.nxdomain)
        .sample(&[("pop", pop), ("rcode", "NOTIMP")], q.notimp)
        .sample(&[("pop", pop), ("rcode", "REFUSED")], q.refused)
        .sample(&[("pop", pop), ("rcode", "BADVERS")], q.badvers)
        .sample(&[("pop", pop), ("rcode", "other")], q.other_rcode);
    let r = &st.reports;
    m.counter(
        "popnet_dns_reports_total",
        "Metric reports received, by outcome.",
    )
    .sample(&[("pop", pop), ("result", "accepted")], r.accepted)
    .sample(&[("pop", pop), ("result", "bad_mac")], r.bad_mac)
    .sample(&[("pop", pop), ("result", "malformed")], r.malformed)
    .sample(&[("pop", pop), ("result", "bad_version")], r.bad_version)
    .sample(&[("pop", pop), ("result", "replayed")], r.replayed)
    .sample(&[("pop", pop), ("result", "stale")], r.stale)
    .sample(&[("pop", pop), ("result", "future")], r.future);
    m.counter(
        "popnet_dns_report_entries_total",
        "Entries of accepted reports, and those ignored by reason.",
    )
    .sample(&[("pop", pop), ("result", "received")], r.entries)
    .sample(
        &[("pop", pop), ("result", "unknown_server")],
        r.unknown_server,
    )
    .sample(&[("pop", pop), ("result", "unknown_view")], r.unknown_view)
    .sample(&[("pop", pop), ("result", "stale")], r.stale_entries);
    m.gauge(
        "popnet_dns_answer_table_entries",
        "Entries of the precomputed answer table.",
    )
    .sample(&l, st.answer_table.entries);
    m.gauge(
        "popnet_dns_answer_table_generation",
        "Generation of the answer table (goes up at every rebuild).",
    )
    .sample(&l, st.answer_table.generation);
    if let Some(c) = &st.xdp.counters {
        m.counter(
            "popnet_dns_xdp_answered_total",
            "Queries answered by the XDP program.",
        )
        .sample(&l, c.answered);
        let mut f = m.counter(
            "popnet_dns_xdp_passed_total",
            "Packets the XDP program passed to the stack, by reason.",
        );
        for (reason, n) in &c.passed {
            f.sample(&[("pop", pop), ("reason", reason)], *n);
        }
    }
    let v = &st.resolvers;
    m.gauge(
        "popnet_dns_resolvers_tracked",
        "Client resolvers tracked for latency probes.",
    )
    .sample(&l, v.tracked);
    m.counter(
        "popnet_dns_resolver_probe_requests_total",
        "Latency-probe requests sent to probes.",
    )
    .sample(&l, v.requests_sent);
    m.counter(
        "popnet_dns_resolver_probe_results_total",
        "Latency results received from probes.",
    )
    .sample(&l, v.results);
    if let Some(sink) = &ctx.log_sink {
        sink.metrics(&mut m);
    }
    m.finish()
}

fn xdp_report(ctx: &AdminContext) -> XdpReport {
    let state = ctx
        .shared
        .xdp_state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let rt = ctx.shared.xdp.get();
    XdpReport {
        state,
        counters: rt.and_then(|r| match r.counters() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "reading XDP counters failed");
                None
            }
        }),
        writer: rt.map(|r| r.writer_stats()),
    }
}

/// Value of `key` in a query string (no percent-decoding: names and types need none).
fn param<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// The XDP map's entries, filtered by `name`, `type` and `view`.
fn xdp_map(ctx: &AdminContext, query: &str) -> Result<Vec<EntryView>, String> {
    let rt = ctx
        .shared
        .xdp
        .get()
        .ok_or("the XDP fast path is not attached on this server")?;
    let entries = rt.entries().map_err(|e| e.to_string())?;
    let table = ctx.shared.table.load();
    let views = &table.catalog.views;
    let want_name =
        param(query, "name").map(|n| n.trim_end_matches('.').to_ascii_lowercase() + ".");
    let want_type = param(query, "type").map(str::to_ascii_uppercase);
    let want_view = param(query, "view");
    let mut out: Vec<EntryView> = entries
        .iter()
        .filter_map(|(k, v)| describe(k, v, |id| views.name(id).to_string()))
        .filter(|e| want_name.as_ref().is_none_or(|n| &e.name == n))
        .filter(|e| want_type.as_ref().is_none_or(|t| &e.qtype == t))
        .filter(|e| want_view.is_none_or(|v| e.view == v || e.view == "*"))
        .collect();
    out.sort_by(|a, b| (&a.name, &a.qtype, &a.view).cmp(&(&b.name, &b.qtype, &b.view)));
    Ok(out)
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v)
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    out.push(b'\n');
    out
}
