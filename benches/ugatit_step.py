"""PyTorch twin of `gantry bench --config ugatit-light-64`: one U-GAT-IT iteration as the official
UGATIT.py runs it (D step: both translations, four critics on reals and translations, least
squares on patch and CAM logits, Adam; G step: the translations again, cycle and identity
passes, the critics, L1 and CAM losses, Adam; the rho clip), with the networks of
tests/pyref/ugatit_ref.py (which the tests check against gantry's) and Adam(1e-4, (0.5, 0.999),
weight decay 1e-4). `--reuse` makes the G step reuse the D step's translations, as gantry does
(the same values: G has not changed in between), so both sides do the same work.

Prints one JSON line: {"what", "threads", "device", "steps", "median_ms", "mean_ms", "min_ms",
"peak_rss_mib"}.
"""
import itertools
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pyref"))
import ugatit_ref as U  # noqa: E402
from bench_common import parser, setup, time_and_report  # noqa: E402

p = parser(batch=4)
p.add_argument("--res", type=int, default=64)
p.add_argument("--ch", type=int, default=16)
p.add_argument("--n-res", type=int, default=2)
p.add_argument("--full", action="store_true", help="not light")
p.add_argument("--global-layers", type=int, default=6)
p.add_argument("--local-layers", type=int, default=4)
p.add_argument("--reuse", action="store_true")
args = p.parse_args()
dev = setup(args)
B, R = args.batch, args.res
light = not args.full
gen = lambda: U.Generator(3, args.ch, args.n_res, R, light).to(dev)  # noqa: E731
ab, ba = gen(), gen()
ga, gb = U.Discriminator(3, args.ch, args.global_layers).to(dev), U.Discriminator(3, args.ch, args.global_layers).to(dev)
la, lb = U.Discriminator(3, args.ch, args.local_layers).to(dev), U.Discriminator(3, args.ch, args.local_layers).to(dev)
opt_g = torch.optim.Adam(itertools.chain(ab.parameters(), ba.parameters()), lr=1e-4, betas=(0.5, 0.999), weight_decay=1e-4)
opt_d = torch.optim.Adam(itertools.chain(ga.parameters(), gb.parameters(), la.parameters(), lb.parameters()),
                         lr=1e-4, betas=(0.5, 0.999), weight_decay=1e-4)
mse, l1, bce = nn.MSELoss(), nn.L1Loss(), nn.BCEWithLogitsLoss()
real_a = torch.rand(B, 3, R, R, device=dev) * 2 - 1
real_b = torch.rand(B, 3, R, R, device=dev) * 2 - 1


def ls(x, t):
    return mse(x, torch.full_like(x, t))


def step():
    opt_d.zero_grad()
    a2b, a2b_cam, _ = ab(real_a)
    b2a, b2a_cam, _ = ba(real_b)
    d_loss = 0
    for d, real, fake in [(ga, real_a, b2a), (la, real_a, b2a), (gb, real_b, a2b), (lb, real_b, a2b)]:
        rl, rc, _ = d(real)
        fl, fc, _ = d(fake.detach() if args.reuse else fake)
        d_loss = d_loss + ls(rl, 1) + ls(fl, 0) + ls(rc, 1) + ls(fc, 0)
    d_loss.backward()
    opt_d.step()
    opt_g.zero_grad()
    if not args.reuse:
        a2b, a2b_cam, _ = ab(real_a)
        b2a, b2a_cam, _ = ba(real_b)
    a2b2a, _, _ = ba(a2b)
    b2a2b, _, _ = ab(b2a)
    a2a, a2a_cam, _ = ba(real_a)
    b2b, b2b_cam, _ = ab(real_b)
    adv = 0
    for d, x in [(ga, b2a), (la, b2a), (gb, a2b), (lb, a2b)]:
        lo, cl, _ = d(x)
        adv = adv + ls(lo, 1) + ls(cl, 1)
    g_loss = adv + 10 * (l1(a2b2a, real_a) + l1(b2a2b, real_b)) + 10 * (l1(a2a, real_a) + l1(b2b, real_b)) \
        + 1000 * (bce(b2a_cam, torch.ones_like(b2a_cam)) + bce(a2a_cam, torch.zeros_like(a2a_cam))
                  + bce(a2b_cam, torch.ones_like(a2b_cam)) + bce(b2b_cam, torch.zeros_like(b2b_cam)))
    g_loss.backward()
    opt_g.step()
    with torch.no_grad():
        for m in itertools.chain(ab.modules(), ba.modules()):
            if hasattr(m, "rho"):
                m.rho.clamp_(0, 1)


time_and_report(step, args)
