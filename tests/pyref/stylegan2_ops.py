"""Reference for gantry's StyleGAN2 ops (crates/gantry/tests/backbones_stylegan2.rs): modulated /
demodulated convolution (plain, 2x up, 1x1 toRGB without demodulation), the [1,3,3,1] blur up-
and downsampling, D's downsampling convolutions, and minibatch stddev, in float64 with inputs and
weights from gantry. For each op: the output and the gradients of sum(output * gy) with respect to
every input. Every conv2d_resample result is first checked against the reference's general
(pad, upsample, convolve, downsample) path, and each modulated convolution's fused (grouped) form
against its scale-the-activations form."""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stylegan2_ref as R  # noqa: E402

torch.set_default_dtype(torch.float64)
t = {k: torch.from_numpy(v) for k, v in np.load(sys.argv[1]).items()}
f = R.setup_filter()
out = {}


def check_same(a, b, what):
    err = (a - b).abs().max().item()
    assert err < 1e-10 * max(1.0, b.abs().max().item()), f"{what}: fast and generic paths differ by {err}"


def record(name, fn, inputs, gy):
    """fn(*inputs, generic) -> output; records output and input gradients of sum(output * gy)."""
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    y = fn(*leaves, False)
    check_same(y, fn(*inputs, True), name)
    grads = torch.autograd.grad((y * gy).sum(), leaves)
    out[name] = y.detach()
    for i, g in enumerate(grads):
        out[f"{name}.grad{i}"] = g


def modconv(up, padding, demodulate, flip_weight):
    def fn(x, w, s, generic):
        a = R.modulated_conv2d(x, w, s, up=up, padding=padding, f=f, demodulate=demodulate, flip_weight=flip_weight,
                               fused_modconv=True, generic=generic)
        b = R.modulated_conv2d(x, w, s, up=up, padding=padding, f=f, demodulate=demodulate, flip_weight=flip_weight,
                               fused_modconv=False, generic=generic)
        check_same(a, b, "fused vs scale-activations")
        return a
    return fn


record("modconv", modconv(1, 1, True, True), [t["x"], t["w3"], t["s"]], t["gy8"])
record("modconv_up", modconv(2, 1, True, False), [t["x"], t["w3"], t["s"]], t["gy16"])
record("torgb", modconv(1, 0, False, True), [t["x"], t["w1"], t["s"]], t["gy_rgb"])
record("upsample", lambda x, generic: R.upsample2d(x, f), [t["x"]], t["gy_up"])
record("downsample", lambda x, generic: R.downsample2d(x, f), [t["x"]], t["gy_down"])
record("conv_down", lambda x, w, generic: R.conv2d_resample(x, w, f, down=2, padding=1, generic=generic), [t["x"], t["w3"]], t["gy4"])
record("skip_down", lambda x, w, generic: R.conv2d_resample(x, w, f, down=2, padding=0, generic=generic), [t["x"], t["w1x"]], t["gy4"])
record("mbstd", lambda x, generic: R.minibatch_std(x, 4, 2), [t["xm"]], t["gy_mbstd"])

np.savez(sys.argv[2], **{k: v.detach().numpy() for k, v in out.items()})
