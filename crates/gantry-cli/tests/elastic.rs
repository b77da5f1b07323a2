//! Jobs that survive restarts and refuse to run apart (issue 30): `--resume auto` continues the
//! run in `--out` or starts it there, and the ranks of a job agree on their configuration and
//! networks before step 0.

mod common;

use common::{assert_ok, assert_user_error, checkpoint_store, gantry};
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
    assert_ok(&train(&whole, &["--set", "train.steps=12"]));

    // Nothing there yet: the run starts.
    let auto = dir.path().join("auto");
    let out = train(&auto, &["--resume", "auto", "--set", "train.steps=8"]);
    assert_ok(&out);
    assert!(auto.join("checkpoints/ckpt-0000008").is_dir());
    // Rerun with the same command and a longer budget: it continues, and ends where one
    // uninterrupted run ends, bit for bit.
    assert_ok(&train(
        &auto,
        &["--resume", "auto", "--set", "train.steps=12"],
    ));
    for name in ["g", "d", "adam"] {
        assert_same(
            &checkpoint_store(&auto, 12, name),
            &checkpoint_store(&whole, 12, name),
        );
    }
    // The same command once more: nothing left to do.
    let again = train(&auto, &["--resume", "auto", "--set", "train.steps=12"]);
    assert_ok(&again);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already trained 12 steps"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // The same through the configuration key.
    assert_ok(&train(
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
        assert_ok(out);
    }
}

/// Live processes whose parent is `parent` and whose command line mentions `gantry`.
fn gantry_children(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: the command may hold spaces, so split after the ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("");
        let ppid: u32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == parent && state != "Z" && String::from_utf8_lossy(&cmd).contains("gantry") {
            out.push(pid);
        }
    }
    out.sort();
    out
}

/// torchrun's elastic restarts with `--resume auto`: a rank killed twice, at steps the test does
/// not choose (whenever a checkpoint shows up), and the job still ends with the weights of an
/// uninterrupted run, bit for bit (resume is exact, and so is the job's arithmetic).
#[test]
fn a_torchrun_job_survives_two_killed_ranks_and_ends_as_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let steps = "train.steps=600";
    let every = "train.checkpoint_every=50";
    let straight = dir.path().join("straight");
    let mut args = vec!["train", "--nproc", "2", "--out", straight.to_str().unwrap()];
    args.extend_from_slice(MLP);
    args.extend_from_slice(&["--set", steps, "--set", every]);
    assert_ok(&gantry(&args));

    let run = dir.path().join("elastic");
    let torchrun = common::repo_root().join(".venv/bin/torchrun");
    let mut job = Command::new(&torchrun)
        .args([
            "--standalone",
            "--nproc-per-node",
            "2",
            "--max-restarts",
            "2",
            "--monitor-interval",
            "0.2",
            "--no-python",
        ])
        .arg(env!("CARGO_BIN_EXE_gantry"))
        .args(["train", "--out", run.to_str().unwrap(), "--resume", "auto"])
        .args(MLP)
        .args(["--set", steps, "--set", every])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", torchrun.display()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    // Kill rank 1 once the run has a checkpoint at step 150, then rank 0 (of the restarted
    // job) once it has one at step 350: each time some steps after the checkpoint are lost.
    let mut killed = Vec::new();
    for (at, victim) in [(150, 1), (350, 0)] {
        let ckpt = run.join(format!("checkpoints/ckpt-{at:07}"));
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "no {}",
                ckpt.display()
            );
            assert!(job.try_wait().unwrap().is_none(), "the job ended early");
            let ranks = gantry_children(job.id());
            if ckpt.is_dir() && ranks.len() == 2 && !killed.contains(&ranks[victim]) {
                std::thread::sleep(std::time::Duration::from_millis(150));
                // Ranks start in order, so the lower pid is rank 0.
                let pid = gantry_children(job.id())[victim];
                assert_eq!(pid, ranks[victim]);
                kill9(pid);
                killed.extend(ranks);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let out_pid = job.id();
    let out = job.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Three attempts: the two killed and the one that finished.
    assert_eq!(killed.len(), 4);
    assert!(gantry_children(out_pid).is_empty(), "ranks left behind");
    for name in ["g", "d", "g_ema", "adam"] {
        assert_same(
            &checkpoint_store(&run, 600, name),
            &checkpoint_store(&straight, 600, name),
        );
    }
}

/// SIGKILL, through the `kill` command (no libc in this test crate).
fn kill9(pid: u32) {
    let ok = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -9 {pid}");
}
