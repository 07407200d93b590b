//! The process-wide safety net for files that change or processes that die
//! under soup. What it guarantees is documented on
//! [`install_sigbus_handler`], the public entry point.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};
use std::sync::Once;

/// Exit status after an input changed under the memory map.
pub const SIGBUS_EXIT: i32 = 2;

/// Names of temporary outputs start with this, then the writer's PID and a
/// dash.
pub const TEMP_PREFIX: &str = ".soup-tmp-";

/// Names of greedy-soup trial folders start with this, then the writer's
/// PID and a dash.
pub const GREEDY_PREFIX: &str = ".soup-greedy-";

const SLOTS: usize = 4096;
const FREE: u8 = 0;
const BUSY: u8 = 1;
const READY: u8 = 2;

/// One registry entry: an address range with its message, or a temporary
/// path (`start` 1 for a folder, 0 for a file).
struct Slot {
    state: AtomicU8,
    start: AtomicUsize,
    end: AtomicUsize,
    text: AtomicPtr<u8>,
    len: AtomicUsize,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            state: AtomicU8::new(FREE),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            text: AtomicPtr::new(std::ptr::null_mut()),
            len: AtomicUsize::new(0),
        }
    }
}

static MAPS: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
static TEMPS: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
static PREFIX: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static PREFIX_LEN: AtomicUsize = AtomicUsize::new(0);

/// Leaks `bytes` so that the signal handler can read them at any time.
fn leak(bytes: Vec<u8>) -> (*mut u8, usize) {
    let boxed = bytes.into_boxed_slice();
    let len = boxed.len();
    (Box::leak(boxed).as_mut_ptr(), len)
}

fn claim(table: &'static [Slot; SLOTS], start: usize, end: usize, text: Vec<u8>) -> Option<usize> {
    let (ptr, len) = leak(text);
    for (i, slot) in table.iter().enumerate() {
        if slot
            .state
            .compare_exchange(FREE, BUSY, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            slot.start.store(start, Ordering::Relaxed);
            slot.end.store(end, Ordering::Relaxed);
            slot.text.store(ptr, Ordering::Relaxed);
            slot.len.store(len, Ordering::Relaxed);
            slot.state.store(READY, Ordering::Release);
            return Some(i);
        }
    }
    // A full table only means this entry is not covered by the handler.
    None
}

fn release(table: &'static [Slot; SLOTS], id: Option<usize>) {
    if let Some(i) = id {
        table[i].state.store(FREE, Ordering::Release);
    }
}

/// A mapped file known to the SIGBUS handler, until dropped.
#[derive(Debug)]
pub struct MappedGuard(Option<usize>);

impl MappedGuard {
    /// Registers the mapped bytes `map` of the file `path`.
    pub fn new(map: &[u8], path: &Path) -> MappedGuard {
        let start = map.as_ptr() as usize;
        let line = format!(
            "{}: the file changed while being read (truncated or overwritten in place?); \
             nothing was written\n",
            path.display()
        );
        MappedGuard(claim(&MAPS, start, start + map.len(), line.into_bytes()))
    }
}

impl Drop for MappedGuard {
    fn drop(&mut self) {
        release(&MAPS, self.0);
    }
}

/// A temporary file or folder that the SIGBUS handler removes, until
/// dropped. Register a folder before the files in it: the handler removes
/// files first, then folders.
#[derive(Debug)]
pub struct TempGuard(Option<usize>);

impl TempGuard {
    /// Registers the temporary file `path`.
    pub fn file(path: &Path) -> TempGuard {
        Self::new(path, 0)
    }
    /// Registers the temporary (and by then empty) folder `path`.
    pub fn folder(path: &Path) -> TempGuard {
        Self::new(path, 1)
    }
    fn new(path: &Path, kind: usize) -> TempGuard {
        let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
            return TempGuard(None);
        };
        TempGuard(claim(&TEMPS, kind, 0, c.into_bytes_with_nul()))
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        release(&TEMPS, self.0);
    }
}

/// Installs the SIGBUS handler, once per process. `prefix` starts every
/// message it writes (`"soup: error: "`).
///
/// - **Inputs that shrink under the memory map.** Reading a mapped page that
///   lies past the end of a file truncated by another process raises SIGBUS,
///   which would kill the process without a word and leave its temporary
///   files behind. Every mapped file is registered here (address range and a
///   message naming it, formatted in advance), and so is every temporary
///   output. The handler uses only
///   async-signal-safe calls: it writes the message of the file the faulting
///   address belongs to, unlinks the registered temporary files and folders,
///   and ends the process with [`SIGBUS_EXIT`] through `_exit(2)`.
/// - **Processes killed outright.** SIGKILL cannot be caught, so temporary
///   names carry the writer's PID ([`TEMP_PREFIX`]`<pid>-...`), and a writer
///   first removes the temporary files of processes that no longer exist
///   from its output folder ([`sweep_stale_temps`]). A file of a live process
///   is never touched.
///
/// What soup guarantees when an input changes while it runs: a file
/// truncated or replaced in place (`truncate`, `cp new old`) either reads
/// consistently to the end, or the run stops with one line naming the file
/// and exit status 2, leaving no temporary file. A file replaced by rename
/// (`mv`, atomic writers) is not seen at all: soup keeps reading the old
/// inode. Bytes rewritten in place without a change of size cannot be
/// detected; the content digests in the provenance then describe what was
/// read.
///
/// Registered messages and paths are small and are never freed (a handler
/// might be reading them); a process that opens many thousands of files
/// keeps a few hundred bytes per file.
pub fn install_sigbus_handler(prefix: &'static str) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let (ptr, len) = leak(prefix.as_bytes().to_vec());
        PREFIX_LEN.store(len, Ordering::Relaxed);
        PREFIX.store(ptr, Ordering::Release);
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value;
        // the handler has the three-argument signature SA_SIGINFO requires
        // and only makes async-signal-safe calls.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                on_sigbus;
            action.sa_sigaction = handler as usize;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
        }
    });
}

/// Writes `len` bytes at `ptr` to standard error, ignoring failures.
///
/// # Safety
/// `ptr` must point to `len` readable bytes (or be null).
unsafe fn write_raw(ptr: *const u8, len: usize) {
    if !ptr.is_null() {
        // SAFETY: the caller guarantees the bytes; write(2) is async-signal-safe.
        unsafe { libc::write(2, ptr.cast(), len) };
    }
}

extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    // SAFETY (all raw reads below): slot texts are leaked, never freed, and
    // published with Release before the slot becomes READY.
    unsafe {
        write_raw(
            PREFIX.load(Ordering::Acquire),
            PREFIX_LEN.load(Ordering::Relaxed),
        );
        let mut named = false;
        for slot in &MAPS {
            if slot.state.load(Ordering::Acquire) == READY
                && slot.start.load(Ordering::Relaxed) <= addr
                && addr < slot.end.load(Ordering::Relaxed)
            {
                write_raw(
                    slot.text.load(Ordering::Relaxed),
                    slot.len.load(Ordering::Relaxed),
                );
                named = true;
                break;
            }
        }
        if !named {
            let text =
                b"bus error: a memory-mapped file changed while being read; nothing was written\n";
            write_raw(text.as_ptr(), text.len());
        }
        for kind in [0usize, 1] {
            for slot in &TEMPS {
                if slot.state.load(Ordering::Acquire) == READY
                    && slot.start.load(Ordering::Relaxed) == kind
                {
                    let path = slot.text.load(Ordering::Relaxed) as *const libc::c_char;
                    if kind == 0 {
                        libc::unlink(path);
                    } else {
                        libc::rmdir(path);
                    }
                }
            }
        }
        libc::_exit(SIGBUS_EXIT);
    }
}

/// A fresh temporary path beside `target` for a writer that creates the
/// file itself: `.soup-tmp-<pid>-<n>-<file name>`, unique within the
/// process. Call [`sweep_stale_temps`] on the folder first.
pub fn temp_path_for(target: &Path) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_of(target).join(format!("{TEMP_PREFIX}{}-{n}-{name}", std::process::id()))
}

/// The prefix of this process's temporary names with `kind`
/// ([`TEMP_PREFIX`] or [`GREEDY_PREFIX`]): `<kind><pid>-`.
pub fn own_prefix(kind: &str) -> String {
    format!("{kind}{}-", std::process::id())
}

/// The folder a path lives in (`.` for a bare name).
pub fn parent_of(target: &Path) -> &Path {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The PID a temporary name of soup's carries, if `name` is one.
fn temp_owner(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix(TEMP_PREFIX)
        .or_else(|| name.strip_prefix(GREEDY_PREFIX))?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok()
}

/// Removes from `folder` the temporary files and folders that soup's
/// writers (soup, the trainer) left when they were killed: names starting
/// with [`TEMP_PREFIX`] or [`GREEDY_PREFIX`] whose PID is not a live
/// process. Returns the paths removed. Does nothing where live processes
/// cannot be told apart (no `/proc`). Processes in another PID namespace
/// sharing the folder look dead; do not share output folders across
/// containers while writing.
pub fn sweep_stale_temps(folder: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    if !Path::new("/proc/self").exists() {
        return removed;
    }
    let Ok(entries) = std::fs::read_dir(folder) else {
        return removed;
    };
    let own = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = temp_owner(&name.to_string_lossy()) else {
            continue;
        };
        if pid == own || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let gone = if meta.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if gone.is_ok() {
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_removes_dead_writers_temps_only() {
        let dir = tempfile::tempdir().unwrap();
        // PID 0x7fff_fff0 cannot exist (pid_max is at most 2^22).
        let dead = dir
            .path()
            .join(format!("{TEMP_PREFIX}2147483632-x.safetensors"));
        let dead_dir = dir.path().join(format!("{GREEDY_PREFIX}2147483632-abc"));
        let live = dir
            .path()
            .join(format!("{TEMP_PREFIX}{}-y.safetensors", std::process::id()));
        let init = dir.path().join(format!("{TEMP_PREFIX}1-z"));
        let other = dir.path().join(".soup-tmp-notapid");
        let user = dir.path().join("model.safetensors");
        for f in [&dead, &live, &init, &other, &user] {
            std::fs::write(f, b"x").unwrap();
        }
        std::fs::create_dir(&dead_dir).unwrap();
        std::fs::write(dead_dir.join("trial.safetensors"), b"x").unwrap();
        let removed = sweep_stale_temps(dir.path());
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(!dead.exists() && !dead_dir.exists());
        assert!(live.exists() && init.exists() && other.exists() && user.exists());
    }

    #[test]
    fn temp_paths_carry_the_pid_and_differ() {
        let a = temp_path_for(Path::new("run/x.safetensors"));
        let b = temp_path_for(Path::new("run/x.safetensors"));
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(temp_owner(&name), Some(std::process::id()));
        assert!(name.ends_with("-x.safetensors"));
        assert_eq!(a.parent().unwrap(), Path::new("run"));
    }
}
