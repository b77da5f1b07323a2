"""Shared helpers for gantry-metrics' reference scripts (tests/pyref/metrics_*.py)."""
import numpy as np
import torch
import torch.nn as nn
from pytorch_fid.inception import (
    FIDInceptionA,
    FIDInceptionC,
    FIDInceptionE_1,
    FIDInceptionE_2,
    _inception_v3,
)


def random_fid_inception(seed=0, calib_size=299):
    """pytorch-fid's fid_inception_v3() layout with random weights instead of the download.

    Built exactly as pytorch_fid.inception.fid_inception_v3 builds it (torchvision Inception3,
    1008 classes, no aux logits, FID blocks patched in) minus load_state_dict. BatchNorm running
    statistics are first calibrated on random images (so activations keep a sane scale through
    94 layers) and then perturbed, together with the affine parameters, so that a loader that
    ignored them would fail the parity test.
    """
    torch.manual_seed(seed)
    net = _inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE_1(1280)
    net.Mixed_7c = FIDInceptionE_2(2048)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batch
    net.train()
    with torch.no_grad():
        net(torch.rand(4, 3, calib_size, calib_size) * 2 - 1)
        g = torch.Generator().manual_seed(seed + 1)
        for m in bns:
            c = m.num_features
            m.running_var.mul_(torch.rand(c, generator=g) * 1.5 + 0.5)
            m.running_mean.add_(0.2 * torch.randn(c, generator=g) * m.running_var.sqrt())
            m.weight.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.copy_(0.1 * torch.randn(c, generator=g))
    net.eval()
    return net


def keys_tsv(state_dict):
    """The key list in the format of crates/gantry-metrics/tests/fixtures/fid-inception-keys.tsv."""
    storage = {torch.float32: "FloatStorage", torch.int64: "LongStorage"}
    lines = ["name\tshape\tdtype"]
    for k in sorted(state_dict):
        t = state_dict[k]
        lines.append(f"{k}\t{tuple(t.shape)}\t{storage[t.dtype]}")
    return "\n".join(lines) + "\n"


def save_npy(path, array):
    np.save(path, np.ascontiguousarray(array))
