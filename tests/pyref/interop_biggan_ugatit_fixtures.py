"""Interop fixtures: tiny BigGAN-PyTorch / FQ-BigGAN and UGATIT-pytorch checkpoints written by the
OFFICIAL code, their outputs, and the mapping of their state dicts onto gantry's names (verified
against gantry's PyTorch twins, i.e. the modules of tests/pyref/backbone_nets.py and
tests/pyref/ugatit_ref.py, loaded strictly).

Official sources (extracted outside the repository, e.g. with
`git --git-dir=<mirror> archive HEAD | tar -x -C /work/interop-src/<owner>+<repo>`):

- YangNaruto/FQ-GAN @ bc43d45700b2a84234932bc6d6616b0248d1304e (FQ-BigGAN/: BigGAN.py, layers.py,
  vq_layer.py);
- ajbrock/BigGAN-PyTorch @ 98459431a5d618d644d54cd1e9fceb1e5045648d (BigGAN.py, layers.py);
- znxlwm/UGATIT-pytorch @ b8c4251823673189999484d07e97fdcb9300e9e0 (networks.py).

Usage (CPU, torch 2.11):
    python tests/pyref/interop_biggan_ugatit_fixtures.py --src /work/interop-src            # write + verify
    python tests/pyref/interop_biggan_ugatit_fixtures.py --src /work/interop-src --verify   # verify only
    python tests/pyref/interop_biggan_ugatit_fixtures.py --verify                           # verify without the
        official sources (only the committed files and the twins in this script)

No monkeypatching of the official code is needed on torch 2.11 (FQ's `vq_layer.Quantize` only
warns about the deprecated `Tensor.add_(Number, Tensor)` overload in training mode).

The two public functions `biggan_official_to_gantry(sd, kwargs)` and
`ugatit_official_to_gantry(sd, kwargs)` are the mapping; see their docstrings.
"""
import argparse
import copy
import importlib
import json
import math
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import spectral_norm

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "fixtures", "interop")

COMMITS = {
    "YangNaruto/FQ-GAN": "bc43d45700b2a84234932bc6d6616b0248d1304e",
    "ajbrock/BigGAN-PyTorch": "98459431a5d618d644d54cd1e9fceb1e5045648d",
    "znxlwm/UGATIT-pytorch": "b8c4251823673189999484d07e97fdcb9300e9e0",
}

# ----------------------------------------------------------------------------------------------
# BigGAN variants (resolution 32, BigGAN-PyTorch's G_arch[32] / D_arch[32]).
# ----------------------------------------------------------------------------------------------
BIGGAN_VARIANTS = {
    # FQ-BigGAN/scripts/launch_C10.sh, scaled down: no G_shared, no hier, no attention, N02 init,
    # FQ on all four D blocks (--discrete_layer 0123), commitment 1.0, dict_decay 0.8; the script's
    # widths (G_ch = D_ch = 64), dim_z (128), classes (10) and dict_size (10 -> 1024 codes) shrink.
    "fq_c10": dict(
        repo="YangNaruto+FQ-GAN/FQ-BigGAN",
        kwargs=dict(resolution=32, G_ch=4, D_ch=4, dim_z=16, n_classes=3, G_shared=False,
                    shared_dim=0, hier=False, G_attn="0", D_attn="0", G_init="N02", D_init="N02",
                    G_param="SN", D_param="SN", D_wide=True, num_G_SVs=1, num_D_SVs=1,
                    SN_eps=1e-8, BN_eps=1e-5, discrete_layer="0123", dict_size=3, commitment=1.0, dict_decay=0.8),
    ),
    # The BigGAN paper's G (shared embedding, hierarchical z, self-attention at 16x16) with
    # ajbrock/BigGAN-PyTorch. D has no attention: D_arch[32] labels all four D blocks "16", so
    # D_attn='16' would add attention after every block (not representable in gantry), and
    # FQ-BigGAN's D cannot run without an FQ layer (`ppl` unbound), hence ajbrock's code here.
    # dim_z 18 exercises the hier rounding (4 slots of 4 -> G.dim_z = 16); shared_dim 8 != dim_z.
    "shared_hier_attn": dict(
        repo="ajbrock+BigGAN-PyTorch",
        kwargs=dict(resolution=32, G_ch=4, D_ch=4, dim_z=18, n_classes=3, G_shared=True,
                    shared_dim=8, hier=True, G_attn="16", D_attn="0", G_init="ortho",
                    D_init="ortho", G_param="SN", D_param="SN", D_wide=True, num_G_SVs=1,
                    num_D_SVs=1, SN_eps=1e-8, BN_eps=1e-5),
    ),
}

UGATIT_VARIANTS = {
    # UGATIT.py builds genA2B/genB2A = ResnetGenerator(3, 3, ngf=ch, n_blocks=n_res, img_size,
    # light) and disG* = Discriminator(3, ndf=ch, n_layers=7), disL* = (..., n_layers=5).
    # The generators and local critics run on x [2, 3, 32, 32]; the 7-layer global critics need
    # 96x96 or more (gantry: a power of two, so 128), hence a separate x_global [1, 3, 128, 128].
    # (UGATIT.py itself could not train at img_size 32: its global critic fails there.)
    "full": dict(ch=2, n_res=2, img_size=32, light=False, seed=100),
    "light": dict(ch=2, n_res=2, img_size=32, light=True, seed=200),
}
# The 7-layer global critic needs inputs of at least 96x96 (5 stride-2 layers, then two 4x4
# convolutions on reflect-padded maps), gantry's translate resolutions are powers of two: 128.
# The 5-layer local critic runs from 32x32.
UGATIT_GLOBAL_SIZE = 128


def _official(src, repo, names):
    """Imports `names` from `src/repo` fresh (FQ-BigGAN and BigGAN-PyTorch share module names)."""
    path = os.path.join(src, repo)
    for m in list(sys.modules):
        if m in ("BigGAN", "layers", "vq_layer", "networks") or m.startswith("sync_batchnorm"):
            del sys.modules[m]
    sys.path.insert(0, path)
    try:
        return [importlib.import_module(n) for n in names]
    finally:
        sys.path.remove(path)


def _perturb(module, gen, gain_keys=("gamma",)):
    """+0.1 N(0,1) on every float parameter and buffer; variances positive; attention gains
    large enough to matter; rho (U-GAT-IT) in [0, 1]."""
    with torch.no_grad():
        for k, v in module.state_dict().items():
            if not v.is_floating_point():
                continue
            v.add_(0.1 * torch.randn(v.shape, generator=gen))
            leaf = k.rsplit(".", 1)[-1]
            if leaf in ("stored_var", "running_var"):
                v.abs_().add_(0.05)
            elif leaf == "cluster_size":
                v.abs_().add_(0.5)
            elif leaf == "rho":
                v.copy_(torch.rand(v.shape, generator=gen))
            elif leaf in gain_keys and v.dim() == 0:
                v.add_(0.5)


# ----------------------------------------------------------------------------------------------
# The mapping.
# ----------------------------------------------------------------------------------------------
def _sn_vectors(w, u0, eps=1e-8):
    """BigGAN-PyTorch's SN (layers.SN.W_) runs, in eval AND training mode, one power iteration
    from the stored `u0` ([1, rows]): v1 = normalize(u0 W), u1 = normalize(v1 W^T),
    sigma = v1 W^T u1^T = |W v1| (training mode also writes u1 back into u0). torch's / gantry's
    SN: eval uses the stored vectors as they are, sigma = u . (W v); training first sets
    v = normalize(W^T u), u = normalize(W v), then the same formula.

    Returned: weight_u = u0 (as stored) and weight_v = v1 * |W v1| / |W^T u0|. Then gantry's eval
    sigma is u0 . W v1 * |W v1| / |W^T u0| = |W v1| (because u0 . W v1 = |W^T u0|), and gantry's
    first training step recomputes v = v1, u = u1, sigma = |W v1|: both modes reproduce
    BigGAN-PyTorch exactly. weight_v is then not a unit vector, which gantry never assumes.
    (The simpler weight_u = u1, weight_v = v1 is exact in eval only; training mode then starts
    one power step further, visibly different for unconverged u.)"""
    wm = w.reshape(w.shape[0], -1).double()
    u0 = u0.reshape(1, -1).double()
    wtu = u0 @ wm
    v1 = F.normalize(wtu, eps=eps)
    sigma = (v1 @ wm.t()).norm()
    v = v1 * sigma / wtu.norm().clamp_min(eps)
    return u0.reshape(-1).float(), v.reshape(-1).float()


def _g_names(kwargs):
    """Official G module prefix -> gantry prefix for BigGAN-PyTorch's G_arch[32]."""
    res = kwargs.get("resolution", 32)
    if res != 32:
        raise NotImplementedError(
            "gantry's biggan keeps one width in every block; only BigGAN-PyTorch's G_arch[32]/"
            "D_arch[32] (in = out = 4*ch everywhere) has that shape")
    return res


def _parse_attn(s, valid):
    vals = [int(x) for x in str(s).split("_")]
    hits = sorted(set(v for v in vals if v in valid))
    return hits


def biggan_config(kwargs):
    """BigGAN-PyTorch / FQ-BigGAN train.py config -> gantry `model.*` (arch = "biggan",
    data.resolution = 32, data.num_classes = n_classes) and `fq.*`."""
    _g_names(kwargs)
    g_attn = _parse_attn(kwargs.get("G_attn", "64"), (8, 16, 32))
    d_attn = _parse_attn(kwargs.get("D_attn", "64"), (16,))  # D_arch[32] labels every block 16
    if len(g_attn) > 1 or g_attn == [32]:
        raise NotImplementedError(f"G_attn={kwargs.get('G_attn')}: gantry has one attention layer, at 8 or 16")
    if d_attn:
        raise NotImplementedError(
            "D_attn containing 16 at resolution 32 puts attention after all four D blocks "
            "(D_arch[32] resolution labels are all 16); gantry has at most one")
    if not kwargs.get("D_wide", True):
        raise NotImplementedError("D_thin (D_wide=False): the first D block's hidden width is 3")
    if kwargs.get("norm_style", "bn") != "bn" or kwargs.get("mybn") or kwargs.get("cross_replica"):
        raise NotImplementedError("only norm_style='bn' without mybn / cross_replica")
    init = {"ortho": "ortho", "N02": "normal", "glorot": "glorot", "xavier": "glorot"}[kwargs.get("G_init", "ortho")]
    model = dict(
        arch="biggan",
        z_dim=kwargs.get("dim_z", 128),
        ngf=4 * kwargs.get("G_ch", 64),
        ndf=4 * kwargs.get("D_ch", 64),
        g_sn=kwargs.get("G_param", "SN") == "SN",
        d_sn=True,  # BigGAN-PyTorch's D has no non-SN option
        pool="sum",
        init=init,
        attention=g_attn[0] if g_attn else 0,
        shared_embedding=bool(kwargs.get("G_shared", True)),
        shared_dim=int(kwargs.get("shared_dim", 0)),
        hier=bool(kwargs.get("hier", False)),
    )
    fq = None
    if "discrete_layer" in kwargs:
        taps = ["b32", "b16", "b8a", "b8b"]
        fq = dict(enabled=True, layers=[taps[int(c)] for c in str(kwargs["discrete_layer"])],
                  k=2 ** int(kwargs.get("dict_size", 10)), decay=float(kwargs.get("dict_decay", 0.8)),
                  beta=float(kwargs.get("commitment", 0.5)), mode="loss-only", init="normal",
                  update_in_g=True)
    return model, fq


def biggan_official_to_gantry(sd, kwargs):
    """Maps one BigGAN-PyTorch / FQ-BigGAN state dict (G.pth, G_ema.pth or D.pth) to gantry.

    Returns {store: {gantry key: tensor}}: {"g": ...} for a generator (use it as store "g" or
    "g_ema"), {"d": ..., "plugins": ...} for a discriminator ("plugins" holds FQ's dictionaries,
    empty without FQ). Rules (resolution 32 only):
      G:  shared.weight -> shared.weight;  linear -> b4.fc;
          blocks.{i}.0 -> b{8<<i} with conv1 -> conv0, conv2 -> conv1, conv_sc -> skip,
              bn1 -> bn0, bn2 -> bn1; ccbn stored_mean/stored_var -> running_mean/running_var,
              ccbn gain/bias (SNLinear without bias, or nn.Embedding tables) keep their names;
          blocks.{i}.1 (Attention) -> attn{8<<i} (theta, phi, g, o, gamma);
          output_layer.0 (layers.bn: gain, bias, stored_mean, stored_var) ->
              out.bn.weight / bias / running_mean / running_var;  output_layer.2 -> out.conv.
      D:  blocks.{i}.0 -> b32, b16, b8a, b8b (conv1 -> conv0, conv2 -> conv1, conv_sc -> skip);
          linear -> out; embed (SNEmbedding) -> embed;
          blocks.{i}.1 (FQ Quantize, when i in discrete_layer) -> plugins
              fq.<tap>.codebook = embed^T [K, C], ema_count = cluster_size,
              ema_sum = embed_avg^T, initialised = [1];
          with G_attn set but no D attention, gantry's D still has attn{res} after the first
              block that outputs res: it is filled as an exact identity (gamma = 0; random SN'd
              1x1 convs so that sigma is finite).
      SN: weight -> weight (BigGAN-PyTorch keeps the raw weight under `weight`); u0 [1, rows]
          -> weight_u [rows] and weight_v [cols] after one power iteration (see _sn_vectors);
          sv0 (a logged value) and u1.. / sv1.. (num_SVs > 1; never used for W) are dropped.
    """
    _g_names(kwargs)
    model, _ = biggan_config(kwargs)
    is_d = any(k.startswith("embed.") for k in sd)
    sn_eps = float(kwargs.get("SN_eps", 1e-8))  # train.py's default (the classes default to 1e-12)
    out, plugins = {}, {}
    taps = ["b32", "b16", "b8a", "b8b"]
    g_block_res = [8, 16, 32]

    def put_layer(prefix, src):
        w = sd[f"{src}.weight"]
        out[f"{prefix}.weight"] = w.clone().float()
        if f"{src}.u0" in sd:
            u, v = _sn_vectors(w, sd[f"{src}.u0"], eps=sn_eps)
            out[f"{prefix}.weight_u"], out[f"{prefix}.weight_v"] = u, v

    def put_bias(prefix, src):
        if f"{src}.bias" in sd:
            out[f"{prefix}.bias"] = sd[f"{src}.bias"].clone().float()

    def put_attn(prefix, src):
        for n in ("theta", "phi", "g", "o"):
            put_layer(f"{prefix}.{n}", f"{src}.{n}")
        out[f"{prefix}.gamma"] = sd[f"{src}.gamma"].clone().float().reshape(())

    used_prefixes = set()
    if not is_d:
        if "shared.weight" in sd:
            out["shared.weight"] = sd["shared.weight"].clone().float()
        put_layer("b4.fc", "linear")
        put_bias("b4.fc", "linear")
        n_blocks = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
        for i in range(n_blocks):
            src, dst = f"blocks.{i}.0", f"b{8 << i}"
            for a, b in (("conv1", "conv0"), ("conv2", "conv1"), ("conv_sc", "skip")):
                put_layer(f"{dst}.{b}", f"{src}.{a}")
                put_bias(f"{dst}.{b}", f"{src}.{a}")
            for a, b in (("bn1", "bn0"), ("bn2", "bn1")):
                for m in ("gain", "bias"):
                    put_layer(f"{dst}.{b}.{m}", f"{src}.{a}.{m}")
                out[f"{dst}.{b}.running_mean"] = sd[f"{src}.{a}.stored_mean"].clone().float()
                out[f"{dst}.{b}.running_var"] = sd[f"{src}.{a}.stored_var"].clone().float()
            if f"blocks.{i}.1.gamma" in sd:
                put_attn(f"attn{g_block_res[i]}", f"blocks.{i}.1")
        out["out.bn.weight"] = sd["output_layer.0.gain"].clone().float()
        out["out.bn.bias"] = sd["output_layer.0.bias"].clone().float()
        out["out.bn.running_mean"] = sd["output_layer.0.stored_mean"].clone().float()
        out["out.bn.running_var"] = sd["output_layer.0.stored_var"].clone().float()
        put_layer("out.conv", "output_layer.2")
        put_bias("out.conv", "output_layer.2")
        return {"g": out}

    quant = [int(c) for c in str(kwargs.get("discrete_layer", ""))]
    for i, tap in enumerate(taps):
        src = f"blocks.{i}.0"
        for a, b in (("conv1", "conv0"), ("conv2", "conv1"), ("conv_sc", "skip")):
            if f"{src}.{a}.weight" in sd:
                put_layer(f"{tap}.{b}", f"{src}.{a}")
                put_bias(f"{tap}.{b}", f"{src}.{a}")
        j = 1
        if i in quant:
            q = f"blocks.{i}.1"
            plugins[f"fq.{tap}.codebook"] = sd[f"{q}.embed"].t().contiguous().float()
            plugins[f"fq.{tap}.ema_count"] = sd[f"{q}.cluster_size"].clone().float()
            plugins[f"fq.{tap}.ema_sum"] = sd[f"{q}.embed_avg"].t().contiguous().float()
            plugins[f"fq.{tap}.initialised"] = torch.ones(1)
            j = 2
        if f"blocks.{i}.{j}.gamma" in sd:
            raise NotImplementedError("attention in BigGAN-PyTorch's D at resolution 32")
    put_layer("out", "linear")
    put_bias("out", "linear")
    put_layer("embed", "embed")
    if model["attention"]:
        # gantry's D gets attention wherever G has it; the official D has none: identity.
        a = model["attention"]
        c = model["ndf"]
        gen = torch.Generator().manual_seed(1234)
        for n, (co, ci) in {"theta": (c // 8, c), "phi": (c // 8, c), "g": (c // 2, c), "o": (c, c // 2)}.items():
            w = torch.randn(co, ci, 1, 1, generator=gen) * 0.02
            u = F.normalize(torch.randn(co, generator=gen), dim=0)
            v = F.normalize(torch.randn(ci, generator=gen), dim=0)
            out[f"attn{a}.{n}.weight"], out[f"attn{a}.{n}.weight_u"], out[f"attn{a}.{n}.weight_v"] = w, u, v
        out[f"attn{a}.gamma"] = torch.zeros(())
    return {"d": out, "plugins": plugins}


def ugatit_config(kwargs):
    """UGATIT.py arguments -> gantry translate `model.*` (UgatitConfig)."""
    return dict(ch=kwargs["ch"], n_res=kwargs["n_res"], light=bool(kwargs["light"]),
                global_layers=7, local_layers=5)


UGATIT_NETS = {"genA2B": ("g", "g_ab"), "genB2A": ("g", "g_ba"),
               "disGA": ("d", "ga"), "disGB": ("d", "gb"), "disLA": ("d", "la"), "disLB": ("d", "lb")}


def ugatit_official_to_gantry(sd, kwargs):
    """Maps a UGATIT-pytorch checkpoint (the dict UGATIT.save writes) to gantry's translate stores.

    Returns {"g": {...}, "d": {...}}: genA2B -> g_ab.*, genB2A -> g_ba.*, disGA -> ga.*,
    disGB -> gb.*, disLA -> la.*, disLB -> lb.*; inside a network every key is kept except
    torch spectral_norm's `<layer>.weight_orig`, which is gantry's `<layer>.weight`
    (`weight_u` and `weight_v` keep their names and shapes). No transposes, nothing dropped or
    added (gantry's U-GAT-IT is written with the official parameter names)."""
    stores = {"g": {}, "d": {}}
    for net, (store, prefix) in UGATIT_NETS.items():
        for k, v in sd[net].items():
            if k.endswith("weight_orig"):
                k = k[: -len("_orig")]
            stores[store][f"{prefix}.{k}"] = v.clone().float()
    return stores


# ----------------------------------------------------------------------------------------------
# gantry's twins (the modules of tests/pyref/backbone_nets.py / ugatit_ref.py, float32, built
# from a gantry-key dict and loaded strictly: every gantry key fills exactly one tensor).
# ----------------------------------------------------------------------------------------------
class Strict:
    """Collects the gantry keys the twin consumed, to check both directions."""

    def __init__(self, t):
        self.t, self.used = t, set()

    def __getitem__(self, k):
        self.used.add(k)
        return self.t[k]

    def __contains__(self, k):
        return k in self.t

    def check(self):
        extra = sorted(set(self.t) - self.used)
        assert not extra, f"gantry keys the twin did not use: {extra}"


def _load(module, t, key):
    sn = f"{key}.weight_u" in t
    if sn:
        module = spectral_norm(module)
    with torch.no_grad():
        if sn:
            assert module.weight_orig.shape == t[f"{key}.weight"].shape, key
            module.weight_orig.copy_(t[f"{key}.weight"])
            assert module.weight_u.shape == t[f"{key}.weight_u"].shape, key
            module.weight_u.copy_(t[f"{key}.weight_u"])
            module.weight_v.copy_(t[f"{key}.weight_v"])
        else:
            assert module.weight.shape == t[f"{key}.weight"].shape, key
            module.weight.copy_(t[f"{key}.weight"])
        if getattr(module, "bias", None) is not None:
            module.bias.copy_(t[f"{key}.bias"])
    return module


def _conv(t, key, k):
    w = t[f"{key}.weight"]
    return _load(nn.Conv2d(w.shape[1], w.shape[0], k, padding=k // 2, bias=f"{key}.bias" in t), t, key)


def _linear(t, key):
    w = t[f"{key}.weight"]
    return _load(nn.Linear(w.shape[1], w.shape[0], bias=f"{key}.bias" in t), t, key)


def _embedding(t, key):
    w = t[f"{key}.weight"]
    return _load(nn.Embedding(w.shape[0], w.shape[1]), t, key)


def _batchnorm(t, key):
    c = t[f"{key}.running_mean"].shape[0]
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        for name in ["weight", "bias", "running_mean", "running_var"]:
            getattr(bn, name).copy_(t[f"{key}.{name}"])
    return bn


class TwinCCBN(nn.Module):
    def __init__(self, t, key, shared):
        super().__init__()
        layer = _linear if shared else _embedding
        self.gain, self.bias = layer(t, f"{key}.gain"), layer(t, f"{key}.bias")
        self.register_buffer("running_mean", t[f"{key}.running_mean"].clone())
        self.register_buffer("running_var", t[f"{key}.running_var"].clone())

    def forward(self, x, y):
        gain = (1 + self.gain(y)).view(y.size(0), -1, 1, 1)
        bias = self.bias(y).view(y.size(0), -1, 1, 1)
        out = F.batch_norm(x, self.running_mean, self.running_var, None, None, self.training, 0.1, 1e-5)
        return out * gain + bias


class TwinAttention(nn.Module):
    def __init__(self, t, key):
        super().__init__()
        self.theta, self.phi = _conv(t, f"{key}.theta", 1), _conv(t, f"{key}.phi", 1)
        self.g, self.o = _conv(t, f"{key}.g", 1), _conv(t, f"{key}.o", 1)
        self.gamma = nn.Parameter(t[f"{key}.gamma"].clone())
        self.ch = self.o.weight_orig.shape[0] if hasattr(self.o, "weight_orig") else self.o.weight.shape[0]

    def forward(self, x):
        c, hw = self.ch, x.shape[2] * x.shape[3]
        theta = self.theta(x).view(-1, c // 8, hw)
        phi = F.max_pool2d(self.phi(x), [2, 2]).view(-1, c // 8, hw // 4)
        g = F.max_pool2d(self.g(x), [2, 2]).view(-1, c // 2, hw // 4)
        beta = F.softmax(torch.bmm(theta.transpose(1, 2), phi), -1)
        o = self.o(torch.bmm(g, beta.transpose(1, 2)).view(-1, c // 2, x.shape[2], x.shape[3]))
        return self.gamma * o + x


def _upsample(x):
    return F.interpolate(x, scale_factor=2)


class TwinGBlock(nn.Module):
    def __init__(self, t, key, shared):
        super().__init__()
        self.bn1, self.conv1 = TwinCCBN(t, f"{key}.bn0", shared), _conv(t, f"{key}.conv0", 3)
        self.bn2, self.conv2 = TwinCCBN(t, f"{key}.bn1", shared), _conv(t, f"{key}.conv1", 3)
        self.conv_sc = _conv(t, f"{key}.skip", 1)

    def forward(self, x, y):
        h = F.relu(self.bn1(x, y))
        h = self.conv1(_upsample(h))
        h = self.conv2(F.relu(self.bn2(h, y)))
        return h + self.conv_sc(_upsample(x))


class TwinBigGanG(nn.Module):
    """backbone_nets.Generator with cfg.biggan = True."""

    def __init__(self, t, cfg, res=32):
        super().__init__()
        self.hier, attention = cfg["hier"], cfg["attention"]
        shared = cfg["shared_embedding"]
        self.linear = _linear(t, "b4.fc")
        n = int(round(math.log2(res))) - 2
        self.blocks = nn.ModuleList([TwinGBlock(t, f"b{8 << i}", shared) for i in range(n)])
        self.attn_at = int(round(math.log2(attention))) - 3 if attention else -1
        if attention:
            self.attn = TwinAttention(t, f"attn{attention}")
        self.out_bn = _batchnorm(t, "out.bn")
        self.out_conv = _conv(t, "out.conv", 3)
        self.shared = _embedding(t, "shared") if shared else nn.Identity()

    def forward(self, z, labels):
        y = self.shared(labels)
        if self.hier:
            chunk = z.shape[1] // (len(self.blocks) + 1)
            zs = torch.split(z, chunk, 1)
            z, ys = zs[0], [torch.cat([y, item], 1) for item in zs[1:]]
        else:
            ys = [y] * len(self.blocks)
        h = self.linear(z).view(z.size(0), -1, 4, 4)
        for i, block in enumerate(self.blocks):
            h = block(h, ys[i])
            if i == self.attn_at:
                h = self.attn(h)
        return torch.tanh(self.out_conv(F.relu(self.out_bn(h))))


class TwinDBlock(nn.Module):
    def __init__(self, t, key, optimised, downsample):
        super().__init__()
        self.optimised, self.downsample = optimised, downsample
        self.conv1, self.conv2 = _conv(t, f"{key}.conv0", 3), _conv(t, f"{key}.conv1", 3)
        self.conv_sc = _conv(t, f"{key}.skip", 1) if f"{key}.skip.weight" in t else None

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


class TwinBigGanD(nn.Module):
    """backbone_nets.Discriminator with cfg.biggan = True, sum pooling."""

    def __init__(self, t, cfg, res=32):
        super().__init__()
        attention = cfg["attention"]
        downs = max(1, int(round(math.log2(res))) - 3)
        low = res >> downs
        self.names = [f"b{res >> i}" for i in range(downs)] + [f"b{low}a", f"b{low}b"]
        self.blocks = nn.ModuleList([TwinDBlock(t, n, i == 0, i < downs) for i, n in enumerate(self.names)])
        outputs = [res >> (i + 1) for i in range(downs)] + [low, low]
        self.attn_at = outputs.index(attention) if attention else -1
        if attention:
            self.attn = TwinAttention(t, f"attn{attention}")
        self.linear = _linear(t, "out")
        self.embed = _embedding(t, "embed")

    def forward(self, x, labels):
        taps = {}
        h = x
        for i, block in enumerate(self.blocks):
            h = block(h)
            taps[self.names[i]] = h
            if i == self.attn_at:
                h = self.attn(h)
        h = torch.sum(F.relu(h), [2, 3])
        out = self.linear(h)
        out = out + torch.sum(self.embed(labels) * h, 1, keepdim=True)
        return out.flatten(), taps


def twin_fq(plugins, tap, h):
    """gantry's FqLayer.quantise (plugins/fq.rs): nearest codeword by argmin ||e||^2 - 2 x.e over
    the [K, C] codebook; per-image commitment = mean squared distance (gantry averages over the
    batch too)."""
    cb = plugins[f"fq.{tap}.codebook"]
    x = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])
    idx = (x @ (cb.t() * -2.0) + cb.square().sum(1)[None]).argmin(1)
    q = cb[idx]
    per_img = (x - q).square().reshape(h.shape[0], -1).mean(1)
    return idx, per_img


# UGATIT twin: ugatit_ref.py's modules (imported: it only defines them at import time).
def _ugatit_ref():
    sys.path.insert(0, HERE)
    try:
        return importlib.import_module("ugatit_ref")
    finally:
        sys.path.remove(HERE)


def _ugatit_twin_load(module, t, prefix):
    """ugatit_ref.load, float32: every twin tensor from gantry's `prefix` keys and back."""
    sd = module.state_dict()
    used = set()
    with torch.no_grad():
        for k, v in sd.items():
            src = prefix + (k[: -len("_orig")] if k.endswith("weight_orig") else k)
            assert src in t, f"gantry has no {src}"
            assert t[src].shape == v.shape, f"{src}: {tuple(t[src].shape)} vs {tuple(v.shape)}"
            v.copy_(t[src])
            used.add(src)
    extra = [k for k in t if k.startswith(prefix) and k not in used]
    assert not extra, f"gantry keys the twin lacks: {extra}"
    return module


# ----------------------------------------------------------------------------------------------
# Writing the fixtures with the official code.
# ----------------------------------------------------------------------------------------------
def _np(t):
    return t.detach().cpu().numpy().astype(np.float32)


def write_biggan(src, name, spec):
    kw = dict(spec["kwargs"])
    names = ["BigGAN", "layers"] + (["vq_layer"] if "discrete_layer" in kw else [])
    BigGAN = _official(src, spec["repo"], names)[0]
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(10)
    G = BigGAN.Generator(**kw)
    G_ema = BigGAN.Generator(**{**kw, "skip_init": True, "no_optim": True})
    D = BigGAN.Discriminator(**kw)
    fq = "discrete_layer" in kw
    for net, seed in ((G, 1), (G_ema, 2), (D, 3)):
        _perturb(net, torch.Generator().manual_seed(seed))
    # A couple of training-mode passes: SN u0/sv0, BN running stats and FQ dictionaries move.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for net in (G, G_ema):
            net.train()
            for _ in range(2):
                z = torch.randn(8, net.dim_z, generator=gen)
                y = torch.randint(0, kw["n_classes"], (8,), generator=gen)
                net(z, net.shared(y))
        if fq:
            # Seed each dictionary with feature vectors of its layer (as a k-means start would),
            # so that assignments in outputs.npz are varied: embed [C, K] = K random positions'
            # features, embed_avg = embed * cluster_size (consistent EMA state).
            feats = {}
            hooks = [bl[1].register_forward_hook(lambda m, inp, _o, i=i: feats.__setitem__(i, inp[0]))
                     for i, bl in enumerate(D.blocks) if len(bl) > 1 and hasattr(bl[1], "n_embed")]
            D.eval()
            D(torch.rand(8, 3, 32, 32, generator=gen) * 2 - 1, torch.randint(0, kw["n_classes"], (8,), generator=gen))
            for h in hooks:
                h.remove()
            for i, f in feats.items():
                q = D.blocks[i][1]
                flat = f.permute(0, 2, 3, 1).reshape(-1, q.dim)
                pick = torch.randperm(flat.shape[0], generator=gen)[: q.n_embed]
                q.embed.copy_(flat[pick].t())
                q.embed_avg.copy_(q.embed * q.cluster_size[None])
        D.train()
        for _ in range(2):
            x = torch.rand(8, 3, 32, 32, generator=gen) * 2 - 1
            y = torch.randint(0, kw["n_classes"], (8,), generator=gen)
            D(x, y)
    G.eval(), G_ema.eval(), D.eval()
    d = os.path.join(OUT, "biggan", name)
    os.makedirs(d, exist_ok=True)
    torch.save(G.state_dict(), os.path.join(d, "G.pth"))
    torch.save(D.state_dict(), os.path.join(d, "D.pth"))
    torch.save(G_ema.state_dict(), os.path.join(d, "G_ema.pth"))

    z = torch.from_numpy(np.random.RandomState(0).randn(4, G.dim_z).astype(np.float32))
    y = torch.tensor([0, 1, 2, 0], dtype=torch.int64)
    x_real = torch.from_numpy(np.random.RandomState(1).uniform(-1, 1, (4, 3, 32, 32)).astype(np.float32))
    out = {"z": _np(z), "y": y.numpy(), "x_real": _np(x_real)}
    with torch.no_grad():
        out["img_g"] = _np(G(z, G.shared(y)))
        out["img_ema"] = _np(G_ema(z, G_ema.shared(y)))
        # sample.py's default (no --G_eval_mode): training mode, i.e. batch statistics (and, as a
        # side effect, u0 advances); computed on copies so that the saved state is untouched.
        g_tr = copy.deepcopy(G).train()
        out["img_g_trainmode"] = _np(g_tr(z, g_tr.shared(y)))
        idx, margin = {}, {}
        if fq:
            hooks = []
            for i, blocklist in enumerate(D.blocks):
                if len(blocklist) > 1 and hasattr(blocklist[1], "n_embed"):
                    def hook(m, inp, _out, i=i):
                        xx = inp[0].permute(0, 2, 3, 1).reshape(-1, m.dim)
                        dist = xx.pow(2).sum(1, keepdim=True) - 2 * xx @ m.embed + m.embed.pow(2).sum(0, keepdim=True)
                        idx[i] = (-dist).max(1)[1]
                        top2 = dist.topk(2, dim=1, largest=False)[0]
                        margin[i] = top2[:, 1] - top2[:, 0]
                    hooks.append(blocklist[1].register_forward_hook(hook))
            d_out, quant_loss, ppl = D(x_real, y)
            for h in hooks:
                h.remove()
            out["d_out"] = _np(d_out)
            out["d_out_trainmode"] = _np(copy.deepcopy(D).train()(x_real, y)[0])
            out["d_quant_loss"] = _np(quant_loss)
            out["d_ppl_last"] = _np(ppl.reshape(1))
            taps = ["b32", "b16", "b8a", "b8b"]
            for i, v in idx.items():
                out[f"fq_idx_{taps[i]}"] = v.numpy().astype(np.int64)
                # second-nearest minus nearest squared distance: skip near-ties when comparing
                out[f"fq_margin_{taps[i]}"] = _np(margin[i])
        else:
            out["d_out"] = _np(D(x_real, y))
            out["d_out_trainmode"] = _np(copy.deepcopy(D).train()(x_real, y))
    np.savez(os.path.join(d, "outputs.npz"), **out)
    meta = dict(kw)
    meta["official_repo"] = spec["repo"].split("/")[0].replace("+", "/")
    meta["G_dim_z_after_hier_rounding"] = G.dim_z
    with open(os.path.join(d, "kwargs.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")


def write_ugatit(src, name, kw):
    (networks,) = _official(src, "znxlwm+UGATIT-pytorch", ["networks"])
    torch.manual_seed(kw["seed"])
    nets = {
        "genA2B": networks.ResnetGenerator(input_nc=3, output_nc=3, ngf=kw["ch"], n_blocks=kw["n_res"],
                                           img_size=kw["img_size"], light=kw["light"]),
        "genB2A": networks.ResnetGenerator(input_nc=3, output_nc=3, ngf=kw["ch"], n_blocks=kw["n_res"],
                                           img_size=kw["img_size"], light=kw["light"]),
        "disGA": networks.Discriminator(input_nc=3, ndf=kw["ch"], n_layers=7),
        "disGB": networks.Discriminator(input_nc=3, ndf=kw["ch"], n_layers=7),
        "disLA": networks.Discriminator(input_nc=3, ndf=kw["ch"], n_layers=5),
        "disLB": networks.Discriminator(input_nc=3, ndf=kw["ch"], n_layers=5),
    }
    gen = torch.Generator().manual_seed(20)
    for i, (k, net) in enumerate(nets.items()):
        _perturb(net, torch.Generator().manual_seed(kw["seed"] + i))
        if k.startswith("dis"):
            size = max(UGATIT_GLOBAL_SIZE, kw["img_size"]) if k.startswith("disG") else kw["img_size"]
            net.train()
            with torch.no_grad():
                for _ in range(2):
                    net(torch.rand(2, 3, size, size, generator=gen) * 2 - 1)
        net.eval()
    d = os.path.join(OUT, "ugatit", name)
    os.makedirs(d, exist_ok=True)
    # UGATIT.save
    params = {k: v.state_dict() for k, v in nets.items()}
    torch.save(params, os.path.join(d, "ugatit_params.pt"))
    # Batch 2 at img_size; one image for the global critic (the folder stays under 2 MB).
    n = 2 if kw["img_size"] < UGATIT_GLOBAL_SIZE else 1
    x = torch.from_numpy(np.random.RandomState(2).uniform(-1, 1, (n, 3, kw["img_size"], kw["img_size"])).astype(np.float32))
    out = {"x": _np(x)}
    if kw["img_size"] >= UGATIT_GLOBAL_SIZE:
        xg = x
    else:
        xg = torch.from_numpy(np.random.RandomState(3).uniform(-1, 1, (1, 3, UGATIT_GLOBAL_SIZE, UGATIT_GLOBAL_SIZE)).astype(np.float32))
        out["x_global"] = _np(xg)
    with torch.no_grad():
        o, c, h = nets["genA2B"](x)
        out.update({"gen_out": _np(o), "gen_cam_logit": _np(c), "gen_heatmap": _np(h)})
        o, c, h = nets["disGA"](xg)
        out.update({"disGA_out": _np(o), "disGA_cam_logit": _np(c), "disGA_heatmap": _np(h)})
        o, c, h = nets["disLA"](x)
        out.update({"disLA_out": _np(o), "disLA_cam_logit": _np(c), "disLA_heatmap": _np(h)})
    np.savez(os.path.join(d, "outputs.npz"), **out)
    meta = dict(kw, input_nc=3, output_nc=3, global_n_layers=7, local_n_layers=5,
                global_input_size=int(xg.shape[-1]), official_repo="znxlwm/UGATIT-pytorch")
    with open(os.path.join(d, "kwargs.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")


# ----------------------------------------------------------------------------------------------
# Verification: official files -> mapping -> gantry twins -> the official outputs.
# ----------------------------------------------------------------------------------------------
def _maxdiff(a, b):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def verify_biggan(name, tol=1e-4):
    d = os.path.join(OUT, "biggan", name)
    kw = json.load(open(os.path.join(d, "kwargs.json")))
    want = np.load(os.path.join(d, "outputs.npz"))
    model, fq = biggan_config(kw)
    res = {}
    z, y, x = (torch.from_numpy(want[k]) for k in ("z", "y", "x_real"))
    for f, key in (("G.pth", "img_g"), ("G_ema.pth", "img_ema")):
        sd = torch.load(os.path.join(d, f), map_location="cpu", weights_only=True)
        t = Strict(biggan_official_to_gantry(sd, kw)["g"])
        g = TwinBigGanG(t, model).eval()
        t.check()
        with torch.no_grad():
            res[key] = _maxdiff(g(z, y).numpy(), want[key])
            if key == "img_g":
                # training mode (sample.py's default without --G_eval_mode): batch statistics
                # and one power step from u0 on both sides.
                res["img_g_trainmode"] = _maxdiff(copy.deepcopy(g).train()(z, y).numpy(), want["img_g_trainmode"])
    sd = torch.load(os.path.join(d, "D.pth"), map_location="cpu", weights_only=True)
    stores = biggan_official_to_gantry(sd, kw)
    t = Strict(stores["d"])
    dnet = TwinBigGanD(t, model).eval()
    t.check()
    with torch.no_grad():
        logits, taps = dnet(x, y)
    res["d_out"] = _maxdiff(logits.numpy(), want["d_out"].reshape(-1))
    with torch.no_grad():
        res["d_out_trainmode"] = _maxdiff(copy.deepcopy(dnet).train()(x, y)[0].numpy(), want["d_out_trainmode"].reshape(-1))
    if fq:
        total = torch.zeros(x.shape[0])
        for tap in fq["layers"]:
            idx, per_img = twin_fq(stores["plugins"], tap, taps[tap])
            mism = int((idx.numpy() != want[f"fq_idx_{tap}"]).sum())
            assert mism == 0, f"{name}: {mism} FQ assignments differ at {tap}"
            total += fq["beta"] * per_img
        res["d_quant_loss"] = _maxdiff(total.numpy(), want["d_quant_loss"].reshape(-1))
        res["fq_assignments"] = "all equal"
    for k, v in res.items():
        if isinstance(v, float) and "info" not in k:
            assert v <= tol, f"biggan/{name} {k}: {v}"
    return res


def verify_ugatit(name, tol=1e-4):
    ref = _ugatit_ref()
    d = os.path.join(OUT, "ugatit", name)
    kw = json.load(open(os.path.join(d, "kwargs.json")))
    want = np.load(os.path.join(d, "outputs.npz"))
    cfg = ugatit_config(kw)
    sd = torch.load(os.path.join(d, "ugatit_params.pt"), map_location="cpu", weights_only=True)
    stores = ugatit_official_to_gantry(sd, kw)
    t = {**{f"g/{k}": v for k, v in stores["g"].items()}, **{f"d/{k}": v for k, v in stores["d"].items()}}
    res = {}
    nets = {}
    for prefix in ("g_ab", "g_ba"):
        nets[prefix] = _ugatit_twin_load(ref.Generator(3, cfg["ch"], cfg["n_res"], kw["img_size"], cfg["light"]), t, f"g/{prefix}.").eval()
    for prefix, layers in (("ga", 7), ("gb", 7), ("la", 5), ("lb", 5)):
        nets[prefix] = _ugatit_twin_load(ref.Discriminator(3, cfg["ch"], layers), t, f"d/{prefix}.").eval()
    n_keys = sum(len(v) for v in stores.values())
    n_twin = sum(len(m.state_dict()) for m in nets.values())
    assert n_keys == n_twin, (n_keys, n_twin)
    x = torch.from_numpy(want["x"])
    xg = torch.from_numpy(want["x_global"]) if "x_global" in want else x
    with torch.no_grad():
        for k, v in zip(("gen_out", "gen_cam_logit", "gen_heatmap"), nets["g_ab"](x)):
            res[k] = _maxdiff(v.numpy(), want[k])
        for k, v in zip(("disGA_out", "disGA_cam_logit", "disGA_heatmap"), nets["ga"](xg)):
            res[k] = _maxdiff(v.numpy(), want[k])
        for k, v in zip(("disLA_out", "disLA_cam_logit", "disLA_heatmap"), nets["la"](x)):
            res[k] = _maxdiff(v.numpy(), want[k])
    for k, v in res.items():
        assert v <= tol, f"ugatit/{name} {k}: {v}"
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", help="folder holding <owner>+<repo> extractions of the official code")
    ap.add_argument("--verify", action="store_true", help="only verify the committed fixtures")
    a = ap.parse_args()
    if not a.verify:
        assert a.src, "--src is needed to write the fixtures"
        for name, spec in BIGGAN_VARIANTS.items():
            write_biggan(a.src, name, spec)
        for name, kw in UGATIT_VARIANTS.items():
            write_ugatit(a.src, name, kw)
    for name in BIGGAN_VARIANTS:
        print("biggan", name, json.dumps(verify_biggan(name)))
    for name in UGATIT_VARIANTS:
        print("ugatit", name, json.dumps(verify_ugatit(name)))


if __name__ == "__main__":
    main()
