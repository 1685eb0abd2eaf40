//! Writer of the Prometheus text exposition format (version 0.0.4) for the daemons' `/metrics`.
//!
//! Every family is written once with its `# HELP` and `# TYPE` lines, followed by its
//! samples; label values are escaped as the format requires (backslash, double quote,
//! newline), help text as well (backslash, newline). Names are checked in debug builds
//! only: they are constants of the program, not input.
//!
//! ```
//! let mut m = promtext::Metrics::new();
//! m.counter("popnet_requests_total", "Requests answered.")
//!     .sample(&[("pop", "iad1"), ("cache", "HIT")], 42);
//! m.gauge("popnet_up", "1 while the daemon runs.").value(1);
//! let text = m.finish();
//! assert!(text.contains("popnet_requests_total{pop=\"iad1\",cache=\"HIT\"} 42\n"));
//! ```

use std::fmt::Write as _;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric value: integers are written exactly, floats in Prometheus notation.
pub trait Value {
    fn write(&self, out: &mut String);
}

macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn write(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
int_value!(u8, u16, u32, u64, usize, i32, i64);

impl Value for f64 {
    fn write(&self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if *self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

impl Value for bool {
    fn write(&self, out: &mut String) {
        out.push(if *self { '1' } else { '0' });
    }
}

/// The text of one scrape, built family by family.
#[derive(Debug, Default)]
pub struct Metrics {
    out: String,
    #[cfg(debug_assertions)]
    seen: std::collections::HashSet<String>,
}

/// The samples of one family being written.
pub struct Family<'m> {
    out: &'m mut String,
    name: &'static str,
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_' | b':'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

fn escape_into(out: &mut String, text: &str, quote: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    fn family(&mut self, name: &'static str, help: &str, kind: &str) -> Family<'_> {
        debug_assert!(valid_name(name), "bad metric name {name:?}");
        #[cfg(debug_assertions)]
        debug_assert!(
            self.seen.insert(name.to_string()),
            "metric family {name} written twice"
        );
        let _ = write!(self.out, "# HELP {name} ");
        escape_into(&mut self.out, help, false);
        let _ = writeln!(self.out, "\n# TYPE {name} {kind}");
        Family {
            out: &mut self.out,
            name,
        }
    }

    /// A counter family (a total that only goes up; its name should end in `_total`).
    pub fn counter(&mut self, name: &'static str, help: &str) -> Family<'_> {
        self.family(name, help, "counter")
    }

    /// A gauge family (a value that goes up and down).
    pub fn gauge(&mut self, name: &'static str, help: &str) -> Family<'_> {
        self.family(name, help, "gauge")
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.out
    }
}

impl Family<'_> {
    /// One sample with labels (name, value). Label names are constants of the program.
    pub fn sample(&mut self, labels: &[(&str, &str)], v: impl Value) -> &mut Self {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                debug_assert!(valid_name(k) && !k.contains(':'), "bad label name {k:?}");
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_into(self.out, val, true);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        v.write(self.out);
        self.out.push('\n');
        self
    }

    /// One sample without labels.
    pub fn value(&mut self, v: impl Value) -> &mut Self {
        self.sample(&[], v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_help_are_escaped() {
        let mut m = Metrics::new();
        m.counter("x_total", "a \\ help\nline")
            .sample(&[("path", "a\"b\\c\nd")], 3u64);
        let t = m.finish();
        assert_eq!(
            t,
            "# HELP x_total a \\\\ help\\nline\n# TYPE x_total counter\nx_total{path=\"a\\\"b\\\\c\\nd\"} 3\n"
        );
    }

    #[test]
    fn floats_use_prometheus_spelling() {
        let mut m = Metrics::new();
        m.gauge("g", "g")
            .sample(&[("k", "nan")], f64::NAN)
            .sample(&[("k", "inf")], f64::INFINITY)
            .sample(&[("k", "half")], 0.5)
            .sample(&[("k", "up")], true);
        let t = m.finish();
        assert!(t.contains("g{k=\"nan\"} NaN\n"));
        assert!(t.contains("g{k=\"inf\"} +Inf\n"));
        assert!(t.contains("g{k=\"half\"} 0.5\n"));
        assert!(t.contains("g{k=\"up\"} 1\n"));
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("popnet_dns_queries_total"));
        assert!(valid_name("a:b"));
        assert!(!valid_name("9a"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name(""));
    }
}
