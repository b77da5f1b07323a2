//! Shared helpers for the parity tests: the reference Python, temporary directories, npy
//! fixtures and tolerance checks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tch::{Kind, Tensor};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `$GANTRY_PYTHON`, else the project virtualenv. Missing Python is a failure, not a skip:
/// these tests are the evidence that the metrics match the reference tools.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("GANTRY_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let p = workspace_root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "no reference Python: {} is missing and GANTRY_PYTHON is unset; run scripts/setup-venv.sh",
        p.display()
    );
    p
}

/// Runs `tests/pyref/<script> args...` and returns its stdout; panics with stderr on failure.
pub fn pyref(script: &str, args: &[&str]) -> String {
    let path = workspace_root().join("tests/pyref").join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python().display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh directory under the system temp dir, removed on drop (also when a test fails).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "gantry-metrics-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn arg(&self) -> &str {
        self.0.to_str().expect("temp dir path is UTF-8")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn npy(path: PathBuf) -> Tensor {
    Tensor::read_npy(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn json(path: PathBuf) -> serde_json::Value {
    let s = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&s).unwrap()
}

/// max |got - want| <= rel * max |want| (elementwise relative error is meaningless at zeros,
/// which ReLU features are full of).
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, rel: f64) {
    assert_eq!(got.size(), want.size(), "{what}: shapes differ");
    let g = got.to_kind(Kind::Double);
    let w = want.to_kind(Kind::Double);
    let err = (&g - &w).abs().max().double_value(&[]);
    let scale = w.abs().max().double_value(&[]).max(1e-12);
    eprintln!("{what}: max abs error {err:e}, max |reference| {scale:e}");
    assert!(
        err <= rel * scale,
        "{what}: max abs error {err:e} > {rel:e} x max |reference| {scale:e}"
    );
}

pub fn assert_rel(what: &str, got: f64, want: f64, rel: f64) {
    let err = (got - want).abs();
    assert!(
        err <= rel * want.abs().max(1e-12),
        "{what}: got {got}, reference {want} (relative error {:e} > {rel:e})",
        err / want.abs().max(1e-12)
    );
}
