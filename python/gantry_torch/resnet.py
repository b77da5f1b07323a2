"""gantry's `resnet` (crates/gantry/src/models/resnet.rs): the SNGAN / WGAN-GP CIFAR ResNet.

G (`g_sn`: spectral norm on every conv and linear layer of G):
  z -> Linear `b4.fc` to ngf*4*4 -> view [ngf, 4, 4]
  -> one up-block per doubling, `b8` .. `b{R}`:
       h = conv1(relu(bn1(conv0(up(relu(bn0(x))))))) + skip(up(x))
     (conv0/conv1 3x3, skip 1x1, all with bias; up = nearest 2x)
  -> `out.bn`, ReLU, `out.conv` (3x3, bias) -> tanh.
D (`d_sn`: spectral norm on every layer of D, `out` included):
  blocks named by the resolution they read: down-blocks `b{R}` .. `b16` (down to 8x8; at least
  one), then two blocks without resampling at the deepest resolution, `b8a`, `b8b` (for 8x8
  input: `b8`, `b4a`, `b4b`).
    first block:  h = avgpool(conv1(relu(conv0(x)))) + skip(avgpool(x))
    down block:   h = avgpool(conv1(relu(conv0(relu(x))))) + avgpool(skip(x))
    plain block:  h = conv1(relu(conv0(relu(x)))) + x   (a 1x1 `skip` only if widths differ)
  -> ReLU -> sum (`pool = "sum"`, SNGAN) or mean (`"mean"`, WGAN-GP) over space -> Linear `out`.
`init` only says how gantry initialised the weights; it changes nothing here. Labels are ignored.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import BatchNorm2d, Conv2d, Linear

POOLS = ("sum", "mean")
INITS = ("glorot", "ortho", "normal")


def _log2(r):
    return int(round(math.log2(r)))


def _check(img_resolution, pool, init):
    r = img_resolution
    if r < 8 or r & (r - 1):
        raise ValueError(f"resnet needs a power-of-two resolution >= 8, got {r}")
    if pool not in POOLS:
        raise ValueError(f"resnet pool must be one of {POOLS}, got {pool!r}")
    if init not in INITS:
        raise ValueError(f"resnet init must be one of {INITS}, got {init!r}")


def _up(x):
    return F.interpolate(x, scale_factor=2, mode="nearest")


def _down(x):
    return F.avg_pool2d(x, 2)


class GBlock(nn.Module):
    def __init__(self, c_in, c_out, sn):
        super().__init__()
        self.bn0 = BatchNorm2d(c_in)
        self.conv0 = Conv2d(c_in, c_out, 3, sn=sn)
        self.bn1 = BatchNorm2d(c_out)
        self.conv1 = Conv2d(c_out, c_out, 3, sn=sn)
        self.skip = Conv2d(c_in, c_out, 1, sn=sn)

    def forward(self, x):
        h = self.conv0(_up(F.relu(self.bn0(x))))
        h = self.conv1(F.relu(self.bn1(h)))
        return h + self.skip(_up(x))


class _Out(nn.Module):
    def __init__(self, width, channels, sn):
        super().__init__()
        self.bn = BatchNorm2d(width)
        self.conv = Conv2d(width, channels, 3, sn=sn)


class _B4(nn.Module):
    def __init__(self, z_dim, width, sn):
        super().__init__()
        self.fc = Linear(z_dim, width * 16, sn=sn)


class Generator(nn.Module):
    def __init__(self, z_dim=128, ngf=256, ndf=128, g_sn=False, d_sn=True, pool="sum", init="glorot", *,
                 img_channels=3, img_resolution=32, num_classes=None):
        super().__init__()
        _check(img_resolution, pool, init)
        self.z_dim, self.width = z_dim, ngf
        self.b4 = _B4(z_dim, ngf, g_sn)
        self.names = [f"b{8 << i}" for i in range(_log2(img_resolution) - 2)]
        for name in self.names:
            self.add_module(name, GBlock(ngf, ngf, g_sn))
        self.out = _Out(ngf, img_channels, g_sn)

    def forward(self, z, labels=None):
        h = self.b4.fc(z).view(-1, self.width, 4, 4)
        for name in self.names:
            h = getattr(self, name)(h)
        return torch.tanh(self.out.conv(F.relu(self.out.bn(h))))


class DBlock(nn.Module):
    def __init__(self, kind, c_in, c_out, sn):
        super().__init__()
        self.kind = kind  # "optimised", "down" or "plain"
        self.conv0 = Conv2d(c_in, c_out, 3, sn=sn)
        self.conv1 = Conv2d(c_out, c_out, 3, sn=sn)
        if kind != "plain" or c_in != c_out:
            self.skip = Conv2d(c_in, c_out, 1, sn=sn)

    def forward(self, x):
        h = x if self.kind == "optimised" else F.relu(x)
        h = self.conv1(F.relu(self.conv0(h)))
        if self.kind == "optimised":
            return _down(h) + self.skip(_down(x))
        if self.kind == "down":
            return _down(h) + _down(self.skip(x))
        return h + (self.skip(x) if hasattr(self, "skip") else x)


def d_block_names(r):
    """D's blocks at resolution r: down-blocks by the resolution they read, then two at the
    deepest resolution (`b8a`, `b8b` for 32x32)."""
    downs = max(_log2(r) - 3, 1)
    low = r >> downs
    return [f"b{r >> i}" for i in range(downs)] + [f"b{low}a", f"b{low}b"], downs


class Discriminator(nn.Module):
    def __init__(self, z_dim=128, ngf=256, ndf=128, g_sn=False, d_sn=True, pool="sum", init="glorot", *,
                 img_channels=3, img_resolution=32, num_classes=None):
        super().__init__()
        _check(img_resolution, pool, init)
        self.pool = pool
        self.names, downs = d_block_names(img_resolution)
        for i, name in enumerate(self.names):
            kind = "optimised" if i == 0 else "down" if i < downs else "plain"
            self.add_module(name, DBlock(kind, img_channels if i == 0 else ndf, ndf, d_sn))
        self.out = Linear(ndf, 1, sn=d_sn)

    def embed(self, x):
        """The deepest (pre-activation) features, gantry's `embed`."""
        h = x
        for name in self.names:
            h = getattr(self, name)(h)
        return h

    def forward(self, x, labels=None):
        h = F.relu(self.embed(x))
        h = h.sum([2, 3]) if self.pool == "sum" else h.mean([2, 3])
        return self.out(h)[:, 0]
