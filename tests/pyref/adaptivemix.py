"""Reference for gantry's AdaptiveMix: the algorithm of docs/adaptivemix.md written in PyTorch the
way the reference code runs it (three embed passes), on a DCGAN D at 16x16 with BatchNorm, float64.
Inputs (npz): D weights, x, lam (scalar or [B]), perm, noise, sigma, weight, dist (0 cosine,
1 mse, 2 l2). Outputs: logits, l_am, loss = mean softplus(-logits) + weight * l_am, and the
gradients of loss with respect to every weight and to x."""
import sys
import numpy as np
import torch
import torch.nn.functional as F

t = {k: torch.from_numpy(v) for k, v in np.load(sys.argv[1]).items()}
names = ["b16.conv.weight", "b8.conv.weight", "b8.bn.weight", "b8.bn.bias", "b4.conv.weight"]
w = {n: t[n].clone().requires_grad_(True) for n in names}
x = t["x"].clone().requires_grad_(True)

def embed(v):
    h = F.leaky_relu(F.conv2d(v, w["b16.conv.weight"], stride=2, padding=1), 0.2)
    h = F.conv2d(h, w["b8.conv.weight"], stride=2, padding=1)
    h = F.batch_norm(h, None, None, w["b8.bn.weight"], w["b8.bn.bias"], training=True, eps=1e-5)
    return F.leaky_relu(h, 0.2)

def head(f):
    return F.conv2d(f, w["b4.conv.weight"]).flatten()

lam, perm, noise = t["lam"], t["perm"].long(), t["noise"]
sigma, weight, dist = float(t["sigma"]), float(t["weight"]), int(t["dist"])
lx = lam.view(-1, 1, 1, 1) if lam.dim() == 1 else lam
x_mix = lx * x + (1 - lx) * x[perm]
f, f_perm, f_mix = embed(x), embed(x[perm]), embed(x_mix)
z = lx * f + (1 - lx) * f_perm
target = (z + sigma * noise).detach()
a, b = f_mix.flatten(1), target.flatten(1)
if dist == 0:
    per = 1 - F.cosine_similarity(a, b, dim=1, eps=1e-8)
elif dist == 1:
    per = (a - b).pow(2).mean(1)
else:
    per = ((a - b).pow(2).sum(1) + 1e-12).sqrt()
l_am = per.mean()
logits = head(z) + head(f_mix)
loss = F.softplus(-logits).mean() + weight * l_am
grads = torch.autograd.grad(loss, [w[n] for n in names] + [x])
out = {"logits": logits, "l_am": l_am, "loss": loss, "grad.x": grads[-1]}
out.update({"grad." + n: g for n, g in zip(names, grads)})
np.savez(sys.argv[2], **{k: v.detach().numpy() for k, v in out.items()})
