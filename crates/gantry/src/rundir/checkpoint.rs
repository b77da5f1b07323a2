//! Checkpoints: one directory per save, `checkpoints/ckpt-<step>/`, holding one safetensors file per
//! store (`g`, `d`, `g_ema`, `plugins`, `adam`) and `meta.json` (step counters, data position,
//! the resolved configuration). A save writes a hidden temporary directory, fsyncs every file,
//! then renames it into place: a kill or a full disk at any moment leaves earlier checkpoints whole.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Bumped when the layout changes incompatibly (2: the configuration's `model` section holds only
/// its architecture's keys).
pub const FORMAT_VERSION: u32 = 2;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    pub format_version: u32,
    pub gantry_version: String,
    /// G steps completed.
    pub step: u64,
    /// Real images D has seen.
    pub images_seen: u64,
    /// Where the data loader continues.
    pub loader: gantry_data::Position,
    /// Wall time spent training before this save, in seconds.
    pub wall_seconds: f64,
    /// Seed offset added after NaN rollbacks.
    pub seed_offset: u64,
    /// Processes of the data-parallel job that wrote it (1 = one process).
    #[serde(default = "one")]
    pub world_size: usize,
    pub arch: String,
    /// The resolved configuration, as TOML.
    pub config: String,
}

impl Meta {
    /// The metadata of a one-process task run's checkpoint after `step` steps of `batch` images.
    pub fn one_process(
        step: u64,
        batch: usize,
        loader: gantry_data::Position,
        wall_seconds: f64,
        arch: String,
        config: String,
    ) -> Meta {
        Meta {
            format_version: FORMAT_VERSION,
            gantry_version: env!("CARGO_PKG_VERSION").into(),
            step,
            images_seen: step * batch as u64,
            loader,
            wall_seconds,
            seed_offset: 0,
            world_size: 1,
            arch,
            config,
        }
    }
}

fn one() -> usize {
    1
}

pub type Store = Vec<(String, Tensor)>;

pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Writes a checkpoint for `meta.step` and returns its directory.
pub fn save(run_dir: &Path, meta: &Meta, stores: &[(&str, Store)]) -> Result<PathBuf> {
    let root = checkpoints_dir(run_dir);
    fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
    let name = format!("ckpt-{:07}", meta.step);
    let tmp = root.join(format!(".{name}.tmp"));
    let dst = root.join(&name);
    let result = (|| -> Result<()> {
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        for (store, tensors) in stores {
            let path = tmp.join(format!("{store}.safetensors"));
            // safetensors wants contiguous CPU tensors.
            let cpu: Vec<(String, Tensor)> = tensors
                .iter()
                .map(|(k, t)| {
                    (
                        k.clone(),
                        t.detach().to_device(tch::Device::Cpu).contiguous(),
                    )
                })
                .collect();
            Tensor::write_safetensors(&cpu, &path).map_err(|e| Error::io(&path, e))?;
            fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&path, e))?;
        }
        let meta_path = tmp.join("meta.json");
        let text = serde_json::to_string_pretty(meta).expect("meta serialises");
        fs::write(&meta_path, text).map_err(|e| Error::io(&meta_path, e))?;
        fs::File::open(&meta_path)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&meta_path, e))?;
        fsync_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        if dst.exists() {
            // Re-saving the same step (e.g. interrupt right after a periodic save): replace it.
            let old = root.join(format!(".{name}.old"));
            let _ = fs::remove_dir_all(&old);
            fs::rename(&dst, &old).map_err(|e| Error::io(&dst, e))?;
            fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))?;
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))?;
        }
        fsync_dir(&root).map_err(|e| Error::io(&root, e))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result.map(|_| dst)
}

/// Makes `ckpt` the run's best checkpoint (`checkpoints/best/`, with `best.json` naming the metric,
/// value and step), replacing the previous best atomically.
pub fn mark_best(
    run_dir: &Path,
    ckpt: &Path,
    metric: &str,
    value: f64,
    step: u64,
) -> Result<PathBuf> {
    let root = checkpoints_dir(run_dir);
    let tmp = root.join(".best.tmp");
    let old = root.join(".best.old");
    let dst = root.join("best");
    let _ = fs::remove_dir_all(&tmp);
    let result = (|| -> Result<()> {
        fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        for e in fs::read_dir(ckpt)
            .map_err(|e| Error::io(ckpt, e))?
            .flatten()
        {
            let to = tmp.join(e.file_name());
            fs::copy(e.path(), &to).map_err(|err| Error::io(&to, err))?;
            fs::File::open(&to)
                .and_then(|f| f.sync_all())
                .map_err(|err| Error::io(&to, err))?;
        }
        let info = serde_json::json!({"metric": metric, "value": value, "step": step});
        let info_path = tmp.join("best.json");
        fs::write(&info_path, info.to_string()).map_err(|e| Error::io(&info_path, e))?;
        fsync_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let _ = fs::remove_dir_all(&old);
        if dst.exists() {
            fs::rename(&dst, &old).map_err(|e| Error::io(&dst, e))?;
        }
        fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))?;
        let _ = fs::remove_dir_all(&old);
        fsync_dir(&root).map_err(|e| Error::io(&root, e))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result.map(|_| dst)
}

/// The best value recorded so far for `metric`, if any.
pub fn best_value(run_dir: &Path, metric: &str) -> Option<f64> {
    let text = fs::read_to_string(checkpoints_dir(run_dir).join("best/best.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    (v.get("metric")?.as_str()? == metric).then(|| v.get("value")?.as_f64())?
}

/// Completed checkpoints of a run, oldest first.
pub fn list(run_dir: &Path) -> Vec<PathBuf> {
    let root = checkpoints_dir(run_dir);
    let mut out: Vec<PathBuf> = fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ckpt-"))
                && p.join("meta.json").exists()
        })
        .collect();
    out.sort();
    out
}

pub fn latest(run_dir: &Path) -> Option<PathBuf> {
    list(run_dir).pop()
}

/// Deletes all but the newest `keep` checkpoints. Each goes by a rename into a hidden
/// `.trash-*` name first (atomic), so a kill during the deletion never leaves a half-deleted
/// `ckpt-*` that looks like a checkpoint; [`clean_leftovers`] finishes such deletions.
pub fn prune(run_dir: &Path, keep: usize) {
    clean_leftovers(run_dir);
    let root = checkpoints_dir(run_dir);
    let all = list(run_dir);
    if all.len() > keep {
        for old in &all[..all.len() - keep] {
            let name = old.file_name().expect("ckpt-N").to_string_lossy();
            let trash = root.join(format!(".trash-{name}"));
            let _ = fs::remove_dir_all(&trash);
            if fs::rename(old, &trash).is_ok() {
                let _ = fs::remove_dir_all(&trash);
            }
        }
    }
}

/// Removes what interrupted saves and deletions left behind: hidden `.ckpt-*.tmp`, `.*.old`
/// and `.trash-*` directories, and `ckpt-*` directories without `meta.json` (a deletion that
/// an older gantry was killed in). Only the run's writer calls it (it holds the run's lock).
pub fn clean_leftovers(run_dir: &Path) {
    for e in fs::read_dir(checkpoints_dir(run_dir))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        let leftover = (name.starts_with('.')
            && (name.ends_with(".tmp") || name.ends_with(".old") || name.starts_with(".trash-")))
            || (name.starts_with("ckpt-") && !e.path().join("meta.json").exists());
        if leftover && e.path().is_dir() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// `ckpt-*` directories newer than the run's latest complete checkpoint that lack `meta.json`
/// (a save or deletion cut short): readers skip them and say so.
pub fn incomplete_after_latest(run_dir: &Path) -> Vec<PathBuf> {
    let latest = latest(run_dir);
    let mut out: Vec<PathBuf> = fs::read_dir(checkpoints_dir(run_dir))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("ckpt-"))
                && !p.join("meta.json").exists()
                && latest.as_ref().is_none_or(|l| p > l)
        })
        .collect();
    out.sort();
    out
}

pub fn read_meta(ckpt: &Path) -> Result<Meta> {
    let path = ckpt.join("meta.json");
    let text = fs::read_to_string(&path)
        .map_err(|e| Error::checkpoint(&path, format!("not a gantry checkpoint ({e})")))?;
    let meta: Meta = serde_json::from_str(&text)
        .map_err(|e| Error::checkpoint(&path, format!("corrupt metadata: {e}")))?;
    if meta.format_version != FORMAT_VERSION {
        return Err(Error::checkpoint(
            &path,
            format!(
                "checkpoint format {} is not supported by this gantry (format {FORMAT_VERSION}; it was written by another version)",
                meta.format_version
            ),
        ));
    }
    Ok(meta)
}

pub fn read_store(ckpt: &Path, store: &str) -> Result<HashMap<String, Tensor>> {
    let path = ckpt.join(format!("{store}.safetensors"));
    if !path.exists() {
        return Err(Error::checkpoint(&path, "missing"));
    }
    let tensors = Tensor::read_safetensors(&path).map_err(|e| {
        let first = e.to_string().lines().next().unwrap_or("").to_string();
        Error::checkpoint(&path, format!("unreadable or truncated ({first})"))
    })?;
    Ok(tensors.into_iter().collect())
}

/// Copies saved tensors into a model's variables, checking names and shapes.
pub fn restore_into(
    vars: &HashMap<String, Tensor>,
    saved: &HashMap<String, Tensor>,
    file: &Path,
) -> Result<()> {
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        let src = saved.get(name).ok_or_else(|| {
            Error::checkpoint(file, format!("missing {name} (another architecture?)"))
        })?;
        if src.size() != var.size() {
            return Err(Error::checkpoint(
                file,
                format!("{name} is {:?}, model wants {:?}", src.size(), var.size()),
            ));
        }
        tch::no_grad(|| var.shallow_clone().copy_(src));
    }
    if let Some(extra) = saved.keys().find(|k| !vars.contains_key(*k)) {
        return Err(Error::checkpoint(
            file,
            format!("has {extra}, which the model lacks (another architecture?)"),
        ));
    }
    Ok(())
}

/// Tensors of a VarStore, sorted by name.
pub fn store_of(vs: &tch::nn::VarStore) -> Store {
    let mut v: Store = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Resolves `RUN_DIR` (latest checkpoint) or a checkpoint directory.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join("meta.json").exists() {
        return Ok(path.to_path_buf());
    }
    if !path.exists() {
        return Err(Error::checkpoint(path, "does not exist"));
    }
    latest(path).ok_or_else(|| {
        Error::checkpoint(
            path,
            "is not a gantry run directory or checkpoint (no checkpoints/ckpt-*/meta.json)",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(step: u64) -> Meta {
        Meta {
            format_version: FORMAT_VERSION,
            gantry_version: "test".into(),
            step,
            images_seen: 0,
            loader: Default::default(),
            wall_seconds: 0.0,
            seed_offset: 0,
            world_size: 1,
            arch: "dcgan".into(),
            config: String::new(),
        }
    }

    #[test]
    fn save_list_prune_and_restore() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tensor::from_slice(&[1.0f32, 2.0]);
        for step in [10, 20, 30] {
            save(
                dir.path(),
                &meta(step),
                &[("g", vec![("w".into(), &t * step as f64)])],
            )
            .unwrap();
        }
        prune(dir.path(), 2);
        let all = list(dir.path());
        assert_eq!(all.len(), 2);
        let last = resolve(dir.path()).unwrap();
        assert!(last.ends_with("ckpt-0000030"));
        assert_eq!(read_meta(&last).unwrap().step, 30);
        let saved = read_store(&last, "g").unwrap();
        let vars: HashMap<String, Tensor> = [(
            "w".to_string(),
            Tensor::zeros([2], (tch::Kind::Float, tch::Device::Cpu)),
        )]
        .into();
        restore_into(&vars, &saved, &last).unwrap();
        assert_eq!(Vec::<f32>::try_from(&vars["w"]).unwrap(), [30.0, 60.0]);
        let wrong: HashMap<String, Tensor> = [(
            "w".to_string(),
            Tensor::zeros([3], (tch::Kind::Float, tch::Device::Cpu)),
        )]
        .into();
        let e = restore_into(&wrong, &saved, &last).unwrap_err().to_string();
        assert!(e.ends_with("w is [2], model wants [3]"), "{e}");
    }

    #[test]
    fn truncated_store_and_foreign_dirs_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let ck = save(
            dir.path(),
            &meta(1),
            &[(
                "g",
                vec![(
                    "w".into(),
                    Tensor::ones([64], (tch::Kind::Float, tch::Device::Cpu)),
                )],
            )],
        )
        .unwrap();
        let f = ck.join("g.safetensors");
        let bytes = fs::read(&f).unwrap();
        fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
        let e = read_store(&ck, "g").unwrap_err().to_string();
        assert!(e.contains("unreadable or truncated"), "{e}");
        let other = tempfile::tempdir().unwrap();
        let e = resolve(other.path()).unwrap_err().to_string();
        assert!(e.contains("is not a gantry run directory"), "{e}");
    }
}
