"""gantry's `mlp` (crates/gantry/src/models/mlp.rs), for 2-D points (img_channels 2,
img_resolution 1) or any small sample shape.

G: `depth` hidden Linear layers of width `hidden` with ReLU (`h1` .. `h{depth}`), then a Linear
`out` to C*R*R values, no output activation; samples come out as [N, C, 1, 1] (points) or
[N, C, R, R].
D: flatten, `depth` hidden Linear layers with LeakyReLU(0.2) (`h1` ..), Linear `out` to one logit.
Every layer has a bias. Labels are ignored.
"""
import torch.nn as nn
import torch.nn.functional as F


def _hidden(d_in, hidden, depth):
    layers = []
    for i in range(1, depth + 1):
        layers.append((f"h{i}", nn.Linear(d_in, hidden)))
        d_in = hidden
    return layers, d_in


class Generator(nn.Module):
    def __init__(self, z_dim=64, hidden=128, depth=2, *, img_channels=2, img_resolution=1, num_classes=None):
        super().__init__()
        self.z_dim = z_dim
        layers, d = _hidden(z_dim, hidden, depth)
        self.names = [n for n, _ in layers]
        for n, l in layers:
            self.add_module(n, l)
        self.out = nn.Linear(d, img_channels * img_resolution * img_resolution)
        self.out_shape = (-1, img_channels, img_resolution, img_resolution)

    def forward(self, z, labels=None):
        h = z
        for n in self.names:
            h = F.relu(getattr(self, n)(h))
        return self.out(h).view(self.out_shape)


class Discriminator(nn.Module):
    def __init__(self, z_dim=64, hidden=128, depth=2, *, img_channels=2, img_resolution=1, num_classes=None):
        super().__init__()
        layers, d = _hidden(img_channels * img_resolution * img_resolution, hidden, depth)
        self.names = [n for n, _ in layers]
        for n, l in layers:
            self.add_module(n, l)
        self.out = nn.Linear(d, 1)

    def embed(self, x):
        h = x.flatten(1)
        for n in self.names:
            h = F.leaky_relu(getattr(self, n)(h), 0.2)
        return h

    def forward(self, x, labels=None):
        return self.out(self.embed(x))[:, 0]
