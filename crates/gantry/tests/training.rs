//! Training-level invariants on tiny models: exact resume, plug-ins switched off = baseline,
//! FQ with beta = 0 = baseline, every loss x plug-in combination stays finite, and the NaN guard.

mod common;

use gantry::train::{Outcome, Trainer};
use gantry::RunConfig;
use std::sync::atomic::AtomicBool;
use tch::Tensor;

fn config(extra: &[&str]) -> RunConfig {
    RunConfig::resolve(None, &common::tiny_sets(extra)).unwrap()
}

fn assert_same(a: &[(String, Tensor)], b: &[(String, Tensor)], only: impl Fn(&str) -> bool) {
    let a: Vec<_> = a.iter().filter(|(k, _)| only(k)).collect();
    let b: Vec<_> = b.iter().filter(|(k, _)| only(k)).collect();
    assert_eq!(a.len(), b.len());
    assert!(!a.is_empty());
    for ((ka, ta), (kb, tb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert!(ta.equal(tb), "{ka} differs");
    }
}

fn resume_is_exact(extra: &[&str]) {
    let n = 3;
    let straight_dir = tempfile::tempdir().unwrap();
    let mut full = extra.to_vec();
    let steps_2n = format!("train.steps={}", 2 * n);
    full.push(&steps_2n);
    let straight = common::train(config(&full), straight_dir.path());

    let dir = tempfile::tempdir().unwrap();
    let mut half = extra.to_vec();
    let steps_n = format!("train.steps={n}");
    half.push(&steps_n);
    drop(common::train(config(&half), dir.path()));
    let mut resumed = gantry::run::resume(dir.path(), Some(config(&full))).unwrap();
    assert_eq!(resumed.step(), n);
    resumed.run(&AtomicBool::new(false), &mut |_| {}).unwrap();
    assert_same(&straight.snapshot(), &resumed.snapshot(), |_| true);
}

#[test]
fn resume_continues_bit_for_bit() {
    let _rng = common::rng_lock();
    resume_is_exact(&[]);
}

/// A schedule is a function of the step: a run of 6 steps interrupted after 3 and resumed
/// equals the straight run (an interrupted run, since changing `train.steps` would stretch it).
#[test]
fn resume_continues_a_learning_rate_schedule_bit_for_bit() {
    let _rng = common::rng_lock();
    let sets = [
        "train.lr_schedule=cosine",
        "train.lr_final=0.1",
        "train.beta2_final=0.99",
        "train.gamma_final=0.1",
        "loss.r1.gamma=1.0",
        "train.steps=6",
    ];
    let straight_dir = tempfile::tempdir().unwrap();
    let straight = common::train(config(&sets), straight_dir.path());
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(config(&sets).setup(), dir.path()).unwrap();
    let stop = AtomicBool::new(false);
    let mut seen = 0;
    t.run(&stop, &mut |ev| {
        if let gantry::train::Event::Logged { .. } = ev {
            seen += 1;
            if seen == 3 {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    })
    .unwrap();
    drop(t);
    let mut resumed = gantry::run::resume(dir.path(), None).unwrap();
    assert_eq!(resumed.step(), 3);
    resumed.run(&AtomicBool::new(false), &mut |_| {}).unwrap();
    assert_same(&straight.snapshot(), &resumed.snapshot(), |_| true);
    let log = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    for k in ["schedule/lr", "schedule/gamma", "schedule/beta2"] {
        assert!(log.contains(k), "{k} missing from {log}");
    }
}

/// With `train.schedule_kimg`, the schedules end at a fixed number of images (R3GAN: 20M) and
/// hold their final values; the run's length no longer stretches them.
#[test]
fn schedules_end_at_their_horizon_whatever_the_runs_length() {
    let _rng = common::rng_lock();
    let lr = |steps: &str| -> Vec<f64> {
        let sets = [
            "train.lr_schedule=cosine",
            "train.lr_final=0.1",
            "train.schedule_kimg=0.04", // 40 images: 5 steps of 8
            steps,
        ];
        let dir = tempfile::tempdir().unwrap();
        common::train(config(&sets), dir.path());
        common::log_rows(dir.path())
            .iter()
            .filter_map(|r| r.get("schedule/lr").and_then(|v| v.as_f64()))
            .collect()
    };
    let (long, short) = (lr("train.steps=8"), lr("train.steps=6"));
    assert_eq!(long.len(), 8, "{long:?}");
    assert_eq!(
        &long[..6],
        &short[..],
        "the first steps do not depend on train.steps"
    );
    assert!(long[..5].windows(2).all(|w| w[1] < w[0]), "{long:?}");
    assert!(
        long[5..].iter().all(|&v| (v - 0.1).abs() < 1e-12),
        "{long:?}"
    );
}

#[test]
fn learning_rate_schedules_follow_their_formulas() {
    use gantry::train::LrSchedule;
    let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    close(LrSchedule::Constant.factor(7, 10, 0.0), 1.0);
    close(LrSchedule::Linear.factor(0, 10, 0.0), 1.0);
    close(LrSchedule::Linear.factor(5, 10, 0.0), 0.5);
    close(LrSchedule::Linear.factor(10, 10, 0.2), 0.2);
    close(LrSchedule::Cosine.factor(0, 10, 0.1), 1.0);
    close(LrSchedule::Cosine.factor(5, 10, 0.1), 0.55);
    close(LrSchedule::Cosine.factor(10, 10, 0.1), 0.1);
    close(LrSchedule::Cosine.factor(20, 10, 0.1), 0.1);
}

#[test]
fn resume_with_adaptivemix_and_fq_continues_bit_for_bit() {
    let _rng = common::rng_lock();
    resume_is_exact(&[
        "adaptivemix.enabled=true",
        "fq.enabled=true",
        "fq.k=8",
        "loss.r1.gamma=1.0",
        "loss.r1.every=2",
    ]);
}

#[test]
fn resume_refuses_changed_config_but_allows_safe_keys() {
    let _rng = common::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    drop(common::train(config(&["train.steps=1"]), dir.path()));
    let e = gantry::run::resume(
        dir.path(),
        Some(config(&["train.steps=2", "train.g_lr=0.1"])),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.starts_with("train.g_lr: differs from the run being resumed"),
        "{e}"
    );
    assert!(gantry::run::resume(
        dir.path(),
        Some(config(&["train.steps=2", "train.log_every=5"]))
    )
    .is_ok());
}

#[test]
fn disabled_plugins_leave_the_run_unchanged() {
    let _rng = common::rng_lock();
    let base = common::train(
        config(&["train.steps=3"]),
        tempfile::tempdir().unwrap().path(),
    );
    let off = common::train(
        config(&[
            "train.steps=3",
            "adaptivemix.sigma=0.3",
            "adaptivemix.alpha=0.2",
            "fq.k=7",
            "fq.beta=3.0",
        ]),
        tempfile::tempdir().unwrap().path(),
    );
    assert_same(&base.snapshot(), &off.snapshot(), |_| true);
}

#[test]
fn fq_with_beta_zero_in_loss_only_mode_is_the_baseline() {
    let _rng = common::rng_lock();
    let base = common::train(
        config(&["train.steps=3"]),
        tempfile::tempdir().unwrap().path(),
    );
    let fq = common::train(
        config(&["train.steps=3", "fq.enabled=true", "fq.beta=0.0", "fq.k=8"]),
        tempfile::tempdir().unwrap().path(),
    );
    assert_same(&base.snapshot(), &fq.snapshot(), |k| {
        !k.starts_with("plugins/")
    });
    // ... while the dictionary did learn.
    assert!(fq
        .snapshot()
        .iter()
        .any(|(k, _)| k == "plugins/fq.b8.codebook"));
}

#[test]
fn every_loss_and_plugin_combination_stays_finite() {
    let _rng = common::rng_lock();
    let losses: [&[&str]; 6] = [
        &["loss.kind=non-saturating"],
        &["loss.kind=hinge"],
        &["loss.kind=least-squares"],
        &[
            "loss.kind=wasserstein",
            "loss.gp.enabled=true",
            "model.d_norm=layer",
        ],
        &["loss.kind=non-saturating", "loss.r1.gamma=10.0"],
        &[
            "loss.kind=relativistic",
            "loss.r1.gamma=1.0",
            "loss.r2.gamma=1.0",
            "model.d_norm=none",
        ],
    ];
    let plugins: [&[&str]; 4] = [
        &[],
        &["adaptivemix.enabled=true"],
        &["fq.enabled=true", "fq.k=8"],
        &[
            "adaptivemix.enabled=true",
            "fq.enabled=true",
            "fq.k=8",
            "fq.mode=forward",
        ],
    ];
    for l in losses {
        for p in plugins {
            let mut sets = vec!["train.steps=3"];
            sets.extend_from_slice(l);
            sets.extend_from_slice(p);
            let dir = tempfile::tempdir().unwrap();
            common::train(config(&sets), dir.path());
            let rows = common::log_rows(dir.path());
            assert_eq!(
                rows.iter()
                    .filter(|r| r.get("loss/d/adv").is_some())
                    .count(),
                3,
                "{sets:?}"
            );
            for row in rows {
                for (k, v) in row.as_object().unwrap() {
                    let v = v.as_f64().unwrap_or_else(|| panic!("{sets:?}: {k} is {v}"));
                    assert!(v.is_finite(), "{sets:?}: {k} = {v}");
                }
            }
        }
    }
}

#[test]
fn mlp_on_gaussian_mixture_trains_with_both_plugins() {
    let _rng = common::rng_lock();
    let cfg = RunConfig::resolve(
        Some("gmm-25"),
        &[
            "train.steps=5".into(),
            "train.batch_size=32".into(),
            "train.threads=1".into(),
            "data.size=256".into(),
            "adaptivemix.enabled=true".into(),
            "fq.enabled=true".into(),
            "fq.k=16".into(),
        ],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    common::train(cfg, dir.path());
    assert!(dir.path().join("samples/step-0000005.png").exists());
}

#[test]
fn non_finite_loss_stops_without_applying_the_step_and_keeps_the_checkpoint() {
    let _rng = common::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    // A learning rate that overflows the weights within a couple of steps.
    let mut t = Trainer::new(
        config(&[
            "train.steps=50",
            "train.d_lr=1e30",
            "train.g_lr=1e30",
            "train.checkpoint_every=1",
            "train.keep_checkpoints=2",
        ])
        .setup(),
        dir.path(),
    )
    .unwrap();
    let err = t.run(&AtomicBool::new(false), &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("non-finite"), "{msg}");
    let rows = gantry::rundir::log::read(&dir.path().join("metrics.jsonl")).unwrap();
    assert!(rows
        .iter()
        .any(|r| r.get("event").and_then(|e| e.as_str()) == Some("non-finite")));
    let last = gantry::rundir::checkpoint::latest(dir.path()).expect("a good checkpoint survives");
    let meta = gantry::rundir::checkpoint::read_meta(&last).unwrap();
    assert!(meta.step < 50);
    // The saved weights are finite: the failing step was not applied.
    for (k, v) in gantry::rundir::checkpoint::read_store(&last, "d").unwrap() {
        assert!(
            v.isfinite().all().int64_value(&[]) == 1,
            "{k} is not finite"
        );
    }
}

#[test]
fn interrupt_saves_and_resume_continues() {
    let _rng = common::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(config(&["train.steps=4"]).setup(), dir.path()).unwrap();
    let stop = AtomicBool::new(false);
    let mut seen = 0;
    let out = t
        .run(&stop, &mut |ev| {
            if let gantry::train::Event::Logged { .. } = ev {
                seen += 1;
                if seen == 2 {
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        })
        .unwrap();
    assert_eq!(out, Outcome::Interrupted { step: 2 });
    let mut r = gantry::run::resume(dir.path(), None).unwrap();
    assert_eq!(r.step(), 2);
    assert_eq!(
        r.run(&AtomicBool::new(false), &mut |_| {}).unwrap(),
        Outcome::Finished { step: 4 }
    );
}

#[test]
fn rollback_policy_reloads_the_last_checkpoint_with_a_new_seed_then_gives_up() {
    let _rng = common::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(
        config(&[
            "train.steps=50",
            "train.d_lr=1e30",
            "train.g_lr=1e30",
            "train.on_nan=rollback",
        ])
        .setup(),
        dir.path(),
    )
    .unwrap();
    let mut warnings = Vec::new();
    let err = t
        .run(&AtomicBool::new(false), &mut |ev| {
            if let gantry::train::Event::Warning(w) = ev {
                warnings.push(w);
            }
        })
        .unwrap_err();
    // Every retry diverges again with this learning rate: three rollbacks, then it stops.
    assert!(err.to_string().starts_with("non-finite"), "{err}");
    assert_eq!(
        warnings
            .iter()
            .filter(|w| w.contains("rolling back"))
            .count(),
        3,
        "{warnings:?}"
    );
    let rows = gantry::rundir::log::read(&dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(
        rows.iter()
            .filter(|r| r.get("event").and_then(|e| e.as_str()) == Some("non-finite"))
            .count(),
        4
    );
}

/// issue 13: a rollback keeps its own record. The divergence happens past the last checkpoint
/// (step 4, checkpoint at step 3), and the log still shows it and the rollback after resuming
/// from step 3, before the steps that were trained again.
#[test]
fn issue_13_a_rollback_keeps_the_record_of_its_divergence() {
    let _rng = common::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(
        config(&["train.steps=3", "train.on_nan=rollback"]).setup(),
        dir.path(),
    )
    .unwrap();
    t.run(&AtomicBool::new(false), &mut |_| {}).unwrap();
    // Continue to 6 steps; one step without a checkpoint, then poison D so step 4 diverges.
    let mut t = gantry::run::resume(
        dir.path(),
        Some(config(&["train.steps=6", "train.on_nan=rollback"])),
    )
    .unwrap();
    t.train_step().unwrap();
    assert_eq!(t.step(), 4);
    let (_, w) = t
        .snapshot()
        .into_iter()
        .find(|(k, _)| k.starts_with("d/") && k.ends_with("conv.weight"))
        .unwrap();
    tch::no_grad(|| {
        let _ = w.shallow_clone().fill_(f64::NAN);
    });
    let mut warnings = Vec::new();
    let out = t
        .run(&AtomicBool::new(false), &mut |ev| {
            if let gantry::train::Event::Warning(w) = ev {
                warnings.push(w);
            }
        })
        .unwrap();
    assert_eq!(out, Outcome::Finished { step: 6 });
    assert_eq!(
        warnings
            .iter()
            .filter(|w| w.contains("rolling back"))
            .count(),
        1,
        "{warnings:?}"
    );
    let rows = gantry::rundir::log::read(&dir.path().join("metrics.jsonl")).unwrap();
    let event = |name: &str| {
        rows.iter()
            .position(|r| r.get("event").and_then(|e| e.as_str()) == Some(name))
            .unwrap_or_else(|| panic!("no {name} event in {rows:?}"))
    };
    let (diverged, rolled_back) = (event("non-finite"), event("rollback"));
    assert_eq!(rows[diverged]["step"], 4);
    assert!(rows[rolled_back]["detail"]
        .as_str()
        .unwrap()
        .contains("continued from step 3"));
    // The steps trained again come after the record, and each once.
    let steps: Vec<u64> = rows[rolled_back..]
        .iter()
        .filter(|r| r.get("loss/d/adv").is_some())
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [4, 5, 6]);
    assert!(diverged < rolled_back);
}
