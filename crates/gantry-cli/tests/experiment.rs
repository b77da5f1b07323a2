//! `gantry experiment`: a tiny 2-arm x 2-seed grid on the 25-Gaussian benchmark, in parallel
//! processes; the report has a row per arm; a rerun skips finished runs (resume). Bad experiment
//! files and failing runs end in one line.

mod common;

use common::{assert_user_error, gantry};
use std::process::Command;

#[test]
fn runs_a_grid_reports_it_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("exp.toml");
    std::fs::write(
        &cfg,
        r#"
name = "tiny"
base = "gmm-25"
set = ["train.steps=30", "train.batch_size=32", "data.size=512", "eval.every=15", "eval.n=300", "train.sample_every=15"]
seeds = [0, 1]
parallel = 2

[[arm]]
name = "baseline"

[[arm]]
name = "adaptivemix"
set = ["adaptivemix.enabled=true"]
"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let run = || {
        gantry(&[
            "experiment",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--set",
            "train.log_every=5",
        ])
    };
    let first = run();
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{err}");
    let md = std::fs::read_to_string(out.join("report/report.md")).unwrap();
    for needle in [
        "| baseline |",
        "| adaptivemix |",
        "modes ↑",
        "kl ↓",
        "hq_share ↑",
        "not significant",
    ] {
        assert!(md.contains(needle), "{needle:?} missing from:\n{md}");
    }
    assert!(out.join("report/report.html").exists());
    assert!(out.join("report/curve-kl.png").exists());
    assert!(out.join("report/samples-adaptivemix.png").exists());
    // The seed reaches each run: two seeds of one arm train differently.
    let read = |arm: &str, seed: u32| {
        std::fs::read_to_string(out.join(format!("{arm}/seed-{seed}/metrics.jsonl"))).unwrap()
    };
    assert_ne!(read("baseline", 0), read("baseline", 1));
    // The command line's --set reaches every run, and the experiment records it.
    let run_cfg = std::fs::read_to_string(out.join("adaptivemix/seed-1/config.toml")).unwrap();
    assert!(run_cfg.contains("log_every = 5"), "{run_cfg}");
    let recorded = std::fs::read_to_string(out.join("experiment.toml")).unwrap();
    assert!(recorded.contains("train.log_every=5"), "{recorded}");
    let again = run();
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{err}");
    assert_eq!(err.matches(": done").count(), 4, "{err}");
}

#[test]
fn bad_experiment_files_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("exp.toml");
    std::fs::write(&cfg, "name = \"x\"\nbase = \"gmm-25\"\nseeds = [0]\n[[arm]]\nname = \"a\"\nset = [\"fq.kk=1\"]\n").unwrap();
    let out = gantry(&["experiment", "--config", cfg.to_str().unwrap()]);
    assert_user_error(&out, "fq.kk: unknown key");
}

/// The template for one's own image folder needs `--set data.path=...` and says so.
#[test]
fn folder_template_asks_for_its_data_path() {
    let template = concat!(env!("CARGO_MANIFEST_DIR"), "/../../experiments/folder.toml");
    let out = gantry(&["experiment", "--config", template]);
    assert_user_error(&out, "data.path: required for data.kind=folder");
}

/// issue 13: every arm and seed is checked before the first run starts (arm 2's bad FQ setting,
/// a missing weights file), and a repeated seed is refused.
#[test]
fn every_arm_and_seed_is_checked_before_any_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("exp.toml");
    let out = dir.path().join("out");
    let experiment = |text: &str| {
        std::fs::write(&cfg, text).unwrap();
        Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["experiment", "--config", cfg.to_str().unwrap(), "--out"])
            .arg(&out)
            .env("GANTRY_FID_WEIGHTS", dir.path().join("missing.pth"))
            .output()
            .unwrap()
    };
    let head = "name = \"x\"\nbase = \"shapes\"\nset = [\"train.steps=2\"]\n";
    let r = experiment(&format!(
        "{head}seeds = [0]\n[[arm]]\nname = \"a\"\n[[arm]]\nname = \"b\"\nset = [\"fq.enabled=true\", \"fq.k=0\"]\n"
    ));
    assert_user_error(&r, "fq.k: must be at least 1 (arm b)");
    let r = experiment(&format!(
        "{head}seeds = [0]\n[[arm]]\nname = \"a\"\n[[arm]]\nname = \"b\"\nset = [\"diffaugment.enabled=true\", \"diffaugment.policy=colour\"]\n"
    ));
    assert_user_error(&r, "diffaugment.policy");
    let r = experiment(&format!("{head}seeds = [0, 0, 1]\n[[arm]]\nname = \"a\"\n"));
    assert_user_error(&r, "seeds: [0, 0, 1] repeats a seed");
    let r = experiment(&format!(
        "{head}seeds = [0]\n[[arm]]\nname = \"a\"\n[[arm]]\nname = \"b\"\nset = [\"eval.every=1\"]\n"
    ));
    assert_user_error(&r, "missing.pth");
    assert!(!out.join("a").exists(), "no run started");
}

/// A run that fails in a child process ends the experiment with that run's own error (a
/// divergence: a failed run, exit 1).
#[test]
fn a_failing_run_reports_its_own_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("exp.toml");
    std::fs::write(
        &cfg,
        "name = \"x\"\nbase = \"shapes\"\nset = [\"train.steps=3\", \"data.resolution=8\", \"train.batch_size=8\", \"train.g_lr=1e30\", \"train.d_lr=1e30\"]\nseeds = [0]\nparallel = 2\n[[arm]]\nname = \"a\"\n[[arm]]\nname = \"b\"\n",
    )
    .unwrap();
    let out = gantry(&[
        "experiment",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        dir.path().join("out").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("gantry: error: ")
            && last.contains("run failed")
            && last.contains("non-finite"),
        "{err}"
    );
}

/// Each run of an experiment can be a data-parallel job (`nproc`).
#[test]
fn runs_can_be_data_parallel_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("exp.toml");
    std::fs::write(
        &cfg,
        "name = \"dp\"\nbase = \"gmm-25\"\nset = [\"train.steps=10\", \"train.batch_size=32\", \"data.size=256\", \"eval.every=10\", \"eval.n=200\"]\nseeds = [0]\nnproc = 2\n[[arm]]\nname = \"baseline\"\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let r = gantry(&[
        "experiment",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let log = std::fs::read_to_string(out.join("baseline/seed-0/metrics.jsonl")).unwrap();
    assert!(log.contains("dist/ranks_agree"), "{log}");
    assert!(out.join("report/report.md").exists());
    std::fs::write(
        &cfg,
        "name = \"dp\"\nbase = \"gmm-25\"\nset = [\"train.batch_size=33\"]\nseeds = [0]\nnproc = 2\n[[arm]]\nname = \"a\"\n",
    )
    .unwrap();
    let r = gantry(&["experiment", "--config", cfg.to_str().unwrap()]);
    assert_user_error(
        &r,
        "train.batch_size: 33 does not split evenly over nproc = 2",
    );
}

/// A classification experiment (issue 14): CE vs AdaptiveMix x 2 seeds on the built-in shapes,
/// in parallel processes, each run measured (clean, FGSM, PGD accuracy; OOD AUROC / FPR95 per
/// score) and tabulated with mean ± std and significance marks; a rerun skips measured runs.
#[test]
fn classification_arms_are_trained_measured_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("exp.toml");
    std::fs::write(
        &cfg,
        r#"
name = "clf"
task = "classify"
base = ""
set = ["data.spec=shapes", "model.backbone=small", "data.resolution=8", "data.limit=96",
       "data.workers=1", "train.batch_size=16", "train.epochs=1"]
seeds = [0, 1]
parallel = 2

[evaluate]
attacks = "fgsm,pgd-2"
attack_n = 32
ood_n = 32
ood = { uniform = "noise:uniform" }

[[arm]]
name = "ce"

[[arm]]
name = "adaptivemix"
set = ["objective.mode=adaptivemix"]
"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let run = || {
        gantry(&[
            "experiment",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let first = run();
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{err}");
    let md = std::fs::read_to_string(out.join("report/report.md")).unwrap();
    for needle in [
        "| metric | ce | adaptivemix |",
        "| acc ↑ |",
        "| acc_fgsm ↑ |",
        "| acc_pgd-2 ↑ |",
        "| auroc_uniform_principal ↑ |",
        "| fpr95_uniform_energy ↓ |",
        "| wall time (s) |",
        "## Results",
    ] {
        assert!(md.contains(needle), "{needle} missing from\n{md}");
    }
    assert!(md.contains("(n.s.)") || md.contains(" *"), "{md}");
    let second = run();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{err}");
    assert!(err.matches(": done").count() >= 4, "{err}");

    // A bad attack list or OOD set fails before any run.
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("fgsm,pgd-2", "fgsm,pgd-two");
    std::fs::write(&bad, text).unwrap();
    let o = gantry(&[
        "experiment",
        "--config",
        bad.to_str().unwrap(),
        "--out",
        dir.path().join("o2").to_str().unwrap(),
    ]);
    assert_user_error(&o, "pgd-two");
    assert!(!dir.path().join("o2").exists());
}

/// Every experiment file shipped in `experiments/` (the studies and the reproduction configs)
/// resolves for every arm and seed and passes the configuration gate; only the data (and weight
/// files) a user supplies are missing here.
#[test]
fn every_shipped_experiment_file_passes_the_configuration_gate() {
    use gantry::experiment::{ExperimentConfig, Task};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../experiments");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut cfg: ExperimentConfig =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if cfg.task == Task::Gan {
            cfg.set.push("data.path=/data".into());
        }
        for arm in &cfg.arms {
            for &seed in &cfg.seeds {
                let what = format!("{} arm {} seed {seed}", path.display(), arm.name);
                match cfg.task {
                    Task::Gan => cfg
                        .run_config(arm, seed)
                        .and_then(|rc| rc.validate())
                        .unwrap_or_else(|e| panic!("{what}: {e}")),
                    Task::Classify => {
                        cfg.classify_config(arm, seed)
                            .unwrap_or_else(|e| panic!("{what}: {e}"));
                    }
                    Task::Translate => {
                        cfg.translate_config(arm, seed)
                            .unwrap_or_else(|e| panic!("{what}: {e}"));
                    }
                }
            }
        }
        checked += 1;
    }
    assert!(checked >= 7, "{checked} files");
}

/// `task = "translate"`: U-GAT-IT arms (baseline and FQ) run, report, and a rerun skips them.
#[test]
fn translation_experiments_run_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    for (part, shade) in [
        ("trainA", -0.6f32),
        ("trainB", 0.6),
        ("testA", -0.5),
        ("testB", 0.5),
    ] {
        let imgs: Vec<f32> = (0..4 * 3 * 16 * 16)
            .map(|i| shade + 0.3 * ((i % 23) as f32 / 23.0 - 0.5))
            .collect();
        gantry::data::image_io::save_images(&imgs, [4, 3, 16, 16], &dir.path().join(part), "x")
            .unwrap();
    }
    let cfg = dir.path().join("exp.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"t\"\ntask = \"translate\"\nbase = \"ugatit-light-64\"\nseeds = [0]\n\
             set = [\"data.a=\", \"data.b=\", \"data.path={}\", \"data.resolution=16\", \"data.workers=1\", \
             \"model.ch=2\", \"model.n_res=1\", \"model.global_layers=4\", \"model.local_layers=3\", \
             \"train.steps=2\", \"train.batch_size=2\", \"train.log_every=1\"]\n\
             [[arm]]\nname = \"ugatit\"\n[[arm]]\nname = \"fq\"\nset = [\"fq.enabled=true\", \"fq.k=8\"]\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["experiment", "--config", cfg.to_str().unwrap(), "--out"])
            .arg(&out)
            .output()
            .unwrap()
    };
    let first = run();
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{err}");
    assert!(
        out.join("ugatit/seed-0/checkpoints").exists()
            && out.join("fq/seed-0/checkpoints").exists()
    );
    assert!(
        out.join("report/report.md").exists() || out.join("report.md").exists(),
        "{err}"
    );
    let fq_log = std::fs::read_to_string(out.join("fq/seed-0/metrics.jsonl")).unwrap();
    assert!(fq_log.contains("fq/b8/perplexity"), "{fq_log}");
    let again = run();
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{err}");
    assert_eq!(err.matches(": done").count(), 2, "{err}");
}
