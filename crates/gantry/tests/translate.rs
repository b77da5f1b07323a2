//! U-GAT-IT against a float64 transcription of the official PyTorch code
//! (`tests/pyref/ugatit_ref.py`, loaded strictly with gantry's weights, so the parameter names are
//! the reference's): the generator (full and light: AdaLIN, ILN, CAM) and both discriminator
//! kinds (spectral norm, CAM on raw weights), forward and backward; the D and G losses of one
//! iteration and their gradients for every parameter of the two generators and four critics.
//! Then FQ on the global critic's feature maps, and the rho clip.

mod common;

use gantry::models::Discriminator;
use gantry::plugins::Critic;
use gantry::translate::nets::{clip_rho, UgatitConfig, UgatitDiscriminator, UgatitGenerator};
use gantry::translate::objective::{self, Critics, Weights};
use std::collections::HashMap;
use tch::{nn, Device, Kind, Tensor};

const OPTS: (Kind, Device) = (Kind::Double, Device::Cpu);

fn close(want: &HashMap<String, Tensor>, key: &str, got: &Tensor, tol: f64) {
    let w = want
        .get(key)
        .unwrap_or_else(|| panic!("the reference wrote no {key}"));
    let e = common::rel_err(got, w);
    assert!(e < tol, "{key}: relative error {e}");
}

fn store_inputs(vs: &nn::VarStore, prefix: &str, out: &mut Vec<(String, Tensor)>) {
    for (k, v) in vs.variables() {
        out.push((format!("{prefix}{k}"), v.detach().copy()));
    }
}

/// Trainable variables by name.
fn params(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn check(light: bool) {
    let rng = common::rng_lock();
    tch::manual_seed(if light { 11 } else { 12 });
    let cfg = UgatitConfig {
        ch: 4,
        n_res: 2,
        light,
        global_layers: 5,
        local_layers: 4,
    };
    let size = 32;
    let gen_vs = nn::VarStore::new(Device::Cpu);
    let mut gen_vs = gen_vs;
    let g = UgatitGenerator::new(&gen_vs.root(), &cfg, 3, size);
    gen_vs.set_kind(Kind::Double);
    let mut dvs: Vec<nn::VarStore> = Vec::new();
    let mut ds: Vec<UgatitDiscriminator> = Vec::new();
    for layers in [cfg.global_layers, cfg.local_layers] {
        let mut vs = nn::VarStore::new(Device::Cpu);
        ds.push(UgatitDiscriminator::new(
            &vs.root(),
            cfg.ch,
            layers,
            3,
            size,
        ));
        vs.set_kind(Kind::Double);
        dvs.push(vs);
    }
    // The iteration: two generators, four critics.
    let mut it_vs: Vec<(String, nn::VarStore)> = Vec::new();
    let mut gens = Vec::new();
    for name in ["g_ab", "g_ba"] {
        let mut vs = nn::VarStore::new(Device::Cpu);
        gens.push(UgatitGenerator::new(&vs.root(), &cfg, 3, size));
        vs.set_kind(Kind::Double);
        it_vs.push((name.into(), vs));
    }
    let mut crit = Vec::new();
    for (name, layers) in [
        ("ga", cfg.global_layers),
        ("gb", cfg.global_layers),
        ("la", cfg.local_layers),
        ("lb", cfg.local_layers),
    ] {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let d = UgatitDiscriminator::new(&vs.root(), cfg.ch, layers, 3, size);
        vs.set_kind(Kind::Double);
        crit.push(Critic::new(Box::new(d), vec![]).unwrap());
        it_vs.push((name.into(), vs));
    }
    let x = Tensor::randn([2, 3, size, size], OPTS).tanh();
    let (gi, gc, gh) = (
        Tensor::randn([2, 3, size, size], OPTS),
        Tensor::randn([2, 2], OPTS),
        Tensor::randn([2, 1, 8, 8], OPTS),
    );
    let (real_a, real_b) = (
        Tensor::rand([2, 3, size, size], OPTS) * 2.0 - 1.0,
        Tensor::rand([2, 3, size, size], OPTS) * 2.0 - 1.0,
    );
    let d_side = |layers| UgatitDiscriminator::patch_side(layers, size).unwrap();
    let mut dgrads = Vec::new();
    for (i, kind) in ["dg", "dl"].iter().enumerate() {
        let layers = [cfg.global_layers, cfg.local_layers][i];
        let fm = size >> (layers - 2);
        dgrads.push((
            *kind,
            Tensor::randn([2, 1, d_side(layers), d_side(layers)], OPTS),
            Tensor::randn([2, 2], OPTS),
            Tensor::randn([2, 1, fm - 1, fm - 1], OPTS),
        ));
    }
    drop(rng);

    let mut inputs: Vec<(String, Tensor)> = Vec::new();
    inputs.push((
        "cfg".into(),
        Tensor::from_slice(&[
            cfg.ch as f64,
            cfg.n_res as f64,
            size as f64,
            f64::from(u8::from(light)),
            cfg.global_layers as f64,
            cfg.local_layers as f64,
        ]),
    ));
    store_inputs(&gen_vs, "gen/", &mut inputs);
    for (k, v) in [("_x", &x), ("_gi", &gi), ("_gc", &gc), ("_gh", &gh)] {
        inputs.push((format!("gen/{k}"), v.shallow_clone()));
    }
    for (i, (kind, go, gcd, ghd)) in dgrads.iter().enumerate() {
        store_inputs(&dvs[i], &format!("{kind}/"), &mut inputs);
        for (k, v) in [("_x", &x), ("_go", go), ("_gc", gcd), ("_gh", ghd)] {
            inputs.push((format!("{kind}/{k}"), v.shallow_clone()));
        }
    }
    for (name, vs) in &it_vs {
        store_inputs(vs, &format!("iter/{name}/"), &mut inputs);
    }
    inputs.push(("iter/_a".into(), real_a.shallow_clone()));
    inputs.push(("iter/_b".into(), real_b.shallow_clone()));
    let named: Vec<(&str, Tensor)> = inputs
        .iter()
        .map(|(k, v)| (k.as_str(), v.shallow_clone()))
        .collect();
    let want = common::pyref("ugatit_ref.py", &named);
    let tol = 1e-9;

    // Generator.
    let xin = x.detach().set_requires_grad(true);
    let out = g.forward(&xin);
    close(&want, "gen/image", &out.image, tol);
    close(&want, "gen/cam", &out.cam_logits, tol);
    close(&want, "gen/heatmap", &out.heatmap, tol);
    let s = (&out.image * &gi).sum(Kind::Double)
        + (&out.cam_logits * &gc).sum(Kind::Double)
        + (&out.heatmap * &gh).sum(Kind::Double);
    let ps = params(&gen_vs);
    let mut wrt: Vec<Tensor> = vec![xin.shallow_clone()];
    wrt.extend(ps.iter().map(|(_, t)| t.shallow_clone()));
    let grads = Tensor::run_backward(&[s], &wrt, false, false);
    close(&want, "gen/grad_x", &grads[0], tol);
    for ((name, _), gr) in ps.iter().zip(&grads[1..]) {
        close(&want, &format!("gen/grad/{name}"), gr, tol);
    }

    // Discriminators.
    for (i, (kind, go, gcd, ghd)) in dgrads.iter().enumerate() {
        let d = &ds[i];
        let xin = x.detach().set_requires_grad(true);
        let (lo, cl, hm) = d.head_parts(&d.embed(&xin, true), true);
        close(&want, &format!("{kind}/logits"), &lo, tol);
        close(&want, &format!("{kind}/cam"), &cl, tol);
        close(&want, &format!("{kind}/heatmap"), &hm, tol);
        let s = (&lo * go).sum(Kind::Double)
            + (&cl * gcd).sum(Kind::Double)
            + (&hm * ghd).sum(Kind::Double);
        let ps = params(&dvs[i]);
        let mut wrt: Vec<Tensor> = vec![xin.shallow_clone()];
        wrt.extend(ps.iter().map(|(_, t)| t.shallow_clone()));
        let grads = Tensor::run_backward(&[s], &wrt, false, false);
        close(&want, &format!("{kind}/grad_x"), &grads[0], tol);
        for ((name, _), gr) in ps.iter().zip(&grads[1..]) {
            close(&want, &format!("{kind}/grad/{name}"), gr, tol);
        }
        // The power iteration ran once, as torch's does in training mode.
        let u = dvs[i].variables()["model.1.weight_u"].shallow_clone();
        close(&want, &format!("{kind}/u_after"), &u, tol);
        // The plug-in seam: one row of scores, patch logits then CAM logits.
        let row = d.forward(&x, None, true);
        assert_eq!(row.size(), [2, lo.size()[2] * lo.size()[3] + 2]);
    }

    // One iteration.
    let mut it = crit.into_iter();
    let mut critics = Critics {
        global_a: it.next().unwrap(),
        global_b: it.next().unwrap(),
        local_a: it.next().unwrap(),
        local_b: it.next().unwrap(),
    };
    let w = Weights::default();
    let (a2b, b2a) = objective::translate(&gens[0], &gens[1], &real_a, &real_b);
    let d_loss = objective::d_phase(
        &mut critics,
        &real_a,
        &real_b,
        &a2b.image,
        &b2a.image,
        &w,
        0,
    );
    close(&want, "iter/d_loss", &d_loss.total.reshape([1]), tol);
    let d_params: Vec<(String, Tensor)> = it_vs[2..]
        .iter()
        .flat_map(|(n, vs)| {
            params(vs)
                .into_iter()
                .map(move |(k, t)| (format!("{n}/{k}"), t))
        })
        .collect();
    let grads = Tensor::run_backward(
        &[&d_loss.total],
        &d_params
            .iter()
            .map(|(_, t)| t.shallow_clone())
            .collect::<Vec<_>>(),
        false,
        false,
    );
    for ((name, _), gr) in d_params.iter().zip(&grads) {
        close(&want, &format!("iter/d_grad/{name}"), gr, tol);
    }
    let g_loss = objective::g_phase(
        &mut critics,
        &gens[0],
        &gens[1],
        &real_a,
        &real_b,
        &a2b,
        &b2a,
        &w,
        0,
    );
    close(&want, "iter/g_loss", &g_loss.total.reshape([1]), tol);
    let g_params: Vec<(String, Tensor)> = it_vs[..2]
        .iter()
        .flat_map(|(n, vs)| {
            params(vs)
                .into_iter()
                .map(move |(k, t)| (format!("{n}/{k}"), t))
        })
        .collect();
    let grads = Tensor::run_backward(
        &[&g_loss.total],
        &g_params
            .iter()
            .map(|(_, t)| t.shallow_clone())
            .collect::<Vec<_>>(),
        false,
        false,
    );
    for ((name, _), gr) in g_params.iter().zip(&grads) {
        close(&want, &format!("iter/g_grad/{name}"), gr, tol);
    }
}

#[test]
fn generator_discriminators_and_one_iteration_match_the_reference() {
    check(false);
}

#[test]
fn the_light_generator_matches_the_reference() {
    check(true);
}

#[test]
fn rho_is_clipped_to_the_unit_interval() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _g = UgatitGenerator::new(
        &vs.root(),
        &UgatitConfig {
            ch: 2,
            n_res: 1,
            ..Default::default()
        },
        3,
        16,
    );
    let rhos: Vec<Tensor> = vs
        .variables()
        .into_iter()
        .filter(|(k, _)| k.ends_with(".rho"))
        .map(|(_, t)| t)
        .collect();
    assert_eq!(rhos.len(), 4, "2 AdaLIN + 2 ILN");
    tch::no_grad(|| {
        let _ = rhos[0].shallow_clone().fill_(1.7);
        let _ = rhos[1].shallow_clone().fill_(-0.3);
    });
    clip_rho(&vs);
    assert_eq!(rhos[0].max().double_value(&[]), 1.0);
    assert_eq!(rhos[1].min().double_value(&[]), 0.0);
}

/// Four folders of 16x16 images in the official layout (A dark, B light), `n` each.
fn layout(dir: &std::path::Path, n: usize) {
    for (part, shade) in [
        ("trainA", -0.6f32),
        ("trainB", 0.6),
        ("testA", -0.5),
        ("testB", 0.5),
    ] {
        let imgs: Vec<f32> = (0..n * 3 * 16 * 16)
            .map(|i| shade + 0.3 * ((i % 37) as f32 / 37.0 - 0.5))
            .collect();
        gantry::data::image_io::save_images(&imgs, [n, 3, 16, 16], &dir.join(part), "img").unwrap();
    }
}

fn tiny(dir: &std::path::Path, extra: &[&str]) -> gantry::translate::TranslateConfig {
    let mut sets: Vec<String> = [
        format!("data.path={}", dir.display()),
        "data.resolution=16".into(),
        "data.workers=1".into(),
        "model.ch=2".into(),
        "model.n_res=1".into(),
        "model.light=true".into(),
        "model.global_layers=4".into(),
        "model.local_layers=3".into(),
        "train.batch_size=2".into(),
        "train.steps=4".into(),
        "train.log_every=1".into(),
        "train.sample_every=2".into(),
        "train.checkpoint_every=0".into(),
        "train.threads=1".into(),
    ]
    .to_vec();
    sets.extend(extra.iter().map(|s| s.to_string()));
    gantry::translate::TranslateConfig::resolve(None, &sets).unwrap()
}

/// 2 iterations, interrupted, resumed for 2 more = 4 straight, bit for bit: both generators,
/// the four critics with their SN vectors, FQ's dictionaries in the global critics, ADA's p,
/// both Adams (with weight decay), the learning-rate decay, both loaders and the crops.
#[test]
fn resume_continues_bit_for_bit_with_fq_and_ada() {
    use gantry::translate::train::{self as tt, Start};
    use std::sync::atomic::{AtomicBool, Ordering};
    let _rng = common::rng_lock();
    let data = tempfile::tempdir().unwrap();
    layout(data.path(), 6);
    let plugins = [
        "fq.enabled=true",
        "fq.k=8",
        "ada.enabled=true",
        "ada.mode=fixed",
        "ada.p=0.5",
    ];
    let cfg = tiny(data.path(), &plugins);
    assert_eq!(cfg.default_fq_layers(), ["b8"]);
    let straight = tempfile::tempdir().unwrap();
    let s = tt::train(
        &cfg,
        straight.path(),
        Start::Fresh,
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(s.steps, 4);
    let rows = common::log_rows(straight.path());
    assert!(
        rows.iter()
            .any(|r| r.get("ga/fq/b8/perplexity").is_some()
                && r.get("gb/fq/b8/perplexity").is_some()),
        "{rows:?}"
    );
    assert!(rows
        .iter()
        .all(|r| r["loss/g"].as_f64().unwrap().is_finite()));
    // The learning rate decays over the second half: full, full, 1/2 ... 0.
    let lrs: Vec<f64> = rows.iter().map(|r| r["lr"].as_f64().unwrap()).collect();
    assert_eq!(lrs, [1e-4, 1e-4, 5e-5, 0.0]);
    assert!(straight.path().join("samples/0000002.png").exists());

    let part = tempfile::tempdir().unwrap();
    let stop = AtomicBool::new(false);
    let first = tt::train(&cfg, part.path(), Start::Fresh, &stop, &mut |p| {
        if p.step == 2 {
            stop.store(true, Ordering::SeqCst);
        }
    })
    .unwrap();
    assert!(first.stopped && first.steps == 2);
    let second = tt::train(
        &cfg,
        part.path(),
        Start::Resume { sets: vec![] },
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(second.steps, 4);
    let (a, b) = (
        tt::load(straight.path(), None).unwrap().snapshot(),
        tt::load(part.path(), None).unwrap().snapshot(),
    );
    assert_eq!(a.len(), b.len());
    assert!(
        a.iter()
            .any(|(k, _)| k.contains("ga.fq") || k.contains("ga/")),
        "{:?}",
        a.iter().map(|x| &x.0).collect::<Vec<_>>()
    );
    for ((ka, ta), (kb, tb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert!(ta.equal(tb), "{ka} differs after resume");
    }
    // Only run-time keys may change on resume.
    let e = tt::train(
        &cfg,
        part.path(),
        Start::Resume {
            sets: vec!["loss.cam=1".into()],
        },
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.starts_with("--set: on resume only train.steps") && e.contains("changed: loss.cam"),
        "{e}"
    );
    // A checkpoint directory is not a run directory, fresh or resumed.
    let ckpt = std::fs::read_dir(part.path().join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("meta.json").exists())
        .unwrap();
    for start in [Start::Fresh, Start::Resume { sets: vec![] }] {
        let e = tt::train(&cfg, &ckpt, start, &AtomicBool::new(false), &mut |_| {})
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("is a checkpoint; give its run directory"), "{e}");
    }
}

/// Bad data: a missing part, an empty domain, domains with different channel counts.
#[test]
fn bad_domains_are_named() {
    use gantry::translate::train::{self as tt, Start};
    use std::sync::atomic::AtomicBool;
    let data = tempfile::tempdir().unwrap();
    layout(data.path(), 2);
    let run = |cfg: &gantry::translate::TranslateConfig| {
        let out = tempfile::tempdir().unwrap();
        tt::train(
            cfg,
            out.path(),
            Start::Fresh,
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .err()
        .unwrap()
        .to_string()
    };
    std::fs::remove_dir_all(data.path().join("testB")).unwrap();
    let e = run(&tiny(data.path(), &[]));
    assert!(e.contains("testB") && e.contains("does not exist"), "{e}");
    std::fs::create_dir(data.path().join("testB")).unwrap();
    let e = run(&tiny(data.path(), &[]));
    assert!(
        e.contains("testB") && e.contains("no PNG/JPEG images"),
        "{e}"
    );
    // Grey MNIST digits as domain B against RGB images as domain A.
    let mnist = common::repo_root().join("../shared/data/mnist");
    let mut cfg = tiny(data.path(), &[]);
    cfg.data.path = None;
    cfg.data.a = format!("folder:{}", data.path().join("trainA").display());
    cfg.data.b = format!("mnist:{}#1", mnist.display());
    cfg.data.test_a = Some(cfg.data.a.clone());
    cfg.data.test_b = Some(cfg.data.b.clone());
    let e = run(&cfg);
    assert!(
        e.contains("domain B (training) has 1-channel images") && e.contains("same channels"),
        "{e}"
    );
    // Configuration errors name their key.
    let e = gantry::translate::TranslateConfig::resolve(
        None,
        &[
            "data.a=shapes#0".into(),
            "data.resolution=64".into(),
            "model.global_layers=7".into(),
        ],
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.starts_with("data.b: required"), "{e}");
    let e = gantry::translate::TranslateConfig::resolve(
        None,
        &[
            "data.a=shapes#0".into(),
            "data.b=shapes#1".into(),
            "data.resolution=64".into(),
        ],
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.starts_with("model.global_layers: 7 layers leave no patch"),
        "{e}"
    );
    // ADA's sign heuristic does not fit least-squares critics; its schedule has nothing to follow.
    for (mode, needle) in [("adaptive", "centred on 0"), ("schedule", "no schedule")] {
        let e = gantry::translate::TranslateConfig::resolve(
            Some("ugatit-light-64"),
            &["ada.enabled=true".into(), format!("ada.mode={mode}")],
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.starts_with("ada.mode:") && e.contains(needle), "{e}");
    }
}
