//! Data-parallel training on CPU with gloo, 2 processes, through the binary: `--nproc 2` and
//! torchrun, equal to one process where it should be, every plug-in, exact resume, a dead rank.

mod common;

use common::{assert_ok, checkpoint_store, gantry};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tch::Tensor;

/// The MLP on the 25-Gaussian mixture: no BatchNorm anywhere, so two ranks with half a batch each
/// compute what one process computes on the whole batch.
const MLP: &[&str] = &[
    "--config",
    "gmm-25",
    "--set",
    "train.batch_size=64",
    "--set",
    "data.size=512",
    "--set",
    "eval.every=0",
    "--set",
    "train.sample_every=0",
    "--set",
    "train.threads=1",
    "--set",
    "data.workers=1",
];

fn train(extra: &[&str], nproc: usize, out: &Path) -> Output {
    let nproc = nproc.to_string();
    let mut args = vec!["train", "--nproc", &nproc, "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    gantry(&args)
}

/// Largest relative difference between two stores (0 = bit for bit).
fn max_rel(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut worst = 0f64;
    for (k, ta) in a {
        let tb = &b[k];
        assert_eq!(ta.size(), tb.size(), "{k}");
        let ta = ta.to_kind(tch::Kind::Double);
        let tb = tb.to_kind(tch::Kind::Double);
        let scale = ta.abs().max().double_value(&[]).max(1e-12);
        worst = worst.max((&ta - &tb).abs().max().double_value(&[]) / scale);
    }
    worst
}

fn rows(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Relative tolerance between 2 ranks x B/2 and 1 rank x B after 20 steps of Adam: the sums of
/// the gradient means are reordered (float32), and Adam's division amplifies the last bits.
const TOL: f64 = 1e-4;

fn one_and_two(dir: &Path, extra: &[&str]) -> (PathBuf, PathBuf) {
    let (one, two) = (dir.join("one"), dir.join("two"));
    assert_ok(&train(extra, 1, &one));
    assert_ok(&train(extra, 2, &two));
    (one, two)
}

#[test]
fn two_ranks_with_half_batches_equal_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let extra: Vec<&str> = MLP
        .iter()
        .copied()
        .chain(["--set", "train.steps=20"])
        .collect();
    let (one, two) = one_and_two(dir.path(), &extra);
    for name in ["g", "d", "g_ema", "adam"] {
        let err = max_rel(
            &checkpoint_store(&one, 20, name),
            &checkpoint_store(&two, 20, name),
        );
        assert!(err < TOL, "{name}: relative difference {err}");
    }
    assert!(rows(&two)
        .iter()
        .any(|r| r.get("dist/mib_reduced").is_some()));
}

/// FQ's dictionaries are bit-identical on every rank (every checkpoint of the job checks it) and
/// match one process's. Only for a few steps: assignments are an argmin, and once the codewords
/// sit among the features a float-level difference flips one, after which the runs part (seen
/// at step 10 here, in G first).
#[test]
fn fq_dictionaries_agree_across_ranks_and_with_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let extra: Vec<&str> = MLP
        .iter()
        .copied()
        .chain([
            "--set",
            "train.steps=5",
            "--set",
            "train.checkpoint_every=1",
            "--set",
            "fq.enabled=true",
            "--set",
            "fq.k=16",
        ])
        .collect();
    let (one, two) = one_and_two(dir.path(), &extra);
    for name in ["g", "d", "plugins"] {
        let err = max_rel(
            &checkpoint_store(&one, 5, name),
            &checkpoint_store(&two, 5, name),
        );
        assert!(err < TOL, "{name}: relative difference {err}");
    }
    let agree: Vec<u64> = rows(&two)
        .iter()
        .filter(|r| r["dist/ranks_agree"] == 1.0)
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(agree, [1, 2, 3, 4, 5]);
}

/// DCGAN's G normalises with BatchNorm: with `train.sync_bn` its statistics span both ranks'
/// shares and the job equals one process; without, each rank's half-batch statistics differ.
#[test]
fn synchronised_batch_norm_makes_dcgan_equal_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = [
        "--set",
        "data.size=64",
        "--set",
        "data.resolution=8",
        "--set",
        "data.workers=1",
        "--set",
        "model.ngf=4",
        "--set",
        "model.ndf=4",
        "--set",
        "model.z_dim=8",
        "--set",
        "model.d_norm=none",
        "--set",
        "train.batch_size=8",
        "--set",
        "train.threads=1",
        "--set",
        "train.sample_every=0",
        "--set",
        "train.steps=5",
    ];
    let one = dir.path().join("one");
    assert_ok(&train(&tiny, 1, &one));
    let synced = dir.path().join("synced");
    let args: Vec<&str> = tiny
        .iter()
        .copied()
        .chain(["--set", "train.sync_bn=true"])
        .collect();
    assert_ok(&train(&args, 2, &synced));
    let per_rank = dir.path().join("per-rank");
    assert_ok(&train(&tiny, 2, &per_rank));
    for name in ["g", "d", "g_ema"] {
        let err = max_rel(
            &checkpoint_store(&one, 5, name),
            &checkpoint_store(&synced, 5, name),
        );
        assert!(err < TOL, "{name}: relative difference {err}");
    }
    assert!(
        max_rel(
            &checkpoint_store(&one, 5, "g"),
            &checkpoint_store(&per_rank, 5, "g")
        ) > 1e-2
    );
}

/// Ctrl-C on the launcher: every rank stops at the same step, rank 0 saves once, the job exits
/// 130 and resumes.
#[test]
fn ctrl_c_on_the_launcher_stops_every_rank_and_saves_once() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut args: Vec<String> = vec![
        "train".into(),
        "--nproc".into(),
        "2".into(),
        "--out".into(),
        run.to_str().unwrap().into(),
    ];
    args.extend(MLP.iter().map(|s| s.to_string()));
    args.extend(
        [
            "--set",
            "train.steps=100000",
            "--set",
            "train.checkpoint_every=0",
        ]
        .map(String::from),
    );
    let launcher = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !rows_exist(&run, 40) {
        assert!(t0.elapsed().as_secs() < 120, "no progress");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: kill(2) on the launcher this test started.
    unsafe {
        libc::kill(launcher.id() as i32, libc::SIGINT);
    }
    let out = launcher.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert_eq!(err.matches("interrupted at step").count(), 1, "{err}");
    // The hint resumes the job as it was started: two processes.
    let hint = format!(
        "Resume with: gantry train --nproc 2 --resume {}",
        run.display()
    );
    assert!(err.contains(&hint), "{err}");
    let ckpts: Vec<_> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("ckpt-") && n != "ckpt-0000000")
        .collect();
    assert_eq!(ckpts.len(), 1, "{ckpts:?}");
    let step: u64 = ckpts[0][5..].parse().unwrap();
    let resumed = gantry(&[
        "train",
        "--nproc",
        "2",
        "--resume",
        run.to_str().unwrap(),
        "--set",
        &format!("train.steps={}", step + 3),
    ]);
    assert_ok(&resumed);
}

/// Whether the run's log has reached `step`.
fn rows_exist(run: &Path, step: u64) -> bool {
    std::fs::read_to_string(run.join("metrics.jsonl")).is_ok_and(|t| {
        t.lines().any(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|r| r["step"].as_u64().is_some_and(|s| s >= step))
        })
    })
}

#[test]
fn every_plugin_and_stylegan2_train_on_two_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = [
        "--set",
        "data.size=64",
        "--set",
        "data.resolution=8",
        "--set",
        "data.workers=1",
        "--set",
        "train.batch_size=8",
        "--set",
        "train.threads=1",
        "--set",
        "train.log_every=1",
        "--set",
        "train.sample_every=0",
        "--set",
        "train.steps=4",
        "--set",
        "train.grid=4",
    ];
    let cases: [&[&str]; 2] = [
        &[
            "--set",
            "model.ngf=4",
            "--set",
            "model.ndf=4",
            "--set",
            "adaptivemix.enabled=true",
            "--set",
            "fq.enabled=true",
            "--set",
            "fq.k=8",
            "--set",
            "fq.restart_dead=true",
            "--set",
            "diffaugment.enabled=true",
            "--set",
            "loss.r1.gamma=1.0",
            "--set",
            "loss.r1.every=2",
        ],
        &[
            "--config",
            "stylegan2-32-small",
            "--set",
            "model.channel_base=64",
            "--set",
            "model.channel_max=8",
            "--set",
            "model.z_dim=8",
            "--set",
            "model.w_dim=8",
            "--set",
            "loss.pl.every=2",
            "--set",
            "loss.r1.every=2",
            "--set",
            "fq.enabled=true",
            "--set",
            "fq.k=8",
            "--set",
            "ada.enabled=true",
            "--set",
            "ada.p=0.3",
            "--set",
            "ada.kimg=0.01",
            "--set",
            "ada.interval=1",
        ],
    ];
    for (i, case) in cases.iter().enumerate() {
        let run = dir.path().join(format!("run{i}"));
        let args: Vec<&str> = case.iter().chain(tiny.iter()).copied().collect();
        assert_ok(&train(&args, 2, &run));
        let rows = rows(&run);
        let losses: Vec<f64> = rows
            .iter()
            .filter_map(|r| r.get("loss/d/adv").and_then(|v| v.as_f64()))
            .collect();
        assert_eq!(losses.len(), 4, "{case:?}");
        assert!(losses.iter().all(|v| v.is_finite()), "{case:?}");
        assert!(
            rows.iter().any(|r| r["dist/ranks_agree"] == 1.0),
            "{case:?}"
        );
        if i == 1 {
            assert!(rows.iter().any(|r| r.get("loss/g/pl").is_some()));
            // ADA's p moved, the same way on both ranks (ranks_agree covers the plug-in store).
            assert!(rows
                .iter()
                .any(|r| r.get("ada/p").and_then(|v| v.as_f64()) != Some(0.3)));
        }
    }
}

/// The job torchrun starts is the job `--nproc` starts, bit for bit.
#[test]
fn torchrun_starts_the_same_job() {
    let dir = tempfile::tempdir().unwrap();
    let extra: Vec<&str> = MLP
        .iter()
        .copied()
        .chain(["--set", "train.steps=6"])
        .collect();
    let ours = dir.path().join("nproc");
    assert_ok(&train(&extra, 2, &ours));
    let theirs = dir.path().join("torchrun");
    let torchrun: PathBuf = common::repo_root().join(".venv/bin/torchrun");
    let out = Command::new(&torchrun)
        .args(["--standalone", "--nproc-per-node", "2", "--no-python"])
        .arg(env!("CARGO_BIN_EXE_gantry"))
        .args(["train", "--out", theirs.to_str().unwrap()])
        .args(&extra)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", torchrun.display()));
    assert_ok(&out);
    for name in ["g", "d", "g_ema", "adam"] {
        assert_eq!(
            max_rel(
                &checkpoint_store(&ours, 6, name),
                &checkpoint_store(&theirs, 6, name)
            ),
            0.0,
            "{name}"
        );
    }
}

/// N steps + resume + N steps = 2N steps, with two ranks; resuming with another number of
/// processes works and says it is not bit-exact.
#[test]
fn resume_with_two_ranks_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let with = |steps: &str| -> Vec<String> {
        MLP.iter()
            .map(|s| s.to_string())
            .chain(["--set".into(), format!("train.steps={steps}")])
            .collect()
    };
    let straight = dir.path().join("straight");
    let args = with("8");
    assert_ok(&train(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        2,
        &straight,
    ));
    let halves = dir.path().join("halves");
    let args = with("4");
    assert_ok(&train(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        2,
        &halves,
    ));
    let resumed = gantry(&[
        "train",
        "--nproc",
        "2",
        "--resume",
        halves.to_str().unwrap(),
        "--set",
        "train.steps=8",
    ]);
    assert_ok(&resumed);
    for name in ["g", "d", "g_ema", "adam"] {
        assert_eq!(
            max_rel(
                &checkpoint_store(&straight, 8, name),
                &checkpoint_store(&halves, 8, name)
            ),
            0.0,
            "{name}"
        );
    }
    let one = gantry(&[
        "train",
        "--resume",
        halves.to_str().unwrap(),
        "--set",
        "train.steps=10",
    ]);
    assert_ok(&one);
    assert!(String::from_utf8_lossy(&one.stderr).contains("not bit-exactly"));
    assert!(rows(&halves).iter().any(|r| r["event"] == "note"));
}

/// The ranks the launcher started (its children), by rank.
fn ranks_of(launcher: u32) -> HashMap<usize, u32> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid != Some(launcher) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        for var in env.split(|&b| b == 0) {
            if let Some(r) = var.strip_prefix(b"RANK=") {
                if let Ok(r) = String::from_utf8_lossy(r).parse() {
                    out.insert(r, pid);
                }
            }
        }
    }
    out
}

/// A rank killed mid-run ends the job within a bounded time, with a line naming a rank; the
/// last checkpoint resumes.
#[test]
fn a_killed_rank_ends_the_job_and_the_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut args: Vec<String> = vec![
        "train".into(),
        "--nproc".into(),
        "2".into(),
        "--out".into(),
        run.to_str().unwrap().into(),
    ];
    args.extend(MLP.iter().map(|s| s.to_string()));
    args.extend(
        [
            "--set",
            "train.steps=100000",
            "--set",
            "train.checkpoint_every=20",
            "--set",
            "train.collective_timeout_s=30",
        ]
        .map(String::from),
    );
    let launcher = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for a checkpoint past the initial one, then kill rank 1.
    let t0 = std::time::Instant::now();
    while !run.join("checkpoints/ckpt-0000040").exists() {
        assert!(t0.elapsed().as_secs() < 120, "no progress");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let ranks = ranks_of(launcher.id());
    let victim = ranks[&1];
    // SAFETY: kill(2) on a process this test started (through the launcher).
    unsafe {
        libc::kill(victim as i32, libc::SIGKILL);
    }
    let killed = std::time::Instant::now();
    let out = launcher.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(killed.elapsed().as_secs() < 60, "{:?}", killed.elapsed());
    assert_eq!(out.status.code(), Some(1), "{err}");
    // The launcher's last line names the dead rank and its signal (not the survivor, whose
    // collective broke); the survivor's own error comes just before it.
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!("gantry: error: rank 1 of 2 (pid {victim}) was killed by signal 9 (SIGKILL)"),
        "{err}"
    );
    assert!(
        err.contains("gantry: rank 0 of 2") && err.contains("all-reduce failed"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let resumed = gantry(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--set",
        "train.steps=45",
    ]);
    assert_ok(&resumed);
}

/// `gantry train --nproc 2` on the MLP for ever (until killed), its stderr piped; returns the
/// launcher once rank 0 has logged a few steps.
fn start_forever(run: &Path) -> std::process::Child {
    let mut args: Vec<String> = vec![
        "train".into(),
        "--nproc".into(),
        "2".into(),
        "--out".into(),
        run.to_str().unwrap().into(),
    ];
    args.extend(MLP.iter().map(|s| s.to_string()));
    args.extend(
        [
            "--set",
            "train.steps=100000",
            "--set",
            "train.checkpoint_every=0",
            "--set",
            "train.collective_timeout_s=30",
        ]
        .map(String::from),
    );
    let launcher = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !rows_exist(run, 20) {
        assert!(t0.elapsed().as_secs() < 120, "no progress");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    launcher
}

/// Whether `pid` has ended (gone, or a zombie nobody has reaped yet).
fn ended(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X")
    })
}

/// Rank 0 killed by a signal mid-run: the launcher's last line names rank 0 and the signal
/// (rank 0 used to die without any line from the launcher), and the job exits 1.
#[test]
fn a_signalled_rank_0_is_named_by_the_launcher() {
    let dir = tempfile::tempdir().unwrap();
    let launcher = start_forever(&dir.path().join("run"));
    let ranks = ranks_of(launcher.id());
    let victim = ranks[&0];
    // SAFETY: kill(2) on a process this test started (through the launcher).
    unsafe {
        libc::kill(victim as i32, libc::SIGUSR1);
    }
    let out = launcher.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!("gantry: error: rank 0 of 2 (pid {victim}) was killed by signal 10 (SIGUSR1)"),
        "{err}"
    );
    assert!(err.contains("gantry: rank 1 of 2"), "{err}");
}

/// kill -9 of the launcher takes its ranks with it: none trains on as an orphan.
#[test]
fn the_ranks_die_with_a_killed_launcher() {
    let dir = tempfile::tempdir().unwrap();
    let mut launcher = start_forever(&dir.path().join("run"));
    let ranks: Vec<u32> = ranks_of(launcher.id()).into_values().collect();
    assert_eq!(ranks.len(), 2);
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    let t0 = std::time::Instant::now();
    while !ranks.iter().all(|&p| ended(p)) && t0.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let orphans: Vec<u32> = ranks.iter().copied().filter(|&p| !ended(p)).collect();
    for &p in &orphans {
        // SAFETY: kill(2) on a process this test started; cleans up before failing.
        unsafe {
            libc::kill(p as i32, libc::SIGKILL);
        }
    }
    assert!(
        orphans.is_empty(),
        "ranks {orphans:?} outlived the launcher"
    );
}
