"""End-to-end reference for `gantry fid`: writes random FID-Inception weights in the legacy
torch.save format, two folders of PNG images, and pytorch-fid's own statistics of folder `a`
(`calculate_activation_statistics` over the folder's files, with pytorch-fid's Inception factory
pointed at the random network instead of the download). With a handful of images the covariance
is singular and pytorch-fid's FID itself fails ("Imaginary component"), so the end-to-end check is
on the statistics; the FID formula is checked against pytorch-fid in gantry-metrics' tests.
Usage: fid_cli.py WORKDIR  ->  WORKDIR/{weights.pth, a/, b/, ref_a.npz}"""
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from metrics_common import random_fid_inception  # noqa: E402
import pytorch_fid.inception  # noqa: E402
from pytorch_fid.fid_score import calculate_activation_statistics  # noqa: E402
from pytorch_fid.inception import InceptionV3  # noqa: E402

work = sys.argv[1]
net = random_fid_inception(seed=1)
torch.save(net.state_dict(), os.path.join(work, "weights.pth"), _use_new_zipfile_serialization=False)
rng = np.random.default_rng(0)
for name, shift in (("a", 0), ("b", 60)):
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    for i in range(10):
        base = rng.integers(0, 196, size=(1, 1, 3))
        img = np.clip(base + rng.integers(0, 60, size=(32, 32, 3)) + shift, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(d, f"{i:03d}.png"))
pytorch_fid.inception.fid_inception_v3 = lambda: net
model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
files = sorted(os.path.join(work, "a", f) for f in os.listdir(os.path.join(work, "a")))
mu, sigma = calculate_activation_statistics(files, model, batch_size=5, dims=2048, device="cpu", num_workers=0)
np.savez(os.path.join(work, "ref_a.npz"), mu=mu, sigma=sigma)
