//! The process-wide safety net for files that change or processes that die
//! under soup. What it guarantees is documented on
//! [`install_sigbus_handler`], the public entry point.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};
use std::sync::Once;

mod temps;
#[cfg(test)]
pub(crate) use temps::dead_prefix;
pub use temps::{own_prefix, parent_of, sweep_stale_temps, GREEDY_PREFIX, TEMP_PREFIX};

/// Exit status after an input changed under the memory map.
pub const SIGBUS_EXIT: i32 = 2;

/// The one line that reports an input changed while soup read it.
pub(crate) fn changed_message(path: &Path) -> String {
    format!(
        "{}: the file changed while being read (truncated or overwritten in place?); \
         nothing was written",
        path.display()
    )
}

/// What says that a file still holds what was read: its identity (device
/// and inode), size, and modification and status-change times. A write
/// into the file changes the times, a rename over its path the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// The stamp of `meta` (of an open file, or of a path).
    pub(crate) fn of(meta: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The size recorded.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Checks that the path `path` still names the file stamped, unchanged
    /// (see [`install_sigbus_handler`]); the error is the one line of
    /// [`changed_message`].
    pub(crate) fn check(&self, path: &Path) -> crate::error::Result<()> {
        match std::fs::metadata(path) {
            Ok(now) if FileStamp::of(&now) == *self => Ok(()),
            _ => Err(crate::error::Error::InputChanged {
                path: path.to_path_buf(),
            }),
        }
    }
}

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
        let line = changed_message(path) + "\n";
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
///   names carry the writer's host, PID namespace and PID
///   ([`TEMP_PREFIX`]`v2_<host>_<boot>_<ns>_<pid>_<start>_...`), and a
///   writer first removes from its output folder the temporary files of
///   processes of its own host and namespace that no longer run
///   ([`sweep_stale_temps`]). A file of a live process, or of another host
///   or container sharing the folder, is never touched.
///
/// What soup guarantees when an input changes while it runs: every writer
/// of an output (merge, prune, edit, apply-mask, shard, greedy
/// soups) checks, before the output is moved into place, that each input
/// file it read still has the device, inode, size, modification time and
/// status-change time it had when it was opened. A file truncated,
/// overwritten in place (`cp new old`, also with the same size) or
/// replaced by rename (`mv`) meanwhile stops the run with one line naming
/// it and exit status 2, and nothing is written; a truncation that a read
/// runs into ends the same way through this handler. The content digests
/// in the provenance therefore describe the files as they are. (A rewrite
/// within the same tick of the file system's clock as the write before
/// the open, on file systems with coarse timestamps, is the one change
/// the times cannot show.) `soup hash --file`, which reads rather than
/// maps, checks the same and also that it read exactly the file's size.
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
