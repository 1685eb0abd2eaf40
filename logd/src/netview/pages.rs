//! HTML building blocks of NetView: escaping, the page frame, tables and number formats.

use std::fmt::Write as _;

use super::auth::Session;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "
body{font-family:system-ui,sans-serif;margin:0;color:#212529;background:#f1f3f5}
header{background:#1b2a41;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:center}
header a{color:#dbe4ff;text-decoration:none}header .who{margin-left:auto}
header form{display:inline}header button{background:none;border:1px solid #dbe4ff;color:#dbe4ff;border-radius:4px;cursor:pointer}
main{padding:16px 24px;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;background:#fff;margin:8px 0}
td,th{border:1px solid #dee2e6;padding:4px 10px;text-align:left;font-size:13px}
th{background:#e9ecef}td.n{text-align:right;font-variant-numeric:tabular-nums}
.chart{display:block;margin:10px 0;border:1px solid #dee2e6}
.msg{padding:8px 12px;border-radius:4px;margin:10px 0}
.ok{background:#d3f9d8}.err{background:#ffe3e3}
.up{color:#2b8a3e;font-weight:bold}.down{color:#c92a2a;font-weight:bold}.unknown{color:#868e96}
form.box{background:#fff;border:1px solid #dee2e6;padding:12px;margin:10px 0;max-width:760px}
form.box label{display:inline-block;margin:4px 12px 4px 0}
input[type=text],input[type=password],input[type=url]{padding:4px;min-width:260px}
nav.ranges a{margin-right:12px}
";

/// A whole page. `session` None = the login page (no navigation).
pub fn page(title: &str, session: Option<&Session>, body: &str) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · NetView</title><style>{STYLE}</style></head><body><header><strong>popnet NetView</strong>",
        escape(title)
    );
    if let Some(s) = session {
        if s.is_admin() {
            o.push_str("<a href=\"/admin\">Customers</a>");
        } else if let Some(c) = &s.customer {
            let c = escape(c);
            let _ = write!(
                o,
                "<a href=\"/c/{c}\">Traffic</a><a href=\"/c/{c}/origins\">Origins</a><a href=\"/c/{c}/bill\">Bill</a>"
            );
        }
        o.push_str("<a href=\"/network\">Network</a>");
        let _ = write!(
            o,
            "<span class=\"who\">{} ({})</span><form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Log out</button></form>",
            escape(&s.user),
            if s.is_admin() {
                "admin".to_string()
            } else {
                escape(s.customer.as_deref().unwrap_or(""))
            },
            escape(&s.csrf)
        );
    }
    let _ = write!(
        o,
        "</header><main><h1>{}</h1>{body}</main></body></html>",
        escape(title)
    );
    o
}

/// A table from a header row and body rows of already-escaped cells; cells starting
/// with `#` are right-aligned numbers (the `#` is dropped).
pub fn table(id: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut o = format!("<table id=\"{}\"><tr>", escape(id));
    for h in head {
        let _ = write!(o, "<th>{}</th>", escape(h));
    }
    o.push_str("</tr>");
    for r in rows {
        o.push_str("<tr>");
        for c in r {
            match c.strip_prefix('#') {
                Some(n) => {
                    let _ = write!(o, "<td class=\"n\">{n}</td>");
                }
                None => {
                    let _ = write!(o, "<td>{c}</td>");
                }
            }
        }
        o.push_str("</tr>");
    }
    o.push_str("</table>");
    o
}

/// An integer with thin groups: 1 234 567.
pub fn int(v: u64) -> String {
    let s = v.to_string();
    let mut o = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            o.push('\u{202f}');
        }
        o.push(c);
    }
    o
}

pub fn money(v: f64) -> String {
    format!("{v:.2}")
}

pub fn percent(v: f64) -> String {
    format!("{:.1} %", v * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape("<a href='x'>\"&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&quot;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(int(1234567), "1\u{202f}234\u{202f}567");
        assert_eq!(int(12), "12");
    }
}
