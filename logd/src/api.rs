//! The admin listener of logd: JSON queries for popctl, raw records for audits, and `/metrics`.
//!
//! | request | answer |
//! |---|---|
//! | `GET /health` | `ok` |
//! | `GET /metrics` | Prometheus text: ingest, store and HTTP counters |
//! | `GET /api/customers` | the customers this log server keeps |
//! | `GET /api/stats?customer=C&since=1h` | [`store::Stats`]: totals, per POP, DNS answers, probes |
//! | `GET /api/bill?customer=C&month=YYYY-MM` | [`store::Bill`] (default: this month) |
//! | `GET /api/series?customer=C&range=hour\|day\|month[&pop=P]` | points of the traffic graph |
//! | `GET /api/streams` | every sender stream: batches, records, missing |
//! | `GET /api/raw?customer=C&hour=2026-11-22T08:00&kind=access` | the raw records of one hour (JSON lines) |
//!
//! With `admin_token` in the config every request needs `Authorization: Bearer <token hex>`.

use std::sync::atomic::Ordering;

use logship::{Kind, NO_CUSTOMER};
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::Ctx;
use crate::http::{Request, Response};
use crate::store::{self, Point};
use crate::time::{self, DAY, HOUR, MINUTE, Month};

/// Largest raw answer.
const RAW_LIMIT: usize = 32 << 20;

/// A graph's range: (resolution, from, to, step).
pub fn range(name: &str, now: i64) -> Option<(i64, i64, i64, i64)> {
    match name {
        "hour" => {
            let end = now - now.rem_euclid(MINUTE) + MINUTE;
            Some((MINUTE, end - HOUR, end, MINUTE))
        }
        "day" => {
            let end = now - now.rem_euclid(HOUR) + HOUR;
            Some((HOUR, end - DAY, end, HOUR))
        }
        "month" => {
            let end = now - now.rem_euclid(DAY) + DAY;
            Some((HOUR, end - 30 * DAY, end, DAY))
        }
        _ => None,
    }
}

/// The fee of a customer in the current config.
pub fn fee(ctx: &Ctx, customer: &str) -> f64 {
    ctx.config()
        .customer(customer)
        .map_or(0.0, |c| c.fee_per_gb)
}

/// Checks that this log server keeps `customer`; the error says who does.
pub fn kept(ctx: &Ctx, customer: &str) -> Result<(), Response> {
    if ctx.store.scope().keeps(customer) {
        return Ok(());
    }
    let cfg = ctx.config();
    let elsewhere = cfg
        .log_servers
        .iter()
        .find(|l| l.customers.iter().any(|c| c == customer));
    Err(Response::text(
        404,
        match elsewhere {
            Some(l) => format!(
                "customer {customer:?} is kept by log server {:?}, not by {:?}",
                l.name, ctx.name
            ),
            None => format!(
                "log server {:?} keeps no customer named {customer:?}",
                ctx.name
            ),
        },
    ))
}

fn authorized(ctx: &Ctx, req: &Request) -> bool {
    match &ctx.token {
        None => true,
        Some(t) => req
            .bearer()
            .and_then(|b| hex::decode(b).ok())
            .is_some_and(|b| bool::from(b.ct_eq(t))),
    }
}

fn need<'r>(req: &'r Request, name: &str) -> Result<&'r str, Response> {
    req.param(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Response::text(400, format!("add ?{name}=... to the request")))
}

fn bad(e: impl std::fmt::Display) -> Response {
    Response::text(400, e.to_string())
}

fn internal(e: store::StoreError) -> Response {
    tracing::warn!(error = %e, "logd: query failed");
    Response::text(500, format!("query failed: {e}"))
}

#[derive(Serialize)]
struct Series {
    customer: Option<String>,
    pop: Option<String>,
    range: String,
    resolution_s: i64,
    step_s: i64,
    points: Vec<Point>,
}

pub fn handle(ctx: &Ctx, req: &Request) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        return Response::text(405, "the admin listener answers GET only");
    }
    if req.path == "/health" {
        return Response::text(200, "ok");
    }
    if !authorized(ctx, req) {
        return Response::text(401, "send Authorization: Bearer <admin_token hex>")
            .with_header("WWW-Authenticate", "Bearer");
    }
    let r = match req.path.as_str() {
        "/metrics" => Ok(Response::new(200, promtext::CONTENT_TYPE, metrics(ctx))),
        "/api/customers" => customers(ctx),
        "/api/stats" => stats(ctx, req),
        "/api/bill" => bill(ctx, req),
        "/api/series" => series(ctx, req),
        "/api/streams" => ctx
            .store
            .streams()
            .map(|s| Response::json(200, &s))
            .map_err(internal),
        "/api/raw" => raw(ctx, req),
        _ => Err(Response::text(
            404,
            "not found; try /api/stats, /api/bill, /api/series, /api/streams, /api/raw, /api/customers, /metrics",
        )),
    };
    r.unwrap_or_else(|e| e)
}

fn customers(ctx: &Ctx) -> Result<Response, Response> {
    let cfg = ctx.config();
    let scope = ctx.store.scope();
    let mut kept: Vec<String> = cfg
        .customers
        .iter()
        .map(|c| c.name.clone())
        .filter(|c| scope.keeps(c))
        .collect();
    if scope.others {
        kept.push(NO_CUSTOMER.into());
    }
    Ok(Response::json(200, &kept))
}

fn stats(ctx: &Ctx, req: &Request) -> Result<Response, Response> {
    let customer = need(req, "customer")?;
    kept(ctx, customer)?;
    let now = time::now();
    let since = time::parse_since(req.param("since").unwrap_or("1h"), now).map_err(bad)?;
    let s = ctx
        .store
        .stats(customer, since, ctx.minute_retention())
        .map_err(internal)?;
    Ok(Response::json(200, &s))
}

fn bill(ctx: &Ctx, req: &Request) -> Result<Response, Response> {
    let customer = need(req, "customer")?;
    kept(ctx, customer)?;
    let month = match req.param("month") {
        Some(m) => Month::parse(m).map_err(bad)?,
        None => Month::of(time::now()),
    };
    let b = ctx
        .store
        .bill(customer, month, fee(ctx, customer))
        .map_err(internal)?;
    Ok(Response::json(200, &b))
}

fn series(ctx: &Ctx, req: &Request) -> Result<Response, Response> {
    let customer = req.param("customer").filter(|c| !c.is_empty());
    if let Some(c) = customer {
        kept(ctx, c)?;
    }
    let name = req.param("range").unwrap_or("hour");
    let (res, from, to, step) = range(name, time::now())
        .ok_or_else(|| bad(format!("range {name:?} is not hour, day or month")))?;
    let pop = req.param("pop").filter(|p| !p.is_empty());
    let points = ctx
        .store
        .http_series(customer, pop, res, from, to, step)
        .map_err(internal)?;
    Ok(Response::json(
        200,
        &Series {
            customer: customer.map(str::to_string),
            pop: pop.map(str::to_string),
            range: name.into(),
            resolution_s: res,
            step_s: step,
            points,
        },
    ))
}

fn raw(ctx: &Ctx, req: &Request) -> Result<Response, Response> {
    let customer = need(req, "customer")?;
    kept(ctx, customer)?;
    let hour = time::parse_since(need(req, "hour")?, time::now()).map_err(bad)?;
    let kind = match req.param("kind").unwrap_or("access") {
        "access" => Kind::Access,
        "dns" => Kind::Dns,
        "probe" => Kind::Probe,
        k => return Err(bad(format!("kind {k:?} is not access, dns or probe"))),
    };
    let lines = ctx
        .store
        .raw(customer, hour, kind, RAW_LIMIT)
        .map_err(internal)?;
    Ok(Response::new(200, "application/x-ndjson", lines))
}

/// The Prometheus text of this log server.
pub fn metrics(ctx: &Ctx) -> String {
    let mut m = promtext::Metrics::new();
    let name = ctx.name.as_str();
    let l = [("log_server", name)];
    let c = &ctx.store.counters;
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    m.gauge(
        "popnet_logd_uptime_seconds",
        "Seconds since the log server started.",
    )
    .sample(&l, ctx.started.elapsed().as_secs());
    m.counter("popnet_logd_batches_total", "Batches stored.")
        .sample(&l, g(&c.batches));
    m.counter(
        "popnet_logd_duplicate_batches_total",
        "Batches received again after they were stored (acknowledged, dropped).",
    )
    .sample(&l, g(&c.duplicates));
    m.counter("popnet_logd_records_total", "Records stored.")
        .sample(&l, g(&c.records));
    m.counter(
        "popnet_logd_misrouted_records_total",
        "Records of customers another log server keeps (dropped).",
    )
    .sample(&l, g(&c.misrouted));
    m.counter(
        "popnet_logd_malformed_records_total",
        "Records that did not parse (dropped).",
    )
    .sample(&l, g(&c.malformed));
    m.counter(
        "popnet_logd_missing_batches_total",
        "Batches senders skipped (dropped from a full spool).",
    )
    .sample(&l, g(&c.gaps));
    m.counter(
        "popnet_logd_raw_bytes_total",
        "Bytes of raw records written (uncompressed).",
    )
    .sample(&l, g(&c.bytes_raw));
    let i = &ctx.ingest;
    m.counter(
        "popnet_logd_connections_total",
        "Ingest connections accepted.",
    )
    .sample(&l, g(&i.connections));
    m.gauge("popnet_logd_connections_open", "Ingest connections open.")
        .sample(&l, i.open.load(Ordering::Relaxed));
    m.counter(
        "popnet_logd_rejected_frames_total",
        "Frames that did not parse or authenticate (connection closed).",
    )
    .sample(&l, g(&i.rejected));
    m.counter(
        "popnet_logd_store_errors_total",
        "Batches that could not be stored (not acknowledged; the sender resends).",
    )
    .sample(&l, g(&i.store_errors));
    m.gauge(
        "popnet_logd_database_bytes",
        "Bytes of the rollup database and its WAL.",
    )
    .sample(&l, ctx.store.db_bytes());
    {
        let mut f = m.counter(
            "popnet_logd_http_requests_total",
            "HTTP requests answered, per listener.",
        );
        f.sample(
            &[("log_server", name), ("listener", "admin")],
            g(&ctx.admin_http.requests),
        );
        f.sample(
            &[("log_server", name), ("listener", "netview")],
            g(&ctx.netview_http.requests),
        );
    }
    {
        let mut f = m.counter(
            "popnet_logd_http_bad_requests_total",
            "Malformed HTTP requests (answered 4xx), per listener.",
        );
        f.sample(
            &[("log_server", name), ("listener", "admin")],
            g(&ctx.admin_http.bad_requests),
        );
        f.sample(
            &[("log_server", name), ("listener", "netview")],
            g(&ctx.netview_http.bad_requests),
        );
    }
    crate::netview::metrics(&mut m, name, &ctx.netview);
    if let Ok(streams) = ctx.store.streams() {
        let mut f = m.counter(
            "popnet_logd_stream_records_total",
            "Records stored per sender stream.",
        );
        for s in &streams {
            f.sample(
                &[
                    ("log_server", name),
                    ("source", &s.source),
                    ("kind", &s.kind),
                    ("stream", &s.stream[..16.min(s.stream.len())]),
                ],
                s.records,
            );
        }
        let mut f = m.gauge(
            "popnet_logd_stream_next_sequence",
            "The next batch number expected per sender stream.",
        );
        for s in &streams {
            f.sample(
                &[
                    ("log_server", name),
                    ("source", &s.source),
                    ("kind", &s.kind),
                    ("stream", &s.stream[..16.min(s.stream.len())]),
                ],
                s.next_seq,
            );
        }
    }
    m.finish()
}
