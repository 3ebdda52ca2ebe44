//! What the running kernel offers tasktrace, found by asking it (aya's feature probes and
//! the kernel's BTF), never guessed from its version number: which way the probes attach,
//! and whether the thread sampler can find a thread's thread-locals.

use aya::sys::{UProbeMultiFeature, is_uprobe_multi_supported};

use crate::{
    error::{Error, Result},
    live::kernel_btf,
    plan::AttachMode,
};

/// The running kernel, as far as tasktrace cares.
#[derive(Clone, Debug)]
pub struct KernelFeatures {
    /// `uname -r`.
    pub release: String,
    /// `uprobe_multi` links exist (Linux 6.6+); `Err`: the probe itself failed (no
    /// privileges, most often).
    pub uprobe_multi: std::result::Result<bool, String>,
    /// Those links filter by process, not by one of its threads (6.10+, or backported).
    pub multi_pid_filter: std::result::Result<bool, String>,
    /// The kernel describes itself in BTF (`/sys/kernel/btf/vmlinux`, or the file
    /// `TASKTRACE_KERNEL_BTF` names).
    pub btf: bool,
    /// Where `task_struct` keeps a thread's TLS pointer, from that BTF.
    pub fsbase: Option<u64>,
    /// Where it keeps a thread's ids, from that BTF: the thread iterator needs them.
    pub task_ids: Option<tracer_common::TaskIds>,
}

/// Where the running kernel's `task_struct` keeps what the kernel side reads of a thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskOffsets {
    pub fsbase: Option<u64>,
    pub ids: Option<tracer_common::TaskIds>,
}

impl KernelFeatures {
    /// Asks the kernel (each feature probe loads a trivial program: needs CAP_BPF).
    pub fn probe() -> Self {
        let probe = |f| is_uprobe_multi_supported(f).map_err(|e| e.to_string());
        let uprobe_multi = probe(UProbeMultiFeature::LinkCreation);
        let multi_pid_filter = match uprobe_multi {
            Ok(true) => probe(UProbeMultiFeature::ProcessScopedPidFilter),
            ref other => other.clone(),
        };
        Self {
            release: release(),
            uprobe_multi,
            multi_pid_filter,
            btf: kernel_btf::available(),
            fsbase: kernel_btf::task_fsbase_offset(),
            task_ids: kernel_btf::task_ids_offsets(),
        }
    }

    /// What the kernel side is told of `task_struct`.
    pub fn task_offsets(&self) -> TaskOffsets {
        TaskOffsets {
            fsbase: self.fsbase,
            ids: self.task_ids,
        }
    }

    /// A kernel that offers everything (uprobe_multi with its pid filter, BTF): what a
    /// binary's analysis assumes when the host is not the question (fuzzing, tests).
    pub fn everything(release: &str) -> Self {
        Self {
            release: release.into(),
            uprobe_multi: Ok(true),
            multi_pid_filter: Ok(true),
            btf: true,
            fsbase: Some(0x1000),
            task_ids: Some(tracer_common::TaskIds {
                pid: 0x2000,
                tgid: 0x2004,
            }),
        }
    }

    /// A `uprobe_multi` link can trace one process: it exists and filters by process.
    pub fn multi_usable(&self) -> bool {
        self.uprobe_multi == Ok(true) && self.multi_pid_filter == Ok(true)
    }

    /// The attach path: the one asked for, or `uprobe_multi` where it is usable and
    /// perf-event links otherwise.
    pub fn attach_mode(&self, asked: Option<AttachMode>) -> Result<AttachMode> {
        match asked {
            Some(AttachMode::Multi) if !self.multi_usable() => Err(Error::KernelLacks {
                what: format!(
                    "--attach multi: kernel {} has no uprobe_multi link that filters by process ({})",
                    self.release,
                    self.describe_multi()
                ),
                hint: "leave --attach out: tasktrace then attaches one perf-event uprobe per site"
                    .into(),
            }),
            Some(mode) => Ok(mode),
            None if self.multi_usable() => Ok(AttachMode::Multi),
            None => Ok(AttachMode::Perf),
        }
    }

    /// What the probes found of `uprobe_multi`, for people.
    pub fn describe_multi(&self) -> String {
        match (&self.uprobe_multi, &self.multi_pid_filter) {
            (Ok(true), Ok(true)) => "uprobe_multi with a process-wide pid filter".into(),
            (Ok(true), Ok(false)) => {
                "uprobe_multi, but its pid filter follows one thread only (fixed in 6.10)".into()
            }
            (Ok(false), _) => "no uprobe_multi (added in 6.6)".into(),
            (Err(e), _) | (_, Err(e)) => format!("uprobe_multi support unknown: {e}"),
        }
    }
}

/// The kernel release (`uname -r`).
fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "(unknown)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(multi: bool, filter: bool) -> KernelFeatures {
        KernelFeatures {
            release: "6.1.0-test".into(),
            uprobe_multi: Ok(multi),
            multi_pid_filter: Ok(filter),
            btf: true,
            fsbase: Some(0x1000),
            task_ids: Some(tracer_common::TaskIds {
                pid: 0x2000,
                tgid: 0x2004,
            }),
        }
    }

    #[test]
    fn multi_only_where_it_filters_by_process() {
        assert_eq!(
            kernel(true, true).attach_mode(None).unwrap(),
            AttachMode::Multi
        );
        assert_eq!(
            kernel(true, false).attach_mode(None).unwrap(),
            AttachMode::Perf
        );
        assert_eq!(
            kernel(false, false).attach_mode(None).unwrap(),
            AttachMode::Perf
        );
        let unknown = KernelFeatures {
            uprobe_multi: Err("Operation not permitted".into()),
            multi_pid_filter: Err("Operation not permitted".into()),
            ..kernel(false, false)
        };
        assert_eq!(unknown.attach_mode(None).unwrap(), AttachMode::Perf);
    }

    #[test]
    fn a_forced_path_is_taken_or_refused_with_a_reason() {
        assert_eq!(
            kernel(true, true)
                .attach_mode(Some(AttachMode::Perf))
                .unwrap(),
            AttachMode::Perf
        );
        let err = kernel(true, false)
            .attach_mode(Some(AttachMode::Multi))
            .unwrap_err();
        assert_eq!(err.exit_code(), crate::error::exit::BAD_INPUT);
        assert!(err.to_string().contains("one thread only"), "{err}");
    }

    /// The probe answers on this host (root, as the tests run): not an error.
    #[test]
    fn the_running_kernel_answers_the_probes() {
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            if std::env::var("TASKTRACE_SKIP_BPF_TESTS").as_deref() == Ok("1") {
                eprintln!("SKIPPED: not root and TASKTRACE_SKIP_BPF_TESTS=1");
                return;
            }
            panic!("this test probes the kernel and needs root (or TASKTRACE_SKIP_BPF_TESTS=1)");
        }
        let k = KernelFeatures::probe();
        assert!(k.uprobe_multi.is_ok(), "{:?}", k.uprobe_multi);
        assert!(k.multi_pid_filter.is_ok(), "{:?}", k.multi_pid_filter);
        assert!(!k.release.is_empty());
    }
}
