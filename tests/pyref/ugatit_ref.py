"""Reference for gantry's U-GAT-IT (crates/gantry/src/translate): a transcription of the official
PyTorch networks (znxlwm/UGATIT-pytorch networks.py: ResnetGenerator with CAM, AdaLIN and ILN;
Discriminator with spectral norm and CAM) and of one training iteration of UGATIT.py (D step,
then G step, least-squares, cycle, identity and CAM losses), in float64, loaded with gantry's
weights. Every gantry key must fill one tensor of the transcription and the other way round
(torch's `weight_orig` of a spectrally normalised layer is gantry's `weight`).

Cases (npz prefixes): `gen/` (one generator: image, CAM logits, heat-map, and the gradients of
sum(out * g) for the three outputs w.r.t. the input and every parameter), `dis/` (one
discriminator, the same), `iter/` (two generators and four discriminators: the D loss and its
parameter gradients, then the G loss after D's Adam-free step is skipped, and its gradients)."""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from backbone_common import load_inputs, save_outputs  # noqa: E402

SN = nn.utils.spectral_norm


class ResBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, 1, 0, bias=False), nn.InstanceNorm2d(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, 1, 0, bias=False), nn.InstanceNorm2d(dim))

    def forward(self, x):
        return x + self.conv_block(x)


def lin(x, rho, eps=1e-5):
    in_mean, in_var = torch.mean(x, dim=[2, 3], keepdim=True), torch.var(x, dim=[2, 3], keepdim=True)
    out_in = (x - in_mean) / torch.sqrt(in_var + eps)
    ln_mean, ln_var = torch.mean(x, dim=[1, 2, 3], keepdim=True), torch.var(x, dim=[1, 2, 3], keepdim=True)
    out_ln = (x - ln_mean) / torch.sqrt(ln_var + eps)
    r = rho.expand(x.shape[0], -1, -1, -1)
    return r * out_in + (1 - r) * out_ln


class AdaILN(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.rho = nn.Parameter(torch.full((1, c, 1, 1), 0.9))

    def forward(self, x, gamma, beta):
        return lin(x, self.rho) * gamma.unsqueeze(2).unsqueeze(3) + beta.unsqueeze(2).unsqueeze(3)


class ILN(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.rho = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.ones(1, c, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x):
        n = x.shape[0]
        return lin(x, self.rho) * self.gamma.expand(n, -1, -1, -1) + self.beta.expand(n, -1, -1, -1)


class AdaILNBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.pad1, self.conv1, self.norm1 = nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, 1, 0, bias=False), AdaILN(dim)
        self.pad2, self.conv2, self.norm2 = nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, 1, 0, bias=False), AdaILN(dim)

    def forward(self, x, gamma, beta):
        out = F.relu(self.norm1(self.conv1(self.pad1(x)), gamma, beta))
        return self.norm2(self.conv2(self.pad2(out)), gamma, beta) + x


def cam(x, gap_fc, gmp_fc):
    """The reference's CAM: the re-weighting uses the first parameter (weight_orig under SN)."""
    gap = F.adaptive_avg_pool2d(x, 1)
    gap_logit = gap_fc(gap.view(x.shape[0], -1))
    gap = x * list(gap_fc.parameters())[0].unsqueeze(2).unsqueeze(3)
    gmp = F.adaptive_max_pool2d(x, 1)
    gmp_logit = gmp_fc(gmp.view(x.shape[0], -1))
    gmp = x * list(gmp_fc.parameters())[0].unsqueeze(2).unsqueeze(3)
    return torch.cat([gap, gmp], 1), torch.cat([gap_logit, gmp_logit], 1)


class Generator(nn.Module):
    def __init__(self, nc, ngf, n_blocks, size, light):
        super().__init__()
        self.light, self.n_blocks = light, n_blocks
        down = [nn.ReflectionPad2d(3), nn.Conv2d(nc, ngf, 7, 1, 0, bias=False), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        for i in range(2):
            m = 2 ** i
            down += [nn.ReflectionPad2d(1), nn.Conv2d(ngf * m, ngf * m * 2, 3, 2, 0, bias=False),
                     nn.InstanceNorm2d(ngf * m * 2), nn.ReLU(True)]
        c = ngf * 4
        down += [ResBlock(c) for _ in range(n_blocks)]
        self.DownBlock = nn.Sequential(*down)
        self.gap_fc, self.gmp_fc = nn.Linear(c, 1, bias=False), nn.Linear(c, 1, bias=False)
        self.conv1x1 = nn.Conv2d(2 * c, c, 1, 1, bias=True)
        fc_in = c if light else size // 4 * size // 4 * c
        self.FC = nn.Sequential(nn.Linear(fc_in, c, bias=False), nn.ReLU(True), nn.Linear(c, c, bias=False), nn.ReLU(True))
        self.gamma, self.beta = nn.Linear(c, c, bias=False), nn.Linear(c, c, bias=False)
        for i in range(n_blocks):
            setattr(self, f"UpBlock1_{i + 1}", AdaILNBlock(c))
        up = []
        for i in range(2):
            m = 2 ** (2 - i)
            up += [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1),
                   nn.Conv2d(ngf * m, ngf * m // 2, 3, 1, 0, bias=False), ILN(ngf * m // 2), nn.ReLU(True)]
        up += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, nc, 7, 1, 0, bias=False), nn.Tanh()]
        self.UpBlock2 = nn.Sequential(*up)

    def forward(self, x):
        x = self.DownBlock(x)
        x, cam_logit = cam(x, self.gap_fc, self.gmp_fc)
        x = F.relu(self.conv1x1(x))
        heatmap = torch.sum(x, dim=1, keepdim=True)
        x_ = F.adaptive_avg_pool2d(x, 1).view(x.shape[0], -1) if self.light else x.view(x.shape[0], -1)
        x_ = self.FC(x_)
        gamma, beta = self.gamma(x_), self.beta(x_)
        for i in range(self.n_blocks):
            x = getattr(self, f"UpBlock1_{i + 1}")(x, gamma, beta)
        return self.UpBlock2(x), cam_logit, heatmap


class Discriminator(nn.Module):
    def __init__(self, nc, ndf, n_layers):
        super().__init__()
        model = [nn.ReflectionPad2d(1), SN(nn.Conv2d(nc, ndf, 4, 2, 0, bias=True)), nn.LeakyReLU(0.2, True)]
        for i in range(1, n_layers - 2):
            m = 2 ** (i - 1)
            model += [nn.ReflectionPad2d(1), SN(nn.Conv2d(ndf * m, ndf * m * 2, 4, 2, 0, bias=True)), nn.LeakyReLU(0.2, True)]
        m = 2 ** (n_layers - 3)
        model += [nn.ReflectionPad2d(1), SN(nn.Conv2d(ndf * m, ndf * m * 2, 4, 1, 0, bias=True)), nn.LeakyReLU(0.2, True)]
        c = ndf * 2 ** (n_layers - 2)
        self.gap_fc, self.gmp_fc = SN(nn.Linear(c, 1, bias=False)), SN(nn.Linear(c, 1, bias=False))
        self.conv1x1 = nn.Conv2d(2 * c, c, 1, 1, bias=True)
        self.pad = nn.ReflectionPad2d(1)
        self.conv = SN(nn.Conv2d(c, 1, 4, 1, 0, bias=False))
        self.model = nn.Sequential(*model)

    def forward(self, x):
        x = self.model(x)
        x, cam_logit = cam(x, self.gap_fc, self.gmp_fc)
        x = F.leaky_relu(self.conv1x1(x), 0.2)
        heatmap = torch.sum(x, dim=1, keepdim=True)
        return self.conv(self.pad(x)), cam_logit, heatmap


def load(module, t, prefix):
    """Copies gantry's tensors (`prefix` + gantry key) into every parameter and buffer."""
    module = module.double()
    sd = module.state_dict()
    used = set()
    with torch.no_grad():
        for k, v in sd.items():
            src = prefix + (k[: -len("_orig")] if k.endswith("weight_orig") else k)
            assert src in t, f"gantry has no {src}"
            assert t[src].shape == v.shape, f"{src}: {tuple(t[src].shape)} vs {tuple(v.shape)}"
            v.copy_(t[src])
            used.add(src)
    extra = [k for k in t if k.startswith(prefix) and k not in used and not k[len(prefix):].startswith("_")]
    assert not extra, f"gantry keys the reference lacks: {extra}"
    return module


def grads(out, params):
    return torch.autograd.grad(out, params, allow_unused=True)


def main():
    t = load_inputs()
    cfg = {k: int(v) for k, v in zip(["ch", "n_res", "size", "light", "g_layers", "l_layers"], t["cfg"].tolist())}
    ch, size = cfg["ch"], cfg["size"]
    out = {}

    # One generator and one discriminator of each kind, forward and backward.
    g = load(Generator(3, ch, cfg["n_res"], size, bool(cfg["light"])), t, "gen/")
    x = t["gen/_x"].clone().requires_grad_(True)
    img, cl, hm = g(x)
    s = (img * t["gen/_gi"]).sum() + (cl * t["gen/_gc"]).sum() + (hm * t["gen/_gh"]).sum()
    names = [n for n, _ in g.named_parameters()]
    gs = grads(s, [x] + [p for _, p in g.named_parameters()])
    out.update({"gen/image": img, "gen/cam": cl, "gen/heatmap": hm, "gen/grad_x": gs[0]})
    for n, gr in zip(names, gs[1:]):
        out["gen/grad/" + n] = gr
    for kind, layers in [("dg", cfg["g_layers"]), ("dl", cfg["l_layers"])]:
        d = load(Discriminator(3, ch, layers), t, f"{kind}/")
        x = t[f"{kind}/_x"].clone().requires_grad_(True)
        lo, cl, hm = d(x)
        s = (lo * t[f"{kind}/_go"]).sum() + (cl * t[f"{kind}/_gc"]).sum() + (hm * t[f"{kind}/_gh"]).sum()
        params = list(d.named_parameters())
        gs = grads(s, [x] + [p for _, p in params])
        out.update({f"{kind}/logits": lo, f"{kind}/cam": cl, f"{kind}/heatmap": hm, f"{kind}/grad_x": gs[0]})
        for (n, _), gr in zip(params, gs[1:]):
            out[f"{kind}/grad/" + n.replace("weight_orig", "weight")] = gr
        out[f"{kind}/u_after"] = dict(d.named_buffers())["model.1.weight_u"]

    # One iteration of UGATIT.py with weights adv 1, cycle 10, identity 10, cam 1000.
    ab = load(Generator(3, ch, cfg["n_res"], size, bool(cfg["light"])), t, "iter/g_ab/")
    ba = load(Generator(3, ch, cfg["n_res"], size, bool(cfg["light"])), t, "iter/g_ba/")
    ga = load(Discriminator(3, ch, cfg["g_layers"]), t, "iter/ga/")
    gb = load(Discriminator(3, ch, cfg["g_layers"]), t, "iter/gb/")
    la = load(Discriminator(3, ch, cfg["l_layers"]), t, "iter/la/")
    lb = load(Discriminator(3, ch, cfg["l_layers"]), t, "iter/lb/")
    real_a, real_b = t["iter/_a"], t["iter/_b"]
    mse, l1, bce = nn.MSELoss(), nn.L1Loss(), nn.BCEWithLogitsLoss()
    fake_a2b, _, _ = ab(real_a)
    fake_b2a, _, _ = ba(real_b)
    r = {n: d(x) for n, d, x in [("ga", ga, real_a), ("la", la, real_a), ("gb", gb, real_b), ("lb", lb, real_b)]}
    f = {n: d(x) for n, d, x in [("ga", ga, fake_b2a), ("la", la, fake_b2a), ("gb", gb, fake_a2b), ("lb", lb, fake_a2b)]}
    d_loss = 0
    for n in ["ga", "la", "gb", "lb"]:
        (rl, rc, _), (fl, fc, _) = r[n], f[n]
        d_loss = d_loss + mse(rl, torch.ones_like(rl)) + mse(fl, torch.zeros_like(fl)) \
            + mse(rc, torch.ones_like(rc)) + mse(fc, torch.zeros_like(fc))
    dparams = [(f"{n}/" + k.replace("weight_orig", "weight"), p) for n, d in [("ga", ga), ("gb", gb), ("la", la), ("lb", lb)]
               for k, p in d.named_parameters()]
    out["iter/d_loss"] = d_loss.detach().reshape(1)
    for (k, _), gr in zip(dparams, grads(d_loss, [p for _, p in dparams])):
        out["iter/d_grad/" + k] = gr
    # G step (D unchanged: the test compares gradients, not an optimiser step).
    fake_a2b, a2b_cam, _ = ab(real_a)
    fake_b2a, b2a_cam, _ = ba(real_b)
    a2b2a, _, _ = ba(fake_a2b)
    b2a2b, _, _ = ab(fake_b2a)
    a2a, a2a_cam, _ = ba(real_a)
    b2b, b2b_cam, _ = ab(real_b)
    adv = 0
    for d, x in [(ga, fake_b2a), (la, fake_b2a), (gb, fake_a2b), (lb, fake_a2b)]:
        lo, cl, _ = d(x)
        adv = adv + mse(lo, torch.ones_like(lo)) + mse(cl, torch.ones_like(cl))
    g_loss = adv + 10 * (l1(a2b2a, real_a) + l1(b2a2b, real_b)) + 10 * (l1(a2a, real_a) + l1(b2b, real_b)) \
        + 1000 * (bce(b2a_cam, torch.ones_like(b2a_cam)) + bce(a2a_cam, torch.zeros_like(a2a_cam))
                  + bce(a2b_cam, torch.ones_like(a2b_cam)) + bce(b2b_cam, torch.zeros_like(b2b_cam)))
    gparams = [(f"{n}/{k}", p) for n, g in [("g_ab", ab), ("g_ba", ba)] for k, p in g.named_parameters()]
    out["iter/g_loss"] = g_loss.detach().reshape(1)
    for (k, _), gr in zip(gparams, grads(g_loss, [p for _, p in gparams])):
        out["iter/g_grad/" + k] = gr
    save_outputs({k: v for k, v in out.items() if v is not None})


if __name__ == "__main__":
    main()
