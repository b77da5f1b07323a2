//! R3GAN's G and D against a PyTorch transcription of brownvc/R3GAN's Networks.py
//! (`tests/pyref/r3gan_nets.py`, which loads gantry's weights strictly, so the parameter names
//! are the reference's) in float64, unconditional and class-conditional, with uneven widths,
//! cardinalities and block counts per stage; and the presets train with every plug-in.

mod common;

use gantry::models::r3gan::{R3ganConfig, R3ganDiscriminator, R3ganGenerator};
use gantry::models::{DataShape, Discriminator, Generator};
use gantry::RunConfig;
use tch::{nn, Device, Kind, Tensor};

fn opts() -> (Kind, Device) {
    (Kind::Double, Device::Cpu)
}

fn assert_close(what: &str, a: &Tensor, b: &Tensor) {
    let e = common::rel_err(a, b);
    assert!(e < 1e-9, "{what}: relative error {e}");
}

fn check_against_pytorch(conditional: bool) {
    let _rng = common::rng_lock();
    tch::manual_seed(5);
    let classes = 4;
    let shape = DataShape::image(3, 16, conditional.then_some(classes));
    let cfg = R3ganConfig {
        z_dim: 6,
        widths: vec![8, 6, 4],
        cardinality: vec![2, 2, 2],
        blocks: vec![1, 2, 1],
        expansion: 2,
        kernel: 3,
        conditional,
    };
    let mut g_vs = nn::VarStore::new(Device::Cpu);
    let mut d_vs = nn::VarStore::new(Device::Cpu);
    let g = R3ganGenerator::new(g_vs.root(), &cfg, &shape);
    let d = R3ganDiscriminator::new(d_vs.root(), &cfg, &shape);
    g_vs.double();
    d_vs.double();
    // Zero-initialised biases and last layers would hide mistakes: perturb everything.
    for vs in [&g_vs, &d_vs] {
        tch::no_grad(|| {
            for (_, v) in vs.variables() {
                let _ = v.shallow_clone().g_add_(&(v.randn_like() * 0.2));
            }
        });
    }
    let z = Tensor::randn([3, 6], opts());
    let u = Tensor::randn([3, 3, 16, 16], opts());
    let x = Tensor::randn([5, 3, 16, 16], opts());
    let labels_g = Tensor::from_slice(&[3i64, 0, 2]);
    let labels_d = Tensor::from_slice(&[1i64, 3, 0, 2, 2]);
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for (prefix, vs) in [("g", &g_vs), ("d", &d_vs)] {
        named.extend(
            vs.variables()
                .into_iter()
                .map(|(k, v)| (format!("{prefix}.{k}"), v.detach().copy())),
        );
    }
    let list = |v: &[i64]| Tensor::from_slice(v);
    named.extend([
        ("cfg.resolution".to_string(), Tensor::from(16i64)),
        ("cfg.channels".into(), Tensor::from(3i64)),
        ("cfg.z_dim".into(), Tensor::from(6i64)),
        (
            "cfg.classes".into(),
            Tensor::from(if conditional { classes } else { 0 }),
        ),
        ("cfg.widths".into(), list(&cfg.widths)),
        ("cfg.cardinality".into(), list(&cfg.cardinality)),
        ("cfg.blocks".into(), list(&cfg.blocks)),
        ("cfg.expansion".into(), Tensor::from(2i64)),
        ("cfg.kernel".into(), Tensor::from(3i64)),
        ("z".into(), z.copy()),
        ("u".into(), u.copy()),
        ("x".into(), x.copy()),
        ("labels_g".into(), labels_g.copy()),
        ("labels_d".into(), labels_d.copy()),
    ]);
    let inputs: Vec<(&str, Tensor)> = named
        .iter()
        .map(|(k, v)| (k.as_str(), v.shallow_clone()))
        .collect();
    let want = common::pyref("r3gan_nets.py", &inputs);
    let (lg, ld) = if conditional {
        (Some(&labels_g), Some(&labels_d))
    } else {
        (None, None)
    };

    let img = g.forward(&z, lg, true);
    assert_eq!(img.size(), [3, 3, 16, 16]);
    assert_close("img", &img, &want["img"]);
    let gw = g_vs.variables()["MainLayers.1.Layers.1.LinearLayer2.Layer.weight"].shallow_clone();
    let grads = Tensor::run_backward(&[(&img * &u).sum(Kind::Double)], &[&gw], false, false);
    assert_close("g_grad_w", &grads[0], &want["g_grad_w"]);

    let xr = x.set_requires_grad(true);
    let f = d.embed(&xr, true);
    assert_eq!(f.size(), [5, 8, 4, 4]);
    assert_close("embed", &f, &want["embed"]);
    let logits = d.head(&f, ld, true);
    assert_close("logits", &logits, &want["logits"]);
    let dw = d_vs.variables()["MainLayers.0.Layers.0.LinearLayer2.Layer.weight"].shallow_clone();
    let grads = Tensor::run_backward(&[logits.sum(Kind::Double)], &[&xr, &dw], false, false);
    assert_close("d_grad_x", &grads[0], &want["d_grad_x"]);
    assert_close("d_grad_w", &grads[1], &want["d_grad_w"]);
    assert_eq!(d.taps(), ["b16", "b8", "b4"]);
}

#[test]
fn g_and_d_match_pytorch() {
    check_against_pytorch(false);
}

#[test]
fn conditional_g_and_d_match_pytorch() {
    check_against_pytorch(true);
}

/// Initialisation as the reference's MSRInitializer: the last layer of every residual branch is
/// zero (each block starts as the identity), the others have std gain / sqrt(fan_in).
#[test]
fn initialisation_follows_the_reference() {
    let _rng = common::rng_lock();
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = R3ganConfig {
        widths: vec![256],
        cardinality: vec![8],
        blocks: vec![2],
        ..Default::default()
    };
    let _g = R3ganGenerator::new(vs.root(), &cfg, &DataShape::image(3, 32, None));
    let vars = vs.variables();
    let std = |k: &str| f64::try_from(vars[k].std(true)).unwrap();
    assert_eq!(
        f64::try_from(
            vars["MainLayers.1.Layers.1.LinearLayer3.Layer.weight"]
                .abs()
                .sum(Kind::Float)
        )
        .unwrap(),
        0.0
    );
    // 4 stages x 2 blocks: variance-scaling parameter 8, gain sqrt(2 / 1.04) * 8^(-1/4).
    let gain = (2.0f64 / 1.04).sqrt() * 8f64.powf(-0.25);
    let want1 = gain / 256f64.sqrt();
    let got1 = std("MainLayers.1.Layers.1.LinearLayer1.Layer.weight");
    assert!((got1 / want1 - 1.0).abs() < 0.02, "{got1} vs {want1}");
    let want2 = gain / ((512 / 8 * 9) as f64).sqrt();
    let got2 = std("MainLayers.1.Layers.1.LinearLayer2.Layer.weight");
    assert!((got2 / want2 - 1.0).abs() < 0.02, "{got2} vs {want2}");
}

#[test]
fn presets_train_with_every_plugin() {
    let _rng = common::rng_lock();
    let plugins: [&[&str]; 5] = [
        &[],
        &["adaptivemix.enabled=true"],
        &["fq.enabled=true", "fq.k=8"],
        &["ada.enabled=true", "ada.p=0.5"],
        &[
            "ada.enabled=true",
            "ada.p=0.5",
            "adaptivemix.enabled=true",
            "fq.enabled=true",
            "fq.k=8",
            "model.conditional=true",
        ],
    ];
    for p in plugins {
        let mut sets = vec![
            "train.steps=2",
            "model.widths=[8]",
            "model.cardinality=[2]",
            "data.resolution=16",
        ];
        sets.extend_from_slice(p);
        let cfg = RunConfig::resolve(Some("r3gan-small"), &common::tiny_run_sets(&sets)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        common::train(cfg, dir.path());
        let rows = gantry::rundir::log::read(&dir.path().join("metrics.jsonl")).unwrap();
        let last = rows
            .iter()
            .rev()
            .find(|r| r.get("loss/d/r2").is_some())
            .expect("logged");
        for k in ["loss/d/adv", "loss/d/r1", "loss/d/r2", "loss/g/adv"] {
            assert!(
                last[k].as_f64().is_some_and(f64::is_finite),
                "{p:?}: {k} in {last}"
            );
        }
    }
    // The paper's CIFAR-10 configuration resolves and passes the gate.
    let c = RunConfig::resolve(Some("r3gan-cifar"), &["data.path=/x".to_string()]).unwrap();
    c.validate().unwrap();
    // ADA's adaptive sign test means nothing under a loss blind to an offset in D: refused.
    let e = RunConfig::resolve(
        Some("r3gan-small"),
        &[
            "ada.enabled=true".to_string(),
            "ada.mode=adaptive".to_string(),
        ],
    )
    .unwrap()
    .validate()
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("ada.mode: ") && e.contains("relativistic loss is blind to an offset"),
        "{e}"
    );
}

/// The r3gan-cifar schedules at a tiny size: augmentation probability (ADA, scheduled, colour at
/// half probability, cutout) and EMA half-life ramp from 0 along the cosine; both are logged,
/// rise, and a run resumed half-way ends bit for bit where the uninterrupted one does.
#[test]
fn r3gan_schedules_of_augmentation_and_ema_resume_exactly() {
    let _rng = common::rng_lock();
    let cfg = |steps: &str| {
        let sets = [
            steps,
            "model.widths=[8]",
            "model.cardinality=[2]",
            "data.resolution=16",
            "train.lr_schedule=cosine",
            "train.steps=6",
            "ada.enabled=true",
            "ada.mode=schedule",
            "ada.p_final=0.6",
            "ada.color_multiplier=0.5",
            "ada.cutout=1",
            "train.ema.half_life_kimg=0.05",
            "train.ema.half_life_start=0",
        ];
        RunConfig::resolve(Some("r3gan-small"), &common::tiny_run_sets(&sets)).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let straight = common::train(cfg("train.threads=1"), dir.path());
    let rows = common::log_rows(dir.path());
    let series = |k: &str| -> Vec<f64> {
        rows.iter()
            .filter_map(|r| r.get(k).and_then(|v| v.as_f64()))
            .collect()
    };
    let (p, beta) = (series("ada/p"), series("schedule/ema_beta"));
    assert_eq!((p.len(), beta.len()), (6, 6), "{rows:?}");
    assert!(p.windows(2).all(|w| w[1] > w[0]) && p[5] < 0.6, "{p:?}");
    assert!(
        beta[0] == 0.0 && beta.windows(2).all(|w| w[1] > w[0]),
        "{beta:?}"
    );

    // Interrupted after 3 logged steps (checkpoint on stop), resumed to 6.
    let part = tempfile::tempdir().unwrap();
    let mut t = gantry::train::Trainer::new(cfg("train.threads=1").setup(), part.path()).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
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
    let mut resumed = gantry::run::resume(part.path(), None).unwrap();
    assert_eq!(resumed.step(), 3);
    resumed
        .run(&std::sync::atomic::AtomicBool::new(false), &mut |_| {})
        .unwrap();
    for ((ka, ta), (kb, tb)) in straight.snapshot().iter().zip(&resumed.snapshot()) {
        assert_eq!(ka, kb);
        assert!(ta.equal(tb), "{ka} differs after resume");
    }
}

/// R3GAN's Trainer makes each fake with its paired real's label and scores both under it:
/// gantry's D step on a conditional R3GAN equals a transcription of that step (the same z,
/// G(z, c_real), softplus(D(fake, c_real) - D(real, c_real))) on the step's own real batch.
#[test]
fn conditional_relativistic_pairs_each_fake_with_its_reals_class() {
    let _rng = common::rng_lock();
    let sets = [
        "model.widths=[8]",
        "model.cardinality=[2]",
        "model.conditional=true",
        "data.resolution=16",
        "loss.r1.gamma=0",
        "loss.r2.gamma=0",
        "train.steps=2",
    ];
    let cfg = RunConfig::resolve(Some("r3gan-small"), &common::tiny_run_sets(&sets)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut t = gantry::train::Trainer::new(cfg.setup(), dir.path()).unwrap();
    let before: std::collections::HashMap<String, Tensor> = t
        .snapshot()
        .into_iter()
        .map(|(k, v)| (k, v.copy()))
        .collect();
    let (real, labels) = t.real_batch().unwrap();
    let labels = labels.expect("shapes are labelled");
    let parts = t
        .train_step_on(vec![(real.copy(), Some(labels.copy()))])
        .unwrap();
    let got = parts
        .iter()
        .find(|(k, _)| k == "loss/d/adv")
        .expect("logged")
        .1
        .double_value(&[]);

    let shape = DataShape::image(3, 16, Some(3));
    let model = match &cfg.model {
        gantry::models::ModelConfig::R3gan(c) => c.clone(),
        _ => unreachable!("an r3gan preset"),
    };
    let (gv, dv) = (
        nn::VarStore::new(Device::Cpu),
        nn::VarStore::new(Device::Cpu),
    );
    let g = R3ganGenerator::new(gv.root(), &model, &shape);
    let d = R3ganDiscriminator::new(dv.root(), &model, &shape);
    for (prefix, vs) in [("g", &gv), ("d", &dv)] {
        for (name, var) in vs.variables() {
            tch::no_grad(|| {
                var.shallow_clone()
                    .copy_(&before[&format!("{prefix}/{name}")])
            });
        }
    }
    gantry::device::seed_torch(cfg.train.seed, 0, gantry::device::Purpose::DStep, 0);
    let z = Tensor::randn([8, model.z_dim], (Kind::Float, Device::Cpu));
    let fake = tch::no_grad(|| g.forward(&z, Some(&labels), true));
    let want = tch::no_grad(|| {
        (d.forward(&fake, Some(&labels), true) - d.forward(&real, Some(&labels), true))
            .softplus()
            .mean(Kind::Double)
            .double_value(&[])
    });
    assert!(
        (got - want).abs() < 1e-5 * want.abs().max(1.0),
        "gantry's D loss {got}, the reference step's {want}"
    );
}
