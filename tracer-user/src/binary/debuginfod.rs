//! A binary's separate debug file from the debuginfod servers `DEBUGINFOD_URLS` names,
//! fetched by build-id through the system's own client library (libdebuginfod, as gdb
//! and perf fetch theirs): its cache (`DEBUGINFOD_CACHE_PATH`, default
//! `~/.cache/debuginfod_client`), its `https`, its timeouts. Loaded at run time, so that
//! tasktrace runs where it is not installed and says how to install it where it is wanted.

use std::{
    ffi::{CStr, CString, c_char, c_int, c_void},
    path::PathBuf,
};

type Begin = unsafe extern "C" fn() -> *mut c_void;
type FindDebuginfo = unsafe extern "C" fn(*mut c_void, *const u8, c_int, *mut *mut c_char) -> c_int;
type End = unsafe extern "C" fn(*mut c_void);

/// The servers `DEBUGINFOD_URLS` names, if any.
pub fn servers() -> Option<String> {
    std::env::var("DEBUGINFOD_URLS")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// The path of the debug file of the build `build_id` (hex) in the client's cache, fetched
/// first if it is not there; else why not, said for people.
pub fn find(build_id: &str) -> Result<PathBuf, String> {
    let urls = servers().ok_or("DEBUGINFOD_URLS is not set")?;
    let id = CString::new(build_id).map_err(|_| "a build-id with a NUL".to_owned())?;
    // SAFETY: dlopen/dlsym with NUL-terminated names; the three symbols have the
    // signatures libdebuginfod's header (elfutils/debuginfod.h) declares; the path the
    // library returns is malloc'ed and ours to free; the client is ended once, after use.
    unsafe {
        let lib = libc::dlopen(
            c"libdebuginfod.so.1".as_ptr(),
            libc::RTLD_NOW | libc::RTLD_LOCAL,
        );
        if lib.is_null() {
            return Err(
                "libdebuginfod.so.1 is not installed (Debian/Ubuntu: apt install \
                        libdebuginfod1; Fedora: elfutils-debuginfod-client)"
                    .into(),
            );
        }
        let sym = |name: &CStr| libc::dlsym(lib, name.as_ptr());
        let (begin, find, end) = (
            sym(c"debuginfod_begin"),
            sym(c"debuginfod_find_debuginfo"),
            sym(c"debuginfod_end"),
        );
        if begin.is_null() || find.is_null() || end.is_null() {
            return Err("libdebuginfod.so.1 lacks debuginfod_find_debuginfo".into());
        }
        let begin: Begin = std::mem::transmute(begin);
        let find: FindDebuginfo = std::mem::transmute(find);
        let end: End = std::mem::transmute(end);
        let client = begin();
        if client.is_null() {
            return Err("libdebuginfod could not start a client".into());
        }
        let mut path: *mut c_char = std::ptr::null_mut();
        // A length of 0: the build-id is given as a hex string.
        let fd = find(client, id.as_ptr().cast(), 0, &mut path);
        let found = if fd >= 0 && !path.is_null() {
            libc::close(fd);
            let p = PathBuf::from(CStr::from_ptr(path).to_string_lossy().into_owned());
            libc::free(path.cast());
            Ok(p)
        } else {
            Err(format!(
                "the debuginfod servers ({urls}) gave no debug file for build-id {build_id}: {}",
                std::io::Error::from_raw_os_error(-fd)
            ))
        };
        end(client);
        // The library stays loaded: its curl may keep state an unload would cut.
        found
    }
}
