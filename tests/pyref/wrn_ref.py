"""Reference for gantry's Wide ResNet: the WRN of the official AdaptiveMix classification code
(WentianZhang-ML/AdaptiveMix, classification/models.py, class Wide_ResNet_orthognal), transcribed
with the same module tree, so its state_dict names and shapes are the reference's.

Layout, as the reference builds it:
- conv1: 3x3, in_channels -> 16, stride 1, padding 1, with bias (the reference hard-codes 3
  input channels; `in_channels` replaces that constant and nothing else).
- layer1/2/3: (depth - 4) / 6 pre-activation blocks each, widths 16k, 32k, 64k; the first block
  of layer2 and layer3 has stride 2. Block: h = conv1(relu(bn1(x))); h = conv2(dropout(relu(bn2(h))))
  with the stride on conv2; out = h + shortcut(x), where the shortcut sees the RAW block input x
  (not the BN-ReLU'd one) and is a 1x1 conv with bias at index 0 of an nn.Sequential when the
  stride or the width changes, the identity otherwise. Every conv has a bias.
- no BN-ReLU after layer3: the top-level `bn1` (BatchNorm2d(64k, momentum=0.9)) exists in the
  state_dict but the reference's forward never calls it.
- F.avg_pool2d(kernel 8) then flatten: global average pooling for 32x32 inputs only.
- `linear`: nn.Linear(64k, num_classes, bias=False). The reference feeds it L2-normalised
  features and takes abs (the orthogonal head, `orthogonal_logits`); `forward` here is the plain
  linear map of the raw features, as gantry's linear head.
Init (as the reference): conv weights N(0, sqrt(2 / (kh * kw * out_channels))), conv biases
left at PyTorch's default, BN weight 1 / bias 0, linear weight orthogonal (gain 1) and frozen.

Command line: python wrn_ref.py IN OUT. IN (npz, or .safetensors when that package is
installed) holds "x" (float64 NCHW) and every parameter and buffer under its state_dict name;
depth, widen, classes and input channels are read off the shapes. A missing
`*.num_batches_tracked` is filled with 0 (gantry keeps no such counter; eval mode never reads
it); every other key must match exactly (load_state_dict(strict=True)). Runs in eval mode,
float64, and writes to OUT (same format rules): "features" (pooled, flattened, before the head),
"logits" (linear(features)), "embedding" (features L2-normalised, the reference's _embedding)
and "ortho_logits" (|linear(embedding)|, the reference's forward).
"""
import math
import re
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class WideBasic(nn.Module):
    """Pre-activation wide block; attribute names are the reference's (bn1, conv1, dropout, bn2,
    conv2, shortcut)."""

    def __init__(self, cin, cout, dropout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=1, padding=1, bias=True)
        self.dropout = nn.Dropout(p=dropout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=stride, padding=1, bias=True)
        projection = stride != 1 or cin != cout
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=True)) if projection \
            else nn.Sequential()

    def forward(self, x):
        h = self.conv1(F.relu(self.bn1(x)))
        h = self.conv2(self.dropout(F.relu(self.bn2(h))))
        return h + self.shortcut(x)


class WRN(nn.Module):
    def __init__(self, depth, widen, num_classes, in_channels=3, dropout=0.0):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError("Wide ResNet depth must be 6n + 4")
        blocks = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=True)
        cin = widths[0]
        for i, (cout, stride) in enumerate(zip(widths[1:], (1, 2, 2)), start=1):
            layer = []
            for j in range(blocks):
                layer.append(WideBasic(cin, cout, dropout, stride if j == 0 else 1))
                cin = cout
            setattr(self, f"layer{i}", nn.Sequential(*layer))
        # Present in the reference's state_dict, never used by its forward.
        self.bn1 = nn.BatchNorm2d(widths[3], momentum=0.9)
        self.linear = nn.Linear(widths[3], num_classes, bias=False)
        self.linear.weight.requires_grad = False
        self.n_features = widths[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.orthogonal_(m.weight, 1.0)

    def features(self, x):
        h = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return F.avg_pool2d(h, 8).flatten(1)

    def embedding(self, x):
        return F.normalize(self.features(x), p=2, dim=1)

    def orthogonal_logits(self, x):
        return self.linear(self.embedding(x)).abs()

    def forward(self, x):
        return self.linear(self.features(x))


def _read(path):
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)
    return {k: torch.from_numpy(v) for k, v in np.load(path).items()}


def _write(path, out):
    out = {k: v.detach().contiguous() for k, v in out.items()}
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file
        save_file(out, path)
    else:
        np.savez(path, **{k: v.numpy() for k, v in out.items()})


if __name__ == "__main__":
    torch.set_default_dtype(torch.float64)
    t = _read(sys.argv[1])
    x = t.pop("x").double()
    blocks = 1 + max(int(m.group(1)) for k in t if (m := re.match(r"layer1\.(\d+)\.", k)))
    net = WRN(6 * blocks + 4, t["layer1.0.conv1.weight"].shape[0] // 16, t["linear.weight"].shape[0],
              in_channels=t["conv1.weight"].shape[1]).double()
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked") and k not in t:
            t[k] = torch.zeros_like(v)
    net.load_state_dict({k: (v if k.endswith("num_batches_tracked") else v.double()) for k, v in t.items()},
                        strict=True)
    net.eval()
    with torch.no_grad():
        f = net.features(x)
        out = {"features": f, "logits": net.linear(f), "embedding": net.embedding(x),
               "ortho_logits": net.orthogonal_logits(x)}
    _write(sys.argv[2], out)
