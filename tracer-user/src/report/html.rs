//! `--html`: one self-contained page (no network) for the morning after: the verdict
//! summary, flagged tasks grouped by spawn site, and charts drawn with plotters as inline
//! SVG: live tasks by top spawn sites, the poll-duration distribution, and stuck polls on
//! a per-thread timeline.

use std::fmt::Write as _;

use plotters::prelude::*;

use super::Report;
use crate::model::verdict::Verdict;

pub fn render_html(r: &Report) -> String {
    let s = &r.summary;
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>tasktrace report: {binary}</title>
<style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:.5em 0 1.5em}}
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:14px}}th{{background:#f3f3f3}}
.n{{font-size:28px;font-weight:bold}}.card{{display:inline-block;margin:0 1.5em 1em 0}}.bad{{color:#b00}}
.chart{{margin:1em 0}}code{{font-size:13px}}</style></head><body>
<h1>tasktrace report</h1>
<p id="target">pid {pid} · <code>{binary}</code> · tokio {tokio} · build-id <code>{build}</code><br>
window {window:.1} s, ended by {ended} · thresholds: leaked after {leak} ms idle, stuck after {stuck} ms, never polled after {np} ms</p>
<div id="summary">"#,
        binary = esc(&r.target.binary),
        pid = r.target.pid,
        tokio = esc(r.target.tokio_version.as_deref().unwrap_or("unknown")),
        build = esc(r.target.build_id.as_deref().unwrap_or("none")),
        window = r.window.duration_ns as f64 / 1e9,
        ended = r.window.ended_by.as_str().replace('_', " "),
        leak = r.thresholds.leak_after_ms,
        stuck = r.thresholds.stuck_after_ms,
        np = r.thresholds.never_polled_after_ms,
    );
    for (label, n, bad) in [
        ("leaked", s.leaked, true),
        ("stuck", s.stuck, true),
        ("never polled", s.never_polled, true),
        ("ok", s.ok, false),
        ("tasks seen", s.tasks_seen, false),
        ("alive", s.alive, false),
        ("long polls", s.long_polls, false),
        ("lost events", s.lost_events, s.lost_events > 0),
    ] {
        let class = if bad && n > 0 { "n bad" } else { "n" };
        let _ = write!(
            h,
            r#"<div class="card"><div class="{class}">{n}</div>{label}</div>"#
        );
    }
    h.push_str("</div>\n");
    for u in &r.unavailable {
        let _ = writeln!(
            h,
            "<p class=\"bad\">unavailable: {} — {}</p>",
            esc(&u.what),
            esc(&u.why)
        );
    }
    for w in &r.warnings {
        let _ = writeln!(h, "<p class=\"bad\">warning: {}</p>", esc(w));
    }
    for verdict in [Verdict::Leaked, Verdict::Stuck, Verdict::NeverPolled] {
        let id = verdict.as_str().replace('_', "-");
        let tasks: Vec<_> = r
            .tasks
            .iter()
            .filter(|t| t.counted_verdict() == verdict)
            .collect();
        let _ = write!(
            h,
            r#"<h2>{} ({})</h2><table id="{id}"><tr><th>spawn site</th><th>future</th><th>tasks</th><th>task ids</th><th>longest for</th></tr>"#,
            verdict.as_str().replace('_', " "),
            tasks.len()
        );
        let mut groups: Vec<(Option<&str>, Vec<_>)> = Vec::new();
        for t in tasks {
            match groups
                .iter_mut()
                .find(|(s, _)| *s == t.spawned_at.as_deref())
            {
                Some((_, v)) => v.push(t),
                None => groups.push((t.spawned_at.as_deref(), vec![t])),
            }
        }
        groups.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        for (site, ts) in groups {
            let ids: Vec<String> = ts.iter().map(|t| t.id.to_string()).collect();
            let longest = ts.iter().map(|t| t.for_ns).max().unwrap_or(0);
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{:.1} s</td></tr>",
                esc(site.unwrap_or("unknown")),
                esc(ts[0].future.as_deref().unwrap_or("")),
                ts.len(),
                ids.join(", "),
                longest as f64 / 1e9
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str(
        r#"<h2>Spawn sites</h2><table id="spawn-sites"><tr><th>spawn site</th><th>spawned</th><th>completed</th><th>alive</th><th>leaked</th><th>stuck</th><th>never polled</th><th>polls</th><th>poll p50 / p99 / max</th><th>live growth</th></tr>"#,
    );
    let ms = |us: Option<f64>| us.map_or("–".to_string(), |us| format!("{:.3} ms", us / 1e3));
    for s in &r.spawn_sites {
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {} / {}</td><td>{}</td></tr>",
            esc(s.site.as_deref().unwrap_or("unknown")),
            s.spawned,
            s.completed,
            s.alive,
            s.leaked,
            s.stuck,
            s.never_polled,
            s.polls,
            ms(s.poll_p50_us),
            ms(s.poll_p99_us),
            ms(s.poll_max_us),
            if s.growing {
                format!("<b class=\"bad\">+{:.1}/s</b>", s.growth_per_s)
            } else {
                format!("{:+.1}/s", s.growth_per_s)
            }
        );
    }
    h.push_str("</table>\n");
    let _ = write!(
        h,
        r#"<h2>Live tasks by spawn site</h2><div class="chart" id="chart-live">{}</div>"#,
        live_chart(r)
    );
    let _ = write!(
        h,
        r#"<h2>Poll durations</h2><div class="chart" id="chart-polls">{}</div>"#,
        poll_chart(r)
    );
    let _ = write!(
        h,
        r#"<h2>Stuck polls by thread</h2><div class="chart" id="chart-stuck">{}</div>"#,
        stuck_chart(r)
    );
    h.push_str("</body></html>\n");
    h
}

/// Text from the target made inert in a page: markup escaped, and control characters
/// shown as `\u{..}` (a page read with `cat` must not drive the terminal either).
pub(super) fn esc(s: &str) -> String {
    super::terminal_safe(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

pub(super) fn svg(
    draw: impl FnOnce(
        &DrawingArea<SVGBackend, plotters::coord::Shift>,
    ) -> Result<(), Box<dyn std::error::Error>>,
) -> String {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (960, 380)).into_drawing_area();
        if let Err(e) = root
            .fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|_| draw(&root).map_err(|e| e.to_string()))
        {
            return format!("<p class=\"bad\">chart unavailable: {}</p>", esc(&e));
        }
        let _ = root.present();
    }
    out
}

/// The window in seconds as a chart's x range: a report of a forged recording may claim
/// any span, and plotters' pixel arithmetic overflows past a few years.
fn window_s(r: &Report) -> f64 {
    (r.window.duration_ns as f64 / 1e9).clamp(0.001, 1e8)
}

/// A window-relative instant as a chart's x, inside the chart.
fn x_at(ns: u64, window_s: f64) -> f64 {
    (ns as f64 / 1e9).clamp(0.0, window_s)
}

/// Counts as a chart's y range (forged counts are clamped, not overflowed).
pub(super) const MAX_Y: u64 = 1 << 48;

fn live_chart(r: &Report) -> String {
    let window_s = window_s(r);
    let top: Vec<_> = r.spawn_sites.iter().take(6).collect();
    let max_y = top
        .iter()
        .flat_map(|s| s.live_series.iter().map(|p| p[1]))
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
            .x_desc("seconds into the window")
            .y_desc("live tasks")
            .draw()?;
        for (i, site) in top.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            // plotters escapes markup in SVG text; control characters are ours to neutralise.
            let name = site.site.as_deref().map_or_else(
                || "unknown site".into(),
                |s| super::terminal_safe(s).into_owned(),
            );
            chart
                .draw_series(LineSeries::new(
                    site.live_series
                        .iter()
                        .map(|p| (x_at(p[0], window_s), p[1].min(max_y))),
                    color.stroke_width(2),
                ))?
                .label(name)
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

fn poll_chart(r: &Report) -> String {
    let buckets = &r.poll_histogram;
    let max_y = buckets
        .iter()
        .map(|b| b.polls)
        .max()
        .unwrap_or(0)
        .min(MAX_Y)
        + 1;
    // One bucket per power of two of a u64 at most.
    let n = buckets.len().clamp(1, 64) as u32;
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d((0u32..n).into_segmented(), 0u64..max_y)?;
        chart
            .configure_mesh()
            .x_desc("poll duration, below (µs, log2 buckets)")
            .y_desc("polls")
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => 1u64
                    .checked_shl(*i)
                    .map_or_else(String::new, |v| v.to_string()),
                SegmentValue::Last => String::new(),
            })
            .draw()?;
        chart.draw_series(
            Histogram::vertical(&chart)
                .style(BLUE.mix(0.6).filled())
                .data(
                    buckets
                        .iter()
                        .take(n as usize)
                        .enumerate()
                        .map(|(i, b)| (i as u32, b.polls.min(max_y))),
                ),
        )?;
        Ok(())
    })
}

fn stuck_chart(r: &Report) -> String {
    let window_s = window_s(r);
    let mut threads: Vec<u32> = r.stuck_polls.iter().map(|p| p.thread).collect();
    threads.sort_unstable();
    threads.dedup();
    let rows = threads.len().max(1);
    svg(|root| {
        // One row per thread, centred on its index so the labels sit in the middle.
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..window_s, -0.5f64..rows as f64 - 0.5)?;
        chart
            .configure_mesh()
            .x_desc("seconds into the window (red: still blocking when judged)")
            .y_desc("thread")
            .y_labels(rows + 1)
            .y_label_formatter(&|v| {
                let i = v.round();
                if (v - i).abs() < 1e-6 && i >= 0.0 {
                    threads
                        .get(i as usize)
                        .map(|t| t.to_string())
                        .unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .draw()?;
        chart.draw_series(r.stuck_polls.iter().map(|p| {
            let row = threads.iter().position(|&t| t == p.thread).unwrap_or(0) as f64;
            let color = if p.in_progress {
                RED.mix(0.8)
            } else {
                RGBColor(230, 150, 0).mix(0.8)
            };
            Rectangle::new(
                [
                    (x_at(p.start_ns, window_s), row - 0.35),
                    (x_at(p.end_ns, window_s), row + 0.35),
                ],
                color.filled(),
            )
        }))?;
        Ok(())
    })
}
