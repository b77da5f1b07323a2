"""PyTorch twin of `gantry bench --config stylegan2-32-small`: one training step of the same StyleGAN2
(the network of tests/pyref/stylegan2_ref.py, which the reference tests check against gantry with
the same weights), on a fixed real batch, done the way gantry does it:

- D step: fakes from G under no_grad (training mode: style mixing 0.9, random noise, w_avg
  tracking); non-saturating loss on a real and a fake pass; every `--r1-every` steps R1 (gamma/2,
  scaled by the interval) on the real pass, in the same backward; Adam(0.0025, (0, 0.99)).
- G step: D frozen; non-saturating loss; every `--pl-every` steps path-length regularisation on
  the first batch/2 latents (weight 2, scaled by the interval) added to the same gradients; Adam.
- EMA of G (decay 0.999 with ramp-up; buffers copied).

Step i (counting warm-up steps from 0) runs R1 when i % r1_every == 0 and PL when i % pl_every == 0,
as gantry does, so the median is a plain step and the mean includes the amortised regularisers.
`--no-reg` times the plain step only. `--ada-p P` puts every batch D sees (reals, with R1 through
it, and fakes in both steps) through StyleGAN2-ADA's `bgc` pipeline at a fixed p (the
transcription in tests/pyref/ada_ref.py, with a twice-differentiable grid sampler as the
reference's grid_sample_gradfix), like `--set ada.enabled=true --set ada.mode=fixed --set ada.p=P`.

Prints one JSON line: {"what", "threads", "device", "steps", "median_ms", "mean_ms", "min_ms",
"peak_rss_mib", "g_params", "d_params"}.
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pyref"))
import ada_ref  # noqa: E402
import stylegan2_ref as R  # noqa: E402
from bench_common import Scaled, autocast, ema_update, memory_format, parser, setup, time_and_report  # noqa: E402

p = parser(batch=32)
p.add_argument("--res", type=int, default=32)
p.add_argument("--channel-base", type=int, default=2048)
p.add_argument("--channel-max", type=int, default=256)
p.add_argument("--z-dim", type=int, default=256)
p.add_argument("--mapping-layers", type=int, default=2)
p.add_argument("--mbstd-group", type=int, default=4)
p.add_argument("--r1-gamma", type=float, default=0.0064)
p.add_argument("--r1-every", type=int, default=16)
p.add_argument("--pl-every", type=int, default=4)
p.add_argument("--no-reg", action="store_true")
p.add_argument("--ada-p", type=float, default=0.0)
args = p.parse_args()
dev = setup(args)
B = args.batch
MIXING, PL_WEIGHT, PL_DECAY, PL_SHRINK = 0.9, 2.0, 0.01, 2


def build_g():
    return R.Generator(args.z_dim, args.z_dim, args.res, 3, mapping_layers=args.mapping_layers,
                       channel_base=args.channel_base, channel_max=args.channel_max).to(dev)


g, g_ema = build_g(), build_g()
d = R.Discriminator(args.res, 3, channel_base=args.channel_base, channel_max=args.channel_max,
                    mbstd_group_size=args.mbstd_group).to(dev)
g_ema.load_state_dict(g.state_dict())
g_ema.requires_grad_(False)
opt_g = torch.optim.Adam(g.parameters(), lr=0.0025, betas=(0.0, 0.99), eps=1e-8)
opt_d = torch.optim.Adam(d.parameters(), lr=0.0025, betas=(0.0, 0.99), eps=1e-8)
real = torch.rand(B, 3, args.res, args.res, device=dev) * 2 - 1
memory_format(args, g, d, g_ema)
if args.channels_last:
    real = real.contiguous(memory_format=torch.channels_last)
sg, sd = Scaled(args, dev, opt_g), Scaled(args, dev, opt_d)
step_no = 0


def run_g(z):
    """Training-mode G with style mixing (stylegan2-ada's run_G); returns images and ws."""
    ws = g.mapping(z)
    cutoff = int(torch.randint(1, ws.shape[1], []))
    if torch.rand([]).item() < MIXING:
        ws2 = g.mapping(torch.randn_like(z), skip_w_avg_update=True)
        ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
    return g.synthesis(ws, noise_mode="random", fused_modconv=False), ws


def aug(x):
    if args.ada_p <= 0:
        return x
    # The pipeline runs in fp32 whatever the precision, as gantry's does.
    with torch.autocast(dev.type, enabled=False):
        return ada_ref.draw_and_augment(x.float(), args.ada_p).to(x.dtype)


def step():
    global step_no
    r1_now = not args.no_reg and args.r1_gamma > 0 and step_no % args.r1_every == 0
    pl_now = not args.no_reg and step_no % args.pl_every == 0
    # D step (forward passes under `--precision`, penalties in fp32, as gantry does)
    opt_d.zero_grad()
    real_in = real.detach().requires_grad_(r1_now)
    with autocast(args, dev):
        with torch.no_grad():
            fake, _ = run_g(torch.randn(B, args.z_dim, device=dev))
        lr_ = d(aug(real_in)).flatten().float()
        lf_ = d(aug(fake)).flatten().float()
    loss = F.softplus(-lr_).mean() + F.softplus(lf_).mean()
    if r1_now:
        (gr,) = torch.autograd.grad(lr_.sum(), real_in, create_graph=True)
        loss = loss + gr.square().sum([1, 2, 3]).mean() * (args.r1_gamma / 2 * args.r1_every)
    sd.backward(loss)
    sd.step()
    # G step
    d.requires_grad_(False)
    opt_g.zero_grad()
    z = torch.randn(B, args.z_dim, device=dev)
    with autocast(args, dev):
        fake, _ = run_g(z)
        out = d(aug(fake)).flatten().float()
    sg.backward(F.softplus(-out).mean())
    if pl_now:
        img, ws = run_g(z[: B // PL_SHRINK])
        noise = torch.randn_like(img) / np.sqrt(img.shape[2] * img.shape[3])
        (gw,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        lengths = gw.square().sum(2).mean(1).sqrt()
        pl_mean = g.pl_mean.lerp(lengths.mean(), PL_DECAY)
        g.pl_mean.copy_(pl_mean.detach())
        ((lengths - pl_mean).square().mean() * (PL_WEIGHT * args.pl_every)).backward()
    d.requires_grad_(True)
    sg.step()
    step_no += 1
    ema_update(g_ema, g, step_no, 0.999)


n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
time_and_report(step, args, {"g_params": n_params(g), "d_params": n_params(d)})
