//! `gantry fid` end to end against pytorch-fid itself: the same random-weight FID Inception
//! (legacy torch.save file), the same two PNG folders; plus the `.npz` statistics round trip.

use std::path::{Path, PathBuf};
use std::process::Command;

fn python() -> PathBuf {
    std::env::var_os("GANTRY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"))
}

fn fid_value(out: &std::process::Output) -> f64 {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    text.trim()
        .strip_prefix("FID: ")
        .unwrap_or_else(|| panic!("unexpected output {text}"))
        .parse()
        .unwrap()
}

#[test]
fn matches_pytorch_fid_on_image_folders() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/pyref/fid_cli.py");
    let status = Command::new(python())
        .arg(&script)
        .arg(work)
        .status()
        .expect("python");
    assert!(
        status.success(),
        "tests/pyref/fid_cli.py failed (run scripts/setup-venv.sh?)"
    );
    let gantry = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(args)
            .output()
            .unwrap()
    };
    let (a, b, w) = (work.join("a"), work.join("b"), work.join("weights.pth"));
    let npz = work.join("a.npz");
    let got = fid_value(&gantry(&[
        "fid",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--weights",
        w.to_str().unwrap(),
        "--save-stats",
        npz.to_str().unwrap(),
    ]));
    assert!(got.is_finite() && got > 0.0, "{got}");
    // Folder reading, resizing, network and statistics agree with pytorch-fid.
    let load = |p: &Path| -> std::collections::HashMap<String, tch::Tensor> {
        tch::Tensor::read_npz(p).unwrap().into_iter().collect()
    };
    let (mine, theirs) = (load(&npz), load(&work.join("ref_a.npz")));
    for k in ["mu", "sigma"] {
        let (x, y) = (
            mine[k].to_kind(tch::Kind::Double),
            theirs[k].to_kind(tch::Kind::Double),
        );
        let err = (&x - &y).abs().max().double_value(&[]) / y.abs().max().double_value(&[]);
        assert!(err < 1e-4, "{k}: relative error {err}");
    }
    // Statistics files are interchangeable with folders.
    let from_npz = fid_value(&gantry(&[
        "fid",
        npz.to_str().unwrap(),
        b.to_str().unwrap(),
        "--weights",
        w.to_str().unwrap(),
    ]));
    assert!(((from_npz - got) / got).abs() < 1e-9);
    // bf16 feature extraction: finite, and near the fp32 value (the random-weight network's FID
    // moves by about 1% here; docs/metrics.md).
    let bf16 = fid_value(&gantry(&[
        "fid",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--weights",
        w.to_str().unwrap(),
        "--precision",
        "bf16",
    ]));
    assert!(
        bf16 != got && ((bf16 - got) / got).abs() < 0.05,
        "{bf16} vs {got}"
    );
    // No weights: a clear error naming the file gantry needs.
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["fid", a.to_str().unwrap(), b.to_str().unwrap()])
        .env_remove("GANTRY_FID_WEIGHTS")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("pt_inception-2015-12-05-6726825d.pth"),
        "{err}"
    );
}
