"""Reference for gantry's DiffAugment: the official DiffAugment_pytorch.py (mit-han-lab/
data-efficient-gans, DiffAugment-stylegan2-pytorch version), with each op's random draw passed in
instead of drawn, in float64. For each op: the output and the gradient of sum(y * gy) w.r.t. x;
then the whole `color,translation,cutout` chain with the same draws."""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from backbone_common import load_inputs, save_outputs  # noqa: E402


def rand_brightness(x, r):
    x = x + (r - 0.5)
    return x


def rand_saturation(x, r):
    x_mean = x.mean(dim=1, keepdim=True)
    x = (x - x_mean) * (r * 2) + x_mean
    return x


def rand_contrast(x, r):
    x_mean = x.mean(dim=[1, 2, 3], keepdim=True)
    x = (x - x_mean) * (r + 0.5) + x_mean
    return x


def rand_translation(x, translation_x, translation_y, ratio=0.125):
    shift_x, shift_y = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    assert translation_x.abs().max() <= shift_x and translation_y.abs().max() <= shift_y
    grid_batch, grid_x, grid_y = torch.meshgrid(
        torch.arange(x.size(0), dtype=torch.long, device=x.device),
        torch.arange(x.size(2), dtype=torch.long, device=x.device),
        torch.arange(x.size(3), dtype=torch.long, device=x.device),
        indexing="ij",
    )
    grid_x = torch.clamp(grid_x + translation_x + 1, 0, x.size(2) + 1)
    grid_y = torch.clamp(grid_y + translation_y + 1, 0, x.size(3) + 1)
    x_pad = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    x = x_pad.permute(0, 2, 3, 1).contiguous()[grid_batch, grid_x, grid_y].permute(0, 3, 1, 2)
    return x


def rand_cutout(x, offset_x, offset_y, ratio=0.5):
    cutout_size = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    grid_batch, grid_x, grid_y = torch.meshgrid(
        torch.arange(x.size(0), dtype=torch.long, device=x.device),
        torch.arange(cutout_size[0], dtype=torch.long, device=x.device),
        torch.arange(cutout_size[1], dtype=torch.long, device=x.device),
        indexing="ij",
    )
    grid_x = torch.clamp(grid_x + offset_x - cutout_size[0] // 2, min=0, max=x.size(2) - 1)
    grid_y = torch.clamp(grid_y + offset_y - cutout_size[1] // 2, min=0, max=x.size(3) - 1)
    mask = torch.ones(x.size(0), x.size(2), x.size(3), dtype=x.dtype, device=x.device)
    mask[grid_batch, grid_x, grid_y] = 0
    x = x * mask.unsqueeze(1)
    return x


t = load_inputs()
ops = {
    "brightness": lambda x: rand_brightness(x, t["brightness.r"]),
    "saturation": lambda x: rand_saturation(x, t["saturation.r"]),
    "contrast": lambda x: rand_contrast(x, t["contrast.r"]),
    "translation": lambda x: rand_translation(x, t["translation.x"], t["translation.y"]),
    "cutout": lambda x: rand_cutout(x, t["cutout.x"], t["cutout.y"]),
}
out = {}
for name, op in ops.items():
    x = t["x"].clone().requires_grad_(True)
    y = op(x)
    (g,) = torch.autograd.grad((y * t["gy"]).sum(), x)
    out[f"{name}.y"], out[f"{name}.grad"] = y, g

x = t["x"].clone().requires_grad_(True)
y = x
for name in ["brightness", "saturation", "contrast", "translation", "cutout"]:
    y = ops[name](y)
y = y.contiguous()
(g,) = torch.autograd.grad((y * t["gy"]).sum(), x)
out["chain.y"], out["chain.grad"] = y, g
save_outputs(out)
