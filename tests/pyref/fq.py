"""Reference for gantry's FQ layer: docs/feature-quantization.md in PyTorch, float32.
Inputs (npz): E0 [K, C] (initial codebook; counts 0, sums = E0), h_real, h_fake [T, B, C, H, W]
(one D phase per t: both assigned against the pre-update codebook, one update from both),
up [T, B, C, H, W] (upstream gradient for the straight-through check), decay, beta.
Outputs per step t: idx_real/idx_fake, loss_real/loss_fake, grad_real (of sum(out*up) + loss_real
w.r.t. h_real), codebook, count, sum and perplexity after the update."""
import sys
import numpy as np
import torch

t = {k: torch.from_numpy(v) for k, v in np.load(sys.argv[1]).items()}
E = t["E0"].clone()
K, C = E.shape
n = torch.zeros(K)
m = E.clone()
decay, beta = float(t["decay"]), float(t["beta"])
eps = 1e-5
out = {}

def vectors(h):
    return h.permute(0, 2, 3, 1).reshape(-1, C)

for step in range(t["h_real"].shape[0]):
    counts = torch.zeros(K)
    sums = torch.zeros(K, C)
    for branch in ("real", "fake"):
        h = t["h_" + branch][step].clone().requires_grad_(True)
        X = vectors(h)
        idx = ((X.detach()[:, None, :] - E[None]) ** 2).sum(-1).argmin(1)
        Q = E[idx]
        loss = beta * ((X - Q.detach()) ** 2).mean(dim=1).view(h.shape[0], -1).mean(1).mean()
        st = X + (Q - X).detach()
        st = st.view(h.shape[0], h.shape[2], h.shape[3], C).permute(0, 3, 1, 2)
        if branch == "real":
            (g,) = torch.autograd.grad((st * t["up"][step]).sum() + loss, h)
            out[f"grad_real.{step}"] = g
        counts += torch.bincount(idx, minlength=K).float()
        sums.index_add_(0, idx, X.detach())
        out[f"idx_{branch}.{step}"] = idx
        out[f"loss_{branch}.{step}"] = loss.detach()
    n = decay * n + (1 - decay) * counts
    m = decay * m + (1 - decay) * sums
    tot = n.sum()
    ns = (n + eps) / (tot + K * eps) * tot
    E = m / ns[:, None]
    p = counts / counts.sum()
    out[f"perplexity.{step}"] = torch.exp(-(p * torch.log(p + 1e-10)).sum())
    out[f"codebook.{step}"], out[f"count.{step}"], out[f"sum.{step}"] = E.clone(), n.clone(), m.clone()

np.savez(sys.argv[2], **{k: v.detach().numpy() for k, v in out.items()})
