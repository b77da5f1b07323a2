//! DiffAugment against the official PyTorch code given the same random draws
//! (`tests/pyref/backbone_diffaugment.py`), in float64: every op and the full
//! `color,translation,cutout` chain, values and input gradients, on a non-square batch so that the
//! two spatial axes cannot be confused. Then the draws' ranges, and gradients flowing from D's score
//! through the plug-in into G's output.

mod common;

use gantry::models::{build_discriminator, DataShape, ModelConfig};
use gantry::plugins::diffaugment::{self, DiffAugment, DiffAugmentConfig, Draw, Op};
use gantry::plugins::{Branch, Critic, Ctx, Phase};
use std::collections::HashMap;
use tch::{nn, Device, Kind, Tensor};

const OPS: [(Op, &str); 5] = [
    (Op::Brightness, "brightness"),
    (Op::Saturation, "saturation"),
    (Op::Contrast, "contrast"),
    (Op::Translation, "translation"),
    (Op::Cutout, "cutout"),
];

fn close(want: &HashMap<String, Tensor>, name: &str, got: &Tensor) {
    let err = common::rel_err(got, &want[name]);
    assert!(err < 1e-12, "{name}: relative error {err}");
}

#[test]
fn every_op_matches_the_official_code_given_the_same_draws() {
    let rng = common::rng_lock();
    tch::manual_seed(21);
    let opts = (Kind::Double, Device::Cpu);
    let x = Tensor::randn([4, 3, 8, 12], opts);
    let gy = Tensor::randn([4, 3, 8, 12], opts);
    let draws: Vec<(&str, Draw)> = OPS
        .iter()
        .map(|(op, name)| (*name, diffaugment::sample(*op, &x)))
        .collect();
    drop(rng);
    let mut inputs = vec![
        ("x".to_string(), x.shallow_clone()),
        ("gy".to_string(), gy.shallow_clone()),
    ];
    for (name, d) in &draws {
        match d {
            Draw::Uniform(_, r) => inputs.push((format!("{name}.r"), r.shallow_clone())),
            Draw::Translation { x, y } | Draw::Cutout { x, y } => {
                inputs.push((format!("{name}.x"), x.shallow_clone()));
                inputs.push((format!("{name}.y"), y.shallow_clone()));
            }
        }
    }
    let named: Vec<(&str, Tensor)> = inputs
        .iter()
        .map(|(k, v)| (k.as_str(), v.shallow_clone()))
        .collect();
    let want = common::pyref("backbone_diffaugment.py", &named);

    for (name, d) in &draws {
        let xin = x.detach().set_requires_grad(true);
        let y = diffaugment::apply(&xin, d);
        close(&want, &format!("{name}.y"), &y);
        let g = Tensor::run_backward(&[(&y * &gy).sum(Kind::Double)], &[&xin], false, false);
        close(&want, &format!("{name}.grad"), &g[0]);
    }
    let xin = x.detach().set_requires_grad(true);
    let y = draws
        .iter()
        .fold(xin.shallow_clone(), |h, (_, d)| diffaugment::apply(&h, d));
    close(&want, "chain.y", &y);
    let g = Tensor::run_backward(&[(&y * &gy).sum(Kind::Double)], &[&xin], false, false);
    close(&want, "chain.grad", &g[0]);
    // The translation and cutout gradients are masks: some pixels get none.
    assert!(want["cutout.grad"].eq(0.0).any().int64_value(&[]) == 1);
}

#[test]
fn draws_cover_the_reference_ranges() {
    let _rng = common::rng_lock();
    tch::manual_seed(3);
    let x = Tensor::zeros([4096, 1, 32, 16], (Kind::Float, Device::Cpu));
    let range = |t: &Tensor| (t.min().int64_value(&[]), t.max().int64_value(&[]));
    match diffaugment::sample(Op::Translation, &x) {
        // int(32 / 8 + 0.5) = 4, int(16 / 8 + 0.5) = 2
        Draw::Translation { x, y } => assert_eq!((range(&x), range(&y)), ((-4, 4), (-2, 2))),
        _ => unreachable!(),
    }
    match diffaugment::sample(Op::Cutout, &x) {
        // Even cutout sizes (16, 8): offsets in [0, side], inclusive.
        Draw::Cutout { x, y } => assert_eq!((range(&x), range(&y)), ((0, 32), (0, 16))),
        _ => unreachable!(),
    }
    match diffaugment::sample(Op::Contrast, &x) {
        Draw::Uniform(_, r) => {
            assert_eq!(r.size(), [4096, 1, 1, 1]);
            let (lo, hi) = (r.min().double_value(&[]), r.max().double_value(&[]));
            assert!(
                (0.0..0.01).contains(&lo) && (0.99..1.0).contains(&hi),
                "{lo} {hi}"
            );
        }
        _ => unreachable!(),
    }
}

#[test]
fn the_plugin_augments_reproducibly_and_passes_gradients_to_g() {
    let _rng = common::rng_lock();
    tch::manual_seed(8);
    let shape = DataShape::image(3, 8, None);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = ModelConfig::Resnet(gantry::models::resnet::ResnetConfig {
        ngf: 4,
        ndf: 4,
        d_sn: true,
        ..Default::default()
    });
    let d = build_discriminator(vs.root(), &cfg, &shape).unwrap();
    let da = DiffAugment::new(&DiffAugmentConfig {
        enabled: true,
        ..Default::default()
    })
    .unwrap();
    let mut critic = Critic::new(d, vec![Box::new(da)]).unwrap();
    let fake = Tensor::randn([6, 3, 8, 8], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let ctx = Ctx {
        phase: Phase::G,
        branch: Branch::Fake,
        step: 0,
        record: true,
    };
    let scored = critic.score(&fake, None, &ctx);
    let g = Tensor::run_backward(&[scored.logits.sum(Kind::Float)], &[&fake], false, false);
    assert!(g[0].abs().sum(Kind::Float).double_value(&[]) > 0.0);
    assert!(g[0].isfinite().all().int64_value(&[]) == 1);

    let ops = DiffAugmentConfig::default().ops();
    tch::manual_seed(1);
    let a = diffaugment::augment(&fake.detach(), &ops);
    tch::manual_seed(1);
    let b = diffaugment::augment(&fake.detach(), &ops);
    assert!(a.equal(&b));
    assert!(!a.equal(&fake.detach()));
}
