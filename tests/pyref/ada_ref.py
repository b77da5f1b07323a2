"""Reference for gantry's ADA plug-in: stylegan2-ada-pytorch's `training/augment.py` (AugmentPipe
with xflip, rotate90, xint, scale, rotate, aniso, xfrac, brightness, contrast, lumaflip, hue,
saturation at multiplier 1, the `bgc` pipeline and its subsets) and `upfirdn2d`'s reference path,
transcribed with every random draw passed in (`<op>.value`, `<op>.gate`) instead of drawn, in
float64, with torch's own grid_sample (what `grid_sample_gradfix` runs forward). Writes the
augmented batch and the gradient of sum(y * gy) w.r.t. x. Then the training loop's p heuristic
over a given sequence of real logits.

`draw_and_augment` is the same pipeline drawing its own numbers in the reference's order, in the
images' dtype, with a grid sampler that has a double backward (as `grid_sample_gradfix`): the
PyTorch side of the ADA benchmark (benches/stylegan2_step.py --ada-p)."""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from backbone_common import load_inputs, save_outputs  # noqa: E402

SYM6 = [0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148]


# dtype and device of the matrices being built (the images' during one `augment` call).
LIKE = {"dtype": torch.float64, "device": "cpu"}


def matrix(*rows, b):
    elems = [x if isinstance(x, torch.Tensor) else torch.full([b], float(x), **LIKE)
             for row in rows for x in row]
    return torch.stack(elems, dim=-1).reshape([b, len(rows), -1])


def translate2d(tx, ty, b):
    return matrix([1, 0, tx], [0, 1, ty], [0, 0, 1], b=b)


def scale2d(sx, sy, b):
    return matrix([sx, 0, 0], [0, sy, 0], [0, 0, 1], b=b)


def rotate2d(t, b):
    return matrix([torch.cos(t), torch.sin(-t), 0], [torch.sin(t), torch.cos(t), 0], [0, 0, 1], b=b)


def translate3d(tx, ty, tz, b):
    return matrix([1, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1], b=b)


def scale3d(sx, sy, sz, b):
    return matrix([sx, 0, 0, 0], [0, sy, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1], b=b)


def rotate3d(v, t, b):
    vx, vy, vz = v[0], v[1], v[2]
    s, c = torch.sin(t), torch.cos(t)
    cc = 1 - c
    return matrix([vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
                  [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
                  [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
                  [0, 0, 0, 1], b=b)


def upfirdn2d_ref(x, f, up, down, pad, flip_filter, gain):
    """upfirdn2d._upfirdn2d_ref with a separable 1-D filter."""
    n, c, h, w = x.shape
    x = x.reshape([n, c, h, 1, w, 1])
    x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
    x = x.reshape([n, c, h * up, w * up])
    px0, px1, py0, py1 = pad
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    f = f * (gain ** (f.ndim / 2))
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f[None, None].repeat([c, 1, 1])
    x = F.conv2d(x, f.unsqueeze(2), groups=c)
    x = F.conv2d(x, f.unsqueeze(3), groups=c)
    return x[:, :, ::down, ::down]


class _GridSample(torch.autograd.Function):
    """Bilinear, zero padding, align_corners=False; backward through `_GridSampleBackward` so
    that R1 can differentiate it twice (torch's own grid sampler cannot)."""

    @staticmethod
    def forward(ctx, x, grid):
        ctx.save_for_backward(x, grid)
        return torch.grid_sampler_2d(x, grid, 0, 0, False)

    @staticmethod
    def backward(ctx, gy):
        x, grid = ctx.saved_tensors
        return _GridSampleBackward.apply(gy, x, grid), None


class _GridSampleBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gy, x, grid):
        ctx.save_for_backward(grid)
        gx, _ = torch.ops.aten.grid_sampler_2d_backward(gy, x, grid, 0, 0, False, [True, False])
        return gx

    @staticmethod
    def backward(ctx, ggx):
        (grid,) = ctx.saved_tensors
        return _GridSample.apply(ggx, grid), None, None


def draw_and_augment(images, p):
    """The `bgc` pipeline at probability p, drawing like the reference."""
    b, c = images.shape[:2]
    kw = {"device": images.device}
    d = {}
    specs = [("xflip", [b], False, [b]), ("rotate90", [b], False, [b]), ("xint", [b, 2], False, [b, 1]),
             ("scale", [b], True, [b]), ("rotate_pre", [b], False, [b]), ("aniso", [b], True, [b]),
             ("rotate_post", [b], False, [b]), ("xfrac", [b, 2], True, [b, 1]),
             ("brightness", [b], True, [b]), ("contrast", [b], True, [b]),
             ("lumaflip", [b, 1, 1], False, [b, 1, 1])]
    if c > 1:
        specs += [("hue", [b], False, [b]), ("saturation", [b, 1, 1], True, [b, 1, 1])]
    for op, shape, normal, gate in specs:
        d[f"{op}.value"] = torch.randn(shape, **kw) if normal else torch.rand(shape, **kw)
        d[f"{op}.gate"] = torch.rand(gate, **kw)
    return augment(images, d, p, True, True, True, grid_sample=_GridSample.apply)


def _grid_sample(x, grid):
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment(images, d, p, blit, geom, color, color_mult=1.0, cutout=0.0, grid_sample=_grid_sample):
    b, c, h, w = images.shape
    LIKE.update(dtype=images.dtype, device=images.device)
    d = {k: v.to(images.dtype) for k, v in d.items()}
    I3 = torch.eye(3, **LIKE)
    G = I3.expand(b, 3, 3)
    if blit:
        i = torch.floor(d["xflip.value"] * 2)
        i = torch.where(d["xflip.gate"] < p, i, torch.zeros_like(i))
        G = G @ scale2d(1 / (1 - 2 * i), 1, b)
        i = torch.floor(d["rotate90.value"] * 4)
        i = torch.where(d["rotate90.gate"] < p, i, torch.zeros_like(i))
        G = G @ rotate2d(np.pi / 2 * i, b)
        t = (d["xint.value"] * 2 - 1) * 0.125
        t = torch.where(d["xint.gate"] < p, t, torch.zeros_like(t))
        G = G @ translate2d(-torch.round(t[:, 0] * w), -torch.round(t[:, 1] * h), b)
    if geom:
        s = torch.exp2(d["scale.value"] * 0.2)
        s = torch.where(d["scale.gate"] < p, s, torch.ones_like(s))
        G = G @ scale2d(1 / s, 1 / s, b)
        p_rot = 1 - np.sqrt(min(max(1 - p, 0), 1))
        theta = (d["rotate_pre.value"] * 2 - 1) * np.pi
        theta = torch.where(d["rotate_pre.gate"] < p_rot, theta, torch.zeros_like(theta))
        G = G @ rotate2d(theta, b)
        s = torch.exp2(d["aniso.value"] * 0.2)
        s = torch.where(d["aniso.gate"] < p, s, torch.ones_like(s))
        G = G @ scale2d(1 / s, s, b)
        theta = (d["rotate_post.value"] * 2 - 1) * np.pi
        theta = torch.where(d["rotate_post.gate"] < p_rot, theta, torch.zeros_like(theta))
        G = G @ rotate2d(theta, b)
        t = d["xfrac.value"] * 0.125
        t = torch.where(d["xfrac.gate"] < p, t, torch.zeros_like(t))
        G = G @ translate2d(-t[:, 0] * w, -t[:, 1] * h, b)
    if blit or geom:
        f = torch.tensor(SYM6, **LIKE)
        f = f / f.sum()
        hz_pad = f.shape[0] // 4
        cx, cy = (w - 1) / 2, (h - 1) / 2
        cp = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], **LIKE)
        cp = G @ cp.t()
        margin = cp[:, :2, :].permute(1, 0, 2).flatten(1)
        margin = torch.cat([-margin, margin]).max(dim=1).values
        margin = margin + torch.tensor([hz_pad * 2 - cx, hz_pad * 2 - cy] * 2, **LIKE)
        margin = margin.max(torch.zeros(4, **LIKE))
        margin = margin.min(torch.tensor([w - 1, h - 1] * 2, **LIKE))
        mx0, my0, mx1, my1 = [int(v) for v in margin.ceil()]
        images = F.pad(images, [mx0, mx1, my0, my1], mode="reflect")
        G = translate2d((mx0 - mx1) / 2, (my0 - my1) / 2, b) @ G
        fw = f.shape[0]
        images = upfirdn2d_ref(images, f, 2, 1, [(fw + 1) // 2, (fw - 2) // 2] * 2, False, 4)
        G = scale2d(2, 2, b) @ G @ scale2d(1 / 2, 1 / 2, b)
        G = translate2d(-0.5, -0.5, b) @ G @ translate2d(0.5, 0.5, b)
        shape = [b, c, (h + hz_pad * 2) * 2, (w + hz_pad * 2) * 2]
        G = scale2d(2 / images.shape[3], 2 / images.shape[2], b) @ G @ scale2d(shape[3] / 2, shape[2] / 2, b)
        grid = F.affine_grid(G[:, :2, :], shape, align_corners=False)
        images = grid_sample(images, grid)
        pad = -hz_pad * 2
        images = upfirdn2d_ref(images, f, 1, 2, [pad + (fw - 1) // 2, pad + (fw - 2) // 2] * 2, True, 1)
    if color:
        I4 = torch.eye(4, **LIKE)
        C = I4.expand(b, 4, 4)
        br = d["brightness.value"] * 0.2
        br = torch.where(d["brightness.gate"] < color_mult * p, br, torch.zeros_like(br))
        C = translate3d(br, br, br, b) @ C
        co = torch.exp2(d["contrast.value"] * 0.5)
        co = torch.where(d["contrast.gate"] < color_mult * p, co, torch.ones_like(co))
        C = scale3d(co, co, co, b) @ C
        v = torch.tensor([1, 1, 1, 0], **LIKE) / np.sqrt(3)
        i = torch.floor(d["lumaflip.value"] * 2)
        i = torch.where(d["lumaflip.gate"] < color_mult * p, i, torch.zeros_like(i))
        C = (I4 - 2 * v.ger(v) * i) @ C
        if c > 1:
            theta = (d["hue.value"] * 2 - 1) * np.pi
            theta = torch.where(d["hue.gate"] < color_mult * p, theta, torch.zeros_like(theta))
            C = rotate3d(v, theta, b) @ C
            s = torch.exp2(d["saturation.value"] * 1.0)
            s = torch.where(d["saturation.gate"] < color_mult * p, s, torch.ones_like(s))
            C = (v.ger(v) + (I4 - v.ger(v)) * s) @ C
        images = images.reshape([b, c, h * w])
        if c == 3:
            images = C[:, :3, :3] @ images + C[:, :3, 3:]
        else:
            C = C[:, :3, :].mean(dim=1, keepdims=True)
            images = images * C[:, :, :3].sum(dim=2, keepdims=True) + C[:, :, 3:]
        images = images.reshape([b, c, h, w])
    if cutout > 0:
        size = torch.full([b, 2, 1, 1, 1], 0.5, **LIKE)
        size = torch.where(d["cutout.gate"] < cutout * p, size, torch.zeros_like(size))
        center = d["cutout.value"]
        coord_x = torch.arange(w, **LIKE).reshape([1, 1, 1, -1])
        coord_y = torch.arange(h, **LIKE).reshape([1, 1, -1, 1])
        mask_x = (((coord_x + 0.5) / w - center[:, 0]).abs() >= size[:, 0] / 2)
        mask_y = (((coord_y + 0.5) / h - center[:, 1]).abs() >= size[:, 1] / 2)
        mask = torch.logical_or(mask_x, mask_y).to(images.dtype)
        images = images * mask
    return images


def controller(logits, p, target, kimg, interval):
    """training_loop.py's ADA heuristic: after every `interval` steps, the mean of the signs
    reported since the last update moves p by batch * interval / (kimg * 1000)."""
    out, signs = [], []
    for step, batch in enumerate(logits, start=1):
        signs.append(torch.sign(batch))
        if step % interval == 0:
            mean = torch.cat(signs).mean().item()
            adjust = np.sign(mean - target) * (batch.numel() * interval) / (kimg * 1000)
            p = max(p + adjust, 0.0)
            signs = []
        out.append(p)
    return torch.tensor(out, dtype=torch.float64)


def main():
    t = load_inputs()
    out = {}
    for case in sorted({k.split("/")[0] for k in t if "/" in k}):
        d = {k.split("/", 1)[1]: v for k, v in t.items() if k.startswith(case + "/")}
        blit, geom, color = [bool(v) for v in d["pipeline"].tolist()]
        color_mult, cutout = d["mult"].tolist()
        p = d["p"].item()
        x = d["x"].clone().requires_grad_(True)
        y = augment(x, d, p, blit, geom, color, color_mult, cutout)
        (g,) = torch.autograd.grad((y * d["gy"]).sum(), [x])
        out[f"{case}/y"] = y
        out[f"{case}/grad"] = g
    c = t["ctl.params"].tolist()
    out["ctl.p"] = controller(t["ctl.logits"], c[0], c[1], c[2], int(c[3]))
    save_outputs(out)


if __name__ == "__main__":
    main()
