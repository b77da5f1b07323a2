//! Foreign weights in: fixtures made with the official code (tests/fixtures/interop/*/README.md
//! says how), whose outputs gantry must reproduce to 1e-4 in float32.

mod common;

use gantry::interop;
use gantry::models::stylegan2::layers::NoiseMode;
use gantry::models::stylegan2::{StyleGan2Discriminator, StyleGan2Generator};
use gantry::models::{Discriminator, ModelConfig};
use std::collections::HashMap;
use std::path::PathBuf;
use tch::{nn, Device, Kind, Tensor};

fn fixture(rel: &str) -> PathBuf {
    common::repo_root().join("tests/fixtures/interop").join(rel)
}

fn npz(rel: &str) -> HashMap<String, Tensor> {
    Tensor::read_npz(fixture(rel))
        .unwrap()
        .into_iter()
        .collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

/// Class indices from the fixtures' one-hot `c`.
fn labels(out: &HashMap<String, Tensor>) -> Option<Tensor> {
    out.get("c").map(|c| c.argmax(1, false))
}

/// Every stylegan2-ada pickle: G_ema, G (with and without truncation) and D reproduce the
/// official networks' outputs. Where the official network ran layers in fp16, the fixture also
/// holds its fp32 outputs (`*_fp32`, `force_fp32=True`), which are what gantry computes.
#[test]
fn stylegan2_ada_pickles_reproduce_the_official_outputs() {
    for name in ["sg2ada-uncond", "sg2ada-cond", "adaptivemix"] {
        let imported = interop::import(&fixture(&format!("sg2/{name}.pkl"))).unwrap();
        let ModelConfig::StyleGan2(cfg) = &imported.model else {
            panic!("{name}: {}", imported.model.arch_name())
        };
        let out = npz(&format!("sg2/{name}.npz"));
        let pick = |k: &str| {
            out.get(&format!("{k}_fp32"))
                .or_else(|| out.get(k))
                .unwrap_or_else(|| panic!("{name}: {k}"))
                .shallow_clone()
        };
        let z = &out["z"];
        let c = labels(&out);
        for (store, key, psi) in [
            ("g_ema", "img_ema", 1.0),
            ("g_ema", "img_ema_trunc", 0.5),
            ("g", "img_g", 1.0),
        ] {
            let vs = nn::VarStore::new(Device::Cpu);
            let g = StyleGan2Generator::new(vs.root(), cfg, &imported.shape);
            interop::load_into(
                &vs.variables(),
                imported.store(store).unwrap(),
                &fixture(name),
            )
            .unwrap();
            let x =
                tch::no_grad(|| g.forward_truncated(z, c.as_ref(), psi, None, NoiseMode::Const));
            let d = max_diff(&x, &pick(key));
            assert!(d <= 1e-4, "{name} {key}: max |diff| {d}");
            if store == "g_ema" && psi == 1.0 {
                let ws = tch::no_grad(|| g.ws(z, c.as_ref(), false));
                let d = max_diff(&ws, &out["ws"]);
                assert!(d <= 1e-4, "{name} ws: max |diff| {d}");
            }
        }
        let vs = nn::VarStore::new(Device::Cpu);
        let d = StyleGan2Discriminator::new(vs.root(), cfg, &imported.shape);
        interop::load_into(
            &vs.variables(),
            imported.store("d").unwrap(),
            &fixture(name),
        )
        .unwrap();
        let logits = tch::no_grad(|| d.forward(&out["x_real"], c.as_ref(), false));
        let diff = max_diff(
            &logits.reshape([-1, 1]),
            &pick("d_logits").to_kind(Kind::Float),
        );
        assert!(diff <= 1e-4, "{name} D: max |diff| {diff}");
    }
}

/// The embedded source of a persistent class is never run: a pickle whose source would create
/// a marker file loads (its data is an ordinary network) and the marker never appears; a pickle
/// whose G is a call of `exec` is refused by name.
#[test]
fn hostile_pickles_run_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    std::env::set_var("GANTRY_MARKER", &marker);
    let imported = interop::import(&fixture("sg2/hostile-persistent.pkl"));
    assert!(imported.is_ok(), "{:?}", imported.err());
    let e = interop::import(&fixture("sg2/hostile-reduce.pkl"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("G is a call of builtins.exec") && e.contains("nothing in the file was run"),
        "{e}"
    );
    assert!(!marker.exists());
}

fn pick_fp32(out: &HashMap<String, Tensor>, k: &str) -> Tensor {
    out.get(&format!("{k}_fp32"))
        .or_else(|| out.get(k))
        .unwrap_or_else(|| panic!("{k}"))
        .shallow_clone()
}

/// Builds store `store` of an import into gantry's networks of its architecture.
fn generator(
    imported: &interop::Imported,
    store: &str,
) -> (nn::VarStore, Box<dyn gantry::models::Generator>) {
    let vs = nn::VarStore::new(Device::Cpu);
    let g = gantry::models::build_generator(vs.root(), &imported.model, &imported.shape).unwrap();
    interop::load_into(
        &vs.variables(),
        imported.store(store).unwrap(),
        &fixture(store),
    )
    .unwrap();
    (vs, g)
}

fn discriminator(imported: &interop::Imported) -> (nn::VarStore, Box<dyn Discriminator>) {
    let vs = nn::VarStore::new(Device::Cpu);
    let d =
        gantry::models::build_discriminator(vs.root(), &imported.model, &imported.shape).unwrap();
    interop::load_into(&vs.variables(), imported.store("d").unwrap(), &fixture("d")).unwrap();
    (vs, d)
}

/// R3GAN pickles (plain modules, settings read off the shapes): G_ema, G and D reproduce the
/// official outputs (fp32 calls where the official network has bfloat16 stages).
#[test]
fn r3gan_pickles_reproduce_the_official_outputs() {
    for name in ["r3gan", "r3gan-cond"] {
        let imported = interop::import(&fixture(&format!("sg2/{name}.pkl"))).unwrap();
        assert_eq!(imported.model.arch_name(), "r3gan");
        let out = npz(&format!("sg2/{name}.npz"));
        let c = labels(&out);
        for (store, key) in [("g_ema", "img_ema"), ("g", "img_g")] {
            let (_vs, g) = generator(&imported, store);
            let x = tch::no_grad(|| g.forward(&out["z"], c.as_ref(), false));
            let d = max_diff(&x, &pick_fp32(&out, key));
            assert!(d <= 1e-4, "{name} {key}: max |diff| {d}");
        }
        let (_vs, d) = discriminator(&imported);
        let logits = tch::no_grad(|| d.forward(&out["x_real"], c.as_ref(), false));
        let diff = max_diff(
            &logits.reshape([-1]),
            &pick_fp32(&out, "d_logits").reshape([-1]),
        );
        assert!(diff <= 1e-4, "{name} D: max |diff| {diff}");
    }
}

/// BigGAN-PyTorch folders (FQ-BigGAN's CIFAR settings; shared embedding + hierarchical z +
/// attention): G, G_ema and D reproduce the official outputs in eval mode and, through the
/// spectral-norm vectors the import derives, in training mode (batch statistics, one power step).
#[test]
fn biggan_weights_reproduce_the_official_outputs() {
    for name in ["fq_c10", "shared_hier_attn"] {
        let imported = interop::import(&fixture(&format!("biggan/{name}"))).unwrap();
        assert_eq!(imported.model.arch_name(), "biggan");
        let out = npz(&format!("biggan/{name}/outputs.npz"));
        let y = &out["y"];
        for (store, key, train) in [
            ("g", "img_g", false),
            ("g_ema", "img_ema", false),
            ("g", "img_g_trainmode", true),
        ] {
            let (_vs, g) = generator(&imported, store);
            let x = tch::no_grad(|| g.forward(&out["z"], Some(y), train));
            let d = max_diff(&x, &out[key]);
            assert!(d <= 1e-4, "{name} {key}: max |diff| {d}");
        }
        for (key, train) in [("d_out", false), ("d_out_trainmode", true)] {
            let (_vs, d) = discriminator(&imported);
            let logits = tch::no_grad(|| d.forward(&out["x_real"], Some(y), train));
            let diff = max_diff(&logits.reshape([-1]), &out[key].reshape([-1]));
            assert!(diff <= 1e-4, "{name} {key}: max |diff| {diff}");
        }
    }
}

/// UGATIT-pytorch checkpoints (full and light): the A->B generator's image, CAM logits and
/// heat-map, and the global and local critics, equal the official outputs.
#[test]
fn ugatit_checkpoints_reproduce_the_official_outputs() {
    use gantry::translate::nets::UgatitDiscriminator;
    for name in ["full", "light"] {
        let file = fixture(&format!("ugatit/{name}/ugatit_params.pt"));
        let out = npz(&format!("ugatit/{name}/outputs.npz"));
        let (gens, _) = interop::translation(&file, Some(Device::Cpu), Some(32)).unwrap();
        let t = gens.translate(&out["x"], true);
        for (got, key) in [
            (&t.image, "gen_out"),
            (&t.cam_logits, "gen_cam_logit"),
            (&t.heatmap, "gen_heatmap"),
        ] {
            let d = max_diff(got, &out[key]);
            assert!(d <= 1e-4, "{name} {key}: max |diff| {d}");
        }
        let sd: HashMap<String, Tensor> = gantry_metrics::torch_file::load_state_dict(&file)
            .unwrap()
            .into_iter()
            .collect();
        let imported = interop::ugatit::import(&sd, &file).unwrap();
        assert_eq!(
            (imported.model.global_layers, imported.model.local_layers),
            (7, 5)
        );
        for (critic, prefix, layers, x, size) in [
            ("disGA", "ga", 7, "x_global", 128),
            ("disLA", "la", 5, "x", 32),
        ] {
            let vs = nn::VarStore::new(Device::Cpu);
            let d =
                UgatitDiscriminator::new(&(vs.root() / prefix), imported.model.ch, layers, 3, size);
            let mine: HashMap<String, Tensor> = imported
                .d
                .iter()
                .filter(|(k, _)| k.starts_with(&format!("{prefix}.")))
                .map(|(k, v)| (k.clone(), v.shallow_clone()))
                .collect();
            interop::load_into(&vs.variables(), &mine, &file).unwrap();
            let (patch, cam, heat) = tch::no_grad(|| d.head_parts(&d.embed(&out[x], false), false));
            for (got, key) in [(&patch, "out"), (&cam, "cam_logit"), (&heat, "heatmap")] {
                let diff = max_diff(got, &out[&format!("{critic}_{key}")]);
                assert!(diff <= 1e-4, "{name} {critic} {key}: max |diff| {diff}");
            }
        }
    }
}

/// Checks that an export holds exactly the official state dict: the same keys, equal values
/// (`skip` names keys the export recomputes).
fn same_state(
    what: &str,
    exported: &[(String, Tensor)],
    official: &HashMap<String, Tensor>,
    skip: &dyn Fn(&str) -> bool,
) {
    let mine: HashMap<&str, &Tensor> = exported.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut theirs: Vec<&String> = official.keys().filter(|k| !skip(k)).collect();
    theirs.sort();
    let mut ours: Vec<&str> = mine.keys().copied().filter(|k| !skip(k)).collect();
    ours.sort();
    assert_eq!(ours, theirs, "{what}: keys differ");
    for k in theirs {
        let (a, b) = (mine[k.as_str()], &official[k]);
        assert_eq!(a.size(), b.size(), "{what} {k}");
        let d = max_diff(&a.to_kind(Kind::Float), &b.to_kind(Kind::Float));
        assert!(d == 0.0, "{what} {k}: max |diff| {d}");
    }
}

/// Imported official networks exported again under the reference's names equal the original
/// state dicts (BigGAN's `sv0`, a logged singular value, is recomputed and left out).
#[test]
fn official_networks_survive_import_and_export() {
    use gantry_metrics::module_pickle::{read_network_pickle, PickleEntry};
    for name in [
        "sg2ada-uncond",
        "sg2ada-cond",
        "adaptivemix",
        "r3gan",
        "r3gan-cond",
    ] {
        let file = fixture(&format!("sg2/{name}.pkl"));
        let imported = interop::import(&file).unwrap();
        let export =
            interop::reference_export(&imported.model, &imported.shape, &imported.stores).unwrap();
        let entries = read_network_pickle(&file).unwrap();
        for net in &export.nets {
            let Some((_, PickleEntry::Module(m))) = entries.iter().find(|(k, _)| *k == net.name)
            else {
                panic!("{name}: {}", net.name)
            };
            let official: HashMap<String, Tensor> = m
                .state
                .iter()
                .map(|(k, v)| (k.clone(), v.shallow_clone()))
                .collect();
            same_state(
                &format!("{name} {}", net.name),
                &net.tensors,
                &official,
                &|_| false,
            );
        }
        assert_eq!(export.nets.len(), 3, "{name}");
    }
    for name in ["fq_c10", "shared_hier_attn"] {
        let dir = fixture(&format!("biggan/{name}"));
        let imported = interop::import(&dir).unwrap();
        let export =
            interop::reference_export(&imported.model, &imported.shape, &imported.stores).unwrap();
        for net in &export.nets {
            let official: HashMap<String, Tensor> =
                gantry_metrics::torch_file::load_state_dict(&dir.join(format!("{}.pth", net.name)))
                    .unwrap()
                    .into_iter()
                    .collect();
            // FQ-BigGAN's dictionaries are not imported, so not exported either.
            let skip = |k: &str| {
                k.ends_with(".sv0")
                    || k.ends_with(".1.embed")
                    || k.ends_with(".cluster_size")
                    || k.ends_with(".embed_avg")
            };
            same_state(
                &format!("{name} {}", net.name),
                &net.tensors,
                &official,
                &skip,
            );
        }
        // With attention, gantry's D has a layer BigGAN-PyTorch's D_arch[32] cannot place.
        let expected = if name == "fq_c10" { 3 } else { 2 };
        assert_eq!(export.nets.len(), expected, "{name}");
    }
    for name in ["full", "light"] {
        let file = fixture(&format!("ugatit/{name}/ugatit_params.pt"));
        let sd: HashMap<String, Tensor> = gantry_metrics::torch_file::load_state_dict(&file)
            .unwrap()
            .into_iter()
            .collect();
        let imported = interop::ugatit::import(&sd, &file).unwrap();
        let mut cfg = gantry::translate::TranslateConfig {
            model: imported.model.clone(),
            ..Default::default()
        };
        cfg.data.resolution = 32;
        let export = interop::ugatit::export(
            &cfg,
            &imported.g,
            Some(&imported.d),
            interop::ExportFormat::Reference,
        )
        .unwrap();
        assert_eq!(export.nets.len(), 6);
        for net in &export.nets {
            let official: HashMap<String, Tensor> = sd
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        k.strip_prefix(&format!("{}.", net.name))?.to_string(),
                        v.shallow_clone(),
                    ))
                })
                .collect();
            same_state(
                &format!("ugatit {name} {}", net.name),
                &net.tensors,
                &official,
                &|_| false,
            );
        }
    }
}

/// `gantry train --init`: a new run starts from the pickle's G and D (at learning rates of
/// 1e-30 the trained weights are still the pickle's), and says so in its log.
#[test]
fn training_starts_from_imported_weights() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let pkl = fixture("sg2/sg2ada-uncond.pkl");
    let mut sets = common::tiny_run_sets(&[
        "data.resolution=16",
        "train.steps=2",
        "train.g_lr=1e-30",
        "train.d_lr=1e-30",
        "eval.every=0",
    ]);
    sets.push("train.ema.enabled=false".into());
    let opts = gantry::run::TrainOptions {
        sets,
        out: Some(out.clone()),
        init: Some(pkl.clone()),
        ..Default::default()
    };
    let mut notes = Vec::new();
    let (outcome, run_dir) = gantry::run::train(
        &opts,
        &std::sync::atomic::AtomicBool::new(false),
        &mut |ev| {
            if let gantry::train::Event::Warning(w) = ev {
                notes.push(w)
            }
        },
    )
    .unwrap();
    assert!(matches!(
        outcome,
        gantry::train::Outcome::Finished { step: 2 }
    ));
    assert!(
        notes
            .iter()
            .any(|n| n.contains("weights from")
                && n.contains("optimiser and plug-in state start fresh")),
        "{notes:?}"
    );
    let imported = interop::import(&pkl).unwrap();
    let ckpt = gantry::rundir::checkpoint::latest(&run_dir).unwrap();
    for store in ["g", "d"] {
        let saved = gantry::rundir::checkpoint::read_store(&ckpt, store).unwrap();
        for (k, v) in imported.store(store).unwrap() {
            if k == "pl_mean" || k.ends_with("w_avg") {
                continue; // tracked by training, not learned
            }
            let d = max_diff(&saved[k], v);
            assert!(d < 1e-6, "{store} {k}: {d}");
        }
    }
}

/// A tiny run of `sets` trained for 2 steps in `dir`, and its G (EMA) and D rebuilt from the
/// checkpoint.
struct TinyRun {
    dir: PathBuf,
    cfg: gantry::RunConfig,
    shape: gantry::models::DataShape,
}

fn tiny_run(dir: &std::path::Path, sets: &[&str]) -> TinyRun {
    let mut all =
        common::tiny_run_sets(&["train.steps=2", "eval.every=0", "train.checkpoint_every=2"]);
    all.extend(sets.iter().map(|s| s.to_string()));
    let opts = gantry::run::TrainOptions {
        sets: all,
        out: Some(dir.to_path_buf()),
        ..Default::default()
    };
    gantry::run::train(
        &opts,
        &std::sync::atomic::AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    let ckpt = gantry::rundir::checkpoint::latest(dir).unwrap();
    let meta = gantry::rundir::checkpoint::read_meta(&ckpt).unwrap();
    let cfg = gantry::RunConfig::from_value_str(&meta.config, &ckpt).unwrap();
    let ds = gantry::data::open(&cfg.data).unwrap();
    let shape = gantry::train::data_shape(ds.as_ref());
    TinyRun {
        dir: dir.to_path_buf(),
        cfg,
        shape,
    }
}

impl TinyRun {
    fn store(&self, name: &str) -> HashMap<String, Tensor> {
        let ckpt = gantry::rundir::checkpoint::latest(&self.dir).unwrap();
        gantry::rundir::checkpoint::read_store(&ckpt, name).unwrap()
    }

    /// gantry's sampling G (G_ema, or G without an EMA) on `z` in eval mode (StyleGAN2: constant
    /// noise, psi 1) and D(x).
    fn outputs(&self, z: &Tensor, labels: Option<&Tensor>, x: &Tensor) -> (Tensor, Tensor) {
        let g_store = if self.cfg.train.ema.enabled {
            "g_ema"
        } else {
            "g"
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let img = match &self.cfg.model {
            ModelConfig::StyleGan2(c) => {
                let g = StyleGan2Generator::new(vs.root(), c, &self.shape);
                interop::load_into(&vs.variables(), &self.store(g_store), &self.dir).unwrap();
                tch::no_grad(|| g.forward_truncated(z, labels, 1.0, None, NoiseMode::Const))
            }
            m => {
                let g = gantry::models::build_generator(vs.root(), m, &self.shape).unwrap();
                interop::load_into(&vs.variables(), &self.store(g_store), &self.dir).unwrap();
                tch::no_grad(|| g.forward(z, labels, false))
            }
        };
        let dvs = nn::VarStore::new(Device::Cpu);
        let d =
            gantry::models::build_discriminator(dvs.root(), &self.cfg.model, &self.shape).unwrap();
        interop::load_into(&dvs.variables(), &self.store("d"), &self.dir).unwrap();
        let logits = tch::no_grad(|| d.forward(x, labels, false));
        (img, logits.reshape([-1]))
    }
}

/// Every architecture's export loads strictly in PyTorch (`python/gantry_torch` for gantry's
/// own names; for the reference names gantry's PyTorch twins of stylegan2-ada-pytorch and R3GAN,
/// which use those names) and reproduces gantry's images and logits for the same inputs.
#[test]
fn exports_reproduce_gantry_in_pytorch() {
    let _lock = common::rng_lock();
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "dcgan",
            &[
                "model.arch=dcgan",
                "model.ngf=4",
                "model.ndf=4",
                "model.z_dim=8",
            ],
            "gantry",
        ),
        (
            "dcgan-layer",
            &[
                "model.arch=dcgan",
                "model.ngf=4",
                "model.ndf=4",
                "model.z_dim=8",
                "model.d_norm=layer",
                "loss.kind=wasserstein",
                "loss.gp.enabled=true",
            ],
            "gantry",
        ),
        (
            "dcgan-no-ema",
            &[
                "model.arch=dcgan",
                "model.ngf=4",
                "model.ndf=4",
                "model.z_dim=8",
                "train.ema.enabled=false",
            ],
            "gantry",
        ),
        (
            "resnet",
            &[
                "model.arch=resnet",
                "model.ngf=8",
                "model.ndf=8",
                "model.z_dim=8",
            ],
            "gantry",
        ),
        (
            "resnet-sn",
            &[
                "model.arch=resnet",
                "model.ngf=8",
                "model.ndf=8",
                "model.z_dim=8",
                "model.g_sn=true",
                "model.d_sn=true",
                "model.pool=mean",
            ],
            "gantry",
        ),
        (
            "mlp",
            &[
                "model.arch=mlp",
                "data.kind=gmm-8",
                "model.hidden=8",
                "model.depth=2",
                "model.z_dim=4",
            ],
            "gantry",
        ),
        (
            "stylegan2",
            &[
                "model.arch=stylegan2",
                "model.z_dim=8",
                "model.w_dim=8",
                "model.channel_base=64",
                "model.channel_max=8",
                "model.mapping_layers=2",
            ],
            "reference",
        ),
        (
            "stylegan2-cond",
            &[
                "model.arch=stylegan2",
                "model.z_dim=8",
                "model.w_dim=8",
                "model.channel_base=64",
                "model.channel_max=8",
                "model.mapping_layers=2",
                "model.conditional=true",
                "data.labels=true",
            ],
            "reference",
        ),
        (
            "r3gan",
            &[
                "model.arch=r3gan",
                "model.z_dim=8",
                "model.widths=[8]",
                "model.cardinality=[2]",
                "loss.kind=relativistic",
            ],
            "reference",
        ),
    ];
    let root = tempfile::tempdir().unwrap();
    for (name, sets, format) in cases {
        let run = tiny_run(&root.path().join(name), sets);
        let out = root.path().join(format!("{name}-export"));
        interop::export(&interop::ExportOptions {
            checkpoint: run.dir.clone(),
            out: out.clone(),
            format: interop::ExportFormat::parse(format).unwrap(),
            force: false,
        })
        .unwrap();
        // Without an EMA the checkpoint's g_ema is untrained: it is not exported.
        assert_eq!(
            out.join("G_ema.safetensors").exists(),
            run.cfg.train.ema.enabled,
            "{name}"
        );
        tch::manual_seed(7);
        let n = 4;
        let z_dim = match &run.cfg.model {
            ModelConfig::StyleGan2(c) => c.z_dim,
            m => {
                let vs = nn::VarStore::new(Device::Cpu);
                gantry::models::build_generator(vs.root(), m, &run.shape)
                    .unwrap()
                    .z_dim()
            }
        };
        let z = Tensor::randn([n, z_dim], (Kind::Float, Device::Cpu));
        let labels = run
            .shape
            .num_classes
            .filter(|_| run.cfg.model.arch().conditional())
            .map(|k| Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(k));
        let x = if run.shape.numel == 2 {
            Tensor::randn([n, 2, 1, 1], (Kind::Float, Device::Cpu))
        } else {
            Tensor::rand(
                [
                    n,
                    run.shape.channels,
                    run.shape.resolution,
                    run.shape.resolution,
                ],
                (Kind::Float, Device::Cpu),
            ) * 2.0
                - 1.0
        };
        let (img, logits) = run.outputs(&z, labels.as_ref(), &x);
        std::env::set_var("GANTRY_EXPORT", &out);
        let mut inputs = vec![("z", z), ("x", x)];
        if let Some(l) = labels {
            inputs.push(("labels", l));
        }
        let py = common::pyref("interop_export.py", &inputs);
        let di = max_diff(&py["img"].reshape(img.size().as_slice()), &img);
        let dd = max_diff(&py["d"].reshape([-1]), &logits);
        eprintln!("{name}: |img diff| {di:.2e}, |D diff| {dd:.2e}");
        assert!(di <= 1e-5 && dd <= 1e-5, "{name}: G {di}, D {dd}");
    }
}
