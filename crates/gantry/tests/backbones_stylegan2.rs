//! StyleGAN2 against PyTorch and in training: its ops (modulated/demodulated convolution, blur
//! up/downsampling, D's resampling convolutions, minibatch stddev; values and gradients, float64)
//! and the whole tiny G and D with the same weights (`tests/pyref/stylegan2_*.py`, transcriptions
//! of stylegan2-ada-pytorch's reference semantics); the `stylegan2-32-small` preset training with
//! R1 and path-length steps, with and without the plug-ins; exact resume; checkpoint keys.

mod common;

use gantry::models::stylegan2::layers::NoiseMode;
use gantry::models::stylegan2::ops::{self, ModConvForm};
use gantry::models::stylegan2::StyleGan2Config;
use gantry::models::stylegan2::{StyleGan2Discriminator, StyleGan2Generator};
use gantry::models::{DataShape, Discriminator};
use gantry::rundir::checkpoint;
use gantry::RunConfig;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use tch::{nn, Device, Kind, Tensor};

const TOL: f64 = 1e-10;

fn opts() -> (Kind, Device) {
    (Kind::Double, Device::Cpu)
}

fn assert_close(name: &str, got: &Tensor, want: &Tensor) {
    let err = common::rel_err(got, want);
    assert!(err < TOL, "{name}: relative error {err}");
}

/// Gradients of `sum(y * gy)` with respect to `inputs`.
fn vjp(y: &Tensor, gy: &Tensor, inputs: &[&Tensor]) -> Vec<Tensor> {
    Tensor::run_backward(&[(y * gy).sum(Kind::Double)], inputs, false, false)
}

/// Compares an op's output and input gradients with the reference's `name`, `name.grad<i>`.
fn check_op(
    want: &HashMap<String, Tensor>,
    name: &str,
    inputs: &[&Tensor],
    gy: &Tensor,
    op: impl Fn(&[Tensor]) -> Tensor,
) {
    let leaves: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.detach().set_requires_grad(true))
        .collect();
    let y = op(&leaves);
    assert_close(name, &y, &want[name]);
    let refs: Vec<&Tensor> = leaves.iter().collect();
    for (i, g) in vjp(&y, gy, &refs).iter().enumerate() {
        assert_close(
            &format!("{name}.grad{i}"),
            g,
            &want[&format!("{name}.grad{i}")],
        );
    }
}

#[test]
fn ops_match_pytorch_values_and_gradients() {
    let _rng = common::rng_lock();
    tch::manual_seed(7);
    let r = |shape: &[i64]| Tensor::randn(shape, opts());
    let (x, w3, w1, w1x, s, xm) = (
        r(&[2, 4, 8, 8]),
        r(&[5, 4, 3, 3]),
        r(&[3, 4, 1, 1]),
        r(&[5, 4, 1, 1]),
        r(&[2, 4]),
        r(&[8, 6, 4, 4]),
    );
    let gy: HashMap<&str, Tensor> = [
        ("gy8", r(&[2, 5, 8, 8])),
        ("gy16", r(&[2, 5, 16, 16])),
        ("gy_rgb", r(&[2, 3, 8, 8])),
        ("gy_up", r(&[2, 4, 16, 16])),
        ("gy_down", r(&[2, 4, 4, 4])),
        ("gy4", r(&[2, 5, 4, 4])),
        ("gy_mbstd", r(&[8, 8, 4, 4])),
    ]
    .into_iter()
    .collect();
    let mut inputs: Vec<(&str, Tensor)> = vec![
        ("x", x.copy()),
        ("w3", w3.copy()),
        ("w1", w1.copy()),
        ("w1x", w1x.copy()),
        ("s", s.copy()),
        ("xm", xm.copy()),
    ];
    inputs.extend(gy.iter().map(|(k, v)| (*k, v.copy())));
    let want = common::pyref("stylegan2_ops.py", &inputs);
    let f = ops::setup_filter(&ops::BLUR_TAPS, Device::Cpu);
    let f = &f;

    for form in [ModConvForm::Grouped, ModConvForm::ScaleActivations] {
        let modconv = |up: i64, padding: i64, demod: bool| {
            move |t: &[Tensor]| {
                ops::modulated_conv2d(&t[0], &t[1], &t[2], None, up, padding, f, demod, form)
            }
        };
        check_op(
            &want,
            "modconv",
            &[&x, &w3, &s],
            &gy["gy8"],
            modconv(1, 1, true),
        );
        check_op(
            &want,
            "modconv_up",
            &[&x, &w3, &s],
            &gy["gy16"],
            modconv(2, 1, true),
        );
        check_op(
            &want,
            "torgb",
            &[&x, &w1, &s],
            &gy["gy_rgb"],
            modconv(1, 0, false),
        );
    }
    check_op(&want, "upsample", &[&x], &gy["gy_up"], |t| {
        ops::upsample2d(&t[0], f)
    });
    check_op(&want, "downsample", &[&x], &gy["gy_down"], |t| {
        ops::downsample2d(&t[0], f)
    });
    check_op(&want, "conv_down", &[&x, &w3], &gy["gy4"], |t| {
        ops::conv2d_resample(&t[0], &t[1], f, 1, 2, 1, 1, true)
    });
    check_op(&want, "skip_down", &[&x, &w1x], &gy["gy4"], |t| {
        ops::conv2d_resample(&t[0], &t[1], f, 1, 2, 0, 1, true)
    });
    check_op(&want, "mbstd", &[&xm], &gy["gy_mbstd"], |t| {
        ops::minibatch_std(&t[0], 4, 2)
    });
}

fn tiny_model() -> StyleGan2Config {
    StyleGan2Config {
        z_dim: 8,
        w_dim: 6,
        channel_base: 64,
        channel_max: 8,
        mapping_layers: 2,
        mbstd_group: 4,
        mbstd_channels: 2,
        ..Default::default()
    }
}

/// Adds noise to every variable, so zero-initialised biases, noise strengths and w_avg matter.
fn perturb(vs: &nn::VarStore) {
    tch::no_grad(|| {
        for (_, v) in vs.variables() {
            let _ = v.shallow_clone().g_add_(&(v.randn_like() * 0.3));
        }
    });
}

#[test]
fn tiny_g_and_d_match_pytorch_with_the_same_weights() {
    g_and_d_match_pytorch(false);
}

/// Conditional StyleGAN2 (label embedding in G's mapping, D's label mapping and projection)
/// against the stylegan2-ada layout: the reference loads gantry's state dicts strictly.
#[test]
fn conditional_g_and_d_match_pytorch_with_the_same_weights() {
    g_and_d_match_pytorch(true);
}

fn g_and_d_match_pytorch(conditional: bool) {
    let _rng = common::rng_lock();
    tch::manual_seed(11);
    let classes = 5;
    let shape = DataShape::image(3, 16, conditional.then_some(classes));
    let cfg = StyleGan2Config {
        conditional,
        ..tiny_model()
    };
    let mut g_vs = nn::VarStore::new(Device::Cpu);
    let mut d_vs = nn::VarStore::new(Device::Cpu);
    let g = StyleGan2Generator::new(g_vs.root(), &cfg, &shape);
    let d = StyleGan2Discriminator::new(d_vs.root(), &cfg, &shape);
    g_vs.double();
    d_vs.double();
    perturb(&g_vs);
    perturb(&d_vs);
    let z = Tensor::randn([3, 8], opts());
    let u = Tensor::randn([3, 3, 16, 16], opts());
    let img = Tensor::randn([8, 3, 16, 16], opts());

    let mut named: Vec<(String, Tensor)> = Vec::new();
    for (prefix, vs) in [("g", &g_vs), ("d", &d_vs)] {
        named.extend(
            vs.variables()
                .into_iter()
                .map(|(k, v)| (format!("{prefix}.{k}"), v.detach().copy())),
        );
    }
    let settings = [
        ("resolution", 16),
        ("channels", 3),
        ("z_dim", 8),
        ("w_dim", 6),
        ("mapping_layers", 2),
        ("channel_base", 64),
        ("channel_max", 8),
        ("mbstd_group", 4),
        ("mbstd_channels", 2),
        ("c_dim", if conditional { classes } else { 0 }),
    ];
    named.extend(
        settings
            .iter()
            .map(|(k, v)| (format!("cfg.{k}"), Tensor::from(*v))),
    );
    let labels_g = Tensor::from_slice(&[4i64, 0, 2]);
    let labels_d = Tensor::from_slice(&[1i64, 3, 0, 4, 2, 2, 1, 0]);
    named.extend([
        ("z".to_string(), z.copy()),
        ("u".to_string(), u.copy()),
        ("img".to_string(), img.copy()),
        ("labels_g".to_string(), labels_g.copy()),
        ("labels_d".to_string(), labels_d.copy()),
    ]);
    let (lg, ld) = if conditional {
        (Some(&labels_g), Some(&labels_d))
    } else {
        (None, None)
    };
    let inputs: Vec<(&str, Tensor)> = named
        .iter()
        .map(|(k, v)| (k.as_str(), v.shallow_clone()))
        .collect();
    let want = common::pyref("stylegan2_nets.py", &inputs);

    let ws = tch::no_grad(|| g.ws(&z, lg, false));
    assert_close("ws", &ws, &want["ws"]);
    let img_g = tch::no_grad(|| g.synthesis(&ws, NoiseMode::Const, ModConvForm::Grouped));
    assert_eq!(img_g.size(), [3, 3, 16, 16]);
    assert_close("img_grouped", &img_g, &want["img_grouped"]);
    let img_s = tch::no_grad(|| g.synthesis(&ws, NoiseMode::Const, ModConvForm::ScaleActivations));
    assert_close("img_scaleact", &img_s, &want["img_scaleact"]);
    let img_t = tch::no_grad(|| g.forward_truncated(&z, lg, 0.7, None, NoiseMode::Const));
    assert_close("img_truncated", &img_t, &want["img_truncated"]);

    // The path-length gradient J^T u, and its gradient path into a weight.
    let wsl = ws.detach().set_requires_grad(true);
    let y = g.synthesis(&wsl, NoiseMode::Const, ModConvForm::ScaleActivations);
    let gw = g_vs.variables()["synthesis.b16.conv0.weight"].shallow_clone();
    let jtu = vjp(&y, &u, &[&wsl, &gw]);
    assert_close("jtu", &jtu[0], &want["jtu"]);
    assert_close("jtu_w", &jtu[1], &want["jtu_w"]);

    // One training-mode pass moves w_avg (style mixing does not touch it).
    let _ = tch::no_grad(|| g.ws(&z, lg, true));
    assert_close("w_avg", g.w_avg(), &want["w_avg"]);

    let x = img.set_requires_grad(true);
    let embed = d.embed(&x, false);
    assert_close("embed", &embed, &want["embed"]);
    let logits = d.head(&embed, ld, false);
    assert_close("logits", &logits, &want["logits"]);
    let dw = d_vs.variables()["b16.conv0.weight"].shallow_clone();
    let grads = Tensor::run_backward(&[logits.sum(Kind::Double)], &[&x, &dw], false, false);
    assert_close("d_grad_x", &grads[0], &want["d_grad_x"]);
    assert_close("d_grad_w", &grads[1], &want["d_grad_w"]);
}

/// The small preset at tiny width (`common::tiny_run_sets` back at 32x32), R1 and path length every
/// 2 steps so step 0 and 2 run both.
fn small(extra: &[&str]) -> RunConfig {
    let mut sets = vec![
        "data.resolution=32",
        "model.channel_base=128",
        "model.channel_max=16",
        "model.z_dim=16",
        "model.w_dim=16",
        "loss.r1.every=2",
        "loss.pl.every=2",
    ];
    sets.extend_from_slice(extra);
    RunConfig::resolve(Some("stylegan2-32-small"), &common::tiny_run_sets(&sets)).unwrap()
}

#[test]
fn small_preset_trains_with_r1_path_length_and_plugins() {
    let _rng = common::rng_lock();
    let plugins: [&[&str]; 9] = [
        &[],
        &["adaptivemix.enabled=true"],
        &["fq.enabled=true", "fq.k=8"],
        &["adaptivemix.enabled=true", "fq.enabled=true", "fq.k=8"],
        // StyleGAN2-ADA: fixed p, and adaptive with all plug-ins (R1 through the augmentation).
        &["ada.enabled=true", "ada.mode=fixed", "ada.p=0.5"],
        &[
            "ada.enabled=true",
            "ada.p=0.3",
            "ada.kimg=0.1",
            "ada.interval=1",
            "adaptivemix.enabled=true",
            "fq.enabled=true",
            "fq.k=8",
        ],
        // Conditional StyleGAN2 on the shapes' 3 classes, alone, with both plug-ins, and with
        // R3GAN's relativistic loss and R2.
        &["model.conditional=true"],
        &[
            "model.conditional=true",
            "adaptivemix.enabled=true",
            "fq.enabled=true",
            "fq.k=8",
        ],
        &[
            "model.conditional=true",
            "loss.kind=relativistic",
            "loss.r2.gamma=1.0",
        ],
    ];
    for p in plugins {
        let mut sets = vec!["train.steps=3"];
        sets.extend_from_slice(p);
        let dir = tempfile::tempdir().unwrap();
        common::train(small(&sets), dir.path());
        let rows = gantry::rundir::log::read(&dir.path().join("metrics.jsonl")).unwrap();
        let rows: Vec<_> = rows
            .iter()
            .filter(|r| r.get("loss/g/adv").is_some())
            .collect();
        assert_eq!(rows.len(), 3, "{sets:?}");
        let mut seen = BTreeSet::new();
        for row in &rows {
            for (k, v) in row.as_object().unwrap() {
                if let Some(v) = v.as_f64() {
                    assert!(v.is_finite(), "{sets:?}: {k} = {v}");
                    seen.insert(k.clone());
                }
            }
        }
        assert!(
            seen.contains("loss/d/r1") && seen.contains("loss/g/pl"),
            "{sets:?}: {seen:?}"
        );
        // The path-length EMA is checkpointed with G.
        let ckpt = checkpoint::latest(dir.path()).unwrap();
        let g = checkpoint::read_store(&ckpt, "g").unwrap();
        assert!(g["pl_mean"].double_value(&[]) > 0.0, "{sets:?}");
    }
}

#[test]
fn a_conditional_stylegan2_needs_labelled_data() {
    let e = RunConfig::resolve(
        Some("stylegan2-32-small"),
        &[
            "model.conditional=true".to_string(),
            "data.kind=folder".to_string(),
            "data.path=/nonexistent".to_string(),
        ],
    )
    .and_then(|c| {
        let shape = DataShape::image(3, 32, None);
        use gantry::models::Architecture;
        match &c.model {
            gantry::models::ModelConfig::StyleGan2(m) => m.validate_data(&shape),
            _ => unreachable!(),
        }
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("model.conditional") && e.contains("labelled data"),
        "{e}"
    );
}

#[test]
fn resume_is_bit_for_bit_with_lazy_regularisers() {
    let _rng = common::rng_lock();
    let extra = ["data.resolution=8", "fq.enabled=true", "fq.k=8"];
    let full = small(&[&extra[..], &["train.steps=4"][..]].concat());
    let straight = common::train(full.clone(), tempfile::tempdir().unwrap().path());
    let dir = tempfile::tempdir().unwrap();
    drop(common::train(
        small(&[&extra[..], &["train.steps=2"][..]].concat()),
        dir.path(),
    ));
    let mut resumed = gantry::run::resume(dir.path(), Some(full)).unwrap();
    resumed.run(&AtomicBool::new(false), &mut |_| {}).unwrap();
    let (a, b) = (straight.snapshot(), resumed.snapshot());
    assert_eq!(a.len(), b.len());
    for ((ka, ta), (kb, tb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert!(ta.equal(tb), "{ka} differs");
    }
}

#[test]
fn checkpoint_keys_read_like_the_reference() {
    let cfg = RunConfig::resolve(Some("stylegan2-32-small"), &[]).unwrap();
    let shape = DataShape::image(3, 32, None);
    let g_vs = nn::VarStore::new(Device::Cpu);
    let d_vs = nn::VarStore::new(Device::Cpu);
    let _g = gantry::models::build_generator(g_vs.root(), &cfg.model, &shape).unwrap();
    let _d = gantry::models::build_discriminator(d_vs.root(), &cfg.model, &shape).unwrap();

    let mut want_g: BTreeSet<String> = ["mapping.w_avg", "pl_mean", "synthesis.b4.const"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let gantry::models::ModelConfig::StyleGan2(sg) = &cfg.model else {
        panic!("the preset is stylegan2")
    };
    for i in 0..sg.mapping_layers {
        want_g.extend(["weight", "bias"].map(|p| format!("mapping.fc{i}.{p}")));
    }
    let layer = [
        "affine.weight",
        "affine.bias",
        "weight",
        "bias",
        "noise_const",
        "noise_strength",
    ];
    for res in [4, 8, 16, 32] {
        let convs: &[&str] = if res == 4 {
            &["conv1"]
        } else {
            &["conv0", "conv1"]
        };
        for c in convs {
            want_g.extend(layer.map(|p| format!("synthesis.b{res}.{c}.{p}")));
        }
        want_g.extend(
            ["affine.weight", "affine.bias", "weight", "bias"]
                .map(|p| format!("synthesis.b{res}.torgb.{p}")),
        );
    }
    let mut want_d: BTreeSet<String> = ["b32.fromrgb.weight", "b32.fromrgb.bias"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for res in [32, 16, 8] {
        want_d.extend(
            [
                "conv0.weight",
                "conv0.bias",
                "conv1.weight",
                "conv1.bias",
                "skip.weight",
            ]
            .map(|p| format!("b{res}.{p}")),
        );
    }
    want_d.extend(
        [
            "conv.weight",
            "conv.bias",
            "fc.weight",
            "fc.bias",
            "out.weight",
            "out.bias",
        ]
        .map(|p| format!("b4.{p}")),
    );

    let got_g: BTreeSet<String> = g_vs.variables().into_keys().collect();
    let got_d: BTreeSet<String> = d_vs.variables().into_keys().collect();
    assert!(
        got_g.iter().chain(&got_d).all(|k| !k.contains("__")),
        "duplicate names"
    );
    assert_eq!(got_g, want_g);
    assert_eq!(got_d, want_d);
    // Buffers are saved but never optimised.
    let vars = g_vs.variables();
    for k in ["mapping.w_avg", "pl_mean", "synthesis.b8.conv0.noise_const"] {
        assert!(!vars[k].requires_grad(), "{k} is trainable");
    }
}

fn trainable(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

#[test]
fn parameter_counts_match_the_paper_and_the_presets() {
    // Config F at 1024x1024 (channel_base 32768, 8 mapping layers): the paper's G 30.0M / D 29.0M,
    // exactly stylegan2-ada-pytorch's 30,370,060 / 29,012,513.
    let cases = [
        (
            "stylegan2-256",
            1024,
            &["model.channel_base=32768"][..],
            30_370_060,
            29_012_513,
        ),
        ("stylegan2-256", 256, &[][..], 24_767_458, 24_001_089),
        ("stylegan2-32-small", 32, &[][..], 2_987_731, 3_481_921),
    ];
    for (preset, res, sets, want_g, want_d) in cases {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let cfg = RunConfig::resolve(Some(preset), &sets).unwrap();
        let shape = DataShape::image(3, res, None);
        let g_vs = nn::VarStore::new(Device::Cpu);
        let d_vs = nn::VarStore::new(Device::Cpu);
        let _g = gantry::models::build_generator(g_vs.root(), &cfg.model, &shape).unwrap();
        let _d = gantry::models::build_discriminator(d_vs.root(), &cfg.model, &shape).unwrap();
        assert_eq!(
            (trainable(&g_vs), trainable(&d_vs)),
            (want_g, want_d),
            "{preset} at {res}"
        );
    }
}

/// stylegan2-ada draws a fake's class as the label of a random training image: on a folder
/// of 9 images of one class and 1 of another, about a tenth of the fakes take the rare one
/// (uniform classes would give half).
#[test]
fn conditional_stylegan2_fakes_follow_the_datas_class_frequencies() {
    let dir = tempfile::tempdir().unwrap();
    for (class, n) in [("common", 9), ("rare", 1)] {
        let d = dir.path().join("data").join(class);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..n {
            image::RgbImage::from_pixel(8, 8, image::Rgb([i * 20, 0, 0]))
                .save(d.join(format!("{i}.png")))
                .unwrap();
        }
    }
    let data = format!("data.path={}", dir.path().join("data").display());
    let sets: Vec<String> = [
        "data.kind=folder",
        data.as_str(),
        "data.labels=true",
        "data.resolution=8",
        "data.workers=1",
        "model.conditional=true",
        "model.channel_base=64",
        "model.channel_max=8",
        "model.z_dim=8",
        "model.w_dim=8",
        "train.batch_size=8",
        "train.threads=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cfg = RunConfig::resolve(Some("stylegan2-32-small"), &sets).unwrap();
    let t = gantry::train::Trainer::new(cfg.setup(), &dir.path().join("run")).unwrap();
    let drawn: Vec<i64> = (0..200)
        .flat_map(|k| {
            let (_, labels) = t.latents(0, gantry::device::Purpose::DStep, k);
            Vec::<i64>::try_from(labels.unwrap()).unwrap()
        })
        .collect();
    let rare = drawn.iter().filter(|&&l| l == 1).count() as f64 / drawn.len() as f64;
    assert!(
        (0.07..0.13).contains(&rare),
        "share of the rare class: {rare}"
    );
}
