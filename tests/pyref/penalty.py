"""Reference for gantry's WGAN-GP, R1 and R2 penalties and R3GAN's relativistic pairing loss: a DCGAN D at 8x8 (conv 4/2/1 -> LeakyReLU(0.2)
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

# R3GAN (brownvc/R3GAN Trainer.py): D minimises softplus(D(fake) - D(real)) + gamma/2 (R1 + R2),
# both penalties zero-centred on the samples D scored; G minimises softplus(D(real) - D(fake)).
gamma = 0.7
xr2 = real.clone().requires_grad_(True)
xf2 = fake.clone().requires_grad_(True)
lr_, lf_ = critic(xr2), critic(xf2)
(g_r,) = torch.autograd.grad(lr_.sum(), xr2, create_graph=True)
(g_f,) = torch.autograd.grad(lf_.sum(), xf2, create_graph=True)
r1b = g_r.flatten(1).pow(2).sum(1).mean()
r2 = g_f.flatten(1).pow(2).sum(1).mean()
d_rel = F.softplus(lf_ - lr_).mean() + gamma / 2 * (r1b + r2)
dw0, dw1 = torch.autograd.grad(d_rel, [w0, w1])
g_rel = F.softplus(lr_ - lf_).mean()

out = {"gp": gp, "gp_w0": gw0, "gp_w1": gw1, "r1": r1, "r1_w0": rw0, "r1_w1": rw1,
       "d_rel": d_rel, "d_rel_w0": dw0, "d_rel_w1": dw1, "g_rel": g_rel}
np.savez(sys.argv[2], **{k: v.detach().numpy() for k, v in out.items()})
