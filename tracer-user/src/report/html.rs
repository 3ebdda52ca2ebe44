//! `--html`: one self-contained page (no network) for the morning after, read as the
//! incident's story: the verdict summary, a timeline (live tasks of the top spawn sites,
//! when each verdict set in, lost events, stops, the attach and an incident's trigger),
//! flagged tasks grouped by spawn site, a drill-down per site, and charts drawn with
//! plotters as inline SVG: the poll-duration distribution and stuck polls per thread.

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
.chart{{margin:1em 0}}code{{font-size:13px}}.legend{{list-style:none;padding:0;margin:.3em 0}}</style></head><body>
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
    let _ = write!(
        h,
        r#"<h2>Timeline</h2><p>Live tasks of the top spawn sites; marks along the top: when each
verdict set in (<span class="bad">▲ leaked</span>, <span style="color:#c60">▲ stuck</span>,
<span style="color:#639">▲ never polled</span>); shaded: <span class="bad">events lost</span>,
<span style="color:#888">target stopped</span>; dashed: {}.</p><div class="chart" id="timeline">{}{}</div>
"#,
        match incident(r) {
            Some(why) => format!(
                "the ring's start (tasks alive before it were listed there) and the incident: {}",
                esc(why)
            ),
            None => "the attach".into(),
        },
        timeline_chart(r),
        timeline_legend(r)
    );
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
        // Where its live tasks are parked: one row per await point, with a count.
        for p in &s.parked {
            let _ = write!(
                h,
                "<tr class=\"parked\"><td colspan=\"10\">&nbsp;&nbsp;{} parked at <code>{}</code>{}{} <small title=\"{}\">(chain)</small></td></tr>",
                p.tasks,
                esc(p.at.as_deref().unwrap_or("?")),
                p.leaf
                    .as_deref()
                    .map(|l| format!(", awaiting <code>{}</code>", esc(l)))
                    .unwrap_or_default(),
                if p.leaked > 0 {
                    format!(" <b class=\"bad\">{} leaked</b>", p.leaked)
                } else {
                    String::new()
                },
                esc(&p.chain)
            );
        }
    }
    h.push_str("</table>\n");
    drill_down(&mut h, r);
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

/// The reason of a flight-recorder incident, if this report is one (its end is then
/// the trigger).
fn incident(r: &Report) -> Option<&str> {
    r.warnings.iter().find_map(|w| w.strip_prefix("incident: "))
}

/// When a flagged task's verdict set in, relative to the window: the condition began
/// `for_ns` before it was judged, and became a verdict once past its threshold (a
/// definite leak at once).
fn onset(r: &Report, t: &super::TaskReport) -> u64 {
    let th = &r.thresholds;
    let after_ms = match t.counted_verdict() {
        Verdict::Leaked if t.certainty == Some(crate::model::verdict::Certainty::Definite) => 0,
        Verdict::Leaked => th.leak_after_ms,
        Verdict::Stuck => th.stuck_after_ms,
        Verdict::NeverPolled => th.never_polled_after_ms,
        Verdict::Ok => 0,
    };
    (t.judged_at_ns.saturating_sub(t.for_ns) + after_ms * 1_000_000).min(r.window.duration_ns)
}

fn timeline_chart(r: &Report) -> String {
    let window_s = window_s(r);
    let top: Vec<_> = r.spawn_sites.iter().take(6).collect();
    let max_y = top
        .iter()
        .flat_map(|s| s.live_series.iter().map(|p| p[1]))
        .max()
        .unwrap_or(0)
        .min(MAX_Y)
        + 1;
    // Headroom above the lines for the verdict marks.
    let top_y = max_y + max_y / 8 + 2;
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..window_s, 0u64..top_y)?;
        chart
            .configure_mesh()
            .x_desc("seconds into the window")
            .y_desc("live tasks")
            .draw()?;
        let span = |(a, b): (u64, u64), color: RGBAColor| {
            Rectangle::new(
                [(x_at(a, window_s), 0), (x_at(b.max(a), window_s), top_y)],
                color.filled(),
            )
        };
        chart.draw_series(
            r.diagnostics
                .stopped_spans
                .iter()
                .map(|&s| span(s, RGBColor(150, 150, 150).mix(0.25))),
        )?;
        chart.draw_series(
            r.diagnostics
                .lost_spans
                .iter()
                .map(|&s| span(s, RED.mix(0.2))),
        )?;
        let dashed = |x: f64| {
            DashedLineSeries::new(
                vec![(x, 0), (x, top_y)],
                6,
                4,
                BLACK.mix(0.6).stroke_width(1),
            )
        };
        chart.draw_series(dashed(0.0))?;
        if incident(r).is_some() {
            chart.draw_series(dashed(window_s))?;
        }
        for (i, site) in top.iter().enumerate() {
            chart.draw_series(LineSeries::new(
                site.live_series
                    .iter()
                    .map(|p| (x_at(p[0], window_s), p[1].min(max_y))),
                Palette99::pick(i).to_rgba().stroke_width(2),
            ))?;
        }
        let mark_y = max_y + max_y / 16 + 1;
        chart.draw_series(r.tasks.iter().filter_map(|t| {
            let color = match t.counted_verdict() {
                Verdict::Leaked => RED,
                Verdict::Stuck => RGBColor(204, 102, 0),
                Verdict::NeverPolled => RGBColor(102, 51, 153),
                Verdict::Ok => return None,
            };
            Some(TriangleMarker::new(
                (x_at(onset(r, t), window_s), mark_y),
                6,
                color.filled(),
            ))
        }))?;
        Ok(())
    })
}

/// The timeline's legend, in the page rather than over the lines and marks.
fn timeline_legend(r: &Report) -> String {
    let mut h = String::from(r#"<ul class="legend">"#);
    for (i, site) in r.spawn_sites.iter().take(6).enumerate() {
        let c = Palette99::pick(i).to_rgba();
        let _ = write!(
            h,
            r#"<li><span style="color:rgb({},{},{})">━━</span> <code>{}</code> ({} alive at the end{})</li>"#,
            c.0,
            c.1,
            c.2,
            esc(site.site.as_deref().unwrap_or("unknown site")),
            site.alive,
            if site.growing {
                format!(", <b class=\"bad\">growing {:+.1}/s</b>", site.growth_per_s)
            } else {
                String::new()
            }
        );
    }
    h.push_str("</ul>");
    h
}

/// Per spawn site, folded open on demand (no script): its counts and its flagged and
/// live tasks, the longest first.
fn drill_down(h: &mut String, r: &Report) {
    const SITES: usize = 50;
    const TASKS: usize = 20;
    h.push_str(r#"<h2>By spawn site</h2><div id="drill-down">"#);
    for s in r.spawn_sites.iter().take(SITES) {
        let mut tasks: Vec<_> = r
            .tasks
            .iter()
            .filter(|t| !t.runtime_plumbing && t.spawned_at.as_deref() == s.site.as_deref())
            .filter(|t| t.counted_verdict() != Verdict::Ok || t.ended_at_ns().is_none())
            .collect();
        tasks.sort_by_key(|t| {
            (
                t.counted_verdict() == Verdict::Ok,
                std::cmp::Reverse(t.for_ns),
            )
        });
        let flagged = s.leaked + s.stuck + s.never_polled;
        let _ = write!(
            h,
            "<details{}><summary><code>{}</code> — {} spawned, {} alive, {}</summary>\
             <table><tr><th>task</th><th>verdict</th><th>state</th><th>for</th><th>polls</th>\
             <th>future</th></tr>",
            if flagged > 0 { " open" } else { "" },
            esc(s.site.as_deref().unwrap_or("unknown site")),
            s.spawned,
            s.alive,
            if flagged > 0 {
                format!(
                    "<b class=\"bad\">{} leaked, {} stuck, {} never polled</b>",
                    s.leaked, s.stuck, s.never_polled
                )
            } else {
                "nothing flagged".into()
            }
        );
        for t in tasks.iter().take(TASKS) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{:?}</td><td>{:.1} s</td><td>{}</td><td><code>{}</code></td></tr>",
                t.id,
                t.counted_verdict().as_str().replace('_', " "),
                t.state,
                t.for_ns as f64 / 1e9,
                t.polls,
                esc(t.future.as_deref().unwrap_or(""))
            );
        }
        if tasks.len() > TASKS {
            let _ = write!(
                h,
                "<tr><td colspan=\"6\">… and {} more</td></tr>",
                tasks.len() - TASKS
            );
        }
        h.push_str("</table></details>\n");
    }
    if r.spawn_sites.len() > SITES {
        let _ = write!(
            h,
            "<p>… and {} more sites (all are in the table above and in the JSON report)</p>",
            r.spawn_sites.len() - SITES
        );
    }
    h.push_str("</div>\n");
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
