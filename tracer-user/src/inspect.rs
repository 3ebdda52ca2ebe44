//! `tasktrace inspect`: what a binary contains and what tasktrace can see in it — tokio
//! version, build traits, the attach plan with each event's probe sites and instance
//! counts, and which verdicts are unavailable and why. Attaches nothing.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use serde::Serialize;
use tracer_common::{EventKind, cookie_kind};

use crate::{
    elf::BuildTraits,
    error::{Error, Result},
    plan::Plan,
    tokio_versions,
};

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub binary: String,
    pub build_id: Option<String>,
    pub tokio_version: Option<String>,
    pub layout_file: Option<String>,
    pub traits: BuildTraits,
    /// Event → probe sites (function → instance count).
    pub plan: BTreeMap<&'static str, BTreeMap<&'static str, usize>>,
    pub probe_sites: usize,
    pub absent_optional: Vec<&'static str>,
    pub unavailable: Vec<Unavailable>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Unavailable {
    pub what: &'static str,
    pub why: String,
}

pub fn inspect(display: &str, exe: &Path, symbols: Option<&Path>) -> Result<Inspection> {
    let (bin, _) = crate::session::read_binary(exe, display, symbols)?;
    let mut out = Inspection {
        binary: display.to_owned(),
        build_id: bin.build_id.clone(),
        tokio_version: bin.tokio_version.map(|v| v.to_string()),
        layout_file: None,
        traits: bin.traits.clone(),
        plan: BTreeMap::new(),
        probe_sites: 0,
        absent_optional: Vec::new(),
        unavailable: Vec::new(),
        warnings: Vec::new(),
    };
    let selection = match tokio_versions::select(bin.tokio_version) {
        Ok(s) => s,
        Err(why) => {
            out.unavailable.push(Unavailable {
                what: "all verdicts",
                why,
            });
            return Ok(out);
        }
    };
    out.warnings.extend(selection.warning);
    out.layout_file = Some(format!(
        "tokio {}+ (tested to {})",
        selection.knowledge.first, selection.knowledge.newest_tested
    ));
    match Plan::for_binary(Path::new(display), &bin, selection.knowledge, true) {
        Ok(plan) => {
            for site in plan.entry.iter().chain(&plan.ret) {
                let kind =
                    EventKind::from_u8(cookie_kind(site.cookie)).map_or("unknown", EventKind::name);
                *out.plan
                    .entry(kind)
                    .or_default()
                    .entry(site.function)
                    .or_default() += 1;
            }
            out.probe_sites = plan.site_count();
            out.absent_optional = plan.absent.clone();
            if !out.plan.contains_key("spawn_call") {
                out.warnings.push(
                    "no #[track_caller] spawn function survived inlining: spawn sites are named by \
                     unwinding (caller function+offset), not file:line"
                        .into(),
                );
            }
        }
        Err(
            e @ (Error::Stripped { .. } | Error::NotTokio { .. } | Error::MissingProbeSites { .. }),
        ) => {
            let why = e.to_string().lines().next().unwrap_or_default().to_owned();
            for what in ["leaked", "stuck", "never_polled", "spawn sites"] {
                out.unavailable.push(Unavailable {
                    what,
                    why: why.clone(),
                });
            }
        }
        Err(e) => return Err(e),
    }
    Ok(out)
}

pub fn render_text(i: &Inspection) -> String {
    let mut s = String::new();
    let yes = |b: bool| if b { "yes" } else { "no" };
    let _ = writeln!(s, "binary:        {}", i.binary);
    let _ = writeln!(
        s,
        "build-id:      {}",
        i.build_id.as_deref().unwrap_or("none")
    );
    let _ = writeln!(
        s,
        "tokio:         {}",
        i.tokio_version.as_deref().unwrap_or("not found")
    );
    let _ = writeln!(
        s,
        "layout file:   {}",
        i.layout_file.as_deref().unwrap_or("none")
    );
    let t = &i.traits;
    let _ = writeln!(
        s,
        "build:         symbols {}, DWARF {}, PIE {}, mangling {}, panic {}, LTO {}",
        yes(t.symbols),
        yes(t.dwarf),
        yes(t.pie),
        t.mangling.unwrap_or("-"),
        t.panic.unwrap_or("-"),
        t.lto_likely
            .map_or("-", |l| if l { "likely" } else { "no" })
    );
    let _ = writeln!(s, "attach plan:   {} probe sites", i.probe_sites);
    for (event, sites) in &i.plan {
        for (function, n) in sites {
            let _ = writeln!(
                s,
                "  {event:<15} {function} ({n} instance{})",
                if *n == 1 { "" } else { "s" }
            );
        }
    }
    for a in &i.absent_optional {
        let _ = writeln!(s, "  (absent, optional) {a}");
    }
    if i.unavailable.is_empty() {
        let _ = writeln!(s, "verdicts:      all available");
    }
    for u in &i.unavailable {
        let _ = writeln!(s, "unavailable:   {} — {}", u.what, u.why);
    }
    for w in &i.warnings {
        let _ = writeln!(s, "warning:       {w}");
    }
    s
}
