"""Reference for gantry's R3GAN networks (crates/gantry/tests/backbones_r3gan.rs): the networks of
r3gan_ref.py load gantry's G and D weights strictly and compute, in float64, G's images and the
gradient of sum(img * u) into a G weight; D's features, logits, and the gradients of sum(logits)
into the input and a D weight."""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import r3gan_ref as R  # noqa: E402

torch.set_default_dtype(torch.float64)
t = {k: torch.from_numpy(v) for k, v in np.load(sys.argv[1]).items()}
cfg = {k[4:]: v.long().tolist() for k, v in t.items() if k.startswith("cfg.")}
ch, z_dim, classes = cfg["channels"], cfg["z_dim"], cfg["classes"]
lists = (cfg["widths"], cfg["cardinality"], cfg["blocks"])
G = R.Generator(z_dim, ch, *lists, expansion=cfg["expansion"], kernel=cfg["kernel"], classes=classes)
D = R.Discriminator(ch, *lists, expansion=cfg["expansion"], kernel=cfg["kernel"], classes=classes)
G.load_state_dict({k[2:]: v for k, v in t.items() if k.startswith("g.")}, strict=True)
D.load_state_dict({k[2:]: v for k, v in t.items() if k.startswith("d.")}, strict=True)
onehot = lambda k: F.one_hot(t[k].long(), classes).double() if classes > 0 else None
out = {}
img = G(t["z"], onehot("labels_g"))
gw = G.MainLayers[1].Layers[1].LinearLayer2.Layer.weight
(out["g_grad_w"],) = torch.autograd.grad((img * t["u"]).sum(), [gw])
out["img"] = img
x = t["x"].clone().requires_grad_(True)
f = D.embed(x)
logits = D.head(f, onehot("labels_d"))
dw = D.MainLayers[0].Layers[0].LinearLayer2.Layer.weight
out["d_grad_x"], out["d_grad_w"] = torch.autograd.grad(logits.sum(), [x, dw])
out["embed"], out["logits"] = f, logits
np.savez(sys.argv[2], **{k: v.detach().numpy() for k, v in out.items()})
