//! Fuzzing what gantry reads back from disk: checkpoint metadata (`meta.json`), checkpoint
//! stores (safetensors, read by libtorch) and configuration files (TOML, then the validation
//! gate). Every input must come back as `Ok` or `Err`, never a panic.

#[path = "../../../tests/fuzz/mutate.rs"]
mod mutate;

use gantry::rundir::checkpoint;
use gantry::RunConfig;
use std::path::Path;
use tch::{Kind, Tensor};

fn run(seed: Vec<u8>, file: &Path, read: impl Fn()) {
    let mut runner = proptest::test_runner::TestRunner::new(mutate::config());
    runner
        .run(&mutate::near(seed), |bytes| {
            std::fs::write(file, &bytes).unwrap();
            read();
            Ok(())
        })
        .unwrap();
}

#[test]
fn checkpoint_metadata_and_stores() {
    let dir = tempfile::tempdir().unwrap();
    let meta = checkpoint::Meta {
        format_version: checkpoint::FORMAT_VERSION,
        gantry_version: "fuzz".into(),
        step: 3,
        images_seen: 24,
        loader: Default::default(),
        wall_seconds: 1.5,
        seed_offset: 0,
        world_size: 1,
        arch: "dcgan".into(),
        config: RunConfig::default().to_toml(),
    };
    let t = Tensor::arange(12, (Kind::Float, tch::Device::Cpu)).view([3, 4]);
    let ckpt = checkpoint::save(dir.path(), &meta, &[("g", vec![("w".into(), t)])]).unwrap();
    let meta_seed = std::fs::read(ckpt.join("meta.json")).unwrap();
    let store_seed = std::fs::read(ckpt.join("g.safetensors")).unwrap();
    run(meta_seed, &ckpt.join("meta.json"), || {
        let _ = checkpoint::read_meta(&ckpt);
    });
    run(store_seed, &ckpt.join("g.safetensors"), || {
        let _ = checkpoint::read_store(&ckpt, "g");
    });
}

#[test]
fn configuration_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fuzz.toml");
    for preset in ["shapes", "stylegan2-32-small", "biggan-cifar"] {
        let seed = RunConfig::resolve(Some(preset), &[]).unwrap().to_toml();
        run(seed.into_bytes(), &file, || {
            if let Ok(cfg) = RunConfig::from_file(&file) {
                let _ = cfg.validate();
            }
        });
    }
}

/// Foreign weights (`gantry sample --checkpoint x.pkl`, `--init`): mutated network pickles,
/// BigGAN-PyTorch and UGATIT-pytorch state dicts are imported (read, mapped, checked) without a
/// panic, and a successful import builds and fills gantry's networks.
#[test]
fn foreign_weights() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/interop");
    for (seed, name) in [
        ("sg2/sg2ada-cond.pkl", "x.pkl"),
        ("sg2/r3gan.pkl", "x.pkl"),
        ("biggan/shared_hier_attn/G.pth", "G.pth"),
    ] {
        let file = dir.path().join(name);
        run(std::fs::read(fixtures.join(seed)).unwrap(), &file, || {
            if let Ok(imported) = gantry::interop::import(&file) {
                let vs = tch::nn::VarStore::new(tch::Device::Cpu);
                if gantry::models::build_generator(vs.root(), &imported.model, &imported.shape)
                    .is_ok()
                {
                    let (_, t) = imported.generator_store(true).unwrap();
                    let _ = gantry::interop::load_into(&vs.variables(), t, &file);
                }
            }
        });
    }
    let file = dir.path().join("u.pt");
    run(
        std::fs::read(fixtures.join("ugatit/light/ugatit_params.pt")).unwrap(),
        &file,
        || {
            let _ = gantry::interop::translation(&file, Some(tch::Device::Cpu), Some(32));
        },
    );
}
