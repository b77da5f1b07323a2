"""PyTorch twin of `gantry classify bench`: ResNet-18 (CIFAR variant) training steps with SGD
(momentum 0.9, weight decay 5e-4) on one fixed random batch, in cross-entropy mode or the
AdaptiveMix reference's way (three embed passes: x, x[perm] and the mix; gantry makes two), or
PGD-10 (L-inf 8/255, step 2/255) on the same model. Prints the JSON line of bench_common."""
import torch
import torch.nn as nn
import torch.nn.functional as F

import bench_common


class Basic(nn.Module):
    def __init__(self, c_in, c, stride):
        super().__init__()
        self.c1 = nn.Conv2d(c_in, c, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(c)
        self.c2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(c)
        self.short = None
        if stride != 1 or c_in != c:
            self.short = nn.Sequential(nn.Conv2d(c_in, c, 1, stride, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        h = F.relu(self.b1(self.c1(x)))
        h = self.b2(self.c2(h))
        return F.relu(h + (self.short(x) if self.short is not None else x))


class ResNet18(nn.Module):
    def __init__(self, channels=3, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        blocks, c_in = [], 64
        for c, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            for j in range(2):
                blocks.append(Basic(c_in, c, stride if j == 0 else 1))
                c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(512, classes)

    def embed(self, x01):
        return self.blocks(self.stem((x01 - 0.5) / 0.5)).mean((2, 3))

    def forward(self, x01):
        return self.head(self.embed(x01))


def main():
    p = bench_common.parser(128)
    p.add_argument("--mode", choices=["ce", "adaptivemix"], default="ce")
    p.add_argument("--attack", choices=["none", "pgd-10"], default="none")
    args = p.parse_args()
    dev = bench_common.setup(args)
    net = ResNet18().to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(args.batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (args.batch,), device=dev)

    def train_step():
        if args.mode == "ce":
            loss = F.cross_entropy(net(x), y)
        else:
            lam = torch.distributions.Beta(1.0, 1.0).sample().to(dev)
            perm = torch.randperm(args.batch, device=dev)
            e_mix = net.embed(lam * x + (1 - lam) * x[perm])
            f, f_perm = net.embed(x), net.embed(x[perm])
            z = lam * f + (1 - lam) * f_perm
            l_am = F.mse_loss(e_mix, (z + 0.05 * torch.randn_like(z)).detach())
            logit = net.head(z) + net.head(e_mix)
            loss = lam * F.cross_entropy(logit, y) + (1 - lam) * F.cross_entropy(logit, y[perm]) + l_am
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def pgd():
        net.eval()
        eps, step = 8 / 255, 2 / 255
        adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
        for _ in range(10):
            adv = adv.detach().requires_grad_(True)
            g, = torch.autograd.grad(F.cross_entropy(net(adv), y), adv)
            adv = torch.min(torch.max(adv.detach() + step * g.sign(), x - eps), x + eps).clamp(0, 1)
        return adv

    step = train_step if args.attack == "none" else pgd
    bench_common.time_and_report(step, args, extra={"images_per_s": None})


if __name__ == "__main__":
    main()
