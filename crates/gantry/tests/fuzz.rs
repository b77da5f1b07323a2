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
