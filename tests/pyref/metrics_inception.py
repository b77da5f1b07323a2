"""Random-weight FID Inception fixtures for gantry-metrics' parity tests.

Usage: metrics_inception.py OUT_DIR [N_IMAGES]

Writes to OUT_DIR:
  weights_legacy.pth  state dict, legacy torch.save (the format of pt_inception-*.pth)
  weights_zip.pth     the same state dict, zip torch.save
  keys.tsv            its key list (compare with fid-inception-keys.tsv)
  images.npy          uint8 [N, 3, 32, 32]
  x299.npy            pytorch-fid's preprocessing of images (float32 [N, 3, 299, 299])
  pool_net.npy / logits_net.npy    pytorch-fid's network on x299 (no resize, no normalisation)
  pool_pfid.npy / logits_pfid.npy  pytorch-fid InceptionV3 end to end on images / 255
  pool_tf.npy / logits_tf.npy      torch-fidelity's FeatureExtractorInceptionV3 on images
Logits are pool3 @ fc.weight.T (no bias), as torch-fidelity's 'logits_unbiased'.
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

import pytorch_fid.inception as pfi
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from metrics_common import keys_tsv, random_fid_inception, save_npy


def main():
    out = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    net = random_fid_inception(seed=0)
    sd = net.state_dict()
    torch.save(sd, os.path.join(out, "weights_legacy.pth"), _use_new_zipfile_serialization=False)
    torch.save(sd, os.path.join(out, "weights_zip.pth"))
    with open(os.path.join(out, "keys.tsv"), "w") as f:
        f.write(keys_tsv(sd))

    rng = np.random.RandomState(1)
    images = rng.randint(0, 256, size=(n, 3, 32, 32)).astype(np.uint8)
    save_npy(os.path.join(out, "images.npy"), images)
    fc_t = net.fc.weight.T

    # pytorch-fid's own wrapper, with our random network in place of the download.
    pfi.fid_inception_v3 = lambda: net
    with torch.no_grad():
        x = torch.from_numpy(images).float() / 255  # ToTensor()
        e2e = pfi.InceptionV3([3], resize_input=True, normalize_input=True).eval()
        pool = e2e(x)[0].squeeze(3).squeeze(2)
        save_npy(os.path.join(out, "pool_pfid.npy"), pool.numpy())
        save_npy(os.path.join(out, "logits_pfid.npy"), (pool @ fc_t).numpy())

        x299 = 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
        save_npy(os.path.join(out, "x299.npy"), x299.numpy())
        bare = pfi.InceptionV3([3], resize_input=False, normalize_input=False).eval()
        pool = bare(x299)[0].squeeze(3).squeeze(2)
        save_npy(os.path.join(out, "pool_net.npy"), pool.numpy())
        save_npy(os.path.join(out, "logits_net.npy"), (pool @ fc_t).numpy())

        fe = FeatureExtractorInceptionV3(
            "inception-v3-compat",
            ["2048", "logits_unbiased"],
            feature_extractor_weights_path=os.path.join(out, "weights_legacy.pth"),
        ).eval()
        pool, logits = fe(torch.from_numpy(images))
        save_npy(os.path.join(out, "pool_tf.npy"), pool.numpy())
        save_npy(os.path.join(out, "logits_tf.npy"), logits.numpy())


if __name__ == "__main__":
    main()
