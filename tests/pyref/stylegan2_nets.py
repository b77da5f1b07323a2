"""Reference for gantry's StyleGAN2 networks (crates/gantry/tests/backbones_stylegan2.rs): the PyTorch
twin of stylegan2_ref.py loads gantry's G and D weights with load_state_dict(strict=True), which
also checks that gantry's checkpoint keys are the reference's, and computes in float64:
G's ws, images (grouped and scale-activations modulated convolutions, const noise), images with
truncation, the path-length gradient J^T u with respect to the ws and a weight, the w_avg update of
one training-mode mapping pass; D's features, logits and gradients (input and a weight)."""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stylegan2_ref as R  # noqa: E402

torch.set_default_dtype(torch.float64)
t = {k: torch.from_numpy(v) for k, v in np.load(sys.argv[1]).items()}
cfg = {k[4:]: int(v.item()) for k, v in t.items() if k.startswith("cfg.")}
res, ch = cfg["resolution"], cfg["channels"]

c_dim = cfg.get("c_dim", 0)
G = R.Generator(cfg["z_dim"], cfg["w_dim"], res, ch, mapping_layers=cfg["mapping_layers"],
                channel_base=cfg["channel_base"], channel_max=cfg["channel_max"], c_dim=c_dim).double()
D = R.Discriminator(res, ch, channel_base=cfg["channel_base"], channel_max=cfg["channel_max"],
                    mbstd_group_size=cfg["mbstd_group"], mbstd_num_channels=cfg["mbstd_channels"],
                    c_dim=c_dim).double()
# Labels as class indices -> one-hot (stylegan2-ada feeds one-hot c).
onehot = lambda k: torch.nn.functional.one_hot(t[k].long(), c_dim).double() if c_dim > 0 else None
c, c_d = onehot("labels_g"), onehot("labels_d")
G.load_state_dict({k[2:]: v for k, v in t.items() if k.startswith("g.")}, strict=True)
D.load_state_dict({k[2:]: v for k, v in t.items() if k.startswith("d.")}, strict=True)
G.eval()
D.eval()
out = {}

z, u, img = t["z"], t["u"], t["img"]
ws = G.mapping(z, c)
out["ws"] = ws
out["img_grouped"] = G.synthesis(ws, noise_mode="const", fused_modconv=True)
out["img_scaleact"] = G.synthesis(ws, noise_mode="const", fused_modconv=False)
out["img_truncated"] = G(z, c, truncation_psi=0.7, noise_mode="const", fused_modconv=True)
wsl = ws.detach().clone().requires_grad_(True)
y = G.synthesis(wsl, noise_mode="const", fused_modconv=False)
gw = G.synthesis.b16.conv0.weight
jtu, jtu_w = torch.autograd.grad((y * u).sum(), [wsl, gw])
out["jtu"], out["jtu_w"] = jtu, jtu_w

G.mapping.train()
with torch.no_grad():
    G.mapping(z, c)
out["w_avg"] = G.mapping.w_avg.clone()

x = img.clone().requires_grad_(True)
out["embed"] = D.embed(x)
logits = D.head(out["embed"], c_d).flatten()
dw = D.b16.conv0.weight
gx, gdw = torch.autograd.grad(logits.sum(), [x, dw])
out["logits"], out["d_grad_x"], out["d_grad_w"] = logits, gx, gdw

np.savez(sys.argv[2], **{k: v.detach().numpy() for k, v in out.items()})
