//! The `gantry` binary end to end: training writes a run directory, sampling reads it, and every
//! bad input gets one line on stderr, a non-zero exit code and no panic.

mod common;

use common::{assert_user_error, gantry};
use std::path::Path;
use std::process::{Command, Output};

const TINY: &[&str] = &[
    "--set",
    "data.size=64",
    "--set",
    "data.resolution=8",
    "--set",
    "model.ngf=4",
    "--set",
    "model.ndf=4",
    "--set",
    "train.batch_size=8",
    "--set",
    "train.threads=1",
    "--set",
    "train.log_every=1",
    "--set",
    "train.grid=4",
];

fn train_tiny(out: &Path, steps: u32) -> Output {
    let steps = format!("train.steps={steps}");
    let mut args = vec!["train", "--out", out.to_str().unwrap(), "--set", &steps];
    args.extend_from_slice(TINY);
    gantry(&args)
}

#[test]
fn trains_then_samples_a_grid_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = train_tiny(&run, 3);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "config.toml",
        "metrics.jsonl",
        "samples/step-0000003.png",
        "checkpoints/ckpt-0000003/g_ema.safetensors",
    ] {
        assert!(run.join(f).exists(), "missing {f}");
    }
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r.get("step").is_some() && r.get("wall_s").is_some())
        .expect("a training row");
    for k in ["step", "loss/d/adv", "loss/g/adv", "images_per_s", "wall_s"] {
        assert!(first.get(k).is_some(), "metrics.jsonl lacks {k}: {first}");
    }
    let out = gantry(&["report", run.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(run.join("report/index.html")).unwrap();
    assert!(
        html.contains("losses.png")
            && html.contains("step-0000003.png")
            && html.contains("[train]"),
        "{html}"
    );
    assert!(image::open(run.join("report/losses.png")).is_ok());
    let grid = dir.path().join("grid.png");
    let out = gantry(&[
        "sample",
        "--checkpoint",
        run.to_str().unwrap(),
        "--n",
        "9",
        "--out",
        grid.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = image::open(&grid).unwrap();
    assert_eq!(img.width(), 3 * 8 + 4 * 2);
    let files = dir.path().join("files");
    let out = gantry(&[
        "sample",
        "--checkpoint",
        run.to_str().unwrap(),
        "--n",
        "5",
        "--out",
        files.to_str().unwrap(),
        "--seed",
        "3",
    ]);
    assert!(out.status.success());
    assert_eq!(std::fs::read_dir(&files).unwrap().count(), 5);
}

#[test]
fn dry_run_prints_the_resolved_config() {
    let out = gantry(&[
        "train",
        "--config",
        "gmm-25",
        "--set",
        "adaptivemix.enabled=true",
        "--dry-run",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("kind = \"gmm-25\"") && text.contains("[adaptivemix]\nenabled = true"),
        "{text}"
    );
}

#[test]
fn resume_continues_and_refuses_unsafe_changes() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    assert!(train_tiny(&run, 2).status.success());
    let r = run.to_str().unwrap();
    let out = gantry(&["train", "--resume", r, "--set", "train.steps=4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run.join("checkpoints/ckpt-0000004").exists());
    assert_user_error(
        &gantry(&["train", "--resume", r, "--set", "model.ndf=8"]),
        "model.ndf: differs from the run being resumed",
    );
    // A second training into the same directory is refused (nothing is overwritten).
    assert_user_error(&train_tiny(&run, 2), "already holds a run");
}

#[test]
fn bad_inputs_get_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = |name: &str| d.join(name).to_str().unwrap().to_string();

    assert_user_error(
        &gantry(&["train", "--config", "nope"]),
        "unknown preset \"nope\"",
    );
    assert_user_error(
        &gantry(&["train", "--set", "fq.kk=3", "--dry-run"]),
        "fq.kk: unknown key `kk` (did you mean `k`?), valid:",
    );
    assert_user_error(
        &gantry(&["train", "--set", "train.steps=many", "--dry-run"]),
        "train.steps",
    );
    let bad_toml = d.join("bad.toml");
    std::fs::write(&bad_toml, "[train\nsteps = 1").unwrap();
    assert_user_error(
        &gantry(&["train", "--config", bad_toml.to_str().unwrap()]),
        "bad TOML",
    );

    assert_user_error(
        &gantry(&[
            "train",
            "--out",
            &out("a"),
            "--set",
            "data.kind=folder",
            "--set",
            "data.path=/no/such/dir",
        ]),
        "/no/such/dir",
    );
    let empty = d.join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_user_error(
        &gantry(&[
            "train",
            "--out",
            &out("b"),
            "--set",
            "data.kind=folder",
            "--set",
            &format!("data.path={}", empty.display()),
        ]),
        "empty",
    );
    let corrupt = d.join("corrupt");
    std::fs::create_dir(&corrupt).unwrap();
    for i in 0..8 {
        std::fs::write(corrupt.join(format!("{i}.png")), b"not a png").unwrap();
    }
    let mut args = vec![
        "train".to_string(),
        "--out".into(),
        out("c"),
        "--set".into(),
        "data.kind=folder".into(),
        "--set".into(),
        format!("data.path={}", corrupt.display()),
    ];
    args.extend(TINY.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_user_error(&gantry(&args), "cannot decode image");

    if !Path::new("/proc/driver/nvidia").exists() {
        assert_user_error(
            &gantry(&["train", "--device", "cuda", "--out", &out("e")]),
            "no CUDA GPU",
        );
    }
    assert_user_error(
        &gantry(&["train", "--out", "/proc/gantry-run"]),
        "/proc/gantry-run",
    );
    assert_user_error(
        &gantry(&["train", "--resume", d.to_str().unwrap()]),
        "is not a gantry run directory",
    );
    assert_user_error(
        &gantry(&[
            "sample",
            "--checkpoint",
            "/no/such/run",
            "--out",
            &out("s.png"),
        ]),
        "does not exist",
    );
}

/// issue 13: every bad setting is refused before any work, by `--dry-run` too, with one line that
/// names the key (and the valid values of a closed set); flags take the config's typed values.
#[test]
fn issue_13_the_validation_gate_refuses_bad_settings_before_work() {
    let cases: &[(&[&str], &str)] = &[
        (&["train.batch_size=0"], "train.batch_size: must be at least 1"),
        (&["train.d_lr=-0.1"], "train.d_lr: must be a finite number > 0"),
        (&["train.g_lr=inf"], "train.g_lr: must be a finite number > 0"),
        (
            &["eval.every=10", "eval.metrics=[\"fid\"]", "eval.best=\"is\""],
            "eval.best: is is not among the evaluated metrics (valid with eval.metrics as set: fid)",
        ),
        (&["eval.best=pr"], "eval.best: unknown variant `pr`, valid: `fid`"),
        (&["eval.every=10", "eval.metrics=[]"], "eval.metrics: is empty"),
        (&["eval.features=bogus"], "valid: inception, classifier:PATH"),
        (
            &["fq.enabled=true", "fq.layers=[\"b64\"]"],
            "fq.layers: D has no layer \"b64\" (valid: b32, b16, b8)",
        ),
        (&["fq.enabled=true", "fq.k=0"], "fq.k: must be at least 1"),
        (&["adaptivemix.enabled=true", "adaptivemix.alpha=0"], "adaptivemix.alpha"),
        (&["model.channel_base=8"], "model.channel_base: unknown key `channel_base`, valid:"),
        (&["model.d_norm=group"], "model.d_norm: unknown variant `group`, valid: `batch`"),
        (&["model.arch=vit"], "model.arch: unknown architecture \"vit\" (valid: dcgan"),
        (&["model.arch=mlp"], "model.arch: mlp does not fit data.kind = shapes"),
        (&["train.on_nan=retry"], "train.on_nan: unknown variant `retry`, valid: `stop`"),
        (&["train.device=tpu"], "train.device: unknown device \"tpu\" (valid: cpu, cuda, cuda:N)"),
        (&["data.split=val"], "data.split: unknown variant `val`"),
        (&["diffaugment.policy=colour"], "diffaugment.policy: unknown variant `colour`"),
        (&["ada.pipeline=bgcf"], "ada.pipeline: unknown variant `bgcf` (did you mean `bgc`?), valid: `blit`"),
        (&["ada.mode=sometimes"], "ada.mode: unknown variant `sometimes`"),
        (&["ada.enabled=true", "ada.p=1.5"], "ada.p: must be in [0, 1], got 1.5"),
        (&["ada.enabled=true", "ada.interval=0"], "ada.interval: must be at least 1"),
        (&["ada.enabled=true", "ada.kimg=0"], "ada.kimg: must be positive"),
        (&["ada.enabled=true", "ada.cutout=-1"], "ada.cutout: must be a probability multiplier"),
        (
            &["ada.enabled=true", "loss.kind=least-squares"],
            "ada.mode: adaptive steers p by the sign of D's scores",
        ),
        (&["ada.enabled=true", "ada.p_final=2"], "ada.p_final: must be in [0, 1], got 2"),
        (&["train.ema.half_life_start=2"], "train.ema.half_life_start: must be a fraction"),
        (&["train.ema.half_life_kimg=0"], "train.ema.half_life_kimg: must be a finite number > 0"),
        (
            &["ada.enabled=true", "data.kind=gmm-8", "model.arch=mlp"],
            "ada.enabled: ADA augments images; the data are 2-D points",
        ),
        (&["loss.kind=wasserstein"], "loss.kind: wasserstein needs a constraint on D"),
        (&["loss.gp.enabled=true"], "loss.gp.enabled: the gradient penalty is per sample"),
        (&["loss.pl.weight=2"], "loss.pl.weight: path-length regularisation needs"),
    ];
    for (sets, needle) in cases {
        let mut args = vec!["train", "--dry-run"];
        for s in *sets {
            args.extend(["--set", s]);
        }
        assert_user_error(&gantry(&args), needle);
    }
    for (args, needle) in [
        (
            &["fid", "a", "b", "--features", "bogus"][..],
            "valid: inception, classifier:PATH",
        ),
        (
            &["fid", "a", "b", "--mode", "tf1"],
            "(valid: pytorch-fid, tf, clean)",
        ),
        (
            &["eval", "--checkpoint", "x", "--metrics", "fid,fidd"],
            "(valid: fid, kid, is, pr, gmm, or a protocol such as fid50k_full,",
        ),
        (&["train", "--device", "gpu"], "valid: cpu, cuda, cuda:N"),
        (&["bench", "--steps", "0"], "--steps: must be at least 1"),
    ] {
        assert_user_error(&gantry(args), needle);
    }
    // A resolved configuration holds only its architecture's keys; a new arch starts afresh.
    let out = gantry(&[
        "train",
        "--dry-run",
        "--set",
        "model.channel_base=2048",
        "--set",
        "model.arch=stylegan2",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("arch = \"stylegan2\"\nz_dim = 512"), "{text}");
    assert!(
        text.contains("channel_base = 2048") && !text.contains("ngf"),
        "{text}"
    );
    let text = String::from_utf8_lossy(&gantry(&["train", "--dry-run"]).stdout).to_string();
    assert!(
        text.contains(
            "[model]\narch = \"dcgan\"\nz_dim = 100\nngf = 32\nndf = 32\nd_norm = \"batch\"\n\n"
        ),
        "{text}"
    );
}

/// A closed pipe ends the output quietly (issue 19's broken-pipe panics).
#[test]
fn output_into_a_closed_pipe_is_not_a_panic() {
    for args in [&["presets"][..], &["train", "--dry-run"]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn truncated_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    assert!(train_tiny(&run, 1).status.success());
    let f = run.join("checkpoints/ckpt-0000001/g_ema.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 3]).unwrap();
    let png = dir.path().join("s.png");
    assert_user_error(
        &gantry(&[
            "sample",
            "--checkpoint",
            run.to_str().unwrap(),
            "--out",
            png.to_str().unwrap(),
        ]),
        "unreadable or truncated",
    );
}

/// Waits (up to a minute, for slow CI machines) until `path` exists.
fn wait_for(path: &Path) {
    for _ in 0..600 {
        if path.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{} never appeared", path.display());
}

#[test]
fn kill_during_training_and_saving_never_corrupts_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let r = run.to_str().unwrap().to_string();
    // Save at every step so kills land inside saves as well as between them.
    let mut args: Vec<String> = [
        "train",
        "--out",
        &r,
        "--set",
        "train.steps=100000",
        "--set",
        "train.checkpoint_every=1",
        "--set",
        "train.keep_checkpoints=3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(TINY.iter().map(|s| s.to_string()));
    for (i, delay_ms) in [150u64, 430, 610, 890, 1170].iter().enumerate() {
        let mut a = args.clone();
        if i > 0 {
            a = vec!["train".into(), "--resume".into(), r.clone()];
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(&a)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for(&run.join("checkpoints"));
        std::thread::sleep(std::time::Duration::from_millis(*delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        // Every completed checkpoint is whole: sampling from the latest works.
        let png = dir.path().join(format!("s{i}.png"));
        let out = gantry(&[
            "sample",
            "--checkpoint",
            &r,
            "--n",
            "4",
            "--out",
            png.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "after kill {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The latest checkpoint loads and trains on: one step more than it holds.
    let done = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            (e.path().join("meta.json").exists())
                .then(|| name.strip_prefix("ckpt-")?.parse::<u64>().ok())
                .flatten()
        })
        .max()
        .unwrap();
    let steps = format!("train.steps={}", done + 1);
    let out = gantry(&["train", "--resume", &r, "--set", &steps]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigint_saves_and_says_how_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut args = vec![
        "train",
        "--out",
        run.to_str().unwrap(),
        "--set",
        "train.steps=100000",
    ];
    args.extend_from_slice(TINY);
    let child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&run.join("metrics.jsonl"));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("Resume with: gantry train --resume"), "{err}");
    let latest = std::fs::read_dir(run.join("checkpoints")).unwrap().count();
    assert!(latest >= 1);
}

/// A full disk while saving: a clear error, and the previous checkpoint stays usable. Needs a
/// small tmpfs (root, as on CI); elsewhere it says so and returns.
#[test]
fn full_disk_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=4m",
            "tmpfs",
            mnt.to_str().unwrap(),
        ])
        .output();
    if !mounted.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!(
            "full_disk_keeps_the_last_checkpoint: cannot mount a tmpfs here (not root?); not run"
        );
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&mnt);
    let run = mnt.join("run");
    assert!(train_tiny(&run, 2).status.success());
    // Fill the disk.
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let r = run.to_str().unwrap();
    let out = gantry(&[
        "train",
        "--resume",
        r,
        "--set",
        "train.steps=6",
        "--set",
        "train.checkpoint_every=1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    // issue 13: a full disk is a failed run (exit 1), not bad input (exit 2).
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("gantry: error: ") && last.contains("No space left"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    std::fs::remove_file(&filler).unwrap();
    let png = dir.path().join("after.png");
    let out = gantry(&[
        "sample",
        "--checkpoint",
        r,
        "--n",
        "4",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = gantry(&["train", "--resume", r, "--set", "train.steps=4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// issue 19: `--resume RUN/checkpoints/ckpt-N` continues from exactly that checkpoint (the later
/// ones are set aside, and it says so); a run whose latest checkpoint is unreadable names it and
/// the one before.
#[test]
fn issue_19_resume_takes_the_checkpoint_named_and_names_a_bad_latest_one() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut args = vec![
        "train",
        "--out",
        run.to_str().unwrap(),
        "--set",
        "train.steps=6",
        "--set",
        "train.checkpoint_every=2",
        "--set",
        "train.keep_checkpoints=5",
    ];
    args.extend_from_slice(TINY);
    assert!(gantry(&args).status.success());
    let ck = |s: u32| run.join(format!("checkpoints/ckpt-{s:07}"));
    let out = gantry(&[
        "train",
        "--resume",
        ck(2).to_str().unwrap(),
        "--set",
        "train.steps=4",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("the later checkpoints were set aside"),
        "{err}"
    );
    assert!(ck(4).exists() && !ck(6).exists());
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck(4).join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["step"], 4);
    let aside: Vec<_> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("abandoned-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert!(aside[0].path().join("ckpt-0000006/meta.json").exists());
    // The latest checkpoint truncated: resuming the run names it and the one before.
    let g = ck(4).join("g.safetensors");
    let bytes = std::fs::read(&g).unwrap();
    std::fs::write(&g, &bytes[..bytes.len() / 2]).unwrap();
    let out = gantry(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--set",
        "train.steps=8",
    ]);
    assert_user_error(&out, "ckpt-0000004/g.safetensors");
    assert_user_error(&out, "the one before it is");
    assert_user_error(&out, "ckpt-0000002");
}

/// issue 19: samples stream to disk in batches; an impossible request is refused up front, and
/// existing samples are kept unless --force.
#[test]
fn issue_19_sampling_streams_refuses_the_impossible_and_keeps_what_exists() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    assert!(train_tiny(&run, 1).status.success());
    let r = run.to_str().unwrap();
    let out_dir = dir.path().join("s");
    let o = out_dir.to_str().unwrap();
    assert!(
        gantry(&["sample", "--checkpoint", r, "--n", "300", "--out", o])
            .status
            .success()
    );
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 300);
    assert!(out_dir.join("sample000299.png").exists());
    let before = std::fs::read(out_dir.join("sample000000.png")).unwrap();
    assert_user_error(
        &gantry(&[
            "sample",
            "--checkpoint",
            r,
            "--n",
            "2",
            "--out",
            o,
            "--seed",
            "9",
        ]),
        "already holds samples",
    );
    assert_eq!(
        std::fs::read(out_dir.join("sample000000.png")).unwrap(),
        before
    );
    assert!(gantry(&[
        "sample",
        "--checkpoint",
        r,
        "--n",
        "2",
        "--out",
        o,
        "--seed",
        "9",
        "--force"
    ])
    .status
    .success());
    assert_ne!(
        std::fs::read(out_dir.join("sample000000.png")).unwrap(),
        before
    );
    assert_user_error(
        &gantry(&[
            "sample",
            "--checkpoint",
            r,
            "--n",
            "100000000",
            "--out",
            dir.path().join("huge.png").to_str().unwrap(),
        ]),
        "do not fit one grid",
    );
    assert_user_error(
        &gantry(&[
            "sample",
            "--checkpoint",
            r,
            "--n",
            "10000000000000",
            "--out",
            dir.path().join("huge").to_str().unwrap(),
        ]),
        "GB free",
    );
}

/// issue 19: a folder has no test split, so the classifier holds a tenth of it out instead of
/// "validating" on the images it trained on; FID with one image names the side.
#[test]
fn issue_19_classifier_holds_out_validation_data_and_fid_names_the_short_side() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (class, shade) in [("dark", 20u8), ("light", 230u8)] {
        let d = data.join(class);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..20u8 {
            image::RgbImage::from_pixel(8, 8, image::Rgb([shade, shade + i, shade]))
                .save(d.join(format!("{i}.png")))
                .unwrap();
        }
    }
    let out = gantry(&[
        "classifier",
        "train",
        "--data",
        &format!("folder:{}", data.display()),
        "--resolution",
        "8",
        "--epochs",
        "1",
        "--out",
        dir.path().join("c").to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("36 training images")
            && text.contains("accuracy on 4 validation images (held out of the training data"),
        "{text}"
    );
    let one = dir.path().join("one");
    std::fs::create_dir(&one).unwrap();
    image::RgbImage::new(8, 8).save(one.join("a.png")).unwrap();
    let clf = format!("classifier:{}", dir.path().join("c").display());
    let out = gantry(&[
        "fid",
        one.to_str().unwrap(),
        data.join("dark").to_str().unwrap(),
        "--features",
        &clf,
    ]);
    assert_user_error(
        &out,
        &format!(
            "{}: FID statistics: expected at least 2 samples",
            one.display()
        ),
    );
    assert_user_error(&out, "got 1");
    // The check before work starts (experiments with periodic evaluation) takes a classifier
    // run directory, and names a missing one.
    let eval = |p: &std::path::Path| gantry::eval::EvalConfig {
        features: gantry::eval::Features::Classifier(p.to_path_buf()),
        ..Default::default()
    };
    eval(&dir.path().join("c")).check_files(false).unwrap();
    let e = eval(&dir.path().join("nope"))
        .check_files(false)
        .unwrap_err();
    assert!(e.to_string().contains("classifier not found"), "{e}");
}

#[test]
fn report_watch_ends_after_a_last_write_once_the_run_has_finished() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    assert!(train_tiny(&run, 2).status.success());
    let r = run.to_str().unwrap();
    let out = gantry(&["report", r, "--watch", "--every", "0.2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(run.join("report/index.html")).unwrap();
    assert!(html.contains("step-0000002.png"), "{html}");
    assert_user_error(&gantry(&["report", r, "--every", "5"]), "--watch");
    assert_user_error(
        &gantry(&["report", r, "--watch", "--every", "0"]),
        "expected seconds > 0",
    );
}
