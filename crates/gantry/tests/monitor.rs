//! The D-overfitting monitor (`overfit/*`, issue 29): held-out images are never trained on, the
//! monitor leaves the run unchanged, and on a tiny training set the gap between D's outputs on
//! training and held-out reals opens.

mod common;

use gantry::RunConfig;
use gantry_data::{open_with_holdout, DataConfig};

fn config(extra: &[&str]) -> RunConfig {
    RunConfig::resolve(None, &common::tiny_sets(extra)).unwrap()
}

#[test]
fn held_out_images_are_drawn_by_the_seed_and_never_trained_on() {
    let cfg = DataConfig {
        size: 100,
        holdout: 10.0,
        limit: Some(50),
        resolution: 8,
        ..Default::default()
    };
    let pixels = |ds: &dyn gantry_data::Dataset| -> Vec<Vec<u32>> {
        let [c, h, w] = ds.sample_shape();
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        (0..ds.len())
            .map(|i| {
                let mut out = vec![0f32; c * h * w];
                ds.load_into(i, &mut out, &mut rng).unwrap();
                out.iter().map(|v| v.to_bits()).collect()
            })
            .collect()
    };
    let (train, held) = open_with_holdout(&cfg, 7).unwrap();
    let held = held.unwrap();
    assert_eq!((train.len(), held.len()), (50, 10));
    let (t, h) = (pixels(train.as_ref()), pixels(held.as_ref()));
    assert!(
        h.iter().all(|x| !t.contains(x)),
        "a held-out image is trained on"
    );
    // The same seed draws the same images; another seed others.
    let (_, again) = open_with_holdout(&cfg, 7).unwrap();
    assert_eq!(pixels(again.unwrap().as_ref()), h);
    let (_, other) = open_with_holdout(&cfg, 8).unwrap();
    assert_ne!(pixels(other.unwrap().as_ref()), h);
    // A share of the data set; too many is refused.
    let share = DataConfig {
        holdout: 0.05,
        limit: None,
        ..cfg.clone()
    };
    let (train, held) = open_with_holdout(&share, 7).unwrap();
    assert_eq!((train.len(), held.unwrap().len()), (95, 5));
    let all = DataConfig {
        holdout: 100.0,
        ..cfg.clone()
    };
    let e = open_with_holdout(&all, 7).err().unwrap().to_string();
    assert!(
        e.starts_with("data.holdout: 100 held-out images leave none"),
        "{e}"
    );
    let bad = DataConfig {
        holdout: 2.5,
        ..cfg
    };
    let e = open_with_holdout(&bad, 7).err().unwrap().to_string();
    assert!(e.starts_with("data.holdout: 2.5 is neither"), "{e}");
    // Without a hold-out, the test split serves (shapes draws one apart from training).
    let (_, test) = open_with_holdout(&DataConfig::default(), 7).unwrap();
    assert!(test.unwrap().describe().contains("test"));
}

#[test]
fn the_monitor_leaves_the_run_unchanged() {
    let _rng = common::rng_lock();
    let run = |every: &str| {
        let dir = tempfile::tempdir().unwrap();
        let t = common::train(
            config(&["train.steps=6", every, "data.holdout=16"]),
            dir.path(),
        );
        (t.snapshot(), common::log_rows(dir.path()))
    };
    let (with, rows) = run("train.monitor_every=2");
    let (without, quiet) = run("train.monitor_every=0");
    for ((k, a), (_, b)) in with.iter().zip(&without) {
        assert!(a.equal(b), "{k} differs");
    }
    let monitored: Vec<_> = rows
        .iter()
        .filter(|r| r.get("overfit/gap").is_some())
        .collect();
    assert_eq!(monitored.len(), 3);
    for r in monitored {
        for k in ["d_train", "d_holdout", "d_fake", "rt", "gap"] {
            let v = r[format!("overfit/{k}")].as_f64().unwrap();
            assert!(v.is_finite(), "{k}");
        }
        let gap = r["overfit/d_train"].as_f64().unwrap() - r["overfit/d_holdout"].as_f64().unwrap();
        assert!((gap - r["overfit/gap"].as_f64().unwrap()).abs() < 1e-5);
    }
    assert!(quiet.iter().all(|r| r.get("overfit/gap").is_none()));
}

#[test]
fn on_32_training_images_the_gap_opens() {
    let _rng = common::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = RunConfig::resolve(
        None,
        &[
            "data.resolution=16",
            "data.limit=32",
            "data.holdout=128",
            "data.workers=1",
            "model.ngf=16",
            "model.ndf=16",
            "train.batch_size=32",
            "train.steps=400",
            "train.monitor_every=50",
            "train.sample_every=0",
            "train.checkpoint_every=0",
            "train.threads=1",
        ]
        .map(String::from),
    )
    .unwrap();
    common::train(cfg, dir.path());
    let gaps: Vec<f64> = common::log_rows(dir.path())
        .iter()
        .filter_map(|r| r.get("overfit/gap").and_then(|v| v.as_f64()))
        .collect();
    assert_eq!(gaps.len(), 8);
    // D scores its 32 training images well above images it never saw, more so as it trains.
    let late = gaps[4..].iter().sum::<f64>() / 4.0;
    assert!(late > 0.4 && late > 2.0 * gaps[0], "{gaps:?}");
}
