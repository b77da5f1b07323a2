//! Gradient accumulation (`train.batch_per_process`, stylegan2-ada's `batch_gpu`): a batch of 64
//! computed as 4 micro-batches of 16 trains as 1 x 64 does, for every loss and plug-in whose
//! statistics are per batch, within float tolerance: the sums of the gradient means are
//! reordered, and Adam's division amplifies the last bits. The runs use Adam's eps = 1e-5: with
//! 1e-8 a gradient element near 1e-8 (a hinge kink, R1's double backward) turns a last-bit
//! difference into a different step (Adam's first step is sign(g)), which is not what is tested.
//! What is not per batch: BatchNorm (statistics of a micro-batch), AdaptiveMix (pairs within a
//! micro-batch), random draws inside a phase (WGAN-GP's interpolation weights, augmentation):
//! the same distribution, other samples (docs/distributed.md).

mod common;

use gantry::RunConfig;
use tch::{Kind, Tensor};

const TOL: f64 = 1e-4;

/// The MLP on the 25-Gaussian mixture: no BatchNorm, whose statistics would be per micro-batch.
fn run(extra: &[&str], micro: usize) -> Vec<(String, Tensor)> {
    let mut sets: Vec<String> = [
        "train.batch_size=64",
        "data.size=512",
        "train.steps=5",
        "train.adam_eps=1e-5",
        "train.threads=1",
        "data.workers=1",
        "train.log_every=1",
        "train.sample_every=0",
        "train.checkpoint_every=0",
        "train.tensorboard=false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    sets.extend(extra.iter().map(|s| s.to_string()));
    sets.push(format!("train.batch_per_process={micro}"));
    let cfg = RunConfig::resolve(Some("gmm-25"), &sets).unwrap();
    let dir = tempfile::tempdir().unwrap();
    common::train(cfg, dir.path()).snapshot()
}

fn max_rel(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> (f64, String) {
    assert_eq!(a.len(), b.len());
    let mut worst = (0f64, String::new());
    for ((ka, ta), (kb, tb)) in a.iter().zip(b) {
        assert_eq!(ka, kb);
        if !ta.is_floating_point() {
            assert!(ta.equal(tb), "{ka}");
            continue;
        }
        let (ta, tb) = (ta.to_kind(Kind::Double), tb.to_kind(Kind::Double));
        let scale = ta.abs().max().double_value(&[]).max(1e-12);
        let d = (&ta - &tb).abs().max().double_value(&[]) / scale;
        if d > worst.0 {
            worst = (d, ka.clone());
        }
    }
    worst
}

#[test]
fn four_micro_batches_of_16_train_as_one_batch_of_64() {
    let _rng = common::rng_lock();
    let cases: [&[&str]; 6] = [
        &["loss.kind=non-saturating"],
        &["loss.kind=hinge"],
        &["loss.kind=least-squares"],
        &["loss.kind=non-saturating", "loss.r1.gamma=1.0"],
        &[
            "loss.kind=relativistic",
            "loss.r1.gamma=1.0",
            "loss.r2.gamma=1.0",
        ],
        // FQ sums its dictionary statistics over the phase's micro-batches and updates once.
        &["fq.enabled=true", "fq.k=8"],
    ];
    for extra in cases {
        let whole = run(extra, 0);
        let split = run(extra, 16);
        let (err, name) = max_rel(&whole, &split);
        assert!(err < TOL, "{extra:?}: {name} differs by {err}");
        // And the comparison can fail: a different batch gives other weights.
        if extra == cases[0] {
            let mut other = extra.to_vec();
            other.push("train.seed=1");
            let (err, _) = max_rel(&whole, &run(&other, 16));
            assert!(err > 1e-2, "{err}");
        }
    }
}

#[test]
fn a_micro_batch_must_divide_the_share() {
    let cfg = RunConfig::resolve(
        Some("gmm-25"),
        &[
            "train.batch_size=64".into(),
            "train.batch_per_process=24".into(),
            "data.size=256".into(),
        ],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let e = gantry::train::Trainer::new(cfg.setup(), dir.path())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.starts_with("train.batch_per_process: 24 does not divide"),
        "{e}"
    );
}
