"""Reference for gantry's `resnet` and `biggan` networks, float64, with gantry's weights: the
generator and discriminator written the way the reference code does (SNGAN chainer `Block` /
`OptimizedBlock`, WGAN-GP `ResidualBlock`, BigGAN-PyTorch `GBlock` / `DBlock` / `ccbn` /
`Attention` / projection head), SN through torch.nn.utils.spectral_norm.

Inputs (besides the weights, `g.*` and `d.*`): `z`, `x` (D's input), `gx`, `gd` (cotangents),
`labels` (biggan), and scalars `cfg.biggan`, `cfg.shared`, `cfg.hier`, `cfg.attention`,
`cfg.mean_pool`.
Outputs: G's sample in training mode, its gradients, running statistics and SN vectors after the
pass, G's sample in eval mode; D's taps, logits, gradients and SN vectors after the pass.
"""
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from backbone_common import REGISTRY, batchnorm, conv, embedding, grads, linear, load_inputs, save_outputs  # noqa: E402

t = load_inputs()
biggan = bool(t["cfg.biggan"].item())
shared = bool(t["cfg.shared"].item())
hier = bool(t["cfg.hier"].item())
attention = int(t["cfg.attention"].item())
mean_pool = bool(t["cfg.mean_pool"].item())
res = t["x"].shape[2]


def upsample(x):
    return F.interpolate(x, scale_factor=2)


class CCBN(nn.Module):
    """BigGAN-PyTorch `layers.ccbn`: with G_shared, bias-free linear gain and bias maps of the
    shared embedding; without, `which_linear = nn.Embedding` tables indexed by the labels."""

    def __init__(self, key):
        super().__init__()
        layer = linear if shared else embedding
        self.gain = layer(t, f"{key}.gain")
        self.bias = layer(t, f"{key}.bias")
        self.register_buffer("running_mean", t[f"{key}.running_mean"].clone())
        self.register_buffer("running_var", t[f"{key}.running_var"].clone())
        REGISTRY.update({f"{key}.running_mean": self.running_mean, f"{key}.running_var": self.running_var})

    def forward(self, x, y):
        gain = (1 + self.gain(y)).view(y.size(0), -1, 1, 1)
        bias = self.bias(y).view(y.size(0), -1, 1, 1)
        out = F.batch_norm(x, self.running_mean, self.running_var, None, None, self.training, 0.1, 1e-5)
        return out * gain + bias


class BN(nn.Module):
    def __init__(self, key):
        super().__init__()
        self.bn = batchnorm(t, key)

    def forward(self, x, y=None):
        return self.bn(x)


class Attention(nn.Module):
    """BigGAN-PyTorch `layers.Attention`."""

    def __init__(self, key):
        super().__init__()
        self.theta, self.phi = conv(t, f"{key}.theta", 1), conv(t, f"{key}.phi", 1)
        self.g, self.o = conv(t, f"{key}.g", 1), conv(t, f"{key}.o", 1)
        self.gamma = nn.Parameter(t[f"{key}.gamma"].clone())
        REGISTRY[f"{key}.gamma"] = self.gamma
        self.ch = self.o.weight_orig.shape[0] if hasattr(self.o, "weight_orig") else self.o.weight.shape[0]

    def forward(self, x):
        c, hw = self.ch, x.shape[2] * x.shape[3]
        theta = self.theta(x).view(-1, c // 8, hw)
        phi = F.max_pool2d(self.phi(x), [2, 2]).view(-1, c // 8, hw // 4)
        g = F.max_pool2d(self.g(x), [2, 2]).view(-1, c // 2, hw // 4)
        beta = F.softmax(torch.bmm(theta.transpose(1, 2), phi), -1)
        o = self.o(torch.bmm(g, beta.transpose(1, 2)).view(-1, c // 2, x.shape[2], x.shape[3]))
        return self.gamma * o + x


class GBlock(nn.Module):
    """SNGAN `Block(upsample=True)` / BigGAN `GBlock`: BN-ReLU-up-conv-BN-ReLU-conv + up-conv1x1."""

    def __init__(self, key):
        super().__init__()
        norm = CCBN if biggan else BN
        self.bn1, self.conv1 = norm(f"{key}.bn0"), conv(t, f"{key}.conv0", 3)
        self.bn2, self.conv2 = norm(f"{key}.bn1"), conv(t, f"{key}.conv1", 3)
        self.conv_sc = conv(t, f"{key}.skip", 1)

    def forward(self, x, y):
        h = F.relu(self.bn1(x, y))
        h = self.conv1(upsample(h))
        h = self.conv2(F.relu(self.bn2(h, y)))
        return h + self.conv_sc(upsample(x))


class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = linear(t, "g.b4.fc")
        n = int(round(math.log2(res))) - 2
        self.blocks = nn.ModuleList([GBlock(f"g.b{8 << i}") for i in range(n)])
        self.attn_at = int(round(math.log2(attention))) - 3 if attention else -1
        if attention:
            self.attn = Attention(f"g.attn{attention}")
        self.out_bn = batchnorm(t, "g.out.bn")
        self.out_conv = conv(t, "g.out.conv", 3)
        # Without G_shared, BigGAN-PyTorch's `G.shared` is the identity: blocks get the labels.
        self.shared = embedding(t, "g.shared") if biggan and shared else nn.Identity()

    def forward(self, z, labels=None):
        if biggan:
            y = self.shared(labels)
            if hier:
                chunk = z.shape[1] // (len(self.blocks) + 1)
                zs = torch.split(z, chunk, 1)
                z, ys = zs[0], [torch.cat([y, item], 1) for item in zs[1:]]
            else:
                ys = [y] * len(self.blocks)
        else:
            ys = [None] * len(self.blocks)
        h = self.linear(z).view(z.size(0), -1, 4, 4)
        for i, block in enumerate(self.blocks):
            h = block(h, ys[i])
            if i == self.attn_at:
                h = self.attn(h)
        return torch.tanh(self.out_conv(F.relu(self.out_bn(h))))


class DBlock(nn.Module):
    """SNGAN `OptimizedBlock` / `Block`, BigGAN `DBlock(wide=True)`."""

    def __init__(self, key, optimised, downsample):
        super().__init__()
        self.optimised, self.downsample = optimised, downsample
        self.conv1, self.conv2 = conv(t, f"{key}.conv0", 3), conv(t, f"{key}.conv1", 3)
        self.conv_sc = conv(t, f"{key}.skip", 1) if f"{key}.skip.weight" in t else None

    def shortcut(self, x):
        if self.optimised:
            return self.conv_sc(F.avg_pool2d(x, 2))
        if self.conv_sc is not None:
            x = self.conv_sc(x)
        return F.avg_pool2d(x, 2) if self.downsample else x

    def forward(self, x):
        h = x if self.optimised else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        return h + self.shortcut(x)


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        downs = max(1, int(round(math.log2(res))) - 3)
        low = res >> downs
        self.names = [f"b{res >> i}" for i in range(downs)] + [f"b{low}a", f"b{low}b"]
        self.blocks = nn.ModuleList(
            [DBlock(f"d.{n}", i == 0, i < downs) for i, n in enumerate(self.names)])
        outputs = [res >> (i + 1) for i in range(downs)] + [low, low]
        self.attn_at = outputs.index(attention) if attention else -1
        if attention:
            self.attn = Attention(f"d.attn{attention}")
        self.linear = linear(t, "d.out")
        if biggan:
            self.embed = embedding(t, "d.embed")

    def forward(self, x, labels=None):
        taps = {}
        h = x
        for i, block in enumerate(self.blocks):
            h = block(h)
            taps[self.names[i]] = h
            if i == self.attn_at:
                h = self.attn(h)
        h = F.relu(h)
        h = h.mean([2, 3]) if mean_pool else torch.sum(h, [2, 3])
        out = self.linear(h)
        if biggan:
            out = out + torch.sum(self.embed(labels) * h, 1, keepdim=True)
        return out.flatten(), taps


out = {}
labels = t.get("labels")

g = Generator().train()
x_fake = g(t["z"], labels)
out["g.x"] = x_fake
params = {k: v for k, v in REGISTRY.items() if k.startswith("g.")}
out.update(grads((x_fake * t["gx"]).sum(), params))
for k, v in params.items():
    if not v.requires_grad:
        out[f"after.{k}"] = v.clone()
g.eval()
out["g.x_eval"] = g(t["z"], labels)

d = Discriminator().train()
x = t["x"].clone().requires_grad_(True)
logits, taps = d(x, labels)
out["d.logits"] = logits
for k, v in taps.items():
    out[f"d.tap.{k}"] = v
params = {k: v for k, v in REGISTRY.items() if k.startswith("d.")}
params["d.input"] = x
out.update(grads((logits * t["gd"]).sum(), params))
for k, v in params.items():
    if not v.requires_grad:
        out[f"after.{k}"] = v.clone()

save_outputs(out)
