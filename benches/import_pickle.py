"""PyTorch side of scripts/bench_import.sh: loading a realistic stylegan2-ada-pytorch network pickle
and drawing one sample, the twin of `gantry sample --checkpoint PKL --n 1 --out PNG`.

    make --src SRC --out DIR [--res 256] [--seed 0]
        Builds, with the OFFICIAL classes of NVlabs/stylegan2-ada-pytorch (SRC holds
        NVlabs+stylegan2-ada-pytorch/, as for tests/pyref/interop_sg2_fixtures.py), the networks of
        its train.py `--cfg=paper256` (fmaps 0.5 -> channel_base 16384, channel_max 512, 8 mapping
        layers, num_fp16_res 4, conv_clamp 256, mbstd group 8; z_dim = w_dim = 512), G, D, G_ema and
        an AugmentPipe('bgc'), and writes DIR/network-snapshot-paper256.pkl exactly as
        training_loop.py does (deep-copied, eval, requires_grad_(False), cpu modules plus
        training_set_kwargs, pickle.dump). Seeded: the same file for the same seed.

    load PKL --src SRC --out PNG [--seed 0]
        legacy.load_network_pkl(f)['G_ema'], one z, G(z, c, noise_mode='const', force_fp32=True),
        then the uint8 conversion gantry does (clamp of (x + 1) * 127.5) and a PNG. Threads:
        torch's default, i.e. OMP_NUM_THREADS as set by the caller (the same as gantry).

Patches, as interop_sg2_fixtures.py (never the official files'): stub `requests` and `click`
modules (imported at top level by dnnlib/util.py and legacy.py, unused here).
"""
import argparse
import copy
import os
import pickle
import sys
import time
import types

import numpy as np
import torch

REPO = "NVlabs+stylegan2-ada-pytorch"
# train.py's --augpipe=bgc (its default).
BGC = dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1,
           lumaflip=1, hue=1, saturation=1)
# train.py: cfg_specs['paper256'].
PAPER256 = dict(ref_gpus=8, kimg=25000, mb=64, mbstd=8, fmaps=0.5, lrate=0.0025, gamma=1, ema=20, ramp=None, map=8)


def use_official(src):
    path = os.path.join(src, REPO)
    if not os.path.isdir(path):
        raise SystemExit(f"import_pickle.py: {path} is missing (the official sources, see --src)")
    sys.modules.setdefault("requests", types.ModuleType("requests"))
    if "click" not in sys.modules:
        click = types.ModuleType("click")
        click.command = click.option = lambda *a, **k: (lambda f: f)
        sys.modules["click"] = click
    sys.path.insert(0, path)


def make(args):
    use_official(args.src)
    import dnnlib

    spec = dnnlib.EasyDict(PAPER256)
    res = args.res
    torch.manual_seed(args.seed)
    E = dnnlib.EasyDict
    # As train.py's setup_training_loop_kwargs with --cfg=paper256 --mirror=1 (augpipe bgc).
    training_set_kwargs = E(class_name="training.dataset.ImageFolderDataset", path=f"~/datasets/ffhq{res}.zip",
                            use_labels=False, max_size=70000, xflip=True, resolution=res)
    G_kwargs = E(class_name="training.networks.Generator", z_dim=512, w_dim=512, mapping_kwargs=E(), synthesis_kwargs=E())
    D_kwargs = E(class_name="training.networks.Discriminator", block_kwargs=E(), mapping_kwargs=E(), epilogue_kwargs=E())
    G_kwargs.synthesis_kwargs.channel_base = D_kwargs.channel_base = int(spec.fmaps * 32768)
    G_kwargs.synthesis_kwargs.channel_max = D_kwargs.channel_max = 512
    G_kwargs.mapping_kwargs.num_layers = spec.map
    G_kwargs.synthesis_kwargs.num_fp16_res = D_kwargs.num_fp16_res = 4
    G_kwargs.synthesis_kwargs.conv_clamp = D_kwargs.conv_clamp = 256
    D_kwargs.epilogue_kwargs.mbstd_group_size = spec.mbstd
    augment_kwargs = E(class_name="training.augment.AugmentPipe", **BGC)

    # As training_loop.py.
    common_kwargs = dict(c_dim=0, img_resolution=res, img_channels=3)
    G = dnnlib.util.construct_class_by_name(**G_kwargs, **common_kwargs).train().requires_grad_(False)
    D = dnnlib.util.construct_class_by_name(**D_kwargs, **common_kwargs).train().requires_grad_(False)
    G_ema = copy.deepcopy(G).eval()
    augment_pipe = dnnlib.util.construct_class_by_name(**augment_kwargs).train().requires_grad_(False)
    augment_pipe.p.copy_(torch.as_tensor(0.2))
    # A little "training": G_ema's parameters and w_avg away from G's (a snapshot of a trained run
    # has them different; sizes are what matter here).
    gen = torch.Generator().manual_seed(1000 + args.seed)
    with torch.no_grad():
        for _, t in G_ema.named_parameters():
            t.add_(torch.randn(t.shape, generator=gen) * 0.01)
        G_ema.mapping.w_avg.add_(torch.randn(G_ema.mapping.w_avg.shape, generator=gen) * 0.5)

    snapshot_data = dict(training_set_kwargs=dict(training_set_kwargs))
    for name, module in [("G", G), ("D", D), ("G_ema", G_ema), ("augment_pipe", augment_pipe)]:
        if module is not None:
            module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
        snapshot_data[name] = module
        del module
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "network-snapshot-paper256.pkl")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(snapshot_data, f)
    os.replace(tmp, path)
    counts = {k: sum(p.numel() for p in m.parameters()) + sum(b.numel() for b in m.buffers())
              for k, m in snapshot_data.items() if isinstance(m, torch.nn.Module)}
    print(f"{path}: {os.path.getsize(path)} bytes; parameters + buffers: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))


def load(args):
    t0 = time.perf_counter()
    use_official(args.src)
    import legacy

    with open(args.pkl, "rb") as f:
        G = legacy.load_network_pkl(f)["G_ema"]
    t1 = time.perf_counter()
    torch.manual_seed(args.seed)
    z = torch.randn([1, G.z_dim])
    c = torch.zeros([1, G.c_dim])
    with torch.no_grad():
        x = G(z, c, noise_mode="const", force_fp32=True)
    t2 = time.perf_counter()
    img = ((x + 1) * 127.5).clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    import PIL.Image
    PIL.Image.fromarray(np.ascontiguousarray(img), "RGB").save(args.out)
    t3 = time.perf_counter()
    if args.verbose:
        print(f"load {t1 - t0:.3f} s, forward {t2 - t1:.3f} s, png {t3 - t2:.3f} s, threads {torch.get_num_threads()}",
              file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--src", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--res", type=int, default=256)
    m.add_argument("--seed", type=int, default=0)
    l = sub.add_parser("load")
    l.add_argument("pkl")
    l.add_argument("--src", required=True)
    l.add_argument("--out", required=True)
    l.add_argument("--seed", type=int, default=0)
    l.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    make(args) if args.cmd == "make" else load(args)


if __name__ == "__main__":
    main()
