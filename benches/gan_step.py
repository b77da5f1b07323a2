"""PyTorch twin of `gantry bench`: one training step of the same DCGAN (32x32 RGB, batch 64,
D 64-128-256, G 256-128-64, non-saturating loss, Adam, EMA generator), on a fixed real batch.
Optionally AdaptiveMix done the way the reference code does it (three embed passes) and FQ done the
way the reference FQ-GAN code does it (dense one-hot EMA update), loss-only mode.

With `--ddp`, started by torchrun: torch.nn.parallel.DistributedDataParallel over gloo (CPU) or
NCCL (CUDA), each rank training on its share of the global batch `--batch` (the twin of
`gantry bench --nproc N`); rank 0 prints.

Prints one JSON line: {"what", "threads", "steps", "median_ms", "mean_ms", "min_ms", "peak_rss_mib"}.
"""
import os

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from bench_common import Scaled, autocast, ema_update, memory_format, parser, setup, time_and_report

p = parser(batch=64)
p.add_argument("--am", action="store_true")
p.add_argument("--fq-k", type=int, default=0)
p.add_argument("--fq-layers", default="b16,b8")
p.add_argument("--ddp", action="store_true")
args = p.parse_args()
dev = setup(args)
nz, B = 100, args.batch
if args.ddp:
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    B //= dist.get_world_size()


def init(m):
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class G(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(nz, 256, 4, 1, 0, bias=False), nn.BatchNorm2d(256), nn.ReLU(True),
            nn.ConvTranspose2d(256, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(True),
            nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(True),
            nn.ConvTranspose2d(64, 3, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z):
        return self.net(z.view(-1, nz, 1, 1))


class FQ(nn.Module):
    """The reference FQ-GAN (BigGAN) quantiser: EMA with dense one-hot encodings."""

    def __init__(self, k, c, decay=0.8, eps=1e-5):
        super().__init__()
        self.k, self.decay, self.eps = k, decay, eps
        e = torch.randn(k, c)
        self.register_buffer("embed", e)
        self.register_buffer("cluster_size", torch.zeros(k))
        self.register_buffer("embed_avg", e.clone())

    def forward(self, h, update):
        x = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])
        d = x.pow(2).sum(1, keepdim=True) - 2 * x @ self.embed.t() + self.embed.pow(2).sum(1)
        idx = d.argmin(1)
        onehot = F.one_hot(idx, self.k).type(x.dtype)
        q = self.embed[idx]
        if update:
            with torch.no_grad():
                self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
                self.embed_avg.mul_(self.decay).add_(onehot.t() @ x.detach(), alpha=1 - self.decay)
                n = self.cluster_size.sum()
                cs = (self.cluster_size + self.eps) / (n + self.k * self.eps) * n
                self.embed.copy_(self.embed_avg / cs.unsqueeze(1))
        return ((x - q.detach()) ** 2).mean()


class D(nn.Module):
    def __init__(self, fq_k, fq_layers):
        super().__init__()
        self.b32 = nn.Conv2d(3, 64, 4, 2, 1, bias=False)
        self.b16 = nn.Conv2d(64, 128, 4, 2, 1, bias=False)
        self.b16_bn = nn.BatchNorm2d(128)
        self.b8 = nn.Conv2d(128, 256, 4, 2, 1, bias=False)
        self.b8_bn = nn.BatchNorm2d(256)
        self.b4 = nn.Conv2d(256, 1, 4, 1, 0, bias=False)
        dims = {"b32": 64, "b16": 128, "b8": 256}
        self.fq = nn.ModuleDict({n: FQ(fq_k, dims[n]) for n in fq_layers}) if fq_k else nn.ModuleDict()
        self.fq_loss = 0.0

    def embed(self, x, update=False):
        h = F.leaky_relu(self.b32(x), 0.2)
        h = self.tap("b32", h, update)
        h = F.leaky_relu(self.b16_bn(self.b16(h)), 0.2)
        h = self.tap("b16", h, update)
        h = F.leaky_relu(self.b8_bn(self.b8(h)), 0.2)
        return self.tap("b8", h, update)

    def tap(self, name, h, update):
        if name in self.fq:
            self.fq_loss = self.fq_loss + self.fq[name](h, update)
        return h

    def head(self, f):
        return self.b4(f).flatten()


def am_score(d, x, update):
    """AdaptiveMix as the reference code runs it: three embed passes."""
    b = x.shape[0]
    lam = torch.distributions.Beta(1.0, 1.0).sample().to(x.device)
    perm = torch.randperm(b, device=x.device)
    x_perm = x[perm]
    f = d.embed(x, update)
    f_perm = d.embed(x_perm)
    f_mix = d.embed(lam * x + (1 - lam) * x_perm)
    z = lam * f + (1 - lam) * f_perm
    target = (z + 0.05 * torch.randn_like(z)).detach()
    l_am = (1 - F.cosine_similarity(f_mix.flatten(1), target.flatten(1), dim=1)).mean()
    return d.head(z) + d.head(f_mix), l_am


def score(d, x, update):
    if args.am:
        return am_score(d, x, update)
    return d.head(d.embed(x, update)), 0.0


g, d, g_ema = G().to(dev), D(args.fq_k, args.fq_layers.split(",")).to(dev), G().to(dev)
g.apply(init)
d.apply(init)
g_ema.load_state_dict(g.state_dict())
if args.ddp:
    # D is scored through two methods (embed, head): DDP wraps a module whose forward is them.
    class Scored(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.d = d

        def forward(self, x, update):
            return score(self.d, x, update)

    # broadcast_buffers=False as in stylegan2-ada-pytorch: DDP's per-forward buffer broadcast
    # bumps BatchNorm's running statistics between D's two forwards, which autograd refuses.
    g = nn.parallel.DistributedDataParallel(g, broadcast_buffers=False)
    d_ddp = nn.parallel.DistributedDataParallel(Scored(d), broadcast_buffers=False)
g_ema.requires_grad_(False)
opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
memory_format(args, g, d, g_ema)
sg, sd = Scaled(args, dev, opt_g), Scaled(args, dev, opt_d)
real = torch.rand(B, 3, 32, 32, device=dev) * 2 - 1
if args.channels_last:
    real = real.contiguous(memory_format=torch.channels_last)
step_no = 0


def d_score(x, update):
    return d_ddp(x, update) if args.ddp else score(d, x, update)


def step():
    global step_no
    # D step
    z = torch.randn(B, nz, device=dev)
    opt_d.zero_grad()
    d.fq_loss = 0.0
    with autocast(args, dev):
        with torch.no_grad():
            fake = g(z)
        lr_, am_r = d_score(real, True)
        lf_, am_f = d_score(fake, True)
    loss = F.softplus(-lr_.float()).mean() + F.softplus(lf_.float()).mean() + am_r + am_f + d.fq_loss
    sd.backward(loss)
    sd.step()
    # G step
    d.requires_grad_(False)
    opt_g.zero_grad()
    d.fq_loss = 0.0
    with autocast(args, dev):
        lf_, am_g = score(d, g(torch.randn(B, nz, device=dev)), True)
    sg.backward(F.softplus(-lf_.float()).mean() + am_g + d.fq_loss)
    d.requires_grad_(True)
    sg.step()
    step_no += 1
    ema_update(g_ema, g.module if args.ddp else g, step_no, 0.999)


if not args.ddp or dist.get_rank() == 0:
    time_and_report(step, args, {"world": dist.get_world_size() if args.ddp else 1})
else:
    time_and_report(step, args, quiet=True)
