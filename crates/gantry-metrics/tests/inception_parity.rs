//! The FID Inception against pytorch-fid and torch-fidelity, with random weights built in
//! PyTorch (tests/pyref/metrics_inception.py), loaded from both torch.save formats and from
//! safetensors; plus how truncated weights files fail.

mod common;

use common::{assert_close, assert_rel, npy, pyref, TempDir};
use gantry_metrics::{
    frechet_distance, load_state_dict, torch_file, weights_hash, FeatureExtractor, FidInception,
    InceptionExtractor, MetricsError, Preprocessing, Stats, FID_WEIGHTS_FILE,
};
use tch::{Device, Tensor};

const SPEC_KEYS: &str = include_str!("fixtures/fid-inception-keys.tsv");

fn spec_shapes() -> Vec<(String, Vec<i64>)> {
    let mut v: Vec<(String, Vec<i64>)> = SPEC_KEYS
        .lines()
        .skip(1)
        .filter(|l| !l.contains("num_batches_tracked"))
        .map(|l| {
            let mut f = l.split('\t');
            let name = f.next().unwrap().to_string();
            let shape = f
                .next()
                .unwrap()
                .trim_matches(|c| c == '(' || c == ')')
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().parse().unwrap())
                .collect();
            (name, shape)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn network_layout_is_the_spec_key_list() {
    let shapes = spec_shapes();
    assert_eq!(shapes.len(), 566 - 94);
    assert_eq!(FidInception::parameter_shapes(), shapes);
}

fn expect_weights_error(path: &std::path::Path, what: &str) {
    let e = FidInception::load(path, Device::Cpu).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, MetricsError::Weights { .. }), "{what}: {e:?}");
    assert!(
        msg.contains(FID_WEIGHTS_FILE) && msg.contains("95,628,359") && !msg.contains('\n'),
        "{what}: {msg}"
    );
}

#[test]
fn random_weights_match_pytorch_fid_and_torch_fidelity() {
    let dir = TempDir::new("inception");
    pyref("metrics_inception.py", &[dir.arg()]);

    // The PyTorch construction has exactly the real file's keys, shapes and dtypes.
    let keys = std::fs::read_to_string(dir.join("keys.tsv")).unwrap();
    assert_eq!(keys, SPEC_KEYS);

    let x299 = npy(dir.join("x299.npy"));
    let images = npy(dir.join("images.npy"));
    for file in ["weights_legacy.pth", "weights_zip.pth"] {
        let net = FidInception::load(&dir.join(file), Device::Cpu).unwrap();
        let (pool, logits) = net.forward(&x299).unwrap();
        assert_close(file, &pool, &npy(dir.join("pool_net.npy")), 1e-4);
        assert_close(file, &logits, &npy(dir.join("logits_net.npy")), 1e-4);
    }

    // End to end through each tool's preprocessing, batched unevenly (3 images, batch 2).
    let legacy = dir.join("weights_legacy.pth");
    let mut ex = InceptionExtractor::load(&legacy, Device::Cpu, Preprocessing::PytorchFid).unwrap();
    ex.batch_size = 2;
    assert_eq!(ex.net.weights_id(), weights_hash(&legacy).unwrap());
    assert!(ex.id().contains(ex.net.weights_id()) && ex.id().ends_with("pytorch-fid"));
    let f = ex.extract(&images).unwrap();
    assert_close(
        "pytorch-fid pool3",
        &f.pool,
        &npy(dir.join("pool_pfid.npy")),
        1e-4,
    );
    let logits = f.logits.unwrap();
    assert_close(
        "pytorch-fid logits",
        &logits,
        &npy(dir.join("logits_pfid.npy")),
        1e-4,
    );
    ex.mode = Preprocessing::Tf;
    let f = ex.extract(&images).unwrap();
    assert_close(
        "torch-fidelity pool3",
        &f.pool,
        &npy(dir.join("pool_tf.npy")),
        1e-4,
    );
    let logits = f.logits.unwrap();
    assert_close(
        "torch-fidelity logits",
        &logits,
        &npy(dir.join("logits_tf.npy")),
        1e-4,
    );

    // Both torch.save formats decode to the same tensors; safetensors round-trips them.
    let a = load_state_dict(&legacy).unwrap();
    let b = load_state_dict(&dir.join("weights_zip.pth")).unwrap();
    assert_eq!(a.len(), 566);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, t) in &a {
        assert!(t.equal(&b[k]), "{k} differs between legacy and zip");
    }
    let st = dir.join("weights.safetensors");
    let named: Vec<(&str, &Tensor)> = a.iter().map(|(k, t)| (k.as_str(), t)).collect();
    Tensor::write_safetensors(&named, &st).unwrap();
    let c = load_state_dict(&st).unwrap();
    for (k, t) in &a {
        assert!(t.equal(&c[k]), "{k} differs after safetensors");
    }
    FidInception::load(&st, Device::Cpu).unwrap();

    // Truncated downloads fail with the expected file named, for every format and cut.
    for (src, cuts) in [
        ("weights_legacy.pth", [60, 4_000, 50_000_000]),
        ("weights_zip.pth", [60, 4_000, 50_000_000]),
        ("weights.safetensors", [60, 4_000, 50_000_000]),
    ] {
        let bytes = std::fs::read(dir.join(src)).unwrap();
        for cut in cuts {
            let p = dir.join("truncated.bin");
            std::fs::write(&p, &bytes[..cut]).unwrap();
            expect_weights_error(&p, &format!("{src} cut at {cut}"));
        }
        // Corrupt bytes in the header / pickle region: an error or a state dict, never a panic.
        let mut bad = bytes.clone();
        let mut seed = 0x9e37_79b9_u64;
        for _ in 0..15 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let at = (seed >> 33) as usize % 40_000;
            bad[at] = (seed >> 13) as u8;
            let _ = torch_file::parse_state_dict(std::path::Path::new(src), &bad);
            bad[at] = bytes[at];
        }
        // One byte short: the last storage is incomplete.
        let p = dir.join("short.bin");
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        expect_weights_error(&p, &format!("{src} one byte short"));
    }
}

/// The CPU path at a batch that exercises all of it (channels-last, each block written into
/// its output slices, the stem in sub-batches of 10 with a remainder: 25 = 10 + 10 + 5) gives
/// pytorch-fid's features, and the FID of two sets computed from them is pytorch-fid's.
#[test]
fn batched_cpu_path_matches_pytorch_fid_features_and_fid() {
    let dir = TempDir::new("inception-batch");
    pyref("metrics_inception.py", &[dir.arg(), "25"]);
    let images = npy(dir.join("images.npy"));
    let want = npy(dir.join("pool_pfid.npy"));
    let ex = InceptionExtractor::load(
        &dir.join("weights_legacy.pth"),
        Device::Cpu,
        Preprocessing::PytorchFid,
    )
    .unwrap();
    assert_eq!(ex.batch_size, InceptionExtractor::DEFAULT_BATCH_SIZE);
    let got = ex.extract(&images).unwrap().pool;
    assert_close("pool3, one batch of 25", &got, &want, 1e-4);

    let fid = |f: &Tensor| {
        let stats = |a, n| Stats::from_features(&f.narrow(0, a, n)).unwrap();
        frechet_distance(&stats(0, 13), &stats(13, 12))
            .unwrap()
            .value
    };
    let (g, w) = (fid(&got), fid(&want));
    eprintln!("FID 13 vs 12 images: gantry features {g}, pytorch-fid features {w}");
    assert_rel("FID from gantry's features", g, w, 1e-4);
}
