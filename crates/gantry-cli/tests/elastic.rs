//! Jobs that survive restarts and refuse to run apart (issue 30): `--resume auto` continues the
//! run in `--out` or starts it there, and the ranks of a job agree on their configuration and
//! networks before step 0.

mod common;

use common::{assert_user_error, gantry};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use tch::Tensor;

/// A small, fast GAN run on the 25-Gaussian mixture (no BatchNorm, so ranks agree exactly).
const MLP: &[&str] = &[
    "--config",
    "gmm-25",
    "--set",
    "train.batch_size=32",
    "--set",
    "data.size=256",
    "--set",
    "eval.every=0",
    "--set",
    "train.sample_every=0",
    "--set",
    "train.threads=1",
    "--set",
    "data.workers=1",
    "--set",
    "train.checkpoint_every=4",
];

fn train(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--out", out.to_str().unwrap()];
    args.extend_from_slice(MLP);
    args.extend_from_slice(extra);
    gantry(&args)
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn store(run: &Path, step: u64, name: &str) -> HashMap<String, Tensor> {
    let path = run
        .join(format!("checkpoints/ckpt-{step:07}"))
        .join(format!("{name}.safetensors"));
    Tensor::read_safetensors(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .collect()
}

fn assert_same(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) {
    assert_eq!(a.len(), b.len());
    for (k, ta) in a {
        assert!(ta.equal(&b[k]), "{k} differs");
    }
}

#[test]
fn resume_auto_starts_an_empty_run_continues_a_stopped_one_and_refuses_another() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    ok(&train(&whole, &["--set", "train.steps=12"]));

    // Nothing there yet: the run starts.
    let auto = dir.path().join("auto");
    let out = train(&auto, &["--resume", "auto", "--set", "train.steps=8"]);
    ok(&out);
    assert!(auto.join("checkpoints/ckpt-0000008").is_dir());
    // Rerun with the same command and a longer budget: it continues, and ends where one
    // uninterrupted run ends, bit for bit.
    ok(&train(
        &auto,
        &["--resume", "auto", "--set", "train.steps=12"],
    ));
    for name in ["g", "d", "adam"] {
        assert_same(&store(&auto, 12, name), &store(&whole, 12, name));
    }
    // The same command once more: nothing left to do.
    let again = train(&auto, &["--resume", "auto", "--set", "train.steps=12"]);
    ok(&again);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already trained 12 steps"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // The same through the configuration key.
    ok(&train(
        &auto,
        &["--set", "train.resume=\"auto\"", "--set", "train.steps=16"],
    ));
    assert!(auto.join("checkpoints/ckpt-0000016").is_dir());

    // Another run's directory: refused with the keys that changed, nothing touched.
    let before = std::fs::read_to_string(auto.join("metrics.jsonl")).unwrap();
    let out = train(
        &auto,
        &[
            "--resume",
            "auto",
            "--set",
            "train.steps=20",
            "--set",
            "train.g_lr=0.01",
        ],
    );
    assert_user_error(&out, "train.g_lr: differs from the run being resumed");
    assert_eq!(
        std::fs::read_to_string(auto.join("metrics.jsonl")).unwrap(),
        before
    );
    // Without --out there is no run directory to decide about.
    let out = gantry(&["train", "--resume", "auto", "--config", "gmm-25"]);
    assert_user_error(&out, "--out: --resume auto");
}

/// A free TCP port on localhost (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the ranks of a 2-process job by hand (as torchrun would), rank r with `extra[r]`.
fn job(out: &Path, extra: [&[&str]; 2]) -> Vec<Output> {
    let port = free_port().to_string();
    let children: Vec<_> = (0..2)
        .map(|rank| {
            let mut args = vec!["train", "--out", out.to_str().unwrap()];
            args.extend_from_slice(MLP);
            args.extend_from_slice(&["--set", "train.steps=4"]);
            args.extend_from_slice(extra[rank]);
            Command::new(env!("CARGO_BIN_EXE_gantry"))
                .args(&args)
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("LOCAL_WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

#[test]
fn ranks_with_different_configurations_stop_before_step_0_naming_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = std::time::Instant::now();
    let outs = job(
        &dir.path().join("apart"),
        [
            &["--set", "model.hidden=64"],
            &["--set", "model.hidden=32", "--set", "train.g_lr=0.000123"],
        ],
    );
    for (rank, out) in outs.iter().enumerate() {
        let other = 1 - rank;
        assert_user_error(
            out,
            &format!(
                "the ranks of this job run different configurations (rank {rank} vs rank {other}: "
            ),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("model.hidden = ") && err.contains("train.g_lr = "),
            "{err}"
        );
    }
    assert!(t0.elapsed().as_secs() < 60, "took {:?}", t0.elapsed());
    assert!(!dir.path().join("apart/checkpoints").exists());

    // Per-rank settings may differ: threads, workers.
    let outs = job(
        &dir.path().join("together"),
        [&["--set", "data.workers=1"], &["--set", "data.workers=2"]],
    );
    for out in &outs {
        ok(out);
    }
}
