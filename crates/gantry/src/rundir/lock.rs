//! One writer per run directory: an advisory lock on `RUN/.gantry.lock`, held for the life of the
//! process that trains (fresh or resumed) into it, released by the OS however that process ends
//! (kill -9 included). A second writer is refused with the holder's pid; readers (`sample`,
//! `eval`, `report`) take no lock. The file stays behind; it is the lock, not its existence.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

/// The lock file's name inside a run (or experiment) directory.
pub const FILE: &str = ".gantry.lock";

/// Holds the lock until the last clone is dropped (or the process ends). Re-entrant within one
/// process: the entry points and the trainer they build both ask for it, and get the same lock.
#[derive(Clone, Debug)]
pub struct RunLock(Arc<Held>);

#[derive(Debug)]
struct Held {
    _file: File,
    dir: PathBuf,
    /// This process made the directory: if nothing but the lock is in it when the lock goes (a
    /// start that failed its checks), it goes too.
    created: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.created {
            return;
        }
        let only_lock = std::fs::read_dir(&self.dir).is_ok_and(|entries| {
            entries
                .flatten()
                .all(|e| e.file_name().to_str() == Some(FILE))
        });
        if only_lock {
            // Still locked while it is unlinked: a waiter that opened it sees a stale inode and
            // tries again (`acquire`).
            let _ = std::fs::remove_file(self.dir.join(FILE));
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// The locks this process holds, by canonical directory.
static HELD: Mutex<Vec<(PathBuf, Weak<Held>)>> = Mutex::new(Vec::new());

impl RunLock {
    /// Creates `dir` if needed and takes its lock (or shares the one this process holds), or
    /// says who holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let created = !dir.exists();
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::input(dir, format!("cannot create the directory: {e}")))?;
        let key = dir.canonicalize().map_err(|e| Error::input(dir, e))?;
        let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|(_, w)| w.strong_count() > 0);
        if let Some(h) = held
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(RunLock(h));
        }
        let path = dir.join(FILE);
        let open = || {
            std::fs::create_dir_all(dir)?;
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
        };
        let mut file = open()
            .map_err(|e| Error::input(&path, format!("cannot open the run's lock file: {e}")))?;
        // A lock file removed by a holder that let go of an empty directory (see `Drop`): the
        // lock taken on it guards nothing; open the path again.
        let same = |f: &File| {
            use std::os::unix::fs::MetadataExt;
            match (f.metadata(), std::fs::metadata(&path)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            }
        };
        let mut tries = 0;
        let locked = loop {
            let r = file.try_lock();
            if r.is_err() || same(&file) || tries == 3 {
                break r;
            }
            tries += 1;
            file = open().map_err(|e| {
                Error::input(&path, format!("cannot open the run's lock file: {e}"))
            })?;
        };
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = text
                    .trim()
                    .parse::<u32>()
                    .map_or("another process".to_string(), |pid| {
                        format!("another gantry process (pid {pid})")
                    });
                return Err(Error::input(
                    dir,
                    format!(
                        "is in use by {holder}; wait for it to end, or choose another directory"
                    ),
                ));
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::input(&path, format!("cannot lock the run: {e}")));
            }
        }
        // Who holds it, for the refusal above (best effort: the lock itself is what counts).
        let _ = file
            .set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|_| file.flush());
        let h = Arc::new(Held {
            _file: file,
            dir: dir.to_path_buf(),
            created,
        });
        held.push((key, Arc::downgrade(&h)));
        Ok(RunLock(h))
    }

    pub fn dir(&self) -> &Path {
        &self.0.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether another process can take `dir`'s lock now (util-linux's `flock -n`).
    fn free_for_others(dir: &Path) -> bool {
        std::process::Command::new("flock")
            .args(["-n", "-E", "7"])
            .arg(dir.join(FILE))
            .arg("true")
            .status()
            .expect("flock(1) runs")
            .success()
    }

    #[test]
    fn other_processes_are_kept_out_until_the_last_holder_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        let first = RunLock::acquire(&run).unwrap();
        assert_eq!(first.dir(), run);
        assert!(!free_for_others(&run));
        let pid: u32 = std::fs::read_to_string(run.join(FILE))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(pid, std::process::id());
        // The same process asking again shares the lock.
        let again = RunLock::acquire(&run.join("../run")).unwrap();
        drop(first);
        assert!(!free_for_others(&run));
        drop(again);
        assert!(free_for_others(&run));
        let _third = RunLock::acquire(&run).unwrap();
        assert!(!free_for_others(&run));
    }

    #[test]
    fn a_directory_made_for_a_start_that_wrote_nothing_goes_with_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        drop(RunLock::acquire(&run).unwrap());
        assert!(!run.exists());
        let lock = RunLock::acquire(&run).unwrap();
        std::fs::write(run.join("config.toml"), "").unwrap();
        drop(lock);
        assert!(run.join("config.toml").exists());
        // A directory that was there before stays, lock file and all.
        drop(RunLock::acquire(&run).unwrap());
        assert!(run.join(FILE).exists());
    }
}
