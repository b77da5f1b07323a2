"""Checks a `gantry export --format reference` directory against the OFFICIAL code (not run in CI:
it needs the official sources, which are not part of the repository).

    .venv/bin/python tests/pyref/interop_export_official.py --src /work/interop-src EXPORT_DIR [EXPORT_DIR ...]

`--src` holds the official repositories, one folder each, as tests/pyref/interop_sg2_fixtures.py
expects them: NVlabs+stylegan2-ada-pytorch/ (for "format": "stylegan2-ada-pytorch") and
brownvc+R3GAN/ (for "format": "R3GAN"); git archives of the commits listed in
tests/fixtures/interop/sg2/README.md.

For each export directory (each in its own subprocess: both repositories have top-level packages
named dnnlib, torch_utils and training):

1. builds the official networks from kwargs.json exactly as their training code does,
   `dnnlib.util.construct_class_by_name(class_name=..., **kwargs)` (stylegan2-ada-pytorch's and
   R3GAN's `training.networks.Generator` / `Discriminator`), and loads every file of the export
   (G, G_ema when present, D) with load_state_dict(strict=True);
2. computes, in eval mode on the CPU (the official custom ops fall back to their reference code),
   for fixed z, labels and x: stylegan2-ada-pytorch `G(z, c, truncation_psi=1, noise_mode='const')`
   and `D(x, c)`; R3GAN `G(z, c)` and `D(x, c)` (c = one-hot labels; unconditional networks get
   an empty c);
3. runs tests/pyref/interop_export.py (the script the Rust interop tests call, which uses gantry's
   PyTorch twins stylegan2_ref.py / r3gan_ref.py) on the same inputs for G and for G_ema, and
   prints the largest absolute differences of `img` and `d` as one JSON line per directory;
   it exits non-zero if one exceeds --tol.

Patches (this script's only): stub `requests` and `click` modules in sys.modules, as
interop_sg2_fixtures.py does (dnnlib/util.py imports requests at top level; neither is in
gantry's venv and neither is used here). The official files are not modified.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import types

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPOS = {"stylegan2-ada-pytorch": "NVlabs+stylegan2-ada-pytorch", "R3GAN": "brownvc+R3GAN"}
N = 8  # a multiple of every minibatch-stddev group gantry exports (4 by default)


def patch_env():
    sys.modules.setdefault("requests", types.ModuleType("requests"))
    if "click" not in sys.modules:
        click = types.ModuleType("click")
        click.command = click.option = lambda *a, **k: (lambda f: f)
        sys.modules["click"] = click


def inputs(fmt, gk, seed=0):
    z_dim = gk["z_dim"] if fmt == "stylegan2-ada-pytorch" else gk["NoiseDimension"]
    res = gk["img_resolution"]
    channels = gk.get("img_channels", 3)  # R3GAN's networks are RGB only
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N, z_dim, generator=g)
    x = torch.rand(N, channels, res, res, generator=g) * 2 - 1
    labels = torch.arange(N) % max(gk.get("c_dim", 0), 1)
    return z, labels, x


def check_one(src, export, tol):
    from safetensors.torch import load_file

    with open(os.path.join(export, "kwargs.json")) as f:
        kwargs = json.load(f)
    fmt = kwargs.get("format")
    if fmt not in REPOS:
        raise SystemExit(f"{export}: format {fmt!r}; this script checks {', '.join(REPOS)} exports")
    repo = os.path.join(src, REPOS[fmt])
    if not os.path.isdir(repo):
        raise SystemExit(f"{repo} does not exist")
    patch_env()
    sys.path.insert(0, repo)
    import dnnlib

    torch.set_grad_enabled(False)
    gk, dk = kwargs["G"]["kwargs"], kwargs["D"]["kwargs"]
    z, labels, x = inputs(fmt, gk)
    c_dim = gk.get("c_dim", 0)
    c = F.one_hot(labels, c_dim).float() if c_dim > 0 else torch.zeros([N, 0])
    nets = [n for n in ("G", "G_ema") if os.path.exists(os.path.join(export, f"{n}.safetensors"))]
    official = {}
    for name in nets + ["D"]:
        spec = kwargs["D" if name == "D" else "G"]
        net = dnnlib.util.construct_class_by_name(class_name=spec["class_name"], **spec["kwargs"]).eval()
        sd = load_file(os.path.join(export, f"{name}.safetensors"))
        if fmt == "R3GAN":
            io = sd["Model.ExtractionLayer.Layer.weight"].shape[1] if name == "D" else sd["Model.AggregationLayer.Layer.weight"].shape[0]
            if io != 3:
                raise SystemExit(f"{export}: {name} has {io} image channels; R3GAN's official networks are RGB "
                                 "only (3 channels hard-coded), so they cannot load it")
        net.load_state_dict(sd, strict=True)
        if name == "D":
            official["d"] = net(x, c).flatten()
        elif fmt == "stylegan2-ada-pytorch":
            official[name] = net(z, c, truncation_psi=1, noise_mode="const")
        else:
            official[name] = net(z, c).float()
    report = {"export": export, "format": fmt, "strict_load": nets + ["D"], "max_abs_diff": {}}
    with tempfile.TemporaryDirectory() as tmp:
        inp = os.path.join(tmp, "in.npz")
        np.savez(inp, z=z.numpy(), labels=labels.numpy(), x=x.numpy())
        for name in nets:
            out = os.path.join(tmp, f"out_{name}.npz")
            env = dict(os.environ, GANTRY_EXPORT=export, GANTRY_EXPORT_NET=name)
            subprocess.run([sys.executable, os.path.join(HERE, "interop_export.py"), inp, out], check=True, env=env)
            o = np.load(out)
            report["max_abs_diff"][f"img ({name})"] = float(np.abs(o["img"] - official[name].numpy()).max())
            report["max_abs_diff"]["d"] = float(np.abs(o["d"] - official["d"].numpy()).max())
            report[f"img_abs_max ({name})"] = float(official[name].abs().max())
    report["d_abs_max"] = float(official["d"].abs().max())
    print(json.dumps(report), flush=True)
    worst = max(report["max_abs_diff"].values())
    if not worst <= tol:
        raise SystemExit(f"{export}: official and twin differ by {worst} > {tol}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True, help="folder with the official repositories")
    p.add_argument("--tol", type=float, default=1e-4, help="largest absolute difference accepted")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child: check in this process
    p.add_argument("exports", nargs="+")
    a = p.parse_args()
    if a.one:
        check_one(a.src, a.exports[0], a.tol)
        return
    failed = 0
    for export in a.exports:
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", "--src", a.src, "--tol", str(a.tol), export])
        failed += r.returncode != 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
