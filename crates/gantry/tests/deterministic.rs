//! `train.deterministic` swaps the ops whose CUDA kernels raise under deterministic algorithms
//! for equivalents built from deterministic ones. The switch is read on the CPU too, so here the
//! swapped paths are checked against the native ops: same values, same gradients. One test
//! function: the switch is process-global.

use gantry::device::set_numerics;
use tch::{Device, Kind, Tensor};

fn pad_and_grad(x: &Tensor, pads: [i64; 4], w: &Tensor) -> (Tensor, Tensor) {
    let x = x.detach().set_requires_grad(true);
    let y = gantry::nn::reflection_pad2d(&x, pads);
    (&y * w).sum(Kind::Double).backward();
    (y.detach(), x.grad())
}

fn ce_and_grad(logits: &Tensor, y: &Tensor) -> (Tensor, Tensor) {
    let l = logits.detach().set_requires_grad(true);
    let loss = gantry::classify::objective::cross_entropy(&l, y);
    loss.backward();
    (loss.detach(), l.grad())
}

#[test]
fn the_deterministic_paths_compute_what_the_native_ops_do() {
    tch::manual_seed(0);
    let opts = (Kind::Double, Device::Cpu);
    let x = Tensor::randn([2, 3, 7, 9], opts);
    let logits = Tensor::randn([6, 5], opts);
    let y = Tensor::from_slice(&[0i64, 4, 2, 2, 1, 3]);
    for pads in [[3, 3, 3, 3], [2, 5, 0, 4], [0, 0, 1, 0], [8, 1, 6, 6]] {
        let out = [x.size()[0], 3, 7 + pads[2] + pads[3], 9 + pads[0] + pads[1]];
        let w = Tensor::randn(out, opts);
        set_numerics(false, false, false);
        let (y0, g0) = pad_and_grad(&x, pads, &w);
        set_numerics(false, false, true);
        let (y1, g1) = pad_and_grad(&x, pads, &w);
        assert!(y0.equal(&y1), "reflection pad {pads:?}: values differ");
        let d = (&g0 - &g1).abs().max().double_value(&[]);
        assert!(
            d < 1e-12,
            "reflection pad {pads:?}: gradients differ by {d}"
        );
    }
    set_numerics(false, false, false);
    let (l0, g0) = ce_and_grad(&logits, &y);
    set_numerics(false, false, true);
    let (l1, g1) = ce_and_grad(&logits, &y);
    assert!((l0 - l1).abs().double_value(&[]) < 1e-14);
    assert!((g0 - g1).abs().max().double_value(&[]) < 1e-14);
    set_numerics(false, false, false);
}
