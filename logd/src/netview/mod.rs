//! NetView: the web UI of the log server for customers and admins: traffic graphs, the network's state, purges, bills.
//!
//! | page | who | what |
//! |---|---|---|
//! | `GET /login`, `POST /login`, `POST /logout` | anyone | sessions |
//! | `GET /admin?range=` | admins | every customer's figures and bill, all traffic, links to POPs |
//! | `GET /c/<customer>?range=hour\|day\|month` | the customer, admins | graphs (requests by cache status, bytes, per POP), totals, DNS answers per POP and server, origin checks, purge form |
//! | `POST /c/<customer>/purge` | the customer, admins | purges a URL or prefix of the customer's names on every POP cache |
//! | `GET /c/<customer>/bill?month=YYYY-MM` | the customer, admins | the month's bytes × fee, per POP, and the last twelve months |
//! | `GET /c/<customer>/origins` | the customer, admins | its origin servers, the add form, a remove button each |
//! | `POST /c/<customer>/origins`, `POST /c/<customer>/origins/remove` | the customer, admins | adds or removes one origin: a new config version signed with the log server's admin key and pushed through configd ([`origins`]) |
//! | `GET /pop/<pop>?range=` | admins | one POP's traffic over all customers |
//! | `GET /network` | everyone logged in | POPs, servers (health, load, latency), the selector's answers per view, from every DNS server's admin listener; customers see their own servers and names only |
//!
//! No page uses JavaScript; charts are SVG drawn on the server. A customer asking for
//! another customer's page (or one that does not exist) gets the same 404. Every form
//! carries the session's CSRF token and the session cookie is SameSite=Strict.

pub mod auth;
pub mod chart;
pub mod client;
pub mod origins;
pub mod pages;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use popnet_config::Customer;

use crate::Ctx;
use crate::api::range;
use crate::http::{Request, Response, encode_component};
use crate::rollup::Http;
use crate::store::StoreError;
use crate::time::{self, DAY, Month};
use auth::{Auth, LoginError, Session, random_token};
use chart::{Series, Style, Unit};
use pages::{escape, int, money, page, percent, table};

/// The users file in the data directory, unless `--users` names another.
pub const USERS_FILE: &str = "netview-users.toml";

/// What one DNS server's admin listener says: its `/servers` and `/selections`.
type DnsView = Result<(serde_json::Value, serde_json::Value), String>;

const SESSION_COOKIE: &str = "nv_session";
const LOGIN_COOKIE: &str = "nv_login";

/// Counters of NetView.
#[derive(Debug, Default)]
pub struct Counters {
    pub logins: AtomicU64,
    pub login_failures: AtomicU64,
    pub login_throttled: AtomicU64,
    pub csrf_failures: AtomicU64,
    pub denied: AtomicU64,
    pub purges: AtomicU64,
    pub purge_errors: AtomicU64,
    pub origin_changes: AtomicU64,
    pub origin_refused: AtomicU64,
}

/// NetView's part of `/metrics`.
pub fn metrics(m: &mut promtext::Metrics, name: &str, c: &Counters) {
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let l = [("log_server", name)];
    let mut f = m.counter(
        "popnet_netview_logins_total",
        "NetView login attempts by result.",
    );
    f.sample(&[("log_server", name), ("result", "ok")], g(&c.logins));
    f.sample(
        &[("log_server", name), ("result", "wrong")],
        g(&c.login_failures),
    );
    f.sample(
        &[("log_server", name), ("result", "throttled")],
        g(&c.login_throttled),
    );
    m.counter(
        "popnet_netview_csrf_failures_total",
        "Form posts refused for a missing or wrong CSRF token.",
    )
    .sample(&l, g(&c.csrf_failures));
    m.counter(
        "popnet_netview_denied_total",
        "Pages refused because the user may not see them.",
    )
    .sample(&l, g(&c.denied));
    let mut f = m.counter(
        "popnet_netview_purges_total",
        "Purges sent to POP caches by result.",
    );
    f.sample(&[("log_server", name), ("result", "ok")], g(&c.purges));
    f.sample(
        &[("log_server", name), ("result", "error")],
        g(&c.purge_errors),
    );
    let mut f = m.counter(
        "popnet_netview_origin_changes_total",
        "Origin additions and removals from NetView's form: pushed (committed) or refused (bad input, or the push was aborted).",
    );
    f.sample(
        &[("log_server", name), ("result", "pushed")],
        g(&c.origin_changes),
    );
    f.sample(
        &[("log_server", name), ("result", "refused")],
        g(&c.origin_refused),
    );
}

/// The UI.
pub struct NetView {
    ctx: Arc<Ctx>,
    auth: Auth,
    origins: origins::Origins,
}

fn not_found(s: Option<&Session>) -> Response {
    Response::html(
        404,
        page(
            "Not found",
            s,
            "<p>There is no such page (or it is not yours).</p>",
        ),
    )
}

fn cookie(name: &str, value: &str, max_age: Option<u64>) -> String {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(a) = max_age {
        c.push_str(&format!("; Max-Age={a}"));
    }
    c
}

/// Is `host` one of `customer`'s names (inside one of its zones)?
fn customer_host(c: &Customer, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    c.zones.iter().any(|z| {
        let z = z.trim_end_matches('.').to_ascii_lowercase();
        host == z || host.ends_with(&format!(".{z}"))
    })
}

/// The host of an http(s) URL, checked; the URL back as the caches key it.
fn purge_target(url: &str) -> Result<(String, String), String> {
    let url = url.trim();
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| "the URL must start with http:// or https://".to_string())?;
    if url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the URL must be one line without spaces, at most 2048 characters".into());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err("the URL must not carry a user name".into());
    }
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    // The caches key objects by host and path; the scheme does not matter to them.
    Ok((
        host.to_ascii_lowercase(),
        format!("http://{}{path}", host.to_ascii_lowercase()),
    ))
}

/// Runs `ask` for every POP's listener at once (one thread each), in `targets`' order;
/// each result comes with the POP's name (the first field).
fn per_pop<A: Sync, T: Send>(
    targets: &[(String, SocketAddr, A)],
    ask: impl Fn(&(String, SocketAddr, A)) -> Result<T, String> + Sync,
) -> Vec<(String, Result<T, String>)> {
    std::thread::scope(|sc| {
        let ask = &ask;
        let hs: Vec<_> = targets
            .iter()
            .map(|t| sc.spawn(move || (t.0.clone(), ask(t))))
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| (String::new(), Err("internal error".into())))
            })
            .collect()
    })
}

fn range_name(req: &Request) -> &str {
    match req.param("range") {
        Some(r @ ("hour" | "day" | "month")) => r,
        _ => "hour",
    }
}

fn range_links(base: &str, current: &str) -> String {
    let mut o = String::from("<nav class=\"ranges\">");
    for (r, label) in [
        ("hour", "Last hour"),
        ("day", "Last day"),
        ("month", "Last 30 days"),
    ] {
        if r == current {
            let _ = write!(o, "<strong>{label}</strong> ");
        } else {
            let _ = write!(o, "<a href=\"{}?range={r}\">{label}</a> ", escape(base));
        }
    }
    o.push_str("</nav>");
    o
}

fn totals_table(h: &Http) -> String {
    let mean_ttfb = if h.requests > 0 {
        format!("{:.1} ms", h.ttfb_us as f64 / h.requests as f64 / 1000.0)
    } else {
        "–".into()
    };
    table(
        "totals",
        &[
            "requests",
            "bytes",
            "hit ratio",
            "hits",
            "misses",
            "2xx",
            "3xx",
            "4xx",
            "5xx",
            "mean time to first byte",
        ],
        &[vec![
            format!("#{}", int(h.requests)),
            format!("#{}", escape(&chart::human(h.bytes as f64, Unit::Bytes))),
            format!("#{}", percent(h.hit_ratio())),
            format!("#{}", int(h.hits + h.stale)),
            format!("#{}", int(h.misses)),
            format!("#{}", int(h.s2xx)),
            format!("#{}", int(h.s3xx)),
            format!("#{}", int(h.s4xx)),
            format!("#{}", int(h.s5xx)),
            format!("#{mean_ttfb}"),
        ]],
    )
}

impl NetView {
    pub fn new(ctx: Arc<Ctx>, users: &Path) -> Result<NetView, auth::AuthError> {
        Ok(NetView {
            ctx,
            auth: Auth::open(users)?,
            origins: origins::Origins::default(),
        })
    }

    /// Answers one request, with the security headers every page carries.
    pub fn handle(&self, req: &Request) -> Response {
        let mut r = self.route(req);
        for (k, v) in [
            (
                "Content-Security-Policy",
                "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
            ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "no-referrer"),
        ] {
            r.headers.push((k.into(), v.into()));
        }
        r
    }

    fn route(&self, req: &Request) -> Response {
        let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
        let method = if req.method == "HEAD" {
            "GET"
        } else {
            req.method.as_str()
        };
        match (method, segs.as_slice()) {
            ("GET", ["login"]) => return self.login_form(req, None, 200),
            ("POST", ["login"]) => return self.login(req),
            ("GET", ["health"]) => return Response::text(200, "ok"),
            // Browsers ask for it on every page; there is none (and no login redirect).
            ("GET", ["favicon.ico"]) => return Response::text(404, "no favicon"),
            _ => {}
        }
        let token = req.cookie(SESSION_COOKIE);
        let Some(s) = self.auth.session(token) else {
            return if method == "GET" {
                Response::redirect("/login")
            } else {
                Response::html(
                    401,
                    page(
                        "Logged out",
                        None,
                        "<p>Your session has ended. <a href=\"/login\">Log in</a> again.</p>",
                    ),
                )
            };
        };
        if method == "POST" {
            let form = match req.form() {
                Ok(f) => f,
                Err(e) => {
                    return Response::html(
                        400,
                        page("Bad form", Some(&s), &format!("<p>{}</p>", escape(&e))),
                    );
                }
            };
            if !s.csrf_ok(form.get("csrf").map(String::as_str)) {
                self.ctx
                    .netview
                    .csrf_failures
                    .fetch_add(1, Ordering::Relaxed);
                return Response::html(
                    403,
                    page(
                        "Refused",
                        Some(&s),
                        "<p>This form is stale or did not come from NetView; reload the page and try again.</p>",
                    ),
                );
            }
            return match segs.as_slice() {
                ["logout"] => {
                    if let Some(t) = token {
                        self.auth.logout(t);
                    }
                    Response::redirect("/login")
                        .with_header("Set-Cookie", cookie(SESSION_COOKIE, "", Some(0)))
                }
                ["c", name, "purge"] => match self.customer(&s, name) {
                    Ok(c) => self.purge(&s, &c, &form),
                    Err(r) => r,
                },
                ["c", name, "origins"] => match self.customer(&s, name) {
                    Ok(c) => self.origins.add(&self.ctx, &s, &c, &form),
                    Err(r) => r,
                },
                ["c", name, "origins", "remove"] => match self.customer(&s, name) {
                    Ok(c) => self.origins.remove(&self.ctx, &s, &c, &form),
                    Err(r) => r,
                },
                _ => not_found(Some(&s)),
            };
        }
        if method != "GET" {
            return Response::text(405, "NetView answers GET and form POSTs");
        }
        let r = match segs.as_slice() {
            [] => Ok(if s.is_admin() {
                Response::redirect("/admin")
            } else {
                Response::redirect(&format!(
                    "/c/{}",
                    encode_component(s.customer.as_deref().unwrap_or(""))
                ))
            }),
            ["admin"] if s.is_admin() => self.admin(&s, range_name(req)),
            ["network"] => Ok(self.network(&s)),
            ["c", name] => match self.customer(&s, name) {
                Ok(c) => self.dashboard(&s, &c, range_name(req)),
                Err(r) => return r,
            },
            ["c", name, "bill"] => match self.customer(&s, name) {
                Ok(c) => self.bill(&s, &c, req.param("month")),
                Err(r) => return r,
            },
            ["c", name, "origins"] => match self.customer(&s, name) {
                Ok(c) => Ok(self.origins.page(&self.ctx, &s, &c, None)),
                Err(r) => return r,
            },
            ["pop", name] if s.is_admin() && self.ctx.config().pop(name).is_some() => {
                self.pop_page(&s, name, range_name(req))
            }
            _ => {
                self.ctx.netview.denied.fetch_add(1, Ordering::Relaxed);
                return not_found(Some(&s));
            }
        };
        r.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "netview: query failed");
            Response::html(
                500,
                page(
                    "Error",
                    Some(&s),
                    &format!(
                        "<p class=\"msg err\">The data could not be read: {}</p>",
                        escape(&e.to_string())
                    ),
                ),
            )
        })
    }

    /// A customer the session may see and this log server keeps; else the 404 page.
    fn customer(&self, s: &Session, name: &str) -> Result<Customer, Response> {
        let cfg = self.ctx.config();
        match cfg.customer(name) {
            Some(c) if s.may_see(name) && self.ctx.store.scope().keeps(name) => Ok(c.clone()),
            _ => {
                self.ctx.netview.denied.fetch_add(1, Ordering::Relaxed);
                Err(not_found(Some(s)))
            }
        }
    }

    /// The login form. Its token is the browser's pre-login cookie (made when it has
    /// none): every tab, and any request that lands here (a favicon, a second tab), sees
    /// the same token, so one does not invalidate another's form.
    fn login_form(&self, req: &Request, message: Option<&str>, status: u16) -> Response {
        let pre = req
            .cookie(LOGIN_COOKIE)
            .filter(|c| c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()))
            .map_or_else(random_token, str::to_string);
        let msg = message
            .map(|m| format!("<p class=\"msg err\" id=\"login-error\">{}</p>", escape(m)))
            .unwrap_or_default();
        let body = format!(
            "{msg}<form class=\"box\" method=\"post\" action=\"/login\" id=\"login\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{pre}\">\
             <label>User <input type=\"text\" name=\"user\" id=\"user\" autocomplete=\"username\" required></label>\
             <label>Password <input type=\"password\" name=\"password\" id=\"password\" autocomplete=\"current-password\" required></label>\
             <button type=\"submit\" id=\"login-button\">Log in</button></form>"
        );
        Response::html(status, page("Log in", None, &body))
            .with_header("Set-Cookie", cookie(LOGIN_COOKIE, &pre, Some(600)))
    }

    fn login(&self, req: &Request) -> Response {
        let form = match req.form() {
            Ok(f) => f,
            Err(e) => return self.login_form(req, Some(&e), 400),
        };
        // Login CSRF: the form's token must be the one its own page set as a cookie.
        let pre = req.cookie(LOGIN_COOKIE).unwrap_or("");
        let sent = form.get("csrf").map_or("", String::as_str);
        if pre.len() != 64
            || !bool::from(subtle::ConstantTimeEq::ct_eq(
                pre.as_bytes(),
                sent.as_bytes(),
            ))
        {
            self.ctx
                .netview
                .csrf_failures
                .fetch_add(1, Ordering::Relaxed);
            return self.login_form(req, Some("The login form expired; try again."), 403);
        }
        let user = form.get("user").map_or("", |u| u.trim());
        let password = form.get("password").map_or("", String::as_str);
        if user.is_empty() || user.len() > 64 || password.is_empty() || password.len() > 1024 {
            return self.login_form(req, Some("Enter a user name and a password."), 400);
        }
        match self.auth.login(user, password, req.peer.ip()) {
            Ok((token, s)) => {
                self.ctx.netview.logins.fetch_add(1, Ordering::Relaxed);
                tracing::info!(user = %s.user, from = %req.peer.ip(), "netview: login");
                Response::redirect("/")
                    .with_header("Set-Cookie", cookie(SESSION_COOKIE, &token, None))
                    .with_header("Set-Cookie", cookie(LOGIN_COOKIE, "", Some(0)))
            }
            Err(LoginError::Wrong) => {
                self.ctx
                    .netview
                    .login_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(user = %user, from = %req.peer.ip(), "netview: failed login");
                self.login_form(req, Some("Wrong user name or password."), 401)
            }
            Err(LoginError::Throttled) => {
                self.ctx
                    .netview
                    .login_throttled
                    .fetch_add(1, Ordering::Relaxed);
                self.login_form(req, Some("Too many failed logins; wait ten minutes."), 429)
            }
            Err(LoginError::Broken(e)) => {
                tracing::warn!(error = %e, "netview: the users file cannot be read");
                self.login_form(
                    req,
                    Some("Logins are unavailable; the administrators have been told."),
                    503,
                )
            }
        }
    }

    /// Totals and graphs of one customer or POP (None = all) over a range.
    fn traffic(
        &self,
        customer: Option<&str>,
        pop: Option<&str>,
        range_name: &str,
        id: &str,
    ) -> Result<String, StoreError> {
        let now = time::now();
        let (res, from, to, step) = range(range_name, now).unwrap_or((60, now - 3600, now, 60));
        let points = self
            .ctx
            .store
            .http_series(customer, pop, res, from, to, step)?;
        let times: Vec<i64> = points.iter().map(|p| p.t).collect();
        let label = |t: i64| -> String {
            if range_name == "month" {
                time::date(t)[5..].to_string()
            } else {
                time::clock(t)
            }
        };
        let mut total = Http::default();
        for p in &points {
            total.add(&p.http);
        }
        let v =
            |f: &dyn Fn(&Http) -> u64| points.iter().map(|p| f(&p.http) as f64).collect::<Vec<_>>();
        let requests = chart::render(
            &format!("{id}-requests"),
            "Requests",
            &times,
            &[
                Series {
                    name: "hits".into(),
                    color: chart::HIT,
                    values: v(&|h| h.hits + h.stale),
                },
                Series {
                    name: "misses".into(),
                    color: chart::MISS,
                    values: v(&|h| h.misses),
                },
                Series {
                    name: "pass / errors".into(),
                    color: chart::OTHER,
                    values: v(&|h| h.pass + h.errors),
                },
            ],
            Style::StackedBars,
            Unit::Count,
            label,
        );
        let bytes = chart::render(
            &format!("{id}-bytes"),
            "Bytes served",
            &times,
            &[Series {
                name: "bytes".into(),
                color: chart::BYTES,
                values: v(&|h| h.bytes),
            }],
            Style::Lines,
            Unit::Bytes,
            label,
        );
        let mut o = totals_table(&total);
        o.push_str(&requests);
        o.push_str(&bytes);
        if pop.is_none() {
            let by_pop = self
                .ctx
                .store
                .http_series_by_pop(customer, res, from, to, step)?;
            let series: Vec<Series> = by_pop
                .iter()
                .enumerate()
                .map(|(i, (p, pts))| Series {
                    name: p.clone(),
                    color: chart::PALETTE[i % chart::PALETTE.len()],
                    values: pts.iter().map(|x| x.http.requests as f64).collect(),
                })
                .collect();
            o.push_str(&chart::render(
                &format!("{id}-pops"),
                "Requests per POP",
                &times,
                &series,
                Style::Lines,
                Unit::Count,
                label,
            ));
        }
        Ok(o)
    }

    fn dashboard(
        &self,
        s: &Session,
        c: &Customer,
        range_name: &str,
    ) -> Result<Response, StoreError> {
        let name = escape(&c.name);
        let mut body = range_links(&format!("/c/{}", c.name), range_name);
        body.push_str(&self.traffic(Some(&c.name), None, range_name, "traffic")?);
        let since = match range_name {
            "day" => time::now() - DAY,
            "month" => time::now() - 30 * DAY,
            _ => time::now() - 3600,
        };
        let st = self
            .ctx
            .store
            .stats(&c.name, since, self.ctx.minute_retention())?;
        body.push_str("<h2>DNS answers per POP and server</h2>");
        if st.dns.is_empty() {
            body.push_str("<p>No DNS answers recorded in this period.</p>");
        } else {
            let rows: Vec<Vec<String>> = st
                .dns
                .iter()
                .map(|d| {
                    vec![
                        escape(&d.pop),
                        escape(d.domain.trim_end_matches('.')),
                        escape(&d.server),
                        escape(&d.server_kind),
                        format!("#{}", int(d.answers)),
                    ]
                })
                .collect();
            body.push_str(&table(
                "dns-answers",
                &[
                    "DNS server (POP)",
                    "name",
                    "answered with",
                    "kind",
                    "answers",
                ],
                &rows,
            ));
        }
        body.push_str("<h2>Origin checks by the probes</h2>");
        if st.probes.is_empty() {
            body.push_str("<p>No checks of your origins recorded in this period.</p>");
        } else {
            let rows: Vec<Vec<String>> = st
                .probes
                .iter()
                .map(|p| {
                    let mean = if p.probe.checks > 0 {
                        p.probe.total_us as f64 / p.probe.checks as f64 / 1000.0
                    } else {
                        0.0
                    };
                    vec![
                        escape(&p.target),
                        escape(&p.pop),
                        format!("#{}", int(p.probe.checks)),
                        format!("#{}", int(p.probe.failures)),
                        format!("#{mean:.1} ms"),
                        format!("#{:.1} ms", p.probe.max_us as f64 / 1000.0),
                    ]
                })
                .collect();
            body.push_str(&table(
                "probes",
                &[
                    "origin",
                    "probed from",
                    "checks",
                    "failures",
                    "mean",
                    "slowest",
                ],
                &rows,
            ));
        }
        let month = Month::of(time::now());
        let b = self.ctx.store.bill(&c.name, month, c.fee_per_gb)?;
        let _ = write!(
            body,
            "<h2>Bill</h2><p id=\"bill-summary\">{month} so far: {} served, {} at {} per GB. <a href=\"/c/{name}/bill\">Details</a></p>",
            escape(&chart::human(b.bytes as f64, Unit::Bytes)),
            money(b.amount),
            money(b.fee_per_gb)
        );
        let _ = write!(
            body,
            "<h2>Origin servers</h2><p id=\"origins-summary\">{}: {}. <a href=\"/c/{name}/origins\">Add or remove</a></p>",
            c.origins.len(),
            escape(
                &c.origins
                    .iter()
                    .map(|o| o.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        );
        let _ = write!(
            body,
            "<h2>Purge</h2><form class=\"box\" method=\"post\" action=\"/c/{name}/purge\" id=\"purge\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <label>URL <input type=\"url\" name=\"url\" id=\"purge-url\" placeholder=\"http://{}/path\" required></label>\
             <label><input type=\"radio\" name=\"scope\" value=\"url\" checked> this URL</label>\
             <label><input type=\"radio\" name=\"scope\" value=\"prefix\"> everything under it</label>\
             <button type=\"submit\" id=\"purge-button\">Purge on every POP</button></form>",
            escape(&s.csrf),
            escape(c.zones.first().map_or("www.example", String::as_str))
        );
        Ok(Response::html(
            200,
            page(&format!("Traffic of {}", c.name), Some(s), &body),
        ))
    }

    fn purge(
        &self,
        s: &Session,
        c: &Customer,
        form: &std::collections::HashMap<String, String>,
    ) -> Response {
        let url = form.get("url").map_or("", String::as_str);
        let prefix = form.get("scope").map(String::as_str) == Some("prefix");
        let back = format!(
            "<p><a href=\"/c/{}\">Back to {}</a></p>",
            escape(&c.name),
            escape(&c.name)
        );
        let target = purge_target(url).and_then(|(host, key)| {
            if customer_host(c, &host) {
                Ok(key)
            } else {
                Err(format!(
                    "{host} is not one of your names ({})",
                    c.zones.join(", ")
                ))
            }
        });
        let key = match target {
            Ok(k) => k,
            Err(e) => {
                return Response::html(
                    400,
                    page(
                        "Purge refused",
                        Some(s),
                        &format!(
                            "<p class=\"msg err\" id=\"purge-result\">{}</p>{back}",
                            escape(&e)
                        ),
                    ),
                );
            }
        };
        let body = if prefix {
            serde_json::json!({ "prefix": key })
        } else {
            serde_json::json!({ "url": key })
        }
        .to_string();
        let cfg = self.ctx.config();
        let caches: Vec<_> = cfg
            .pops
            .iter()
            .filter_map(|p| {
                p.cache
                    .as_ref()
                    .map(|cache| (p.name.clone(), cache.admin, cache.admin_token.clone()))
            })
            .collect();
        let results: Vec<(String, Result<u64, String>)> = per_pop(&caches, |(_, admin, token)| {
            client::request(
                *admin,
                "POST",
                "/purge",
                token.as_ref().map(|t| t.as_bytes()),
                Some(body.as_bytes()),
            )
            .and_then(|(status, b)| {
                if status == 200 {
                    serde_json::from_slice::<serde_json::Value>(&b)
                        .ok()
                        .and_then(|v| v["purged"].as_u64())
                        .ok_or_else(|| "the cache's answer did not parse".to_string())
                } else {
                    Err(format!("{status}: {}", String::from_utf8_lossy(&b).trim()))
                }
            })
        });
        let failed = results.iter().filter(|(_, r)| r.is_err()).count();
        for (pop, r) in &results {
            match r {
                Ok(n) => {
                    self.ctx.netview.purges.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(user = %s.user, customer = %c.name, %key, prefix, %pop, purged = n, "netview: purge");
                }
                Err(e) => {
                    self.ctx
                        .netview
                        .purge_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(user = %s.user, customer = %c.name, %key, %pop, error = %e, "netview: purge failed");
                }
            }
        }
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|(pop, r)| match r {
                Ok(n) => vec![escape(pop), "purged".into(), format!("#{n}")],
                Err(e) => vec![escape(pop), format!("failed: {}", escape(e)), "#–".into()],
            })
            .collect();
        let (class, msg) = if failed == 0 {
            (
                "ok",
                format!(
                    "Purged {} {} on {} POP caches.",
                    if prefix { "everything under" } else { "" },
                    key,
                    results.len()
                ),
            )
        } else {
            (
                "err",
                format!(
                    "The purge of {key} failed on {failed} of {} POP caches; try again.",
                    results.len()
                ),
            )
        };
        let body = format!(
            "<p class=\"msg {class}\" id=\"purge-result\">{}</p>{}{back}",
            escape(&msg),
            table("purge-pops", &["POP", "result", "objects removed"], &rows)
        );
        Response::html(
            if failed == 0 { 200 } else { 502 },
            page("Purge", Some(s), &body),
        )
    }

    fn bill(&self, s: &Session, c: &Customer, month: Option<&str>) -> Result<Response, StoreError> {
        let now_month = Month::of(time::now());
        let month = match month.map(Month::parse) {
            None => now_month,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                return Ok(Response::html(
                    400,
                    page(
                        "Bill",
                        Some(s),
                        &format!("<p class=\"msg err\">{}</p>", escape(&e)),
                    ),
                ));
            }
        };
        let b = self.ctx.store.bill(&c.name, month, c.fee_per_gb)?;
        let name = escape(&c.name);
        let mut body = format!(
            "<p><a href=\"/c/{name}/bill?month={}\">← {}</a>{}</p>",
            month.prev(),
            month.prev(),
            if month < now_month {
                format!(
                    " · <a href=\"/c/{name}/bill?month={}\">{} →</a>",
                    month.next(),
                    month.next()
                )
            } else {
                String::new()
            }
        );
        body.push_str(&table(
            "bill",
            &[
                "month",
                "requests",
                "bytes served",
                "GB",
                "fee per GB",
                "amount",
            ],
            &[vec![
                format!("{}{}", b.month, if b.partial { " (so far)" } else { "" }),
                format!("#{}", int(b.requests)),
                format!("#{}", int(b.bytes)),
                format!("#{:.6}", b.gb),
                format!("#{}", money(b.fee_per_gb)),
                format!("#{}", money(b.amount)),
            ]],
        ));
        let rows: Vec<Vec<String>> = b
            .per_pop
            .iter()
            .map(|p| {
                vec![
                    escape(&p.pop),
                    format!("#{}", int(p.requests)),
                    format!("#{}", int(p.bytes)),
                ]
            })
            .collect();
        body.push_str("<h2>Per POP</h2>");
        body.push_str(&table("bill-pops", &["POP", "requests", "bytes"], &rows));
        body.push_str("<h2>Last twelve months</h2>");
        let mut m = now_month;
        let mut rows = Vec::new();
        for _ in 0..12 {
            let b = self.ctx.store.bill(&c.name, m, c.fee_per_gb)?;
            rows.push(vec![
                format!("<a href=\"/c/{name}/bill?month={m}\">{m}</a>"),
                format!("#{}", int(b.bytes)),
                format!("#{}", money(b.amount)),
            ]);
            m = m.prev();
        }
        body.push_str(&table("bill-history", &["month", "bytes", "amount"], &rows));
        body.push_str("<p>Bytes served are every response's head and body sent by the POP caches; a GB is 10<sup>9</sup> bytes.</p>");
        Ok(Response::html(
            200,
            page(&format!("Bill of {}", c.name), Some(s), &body),
        ))
    }

    fn admin(&self, s: &Session, range_name: &str) -> Result<Response, StoreError> {
        let cfg = self.ctx.config();
        let scope = self.ctx.store.scope();
        let now = time::now();
        let month = Month::of(now);
        let mut rows = Vec::new();
        let mut names: Vec<&str> = cfg
            .customers
            .iter()
            .map(|c| c.name.as_str())
            .filter(|c| scope.keeps(c))
            .collect();
        if scope.others {
            names.push(logship::NO_CUSTOMER);
        }
        for c in names {
            let fee = cfg.customer(c).map_or(0.0, |x| x.fee_per_gb);
            let hour = self
                .ctx
                .store
                .stats(c, now - 3600, self.ctx.minute_retention())?;
            let b = self.ctx.store.bill(c, month, fee)?;
            let link = if c == logship::NO_CUSTOMER {
                "(no customer)".to_string()
            } else {
                format!("<a href=\"/c/{0}\">{0}</a>", escape(c))
            };
            rows.push(vec![
                link,
                format!("#{}", int(hour.total.requests)),
                format!("#{}", percent(hour.hit_ratio)),
                format!("#{}", escape(&chart::human(b.bytes as f64, Unit::Bytes))),
                format!("#{}", money(b.amount)),
            ]);
        }
        let mut body = table(
            "customers",
            &[
                "customer",
                "requests last hour",
                "hit ratio",
                &format!("bytes in {month}"),
                &format!("bill {month}"),
            ],
            &rows,
        );
        let pops: Vec<String> = cfg
            .pops
            .iter()
            .map(|p| format!("<a href=\"/pop/{0}\">{0}</a>", escape(&p.name)))
            .collect();
        let _ = write!(
            body,
            "<p>POPs: {}</p><h2>All traffic kept by log server {}</h2>",
            pops.join(" · "),
            escape(&self.ctx.name)
        );
        body.push_str(&range_links("/admin", range_name));
        body.push_str(&self.traffic(None, None, range_name, "all")?);
        Ok(Response::html(200, page("Customers", Some(s), &body)))
    }

    fn pop_page(&self, s: &Session, pop: &str, range_name: &str) -> Result<Response, StoreError> {
        let mut body = range_links(&format!("/pop/{pop}"), range_name);
        body.push_str(&self.traffic(None, Some(pop), range_name, "pop")?);
        Ok(Response::html(
            200,
            page(&format!("POP {pop}"), Some(s), &body),
        ))
    }

    fn network(&self, s: &Session) -> Response {
        let cfg = self.ctx.config();
        let mine = |server: &str| -> bool {
            s.is_admin()
                || s.customer
                    .as_deref()
                    .is_some_and(|c| server.split_once('/').is_some_and(|(o, _)| o == c))
        };
        let my_customer = s.customer.as_deref().and_then(|c| cfg.customer(c)).cloned();
        let mut body = String::new();
        let rows: Vec<Vec<String>> = cfg
            .pops
            .iter()
            .map(|p| {
                vec![
                    escape(&p.name),
                    escape(&p.region),
                    format!("#{}", p.cost),
                    p.dns.as_ref().map_or("–".into(), |d| {
                        escape(
                            &d.effective_addresses()
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", "),
                        )
                    }),
                    p.cache.as_ref().map_or("–".into(), |c| {
                        escape(
                            &c.addresses
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", "),
                        )
                    }),
                    if p.probe.is_some() {
                        "yes".into()
                    } else {
                        "–".into()
                    },
                ]
            })
            .collect();
        body.push_str(&table(
            "pops",
            &["POP", "region", "cost", "name server", "cache", "probe"],
            &rows,
        ));
        let dns: Vec<(String, SocketAddr, Option<Vec<u8>>)> = cfg
            .pops
            .iter()
            .filter_map(|p| {
                p.dns.as_ref().map(|d| {
                    (
                        p.name.clone(),
                        d.admin,
                        d.admin_token.as_ref().map(|t| t.as_bytes().to_vec()),
                    )
                })
            })
            .collect();
        let fetched: Vec<(String, DnsView)> = per_pop(&dns, |(_, admin, token)| {
            let t = token.as_deref();
            client::get_json(*admin, "/servers", t)
                .and_then(|sv| client::get_json(*admin, "/selections", t).map(|se| (sv, se)))
        });
        for (pop, r) in fetched {
            let _ = write!(
                body,
                "<h2>As the name server of {} sees it</h2>",
                escape(&pop)
            );
            let (servers, selections) = match r {
                Ok(v) => v,
                Err(e) => {
                    let _ = write!(
                        body,
                        "<p class=\"msg err\">Not reachable: {}</p>",
                        escape(&e)
                    );
                    continue;
                }
            };
            let mut rows = Vec::new();
            for sv in servers.as_array().into_iter().flatten() {
                let id = sv["id"].as_str().unwrap_or("?");
                let kind = sv["kind"].as_str().unwrap_or("?");
                if kind != "pop-cache" && !mine(id) {
                    continue;
                }
                let tier = sv["tier"].as_str().unwrap_or("unknown");
                let fig = |k: &str, unit: &str, scale: f64| match sv[k]["value"].as_f64() {
                    Some(v) => format!(
                        "#{:.2}{unit} <small>({:.1} s ago)</small>",
                        v * scale,
                        sv[k]["age_ms"].as_f64().unwrap_or(0.0) / 1000.0
                    ),
                    None => "#–".into(),
                };
                let tier_class = match tier {
                    "up" => "up",
                    "down" => "down",
                    _ => "unknown",
                };
                rows.push(vec![
                    escape(id),
                    escape(kind),
                    escape(sv["region"].as_str().unwrap_or("–")),
                    format!("<span class=\"{tier_class}\">{}</span>", escape(tier)),
                    escape(sv["health"]["state"].as_str().unwrap_or("?")),
                    fig("load", " %", 100.0),
                    fig("rtt_ms", " ms", 1.0),
                    fig("loss", " %", 100.0),
                ]);
            }
            body.push_str(&table(
                &format!("servers-{pop}"),
                &[
                    "server",
                    "kind",
                    "region",
                    "tier",
                    "health",
                    "load",
                    "response time",
                    "loss",
                ],
                &rows,
            ));
            let mut rows = Vec::new();
            for se in selections.as_array().into_iter().flatten() {
                let domain = se["domain"].as_str().unwrap_or("?");
                if let Some(c) = &my_customer
                    && !customer_host(c, domain)
                {
                    continue;
                }
                if !s.is_admin() && my_customer.is_none() {
                    continue;
                }
                let chosen: Vec<String> = se["chosen"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str())
                    .map(escape)
                    .collect();
                let ranking: Vec<String> = se["ranking"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        format!(
                            "{} ({}, {:.2})",
                            escape(r["server"].as_str().unwrap_or("?")),
                            escape(r["tier"].as_str().unwrap_or("?")),
                            r["score"].as_f64().unwrap_or(f64::NAN)
                        )
                    })
                    .collect();
                rows.push(vec![
                    escape(domain.trim_end_matches('.')),
                    escape(se["view"].as_str().unwrap_or("?")),
                    escape(se["family"].as_str().unwrap_or("?")),
                    format!("<strong>{}</strong>", chosen.join(", ")),
                    ranking.join(" · "),
                ]);
            }
            body.push_str(&table(
                &format!("selections-{pop}"),
                &[
                    "name",
                    "view",
                    "family",
                    "answered with",
                    "ranking (tier, score; lower is better)",
                ],
                &rows,
            ));
        }
        Response::html(200, page("Network", Some(s), &body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_targets_are_checked() {
        assert_eq!(
            purge_target("http://Static.Demo.example/a?b").unwrap(),
            (
                "static.demo.example".into(),
                "http://static.demo.example/a?b".into()
            )
        );
        assert_eq!(
            purge_target("https://x.example:8443").unwrap().1,
            "http://x.example/"
        );
        for bad in [
            "ftp://x/",
            "http://",
            "http://u@x/",
            "http://x/a b",
            "x.example/a",
        ] {
            assert!(purge_target(bad).is_err(), "{bad}");
        }
    }
}
