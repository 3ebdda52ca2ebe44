//! `tasktrace top`: a live view of a running process's tasks by spawn site, refreshed
//! every second in the terminal (like py-spy's `top`), or one text snapshot (`--once`, or
//! stdout not a terminal). It watches a [`Session`]'s model ([`Watch`]); keys sort,
//! filter, drill into a site and a task, save the report so far, and quit (detaching).

use std::{
    io::{IsTerminal, Write as _},
    path::PathBuf,
    time::Duration,
};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use super::session::{Control, Session, Watch, Watched};
use crate::{
    error::{Error, Result},
    report::{
        Report, render_html,
        top::{SortBy, TopView, Ui, draw, render_text},
    },
    stream::{EndedBy, output::Output},
};

pub struct TopOpts {
    /// Print one snapshot after the first refresh period and end.
    pub once: bool,
    pub refresh: Duration,
    /// Where `s` saves the report.
    pub json: PathBuf,
    pub html: PathBuf,
    /// The trace file being recorded (`-o`), named when saving.
    pub recording: Option<PathBuf>,
}

/// Shows the session's model until the user quits or the window ends; then the window
/// is closed by the caller. Returns why it ended.
pub async fn top(session: &mut Session<'_>, opts: &TopOpts) -> Result<EndedBy> {
    if opts.once || !std::io::stdout().is_terminal() {
        let mut once = Once {
            view: TopView::default(),
            refresh_ns: opts.refresh.as_nanos() as u64,
            first_ns: None,
        };
        return session.run_watched(Some(&mut once)).await;
    }
    let terminal = ratatui::try_init().map_err(|e| {
        Error::Internal(format!(
            "cannot take over the terminal ({e}); `tasktrace top --once` prints a snapshot"
        ))
    })?;
    let mut screen = Screen {
        terminal,
        view: TopView::default(),
        ui: Ui::default(),
        refresh_ns: opts.refresh.as_nanos() as u64,
        next_ns: 0,
        opts,
        saves: 0,
    };
    let ended = session.run_watched(Some(&mut screen)).await;
    ratatui::restore();
    ended
}

/// `--once`: one snapshot after one refresh period.
struct Once {
    view: TopView,
    refresh_ns: u64,
    first_ns: Option<u64>,
}

impl Watch for Once {
    fn tick(&mut self, now: &Watched<'_>) -> Control {
        let first = *self.first_ns.get_or_insert(now.now_ns);
        if now.now_ns.saturating_sub(first) < self.refresh_ns {
            return Control::Go;
        }
        let at = now.agg.now(now.now_ns);
        self.view.update(&at, now.meta, now.events, now.lost);
        print!("{}", render_text(&self.view, SortBy::Live, ""));
        let _ = std::io::stdout().flush();
        Control::Quit
    }

    fn saved(&mut self, _: Report) {}
}

struct Screen<'o> {
    terminal: ratatui::DefaultTerminal,
    view: TopView,
    ui: Ui,
    refresh_ns: u64,
    next_ns: u64,
    opts: &'o TopOpts,
    saves: u32,
}

impl Screen<'_> {
    fn refresh(&mut self, now: &Watched<'_>) {
        let at = now.agg.now(now.now_ns);
        self.view.update(&at, now.meta, now.events, now.lost);
        if let Some((site, tasks)) = self.ui.site.as_mut() {
            *tasks = now.agg.tasks_at_site(site.as_deref(), now.now_ns);
        }
    }

    /// One key: what the session should do next.
    fn key(&mut self, code: KeyCode, mods: KeyModifiers, now: &Watched<'_>) -> Control {
        let ui = &mut self.ui;
        if code == KeyCode::Char('c') && mods.contains(KeyModifiers::CONTROL) {
            return Control::Quit;
        }
        if ui.editing {
            match code {
                KeyCode::Enter | KeyCode::Esc => ui.editing = false,
                KeyCode::Backspace => {
                    ui.filter.pop();
                }
                KeyCode::Char(c) => ui.filter.push(c),
                _ => {}
            }
            ui.sites.select(Some(0));
            return Control::Go;
        }
        let table = if ui.site.is_some() {
            &mut ui.tasks
        } else {
            &mut ui.sites
        };
        match code {
            KeyCode::Char('q') => return Control::Quit,
            KeyCode::Char('s') => return Control::Save,
            KeyCode::Down => table.select_next(),
            KeyCode::Up => table.select_previous(),
            KeyCode::Esc | KeyCode::Backspace | KeyCode::Left => {
                if ui.task.take().is_none() {
                    ui.site = None;
                }
            }
            KeyCode::Enter | KeyCode::Right => match &ui.site {
                None => {
                    let rows = self.view.shown(ui.sort, &ui.filter);
                    if let Some(r) = ui.sites.selected().and_then(|i| rows.get(i)) {
                        let tasks = now.agg.tasks_at_site(r.site.as_deref(), now.now_ns);
                        ui.site = Some((r.site.clone(), tasks));
                        ui.tasks.select(Some(0));
                    }
                }
                Some((_, tasks)) => {
                    ui.task = ui.tasks.selected().filter(|&i| i < tasks.len());
                }
            },
            KeyCode::Char('/') if ui.site.is_none() => {
                ui.editing = true;
                ui.filter.clear();
            }
            KeyCode::Char(c) if ui.site.is_none() => {
                if let Some(&(_, sort, _)) = SortBy::KEYS.iter().find(|k| k.0 == c) {
                    ui.sort = sort;
                }
            }
            _ => {}
        }
        Control::Go
    }

    fn draw(&mut self) {
        let (view, ui) = (&self.view, &mut self.ui);
        let _ = self.terminal.draw(|f| draw(f, view, ui));
    }
}

impl Watch for Screen<'_> {
    fn tick(&mut self, now: &Watched<'_>) -> Control {
        let mut dirty = false;
        if now.now_ns >= self.next_ns {
            self.refresh(now);
            self.next_ns = now.now_ns + self.refresh_ns;
            dirty = true;
        }
        let mut control = Control::Go;
        while control == Control::Go && event::poll(Duration::ZERO).unwrap_or(false) {
            match event::read() {
                Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => {
                    control = self.key(k.code, k.modifiers, now);
                    dirty = true;
                }
                Ok(Event::Resize(..)) => dirty = true,
                _ => {}
            }
        }
        if dirty {
            self.draw();
        }
        control
    }

    fn saved(&mut self, report: Report) {
        self.saves += 1;
        let json = serde_json::to_vec_pretty(&report).map(|mut v| {
            v.push(b'\n');
            v
        });
        let written = json
            .map_err(std::io::Error::other)
            .and_then(|j| write_whole(&self.opts.json, &j))
            .and_then(|_| write_whole(&self.opts.html, render_html(&report).as_bytes()));
        self.ui.message = match written {
            Ok(()) => {
                let mut m = format!(
                    "saved {} and {}",
                    self.opts.json.display(),
                    self.opts.html.display()
                );
                if let Some(t) = &self.opts.recording {
                    m.push_str(&format!(" (trace so far in {})", t.display()));
                }
                m
            }
            Err(e) => format!("could not save: {e}"),
        };
        self.draw();
    }
}

/// Written whole or not at all, never through a planted symlink (`stream::output`).
fn write_whole(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut out = Output::create(path)?;
    out.file().write_all(bytes)?;
    out.commit()
}
