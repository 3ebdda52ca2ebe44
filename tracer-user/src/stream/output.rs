//! Output files (`-o`, `--json`, `--html`, `--perfetto`) as root may write them: created
//! under a temporary name that must not exist (`O_EXCL | O_NOFOLLOW`: a symlink planted
//! there is never followed), renamed over the destination once complete, so the file
//! is whole or absent (a planted symlink at the destination is replaced, not followed).
//! A stream is written in place instead: a character device, FIFO or socket named as the
//! destination (`/dev/null`), or the process's own standard streams (`/dev/stdout`,
//! `/proc/self/fd/N`); renaming over one would replace the device node or the symlink
//! for the whole system (as root, a regular file where `/dev/null` was). Block devices
//! are refused.

use std::{
    fs::File,
    io,
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

/// A file being written; `commit` puts it in place, dropping it uncommitted removes it.
#[derive(Debug)]
pub struct Output {
    file: Option<File>,
    partial: PathBuf,
    dest: PathBuf,
    /// Keep the partial file if the tracer stops before committing (a recording still
    /// reports up to where it was cut).
    keep_partial: bool,
    /// Written straight into a stream (`partial` is the destination): nothing to rename,
    /// nothing ever removed.
    in_place: bool,
}

/// Where a destination leads: nothing or a file (write aside, rename over), or a stream
/// to write into where it is.
fn is_stream(dest: &Path) -> io::Result<bool> {
    let Ok(meta) = std::fs::symlink_metadata(dest) else {
        return Ok(false);
    };
    let ft = meta.file_type();
    if ft.is_block_device() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a block device; reports are never written onto one",
        ));
    }
    if ft.is_char_device() || ft.is_fifo() || ft.is_socket() {
        return Ok(true);
    }
    if ft.is_symlink() {
        // The process's own streams, whatever they are (a pipe, a terminal, a file the
        // shell redirected to): replacing `/dev/stdout` would replace it for everyone.
        let target = std::fs::read_link(dest)?;
        let own = |p: &Path| {
            p.starts_with("/proc/self/fd")
                || p.starts_with("/dev/fd")
                || p == Path::new("/dev/stdout")
                || p == Path::new("/dev/stderr")
        };
        return Ok(own(dest) || own(&target));
    }
    Ok(false)
}

impl Output {
    /// Creates `DEST.partial-PID`: the whole file appears at `dest` only on `commit`.
    pub fn create(dest: &Path) -> io::Result<Self> {
        // Said now, not after the window: the rename could never replace a directory.
        if dest.is_dir() {
            return Err(io::Error::from(io::ErrorKind::IsADirectory));
        }
        if is_stream(dest)? {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(dest)?;
            return Ok(Self {
                file: Some(file),
                partial: dest.to_owned(),
                dest: dest.to_owned(),
                keep_partial: true,
                in_place: true,
            });
        }
        let mut name = dest.file_name().unwrap_or_default().to_owned();
        name.push(format!(".partial-{}", std::process::id()));
        let partial = dest.with_file_name(name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o644)
            .open(&partial)?;
        Ok(Self {
            file: Some(file),
            partial,
            dest: dest.to_owned(),
            keep_partial: false,
            in_place: false,
        })
    }

    /// The partial file stays where it is if the window does not end cleanly.
    pub fn keep_if_cut(mut self) -> Self {
        self.keep_partial = true;
        self
    }

    /// Written into a stream where it is (no partial file, no rename).
    pub fn in_place(&self) -> bool {
        self.in_place
    }

    /// Where the file is written until it is committed.
    #[cfg(test)]
    pub fn partial_path(&self) -> &Path {
        &self.partial
    }

    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("open until committed")
    }

    /// Takes the file out for a writer that owns it; `commit_path` later puts it in place.
    pub fn take_file(&mut self) -> File {
        self.file.take().expect("taken once")
    }

    /// Renames the complete file over the destination.
    pub fn commit(mut self) -> io::Result<()> {
        if self.in_place {
            return Ok(());
        }
        if let Some(f) = self.file.take() {
            f.sync_data()?;
        }
        std::fs::rename(&self.partial, &self.dest)?;
        self.keep_partial = true;
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if !self.keep_partial && !self.in_place {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tt-out-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_file_appears_whole_on_commit_and_never_before() {
        let d = dir("whole");
        let dest = d.join("report.json");
        let mut out = Output::create(&dest).unwrap();
        out.file().write_all(b"{}").unwrap();
        assert!(!dest.exists(), "nothing at the destination before commit");
        out.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"{}");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1, "no partial left");
        // Dropped uncommitted: nothing is left behind.
        let out = Output::create(&d.join("other.json")).unwrap();
        drop(out);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        std::fs::remove_dir_all(&d).ok();
    }

    /// A FIFO (standing for `/dev/null` and other devices, which a test cannot make
    /// without touching the system's) is written where it is and stays what it was.
    #[test]
    fn a_stream_is_written_in_place_and_never_replaced() {
        let d = dir("fifo");
        let fifo = d.join("pipe");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid path; mkfifo has no other precondition.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        let mut out = Output::create(&fifo).unwrap();
        assert!(out.in_place());
        out.file().write_all(b"{}").unwrap();
        out.commit().unwrap();
        assert_eq!(reader.join().unwrap(), b"{}");
        let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
        assert!(kind.is_fifo(), "still a FIFO");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1, "no partial file");
        // /dev/null, read-only checked: a stream, written in place.
        assert!(is_stream(Path::new("/dev/null")).unwrap());
        assert!(is_stream(Path::new("/dev/stdout")).unwrap());
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_planted_symlink_is_never_followed() {
        let d = dir("symlink");
        let victim = d.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        // At the destination: replaced by the new file, the victim untouched.
        let dest = d.join("report.html");
        std::os::unix::fs::symlink(&victim, &dest).unwrap();
        let mut out = Output::create(&dest).unwrap();
        out.file().write_all(b"<html>").unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!std::fs::symlink_metadata(&dest).unwrap().is_symlink());
        // A directory at the destination is refused at once.
        assert!(Output::create(&d).is_err());
        // At the partial name: refused, the victim untouched.
        let dest = d.join("trace");
        let partial = d.join(format!("trace.partial-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &partial).unwrap();
        assert!(Output::create(&dest).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        std::fs::remove_dir_all(&d).ok();
    }
}
