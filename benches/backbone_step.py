"""PyTorch twin of `gantry bench --config {sngan-cifar, wgangp-resnet-cifar, biggan-cifar}`: one
training step of the same network with the same recipe, on a fixed real batch, with the same step
structure as benches/gan_step.py (n_dis D steps, each with a fresh G forward under no_grad, then a
G step with D's requires_grad off, then the EMA update when the preset keeps an EMA generator).

- sngan:  G 256 ch (BN), D 128 ch with spectral_norm everywhere, sum pooling, hinge, n_dis 5,
          Adam(2e-4, 0, 0.9), no EMA.
- wgangp: G and D 128 ch, no SN, mean pooling, Wasserstein + GP 10, n_dis 5, Adam(1e-4, 0, 0.9),
          no EMA.
- biggan: G and D 256 ch, conditional BN with per-class gain and bias tables in every block (the
          FQ-GAN CIFAR script's G, without BigGAN's shared embedding), projection D, SN in G and D,
          hinge, n_dis 4, Adam(2e-4, 0, 0.999), EMA 0.9999 with gantry's ramp-up. As in gantry's
          training loop (and BigGAN-PyTorch), fakes get freshly drawn random labels in every step.

Prints one JSON line: {"what", "threads", "steps", "median_ms", "mean_ms", "min_ms", "peak_rss_mib",
"g_params", "d_params"}.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import spectral_norm

from bench_common import ema_update, parser, setup, time_and_report

p = parser(batch=64)
p.add_argument("--arch", choices=["sngan", "wgangp", "biggan"], required=True)
p.add_argument("--classes", type=int, default=3, help="class count of the data (gantry bench uses shapes: 3)")
args = p.parse_args()
dev = setup(args)
B, RES, NZ = args.batch, 32, 128
RECIPES = {
    "sngan": dict(ngf=256, ndf=128, g_sn=False, d_sn=True, mean_pool=False, loss="hinge", n_dis=5, lr=2e-4, betas=(0.0, 0.9), ema=False),
    "wgangp": dict(ngf=128, ndf=128, g_sn=False, d_sn=False, mean_pool=True, loss="wgan-gp", n_dis=5, lr=1e-4, betas=(0.0, 0.9), ema=False),
    "biggan": dict(ngf=256, ndf=256, g_sn=True, d_sn=True, mean_pool=False, loss="hinge", n_dis=4, lr=2e-4, betas=(0.0, 0.999), ema=True),
}
R = RECIPES[args.arch]
COND = args.arch == "biggan"


def init_(m, residual):
    """gantry's `model.init`: glorot for the ResNets, N(0, 0.02) + PyTorch default biases for BigGAN."""
    if COND:
        nn.init.normal_(m.weight, 0.0, 0.02)
    else:
        nn.init.xavier_uniform_(m.weight, math.sqrt(2) if residual else 1.0)
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
    return m


def layer(m, sn, residual=False):
    m = init_(m, residual)
    return spectral_norm(m) if sn else m


def conv(cin, cout, k, sn, residual=False, bias=True):
    return layer(nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias), sn, residual)


class CCBN(nn.Module):
    """BigGAN-PyTorch `ccbn` without G_shared: gain and bias are nn.Embedding tables (never SN'd)."""

    def __init__(self, c, classes):
        super().__init__()
        self.gain = init_(nn.Embedding(classes, c), False)
        self.bias = init_(nn.Embedding(classes, c), False)
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))

    def forward(self, x, y):
        gain = (1 + self.gain(y)).view(y.size(0), -1, 1, 1)
        bias = self.bias(y).view(y.size(0), -1, 1, 1)
        return F.batch_norm(x, self.running_mean, self.running_var, None, None, self.training, 0.1, 1e-5) * gain + bias


class BN(nn.BatchNorm2d):
    def forward(self, x, y=None):
        return super().forward(x)


class GBlock(nn.Module):
    def __init__(self, c, sn, classes):
        super().__init__()
        norm = (lambda: CCBN(c, classes)) if classes else (lambda: BN(c))
        self.bn1, self.conv1 = norm(), conv(c, c, 3, sn, True)
        self.bn2, self.conv2 = norm(), conv(c, c, 3, sn, True)
        self.conv_sc = conv(c, c, 1, sn)

    def forward(self, x, y):
        h = self.conv1(F.interpolate(F.relu(self.bn1(x, y)), scale_factor=2))
        h = self.conv2(F.relu(self.bn2(h, y)))
        return h + self.conv_sc(F.interpolate(x, scale_factor=2))


class G(nn.Module):
    def __init__(self):
        super().__init__()
        c, sn = R["ngf"], R["g_sn"]
        self.c = c
        self.linear = layer(nn.Linear(NZ, 16 * c), sn)
        self.blocks = nn.ModuleList([GBlock(c, sn, args.classes if COND else 0) for _ in range(3)])
        self.out_bn = nn.BatchNorm2d(c)
        self.out_conv = conv(c, 3, 3, sn)

    def forward(self, z, labels):
        y = labels if COND else None
        h = self.linear(z).view(-1, self.c, 4, 4)
        for b in self.blocks:
            h = b(h, y)
        return torch.tanh(self.out_conv(F.relu(self.out_bn(h))))


class DBlock(nn.Module):
    def __init__(self, cin, cout, sn, optimised, down):
        super().__init__()
        self.optimised, self.down = optimised, down
        self.conv1, self.conv2 = conv(cin, cout, 3, sn, True), conv(cout, cout, 3, sn, True)
        self.conv_sc = conv(cin, cout, 1, sn) if (down or cin != cout) else None

    def forward(self, x):
        h = self.conv2(F.relu(self.conv1(x if self.optimised else F.relu(x))))
        if self.down:
            h = F.avg_pool2d(h, 2)
        if self.optimised:
            s = self.conv_sc(F.avg_pool2d(x, 2))
        elif self.conv_sc is not None:
            s = F.avg_pool2d(self.conv_sc(x), 2)
        else:
            s = x
        return h + s


class D(nn.Module):
    def __init__(self):
        super().__init__()
        c, sn = R["ndf"], R["d_sn"]
        self.blocks = nn.Sequential(DBlock(3, c, sn, True, True), DBlock(c, c, sn, False, True), DBlock(c, c, sn, False, False), DBlock(c, c, sn, False, False))
        self.linear = layer(nn.Linear(c, 1), sn)
        if COND:
            self.embed = layer(nn.Embedding(args.classes, c), sn)

    def forward(self, x, labels):
        h = F.relu(self.blocks(x))
        h = h.mean([2, 3]) if R["mean_pool"] else h.sum([2, 3])
        out = self.linear(h).flatten()
        if COND:
            out = out + (self.embed(labels) * h).sum(1)
        return out


g, d = G().to(dev), D().to(dev)
g_ema = G().to(dev) if R["ema"] else None
if g_ema is not None:
    g_ema.load_state_dict(g.state_dict())
    g_ema.requires_grad_(False)
opt_g = torch.optim.Adam(g.parameters(), lr=R["lr"], betas=R["betas"])
opt_d = torch.optim.Adam(d.parameters(), lr=R["lr"], betas=R["betas"])
real = torch.rand(B, 3, RES, RES, device=dev) * 2 - 1
real_labels = torch.randint(args.classes, (B,), device=dev)
step_no = 0


def d_loss(lr_, lf_, x_real, x_fake, labels):
    if R["loss"] == "hinge":
        return F.relu(1 - lr_).mean() + F.relu(1 + lf_).mean()
    eps = torch.rand(B, 1, 1, 1, device=dev)
    x_hat = (eps * x_real + (1 - eps) * x_fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(d(x_hat, labels).sum(), x_hat, create_graph=True)
    gp = ((grad.flatten(1).pow(2).sum(1) + 1e-12).sqrt() - 1).pow(2).mean()
    return lf_.mean() - lr_.mean() + 10.0 * gp


def step():
    global step_no
    for _ in range(R["n_dis"]):
        with torch.no_grad():
            fake_labels = torch.randint(args.classes, (B,), device=dev)
            fake = g(torch.randn(B, NZ, device=dev), fake_labels)
        opt_d.zero_grad()
        loss = d_loss(d(real, real_labels), d(fake, fake_labels), real, fake, real_labels)
        loss.backward()
        opt_d.step()
    d.requires_grad_(False)
    opt_g.zero_grad()
    labels = torch.randint(args.classes, (B,), device=dev)
    (-d(g(torch.randn(B, NZ, device=dev), labels), labels).mean()).backward()
    d.requires_grad_(True)
    opt_g.step()
    step_no += 1
    if g_ema is not None:
        ema_update(g_ema, g, step_no, 0.9999)


n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
time_and_report(step, args, {"g_params": n_params(g), "d_params": n_params(d)})
