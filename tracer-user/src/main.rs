//! `tasktrace`: finds leaked, stuck and never-polled tasks in a live tokio process. The
//! verbs are parsed and dispatched here; everything else is the library (`lib.rs`).

use std::{fs::File, io::Write, path::PathBuf, process::ExitCode};

use clap::Parser;

use tasktrace::{
    cmd::{
        agent,
        cli::{Cli, Command, TraceArgs, VerdictArgs},
        compare, dump, flight, inspect, replay, serve, session,
        session::WindowOpts,
        synth, top,
    },
    error::{Error, exit},
    live::target,
    model::verdict::Thresholds,
    plan::Mode,
    report,
    stream::{output::Output, tracefile::Writer},
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tasktrace: cannot start: {e}");
            return ExitCode::from(exit::INTERNAL as u8);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("tasktrace: error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

async fn run(cli: Cli) -> Result<i32, Error> {
    match cli.command {
        Command::Run { opts, cmd } => {
            let json = open_output(&opts.verdicts)?;
            let trace = open_recording(&opts)?;
            let mut metrics = metrics_watch(&opts)?;
            let (target, launched) = target::launch(&cmd)?;
            let report = session::trace_watched(
                target,
                Some(launched),
                &window(&opts, Mode::Full),
                trace,
                metrics.as_mut().map(|m| m as &mut dyn session::Watch),
            )
            .await?;
            finish(&opts.verdicts, json, report)
        }
        Command::Record { pid, opts } => {
            let json = open_output(&opts.verdicts)?;
            let trace = open_recording(&opts)?;
            let mut metrics = metrics_watch(&opts)?;
            let target = target::Target::from_pid(pid)?;
            let report = session::trace_watched(
                target,
                None,
                &window(&opts, Mode::Sample),
                trace,
                metrics.as_mut().map(|m| m as &mut dyn session::Watch),
            )
            .await?;
            finish(&opts.verdicts, json, report)
        }
        Command::Inspect {
            path,
            pid,
            json,
            symbols,
        } => {
            let (display, exe) = match (path, pid) {
                (_, Some(pid)) => {
                    let t = target::Target::from_pid(pid)?;
                    (t.display, t.exe)
                }
                (Some(p), None) => {
                    if !p.exists() {
                        return Err(Error::CommandNotFound(p.display().to_string()));
                    }
                    (p.display().to_string(), p)
                }
                (None, None) => unreachable!("clap requires one"),
            };
            let i = inspect::inspect(&display, &exe, symbols.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&i).expect("serializes"));
            } else {
                print!("{}", inspect::render_text(&i));
            }
            Ok(exit::OK)
        }
        Command::SynthTrace {
            file,
            events,
            spawns_per_s,
            seconds,
        } => {
            match spawns_per_s {
                Some(rate) => synth::write_long(&file, rate, seconds)?,
                None => synth::write(&file, events)?,
            }
            Ok(exit::OK)
        }
        Command::Dump {
            pid,
            json,
            symbols,
            debug,
        } => {
            // Opened first, so a bad path fails before the target is read.
            let out = match json.as_deref() {
                Some(p) if p != std::path::Path::new("-") => Some(create_output(p)?),
                _ => None,
            };
            let d = dump::dump(pid, symbols.as_deref(), &debug.info())?;
            fn body(w: &mut impl Write, d: &dump::Dump) -> std::io::Result<()> {
                serde_json::to_writer_pretty(&mut *w, d)?;
                w.write_all(b"\n")
            }
            match (&json, out) {
                (Some(p), Some(f)) => {
                    print!("{}", dump::render_text(&d));
                    write_out(Some(f), Some(p), |w| body(w, &d), false)?;
                }
                (Some(_), None) => {
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    body(&mut out, &d)
                        .and_then(|_| out.flush())
                        .map_err(Error::Stdout)?;
                }
                _ => print!("{}", dump::render_text(&d)),
            }
            Ok(exit::OK)
        }
        Command::Top {
            pid,
            mode,
            once,
            refresh,
            duration,
            output,
            symbols,
            ring_size,
            verdicts,
            cmd,
        } => {
            let recording = output.as_deref().map(Writer::create).transpose()?;
            let (target, launched) = match pid {
                Some(pid) => (target::Target::from_pid(pid)?, None),
                None => {
                    let (t, l) = target::launch(&cmd)?;
                    (t, Some(l))
                }
            };
            let interactive = !once && std::io::IsTerminal::is_terminal(&std::io::stdout());
            let window = WindowOpts {
                duration,
                thresholds: thresholds(&verdicts),
                ring_bytes: ring_size,
                // Nothing may write over the screen.
                quiet: interactive || verdicts.quiet,
                timeline: false,
                keep: verdicts.retention(),
                spawn_sites: true,
                symbols,
                debug: Default::default(),
                mode,
                attach: None,
                flight: None,
                spawn_budget: tasktrace::cmd::spawn_gate::DEFAULT_BUDGET,
            };
            let pid = target.pid;
            let opts = top::TopOpts {
                once,
                refresh,
                json: verdicts
                    .json
                    .clone()
                    .unwrap_or_else(|| format!("tasktrace-top-{pid}.json").into()),
                html: verdicts
                    .html
                    .clone()
                    .unwrap_or_else(|| format!("tasktrace-top-{pid}.html").into()),
                recording: output,
            };
            let mut s = session::Session::attach(target, launched, &window, recording)?;
            let ended = top::top(&mut s, &opts).await;
            // Closed (probes detached) whatever happened to the screen.
            let report = s
                .close(
                    *ended
                        .as_ref()
                        .unwrap_or(&tasktrace::stream::EndedBy::Interrupted),
                )
                .await;
            ended?;
            if interactive {
                eprintln!(
                    "tasktrace: top ended; {} tasks alive, {} leaked, {} stuck, {} never polled",
                    report.summary.alive,
                    report.summary.leaked,
                    report.summary.stuck,
                    report.summary.never_polled
                );
            }
            Ok(exit::OK)
        }
        Command::Agent {
            pid,
            exe,
            all,
            listen,
            rescan,
            mode,
            leak_after,
            stuck_after,
            never_polled_after,
            quiet,
        } => {
            if pid.is_empty() && exe.is_empty() && !all {
                return Err(Error::Usage(
                    "tasktrace agent: say which processes to trace: --pid PID, --exe NAME or --all"
                        .into(),
                ));
            }
            let window = WindowOpts {
                duration: None,
                thresholds: Thresholds::new(leak_after, stuck_after, never_polled_after),
                ring_bytes: 8 << 20,
                quiet,
                timeline: false,
                keep: Default::default(),
                spawn_sites: true,
                symbols: None,
                debug: Default::default(),
                mode,
                attach: None,
                flight: None,
                spawn_budget: tasktrace::cmd::spawn_gate::DEFAULT_BUDGET,
            };
            agent::run(agent::AgentOpts {
                select: agent::Selection {
                    pids: pid,
                    exes: exe,
                    all,
                },
                listen,
                rescan,
                window,
            })?;
            Ok(exit::OK)
        }
        Command::Snapshot { pid } => {
            let dir = flight::snapshot(pid)?;
            eprintln!(
                "tasktrace: asked the flight recorder of pid {pid} for an incident: it writes it in {}",
                dir.display()
            );
            Ok(exit::OK)
        }
        Command::Report {
            file,
            baseline: Some(baseline),
            opts,
        } => {
            if opts.perfetto.is_some() || opts.pprof.is_some() || !opts.fail_on.is_empty() {
                return Err(Error::NotComparable {
                    path: file,
                    why: "--perfetto, --pprof and --fail-on report one window, not a comparison"
                        .into(),
                });
            }
            let out = open_output(&opts)?;
            let c = compare::compare_files(&file, &baseline, thresholds(&opts), opts.retention())?;
            if !opts.quiet {
                print!("{}", report::compare::render_compare_text(&c));
            }
            write_out(
                out.json,
                opts.json.as_ref(),
                |w| {
                    serde_json::to_writer_pretty(&mut *w, &c)?;
                    w.write_all(b"\n")
                },
                opts.quiet,
            )?;
            write_out(
                out.html,
                opts.html.as_ref(),
                |w| w.write_all(report::render_compare_html(&c).as_bytes()),
                opts.quiet,
            )?;
            Ok(exit::OK)
        }
        Command::Report {
            file,
            baseline: None,
            opts,
        } => {
            let json = open_output(&opts)?;
            let report = replay::report_from_file(
                &file,
                thresholds(&opts),
                opts.perfetto.is_some(),
                opts.retention(),
            )?;
            finish(&opts, json, report)
        }
    }
}

fn thresholds(v: &VerdictArgs) -> Thresholds {
    Thresholds::new(v.leak_after, v.stuck_after, v.never_polled_after)
}

/// `mode` is the verb's default: `run` traces in full, `record` attaches in sample mode
/// (free to leave on; docs/user-guide.md, "Modes and overhead").
fn window(opts: &TraceArgs, mode: Mode) -> WindowOpts {
    WindowOpts {
        duration: opts.duration,
        thresholds: thresholds(&opts.verdicts),
        ring_bytes: opts.ring_size,
        quiet: opts.verdicts.quiet,
        timeline: opts.verdicts.perfetto.is_some(),
        keep: opts.verdicts.retention(),
        symbols: opts.symbols.clone(),
        debug: tasktrace::cmd::awaits::DebugInfo {
            stacks: !opts.no_await_stacks,
            ..opts.debug.info()
        },
        spawn_sites: !opts.no_spawn_sites,
        mode: opts.mode.unwrap_or(mode),
        spawn_budget: opts.spawn_budget,
        attach: opts.attach,
        flight: opts.flight.map(|keep| flight::FlightOpts {
            keep,
            max_bytes: opts.flight_size as usize,
            dir: opts.output.clone().unwrap_or_else(|| ".".into()),
            triggers: opts.trigger.clone(),
        }),
    }
}

/// The trace file of `-o`, created before tracing so a bad path fails before attaching.
/// `--prometheus ADDR`: the metrics server, listening before anything attaches.
fn metrics_watch(opts: &TraceArgs) -> Result<Option<serve::MetricsWatch>, Error> {
    let Some(addr) = opts.prometheus.as_deref() else {
        return Ok(None);
    };
    let server = serve::MetricsServer::start(addr)?;
    if !opts.verdicts.quiet {
        eprintln!(
            "tasktrace: serving metrics on http://{}/metrics",
            server.addr
        );
    }
    Ok(Some(serve::MetricsWatch::new(server)))
}

/// The trace file of `-o`; a flight recorder's `-o` is the directory of its incidents.
fn open_recording(opts: &TraceArgs) -> Result<Option<Writer>, Error> {
    if opts.flight.is_some() {
        flight::prepare_dir(opts.output.as_deref().unwrap_or(std::path::Path::new(".")))?;
        return Ok(None);
    }
    opts.output.as_deref().map(Writer::create).transpose()
}

/// The report files, opened before tracing so a bad path fails before anything attaches.
struct Outputs {
    json: Option<Output>,
    html: Option<Output>,
    perfetto: Option<Output>,
    pprof: Option<Output>,
}

/// An output file created safely (`stream::output`: no planted symlink is followed; the
/// file appears whole or not at all).
fn create_output(p: &std::path::Path) -> Result<Output, Error> {
    Output::create(p).map_err(|err| Error::Output {
        path: p.to_owned(),
        err,
    })
}

fn open_output(opts: &VerdictArgs) -> Result<Outputs, Error> {
    let open = |p: &Option<PathBuf>| p.as_deref().map(create_output).transpose();
    Ok(Outputs {
        json: open(&opts.json)?,
        html: open(&opts.html)?,
        perfetto: open(&opts.perfetto)?,
        pprof: open(&opts.pprof)?,
    })
}

/// Streams an output into its file (a large report is never held whole in memory).
fn write_out(
    file: Option<Output>,
    path: Option<&PathBuf>,
    body: impl FnOnce(&mut std::io::BufWriter<&mut File>) -> std::io::Result<()>,
    quiet: bool,
) -> Result<(), Error> {
    if let (Some(mut out), Some(path)) = (file, path) {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, out.file());
        body(&mut w)
            .and_then(|_| w.flush())
            .map_err(|err| Error::Output {
                path: path.clone(),
                err,
            })?;
        drop(w);
        out.commit().map_err(|err| Error::Output {
            path: path.clone(),
            err,
        })?;
        if !quiet {
            eprintln!("tasktrace: wrote {}", path.display());
        }
    }
    Ok(())
}

fn finish(opts: &VerdictArgs, out: Outputs, report: report::Report) -> Result<i32, Error> {
    print!("{}", report::render_text(&report));
    let quiet = opts.quiet;
    write_out(
        out.json,
        opts.json.as_ref(),
        |w| {
            serde_json::to_writer_pretty(&mut *w, &report)?;
            w.write_all(b"\n")
        },
        quiet,
    )?;
    write_out(
        out.html,
        opts.html.as_ref(),
        |w| w.write_all(report::render_html(&report).as_bytes()),
        quiet,
    )?;
    write_out(
        out.perfetto,
        opts.perfetto.as_ref(),
        |w| Ok(serde_json::to_writer(w, &report::render_perfetto(&report))?),
        quiet,
    )?;
    write_out(
        out.pprof,
        opts.pprof.as_ref(),
        |w| w.write_all(&report::render_pprof(&report)?),
        quiet,
    )?;
    let failed: Vec<&str> = opts
        .fail_on
        .iter()
        .filter(|v| report.count(**v) > 0)
        .map(|v| v.as_str())
        .collect();
    if !failed.is_empty() {
        eprintln!("tasktrace: --fail-on matched: {}", failed.join(", "));
        return Ok(exit::FAIL_ON);
    }
    Ok(exit::OK)
}
