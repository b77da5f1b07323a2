"""A PyTorch transcription of the architecture of brownvc/R3GAN's Networks.py with the same module
structure (so gantry's weights load with load_state_dict(strict=True)), its resampling written the
way the reference's non-CUDA resamplers do it: a transposed convolution with the 4x-scaled
[1,3,3,1] kernel for upsampling, a strided convolution for downsampling. Used by the tests
(r3gan_nets.py) and the benchmark twin (benches/r3gan_step.py)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
K = torch.outer(taps, taps)
K = K / K.sum()


def up(x):
    n, c, h, w = x.shape
    y = F.conv_transpose2d(x.reshape(n * c, 1, h, w), (4 * K).to(x.dtype)[None, None], stride=2, padding=1)
    return y.reshape(n, c, y.shape[2], y.shape[3])


def down(x):
    n, c, h, w = x.shape
    y = F.conv2d(x.reshape(n * c, 1, h, w), K.to(x.dtype)[None, None], stride=2, padding=1)
    return y.reshape(n, c, y.shape[2], y.shape[3])


class Convolution(nn.Module):
    def __init__(self, cin, cout, k, groups=1):
        super().__init__()
        self.Layer = nn.Conv2d(cin, cout, k, padding=(k - 1) // 2, groups=groups, bias=False)

    def forward(self, x):
        return self.Layer(x)


class BiasedActivation(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.Bias = nn.Parameter(torch.zeros(c))

    def forward(self, x):
        return F.leaky_relu(x + self.Bias.view(1, -1, 1, 1), 0.2)


class ResidualBlock(nn.Module):
    def __init__(self, c, card, expansion, kernel):
        super().__init__()
        e = c * expansion
        self.LinearLayer1 = Convolution(c, e, 1)
        self.LinearLayer2 = Convolution(e, e, kernel, card)
        self.LinearLayer3 = Convolution(e, c, 1)
        self.NonLinearity1 = BiasedActivation(e)
        self.NonLinearity2 = BiasedActivation(e)

    def forward(self, x):
        y = self.LinearLayer2(self.NonLinearity1(self.LinearLayer1(x)))
        return x + self.LinearLayer3(self.NonLinearity2(y))


class Resample(nn.Module):
    def __init__(self, cin, cout, upward):
        super().__init__()
        self.upward = upward
        if cin != cout:
            self.LinearLayer = Convolution(cin, cout, 1)

    def forward(self, x):
        conv = getattr(self, "LinearLayer", lambda v: v)
        return up(conv(x)) if self.upward else conv(down(x))


class GenerativeBasis(nn.Module):
    def __init__(self, din, c):
        super().__init__()
        self.Basis = nn.Parameter(torch.zeros(c, 4, 4))
        self.LinearLayer = nn.Linear(din, c, bias=False)

    def forward(self, x):
        return self.Basis.view(1, -1, 4, 4) * self.LinearLayer(x).view(x.shape[0], -1, 1, 1)


class DiscriminativeBasis(nn.Module):
    def __init__(self, c, out):
        super().__init__()
        self.Basis = nn.Conv2d(c, c, 4, groups=c, bias=False)
        self.LinearLayer = nn.Linear(c, out, bias=False)

    def forward(self, x):
        return self.LinearLayer(self.Basis(x).view(x.shape[0], -1))


class Stage(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.Layers = nn.ModuleList(layers)

    def forward(self, x):
        for layer in self.Layers:
            x = layer(x)
        return x


class Generator(nn.Module):
    def __init__(self, z_dim, channels, widths, cards, blocks, expansion=2, kernel=3, classes=0):
        super().__init__()
        self.classes = classes
        rb = lambda c, card: ResidualBlock(c, card, expansion, kernel)
        embed = z_dim if classes > 0 else 0
        stages = [Stage([GenerativeBasis(z_dim + embed, widths[0])] + [rb(widths[0], cards[0]) for _ in range(blocks[0])])]
        for i in range(1, len(widths)):
            stages.append(Stage([Resample(widths[i - 1], widths[i], True)] + [rb(widths[i], cards[i]) for _ in range(blocks[i])]))
        self.MainLayers = nn.ModuleList(stages)
        self.AggregationLayer = Convolution(widths[-1], channels, 1)
        if classes > 0:
            self.EmbeddingLayer = nn.Linear(classes, z_dim, bias=False)

    def forward(self, z, c=None):
        x = torch.cat([z, self.EmbeddingLayer(c)], 1) if self.classes > 0 else z
        for s in self.MainLayers:
            x = s(x)
        return self.AggregationLayer(x)


class Discriminator(nn.Module):
    """Per-stage lists as G's (from 4x4 up); D uses them reversed, as the reference's train.py."""

    def __init__(self, channels, widths, cards, blocks, expansion=2, kernel=3, classes=0):
        super().__init__()
        self.classes = classes
        rb = lambda c, card: ResidualBlock(c, card, expansion, kernel)
        w, cd, b = widths[::-1], cards[::-1], blocks[::-1]
        out = w[-1] if classes > 0 else 1
        stages = [Stage([rb(w[i], cd[i]) for _ in range(b[i])] + [Resample(w[i], w[i + 1], False)]) for i in range(len(w) - 1)]
        stages.append(Stage([rb(w[-1], cd[-1]) for _ in range(b[-1])] + [DiscriminativeBasis(w[-1], out)]))
        self.ExtractionLayer = Convolution(channels, w[0], 1)
        self.MainLayers = nn.ModuleList(stages)
        if classes > 0:
            self.EmbeddingLayer = nn.Linear(classes, out, bias=False)

    def embed(self, x):
        x = self.ExtractionLayer(x)
        for s in self.MainLayers[:-1]:
            x = s(x)
        for layer in self.MainLayers[-1].Layers[:-1]:
            x = layer(x)
        return x

    def head(self, f, c=None):
        x = self.MainLayers[-1].Layers[-1](f)
        if self.classes > 0:
            x = (x * self.EmbeddingLayer(c)).sum(dim=1, keepdim=True)
        return x.view(x.shape[0])

    def forward(self, x, c=None):
        return self.head(self.embed(x), c)
