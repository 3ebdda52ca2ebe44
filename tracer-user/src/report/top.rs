//! The live view's screen (`tasktrace top`): spawn sites with their live counts, rates,
//! growth and verdicts, refreshed from the model's [`Now`]; one text snapshot for scripts
//! and `watch`, or a ratatui frame. It keeps only what a screen needs across refreshes
//! (each site's live-count history); the model stays the one owner of task state.

use std::{
    collections::{HashMap, VecDeque},
    fmt::Write as _,
    sync::Arc,
};

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style, Stylize},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table, TableState},
};

use super::terminal_safe;
use crate::{
    model::view::{Now, TaskNow},
    stream::MetaRecord,
};

/// Target strings with no control characters left (they would drive the terminal).
fn safe(s: &str) -> String {
    terminal_safe(s).into_owned()
}

/// Refreshes of history kept per site (at one a second: five minutes).
const HISTORY: usize = 300;

/// One spawn site, as the table shows it.
#[derive(Clone, Debug, Default)]
pub struct SiteRow {
    pub site: Option<Arc<str>>,
    pub live: u64,
    pub spawned_per_s: f64,
    pub finished_per_s: f64,
    /// Least-squares slope of the live count over the history, tasks per minute.
    pub growth_per_min: f64,
    pub history: Vec<u64>,
    pub leaked_definite: u64,
    pub leaked_suspected: u64,
    pub stuck: u64,
    pub never_polled: u64,
    pub uncertain: u64,
    pub poll_p50_us: Option<f64>,
    pub poll_p99_us: Option<f64>,
    pub poll_max_us: Option<f64>,
    /// Share of one core its tasks' polls took since the previous refresh.
    pub busy_pct: Option<f64>,
}

impl SiteRow {
    pub fn label(&self) -> String {
        self.site
            .as_deref()
            .map_or_else(|| "(spawn site unknown)".into(), safe)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortBy {
    #[default]
    Live,
    Spawned,
    Finished,
    Growth,
    Leaked,
    Stuck,
    NeverPolled,
    P99,
    Site,
}

impl SortBy {
    /// The key that selects it, and its column's name.
    pub const KEYS: [(char, SortBy, &'static str); 9] = [
        ('l', SortBy::Live, "live"),
        ('n', SortBy::Spawned, "spawned/s"),
        ('f', SortBy::Finished, "finished/s"),
        ('g', SortBy::Growth, "growth"),
        ('k', SortBy::Leaked, "leaked"),
        ('t', SortBy::Stuck, "stuck"),
        ('v', SortBy::NeverPolled, "never polled"),
        ('p', SortBy::P99, "p99"),
        ('a', SortBy::Site, "site"),
    ];

    pub fn name(self) -> &'static str {
        Self::KEYS
            .iter()
            .find(|k| k.1 == self)
            .map_or("live", |k| k.2)
    }
}

/// The header line's figures.
#[derive(Clone, Debug, Default)]
pub struct Header {
    pub target: String,
    pub pid: u32,
    pub tokio: Option<String>,
    pub mode: String,
    pub uptime_s: f64,
    pub live: u64,
    pub spawns_per_s: f64,
    pub lost: u64,
    pub hits_per_s: f64,
}

#[derive(Default)]
struct History {
    live: VecDeque<u64>,
    busy_ns: u64,
}

/// What the screen shows, updated once per refresh.
#[derive(Default)]
pub struct TopView {
    pub header: Header,
    pub rows: Vec<SiteRow>,
    /// Poll figures are known (full mode).
    pub polls: bool,
    history: HashMap<Option<Arc<str>>, History>,
    /// The previous refresh: when, and probe records drained.
    prev: Option<(u64, u64)>,
    /// Tasks seen per site by the previous refresh (`SiteNow::created`).
    prev_created: HashMap<Option<Arc<str>>, u64>,
    started_ns: u64,
    /// The live count per site at the previous refresh.
    prev_live: HashMap<Option<Arc<str>>, u64>,
}

impl TopView {
    pub fn update(&mut self, now: &Now, meta: &MetaRecord, events: u64, lost: u64) {
        if self.started_ns == 0 {
            self.started_ns = meta.start_ns.max(1);
        }
        let (prev_at, prev_events) = self.prev.unwrap_or((meta.start_ns, 0));
        let dt = (now.at_ns.saturating_sub(prev_at) as f64 / 1e9).max(1e-3);
        let mut rows = Vec::with_capacity(now.sites.len());
        let mut spawned = 0u64;
        let mut seen = std::collections::HashSet::new();
        for s in &now.sites {
            seen.insert(s.site.clone());
            let before_created = self.prev_created.get(&s.site).copied().unwrap_or(0);
            let created = s.created.saturating_sub(before_created);
            spawned += created;
            let h = self.history.entry(s.site.clone()).or_default();
            if h.live.len() == HISTORY {
                h.live.pop_front();
            }
            h.live.push_back(s.live);
            let before = self.prev_live.get(&s.site).copied().unwrap_or(0);
            let finished = (created + before).saturating_sub(s.live);
            let busy = (s.busy_ns >= h.busy_ns)
                .then(|| (s.busy_ns - h.busy_ns) as f64 / (dt * 1e9) * 100.0);
            h.busy_ns = s.busy_ns;
            let us = |ns: Option<u64>| ns.map(|n| n as f64 / 1e3);
            rows.push(SiteRow {
                site: s.site.clone(),
                live: s.live,
                spawned_per_s: created as f64 / dt,
                finished_per_s: finished as f64 / dt,
                growth_per_min: slope(&h.live) * 60.0,
                history: h.live.iter().copied().collect(),
                leaked_definite: s.leaked_definite,
                leaked_suspected: s.leaked_suspected,
                stuck: s.stuck,
                never_polled: s.never_polled,
                uncertain: s.uncertain,
                poll_p50_us: us(s.poll_p50_ns),
                poll_p99_us: us(s.poll_p99_ns),
                poll_max_us: us(s.poll_max_ns),
                busy_pct: busy.filter(|_| s.polls > 0),
            });
        }
        // A site with no live task and no spawn this refresh keeps its row at zero while
        // its history says it had tasks (a site that drained is worth seeing).
        for (site, h) in &mut self.history {
            if seen.contains(site) {
                continue;
            }
            if h.live.len() == HISTORY {
                h.live.pop_front();
            }
            h.live.push_back(0);
            let before = self.prev_live.get(site).copied().unwrap_or(0);
            rows.push(SiteRow {
                site: site.clone(),
                finished_per_s: before as f64 / dt,
                growth_per_min: slope(&h.live) * 60.0,
                history: h.live.iter().copied().collect(),
                ..Default::default()
            });
        }
        self.prev_live = rows.iter().map(|r| (r.site.clone(), r.live)).collect();
        self.polls = meta.summary.polls_probed;
        self.header = Header {
            target: safe(&meta.target.binary),
            pid: meta.target.pid,
            tokio: meta.target.tokio_version.clone(),
            mode: meta.summary.mode.as_str().into(),
            uptime_s: now.at_ns.saturating_sub(self.started_ns) as f64 / 1e9,
            live: now.live,
            spawns_per_s: spawned as f64 / dt,
            lost,
            hits_per_s: events.saturating_sub(prev_events) as f64 / dt,
        };
        self.rows = rows;
        self.prev = Some((now.at_ns, events));
        self.prev_created = now
            .sites
            .iter()
            .map(|s| (s.site.clone(), s.created))
            .collect();
    }

    /// The rows to show: matching `filter` (a substring of the site), sorted.
    pub fn shown(&self, sort: SortBy, filter: &str) -> Vec<&SiteRow> {
        let mut rows: Vec<&SiteRow> = self
            .rows
            .iter()
            .filter(|r| filter.is_empty() || r.label().contains(filter))
            .collect();
        let key = |r: &SiteRow| -> f64 {
            match sort {
                SortBy::Live => r.live as f64,
                SortBy::Spawned => r.spawned_per_s,
                SortBy::Finished => r.finished_per_s,
                SortBy::Growth => r.growth_per_min,
                SortBy::Leaked => (r.leaked_definite + r.leaked_suspected) as f64,
                SortBy::Stuck => r.stuck as f64,
                SortBy::NeverPolled => r.never_polled as f64,
                SortBy::P99 => r.poll_p99_us.unwrap_or(0.0),
                SortBy::Site => 0.0,
            }
        };
        if sort == SortBy::Site {
            rows.sort_by_key(|r| r.label());
        } else {
            rows.sort_by(|a, b| {
                key(b)
                    .total_cmp(&key(a))
                    .then_with(|| a.label().cmp(&b.label()))
            });
        }
        rows
    }
}

/// Least-squares slope of a series sampled once per refresh (about a second), per second.
fn slope(v: &VecDeque<u64>) -> f64 {
    let n = v.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = (n - 1.0) / 2.0;
    let my = v.iter().sum::<u64>() as f64 / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, &y) in v.iter().enumerate() {
        let dx = i as f64 - mx;
        num += dx * (y as f64 - my);
        den += dx * dx;
    }
    num / den
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.0}"))
}

fn header_line(h: &Header) -> String {
    format!(
        "{} (pid {}) · tokio {} · {} mode · up {:.0}s · {} live · {:.0} spawns/s · {} lost · {:.0} hits/s",
        h.target,
        h.pid,
        h.tokio.as_deref().unwrap_or("?"),
        h.mode,
        h.uptime_s,
        h.live,
        h.spawns_per_s,
        h.lost,
        h.hits_per_s
    )
}

const COLUMNS: [&str; 11] = [
    "LIVE",
    "SPAWNED/S",
    "FINISHED/S",
    "GROWTH/MIN",
    "LEAKED(DEF/SUSP)",
    "STUCK",
    "NEVER_POLLED",
    "P50us",
    "P99us",
    "MAXus",
    "BUSY%",
];

fn cells(r: &SiteRow) -> [String; 11] {
    [
        r.live.to_string(),
        format!("{:.0}", r.spawned_per_s),
        format!("{:.0}", r.finished_per_s),
        format!("{:+.1}", r.growth_per_min),
        format!("{}/{}", r.leaked_definite, r.leaked_suspected),
        r.stuck.to_string(),
        r.never_polled.to_string(),
        opt(r.poll_p50_us),
        opt(r.poll_p99_us),
        opt(r.poll_max_us),
        r.busy_pct.map_or_else(|| "-".into(), |b| format!("{b:.1}")),
    ]
}

/// Columns shown: the poll figures only where polls are probed (full mode).
fn shown_columns(polls: bool) -> usize {
    if polls { COLUMNS.len() } else { 7 }
}

/// One snapshot as plain text (`top --once`, or stdout not a terminal).
pub fn render_text(v: &TopView, sort: SortBy, filter: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", header_line(&v.header));
    let n = shown_columns(v.polls);
    let mut widths = COLUMNS.map(str::len);
    let rows: Vec<(String, [String; 11])> = v
        .shown(sort, filter)
        .into_iter()
        .map(|r| (r.label(), cells(r)))
        .collect();
    for (_, c) in &rows {
        for (w, c) in widths.iter_mut().zip(c) {
            *w = (*w).max(c.len());
        }
    }
    let line = |out: &mut String, c: &[String], site: &str| {
        for (w, c) in widths.iter().zip(&c[..n]) {
            let _ = write!(out, "{c:>w$} ");
        }
        let _ = writeln!(out, " {site}");
    };
    line(&mut out, &COLUMNS.map(String::from), "SITE");
    for (site, c) in &rows {
        line(&mut out, c, site);
    }
    if !v.polls {
        let _ = writeln!(
            out,
            "({} mode: no poll figures; --mode full shows them)",
            v.header.mode
        );
    }
    out
}

/// Which screen is up, and what the user chose on it.
#[derive(Default)]
pub struct Ui {
    pub sort: SortBy,
    pub filter: String,
    /// Typing a filter after `/`.
    pub editing: bool,
    pub sites: TableState,
    /// A site drilled into: its tasks as of the last refresh.
    pub site: Option<(Option<Arc<str>>, Vec<TaskNow>)>,
    pub tasks: TableState,
    /// A task drilled into (an index into the site's tasks).
    pub task: Option<usize>,
    /// The last thing said to the user (a save), shown in the footer.
    pub message: String,
}

fn ms(ns: Option<u64>) -> String {
    ns.map_or_else(|| "-".into(), |n| format!("{:.1}s", n as f64 / 1e9))
}

fn verdict_of(t: &TaskNow) -> String {
    match t.certainty {
        Some(c) => format!(
            "{} ({})",
            t.verdict.as_str(),
            format!("{c:?}").to_lowercase()
        ),
        None => t.verdict.as_str().into(),
    }
}

/// Draws the screen: the header, the site table (or a site's tasks, or one task), the
/// keys.
pub fn draw(f: &mut Frame, v: &TopView, ui: &mut Ui) {
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(
        Paragraph::new(vec![
            Line::from(header_line(&v.header)).bold(),
            Line::from(format!(
                "sorted by {} · filter: {}{}",
                ui.sort.name(),
                if ui.filter.is_empty() && !ui.editing {
                    "none"
                } else {
                    &ui.filter
                },
                if ui.editing { "▏" } else { "" }
            )),
        ]),
        head,
    );
    let keys = match (&ui.site, ui.task) {
        (None, _) => {
            draw_sites(f, body, v, ui);
            "q quit · ↑↓ select · Enter tasks · / filter · s save · sort: l live n spawned f finished g growth k leaked t stuck v never-polled p p99 a site"
        }
        (Some(_), None) => {
            draw_tasks(f, body, ui);
            "q quit · ↑↓ select · Enter task · Esc back · s save"
        }
        (Some(_), Some(_)) => {
            draw_task(f, body, ui);
            "q quit · Esc back · s save"
        }
    };
    let text = if ui.message.is_empty() {
        keys.to_string()
    } else {
        format!("{} · {keys}", ui.message)
    };
    f.render_widget(Paragraph::new(text).reversed(), foot);
}

fn draw_sites(f: &mut Frame, area: Rect, v: &TopView, ui: &mut Ui) {
    let rows = v.shown(ui.sort, &ui.filter);
    let [table, spark] = Layout::vertical([Constraint::Min(3), Constraint::Length(4)]).areas(area);
    let n = shown_columns(v.polls);
    let header = Row::new(
        COLUMNS[..n]
            .iter()
            .map(|c| Cell::from(*c))
            .chain([Cell::from("SITE")]),
    )
    .bold();
    let body: Vec<Row> = rows
        .iter()
        .map(|r| {
            let bad = r.leaked_definite + r.leaked_suspected + r.stuck + r.never_polled > 0;
            let row = Row::new(
                cells(r)
                    .into_iter()
                    .take(n)
                    .chain([r.label()])
                    .map(Cell::from),
            );
            if bad { row.red() } else { row }
        })
        .collect();
    let mut widths: Vec<Constraint> = COLUMNS[..n]
        .iter()
        .map(|c| Constraint::Length(c.len() as u16 + 1))
        .collect();
    widths.push(Constraint::Min(20));
    if ui.sites.selected().is_none() && !rows.is_empty() {
        ui.sites.select(Some(0));
    }
    if let Some(s) = ui.sites.selected()
        && s >= rows.len()
    {
        ui.sites.select(rows.len().checked_sub(1));
    }
    f.render_stateful_widget(
        Table::new(body, widths)
            .header(header)
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
            .block(Block::new().borders(Borders::TOP).title(" spawn sites ")),
        table,
        &mut ui.sites,
    );
    if let Some(r) = ui.sites.selected().and_then(|i| rows.get(i)) {
        f.render_widget(
            Sparkline::default()
                .block(
                    Block::new()
                        .borders(Borders::TOP)
                        .title(format!(" live tasks over time: {} ", r.label())),
                )
                .data(&r.history[r.history.len().saturating_sub(spark.width as usize)..]),
            spark,
        );
    }
}

fn draw_tasks(f: &mut Frame, area: Rect, ui: &mut Ui) {
    let Some((site, tasks)) = &ui.site else {
        return;
    };
    let header = Row::new(
        [
            "ID", "KIND", "STATE", "AGE", "IDLE FOR", "POLLS", "VERDICT", "FUTURE",
        ]
        .map(Cell::from),
    )
    .bold();
    let body: Vec<Row> = tasks
        .iter()
        .map(|t| {
            Row::new(
                [
                    t.id.to_string(),
                    format!("{:?}", t.kind).to_lowercase(),
                    format!("{:?}", t.state).to_lowercase(),
                    ms(t.age_ns),
                    ms(t.idle_ns),
                    t.polls.to_string(),
                    verdict_of(t),
                    t.future.as_deref().map_or_else(String::new, safe),
                ]
                .map(Cell::from),
            )
        })
        .collect();
    let widths = [
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(10),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(20),
        Constraint::Min(20),
    ];
    if ui.tasks.selected().is_none() && !tasks.is_empty() {
        ui.tasks.select(Some(0));
    }
    let title = format!(
        " {} live tasks of {} ",
        tasks.len(),
        site.as_deref()
            .map_or_else(|| "(spawn site unknown)".into(), safe)
    );
    f.render_stateful_widget(
        Table::new(body, widths)
            .header(header)
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
            .block(Block::new().borders(Borders::TOP).title(title)),
        area,
        &mut ui.tasks,
    );
}

fn draw_task(f: &mut Frame, area: Rect, ui: &Ui) {
    let Some((site, tasks)) = &ui.site else {
        return;
    };
    let Some(t) = ui.task.and_then(|i| tasks.get(i)) else {
        return;
    };
    let field = |k: &str, v: String| {
        Line::from(vec![Span::from(format!("{k:>16}: ")).bold(), Span::from(v)])
    };
    let lines = vec![
        field("task", t.id.to_string()),
        field(
            "spawned at",
            site.as_deref().map_or_else(|| "unknown".into(), safe),
        ),
        field(
            "future",
            t.future.as_deref().map_or_else(|| "unknown".into(), safe),
        ),
        field("kind", format!("{:?}", t.kind).to_lowercase()),
        field("state", format!("{:?}", t.state).to_lowercase()),
        field("verdict", verdict_of(t)),
        field("reason", format!("{:?}", t.reason)),
        field("age", ms(t.age_ns)),
        field("idle for", ms(t.idle_ns)),
        field("polls", t.polls.to_string()),
        field("wakes", t.wakes.to_string()),
        field("busy", format!("{:.3} ms", t.busy_ns as f64 / 1e6)),
        field(
            "alive at attach",
            if t.before_attach { "yes" } else { "no" }.into(),
        ),
        field("await point", "not traced (yet)".into()),
    ];
    f.render_widget(
        Paragraph::new(lines).block(Block::new().borders(Borders::TOP).title(" task ")),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::view::SiteNow,
        plan::PlanSummary,
        stream::{MetaRecord, TargetInfo},
    };

    fn site(name: &str, live: u64, created: u64, leaked: u64) -> SiteNow {
        SiteNow {
            site: Some(name.into()),
            live,
            created,
            leaked_suspected: leaked,
            ..Default::default()
        }
    }

    fn now(at_s: u64, sites: Vec<SiteNow>) -> Now {
        Now {
            at_ns: at_s * 1_000_000_000,
            live: sites.iter().map(|s| s.live).sum(),
            sites,
            reading: None,
            tasks_seen: 0,
        }
    }

    #[test]
    fn rates_growth_sort_and_filter() {
        let meta = MetaRecord::synthetic(
            TargetInfo::synthetic("svc\x1b[2J"),
            PlanSummary::all_probed(),
        );
        let mut v = TopView::default();
        v.update(
            &now(
                1,
                vec![
                    site("src/a.rs:1:1", 10, 10, 0),
                    site("src/b.rs:2:2", 1, 1, 1),
                ],
            ),
            &meta,
            100,
            0,
        );
        v.update(
            &now(
                2,
                vec![
                    // Cumulative: 5 more at a, none at b.
                    site("src/a.rs:1:1", 12, 15, 0),
                    site("src/b.rs:2:2", 1, 1, 1),
                ],
            ),
            &meta,
            300,
            0,
        );
        let a = v.rows.iter().find(|r| r.label() == "src/a.rs:1:1").unwrap();
        assert_eq!(a.spawned_per_s, 5.0);
        // 10 live, 5 spawned, 12 live: 3 finished in the second.
        assert_eq!(a.finished_per_s, 3.0);
        assert!(a.growth_per_min > 0.0);
        assert_eq!(v.header.hits_per_s, 200.0);
        assert_eq!(v.header.live, 13);
        // A site that drained keeps a row, at zero, and its finishing shows.
        v.update(
            &now(3, vec![site("src/a.rs:1:1", 12, 15, 0)]),
            &meta,
            300,
            0,
        );
        let b = v.rows.iter().find(|r| r.label() == "src/b.rs:2:2").unwrap();
        assert_eq!((b.live, b.finished_per_s), (0, 1.0));
        let order = |s| v.shown(s, "").iter().map(|r| r.label()).collect::<Vec<_>>();
        assert_eq!(order(SortBy::Live)[0], "src/a.rs:1:1");
        assert_eq!(order(SortBy::Site), ["src/a.rs:1:1", "src/b.rs:2:2"]);
        assert_eq!(v.shown(SortBy::Live, "b.rs").len(), 1);
        let text = render_text(&v, SortBy::Live, "");
        assert!(
            text.contains("src/a.rs:1:1") && text.contains("LEAKED(DEF/SUSP)"),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "target strings are inert: {text}");
    }
}
