//! Fuzzing the readers of outside bytes in gantry-metrics: weights files (legacy and zip
//! torch.save through the pickle reader, safetensors) and pytorch-fid `.npz` statistics. Every
//! input must come back as `Ok` or `Err`, never a panic, and never an allocation the input's size
//! does not justify (the readers' limits; a bomb would abort the process and fail the run).

#[path = "../../../tests/fuzz/mutate.rs"]
mod mutate;

use gantry_metrics::{load_state_dict, Stats};
use std::path::Path;
use tch::{Kind, Tensor};

/// Small weights files in both torch.save formats, written by the virtualenv's PyTorch.
fn torch_seeds(dir: &Path) -> Vec<Vec<u8>> {
    let python = std::env::var_os("GANTRY_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"));
    let script = "import sys, torch, collections\n\
        sd = collections.OrderedDict(a=torch.arange(6.0).view(2, 3), b=torch.ones(4, dtype=torch.int64))\n\
        sd['c'] = sd['a'][1]\n\
        torch.save(sd, sys.argv[1] + '/legacy.pth', _use_new_zipfile_serialization=False)\n\
        torch.save(sd, sys.argv[1] + '/zip.pth')\n";
    let status = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(dir)
        .status()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    assert!(status.success());
    ["legacy.pth", "zip.pth"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect()
}

fn run(seed: Vec<u8>, file: &Path, read: impl Fn(&Path)) {
    let mut runner = proptest::test_runner::TestRunner::new(mutate::config());
    runner
        .run(&mutate::near(seed), |bytes| {
            std::fs::write(file, &bytes).unwrap();
            read(file);
            Ok(())
        })
        .unwrap();
}

#[test]
fn weights_files() {
    let dir = std::env::temp_dir().join(format!("gantry-fuzz-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("fuzz.pth");
    for seed in torch_seeds(&dir) {
        assert!(load_state_dict(&dir.join("legacy.pth")).is_ok());
        run(seed, &file, |f| {
            let _ = load_state_dict(f);
        });
    }
    let st = dir.join("w.safetensors");
    Tensor::write_safetensors(
        &[("a", &Tensor::arange(6, (Kind::Float, tch::Device::Cpu)))],
        &st,
    )
    .unwrap();
    run(
        std::fs::read(&st).unwrap(),
        &dir.join("fuzz.safetensors"),
        |f| {
            let _ = load_state_dict(f);
        },
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn npz_statistics() {
    let dir = std::env::temp_dir().join(format!("gantry-fuzz-npz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let seed = dir.join("seed.npz");
    let features = Tensor::randn([5, 3], (Kind::Double, tch::Device::Cpu));
    Stats::from_features(&features)
        .unwrap()
        .save_npz(&seed)
        .unwrap();
    run(std::fs::read(&seed).unwrap(), &dir.join("fuzz.npz"), |f| {
        let _ = Stats::load_npz(f);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

/// stylegan2-ada-style network pickles (persistent classes, inline legacy storages).
#[test]
fn network_pickles() {
    let dir = std::env::temp_dir().join(format!("gantry-fuzz-pkl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let seed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/interop/sg2/sg2ada-uncond.pkl");
    run(std::fs::read(seed).unwrap(), &dir.join("fuzz.pkl"), |f| {
        let _ = gantry_metrics::module_pickle::read_network_pickle(f);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}
