"""PyTorch twin of gantry's StyleGAN2 (crates/gantry/src/models/stylegan2/), used by the reference
tests (stylegan2_ops.py, stylegan2_nets.py) and the benchmark twin (benches/stylegan2_step.py).

It transcribes the semantics of NVlabs/stylegan2-ada-pytorch: `upfirdn2d` and `bias_act` as their
`impl='ref'` code computes them, `conv2d_resample` (its fast paths, and with `generic=True` its
general pad-upsample-convolve-downsample path, which the tests use to check the fast paths), and
`modulated_conv2d` plus the networks of `training/networks.py` for config F (skip G, resnet D),
without fp16 and conv_clamp. Module and parameter names are the reference's, so `state_dict()` keys
are gantry's checkpoint keys (filters are non-persistent buffers; `pl_mean` is gantry's addition).
"""
import numpy as np
import torch
import torch.nn.functional as F

SQRT2 = float(np.sqrt(2.0))


# ---------------------------------------------------------------------------------------------
# Ops.

def setup_filter(taps=(1.0, 3.0, 3.0, 1.0)):
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(x, f, up=1, down=1, pad=(0, 0, 0, 0), gain=1.0):
    """Zero-insert by `up`, pad/crop by pad=[x0, x1, y0, y1], convolve with f * gain, keep every
    `down`-th pixel."""
    b, c, h, w = x.shape
    px0, px1, py0, py1 = pad
    x = x.reshape(b, c, h, 1, w, 1)
    x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
    x = x.reshape(b, c, h * up, w * up)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    k = (f * gain).to(x.dtype).flip([0, 1])
    k = k[None, None].repeat(c, 1, 1, 1)
    x = F.conv2d(x, k, groups=c)
    return x[:, :, ::down, ::down]


def upsample2d(x, f):
    fw = f.shape[1]
    p0, p1 = (fw + 1) // 2, (fw - 2) // 2
    return upfirdn2d(x, f, up=2, pad=(p0, p1, p0, p1), gain=4.0)


def downsample2d(x, f):
    fw = f.shape[1]
    p0, p1 = (fw - 1) // 2, (fw - 2) // 2
    return upfirdn2d(x, f, down=2, pad=(p0, p1, p0, p1))


def _conv(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    if not flip_weight:  # conv2d correlates; flipping makes it a convolution
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(x, w, f, up=1, down=1, padding=0, groups=1, flip_weight=True, generic=False):
    oc, icg, kh, kw = w.shape
    fh, fw = f.shape
    px0 = px1 = py0 = py1 = padding
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2
    if not generic:
        if kw == 1 and kh == 1 and down > 1 and up == 1:
            x = upfirdn2d(x, f, down=down, pad=(px0, px1, py0, py1))
            return _conv(x, w, groups=groups, flip_weight=flip_weight)
        if kw == 1 and kh == 1 and up > 1 and down == 1:
            x = _conv(x, w, groups=groups, flip_weight=flip_weight)
            return upfirdn2d(x, f, up=up, pad=(px0, px1, py0, py1), gain=up ** 2)
        if down > 1 and up == 1:
            x = upfirdn2d(x, f, pad=(px0, px1, py0, py1))
            return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)
        if up > 1:
            if groups == 1:
                w = w.transpose(0, 1)
            else:
                w = w.reshape(groups, oc // groups, icg, kh, kw).transpose(1, 2).reshape(groups * icg, oc // groups, kh, kw)
            px0 -= kw - 1
            px1 -= kw - up
            py0 -= kh - 1
            py1 -= kh - up
            pxt = max(min(-px0, -px1), 0)
            pyt = max(min(-py0, -py1), 0)
            x = _conv(x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True, flip_weight=not flip_weight)
            x = upfirdn2d(x, f, pad=(px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt), gain=up ** 2)
            if down > 1:
                x = upfirdn2d(x, f, down=down)
            return x
        if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
            return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)
    ident = torch.ones([1, 1], dtype=torch.float32)
    x = upfirdn2d(x, f if up > 1 else ident, up=up, pad=(px0, px1, py0, py1), gain=up ** 2)
    x = _conv(x, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = upfirdn2d(x, f, down=down)
    return x


def bias_act(x, b=None, act="linear", gain=None):
    if gain is None:
        gain = SQRT2 if act == "lrelu" else 1.0
    if b is not None:
        x = x + b.reshape([-1 if i == 1 else 1 for i in range(x.ndim)])
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2)
    if gain != 1:
        x = x * gain
    return x


def normalize_2nd_moment(x, eps=1e-8):
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def modulated_conv2d(x, weight, styles, noise=None, up=1, padding=0, f=None, demodulate=True,
                     flip_weight=True, fused_modconv=True, generic=False):
    n = x.shape[0]
    oc, ic, kh, kw = weight.shape
    w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)
    dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt() if demodulate else None
    if not fused_modconv:
        x = x * styles.reshape(n, -1, 1, 1)
        x = conv2d_resample(x, weight, f, up=up, padding=padding, flip_weight=flip_weight, generic=generic)
        if demodulate:
            x = x * dcoefs.reshape(n, -1, 1, 1)
        if noise is not None:
            x = x + noise
        return x
    if demodulate:
        w = w * dcoefs.reshape(n, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, ic, kh, kw)
    x = conv2d_resample(x, w, f, up=up, padding=padding, groups=n, flip_weight=flip_weight, generic=generic)
    x = x.reshape(n, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise
    return x


def minibatch_std(x, group_size=4, num_channels=1):
    n, c, h, w = x.shape
    g = min(group_size, n)
    f = num_channels
    y = x.reshape(g, -1, f, c // f, h, w)
    y = y - y.mean(dim=0)
    y = y.square().mean(dim=0)
    y = (y + 1e-8).sqrt()
    y = y.mean(dim=[2, 3, 4])
    y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


# ---------------------------------------------------------------------------------------------
# Layers and networks.

class FullyConnectedLayer(torch.nn.Module):
    def __init__(self, in_features, out_features, activation="linear", lr_multiplier=1.0, bias_init=0.0):
        super().__init__()
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain
        if self.activation == "linear":
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)


class Conv2dLayer(torch.nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear", down=1):
        super().__init__()
        self.activation = activation
        self.down = down
        self.padding = kernel_size // 2
        self.register_buffer("resample_filter", setup_filter(), persistent=False)
        self.weight_gain = 1 / np.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = SQRT2 if activation == "lrelu" else 1.0
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x, gain=1.0):
        w = self.weight * self.weight_gain
        x = conv2d_resample(x, w, self.resample_filter, down=self.down, padding=self.padding)
        return bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain)


class MappingNetwork(torch.nn.Module):
    # c_dim > 0: a linear label embedding (to embed_features = w_dim), normalised and concatenated
    # after the normalised z (z_dim = 0: the embedding alone, as D's label mapping); num_ws None =
    # no broadcast, w_avg_beta None = no tracked average (D's).
    def __init__(self, z_dim, w_dim, num_ws, num_layers=8, lr_multiplier=0.01, w_avg_beta=0.995, c_dim=0):
        super().__init__()
        self.z_dim, self.c_dim = z_dim, c_dim
        self.num_ws, self.num_layers, self.w_avg_beta = num_ws, num_layers, w_avg_beta
        embed = w_dim if c_dim > 0 else 0
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed)
        features = [z_dim + embed] + [w_dim] * num_layers
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(features[i], features[i + 1], activation="lrelu", lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z, c=None, truncation_psi=1.0, skip_w_avg_update=False):
        x = normalize_2nd_moment(z) if self.z_dim > 0 else None
        if self.c_dim > 0:
            y = normalize_2nd_moment(self.embed(c))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if self.w_avg_beta is not None and self.training and not skip_w_avg_update:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is None:
            return x
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            x = self.w_avg.lerp(x, truncation_psi)
        return x


class SynthesisLayer(torch.nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, resolution, up=1):
        super().__init__()
        self.resolution, self.up = resolution, up
        self.register_buffer("resample_filter", setup_filter(), persistent=False)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, 3, 3]))
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))
        self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode="random", fused_modconv=True, generic=False):
        styles = self.affine(w)
        noise = None
        if noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], dtype=x.dtype) * self.noise_strength
        if noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=1, f=self.resample_filter,
                             flip_weight=(self.up == 1), fused_modconv=fused_modconv, generic=generic)
        return bias_act(x, self.bias, act="lrelu")


class ToRGBLayer(torch.nn.Module):
    def __init__(self, in_channels, out_channels, w_dim):
        super().__init__()
        self.register_buffer("resample_filter", setup_filter(), persistent=False)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / np.sqrt(in_channels)

    def forward(self, x, w, fused_modconv=True, generic=False):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, f=self.resample_filter,
                             fused_modconv=fused_modconv, generic=generic)
        return bias_act(x, self.bias)


class SynthesisBlock(torch.nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels):
        super().__init__()
        self.in_channels = in_channels
        self.register_buffer("resample_filter", setup_filter(), persistent=False)
        self.num_conv = 1
        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim)

    def forward(self, x, img, ws, **kw):
        w_iter = iter(ws.unbind(dim=1))
        generic = kw.get("generic", False)
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = self.conv1(x, next(w_iter), **kw)
        else:
            x = self.conv0(x, next(w_iter), **kw)
            x = self.conv1(x, next(w_iter), **kw)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter), fused_modconv=kw.get("fused_modconv", True), generic=generic)
        img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(torch.nn.Module):
    def __init__(self, w_dim, img_resolution, img_channels, channel_base, channel_max):
        super().__init__()
        self.block_resolutions = [2 ** i for i in range(2, int(np.log2(img_resolution)) + 1)]
        ch = {r: min(channel_base // r, channel_max) for r in self.block_resolutions}
        self.num_ws = 0
        for r in self.block_resolutions:
            block = SynthesisBlock(ch[r // 2] if r > 4 else 0, ch[r], w_dim, r, img_channels)
            self.num_ws += block.num_conv
            setattr(self, f"b{r}", block)
        self.num_ws += 1

    def forward(self, ws, **kw):
        x = img = None
        w_idx = 0
        for r in self.block_resolutions:
            block = getattr(self, f"b{r}")
            x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + 1), **kw)
            w_idx += block.num_conv
        return img


class Generator(torch.nn.Module):
    def __init__(self, z_dim, w_dim, img_resolution, img_channels, mapping_layers=8, channel_base=32768, channel_max=512, c_dim=0):
        super().__init__()
        self.z_dim = z_dim
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, channel_base, channel_max)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, num_layers=mapping_layers, c_dim=c_dim)
        self.register_buffer("pl_mean", torch.zeros([]))

    def forward(self, z, c=None, truncation_psi=1.0, **kw):
        return self.synthesis(self.mapping(z, c, truncation_psi=truncation_psi), **kw)


class DiscriminatorBlock(torch.nn.Module):
    def __init__(self, in_channels, tmp_channels, out_channels, img_channels):
        super().__init__()
        self.in_channels = in_channels
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu")
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu")
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x, img):
        if self.in_channels == 0:
            x = self.fromrgb(img)
        y = self.skip(x, gain=np.sqrt(0.5))
        x = self.conv0(x)
        x = self.conv1(x, gain=np.sqrt(0.5))
        return y + x


class DiscriminatorEpilogue(torch.nn.Module):
    def __init__(self, in_channels, resolution=4, mbstd_group_size=4, mbstd_num_channels=1, cmap_dim=0):
        super().__init__()
        self.mbstd_group_size, self.mbstd_num_channels = mbstd_group_size, mbstd_num_channels
        self.cmap_dim = cmap_dim
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu")
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x, cmap=None):
        if self.mbstd_num_channels > 0:
            x = minibatch_std(x, self.mbstd_group_size, self.mbstd_num_channels)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if self.cmap_dim > 0:
            # Projection: the output's inner product with the mapped label.
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        return x


class Discriminator(torch.nn.Module):
    def __init__(self, img_resolution, img_channels, channel_base=32768, channel_max=512, mbstd_group_size=4, mbstd_num_channels=1, c_dim=0):
        super().__init__()
        self.c_dim = c_dim
        self.block_resolutions = [2 ** i for i in range(int(np.log2(img_resolution)), 2, -1)]
        ch = {r: min(channel_base // r, channel_max) for r in self.block_resolutions + [4]}
        for r in self.block_resolutions:
            setattr(self, f"b{r}", DiscriminatorBlock(ch[r] if r < img_resolution else 0, ch[r], ch[r // 2], img_channels))
        cmap_dim = ch[4] if c_dim > 0 else 0
        if c_dim > 0:
            # stylegan2-ada's train.py leaves D's mapping at MappingNetwork's defaults (8 layers).
            self.mapping = MappingNetwork(0, cmap_dim, None, w_avg_beta=None, c_dim=c_dim)
        self.b4 = DiscriminatorEpilogue(ch[4], mbstd_group_size=mbstd_group_size, mbstd_num_channels=mbstd_num_channels, cmap_dim=cmap_dim)

    def embed(self, img):
        x = None
        for r in self.block_resolutions:
            x = getattr(self, f"b{r}")(x, img)
        return x

    def head(self, x, c=None):
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, cmap)

    def forward(self, img, c=None):
        return self.head(self.embed(img), c)
