//! Shared test helpers: running the PyTorch reference scripts in `tests/pyref/`, and tiny configs.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The virtualenv's python (torch 2.11 is the reference). Missing = a failed test, not a skip:
/// CI always has it (scripts/setup-venv.sh).
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("GANTRY_PYTHON") {
        return PathBuf::from(p);
    }
    let p = repo_root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup-venv.sh",
        p.display()
    );
    p
}

/// Writes `inputs` to an npz, runs `tests/pyref/<script>` on it, and returns the npz it writes.
pub fn pyref(script: &str, inputs: &[(&str, Tensor)]) -> HashMap<String, Tensor> {
    let dir = tempfile::tempdir().unwrap();
    let inp = dir.path().join("in.npz");
    let out = dir.path().join("out.npz");
    let named: Vec<(&str, Tensor)> = inputs
        .iter()
        .map(|(k, t)| (*k, t.detach().contiguous()))
        .collect();
    Tensor::write_npz(&named, &inp).unwrap();
    let status = std::process::Command::new(python())
        .arg(repo_root().join("tests/pyref").join(script))
        .arg(&inp)
        .arg(&out)
        .status()
        .expect("run python");
    assert!(status.success(), "tests/pyref/{script} failed");
    Tensor::read_npz(&out).unwrap().into_iter().collect()
}

/// Max |a - b| / max(|b|, floor).
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_kind(tch::Kind::Double);
    let b = b.to_kind(tch::Kind::Double);
    assert_eq!(a.size(), b.size(), "shapes differ");
    let diff = (&a - &b).abs().max().double_value(&[]);
    let scale = b.abs().max().double_value(&[]).max(1e-12);
    diff / scale
}

/// libtorch's generator is process-global and tests run on parallel threads: tests that need
/// reproducible randomness hold this lock.
pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A tiny, fast configuration on the built-in shapes at 8x8 (for training tests) with widths 4,
/// for the architectures that have `ngf`/`ndf` (DCGAN, the ResNets, BigGAN).
pub fn tiny_sets(extra: &[&str]) -> Vec<String> {
    let mut v = tiny_run_sets(&["model.ngf=4", "model.ndf=4", "model.z_dim=8"]);
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// [`tiny_sets`] without model keys (data, batch, logging only).
pub fn tiny_run_sets(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "data.size=64",
        "data.resolution=8",
        "data.workers=1",
        "train.batch_size=8",
        "train.threads=1",
        "train.log_every=1",
        "train.sample_every=0",
        "train.checkpoint_every=0",
        "train.grid=4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Trains a fresh run to the end in `dir`.
pub fn train(cfg: gantry::RunConfig, dir: &Path) -> gantry::train::Trainer {
    let mut t = gantry::train::Trainer::new(cfg.setup(), dir).unwrap();
    let out = t
        .run(&std::sync::atomic::AtomicBool::new(false), &mut |_| {})
        .unwrap();
    assert!(matches!(out, gantry::train::Outcome::Finished { .. }));
    t
}

/// The numeric rows of a run's metrics.jsonl (everything but events).
pub fn log_rows(dir: &Path) -> Vec<serde_json::Value> {
    gantry::rundir::log::read(&dir.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter(|r| r.get("event").is_none())
        .collect()
}
