"""PyTorch twin of `gantry bench --config r3gan-small`: one R3GAN training step on a fixed real
batch with the networks of tests/pyref/r3gan_ref.py (which the tests check against gantry with
the same weights), done the way gantry does it and as brownvc/R3GAN's Trainer.py computes it:

- D step: fakes from G under no_grad; relativistic loss softplus(D(fake) - D(real)) plus
  gamma/2 (R1 + R2), the zero-centred penalties on the real and the fake batch, in one backward;
  Adam(2e-4, betas (0, 0.9)).
- G step: D frozen; D's logits on the same real batch without a graph; softplus(D(real) -
  D(fake)); Adam.
- EMA of G (decay 0.999 with ramp-up).

Prints one JSON line like `gantry bench`.
"""
import copy
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pyref"))
import r3gan_ref as R  # noqa: E402
from bench_common import ema_update, parser, setup, time_and_report  # noqa: E402

p = parser(batch=32)
p.add_argument("--res", type=int, default=32)
p.add_argument("--width", type=int, default=64)
p.add_argument("--cardinality", type=int, default=4)
p.add_argument("--blocks", type=int, default=1)
p.add_argument("--z-dim", type=int, default=64)
p.add_argument("--gamma", type=float, default=0.05)
args = p.parse_args()
dev = setup(args)
n = args.res.bit_length() - 2  # stages from 4x4 to res
lists = ([args.width] * n, [args.cardinality] * n, [args.blocks] * n)
G = R.Generator(args.z_dim, 3, *lists).to(dev)
D = R.Discriminator(3, *lists).to(dev)
G_ema = copy.deepcopy(G).eval()
opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.0, 0.9), eps=1e-8)
opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.0, 0.9), eps=1e-8)
real = torch.rand(args.batch, 3, args.res, args.res, device=dev) * 2 - 1
state = {"step": 0}


def penalty(logits, x):
    (g,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    return g.square().sum([1, 2, 3]).mean()


def step():
    z = torch.randn(args.batch, args.z_dim, device=dev)
    with torch.no_grad():
        fake = G(z)
    xr = real.detach().requires_grad_(True)
    xf = fake.detach().requires_grad_(True)
    lr_, lf_ = D(xr), D(xf)
    d_loss = F.softplus(lf_ - lr_).mean() + args.gamma / 2 * (penalty(lr_, xr) + penalty(lf_, xf))
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()

    D.requires_grad_(False)
    z = torch.randn(args.batch, args.z_dim, device=dev)
    with torch.no_grad():
        lr_ = D(real)
    g_loss = F.softplus(lr_ - D(G(z))).mean()
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    D.requires_grad_(True)
    ema_update(G_ema, G, state["step"], 0.999)
    state["step"] += 1


time_and_report(step, args)
