//! The process to trace: an existing pid, or a command tasktrace launches itself, held
//! before its first instruction until the probes are attached.

use std::{
    ffi::{CString, OsString},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

pub struct Target {
    pub pid: u32,
    /// Path that names the target's executable file, for reading it and attaching.
    pub exe: PathBuf,
    /// The executable as the user knows it.
    pub display: String,
}

impl Target {
    /// An existing process. Its executable is read through `/proc/PID/exe`, which reaches
    /// the file even inside another mount namespace (containers) or after it was deleted.
    pub fn from_pid(pid: u32) -> Result<Self> {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        if pid == 0 || !proc_dir.exists() {
            return Err(Error::NoSuchProcess(pid));
        }
        let exe = proc_dir.join("exe");
        let display = match std::fs::read_link(&exe) {
            Ok(p) => p.display().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(Error::privileges(format!("reading {}: {e}", exe.display())));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if proc_dir.exists() {
                    return Err(Error::NotElf {
                        path: exe,
                        why: "the process has no executable (a kernel thread, or a zombie)".into(),
                    });
                }
                return Err(Error::NoSuchProcess(pid));
            }
            Err(e) => return Err(Error::io_for(&exe, e)),
        };
        Ok(Self { pid, exe, display })
    }

    /// The process's pid in its own pid namespace (`NSpid` of `/proc/PID/status`), when it
    /// lives in one other than ours: what a container calls it.
    pub fn pid_in_namespace(&self) -> Option<u32> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        ns_pid(&status).filter(|&p| p != self.pid)
    }

    /// Whether the process is still running (not gone, not a zombie).
    pub fn is_alive(&self) -> bool {
        self.run_state() != RunState::Gone
    }

    /// What `/proc/PID/stat` says of the process.
    pub fn run_state(&self) -> RunState {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return RunState::Gone;
        };
        // The state follows the parenthesised command name.
        match stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
        {
            Some('Z' | 'X') | None => RunState::Gone,
            // Stopped by a signal (T) or at a tracer's stop (t).
            Some('T' | 't') => RunState::Stopped,
            Some(_) => RunState::Running,
        }
    }
}

/// The innermost pid of an `NSpid:` line (the pid as each nested namespace sees it).
fn ns_pid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// Whether a process runs, is stopped, or is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Running,
    Stopped,
    Gone,
}

/// A command started by tasktrace, stopped before `exec` until [`Launched::release`].
pub struct Launched {
    pub pid: u32,
    release_fd: Option<i32>,
    exit_status: Option<i32>,
}

/// Forks a child that waits on a pipe before it execs `cmd`, so that probes can be
/// attached first and the trace sees the program from its first instruction.
pub fn launch(cmd: &[OsString]) -> Result<(Target, Launched)> {
    let program = cmd
        .first()
        .ok_or_else(|| Error::CommandNotFound("(empty command)".into()))?;
    let path = resolve_program(Path::new(program))
        .ok_or_else(|| Error::CommandNotFound(program.to_string_lossy().into_owned()))?;
    let nul = |e: std::ffi::NulError| Error::Launch {
        what: "an argument contains a NUL byte",
        err: e.into(),
    };
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(nul)?;
    let c_args: Vec<CString> = cmd
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<std::result::Result<_, _>>()
        .map_err(nul)?;
    let mut argv: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());

    let mut fds = [0i32; 2];
    // SAFETY: plain syscalls on owned integers; the child only makes async-signal-safe
    // calls (close, read, execv, _exit) on data prepared before fork.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(Error::Launch {
                what: "pipe2",
                err: std::io::Error::last_os_error(),
            });
        }
        let pid = libc::fork();
        if pid < 0 {
            return Err(Error::Launch {
                what: "fork",
                err: std::io::Error::last_os_error(),
            });
        }
        if pid == 0 {
            libc::close(fds[1]);
            let mut b = 0u8;
            // EOF instead of the go byte means tasktrace died: never run untraced.
            if libc::read(fds[0], (&mut b as *mut u8).cast(), 1) != 1 {
                libc::_exit(126);
            }
            libc::execv(c_path.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
        libc::close(fds[0]);
        let target = Target {
            pid: pid as u32,
            exe: path.clone(),
            display: path.display().to_string(),
        };
        Ok((
            target,
            Launched {
                pid: pid as u32,
                release_fd: Some(fds[1]),
                exit_status: None,
            },
        ))
    }
}

impl Launched {
    /// Lets the child exec the command.
    pub fn release(&mut self) {
        if let Some(fd) = self.release_fd.take() {
            // SAFETY: our own pipe end.
            unsafe {
                libc::write(fd, b"g".as_ptr().cast(), 1);
                libc::close(fd);
            }
        }
    }

    /// Reaps the child if it exited; returns its status (exit code, or 128+signal).
    pub fn poll_exit(&mut self) -> Option<i32> {
        if self.exit_status.is_none() {
            let mut status = 0;
            // SAFETY: waiting on our own child.
            let r = unsafe { libc::waitpid(self.pid as i32, &mut status, libc::WNOHANG) };
            if r == self.pid as i32 {
                self.exit_status = Some(if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                });
            } else if r < 0 {
                self.exit_status = Some(-1);
            }
        }
        self.exit_status
    }

    /// Stops the command: SIGTERM, then SIGKILL after a grace period.
    pub async fn terminate(&mut self) {
        self.release_fd.take().map(|fd| unsafe { libc::close(fd) });
        if self.poll_exit().is_some() {
            return;
        }
        // SAFETY: signalling our own, not yet reaped, child.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        for _ in 0..40 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            if self.poll_exit().is_some() {
                return;
            }
        }
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        while self.poll_exit().is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        // Never leave a held child behind: closing the pipe makes it exit without running.
        if let Some(fd) = self.release_fd.take() {
            unsafe { libc::close(fd) };
        }
        let _ = self.poll_exit();
    }
}

fn resolve_program(program: &Path) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = if program.as_os_str().as_bytes().contains(&b'/') {
        vec![program.to_owned()]
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(program)).collect())
            .unwrap_or_default()
    };
    candidates
        .into_iter()
        .find(|c| is_executable(c))
        .and_then(|c| std::fs::canonicalize(c).ok())
}

fn is_executable(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) on a valid C string.
    p.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_innermost_namespace_pid_is_the_containers_view() {
        assert_eq!(ns_pid("Name:\tx\nNSpid:\t4242\t1\n"), Some(1));
        assert_eq!(ns_pid("NSpid:\t4242\n"), Some(4242));
        assert_eq!(ns_pid("Name:\tx\n"), None);
        let me = Target::from_pid(std::process::id()).unwrap();
        assert_eq!(me.pid_in_namespace(), None, "not in a namespace of its own");
        assert_eq!(me.run_state(), RunState::Running);
    }
}
