//! How a one-process task run (classification, translation) enters its run directory: a fresh
//! run refuses a directory that already holds one; a resumed run takes its latest checkpoint's
//! own configuration, where `--set` may change only run-time keys. GAN training has its own
//! entry (`run::resume`: named checkpoints, data-parallel agreement).

use super::checkpoint::{self, Meta};
use super::lock::RunLock;
use crate::error::{Error, Result};
use crate::util::TaskConfig;
use std::path::{Path, PathBuf};

/// Where a run starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// A new run in an empty (or absent) directory.
    Fresh,
    /// Continue the run's latest checkpoint with its saved configuration; `sets` may change only
    /// the task's run-time keys (`RESUME_SAFE` of its module).
    Resume { sets: Vec<String> },
}

impl Start {
    /// What a runner does with a run directory: continue its latest checkpoint (an interrupted
    /// run), or start afresh.
    pub fn for_dir(dir: &Path) -> Start {
        if checkpoint::latest(dir).is_some() {
            Start::Resume { sets: Vec::new() }
        } else {
            Start::Fresh
        }
    }
}

/// What a task's run directory holds, for [`enter`].
pub struct Task {
    /// The checkpoint's `arch` of this task starts with this (`"classify/"`, `"translate/"`).
    pub arch_prefix: &'static str,
    /// For the refusal of another task's checkpoint: "a classifier run".
    pub what: &'static str,
    /// The keys `--set` may change on resume.
    pub resume_safe: &'static [&'static str],
}

/// What [`enter`] gives a run: the configuration it goes on with, the checkpoint it continues
/// (`None`: a fresh run) and its hold on the directory (kept for as long as it trains).
pub type Entered<C> = (C, Option<(PathBuf, Meta)>, RunLock);

/// Takes the run directory's lock, then decides how the run starts.
pub fn enter<C: TaskConfig + Clone>(
    task: &Task,
    cfg: &C,
    run_dir: &Path,
    start: Start,
) -> Result<Entered<C>> {
    if run_dir.join("meta.json").exists() {
        let flag = if matches!(start, Start::Fresh) {
            "--out"
        } else {
            "--resume"
        };
        return Err(Error::config(
            flag,
            format!(
                "{} is a checkpoint; give its run directory (training continues from the latest checkpoint)",
                run_dir.display()
            ),
        ));
    }
    if matches!(start, Start::Resume { .. }) && !run_dir.exists() {
        return Err(Error::checkpoint(run_dir, "does not exist"));
    }
    let lock = RunLock::acquire(run_dir)?;
    checkpoint::clean_leftovers(run_dir);
    let Start::Resume { sets } = start else {
        if !checkpoint::list(run_dir).is_empty() {
            return Err(Error::config(
                "--out",
                format!(
                    "{} already holds a run (continue it with --resume, or choose another --out)",
                    run_dir.display()
                ),
            ));
        }
        return Ok((cfg.clone(), None, lock));
    };
    let ckpt = checkpoint::resolve(run_dir)?;
    let meta = checkpoint::read_meta(&ckpt)?;
    if !meta.arch.starts_with(task.arch_prefix) {
        return Err(Error::checkpoint(&ckpt, format!("is not {}", task.what)));
    }
    let saved = C::from_toml(&meta.config, &ckpt.display().to_string())?;
    let cfg = saved.with_sets(&sets)?;
    let changed: Vec<String> = crate::util::changed_keys(&saved, &cfg)
        .into_iter()
        .filter(|k| !task.resume_safe.contains(&k.as_str()))
        .collect();
    if !changed.is_empty() {
        return Err(Error::config(
            "--set",
            format!(
                "on resume only {} may change (the rest is the run's own configuration; changed: {})",
                task.resume_safe.join(", "),
                changed.join(", ")
            ),
        ));
    }
    Ok((cfg, Some((ckpt, meta)), lock))
}

/// The best value of `key` a run starts with: the resumed run's, or none for a fresh run (whose
/// stale `checkpoints/best` of an abandoned run goes).
pub fn best_at_start(run_dir: &Path, key: &str, resumed: bool) -> Option<f64> {
    if resumed {
        checkpoint::best_value(run_dir, key)
    } else {
        let _ = std::fs::remove_dir_all(checkpoint::checkpoints_dir(run_dir).join("best"));
        None
    }
}
