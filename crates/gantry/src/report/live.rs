//! Live reports: whether a process is writing a run (or experiment) directory, what changed in it
//! since the last look, and the loop that rewrites a page until the work is done.
//!
//! **Live** means a process holds the directory's lock (`.gantry.lock`, see
//! `rundir::lock`), read from `/proc/locks` without touching the lock: taking it, even for a
//! moment, could turn away a `gantry train` starting at that instant. An entry counts when it
//! is on the lock file's inode and either its device or its pid (the one the holder wrote into
//! the file) agree. Where `/proc/locks` cannot be read, the pid in the file is asked whether it
//! is still alive.

use crate::error::Result;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Whether some process holds `dir`'s lock now.
pub fn locked(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let path = dir.join(crate::rundir::lock::FILE);
    let Ok(meta) = std::fs::metadata(&path) else {
        return false;
    };
    let pid: Option<i64> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.trim().parse().ok());
    let dev = meta.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    match std::fs::read_to_string("/proc/locks") {
        Ok(table) => table.lines().any(|line| {
            // `1: FLOCK  ADVISORY  WRITE 12345 fe:00:5309361 0 EOF` (blocked waiters: `-> ...`)
            let f: Vec<&str> = line.split_whitespace().collect();
            let Some(i) = f.iter().position(|w| w.matches(':').count() == 2) else {
                return false;
            };
            if f.get(1) == Some(&"->") || i == 0 {
                return false;
            }
            let mut id = f[i].split(':');
            let (Some(ma), Some(mi), Some(ino)) = (id.next(), id.next(), id.next()) else {
                return false;
            };
            if ino.parse::<u64>().ok() != Some(meta.ino()) {
                return false;
            }
            let same_dev = u64::from_str_radix(ma, 16).ok() == Some(major)
                && u64::from_str_radix(mi, 16).ok() == Some(minor);
            let holder: Option<i64> = f[i - 1].parse().ok();
            same_dev || (holder.is_some() && holder == pid)
        }),
        Err(_) => pid.is_some_and(|p| {
            // SAFETY: kill with signal 0 only checks that the process exists.
            p > 0
                && (unsafe { libc::kill(p as libc::pid_t, 0) } == 0
                    || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
        }),
    }
}

/// Feeds what a look at `path` shows (size and modification time; for a directory, those of
/// every entry, by name) into `h`. Missing paths feed a marker.
pub fn fingerprint(path: &Path, h: &mut impl Hasher) {
    let stamp = |m: &std::fs::Metadata, h: &mut dyn FnMut(u64)| {
        h(m.len());
        if let Ok(t) = m.modified() {
            if let Ok(d) = t.duration_since(std::time::UNIX_EPOCH) {
                h(d.as_nanos() as u64);
            }
        }
    };
    path.hash(h);
    match std::fs::metadata(path) {
        Err(_) => 0u8.hash(h),
        Ok(m) if m.is_dir() => {
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .into_iter()
                .flatten()
                .flatten()
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                e.file_name().hash(h);
                if let Ok(m) = e.metadata() {
                    stamp(&m, &mut |v| v.hash(h));
                }
            }
        }
        Ok(m) => stamp(&m, &mut |v| v.hash(h)),
    }
}

/// What one look at the watched directory found.
pub struct Look {
    /// Changes when anything the page shows changed.
    pub signature: u64,
    /// The work is over (no last write will follow from it).
    pub finished: bool,
}

/// Calls `look` every `every`, and `write(refresh)` whenever its signature changed (and on the
/// first look), with `refresh` the seconds a live page reloads after; ends after a last write
/// with `refresh = None` once `look` says finished, or `stop` is set.
pub fn watch_loop(
    every: Duration,
    stop: &AtomicBool,
    mut look: impl FnMut() -> Result<Look>,
    mut write: impl FnMut(Option<u64>) -> Result<()>,
) -> Result<()> {
    let refresh = every.as_secs_f64().ceil().max(1.0) as u64;
    let mut last = None;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let now = look()?;
        if now.finished || stopping {
            return write(None);
        }
        if last != Some(now.signature) {
            write(Some(refresh))?;
            last = Some(now.signature);
        }
        let until = Instant::now() + every;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50).min(every));
        }
    }
}

/// A hasher for [`fingerprint`]s.
pub fn hasher() -> std::collections::hash_map::DefaultHasher {
    std::collections::hash_map::DefaultHasher::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_reads_as_live_and_a_released_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!locked(dir.path()));
        let lock = crate::rundir::lock::RunLock::acquire(dir.path()).unwrap();
        assert!(locked(dir.path()));
        drop(lock);
        assert!(!locked(dir.path()));
    }

    #[test]
    fn the_loop_writes_on_change_and_ends_with_a_final_write() {
        let stop = AtomicBool::new(false);
        let mut n = 0u64;
        let mut writes = Vec::new();
        watch_loop(
            Duration::from_millis(1),
            &stop,
            || {
                n += 1;
                Ok(Look {
                    signature: n / 3,
                    finished: n == 10,
                })
            },
            |r| {
                writes.push(r);
                Ok(())
            },
        )
        .unwrap();
        // Signatures 0 (looks 1-2), 1 (3-5), 2 (6-8), 3 (9), then the final write.
        assert_eq!(writes, vec![Some(1), Some(1), Some(1), Some(1), None]);
        let stop = AtomicBool::new(true);
        let mut writes = Vec::new();
        watch_loop(
            Duration::from_secs(60),
            &stop,
            || {
                Ok(Look {
                    signature: 0,
                    finished: false,
                })
            },
            |r| {
                writes.push(r);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(writes, vec![None]);
    }
}
