"""gantry's networks in plain PyTorch, for the files `gantry export --format gantry` writes.

An export directory holds `G.safetensors`, `G_ema.safetensors` (when the run keeps an EMA),
`D.safetensors` under gantry's own parameter names, and `kwargs.json`:
`{"format": "gantry", "model": {"arch": ..., <settings>}, "img_channels": C,
"img_resolution": R, "num_classes": K or null}`.

    import gantry_torch
    G = gantry_torch.load("export_dir")            # G_ema (eval mode)
    D = gantry_torch.load("export_dir", net="D")
    img = G(torch.randn(16, G.z_dim))              # [16, C, R, R] in [-1, 1] (mlp: points)
    logits = D(img)                                # [16]

Each architecture module (`dcgan`, `mlp`, `resnet`) has `Generator(**settings, img_channels,
img_resolution, num_classes)` with `forward(z, labels=None)` and `Discriminator(...)` with
`forward(x, labels=None)` -> one logit per sample; in eval mode they compute what gantry's
networks compute with `train = false` (BatchNorm on running statistics, spectral norm from the
stored vectors). Parameter and buffer names are gantry's, so the files load with
`load_state_dict(..., strict=True)`.

stylegan2, biggan and r3gan have official PyTorch code: export those with
`gantry export --format reference` and load them into the official networks (docs/interop.md).
"""
import json
import os

from . import dcgan, mlp, resnet

__all__ = ["ARCHS", "build", "load", "read_kwargs"]

ARCHS = {"dcgan": dcgan, "mlp": mlp, "resnet": resnet}

# Architectures with an official implementation to export to instead.
REFERENCE = {
    "stylegan2": "NVlabs/stylegan2-ada-pytorch (training.networks.Generator / Discriminator)",
    "biggan": "ajbrock/BigGAN-PyTorch (BigGAN.Generator / Discriminator)",
    "r3gan": "brownvc/R3GAN (training.networks.Generator / Discriminator)",
}

NETS = ("G", "G_ema", "D")


def read_kwargs(path):
    """`kwargs.json` of an export directory (or the file itself), checked to be gantry-format."""
    file = os.path.join(path, "kwargs.json") if os.path.isdir(path) else path
    with open(file) as f:
        kwargs = json.load(f)
    fmt = kwargs.get("format")
    if kwargs.get("task") == "translate":
        raise ValueError(f"{file}: a translation (U-GAT-IT) export; gantry_torch builds GAN networks only. "
                         "Export it with `gantry export --format reference` and load it into UGATIT-pytorch "
                         "(docs/interop.md)")
    if fmt != "gantry":
        raise ValueError(f"{file}: format {fmt!r} is a reference export; load it with the official code named "
                         "in its class_name (docs/interop.md), or re-export with `--format gantry`")
    return kwargs


def build(kwargs, net="G"):
    """An untrained network from an export's kwargs (a dict as in kwargs.json): `net` is "G",
    "G_ema" (the same class as G) or "D"."""
    if net not in NETS:
        raise ValueError(f"net must be one of {NETS}, got {net!r}")
    settings = dict(kwargs["model"])
    arch = settings.pop("arch")
    if arch in REFERENCE:
        raise NotImplementedError(
            f"gantry_torch does not implement {arch!r}: export the run with `gantry export --format reference` "
            f"and load it with the official code, {REFERENCE[arch]} (docs/interop.md)")
    if arch not in ARCHS:
        raise NotImplementedError(f"unknown architecture {arch!r} (gantry_torch builds {', '.join(ARCHS)})")
    module = ARCHS[arch]
    cls = module.Discriminator if net == "D" else module.Generator
    try:
        return cls(**settings, img_channels=kwargs["img_channels"], img_resolution=kwargs["img_resolution"],
                   num_classes=kwargs.get("num_classes"))
    except TypeError as e:
        raise TypeError(f"{arch} settings {sorted(settings)} do not match gantry_torch.{arch} ({e}); "
                        "is gantry_torch older than the gantry that exported them?") from e


def load(path, net="G_ema", device="cpu"):
    """The network `net` ("G_ema", "G" or "D") of the export directory `path`, with its weights
    loaded strictly, on `device`, in eval mode."""
    from safetensors.torch import load_file

    kwargs = read_kwargs(path)
    model = build(kwargs, net)
    file = os.path.join(path, f"{net}.safetensors")
    if not os.path.exists(file):
        have = [n for n in NETS if os.path.exists(os.path.join(path, f"{n}.safetensors"))]
        hint = " (the run keeps no EMA generator: use net=\"G\")" if net == "G_ema" else ""
        raise FileNotFoundError(f"{file} does not exist{hint}; {path} has {', '.join(have) or 'no networks'}")
    model.load_state_dict(load_file(file), strict=True)
    return model.to(device).eval()
