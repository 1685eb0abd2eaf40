//! NetView's origin form: a customer lists, adds and removes its own origin servers; each change is a new config version signed with the log server's admin key and pushed through configd.
//!
//! The change is made to the text of the config the log server runs (comments and
//! layout kept, see [`popnet_config::edit`]), checked as a whole, signed, and pushed in
//! two phases; the page shows every box's answer. Changes are made one at a time. A
//! push that another admin's push overtook is refused by the boxes ("not newer"), and
//! the customer is told to try again.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

use configd::AdminKey;
use configd::push::{PushOptions, PushReport};
use configd::wire::Outcome;
use popnet_config::edit::{self, Edited, NewCheck, NewOrigin};
use popnet_config::{Config, Customer, OriginForm};

use super::auth::Session;
use super::pages::{escape, page, table};
use crate::Ctx;
use crate::http::Response;

/// Most addresses one origin may have through the form.
const MAX_ADDRESSES: usize = 8;

/// Makes the changes, one at a time.
#[derive(Default)]
pub struct Origins {
    one_at_a_time: Mutex<()>,
}

/// Says in the log, at start, what would keep the form from working: a key that
/// cannot be read, or one the network's admins do not list.
pub fn check_at_start(cfg: &Config, form: &OriginForm) {
    match AdminKey::load(&form.admin_key) {
        Err(e) => {
            tracing::warn!(error = %e, "netview: the origin form's admin key cannot be read; changes will be refused until it can")
        }
        Ok(k) => {
            let public = k.public_b64();
            if !cfg.network.admins.iter().any(|a| a.key.trim() == public) {
                tracing::warn!(key = %public, "netview: the origin form's admin key is not in [[network.admins]]; the boxes will refuse its changes");
            }
        }
    }
}

/// Why the form cannot change this log server's config, if it cannot.
fn unavailable(ctx: &Ctx) -> Option<String> {
    let (cfg, text) = ctx.config_and_text();
    let me = ctx.me();
    if me.as_ref().and_then(|m| m.origin_form.as_ref()).is_none() {
        return Some(
            "Origins are changed by the network's administrators (this log server has no [log_servers.origin_form])."
                .into(),
        );
    }
    if cfg.configd.is_none() {
        return Some("The network has no configd tree to push changes through.".into());
    }
    if text.is_none() {
        return Some("This log server does not know the running config's text (start it with --configd or --config).".into());
    }
    None
}

/// The origin of the form, checked; the domains (with their own origin lists) it is to
/// serve too.
pub fn parse_form(
    form: &HashMap<String, String>,
    c: &Customer,
    cfg: &Config,
    allow_private: bool,
) -> Result<(NewOrigin, Vec<String>), String> {
    let get = |k: &str| form.get(k).map_or("", |v| v.trim());
    let name = get("name").to_ascii_lowercase();
    if name.is_empty()
        || name.len() > 63
        || name.starts_with('-')
        || name.ends_with('-')
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(
            "The name must be 1 to 63 letters, digits and inner hyphens, e.g. \"web-3\".".into(),
        );
    }
    let mut addresses = Vec::new();
    for a in get("addresses")
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|a| !a.is_empty())
    {
        let ip: IpAddr = a.parse().map_err(|_| {
            format!("{a:?} is not an IP address; write addresses such as 203.0.113.10 or 2001:db8::10, separated by commas.")
        })?;
        address_allowed(ip, allow_private).map_err(|why| format!("{ip}: {why}"))?;
        if !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    if addresses.is_empty() {
        return Err("Give the origin's addresses, e.g. 203.0.113.10.".into());
    }
    if addresses.len() > MAX_ADDRESSES {
        return Err(format!(
            "At most {MAX_ADDRESSES} addresses per origin; add another origin for more."
        ));
    }
    let port = match get("port") {
        "" => 80,
        p => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{p:?} is not a port; write 1 to 65535 (HTTP is 80)."))?,
    };
    let region = match get("region") {
        "" => None,
        r => {
            if !cfg.pops.iter().any(|p| p.region == r) {
                let mut known: Vec<&str> = cfg.pops.iter().map(|p| p.region.as_str()).collect();
                known.sort_unstable();
                known.dedup();
                return Err(format!(
                    "{r:?} is not a region of the network; choose one of {} or none.",
                    known.join(", ")
                ));
            }
            Some(r.to_string())
        }
    };
    let weight = match get("weight") {
        "" => 1.0,
        w => w
            .parse::<f64>()
            .ok()
            .filter(|w| w.is_finite() && (0.01..=1000.0).contains(w))
            .ok_or_else(|| format!("{w:?} is not a weight; write a number from 0.01 to 1000 (1 = a typical server)."))?,
    };
    let check = match get("check") {
        "" | "default" => NewCheck::Default,
        "tcp" => NewCheck::Tcp,
        "http" => {
            let path = match get("path") {
                "" => "/",
                p => p,
            };
            if !path.starts_with('/')
                || path.len() > 256
                || path.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(
                    "The check's path must start with / and have no spaces (at most 256 characters).".into(),
                );
            }
            NewCheck::Http { path: path.into() }
        }
        other => {
            return Err(format!(
                "{other:?} is not a kind of check (default, tcp, http)."
            ));
        }
    };
    let serves = c
        .domains
        .iter()
        .filter(|d| d.origins.is_some() && form.contains_key(&format!("serve.{}", d.name)))
        .map(|d| d.name.clone())
        .collect();
    Ok((
        NewOrigin {
            name,
            addresses,
            port,
            region,
            weight,
            check,
        },
        serves,
    ))
}

/// Whether customers may point the network at `ip`.
pub fn address_allowed(ip: IpAddr, allow_private: bool) -> Result<(), &'static str> {
    let private = |why: &'static str| if allow_private { Ok(()) } else { Err(why) };
    match ip {
        IpAddr::V4(v4) => v4_allowed(v4, private),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_allowed(v4, private);
            }
            if v6.is_unspecified() || v6.is_multicast() {
                Err("not a unicast address a server can have")
            } else if v6.is_loopback() {
                private("a loopback address (it would be each POP's own machine)")
            } else if v6.is_unique_local() {
                private("a private (fc00::/7) address")
            } else if v6.is_unicast_link_local() {
                private("a link-local address")
            } else {
                Ok(())
            }
        }
    }
}

fn v4_allowed(
    v4: Ipv4Addr,
    private: impl Fn(&'static str) -> Result<(), &'static str>,
) -> Result<(), &'static str> {
    let o = v4.octets();
    if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || o[0] == 0 || o[0] >= 240 {
        Err("not a unicast address a server can have")
    } else if v4.is_loopback() {
        private("a loopback address (it would be each POP's own machine)")
    } else if v4.is_private() {
        private("a private (RFC 1918) address")
    } else if o[0] == 100 && (64..128).contains(&o[1]) {
        private("a shared (100.64.0.0/10) address")
    } else if v4.is_link_local() {
        private("a link-local address")
    } else {
        Ok(())
    }
}

fn check_text(o: &popnet_config::Origin) -> String {
    match &o.check {
        None => "default".into(),
        Some(c) => match c.kind {
            popnet_config::CheckKind::Http => format!("HTTP GET {}", c.path),
            popnet_config::CheckKind::Tcp => "TCP connect".into(),
            popnet_config::CheckKind::Dns => "DNS query".into(),
            popnet_config::CheckKind::None => "none".into(),
        },
    }
}

fn show_address(a: &IpAddr) -> String {
    match a {
        IpAddr::V6(v6) if *v6 == Ipv6Addr::LOCALHOST => "::1".into(),
        a => a.to_string(),
    }
}

impl Origins {
    /// `GET /c/<customer>/origins`: the list, a remove button each, the add form.
    pub fn page(&self, ctx: &Ctx, s: &Session, c: &Customer, message: Option<&str>) -> Response {
        let name = escape(&c.name);
        let csrf = escape(&s.csrf);
        let why_not = unavailable(ctx);
        let mut body = message.unwrap_or_default().to_string();
        let rows: Vec<Vec<String>> = c
            .origins
            .iter()
            .map(|o| {
                let serves: Vec<String> = c
                    .domains
                    .iter()
                    .filter(|d| d.origins.as_ref().is_none_or(|l| l.contains(&o.name)))
                    .map(|d| escape(&d.name))
                    .collect();
                let remove = if why_not.is_none() {
                    format!(
                        "<form method=\"post\" action=\"/c/{name}/origins/remove\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"name\" value=\"{o}\"><button type=\"submit\" id=\"remove-{o}\">Remove</button></form>",
                        o = escape(&o.name)
                    )
                } else {
                    String::new()
                };
                vec![
                    escape(&o.name),
                    escape(
                        &o.addresses
                            .iter()
                            .map(show_address)
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                    format!("#{}", o.port),
                    escape(o.region.as_deref().unwrap_or("–")),
                    format!("#{}", o.weight),
                    escape(&check_text(o)),
                    serves.join("<br>"),
                    remove,
                ]
            })
            .collect();
        let _ = write!(
            body,
            "<p>Running config: version {}.</p>",
            ctx.config().network.version
        );
        if rows.is_empty() {
            body.push_str("<p>You have no origin servers.</p>");
        } else {
            body.push_str(&table(
                "origins",
                &[
                    "name",
                    "addresses",
                    "port",
                    "region",
                    "weight",
                    "health check",
                    "serves",
                    "",
                ],
                &rows,
            ));
        }
        match why_not {
            Some(why) => {
                let _ = write!(
                    body,
                    "<p class=\"msg\" id=\"origin-form-off\">{}</p>",
                    escape(&why)
                );
            }
            None => {
                let cfg = ctx.config();
                let mut regions: Vec<&str> = cfg.pops.iter().map(|p| p.region.as_str()).collect();
                regions.sort_unstable();
                regions.dedup();
                let mut region_opts = String::from("<option value=\"\">none</option>");
                for r in regions {
                    let _ = write!(region_opts, "<option>{}</option>", escape(r));
                }
                let mut serve = String::new();
                for d in c.domains.iter().filter(|d| d.origins.is_some()) {
                    let _ = write!(
                        serve,
                        "<label><input type=\"checkbox\" name=\"serve.{n}\" value=\"1\"> {n}</label>",
                        n = escape(&d.name)
                    );
                }
                if !serve.is_empty() {
                    serve = format!(
                        "<br>Also serve (names that list their origins; the others use every origin): {serve}"
                    );
                }
                let _ = write!(
                    body,
                    "<h2>Add an origin server</h2><form class=\"box\" method=\"post\" action=\"/c/{name}/origins\" id=\"add-origin\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                     <label>Name <input type=\"text\" name=\"name\" id=\"origin-name\" required maxlength=\"63\" placeholder=\"web-3\"></label>\
                     <label>Addresses <input type=\"text\" name=\"addresses\" id=\"origin-addresses\" required placeholder=\"203.0.113.10, 2001:db8::10\"></label>\
                     <label>Port <input type=\"number\" name=\"port\" id=\"origin-port\" min=\"1\" max=\"65535\" value=\"80\"></label>\
                     <label>Region <select name=\"region\">{region_opts}</select></label>\
                     <label>Weight <input type=\"number\" name=\"weight\" min=\"0.01\" max=\"1000\" step=\"0.01\" value=\"1\"></label>\
                     <label>Health check <select name=\"check\"><option value=\"default\">default</option><option value=\"tcp\">TCP connect</option><option value=\"http\">HTTP GET</option></select></label>\
                     <label>Path <input type=\"text\" name=\"path\" value=\"/\"></label>{serve}\
                     <br><button type=\"submit\" id=\"add-origin-button\">Add and push to the network</button></form>"
                );
            }
        }
        Response::html(
            200,
            page(&format!("Origin servers of {}", c.name), Some(s), &body),
        )
    }

    /// `POST /c/<customer>/origins`: adds the form's origin.
    pub fn add(
        &self,
        ctx: &Ctx,
        s: &Session,
        c: &Customer,
        form: &HashMap<String, String>,
    ) -> Response {
        let settings = match self.settings(ctx) {
            Ok(f) => f,
            Err(r) => return self.refused(ctx, s, c, &r),
        };
        let cfg = ctx.config();
        let (o, serves) = match parse_form(form, c, &cfg, settings.allow_private) {
            Ok(x) => x,
            Err(e) => return self.refused(ctx, s, c, &e),
        };
        if c.origins.len() >= settings.max_origins {
            return self.refused(
                ctx,
                s,
                c,
                &format!(
                    "You have {} origins, the most this form allows; remove one first or ask the administrators.",
                    c.origins.len()
                ),
            );
        }
        let what = format!(
            "added origin {} ({})",
            o.name,
            o.addresses
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.change(ctx, s, c, &settings, &what, |text| {
            edit::add_origin(text, &c.name, &o, &serves, "NetView's change")
        })
    }

    /// `POST /c/<customer>/origins/remove`: removes the named origin.
    pub fn remove(
        &self,
        ctx: &Ctx,
        s: &Session,
        c: &Customer,
        form: &HashMap<String, String>,
    ) -> Response {
        let settings = match self.settings(ctx) {
            Ok(f) => f,
            Err(r) => return self.refused(ctx, s, c, &r),
        };
        let name = form.get("name").map_or("", |n| n.trim()).to_string();
        let what = format!("removed origin {name}");
        self.change(ctx, s, c, &settings, &what, |text| {
            edit::remove_origin(text, &c.name, &name, "NetView's change")
        })
    }

    fn settings(&self, ctx: &Ctx) -> Result<OriginForm, String> {
        if let Some(why) = unavailable(ctx) {
            return Err(why);
        }
        ctx.me()
            .and_then(|m| m.origin_form)
            .ok_or_else(|| "This log server has no origin form.".to_string())
    }

    fn refused(&self, ctx: &Ctx, s: &Session, c: &Customer, why: &str) -> Response {
        ctx.netview
            .origin_refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let msg = format!(
            "<p class=\"msg err\" id=\"origin-result\">Nothing was changed: {}</p>",
            escape(why)
        );
        let mut r = self.page(ctx, s, c, Some(&msg));
        r.status = 400;
        r
    }

    /// Edits the running text with `change`, signs, pushes, and shows what each box did.
    fn change(
        &self,
        ctx: &Ctx,
        s: &Session,
        c: &Customer,
        settings: &OriginForm,
        what: &str,
        change: impl FnOnce(&str) -> Result<Edited, edit::EditError>,
    ) -> Response {
        let key = match AdminKey::load(&settings.admin_key) {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "netview: the origin form's admin key cannot be read");
                let mut r = self.refused(
                    ctx,
                    s,
                    c,
                    "the log server's admin key cannot be read; the administrators have been told.",
                );
                r.status = 503;
                return r;
            }
        };
        let _one = self
            .one_at_a_time
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (_, text) = ctx.config_and_text();
        let Some(text) = text else {
            return self.refused(ctx, s, c, "the running config's text is not known.");
        };
        let edited = match change(&text) {
            Ok(e) => e,
            Err(e) => return self.refused(ctx, s, c, &e.to_string()),
        };
        let version = edited.config.network.version;
        let signed = configd::sign_config(&edited.text, &key);
        let report = configd::push::push(signed.clone(), &key, &PushOptions::default());
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "netview: the origin change cannot be pushed");
                let why = match e {
                    configd::push::PushError::NotAdmin { .. } | configd::push::PushError::Key(_) => {
                        "the network does not accept the log server's admin key; the administrators have been told.".to_string()
                    }
                    e => format!("the change could not be sent: {e}"),
                };
                let mut r = self.refused(ctx, s, c, &why);
                r.status = 503;
                return r;
            }
        };
        let complete = report.complete();
        if report.committed {
            ctx.set_config(Arc::new(edited.config), Some(Arc::from(signed.as_str())));
            ctx.netview
                .origin_changes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(user = %s.user, customer = %c.name, version, "netview: {what}");
        } else {
            ctx.netview
                .origin_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(user = %s.user, customer = %c.name, version, problems = ?report.problems, "netview: origin change aborted");
        }
        let (class, head) = if complete {
            (
                "ok",
                format!("Done: {what}; version {version} runs on every box."),
            )
        } else if report.committed {
            (
                "ok",
                format!(
                    "Done: {what}; version {version} is committed. Some boxes have not confirmed yet and will catch up from their parents."
                ),
            )
        } else {
            (
                "err",
                format!(
                    "Nothing was changed: the network refused version {version} (another change may have come first; reload and try again)."
                ),
            )
        };
        let msg = format!(
            "<p class=\"msg {class}\" id=\"origin-result\">{}</p>{}",
            escape(&head),
            report_table(&report)
        );
        let current = ctx.config();
        let c = current.customer(&c.name).unwrap_or(c);
        let mut r = self.page(ctx, s, c, Some(&msg));
        if !report.committed {
            r.status = 409;
        }
        r
    }
}

/// Each box's answer to the push.
fn report_table(r: &PushReport) -> String {
    let boxes = if r.committed { &r.decision } else { &r.prepare };
    let mut rows: Vec<Vec<String>> = boxes
        .iter()
        .map(|b| {
            vec![
                escape(&b.name),
                match b.outcome {
                    Outcome::Ok => "<span class=\"up\">ok</span>".into(),
                    Outcome::Failed => "<span class=\"down\">failed</span>".into(),
                    Outcome::Unreached => "<span class=\"down\">unreached</span>".into(),
                },
                escape(&b.message),
            ]
        })
        .collect();
    for p in &r.problems {
        rows.push(vec!["".into(), "".into(), escape(p)]);
    }
    table("push-report", &["box", "result", "said"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customers_cannot_point_the_network_at_its_own_machines() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.0.1",
            "100.64.1.1",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert!(address_allowed(ip, false).is_err(), "{a}");
            assert!(address_allowed(ip, true).is_ok(), "{a}");
        }
        for a in [
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "0.1.2.3",
            "::",
            "ff02::1",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert!(address_allowed(ip, true).is_err(), "{a}");
        }
        for a in ["203.0.113.10", "2001:db8::10", "8.8.8.8"] {
            assert!(address_allowed(a.parse().unwrap(), false).is_ok(), "{a}");
        }
    }
}
