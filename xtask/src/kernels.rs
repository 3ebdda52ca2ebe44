//! `cargo xtask kernels`: boots the kernels fleets run — Debian's own kernel packages, the
//! newest of each series the registry offers (6.1, the Debian 12 / Amazon Linux 2023
//! series without `uprobe_multi`, and 6.12) — under QEMU with virtme-ng on the host's
//! filesystem, traces the demo inside each guest, and checks the verdicts against the
//! demo's ground truth and the attach path the kernel's features must give.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

/// A guest gets this long to boot, trace and power off (software emulation: ~1 min).
const GUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// One kernel package to boot.
struct Kernel {
    /// `linux-image-6.1.0-50-amd64`.
    package: String,
    /// `6.1.0-50-amd64`: the release `uname -r` prints, and the name of its vmlinuz.
    release: String,
    /// The series, `(6, 1)`.
    series: (u32, u32),
}

impl Kernel {
    /// `uprobe_multi` with a process-wide pid filter is in 6.10 and later: what the
    /// tracer's feature probe must find, and so the attach path it must take.
    fn expected_attach(&self) -> &'static str {
        if self.series >= (6, 10) {
            "multi"
        } else {
            "perf"
        }
    }
}

pub fn run(root: &Path, tasktrace: &Path, args: &[String]) -> Result<(), String> {
    for tool in ["vng", "qemu-system-x86_64", "dpkg-deb", "apt-get"] {
        if !on_path(tool) {
            return Err(format!(
                "{tool} is missing: run scripts/setup.sh (it installs qemu-system-x86, busybox-static, kmod and virtme-ng)"
            ));
        }
    }
    let mut kernels = available_kernels()?;
    if !args.is_empty() {
        kernels.retain(|k| args.iter().any(|a| k.release.starts_with(a.as_str())));
    }
    let before = kernels.iter().any(|k| k.series < (6, 10));
    let after = kernels.iter().any(|k| k.series >= (6, 10));
    if args.is_empty() && !(before && after) {
        return Err(format!(
            "the registry should offer a kernel from before 6.10 (no usable uprobe_multi) and one from after; found {:?}",
            kernels.iter().map(|k| &k.package).collect::<Vec<_>>()
        ));
    }
    if kernels.is_empty() {
        return Err(format!("no kernel package matches {args:?}"));
    }
    let dir = root.join("target/kernels");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut failures = Vec::new();
    let mut lines = Vec::new();
    for k in &kernels {
        let vmlinuz = fetch(&dir, k)?;
        match trace_in_guest(root, tasktrace, &dir, k, &vmlinuz) {
            Ok(line) => lines.push(line),
            Err(e) => failures.push(format!("{}: {e}", k.release)),
        }
    }
    for l in &lines {
        println!("xtask: kernels: {l}");
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("kernels: {}", failures.join("\n  ")))
    }
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The newest generic amd64 image of each series the registry offers.
fn available_kernels() -> Result<Vec<Kernel>, String> {
    let search = || -> Result<String, String> {
        let out = Command::new("apt-cache")
            .args([
                "search",
                "--names-only",
                r"^linux-image-[0-9]+\.[0-9]+[.0-9]*(-[0-9]+|\+deb[0-9]+)-amd64$",
            ])
            .output()
            .map_err(|e| format!("cannot run apt-cache: {e}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let mut listing = search()?;
    if listing.trim().is_empty() {
        // A fresh machine's package lists may be empty.
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        listing = search()?;
    }
    let mut newest: std::collections::BTreeMap<(u32, u32), (Vec<u32>, Kernel)> = Default::default();
    for line in listing.lines() {
        let Some(package) = line.split_whitespace().next() else {
            continue;
        };
        let Some(release) = package.strip_prefix("linux-image-") else {
            continue;
        };
        let numbers: Vec<u32> = release
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        let [major, minor, ..] = numbers[..] else {
            continue;
        };
        let k = Kernel {
            package: package.to_owned(),
            release: release.to_owned(),
            series: (major, minor),
        };
        let entry = newest.entry((major, minor));
        match entry {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert((numbers, k));
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                if numbers > o.get().0 {
                    o.insert((numbers, k));
                }
            }
        }
    }
    Ok(newest.into_values().map(|(_, k)| k).collect())
}

/// Downloads and unpacks the package once; returns its vmlinuz.
fn fetch(dir: &Path, k: &Kernel) -> Result<PathBuf, String> {
    let tree = dir.join(&k.package);
    let vmlinuz = tree.join(format!("boot/vmlinuz-{}", k.release));
    if vmlinuz.is_file() {
        return Ok(vmlinuz);
    }
    eprintln!("xtask: kernels: apt-get download {}", k.package);
    let status = Command::new("apt-get")
        .args(["download", "-qq", &k.package])
        .current_dir(dir)
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if !status.success() {
        return Err(format!("apt-get download {} failed", k.package));
    }
    let deb = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{}_", k.package)) && n.ends_with(".deb"))
        })
        .ok_or_else(|| format!("no .deb of {} after the download", k.package))?;
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&tree)
        .status()
        .map_err(|e| format!("cannot run dpkg-deb: {e}"))?;
    if !status.success() || !vmlinuz.is_file() {
        return Err(format!(
            "unpacking {} gave no {}",
            deb.display(),
            vmlinuz.display()
        ));
    }
    // The .deb is not needed once unpacked.
    let _ = std::fs::remove_file(&deb);
    Ok(vmlinuz)
}

/// Boots the kernel, traces the demo in it and checks what came out.
fn trace_in_guest(
    root: &Path,
    tasktrace: &Path,
    dir: &Path,
    k: &Kernel,
    vmlinuz: &Path,
) -> Result<String, String> {
    let out = dir.join(format!("run-{}", k.release));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let demo = crate::fixture_binary("demo");
    let report = out.join("report.json");
    // Inside, the host's files are read-only but for the --rwdir: everything the guest
    // writes goes there, and the host reads it after the guest powered off.
    let script = format!(
        "uname -r > {o}/uname; {t} inspect {d} > {o}/inspect.txt 2>&1; \
         {t} run --duration 8s --leak-after 3s --stuck-after 1s --never-polled-after 3s \
         --json {r} -- {d} > {o}/stdout 2> {o}/stderr; echo $? > {o}/rc",
        o = out.display(),
        t = tasktrace.display(),
        d = demo.display(),
        r = report.display(),
    );
    eprintln!(
        "xtask: kernels: booting {} under QEMU (software emulation) to trace the demo",
        k.release
    );
    let started = Instant::now();
    let mut vng = Command::new("vng");
    if std::env::var("TASKTRACE_VM_KVM").as_deref() != Ok("1") {
        // This machine's /dev/kvm is a nested hypervisor that cannot run stock kernels.
        vng.arg("--disable-kvm");
    }
    vng.arg("--run")
        .arg(vmlinuz)
        .args(["--user", "root", "--memory", "4G", "--cpus", "2", "--rwdir"])
        .arg(&out)
        .args(["--exec", &script])
        .current_dir(root)
        .stdout(std::fs::File::create(out.join("vng.out")).map_err(|e| e.to_string())?)
        .stderr(std::fs::File::create(out.join("vng.err")).map_err(|e| e.to_string())?);
    let mut child = vng.spawn().map_err(|e| format!("cannot run vng: {e}"))?;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if started.elapsed() > GUEST_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the guest did not finish within {GUEST_TIMEOUT:?} (see {})",
                out.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = started.elapsed();
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    let uname = read("uname");
    if uname.trim() != k.release {
        return Err(format!(
            "the guest did not run (vng {status}, uname {:?}); its console: {}",
            uname.trim(),
            tail(&read("vng.err"), 12)
        ));
    }
    let rc = read("rc");
    if rc.trim() != "0" {
        return Err(format!(
            "tasktrace exited with {} in the guest:\n{}",
            rc.trim(),
            tail(&read("stderr"), 12)
        ));
    }
    let stdout = read("stdout");
    crate::check_demo(&stdout, &report)?;
    let r: serde_json::Value = std::fs::read(&report)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))?;
    let probes = &r["probes"];
    let attach = probes["attach"].as_str().unwrap_or("?");
    if attach != k.expected_attach() {
        return Err(format!(
            "attached through `{attach}`, but kernel {} must give `{}`",
            k.release,
            k.expected_attach()
        ));
    }
    // The kernel side's await-stack path (the verifier of each kernel passes its loops and
    // maps): every leaked task of the demo, which has no type information, is parked at a
    // waker clone the window saw.
    let tasks = r["tasks"].as_array().map(Vec::as_slice).unwrap_or_default();
    let leaked: Vec<&serde_json::Value> =
        tasks.iter().filter(|t| t["verdict"] == "leaked").collect();
    let chained = leaked
        .iter()
        .filter(|t| t["await_chain"]["source"] == "stack")
        .count();
    if r["await_chains"]["source"] != "stack" || chained != leaked.len() {
        return Err(format!(
            "await chains from the stack: {chained} of {} leaked tasks ({})",
            leaked.len(),
            r["await_chains"]
        ));
    }
    Ok(format!(
        "{}: verdicts match the ground truth, {chained} leaked tasks parked by their stacks; attach {attach}: {} sites attached in {:.0} ms, detached in {:.0} ms; guest boot + trace {:.0} s",
        k.release,
        probes["sites"],
        probes["attach_ms"].as_f64().unwrap_or(0.0),
        probes["detach_ms"].as_f64().unwrap_or(0.0),
        took.as_secs_f64()
    ))
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
