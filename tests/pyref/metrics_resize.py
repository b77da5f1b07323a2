"""Reference outputs of the three preprocessing pipelines gantry-metrics reproduces.

Usage: metrics_resize.py OUT_DIR

For each input image set `<name>.npy` (uint8 [B, C, H, W]) writes `<name>_<mode>.npy`
(float32 [B, 3, 299, 299], the network input):
  pytorch-fid  ToTensor (x / 255), F.interpolate(bilinear, align_corners=False), 2x - 1
               (the first lines of pytorch_fid.inception.InceptionV3.forward)
  tf           torch-fidelity's own interpolate_bilinear_2d_like_tensorflow1x on x.float(),
               then (x - 128) / 128 (FeatureExtractorInceptionV3.forward)
  clean        clean-fid's make_resizer("PIL", False, "bicubic", (299, 299)): per channel
               Image.fromarray(float32, mode='F').resize(BICUBIC), clip to [0, 255];
               then (x - 128) / 128 (cleanfid's InceptionV3W)
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

from metrics_common import save_npy

SIZE = (299, 299)


def pytorch_fid(u8):
    x = torch.from_numpy(u8).float() / 255
    x = F.interpolate(x, size=SIZE, mode="bilinear", align_corners=False)
    return (2 * x - 1).numpy()


def tf(u8):
    x = interpolate_bilinear_2d_like_tensorflow1x(
        torch.from_numpy(u8).float(), size=SIZE, align_corners=False
    )
    return ((x - 128) / 128).numpy()


def clean(u8):
    def resize_single_channel(x_np):
        img = Image.fromarray(x_np.astype(np.float32), mode="F")
        img = img.resize(SIZE, resample=Image.BICUBIC)
        return np.asarray(img).clip(0, 255).reshape(SIZE[1], SIZE[0], 1)

    out = []
    for img in u8:
        hwc = np.transpose(img, (1, 2, 0))
        x = np.concatenate([resize_single_channel(hwc[:, :, c]) for c in range(3)], axis=2)
        x = torch.from_numpy(x.astype(np.float32)).permute(2, 0, 1)
        out.append(((x - 128) / 128).numpy())
    return np.stack(out)


def main():
    out = sys.argv[1]
    rng = np.random.RandomState(23)
    yy, xx = np.mgrid[0:64, 0:48]
    smooth = (127 + 100 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.uint8)
    inputs = {
        "small": rng.randint(0, 256, size=(2, 3, 17, 23)).astype(np.uint8),
        "smooth": np.stack([smooth, smooth[::-1], 255 - smooth])[None],
        "large": rng.randint(0, 256, size=(1, 3, 400, 320)).astype(np.uint8),
        "exact": rng.randint(0, 256, size=(1, 3, 299, 299)).astype(np.uint8),
    }
    for name, u8 in inputs.items():
        save_npy(os.path.join(out, f"{name}.npy"), u8)
        for mode, fn in [("pytorch-fid", pytorch_fid), ("tf", tf), ("clean", clean)]:
            save_npy(os.path.join(out, f"{name}_{mode}.npy"), fn(u8).astype(np.float32))


if __name__ == "__main__":
    main()
