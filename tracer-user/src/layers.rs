//! The stages of `src/`, in data-flow order, and the tests that hold them to it: a
//! module may use its own stage and the stages its row of `docs/design.md`'s table
//! ("Layout") allows, all of them before it, never one after. `error` is shared by all.

/// Data-flow order: tokio facts → binary → plan → live → stream → model → report → verbs.
const STAGES: &[&str] = &[
    "tokio_versions",
    "binary",
    "plan",
    "live",
    "stream",
    "model",
    "report",
    "cmd",
];

/// The top-level modules a source file names through `crate::` paths.
fn used_stages(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(k) = rest.find("crate::") {
        rest = &rest[k + 7..];
        if let Some(inner) = rest.strip_prefix('{') {
            // `crate::{a::…, b, c::{…}}`: the first segment of each top-level item.
            let (mut depth, mut start) = (1usize, true);
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => start = true,
                    c if start && depth == 1 && (c.is_ascii_lowercase() || c == '_') => {
                        let end = inner[i..]
                            .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                            .map_or(inner.len(), |e| i + e);
                        out.push(inner[i..end].to_owned());
                        start = false;
                    }
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
            }
        } else {
            let end = rest
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                .unwrap_or(rest.len());
            out.push(rest[..end].to_owned());
        }
    }
    out
}

/// `docs/design.md`'s table: the stages each stage may use besides itself.
const MAY_USE: &[(&str, &[&str])] = &[
    ("tokio_versions", &[]),
    ("binary", &["tokio_versions"]),
    ("plan", &["binary", "tokio_versions"]),
    ("live", &["plan", "binary", "tokio_versions"]),
    ("stream", &["plan", "tokio_versions"]),
    ("model", &["stream", "plan", "tokio_versions"]),
    ("report", &["model", "stream", "plan"]),
    (
        "cmd",
        &[
            "report",
            "model",
            "stream",
            "live",
            "plan",
            "binary",
            "tokio_versions",
        ],
    ),
];

fn rank(stage: &str) -> Option<usize> {
    STAGES.iter().position(|s| *s == stage)
}

#[test]
fn no_stage_reaches_back_up_the_data_flow() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    let mut violations = Vec::new();
    for stage in STAGES {
        let dir = src.join(stage);
        let files: Vec<std::path::PathBuf> = match std::fs::read_dir(&dir) {
            Ok(d) => d.flatten().map(|e| e.path()).collect(),
            Err(_) => vec![src.join(format!("{stage}.rs"))],
        };
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "rs"))
        {
            let text = std::fs::read_to_string(f).unwrap();
            checked += 1;
            let allowed = MAY_USE
                .iter()
                .find(|(s, _)| s == stage)
                .map_or(&[][..], |(_, a)| *a);
            for used in used_stages(&text) {
                if let (Some(u), Some(me)) = (rank(&used), rank(stage)) {
                    if u > me {
                        violations.push(format!("{} reaches back up to {used}", f.display()));
                    } else if u != me && !allowed.contains(&used.as_str()) {
                        violations.push(format!(
                            "{} uses {used}, which the table does not allow {stage}",
                            f.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        checked > 30,
        "only {checked} files found under {}",
        src.display()
    );
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn the_table_names_every_stage_and_only_earlier_ones() {
    assert_eq!(MAY_USE.len(), STAGES.len());
    for (stage, allowed) in MAY_USE {
        let me = rank(stage).unwrap();
        assert!(
            allowed.iter().all(|a| rank(a).is_some_and(|r| r < me)),
            "{stage}"
        );
    }
}

#[test]
fn paths_in_use_blocks_are_read() {
    let text = "use crate::{\n    binary::elf,\n    model::{a, b},\n    error::Result,\n};\nlet x = crate::report::y;";
    assert_eq!(used_stages(text), ["binary", "model", "error", "report"]);
}

/// What a string literal naming tokio's internals contains: its paths and sources, and the
/// bare names of the internals tasktrace keys on (a fragment matched against symbols).
const TOKIO_MARKERS: &[&str] = &[
    "tokio::",
    "tokio-1.",
    "transition_to",
    "BlockingSchedule",
    "OwnedTasks",
    "bind_inner",
    "bind_new_task",
    "Harness",
    "NEXT_ID",
    "CONTEXT::",
    "raw::poll",
    "wake_by_",
];

/// tokio's own names (symbols, source paths) are written in `tokio_versions/` only: a
/// string literal naming one elsewhere is tokio knowledge out of its place. Tests may
/// name them (their inputs are real symbols).
#[test]
fn only_tokio_versions_names_tokio_symbols() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src.clone()];
    let mut found = Vec::new();
    let mut checked = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "tokio_versions") {
                    stack.push(path);
                }
                continue;
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.ends_with(".rs") || name == "tests.rs" || name == "layers.rs" {
                continue;
            }
            checked += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            // Up to the file's test module: a `#[cfg(test)]` item above it is code too.
            let code = text.split("#[cfg(test)]\nmod ").next().unwrap_or("");
            for (n, line) in code.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for literal in line.split('"').skip(1).step_by(2) {
                    if TOKIO_MARKERS.iter().any(|m| literal.contains(m)) {
                        found.push(format!("{}:{}: {literal}", path.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(checked > 30, "only {checked} files under {}", src.display());
    assert!(found.is_empty(), "{found:#?}");
}
