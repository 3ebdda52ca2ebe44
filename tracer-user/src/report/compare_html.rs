//! `--html` of a comparison: one self-contained page with the totals before and after,
//! the table of sites that changed, appeared or vanished, and for each changed site a
//! chart of its live tasks in both windows (plotters, inline SVG).

use std::fmt::Write as _;

use plotters::prelude::*;

use super::compare::{Change, Comparison, Figures, SiteChange};
use super::html::{MAX_Y, esc, svg};

pub fn render_compare_html(c: &Comparison) -> String {
    let mut h = String::new();
    let (b, n) = (&c.baseline, &c.current);
    let _ = write!(
        h,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>tasktrace comparison</title>
<style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:.5em 0 1.5em}}
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:14px}}th{{background:#f3f3f3}}
.bad{{color:#b00}}.good{{color:#070}}.chart{{margin:1em 0}}code{{font-size:13px}}</style></head><body>
<h1>tasktrace comparison</h1>
<p id="sides">current: <code>{cf}</code> (pid {cp}, tokio {ct}, {cw:.1} s)<br>baseline: <code>{bf}</code> (pid {bp}, tokio {bt}, {bw:.1} s)</p>
<table id="totals"><tr><th></th><th>baseline</th><th>current</th><th>change</th></tr>"#,
        cf = esc(&n.file),
        cp = n.pid,
        ct = esc(n.tokio_version.as_deref().unwrap_or("unknown")),
        cw = n.window_s,
        bf = esc(&b.file),
        bp = b.pid,
        bt = esc(b.tokio_version.as_deref().unwrap_or("unknown")),
        bw = b.window_s,
    );
    for (label, x, y) in [
        ("leaked", b.leaked, n.leaked),
        ("stuck", b.stuck, n.stuck),
        ("never polled", b.never_polled, n.never_polled),
        ("alive", b.alive, n.alive),
        ("tasks seen", b.tasks_seen, n.tasks_seen),
        ("lost events", b.lost_events, n.lost_events),
    ] {
        let _ = write!(
            h,
            "<tr><td>{label}</td><td>{x}</td><td>{y}</td><td>{}</td></tr>",
            delta(x, y)
        );
    }
    let _ = write!(
        h,
        "</table>\n<h2>Spawn sites: {} changed, {} appeared, {} vanished, {} unchanged</h2>\n\
         <table id=\"sites\"><tr><th>spawn site</th><th>change</th><th>leaked</th><th>stuck</th>\
         <th>never polled</th><th>alive</th><th>growing</th><th>poll p50 / p99</th></tr>",
        c.changed, c.appeared, c.vanished, c.unchanged
    );
    let zero = Figures::default();
    let moved: Vec<&SiteChange> = c
        .sites
        .iter()
        .filter(|s| s.change != Change::Unchanged)
        .collect();
    for s in &moved {
        let (bf, cf) = (
            s.baseline.as_ref().unwrap_or(&zero),
            s.current.as_ref().unwrap_or(&zero),
        );
        let ms = |us: Option<f64>| us.map_or("–".into(), |us| format!("{:.3}", us / 1e3));
        let yes = |g: bool| if g { "yes" } else { "no" };
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{} → {}</td><td>{} / {} → {} / {} ms</td></tr>",
            esc(s.site.as_deref().unwrap_or("unknown site")),
            s.change.as_str(),
            was(bf.leaked, cf.leaked),
            was(bf.stuck, cf.stuck),
            was(bf.never_polled, cf.never_polled),
            was(bf.alive, cf.alive),
            yes(bf.growing),
            yes(cf.growing),
            ms(bf.poll_p50_us),
            ms(bf.poll_p99_us),
            ms(cf.poll_p50_us),
            ms(cf.poll_p99_us),
        );
    }
    h.push_str("</table>\n");
    for (i, s) in moved.iter().enumerate() {
        let _ = writeln!(
            h,
            "<h3>Live tasks at <code>{}</code> ({})</h3><div class=\"chart\" id=\"chart-{i}\">{}</div>",
            esc(s.site.as_deref().unwrap_or("unknown site")),
            s.change.as_str(),
            live_chart(s, b.window_s.max(n.window_s))
        );
    }
    h.push_str("</body></html>\n");
    h
}

fn delta(x: u64, y: u64) -> String {
    match y.cmp(&x) {
        std::cmp::Ordering::Equal => "–".into(),
        std::cmp::Ordering::Greater => format!("<b class=\"bad\">+{}</b>", y - x),
        std::cmp::Ordering::Less => format!("<b class=\"good\">−{}</b>", x - y),
    }
}

fn was(x: u64, y: u64) -> String {
    if x == y {
        y.to_string()
    } else {
        format!("{x} → {y} {}", delta(x, y))
    }
}

/// Both windows' live series of one site, each from its own window start.
fn live_chart(s: &SiteChange, window_s: f64) -> String {
    let window_s = window_s.clamp(0.001, 1e8);
    let sides = [
        ("baseline", &s.baseline, BLUE),
        ("current", &s.current, RED),
    ];
    let max_y = sides
        .iter()
        .filter_map(|(_, f, _)| f.as_ref())
        .flat_map(|f| f.live_series.iter().map(|p| p[1]))
        .max()
        .unwrap_or(0)
        .min(MAX_Y)
        + 1;
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..window_s, 0u64..max_y)?;
        chart
            .configure_mesh()
            .x_desc("seconds into each window")
            .y_desc("live tasks")
            .draw()?;
        for (label, f, color) in sides {
            let Some(f) = f else { continue };
            chart
                .draw_series(LineSeries::new(
                    f.live_series
                        .iter()
                        .map(|p| ((p[0] as f64 / 1e9).clamp(0.0, window_s), p[1].min(max_y))),
                    color.stroke_width(2),
                ))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}
