//! Mixed precision on CPU: bf16 training stays finite and tracks fp32; fp16 trains with its loss
//! scaler (overflowing steps skipped, the scale backing off) and resumes exactly; checkpoints move
//! between precisions; channels-last trains to what the default layout does.

mod common;

use gantry::train::{Outcome, Trainer};
use gantry::RunConfig;
use std::path::Path;
use std::sync::atomic::AtomicBool;

fn config(extra: &[&str]) -> RunConfig {
    RunConfig::resolve(None, &common::tiny_sets(extra)).unwrap()
}

fn losses(dir: &Path, key: &str) -> Vec<f64> {
    common::log_rows(dir)
        .iter()
        .filter_map(|r| r.get(key).and_then(|v| v.as_f64()))
        .collect()
}

/// bf16 autocast for 50 steps: every logged value finite, and the adversarial losses within a
/// band of fp32's: each within 20%, their means within 5% (bf16 keeps ~3 significant digits; the
/// runs part slowly).
#[test]
fn bf16_training_is_finite_and_tracks_fp32() {
    let _rng = common::rng_lock();
    let run = |precision: &str| {
        let dir = tempfile::tempdir().unwrap();
        common::train(
            config(&["train.steps=50", &format!("train.precision={precision}")]),
            dir.path(),
        );
        dir
    };
    let (fp32, bf16) = (run("fp32"), run("bf16"));
    for row in common::log_rows(bf16.path()) {
        for (k, v) in row.as_object().unwrap() {
            assert!(v.as_f64().is_some_and(f64::is_finite), "{k} = {v}");
        }
    }
    for key in ["loss/d/adv", "loss/g/adv"] {
        let (a, b) = (losses(fp32.path(), key), losses(bf16.path(), key));
        assert_eq!(a.len(), 50);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 0.2 * x.abs().max(0.1), "{key}: {x} vs {y}");
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (ma, mb) = (mean(&a), mean(&b));
        assert!(
            (ma - mb).abs() <= 0.05 * ma.abs(),
            "{key}: means {ma} vs {mb}"
        );
    }
}

/// fp16 with dynamic loss scaling: started at a scale of 10^6, D's first step overflows, is
/// skipped (reported, not a divergence) and the scale backs off; the run finishes finite, and
/// N + resume + N = 2N with the scaler's state in the checkpoint.
#[test]
fn fp16_skips_overflowing_steps_backs_off_and_resumes_exactly() {
    let _rng = common::rng_lock();
    let fp16 = |steps: u64| {
        config(&[
            "train.precision=fp16",
            "train.loss_scale=1e6",
            &format!("train.steps={steps}"),
        ])
    };
    let dir = tempfile::tempdir().unwrap();
    let straight = common::train(fp16(8), dir.path());
    let skipped: f64 = losses(dir.path(), "fp16/skipped").iter().sum();
    let scale_d = losses(dir.path(), "fp16/scale_d");
    assert!(skipped > 0.0, "no step overflowed at scale 10^6");
    assert!(scale_d.iter().all(|&s| s < 1e6), "{scale_d:?}");
    assert!(losses(dir.path(), "loss/d/adv")
        .iter()
        .all(|v| v.is_finite()));
    let half = tempfile::tempdir().unwrap();
    drop(common::train(fp16(4), half.path()));
    let mut resumed = gantry::run::resume(half.path(), Some(fp16(8))).unwrap();
    assert_eq!(
        resumed.run(&AtomicBool::new(false), &mut |_| {}).unwrap(),
        Outcome::Finished { step: 8 }
    );
    for ((ka, ta), (kb, tb)) in straight.snapshot().iter().zip(&resumed.snapshot()) {
        assert_eq!(ka, kb);
        assert!(ta.equal(tb), "{ka} differs");
    }
    assert_eq!(
        losses(dir.path(), "fp16/scale_d").last(),
        losses(half.path(), "fp16/scale_d").last()
    );
}

/// A checkpoint written in one precision (or memory format) continues in another.
#[test]
fn checkpoints_move_between_precisions_and_layouts() {
    let _rng = common::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    drop(common::train(config(&["train.steps=2"]), dir.path()));
    for (i, change) in [
        "train.precision=bf16",
        "train.precision=fp16",
        "train.channels_last=true",
        "train.precision=fp32",
    ]
    .iter()
    .enumerate()
    {
        let steps = format!("train.steps={}", 3 + i);
        let mut t = gantry::run::resume(dir.path(), Some(config(&[&steps, change]))).unwrap();
        let out = t.run(&AtomicBool::new(false), &mut |_| {}).unwrap();
        assert_eq!(out, Outcome::Finished { step: 3 + i as u64 }, "{change}");
    }
}

/// Channels-last changes the memory layout, not the arithmetic's meaning: the same run, to
/// float rounding.
#[test]
fn channels_last_trains_like_the_default_layout() {
    let _rng = common::rng_lock();
    let run = |extra: &[&str]| -> Trainer {
        let mut sets = vec!["train.steps=3"];
        sets.extend_from_slice(extra);
        common::train(config(&sets), tempfile::tempdir().unwrap().path())
    };
    let (a, b) = (run(&[]), run(&["train.channels_last=true"]));
    for ((ka, ta), (_, tb)) in a.snapshot().iter().zip(&b.snapshot()) {
        let scale = ta.abs().max().double_value(&[]).max(1e-6);
        let err = (ta - tb).abs().max().double_value(&[]) / scale;
        assert!(err < 1e-3, "{ka}: {err}");
    }
}

/// FQ's nearest-codeword search runs in fp32 whatever the autocast: under bf16 autocast a plain
/// matmul would round the distances of near codewords together (the first assertion shows the
/// autocast is live for a matmul), and the assignments must equal fp32's exactly.
#[test]
fn fq_assigns_codewords_in_fp32_under_autocast() {
    use gantry::plugins::fq::{FqConfig, FqLayer};
    use gantry::precision::{Autocast, Precision};
    use tch::{nn, Device, Kind, Tensor};
    let _rng = common::rng_lock();
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let layer = FqLayer::new(vs.root(), "x", 256, 64, &FqConfig::default());
    let x = Tensor::randn([2048, 64], (Kind::Float, Device::Cpu)) * 3.0;
    let want = layer.assign(&x);
    let (probe, got) = {
        let _bf16 = Autocast::new(Device::Cpu, Precision::Bf16);
        (x.mm(&layer.state()[0].tr()).kind(), layer.assign(&x))
    };
    assert_eq!(probe, Kind::BFloat16, "autocast is not live for matmuls");
    let differ = got.ne_tensor(&want).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(differ, 0, "{differ} of 2048 assignments differ from fp32's");
}

/// R1 under fp16 autocast: D's backward runs in fp16, where small per-pixel input gradients fall
/// into the subnormals (rounded coarsely, or to zero); taking them of the loss-scaled logits keeps
/// them (torch.amp's gradient-penalty recipe), close to fp32's R1.
#[test]
fn r1_under_fp16_autocast_keeps_small_gradients_with_the_loss_scale() {
    use gantry::loss::penalty;
    use gantry::precision::{Autocast, Precision};
    use tch::{Device, Kind, Tensor};
    let _rng = common::rng_lock();
    tch::manual_seed(0);
    let opts = (Kind::Float, Device::Cpu);
    // A linear critic whose input gradients are ~1e-8: fp16 holds its weights (~1e-4) and the
    // upstream gradient (1e-4), not their products.
    let w = Tensor::randn([1, 3, 3, 3], opts) * 1e-4;
    let x = Tensor::randn([4, 3, 8, 8], opts).set_requires_grad(true);
    let critic = |x: &Tensor| {
        x.conv2d(&w, None::<Tensor>, [1], [0], [1], 1)
            .sum_dim_intlist(&[1i64, 2, 3][..], false, Kind::Float)
            * 1e-4
    };
    let want = penalty::r1(&critic(&x), &x).double_value(&[]);
    let (plain, scaled) = {
        let _fp16 = Autocast::new(Device::Cpu, Precision::Fp16);
        let logits = critic(&x);
        (
            penalty::r1(&logits, &x).double_value(&[]),
            penalty::r1_scaled(&logits, &x, 65536.0).double_value(&[]),
        )
    };
    assert!(want > 0.0);
    assert!(
        ((plain - want) / want).abs() > 0.2,
        "unscaled fp16 R1 {plain} should be off (fp32 {want}): gradients in fp16's subnormals"
    );
    assert!(
        ((scaled - want) / want).abs() < 0.02,
        "scaled fp16 R1 {scaled} vs fp32 {want}"
    );
}
