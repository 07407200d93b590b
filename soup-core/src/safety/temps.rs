//! Names of temporary files and folders, and the sweep of those left by
//! killed writers.
//!
//! A temporary name says who owns it: `<kind>v2_<host>_<boot>_<ns>_<pid>_<start>_<random>`,
//! where `kind` is [`TEMP_PREFIX`] or [`GREEDY_PREFIX`], `host` the host
//! name (verbatim when it is at most 40 characters of letters, digits,
//! dots and dashes, otherwise `+` and 16 hex digits of its sha256), `boot`
//! the first 8 hex digits of the kernel's boot id, `ns` the inode of the
//! writer's PID namespace, `pid` the writer's PID, `start` the writer's
//! start time in clock ticks after boot (field 22 of `/proc/<pid>/stat`),
//! and `random` the characters that make the name unique and
//! unpredictable.
//!
//! An output folder may be shared between machines or containers (the
//! candidates of a phase written into one folder of a cluster file
//! system), so a PID alone says nothing: the same number names another
//! process, or none, on another host or in another PID namespace. The
//! sweep therefore removes only what is provably stale: a name of this
//! host, this boot and this PID namespace whose process is gone (no
//! `/proc/<pid>`, or a process there that started at another time, its PID
//! reused), and owned by the sweeping user (where `/proc` hides other
//! users' processes, theirs would look gone). Everything else is left
//! alone: names of other users, hosts, boots or namespaces, names that do
//! not parse, and names of the format before this one (`<kind><pid>-...`,
//! which does not say where it was written); remove those by hand once
//! their writers are known to be gone. Where the mounted `/proc` is not
//! this process's PID namespace, or its own start time cannot be read, a
//! writer names its files with the place `+none_0_0`, which no sweep
//! removes, and sweeps nothing itself.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// Names of temporary outputs start with this, then the writer's identity
/// (see [`own_prefix`]).
pub const TEMP_PREFIX: &str = ".soup-tmp-";

/// Names of greedy-soup trial folders start with this, then the writer's
/// identity (see [`own_prefix`]).
pub const GREEDY_PREFIX: &str = ".soup-greedy-";

/// The version tag after the kind: names of the older format start with
/// the PID, so an older soup never parses a name of this format as its own.
const VERSION: &str = "v2";

/// The longest host name used verbatim.
const HOST_MAX: usize = 40;

/// Where this process runs: everything of a name's owner but the process.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    host: String,
    boot: String,
    ns: u64,
}

/// The owner of a temporary name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    place: Place,
    pid: u32,
    start: u64,
}

/// `host` as it appears in names: filesystem-safe, short, and different
/// for different host names.
fn host_tag(host: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
    if !host.is_empty() && host.len() <= HOST_MAX && host.chars().all(plain) {
        return host.to_string();
    }
    let digest = Sha256::digest(host.as_bytes());
    format!("+{}", crate::hash::hex(&digest[..8]))
}

/// This process's place, or `None` where it cannot be told (no `/proc`).
fn own_place() -> Option<&'static Place> {
    static PLACE: OnceLock<Option<Place>> = OnceLock::new();
    PLACE
        .get_or_init(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
            let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
            let boot: String = boot
                .chars()
                .filter(char::is_ascii_hexdigit)
                .take(8)
                .collect();
            let ns = std::fs::metadata("/proc/self/ns/pid").ok()?.ino();
            // The /proc mounted here must be this process's PID namespace
            // (not the host's, bind-mounted into a container), or the PIDs
            // that the sweep looks up in it are other processes.
            if !proc_is_own() {
                return None;
            }
            (boot.len() == 8).then(|| Place {
                host: host_tag(host.trim_end_matches('\n')),
                boot,
                ns,
            })
        })
        .as_ref()
}

/// Whether `/proc/self` names this process by the PID it knows itself by:
/// false where the mounted `/proc` belongs to another PID namespace.
fn proc_is_own() -> bool {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str()?.parse::<u32>().ok())
        == Some(std::process::id())
}

/// The start time of process `pid` (clock ticks after boot), or `None`
/// where it cannot be read.
fn start_time(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count
    // from the last `)`. Field 3 comes first, so field 22 is the 20th.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The prefix of this process's temporary names with `kind`
/// ([`TEMP_PREFIX`] or [`GREEDY_PREFIX`]):
/// `<kind>v2_<host>_<boot>_<ns>_<pid>_<start>_`, to which the creator adds
/// random characters (see the module documentation). Where `/proc` is
/// missing, the place is `+none_0_0`, which no sweep ever removes.
pub fn own_prefix(kind: &str) -> String {
    let pid = std::process::id();
    // Without its own start time a name could not be told from one of a
    // reused PID: such names get the place no sweep removes.
    let start = start_time("self");
    match own_place().zip(start) {
        Some((p, start)) => format!(
            "{kind}{VERSION}_{}_{}_{}_{pid}_{start}_",
            p.host, p.boot, p.ns
        ),
        None => format!("{kind}{VERSION}_+none_0_0_{pid}_0_"),
    }
}

/// [`own_prefix`] with a PID that no process has (pid_max is at most
/// 2^22): the name of a writer of this host that is gone.
#[cfg(test)]
pub(crate) fn dead_prefix(kind: &str) -> String {
    let own = own_prefix(kind);
    let mut fields: Vec<&str> = own.split('_').collect();
    let n = fields.len();
    fields[n - 3] = "2147483632";
    fields.join("_")
}

/// The folder a path lives in (`.` for a bare name).
pub fn parent_of(target: &Path) -> &Path {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The owner a temporary name of soup's states, if `name` is one in the
/// current format.
fn owner(name: &str) -> Option<Owner> {
    let rest = name
        .strip_prefix(TEMP_PREFIX)
        .or_else(|| name.strip_prefix(GREEDY_PREFIX))?
        .strip_prefix(VERSION)?
        .strip_prefix('_')?;
    let mut fields = rest.splitn(6, '_');
    let host = fields.next().filter(|h| !h.is_empty())?;
    let boot = fields.next()?;
    let ns = fields.next()?.parse().ok()?;
    let pid = fields.next()?.parse().ok()?;
    let start = fields.next()?.parse().ok()?;
    fields.next()?;
    Some(Owner {
        place: Place {
            host: host.to_string(),
            boot: boot.to_string(),
            ns,
        },
        pid,
        start,
    })
}

/// Whether the writer `owner` provably no longer runs, seen from `here`.
fn is_stale(owner: &Owner, here: &Place) -> bool {
    if owner.place != *here || owner.pid == std::process::id() {
        return false;
    }
    match std::fs::metadata(format!("/proc/{}", owner.pid)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(_) => false,
        // A process with that PID: stale only if it is another one (the
        // PID reused); unreadable counts as alive.
        Ok(_) => start_time(&owner.pid.to_string()).is_some_and(|s| s != owner.start),
    }
}

/// The effective user ID of this process.
fn own_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// Removes from `folder` the temporary files and folders that soup's
/// writers (soup, the trainer) left when they were killed, and only those
/// that are provably stale: names of this host, boot and PID namespace
/// whose process no longer runs (see the module documentation for the
/// format and the rule; names of other hosts or containers, and of the
/// older format, are left alone). Returns the paths removed. Does nothing
/// where processes cannot be told apart (no `/proc`).
pub fn sweep_stale_temps(folder: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Some(here) = own_place() else {
        return removed;
    };
    let Ok(entries) = std::fs::read_dir(folder) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = owner(&name.to_string_lossy()) else {
            continue;
        };
        if !is_stale(&owner, here) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        // Only this user's own files: where /proc hides other users'
        // processes (hidepid), theirs would look dead.
        if meta.uid() != own_uid() {
            continue;
        }
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

    /// A name of this place for `pid` started at `start`.
    fn name_of(kind: &str, pid: u32, start: u64, tail: &str) -> String {
        let p = own_place().expect("tests run on Linux with /proc");
        format!(
            "{kind}{VERSION}_{}_{}_{}_{pid}_{start}_{tail}",
            p.host, p.boot, p.ns
        )
    }

    #[test]
    fn own_names_parse_back_to_this_process() {
        let prefix = own_prefix(TEMP_PREFIX);
        let owner = owner(&format!("{prefix}aB3xYz.safetensors")).unwrap();
        assert_eq!(owner.pid, std::process::id());
        assert_eq!(Some(owner.start), start_time("self"));
        assert_eq!(Some(&owner.place), own_place());
        assert!(!is_stale(&owner, own_place().unwrap()));
        assert!(prefix.len() < 120, "{prefix}");
    }

    #[test]
    fn host_names_become_safe_distinct_tags() {
        assert_eq!(host_tag("node-17.cluster"), "node-17.cluster");
        let odd = host_tag("node_17");
        assert!(odd.starts_with('+') && odd.len() == 17, "{odd}");
        assert_ne!(odd, host_tag("node_18"));
        assert_ne!(host_tag(&"n".repeat(41)), host_tag(&"n".repeat(42)));
        assert!(!host_tag("a/b_c d").contains(['/', '_', ' ']));
    }

    /// A file that looks stale but belongs to another user stays: where
    /// `/proc` hides other users' processes, a live writer of theirs would
    /// look gone. (Needs root to give the file away; skipped otherwise.)
    #[test]
    fn temps_of_another_user_are_not_swept() {
        if own_uid() != 0 {
            eprintln!("skipped: giving a file to another user needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir
            .path()
            .join(name_of(TEMP_PREFIX, 2_147_483_632, 5, "theirs"));
        let mine = dir
            .path()
            .join(name_of(TEMP_PREFIX, 2_147_483_632, 5, "mine"));
        std::fs::write(&theirs, b"x").unwrap();
        std::fs::write(&mine, b"x").unwrap();
        std::os::unix::fs::chown(&theirs, Some(12_345), None).unwrap();
        assert_eq!(sweep_stale_temps(dir.path()), vec![mine.clone()]);
        assert!(theirs.exists() && !mine.exists());
    }

    #[test]
    fn this_process_sees_its_own_proc() {
        assert!(proc_is_own(), "tests run in the PID namespace of /proc");
        assert!(!own_prefix(TEMP_PREFIX).contains("+none"));
    }

    #[test]
    fn sweep_removes_only_provably_stale_temps() {
        let dir = tempfile::tempdir().unwrap();
        let here = own_place().unwrap();
        // PID 0x7fff_fff0 cannot exist (pid_max is at most 2^22).
        let dead = 2_147_483_632;
        let own = std::process::id();
        let own_start = start_time("self").unwrap();
        let init_start = start_time("1").unwrap();
        let stale = [
            name_of(TEMP_PREFIX, dead, 5, "abc.safetensors"),
            // PID 1 runs, but not since this start time: its PID reused.
            name_of(TEMP_PREFIX, 1, init_start + 1, "abc"),
        ];
        let stale_dir = name_of(GREEDY_PREFIX, dead, 5, "xyz");
        let other = |host: &str, boot: &str, ns: u64| {
            format!("{TEMP_PREFIX}{VERSION}_{host}_{boot}_{ns}_{dead}_5_q")
        };
        let kept = [
            name_of(TEMP_PREFIX, own, own_start, "live"),
            name_of(TEMP_PREFIX, 1, init_start, "init"),
            // Another host, another boot, another PID namespace.
            other("elsewhere", &here.boot, here.ns),
            other(&here.host, "0badb007", here.ns),
            other(&here.host, &here.boot, here.ns + 1),
            // The older format names no host: it may be another's.
            format!("{TEMP_PREFIX}{dead}-0-x.safetensors"),
            format!("{GREEDY_PREFIX}{dead}-abc"),
            ".soup-tmp-notapid".to_string(),
            "model.safetensors".to_string(),
        ];
        for name in stale.iter().chain(&kept) {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        std::fs::create_dir(dir.path().join(&stale_dir)).unwrap();
        std::fs::write(dir.path().join(&stale_dir).join("trial.safetensors"), b"x").unwrap();
        let mut removed = sweep_stale_temps(dir.path());
        removed.sort();
        let mut expected: Vec<PathBuf> = stale
            .iter()
            .chain([&stale_dir])
            .map(|n| dir.path().join(n))
            .collect();
        expected.sort();
        assert_eq!(removed, expected);
        for name in &kept {
            assert!(dir.path().join(name).exists(), "{name} was swept");
        }
    }

    #[test]
    fn temp_name_of_another_host_with_a_dead_pid_is_not_swept() {
        let dir = tempfile::tempdir().unwrap();
        let here = own_place().unwrap();
        let theirs = format!(
            "{TEMP_PREFIX}{VERSION}_{}x_{}_{}_2147483632_5_Ab12Cd.safetensors",
            here.host, here.boot, here.ns
        );
        std::fs::write(dir.path().join(&theirs), b"in progress").unwrap();
        assert!(sweep_stale_temps(dir.path()).is_empty());
        assert_eq!(
            std::fs::read(dir.path().join(&theirs)).unwrap(),
            b"in progress"
        );
    }
}
