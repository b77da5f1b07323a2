//! ADA against a transcription of stylegan2-ada-pytorch's `AugmentPipe` given the same random draws
//! (`tests/pyref/ada_ref.py`), in float64: the augmented batch and its input gradient for RGB and
//! grey batches, each pipeline, several p. The p heuristic against the training loop's update for
//! one sequence of D logits. Then: gradients of the second order exist (R1 through the pipeline),
//! p = 0 leaves a batch alone, and the state lives in the plug-in store (what checkpoints save).

mod common;

use gantry::dist::Comm;
use gantry::plugins::ada::{self, Ada, AdaConfig, Mode, Pipeline};
use gantry::plugins::{Branch, Ctx, Phase, Plugin};
use std::collections::HashMap;
use tch::{nn, Device, Kind, Tensor};

const OPTS: (Kind, Device) = (Kind::Double, Device::Cpu);

struct Case {
    name: &'static str,
    pipeline: Pipeline,
    shape: [i64; 4],
    p: f64,
    /// Colour and cutout probability multipliers.
    mult: (f64, f64),
}

impl Case {
    fn cfg(&self) -> AdaConfig {
        AdaConfig {
            pipeline: self.pipeline,
            color_multiplier: self.mult.0,
            cutout: self.mult.1,
            ..Default::default()
        }
    }
}

const CASES: [Case; 8] = [
    Case {
        name: "rgb_bgc",
        pipeline: Pipeline::Bgc,
        shape: [5, 3, 12, 16],
        p: 0.6,
        mult: (1.0, 0.0),
    },
    Case {
        name: "grey_bgc",
        pipeline: Pipeline::Bgc,
        shape: [4, 1, 16, 16],
        p: 0.8,
        mult: (1.0, 0.0),
    },
    Case {
        name: "rgb_blit",
        pipeline: Pipeline::Blit,
        shape: [6, 3, 8, 8],
        p: 1.0,
        mult: (1.0, 0.0),
    },
    Case {
        name: "rgb_geom",
        pipeline: Pipeline::Geom,
        shape: [4, 3, 16, 12],
        p: 0.5,
        mult: (1.0, 0.0),
    },
    Case {
        name: "rgb_color",
        pipeline: Pipeline::Color,
        shape: [4, 3, 8, 8],
        p: 0.9,
        mult: (1.0, 0.0),
    },
    // R3GAN's pipeline: colour at half probability, cutout.
    Case {
        name: "rgb_r3gan",
        pipeline: Pipeline::Bgc,
        shape: [6, 3, 12, 12],
        p: 0.55,
        mult: (0.5, 1.0),
    },
    Case {
        name: "grey_color_cutout",
        pipeline: Pipeline::Color,
        shape: [5, 1, 8, 10],
        p: 0.9,
        mult: (0.5, 1.0),
    },
    Case {
        name: "grey_bg_p_above_one",
        pipeline: Pipeline::Bg,
        shape: [3, 1, 8, 8],
        p: 1.3,
        mult: (1.0, 0.0),
    },
];

fn flags(p: Pipeline) -> Tensor {
    let (b, g, c) = match p {
        Pipeline::Blit => (1, 0, 0),
        Pipeline::Geom => (0, 1, 0),
        Pipeline::Color => (0, 0, 1),
        Pipeline::Bg => (1, 1, 0),
        Pipeline::Bgc => (1, 1, 1),
    };
    Tensor::from_slice(&[b as f64, g as f64, c as f64])
}

fn ctl_logits() -> Tensor {
    // 24 steps of 8 logits: D confident on reals for a while (p rises), then not (p falls to 0).
    let base = Tensor::randn([24, 8], OPTS);
    let bias = Tensor::from_slice(
        &(0..24)
            .map(|t| if t < 10 { 1.5 } else { -2.0 })
            .collect::<Vec<f64>>(),
    )
    .view([24, 1]);
    base + bias
}

#[test]
fn the_pipeline_and_the_p_heuristic_match_the_reference() {
    let rng = common::rng_lock();
    tch::manual_seed(17);
    let mut inputs: Vec<(String, Tensor)> = Vec::new();
    let mut ours: HashMap<String, (Tensor, Tensor)> = HashMap::new();
    for case in &CASES {
        let [b, c, _, _] = case.shape;
        let x = Tensor::randn(case.shape, OPTS);
        let gy = Tensor::randn(case.shape, OPTS);
        let draws = ada::sample(&case.cfg(), b, c, Device::Cpu);
        let draws = ada::Draws(
            draws
                .0
                .into_iter()
                .map(|(k, v)| (k, v.to_kind(Kind::Double)))
                .collect(),
        );
        let xin = x.shallow_clone().set_requires_grad(true);
        let y = ada::apply(&xin, &draws, &case.cfg(), case.p);
        let g = Tensor::run_backward(&[(&y * &gy).sum(Kind::Double)], &[&xin], false, false);
        ours.insert(case.name.to_string(), (y.detach(), g[0].shallow_clone()));
        let n = case.name;
        inputs.push((format!("{n}/x"), x));
        inputs.push((format!("{n}/gy"), gy));
        inputs.push((format!("{n}/p"), Tensor::from_slice(&[case.p])));
        inputs.push((format!("{n}/pipeline"), flags(case.pipeline)));
        inputs.push((
            format!("{n}/mult"),
            Tensor::from_slice(&[case.mult.0, case.mult.1]),
        ));
        for (k, v) in draws.0 {
            inputs.push((format!("{n}/{k}"), v));
        }
    }
    let logits = ctl_logits();
    drop(rng);
    let (target, kimg, interval) = (0.6, 0.05, 4u64);
    inputs.push(("ctl.logits".into(), logits.shallow_clone()));
    inputs.push((
        "ctl.params".into(),
        Tensor::from_slice(&[0.1, target, kimg, interval as f64]),
    ));
    let named: Vec<(&str, Tensor)> = inputs
        .iter()
        .map(|(k, v)| (k.as_str(), v.shallow_clone()))
        .collect();
    let want = common::pyref("ada_ref.py", &named);

    for case in &CASES {
        let (y, g) = &ours[case.name];
        let ey = common::rel_err(y, &want[&format!("{}/y", case.name)]);
        let eg = common::rel_err(g, &want[&format!("{}/grad", case.name)]);
        assert!(ey < 1e-9 && eg < 1e-9, "{}: y {ey}, grad {eg}", case.name);
        // The transforms did something.
        assert!(common::rel_err(y, &named_input(&inputs, case.name)) > 1e-3);
    }

    // The heuristic, fed the same logits, step by step.
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = AdaConfig {
        enabled: true,
        mode: Mode::Adaptive,
        p: 0.1,
        target,
        kimg,
        interval,
        ..Default::default()
    };
    let mut plugin = Ada::new(&vs.root(), &cfg, 3).unwrap();
    let comm = Comm::single();
    let want_p = &want["ctl.p"];
    let mut moved = 0;
    for t in 0..24 {
        let ctx = |branch| Ctx {
            phase: Phase::D,
            branch,
            step: t as u64,
            record: true,
        };
        plugin.observe(&logits.get(t), &ctx(Branch::Real));
        // Fakes and G's scores never count.
        plugin.observe(&(logits.get(t) * -1.0), &ctx(Branch::Fake));
        plugin.end_phase(Phase::D, &comm).unwrap();
        plugin.end_phase(Phase::G, &comm).unwrap();
        let p = plugin.probability();
        let w = want_p.double_value(&[t]);
        assert!((p - w).abs() < 1e-6, "step {t}: p {p}, reference {w}");
        if t > 0 && (w - want_p.double_value(&[t - 1])).abs() > 0.0 {
            moved += 1;
        }
    }
    assert!(moved >= 4, "the sequence should move p both ways");
    assert_eq!(want_p.double_value(&[23]), 0.0, "ends clamped at 0");
}

fn named_input(inputs: &[(String, Tensor)], case: &str) -> Tensor {
    inputs
        .iter()
        .find(|(k, _)| k == &format!("{case}/x"))
        .unwrap()
        .1
        .shallow_clone()
}

/// R1 differentiates D's score through the augmentation, then the optimiser differentiates R1:
/// the second-order gradient must exist and agree with finite differences.
#[test]
fn second_order_gradients_flow_through_the_pipeline() {
    let _rng = common::rng_lock();
    tch::manual_seed(5);
    let x = Tensor::randn([2, 3, 8, 8], OPTS);
    let bgc = AdaConfig {
        cutout: 1.0,
        ..Default::default()
    };
    let draws = ada::sample(&bgc, 2, 3, Device::Cpu);
    let draws = ada::Draws(
        draws
            .0
            .into_iter()
            .map(|(k, v)| (k, v.to_kind(Kind::Double)))
            .collect(),
    );
    let w = Tensor::randn([4, 3, 3, 3], OPTS);
    let r1 = |w: &Tensor| -> Tensor {
        let xin = x.shallow_clone().set_requires_grad(true);
        let y = ada::apply(&xin, &draws, &bgc, 0.9);
        let score = y
            .conv2d(w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1)
            .tanh()
            .sum(Kind::Double);
        let g = Tensor::run_backward(&[score], &[&xin], true, true);
        g[0].square().sum(Kind::Double)
    };
    let wv = w.shallow_clone().set_requires_grad(true);
    let grad = Tensor::run_backward(&[r1(&wv)], &[&wv], false, false)[0].shallow_clone();
    let dir = Tensor::randn([4, 3, 3, 3], OPTS);
    let h = 1e-5;
    let fd = (r1(&(&w + &dir * h)).double_value(&[]) - r1(&(&w - &dir * h)).double_value(&[]))
        / (2.0 * h);
    let analytic = (&grad * &dir).sum(Kind::Double).double_value(&[]);
    assert!(
        (fd - analytic).abs() < 1e-6 * analytic.abs().max(1.0),
        "finite difference {fd}, autograd {analytic}"
    );
}

#[test]
fn p_zero_passes_the_batch_and_the_state_lives_in_the_plugin_store() {
    let _rng = common::rng_lock();
    let vs = nn::VarStore::new(Device::Cpu);
    let mut plugin = Ada::new(&(vs.root() / "ada"), &AdaConfig::default(), 1).unwrap();
    let x = Tensor::randn([3, 1, 8, 8], (Kind::Float, Device::Cpu));
    let ctx = Ctx {
        phase: Phase::D,
        branch: Branch::Real,
        step: 0,
        record: true,
    };
    assert!(plugin.augment(x.shallow_clone(), &ctx).equal(&x));
    let mut names: Vec<String> = vs.variables().into_keys().collect();
    names.sort();
    assert_eq!(names, ["ada.p", "ada.window"]);
    // A checkpoint restores p: write into the store, and after `state_restored` (the trainer
    // calls it after every restore) the plug-in reads it.
    let _ = tch::no_grad(|| vs.variables()["ada.p"].shallow_clone().fill_(0.25));
    plugin.state_restored();
    assert_eq!(plugin.probability(), 0.25);
    assert!(!plugin.augment(x.shallow_clone(), &ctx).equal(&x));
    // Reflect padding needs more than 1 pixel; other channel counts are refused up front.
    let e = Ada::new(&vs.root(), &AdaConfig::default(), 4)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.starts_with("ada.enabled:") && e.contains("4 channels"),
        "{e}"
    );
}

/// The reference resamples even at p = 0; gantry skips (the doc says by how little that moves).
#[test]
fn the_identity_resampling_changes_almost_nothing() {
    let _rng = common::rng_lock();
    tch::manual_seed(2);
    let x = Tensor::rand([2, 3, 16, 16], OPTS);
    let bg = AdaConfig {
        pipeline: Pipeline::Bg,
        ..Default::default()
    };
    let draws = ada::sample(&bg, 2, 3, Device::Cpu);
    let draws = ada::Draws(
        draws
            .0
            .into_iter()
            .map(|(k, v)| (k, v.to_kind(Kind::Double)))
            .collect(),
    );
    let y = ada::apply(&x, &draws, &bg, 0.0);
    let diff = (&y - &x).abs().max().double_value(&[]);
    assert!(diff < 1e-10, "{diff}");
}

/// `mode = "schedule"`: p follows the training schedule's progress (R3GAN's 0 -> 0.55 ramp), and
/// the signs are still measured (logged) without moving it.
#[test]
fn the_scheduled_p_follows_the_schedule() {
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = AdaConfig {
        enabled: true,
        mode: Mode::Schedule,
        p: 0.0,
        p_final: 0.55,
        interval: 1,
        ..Default::default()
    };
    let mut plugin = Ada::new(&vs.root(), &cfg, 3).unwrap();
    let comm = Comm::single();
    for progress in [0.0, 0.5, 1.0] {
        plugin.begin_step(progress);
        let ctx = Ctx {
            phase: Phase::D,
            branch: Branch::Real,
            step: 0,
            record: true,
        };
        plugin.observe(&Tensor::ones([8], (Kind::Float, Device::Cpu)), &ctx);
        plugin.end_phase(Phase::D, &comm).unwrap();
        assert!((plugin.probability() - 0.55 * progress).abs() < 1e-7);
    }
    let mut stats = gantry::stats::Stats::default();
    plugin.stats(&mut stats);
    assert_eq!(stats.get("ada/signs"), Some(1.0));
}

/// A critic that scores an image with a row of logits (U-GAT-IT's patches and CAM) counts one
/// sign per image, of the row's mean: p moves by images, as `kimg` says.
#[test]
fn rows_of_scores_count_as_one_image_each() {
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = AdaConfig {
        enabled: true,
        kimg: 0.001,
        interval: 1,
        target: 0.0,
        ..Default::default()
    };
    let mut plugin = Ada::new(&vs.root(), &cfg, 3).unwrap();
    // 4 images x 6 scores: rows 0-2 positive on average, row 3 negative.
    let rows = Tensor::from_slice(&[
        1.0f32, 1.0, -0.5, 1.0, 1.0, 1.0, //
        0.2, 0.2, 0.2, -0.1, 0.2, 0.2, //
        2.0, -1.0, 2.0, -1.0, 2.0, -1.0, //
        -3.0, 1.0, 1.0, -3.0, 1.0, 1.0,
    ])
    .view([4, 6]);
    let ctx = Ctx {
        phase: Phase::D,
        branch: Branch::Real,
        step: 0,
        record: true,
    };
    plugin.observe(&rows, &ctx);
    plugin.end_phase(Phase::D, &Comm::single()).unwrap();
    let mut stats = gantry::stats::Stats::default();
    plugin.stats(&mut stats);
    assert_eq!(stats.get("ada/signs"), Some(0.5), "(3 - 1) / 4 images");
    // sign(0.5 - 0) * 4 images / (0.001 * 1000) = +4, from 0.
    assert_eq!(plugin.probability(), 4.0);
}
