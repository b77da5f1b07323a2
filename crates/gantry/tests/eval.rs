//! Periodic evaluation end to end on classifier features: a classifier trained by gantry, metrics
//! logged during training, and the best checkpoint kept by the chosen metric.

mod common;

use gantry::eval::{MetricPlan, MetricSet};
use gantry::train::Trainer;
use gantry::RunConfig;
use std::sync::atomic::AtomicBool;

#[test]
fn classifier_features_drive_periodic_eval_and_the_best_checkpoint() {
    let _rng = common::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let clf = dir.path().join("clf");
    let mut cfg =
        gantry::classify::features_preset("shapes", 8, 20, 0, Default::default()).unwrap();
    cfg.data.limit = Some(512);
    cfg.train.batch_size = 64;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let report = gantry::classify::train(
        &cfg,
        &clf,
        gantry::classify::Start::Fresh,
        &stop,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(report.val_images, 52);
    let acc = report.best_val_acc.unwrap();
    assert!(acc > 0.6, "no better than chance: {acc}");

    let features = format!("eval.features=\"classifier:{}\"", clf.display());
    let sets = common::tiny_sets(&[
        "train.steps=4",
        "eval.every=2",
        "eval.n=20",
        "eval.real_n=40",
        "eval.kid_subset_size=10",
        "eval.metrics=[\"fid\", \"kid\", \"is\", \"pr\"]",
        &features,
    ]);
    let cfg = RunConfig::resolve(None, &sets).unwrap();
    let run = dir.path().join("run");
    let mut t = Trainer::new(cfg.setup(), &run).unwrap();
    t.run(&AtomicBool::new(false), &mut |_| {}).unwrap();
    let rows = gantry::rundir::log::read(&run.join("metrics.jsonl")).unwrap();
    let evals: Vec<_> = rows
        .iter()
        .filter(|r| r.get("eval/classifier_fid20_test40").is_some())
        .collect();
    assert_eq!(evals.len(), 2);
    for r in &evals {
        // Logged under their protocols: 20 generated images against 40 of the test split.
        for k in [
            "eval/classifier_fid20_test40",
            "eval/classifier_kid20_test40",
            "eval/classifier_is20",
            "eval/classifier_pr20n3_test40_precision",
            "eval/classifier_pr20n3_test40_recall",
        ] {
            assert!(r[k].as_f64().is_some_and(f64::is_finite), "{k} in {r}");
        }
    }
    let best: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("checkpoints/best/best.json")).unwrap(),
    )
    .unwrap();
    let fids: Vec<f64> = evals
        .iter()
        .map(|r| r["eval/classifier_fid20_test40"].as_f64().unwrap())
        .collect();
    let min = fids.iter().copied().fold(f64::INFINITY, f64::min);
    assert_eq!(best["metric"], "eval/classifier_fid20_test40");
    assert_eq!(best["value"].as_f64().unwrap(), min);
    assert!(run.join("checkpoints/best/g_ema.safetensors").exists());
}

#[test]
fn identical_features_have_zero_fid_and_bad_metric_names_are_rejected() {
    let x = tch::Tensor::randn([300, 8], (tch::Kind::Double, tch::Device::Cpu));
    let set = gantry_metrics::FeatureSet::from_tensors(&x, None).unwrap();
    let plan = MetricPlan {
        set: MetricSet::Fid,
        name: "fid300_full".into(),
        n: 300,
        reference: Some(0),
    };
    let v = gantry::eval::compute(&plan, "", Some(&set), &set, 1000).unwrap();
    assert_eq!(v[0].0, "fid300_full");
    assert!(v[0].1.abs() < 1e-6, "{v:?}");
    let e = RunConfig::resolve(None, &["eval.metrics=[\"fidd\"]".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("eval.metrics[0]: unknown metric \"fidd\"")
            && e.contains("kid")
            && e.contains("fid50k_full"),
        "{e}"
    );
    let few = gantry::eval::EvalConfig {
        n: 100,
        ..Default::default()
    };
    assert!(few
        .validate(false)
        .unwrap_err()
        .to_string()
        .starts_with("eval.n:"));
}
