//! Server-side SVG charts: stacked bars and lines over time, with axes, grid, tick labels and a legend.

use std::fmt::Write as _;

/// Width and height of every chart, in CSS pixels.
pub const WIDTH: f64 = 760.0;
pub const HEIGHT: f64 = 250.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 34.0;

/// Colours the pages and tests agree on.
pub const HIT: &str = "#2b8a3e";
pub const MISS: &str = "#e8590c";
pub const OTHER: &str = "#868e96";
pub const BYTES: &str = "#1c7ed6";
/// Colours of per-POP lines, in order.
pub const PALETTE: [&str; 8] = [
    "#1c7ed6", "#e8590c", "#2b8a3e", "#ae3ec9", "#f08c00", "#0ca678", "#d6336c", "#495057",
];

/// How values are written on the axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
}

/// One named series of values, one per time bucket.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub values: Vec<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Bars per bucket, the series stacked.
    StackedBars,
    /// One line per series.
    Lines,
}

/// A number with an SI suffix (decimal), e.g. `1.5k`, `2.3 MB`.
pub fn human(v: f64, unit: Unit) -> String {
    let (suffixes, space): (&[&str], &str) = match unit {
        Unit::Count => (&["", "k", "M", "G", "T", "P"], ""),
        Unit::Bytes => (&["B", "kB", "MB", "GB", "TB", "PB"], " "),
    };
    let mut v = v;
    let mut i = 0;
    while v.abs() >= 1000.0 && i + 1 < suffixes.len() {
        v /= 1000.0;
        i += 1;
    }
    let num = if v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() < 10.0 {
        format!("{v:.2}")
    } else if v.abs() < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    };
    format!("{num}{space}{}", suffixes[i])
}

/// The smallest 1, 2 or 5 × 10^k at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let exp = v.log10().floor();
    let base = 10f64.powf(exp);
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * base >= v * 0.999_999 {
            return m * base;
        }
    }
    10.0 * base
}

fn esc(s: &str) -> String {
    crate::netview::pages::escape(s)
}

/// Renders a chart. `times` are the buckets' start times, `label` writes one of them
/// on the x axis.
pub fn render(
    id: &str,
    title: &str,
    times: &[i64],
    series: &[Series],
    style: Style,
    unit: Unit,
    label: impl Fn(i64) -> String,
) -> String {
    let n = times.len().max(1);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let peak = match style {
        Style::StackedBars => (0..n)
            .map(|i| {
                series
                    .iter()
                    .map(|s| s.values.get(i).copied().unwrap_or(0.0))
                    .sum::<f64>()
            })
            .fold(0.0, f64::max),
        Style::Lines => series
            .iter()
            .flat_map(|s| s.values.iter().copied())
            .fold(0.0, f64::max),
    };
    let total: f64 = series.iter().flat_map(|s| s.values.iter()).sum();
    let ymax = nice_ceiling(peak);
    let y = |v: f64| TOP + plot_h - (v / ymax) * plot_h;
    let slot = plot_w / n as f64;
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" id="{}" class="chart" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}" data-total="{total}">"#,
        esc(id),
        esc(title)
    );
    let _ = write!(o, "<title>{}</title>", esc(title));
    let _ = write!(
        o,
        r##"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/><text x="{LEFT}" y="20" font-family="sans-serif" font-size="14" font-weight="bold" fill="#212529">{}</text>"##,
        esc(title)
    );
    // Grid and y labels.
    for i in 0..=4 {
        let v = ymax * f64::from(i) / 4.0;
        let yy = y(v);
        let _ = write!(
            o,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#dee2e6" stroke-width="1"/><text x="{:.1}" y="{:.1}" font-family="sans-serif" font-size="11" fill="#495057" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            esc(&human(v, unit))
        );
    }
    // X labels: about six.
    let every = n.div_ceil(6).max(1);
    for (i, t) in times.iter().enumerate().filter(|(i, _)| i % every == 0) {
        let x = LEFT + slot * (i as f64 + 0.5);
        let _ = write!(
            o,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#adb5bd"/><text x="{x:.1}" y="{:.1}" font-family="sans-serif" font-size="11" fill="#495057" text-anchor="middle">{}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 4.0,
            TOP + plot_h + 18.0,
            esc(&label(*t))
        );
    }
    let _ = write!(
        o,
        r##"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#495057"/>"##,
        TOP + plot_h,
        WIDTH - RIGHT,
        TOP + plot_h
    );
    match style {
        Style::StackedBars => {
            let bw = (slot * 0.8).max(1.0);
            for i in 0..n {
                let mut base = 0.0;
                for s in series {
                    let v = s.values.get(i).copied().unwrap_or(0.0);
                    if v <= 0.0 {
                        continue;
                    }
                    let (y1, y0) = (y(base + v), y(base));
                    let _ = write!(
                        o,
                        r#"<rect x="{:.1}" y="{y1:.1}" width="{bw:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect>"#,
                        LEFT + slot * i as f64 + (slot - bw) / 2.0,
                        (y0 - y1).max(1.0),
                        s.color,
                        esc(&s.name),
                        esc(&human(v, unit))
                    );
                    base += v;
                }
            }
        }
        Style::Lines => {
            for s in series {
                let pts: Vec<String> = (0..n)
                    .map(|i| {
                        format!(
                            "{:.1},{:.1}",
                            LEFT + slot * (i as f64 + 0.5),
                            y(s.values.get(i).copied().unwrap_or(0.0))
                        )
                    })
                    .collect();
                let _ = write!(
                    o,
                    r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2.5" stroke-linejoin="round"/>"#,
                    pts.join(" "),
                    s.color
                );
            }
        }
    }
    if total <= 0.0 {
        let _ = write!(
            o,
            r##"<text x="{:.1}" y="{:.1}" font-family="sans-serif" font-size="13" fill="#868e96" text-anchor="middle">no traffic in this period</text>"##,
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0
        );
    }
    // Legend, right-aligned on the title line.
    let mut x = WIDTH - RIGHT;
    for s in series.iter().rev() {
        let w = 7.0 * s.name.chars().count() as f64 + 18.0;
        x -= w;
        let _ = write!(
            o,
            r##"<rect x="{x:.1}" y="10" width="10" height="10" fill="{}"/><text x="{:.1}" y="19" font-family="sans-serif" font-size="11" fill="#212529">{}</text>"##,
            s.color,
            x + 13.0,
            esc(&s.name)
        );
    }
    o.push_str("</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_numbers() {
        assert_eq!(human(0.0, Unit::Count), "0");
        assert_eq!(human(1500.0, Unit::Count), "1.50k");
        assert_eq!(human(2_000_000.0, Unit::Bytes), "2 MB");
        assert_eq!(human(123_456.0, Unit::Bytes), "123 kB");
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(13.0), 20.0);
        assert_eq!(nice_ceiling(210.0), 250.0);
        assert_eq!(nice_ceiling(5000.0), 5000.0);
    }

    #[test]
    fn bars_are_drawn_for_traffic_and_names_are_escaped() {
        let s = [Series {
            name: "<hits>".into(),
            color: HIT,
            values: vec![0.0, 5.0, 10.0],
        }];
        let svg = render(
            "c",
            "A & B",
            &[0, 60, 120],
            &s,
            Style::StackedBars,
            Unit::Count,
            |t| t.to_string(),
        );
        assert_eq!(svg.matches(&format!("fill=\"{HIT}\"><title>")).count(), 2);
        assert!(svg.contains("A &amp; B") && svg.contains("&lt;hits&gt;"));
        assert!(!svg.contains("no traffic"));
        let empty = render("c", "t", &[0, 60], &[], Style::Lines, Unit::Bytes, |t| {
            t.to_string()
        });
        assert!(empty.contains("no traffic"));
    }
}
