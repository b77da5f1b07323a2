"""Outputs of an exported network (`gantry export`) computed in PyTorch without gantry, for the
Rust interop tests to compare with gantry's own.

    GANTRY_EXPORT=DIR [GANTRY_EXPORT_NET=G|G_ema] python tests/pyref/interop_export.py IN.npz OUT.npz

DIR is what `gantry export` wrote: `G.safetensors`, `G_ema.safetensors` (when the run keeps an
EMA), `D.safetensors` and `kwargs.json`. GANTRY_EXPORT_NET picks the generator (default: G_ema
when the file exists, else G); D is always `D.safetensors`.

IN.npz:  `z` [N, z_dim] float32; `labels` [N] int64 (conditional networks; ignored by the
         unconditional ones); `x` [N, C, H, W] float32 (2-D points: [N, 2, 1, 1]).
OUT.npz: `img` = G(z, labels) [N, C, H, W] and `d` = D(x, labels) [N], float32, both networks in
         eval mode, computed in float32 on the CPU.

By `kwargs.json`'s "format":

- "gantry" (`--format gantry`): the networks of python/gantry_torch (`gantry_torch.load`), which
  loads the files with strict=True. `img` is what gantry's G computes with train = false (tanh
  output; points for mlp); `d` is D's logit.
- "stylegan2-ada-pytorch" (`--format reference`): gantry's PyTorch twin of the reference,
  tests/pyref/stylegan2_ref.py, built from the "G" / "D" kwargs. The files hold the reference's
  names; the twin's `resample_filter` buffers are non-persistent, so the file's
  `*.resample_filter` tensors are checked to equal outer([1,3,3,1], [1,3,3,1]) / 64 and dropped,
  and the twin's own `pl_mean` buffer (gantry's path-length average, which the reference keeps out
  of the network and the export leaves out) is set to 0; then load_state_dict(strict=True).
  `img` = G(z, one_hot(labels), truncation_psi=1, noise_mode="const"): truncation psi 1 (no
  truncation) and CONST noise, i.e. each synthesis layer adds its stored `noise_const` buffer
  times `noise_strength` (the official code's noise_mode='const'; no random noise is drawn), with
  fused modulated convolutions (what the official G uses in eval mode in fp32). `d` = D(x,
  one_hot(labels)) flattened; D's minibatch-stddev layer groups min(mbstd_group_size, N) samples,
  so N must be a multiple of that group (as in the official code).
- "R3GAN" (`--format reference`): gantry's twin tests/pyref/r3gan_ref.py, built from the kwargs
  (D's per-stage lists are the G-order lists reversed, as R3GAN's train.py passes them; the twin
  takes them in G order). The wrapper's `Model.` prefix is stripped and the `*.Resampler.Kernel`
  buffers (checked: the [1,2,1] filter's 4x4 kernel, outer([1,3,3,1]) / 64) are dropped; then
  load_state_dict(strict=True). `img` = G(z, one_hot(labels)), the raw output of the aggregation
  layer (R3GAN applies no tanh); `d` = D(x, one_hot(labels)).

Other formats (BigGAN-PyTorch, UGATIT-pytorch, translation exports) are refused by name.
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, HERE)

FILTER = torch.outer(torch.tensor([1.0, 3.0, 3.0, 1.0]), torch.tensor([1.0, 3.0, 3.0, 1.0])) / 64


def generator_name(export):
    net = os.environ.get("GANTRY_EXPORT_NET")
    if net is None:
        net = "G_ema" if os.path.exists(os.path.join(export, "G_ema.safetensors")) else "G"
    if net not in ("G", "G_ema"):
        raise SystemExit(f"GANTRY_EXPORT_NET must be G or G_ema, got {net!r}")
    return net


def drop_filters(sd, suffix, what):
    """`sd` without the keys ending in `suffix`, each checked to be the [1,3,3,1] filter."""
    out = {}
    for k, v in sd.items():
        if k.endswith(suffix):
            if tuple(v.shape) != (4, 4) or not torch.allclose(v.float(), FILTER, rtol=1e-6, atol=1e-7):
                raise SystemExit(f"{what}: {k} is not outer([1,3,3,1]) / 64")
            continue
        out[k] = v
    return out


def one_hot(labels, c_dim, what):
    if c_dim == 0:
        return None
    if labels is None:
        raise SystemExit(f"{what} is conditional (c_dim {c_dim}): IN.npz needs `labels`")
    return F.one_hot(labels.long(), c_dim).float()


def gantry_nets(export, net, kwargs):
    import gantry_torch

    return gantry_torch.load(export, net), gantry_torch.load(export, "D")


def stylegan2_nets(export, net, kwargs):
    import stylegan2_ref as R

    gk, dk = dict(kwargs["G"]["kwargs"]), dict(kwargs["D"]["kwargs"])
    mk, sk = gk.get("mapping_kwargs") or {}, gk.get("synthesis_kwargs") or {}
    ek = dk.get("epilogue_kwargs") or {}
    # The twin computes in fp32 without clamping: what the export always asks for.
    for what, k in [("G.synthesis_kwargs", sk), ("D", dk)]:
        if k.get("num_fp16_res", 0) != 0 or k.get("conv_clamp") is not None:
            raise SystemExit(f"{what}: num_fp16_res/conv_clamp are not 0/None; the twin runs fp32 unclamped")
    c_dim = gk.get("c_dim", 0)
    G = R.Generator(gk["z_dim"], gk["w_dim"], gk["img_resolution"], gk["img_channels"],
                    mapping_layers=mk.get("num_layers", 8), channel_base=sk.get("channel_base", 32768),
                    channel_max=sk.get("channel_max", 512), c_dim=c_dim)
    lr = mk.get("lr_multiplier", 0.01)
    for i in range(G.mapping.num_layers):  # the twin's G fixes the mapping lr multiplier at 0.01
        fc = getattr(G.mapping, f"fc{i}")
        fc.weight_gain, fc.bias_gain = lr / np.sqrt(fc.weight.shape[1]), lr
    D = R.Discriminator(dk["img_resolution"], dk["img_channels"], channel_base=dk.get("channel_base", 32768),
                        channel_max=dk.get("channel_max", 512), mbstd_group_size=ek.get("mbstd_group_size", 4),
                        mbstd_num_channels=ek.get("mbstd_num_channels", 1), c_dim=dk.get("c_dim", 0))
    g_sd = drop_filters(load_file(os.path.join(export, f"{net}.safetensors")), "resample_filter", net)
    g_sd.setdefault("pl_mean", torch.zeros([]))  # the twin's extra buffer; unused by forward
    d_sd = drop_filters(load_file(os.path.join(export, "D.safetensors")), "resample_filter", "D")
    G.load_state_dict(g_sd, strict=True)
    D.load_state_dict(d_sd, strict=True)

    def g(z, labels):
        return G(z, one_hot(labels, c_dim, "G"), truncation_psi=1, noise_mode="const", fused_modconv=True)

    def d(x, labels):
        return D(x, one_hot(labels, dk.get("c_dim", 0), "D")).flatten()

    return (G.eval(), g), (D.eval(), d)


def r3gan_nets(export, net, kwargs):
    import r3gan_ref as R

    gk, dk = kwargs["G"]["kwargs"], kwargs["D"]["kwargs"]
    if gk.get("FP16Stages") or dk.get("FP16Stages"):
        raise SystemExit("FP16Stages is not empty; the twin runs every stage in fp32")
    z_dim, c_dim = gk["NoiseDimension"], gk.get("c_dim", 0)
    widths, cards, blocks = gk["WidthPerStage"], gk["CardinalityPerStage"], gk["BlocksPerStage"]
    if [dk["WidthPerStage"], dk["CardinalityPerStage"], dk["BlocksPerStage"]] != [widths[::-1], cards[::-1], blocks[::-1]]:
        raise SystemExit("D's per-stage lists are not G's reversed; the twin builds D from G's")
    if c_dim and (gk.get("ConditionEmbeddingDimension") != z_dim or dk.get("ConditionEmbeddingDimension") != widths[0]):
        raise SystemExit("the twin embeds labels to NoiseDimension in G and WidthPerStage[0] in D")
    strip = lambda sd, what: drop_filters({k[len("Model."):]: v for k, v in sd.items()}, ".Resampler.Kernel", what)
    g_sd = strip(load_file(os.path.join(export, f"{net}.safetensors")), net)
    d_sd = strip(load_file(os.path.join(export, "D.safetensors")), "D")
    channels = g_sd["AggregationLayer.Layer.weight"].shape[0]
    common = dict(expansion=gk["ExpansionFactor"], kernel=gk.get("KernelSize", 3), classes=c_dim)
    G = R.Generator(z_dim, channels, widths, cards, blocks, **common)
    D = R.Discriminator(channels, widths, cards, blocks, **common)
    G.load_state_dict(g_sd, strict=True)
    D.load_state_dict(d_sd, strict=True)
    g = lambda z, labels: G(z, one_hot(labels, c_dim, "G"))
    d = lambda x, labels: D(x, one_hot(labels, c_dim, "D"))
    return (G.eval(), g), (D.eval(), d)


def networks(export):
    """(g, d): callables `g(z, labels)` and `d(x, labels)` for the export directory."""
    with open(os.path.join(export, "kwargs.json")) as f:
        kwargs = json.load(f)
    fmt = kwargs.get("format")
    if kwargs.get("task") == "translate":
        raise SystemExit(f"{export}: a translation export; this script covers GAN exports only")
    net = generator_name(export)
    if fmt == "gantry":
        G, D = gantry_nets(export, net, kwargs)
        return (lambda z, labels: G(z, labels)), (lambda x, labels: D(x, labels))
    if fmt == "stylegan2-ada-pytorch":
        (_, g), (_, d) = stylegan2_nets(export, net, kwargs)
        return g, d
    if fmt == "R3GAN":
        (_, g), (_, d) = r3gan_nets(export, net, kwargs)
        return g, d
    raise SystemExit(f"{export}: format {fmt!r} is not supported here (gantry, stylegan2-ada-pytorch, R3GAN)")


def main(argv):
    if len(argv) != 3 or "GANTRY_EXPORT" not in os.environ:
        raise SystemExit(__doc__)
    torch.set_grad_enabled(False)
    g, d = networks(os.environ["GANTRY_EXPORT"])
    inp = np.load(argv[1])
    labels = torch.from_numpy(inp["labels"]).long() if "labels" in inp else None
    img = g(torch.from_numpy(inp["z"]).float(), labels)
    logits = d(torch.from_numpy(inp["x"]).float(), labels)
    np.savez(argv[2], img=img.float().numpy(), d=logits.float().reshape(-1).numpy())


if __name__ == "__main__":
    main(sys.argv)
