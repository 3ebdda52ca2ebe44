//! Prometheus metrics of a live window (`--prometheus ADDR`), in the OpenMetrics text
//! format (`prometheus-client`): the model's view now, by spawn site. Names carry the
//! `tasktrace_` prefix, base units and `_total` on counters; every series is labelled
//! with the traced executable and pid, so one scrape config serves many targets.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{model::view::Now, stream::TargetInfo};

/// At most this many sites get their own label value (largest live population first);
/// the rest are summed under `site="(other)"`, and `tasktrace_sites_capped` says how many.
pub const MAX_SITES: usize = 200;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Target {
    exe: String,
    pid: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Site {
    exe: String,
    pid: u32,
    site: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteState {
    exe: String,
    pid: u32,
    site: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteCertainty {
    exe: String,
    pid: u32,
    site: String,
    certainty: &'static str,
}

/// A label value as the exposition format needs it: prometheus-client 0.24 writes label
/// values as given, and a path or site with a quote, backslash or newline (strings from
/// the target) would make the whole scrape unparsable.
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// What the window's counters say besides the model.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// Probe records drained so far (each a probe hit).
    pub probe_hits: u64,
    pub lost_events: u64,
}

/// One traced process as the metrics see it.
pub struct View<'a> {
    pub now: &'a Now,
    pub target: &'a TargetInfo,
    pub counters: Counters,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Exe {
    exe: String,
}

/// The metrics text of every traced process; `attach_errors`: failed attaches by
/// executable (the agent's; empty for one window).
pub fn render_metrics(
    views: &[View<'_>],
    attach_errors: &std::collections::BTreeMap<String, u64>,
) -> String {
    let mut registry = Registry::with_prefix("tasktrace");
    let live = Family::<SiteState, Gauge>::default();
    let leaked = Family::<SiteCertainty, Gauge>::default();
    let stuck = Family::<Site, Gauge>::default();
    let never_polled = Family::<Site, Gauge>::default();
    let spawned = Family::<Site, Counter>::default();
    let hits = Family::<Target, Counter>::default();
    let lost = Family::<Target, Counter>::default();
    let capped = Family::<Target, Gauge>::default();
    let errors = Family::<Exe, Counter>::default();
    let targets = Gauge::<i64>::default();
    registry.register(
        "live_tasks",
        "Tasks alive now, by spawn site and state (scheduled, running, idle)",
        live.clone(),
    );
    registry.register(
        "leaked_tasks",
        "Tasks leaked now (alive, idle past --leak-after or unable to ever run again), by certainty",
        leaked.clone(),
    );
    registry.register(
        "stuck_tasks",
        "Tasks stuck now (a poll blocking its thread, or woken and not run)",
        stuck.clone(),
    );
    registry.register(
        "never_polled_tasks",
        "Tasks never polled past --never-polled-after",
        never_polled.clone(),
    );
    registry.register(
        "spawned_tasks",
        "Tasks spawned since tracing began (and those alive before it)",
        spawned.clone(),
    );
    registry.register("probe_hits", "Probe records received", hits.clone());
    registry.register(
        "lost_events",
        "Events the kernel could not queue (the ring was full)",
        lost.clone(),
    );
    registry.register(
        "sites_capped",
        "Spawn sites summed under site=\"(other)\" beyond the label cap",
        capped.clone(),
    );
    registry.register(
        "attach_errors",
        "Processes tasktrace could not attach to, by executable",
        errors.clone(),
    );
    registry.register("targets", "Processes traced now", targets.clone());
    targets.set(views.len() as i64);
    for (exe, n) in attach_errors {
        errors.get_or_create(&Exe { exe: label(exe) }).inc_by(*n);
    }
    for v in views {
        let (now, target, counters) = (v.now, v.target, v.counters);
        let exe = label(&target.binary);
        let pid = target.pid;
        let t = Target {
            exe: exe.clone(),
            pid,
        };
        hits.get_or_create(&t).inc_by(counters.probe_hits);
        lost.get_or_create(&t).inc_by(counters.lost_events);
        let mut sites: Vec<_> = now.sites.iter().collect();
        sites.sort_by_key(|s| std::cmp::Reverse(s.live + s.created));
        capped
            .get_or_create(&t)
            .set(sites.len().saturating_sub(MAX_SITES) as i64);
        for (i, s) in sites.iter().enumerate() {
            let name = if i < MAX_SITES {
                label(s.site.as_deref().unwrap_or("(unknown)"))
            } else {
                "(other)".to_owned()
            };
            let site = Site {
                exe: exe.clone(),
                pid,
                site: name.clone(),
            };
            for (state, n) in [
                ("scheduled", s.scheduled),
                ("running", s.running),
                ("idle", s.idle),
            ] {
                live.get_or_create(&SiteState {
                    exe: exe.clone(),
                    pid,
                    site: name.clone(),
                    state,
                })
                .inc_by(n as i64);
            }
            for (certainty, n) in [
                ("definite", s.leaked_definite),
                ("suspected", s.leaked_suspected),
            ] {
                leaked
                    .get_or_create(&SiteCertainty {
                        exe: exe.clone(),
                        pid,
                        site: name.clone(),
                        certainty,
                    })
                    .inc_by(n as i64);
            }
            stuck.get_or_create(&site).inc_by(s.stuck as i64);
            never_polled
                .get_or_create(&site)
                .inc_by(s.never_polled as i64);
            spawned.get_or_create(&site).inc_by(s.created);
        }
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::view::SiteNow;

    #[test]
    fn sites_become_labelled_series_with_prefix_units_and_totals() {
        let now = Now {
            at_ns: 0,
            live: 9,
            sites: vec![
                SiteNow {
                    site: Some("src/a.rs:1:2".into()),
                    live: 7,
                    idle: 6,
                    running: 1,
                    created: 40,
                    leaked_suspected: 5,
                    leaked_definite: 1,
                    ..Default::default()
                },
                SiteNow {
                    site: None,
                    live: 2,
                    scheduled: 2,
                    created: 2,
                    never_polled: 2,
                    ..Default::default()
                },
            ],
            reading: None,
            tasks_seen: 42,
        };
        let target = TargetInfo {
            pid: 42,
            pid_in_namespace: None,
            binary: "/srv/app \"x\"\n\\".into(),
            build_id: None,
            tokio_version: None,
        };
        let errors = [("/usr/bin/other".to_owned(), 2)].into_iter().collect();
        let text = render_metrics(
            &[View {
                now: &now,
                target: &target,
                counters: Counters {
                    probe_hits: 100,
                    lost_events: 3,
                },
            }],
            &errors,
        );
        let exe = r#"exe="/srv/app \"x\"\n\\",pid="42""#;
        for line in [
            format!(r#"tasktrace_live_tasks{{{exe},site="src/a.rs:1:2",state="idle"}} 6"#),
            format!(r#"tasktrace_live_tasks{{{exe},site="(unknown)",state="scheduled"}} 2"#),
            format!(
                r#"tasktrace_leaked_tasks{{{exe},site="src/a.rs:1:2",certainty="suspected"}} 5"#
            ),
            format!(r#"tasktrace_never_polled_tasks{{{exe},site="(unknown)"}} 2"#),
            format!(r#"tasktrace_spawned_tasks_total{{{exe},site="src/a.rs:1:2"}} 40"#),
            format!(r#"tasktrace_lost_events_total{{{exe}}} 3"#),
            format!(r#"tasktrace_probe_hits_total{{{exe}}} 100"#),
            format!(r#"tasktrace_sites_capped{{{exe}}} 0"#),
            r#"tasktrace_attach_errors_total{exe="/usr/bin/other"} 2"#.to_owned(),
            "tasktrace_targets 1".to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
