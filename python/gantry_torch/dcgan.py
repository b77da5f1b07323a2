"""gantry's `dcgan` (crates/gantry/src/models/dcgan.rs).

G: z -> ConvTranspose 4x4 (stride 1, no padding) to 4x4, then one ConvTranspose 4x4 stride 2
padding 1 per doubling; BatchNorm + ReLU after every layer but the last, tanh after the last; no
biases. Widths `ngf << (n - 1 - i)` (n = log2(resolution) - 2), the last layer outputs the image
channels. Blocks are named by the resolution they output: `b4.conv`, `b4.bn`, ..., `b{R}.conv`.

D: Conv 4x4 stride 2 padding 1 per halving down to 4x4 (widths `ndf << i`), each followed by
the normalisation of `d_norm` (none in the first block; `batch`: BatchNorm `b{r}.bn`; `layer`:
LayerNorm over (C, H, W) `b{r}.ln`, eps 1e-5; `none`) and LeakyReLU(0.2); then Conv 4x4 (no
padding) to one logit, `b4.conv`. Blocks are named by the resolution they read. No biases.
Labels are ignored (the architecture is unconditional).
"""
import math

import torch.nn as nn
import torch.nn.functional as F

from .layers import BatchNorm2d

D_NORMS = ("batch", "layer", "none")


def levels(resolution):
    """Stride-2 layers between 4x4 and the resolution."""
    return int(round(math.log2(resolution))) - 2


def _check(img_resolution, d_norm):
    r = img_resolution
    if r < 8 or r & (r - 1):
        raise ValueError(f"dcgan needs a power-of-two resolution >= 8, got {r}")
    if d_norm not in D_NORMS:
        raise ValueError(f"dcgan d_norm must be one of {D_NORMS}, got {d_norm!r}")


class _Block(nn.Module):
    pass


class Generator(nn.Module):
    def __init__(self, z_dim=100, ngf=64, ndf=64, d_norm="batch", *, img_channels=3, img_resolution=32,
                 num_classes=None):
        super().__init__()
        _check(img_resolution, d_norm)
        self.z_dim = z_dim
        n = levels(img_resolution)
        self.names = []
        c_in = z_dim
        for i in range(n + 1):
            last = i == n
            c_out = img_channels if last else ngf << (n - 1 - i)
            stride, padding = (1, 0) if i == 0 else (2, 1)
            block = _Block()
            block.conv = nn.ConvTranspose2d(c_in, c_out, 4, stride, padding, bias=False)
            if not last:
                block.bn = BatchNorm2d(c_out)
            name = f"b{4 << i}"
            self.add_module(name, block)
            self.names.append(name)
            c_in = c_out

    def forward(self, z, labels=None):
        h = z.view(-1, self.z_dim, 1, 1)
        for name in self.names:
            block = getattr(self, name)
            h = block.conv(h)
            h = F.relu(block.bn(h)) if hasattr(block, "bn") else h.tanh()
        return h


class Discriminator(nn.Module):
    def __init__(self, z_dim=100, ngf=64, ndf=64, d_norm="batch", *, img_channels=3, img_resolution=32,
                 num_classes=None):
        super().__init__()
        _check(img_resolution, d_norm)
        self.names = []
        c_in = img_channels
        for i in range(levels(img_resolution)):
            r = img_resolution >> i
            c_out = ndf << i
            block = _Block()
            block.conv = nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False)
            if i > 0 and d_norm == "batch":
                block.bn = BatchNorm2d(c_out)
            elif i > 0 and d_norm == "layer":
                block.ln = nn.LayerNorm([c_out, r // 2, r // 2], eps=1e-5)
            name = f"b{r}"
            self.add_module(name, block)
            self.names.append(name)
            c_in = c_out
        self.b4 = _Block()
        self.b4.conv = nn.Conv2d(c_in, 1, 4, bias=False)

    def embed(self, x):
        """Features after the last stride-2 block, [N, C, 4, 4] (gantry's `embed`)."""
        h = x
        for name in self.names:
            block = getattr(self, name)
            h = block.conv(h)
            if hasattr(block, "bn"):
                h = block.bn(h)
            elif hasattr(block, "ln"):
                h = block.ln(h)
            h = F.leaky_relu(h, 0.2)
        return h

    def forward(self, x, labels=None):
        return self.b4.conv(self.embed(x)).flatten(1)[:, 0]
