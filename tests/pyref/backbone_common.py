"""Shared helpers of the backbone reference scripts: loading gantry's VarStore tensors (npz, keys as
gantry names them) into PyTorch modules, with torch.nn.utils.spectral_norm for SN layers (gantry's
`<layer>.weight` is torch's `<layer>.weight_orig`), and writing results back."""
import sys

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils import spectral_norm


def load_inputs():
    return {k: torch.from_numpy(v) for k, v in np.load(sys.argv[1]).items()}


def save_outputs(out):
    np.savez(sys.argv[2], **{k: v.detach().contiguous().numpy() for k, v in out.items()})


# gantry key -> the PyTorch tensor it was loaded into (parameters and buffers), for every layer
# built through these helpers.
REGISTRY = {}


def has_sn(t, key):
    return f"{key}.weight_u" in t


def load(module, t, key):
    """Builds SN around `module` if gantry's `key` has SN buffers, then copies gantry's tensors."""
    sn = has_sn(t, key)
    if sn:
        module = spectral_norm(module)
    module = module.double()
    with torch.no_grad():
        if sn:
            module.weight_orig.copy_(t[f"{key}.weight"])
            module.weight_u.copy_(t[f"{key}.weight_u"])
            module.weight_v.copy_(t[f"{key}.weight_v"])
        else:
            module.weight.copy_(t[f"{key}.weight"])
        if getattr(module, "bias", None) is not None:
            module.bias.copy_(t[f"{key}.bias"])
    REGISTRY.update(named_tensors(module, f"{key}."))
    return module


def conv(t, key, k):
    w = t[f"{key}.weight"]
    return load(nn.Conv2d(w.shape[1], w.shape[0], k, padding=k // 2, bias=f"{key}.bias" in t), t, key)


def linear(t, key):
    w = t[f"{key}.weight"]
    return load(nn.Linear(w.shape[1], w.shape[0], bias=f"{key}.bias" in t), t, key)


def embedding(t, key):
    w = t[f"{key}.weight"]
    return load(nn.Embedding(w.shape[0], w.shape[1]), t, key)


def batchnorm(t, key):
    c = t[f"{key}.running_mean"].shape[0]
    bn = nn.BatchNorm2d(c).double()
    with torch.no_grad():
        for name in ["weight", "bias", "running_mean", "running_var"]:
            getattr(bn, name).copy_(t[f"{key}.{name}"])
    REGISTRY.update(named_tensors(bn, f"{key}."))
    return bn


def named_tensors(module, prefix):
    """Parameters and buffers of `module` under gantry's names (weight_orig -> weight)."""
    out = {}
    for name, p in list(module.named_parameters()) + list(module.named_buffers()):
        if name.endswith("num_batches_tracked"):
            continue
        name = name.replace("weight_orig", "weight")
        out[f"{prefix}{name}"] = p
    return out


def grads(loss, params):
    """`grad.<name>` for every trainable tensor in `params` (a name -> tensor dict)."""
    names = [k for k, v in params.items() if v.requires_grad]
    gs = torch.autograd.grad(loss, [params[k] for k in names], allow_unused=True)
    return {f"grad.{k}": (g if g is not None else torch.zeros_like(params[k])) for k, g in zip(names, gs)}
