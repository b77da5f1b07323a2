//! Helpers shared by the CLI's test binaries.
#![allow(dead_code)] // each test binary uses its own subset

use std::process::{Command, Output};

/// Runs the `gantry` binary under test.
pub fn gantry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .output()
        .expect("run gantry")
}

/// Exit code 2 (bad input), one error line on stderr that names `needle`, no panic.
pub fn assert_user_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    // Progress lines may precede it; the error itself is the last line, and the only one.
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "not exactly one error line: {err}");
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("gantry: error: "), "{err}");
    assert!(last.contains(needle), "expected {needle:?} in {err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

/// The repository's root directory.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Exit status 0, else the test fails with the command's stderr.
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The tensors of store `name` (`g`, `d`, `g_ema`, `adam`) of a run's checkpoint at `step`.
pub fn checkpoint_store(
    run: &std::path::Path,
    step: u64,
    name: &str,
) -> std::collections::HashMap<String, tch::Tensor> {
    let path = run
        .join(format!("checkpoints/ckpt-{step:07}"))
        .join(format!("{name}.safetensors"));
    tch::Tensor::read_safetensors(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .collect()
}
