//! The three preprocessing modes against the tools they reproduce (tests/pyref/metrics_resize.py).

mod common;

use common::{assert_close, npy, pyref, TempDir};
use gantry_metrics::{preprocess, Preprocessing};
use tch::Tensor;

#[test]
fn each_mode_matches_its_reference_tool() {
    let dir = TempDir::new("resize");
    pyref("metrics_resize.py", &[dir.arg()]);
    for name in ["small", "smooth", "large", "exact"] {
        let images = npy(dir.join(&format!("{name}.npy")));
        for mode in [
            Preprocessing::PytorchFid,
            Preprocessing::Tf,
            Preprocessing::Clean,
        ] {
            let want = npy(dir.join(&format!("{name}_{}.npy", mode.id())));
            let got = preprocess(&images, mode).unwrap();
            // Values are in [-1, 1]: 1e-4 of the range.
            assert_close(&format!("{name} {mode}"), &got, &want, 1e-4);
        }
    }
}

#[test]
fn grey_images_are_repeated_to_rgb() {
    let grey = Tensor::arange(2 * 20 * 28, (tch::Kind::Int64, tch::Device::Cpu))
        .remainder(256)
        .to_kind(tch::Kind::Uint8)
        .view([2, 1, 20, 28]);
    let rgb = grey.repeat([1, 3, 1, 1]);
    for mode in [
        Preprocessing::PytorchFid,
        Preprocessing::Tf,
        Preprocessing::Clean,
    ] {
        let a = preprocess(&grey, mode).unwrap();
        let b = preprocess(&rgb, mode).unwrap();
        assert!(a.equal(&b), "{mode}");
    }
}
