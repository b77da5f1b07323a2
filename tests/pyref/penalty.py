"""Reference for gantry's WGAN-GP and R1 penalties: a DCGAN D at 8x8 (conv 4/2/1 -> LeakyReLU(0.2)
-> conv 4/1/0), in float64, with weights and inputs from gantry. Writes the penalties and the
gradients of each penalty with respect to D's weights (second-order autograd)."""
import sys
import numpy as np
import torch
import torch.nn.functional as F

inp = dict(np.load(sys.argv[1]))
t = {k: torch.from_numpy(v) for k, v in inp.items()}
w0 = t["b8.conv.weight"].clone().requires_grad_(True)
w1 = t["b4.conv.weight"].clone().requires_grad_(True)

def critic(x):
    h = F.leaky_relu(F.conv2d(x, w0, stride=2, padding=1), 0.2)
    return F.conv2d(h, w1).flatten()

real, fake, eps = t["real"], t["fake"], t["eps"]
x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
(g,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
gp = ((g.flatten(1).pow(2).sum(1) + 1e-12).sqrt() - 1).pow(2).mean()
gw0, gw1 = torch.autograd.grad(gp, [w0, w1])

xr = real.clone().requires_grad_(True)
(gr,) = torch.autograd.grad(critic(xr).sum(), xr, create_graph=True)
r1 = gr.flatten(1).pow(2).sum(1).mean()
rw0, rw1 = torch.autograd.grad(r1, [w0, w1])

out = {"gp": gp, "gp_w0": gw0, "gp_w1": gw1, "r1": r1, "r1_w0": rw0, "r1_w1": rw1}
np.savez(sys.argv[2], **{k: v.detach().numpy() for k, v in out.items()})
