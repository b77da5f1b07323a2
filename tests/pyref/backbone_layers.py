"""Reference for gantry's layer helpers, float64, with gantry's weights and buffers:

- spectral normalisation: torch.nn.utils.spectral_norm on Conv2d ("conv"), Linear ("lin") and
  Embedding ("emb"): two training-mode forwards (one power iteration each), then one in eval mode;
  outputs, the stored u and v after each, and the gradients of sum(y1 * gy) for weight_orig, bias
  and the input;
- BigGAN-PyTorch's `layers.ccbn` (G_shared: bias-free SNLinear gain and bias maps, `1 + gain`),
  training then eval ("cbn");
- BigGAN-PyTorch's `layers.Attention` with SN convolutions ("attn").
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from backbone_common import conv, embedding, grads, linear, load_inputs, named_tensors, save_outputs  # noqa: E402

t = load_inputs()
out = {}

# --- spectral norm -----------------------------------------------------------------------------
for key, make, x in [
    ("conv", lambda: conv(t, "conv", 3), t["x_conv"]),
    ("lin", lambda: linear(t, "lin"), t["x_lin"]),
    ("emb", lambda: embedding(t, "emb"), t["labels"]),
]:
    m = make()
    m.train()
    xin = x.clone().requires_grad_(x.is_floating_point())
    y1 = m(xin)
    out[f"{key}.y1"] = y1
    out[f"{key}.u1"], out[f"{key}.v1"] = m.weight_u.clone(), m.weight_v.clone()
    params = named_tensors(m, f"{key}.")
    if xin.requires_grad:
        params[f"{key}.x"] = xin
    out.update(grads((y1 * t[f"{key}.gy"]).sum(), params))
    out[f"{key}.y2"] = m(xin)
    out[f"{key}.u2"], out[f"{key}.v2"] = m.weight_u.clone(), m.weight_v.clone()
    m.eval()
    out[f"{key}.y3"] = m(xin)
    out[f"{key}.u3"] = m.weight_u.clone()


# --- conditional batch norm (layers.ccbn) ------------------------------------------------------
class CCBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.gain = linear(t, "cbn.gain")
        self.bias = linear(t, "cbn.bias")
        self.register_buffer("running_mean", t["cbn.running_mean"].clone())
        self.register_buffer("running_var", t["cbn.running_var"].clone())

    def forward(self, x, y):
        gain = (1 + self.gain(y)).view(y.size(0), -1, 1, 1)
        bias = self.bias(y).view(y.size(0), -1, 1, 1)
        out = F.batch_norm(x, self.running_mean, self.running_var, None, None, self.training, 0.1, 1e-5)
        return out * gain + bias


cbn = CCBN()
x = t["cbn.x"].clone().requires_grad_(True)
y = t["cbn.cond"].clone().requires_grad_(True)
cbn.train()
h = cbn(x, y)
out["cbn.y1"] = h
params = named_tensors(cbn, "cbn.")
params.update({"cbn.x": x, "cbn.cond": y})
out.update(grads((h * t["cbn.gy"]).sum(), params))
out["cbn.running_mean"], out["cbn.running_var"] = cbn.running_mean.clone(), cbn.running_var.clone()
out["cbn.gain.u1"] = cbn.gain.weight_u.clone()
cbn.eval()
out["cbn.y2"] = cbn(x, y)


# --- self-attention (layers.Attention) -----------------------------------------------------------
class Attention(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.ch = ch
        self.theta = conv(t, "attn.theta", 1)
        self.phi = conv(t, "attn.phi", 1)
        self.g = conv(t, "attn.g", 1)
        self.o = conv(t, "attn.o", 1)
        self.gamma = nn.Parameter(t["attn.gamma"].clone())

    def forward(self, x):
        theta = self.theta(x)
        phi = F.max_pool2d(self.phi(x), [2, 2])
        g = F.max_pool2d(self.g(x), [2, 2])
        theta = theta.view(-1, self.ch // 8, x.shape[2] * x.shape[3])
        phi = phi.view(-1, self.ch // 8, x.shape[2] * x.shape[3] // 4)
        g = g.view(-1, self.ch // 2, x.shape[2] * x.shape[3] // 4)
        beta = F.softmax(torch.bmm(theta.transpose(1, 2), phi), -1)
        o = self.o(torch.bmm(g, beta.transpose(1, 2)).view(-1, self.ch // 2, x.shape[2], x.shape[3]))
        return self.gamma * o + x


attn = Attention(t["attn.x"].shape[1]).train()
x = t["attn.x"].clone().requires_grad_(True)
h = attn(x)
out["attn.y1"] = h
params = named_tensors(attn, "attn.")
params["attn.x"] = x
out.update(grads((h * t["attn.gy"]).sum(), params))

save_outputs(out)
