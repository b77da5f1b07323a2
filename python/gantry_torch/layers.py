"""Layers whose parameters and buffers are named and computed as gantry's (crates/gantry/src/nn/).

- `BatchNorm2d`: tch's `nn::BatchNorm` as gantry runs it (`nn::norm::normalise`): affine weight
  and bias, `running_mean` / `running_var`, eps 1e-5, momentum 0.1, the unbiased batch variance
  in the running average. Unlike `torch.nn.BatchNorm2d` it has no `num_batches_tracked` buffer
  (gantry's checkpoints have none, so torch's class would not load strictly).
- `Conv2d` / `Linear` with optional spectral normalisation (`nn::layers` + `nn::spectral`):
  the raw weight is `weight` (torch's `spectral_norm` calls it `weight_orig`), the power-iteration
  vectors are the buffers `weight_u` (rows) and `weight_v` (the rest). In eval mode the layer uses
  `weight / sigma` with `sigma = u . (W v)` from the stored vectors, without a power step; in
  training mode one power iteration runs first and updates the buffers, as gantry and
  `torch.nn.utils.spectral_norm` do.

Initial values are placeholders (torch's defaults): these modules exist to load gantry's weights.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

BN_EPS = 1e-5
BN_MOMENTUM = 0.1
SN_EPS = 1e-12


class BatchNorm2d(nn.Module):
    """gantry's BatchNorm: keys `weight`, `bias`, `running_mean`, `running_var` (no
    `num_batches_tracked`). Running statistics in eval mode, batch statistics in training."""

    def __init__(self, channels):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, BN_MOMENTUM, BN_EPS)


def _normalize(x):
    return x / x.norm().clamp_min(SN_EPS)


class _Weighted(nn.Module):
    """A weight, an optional bias and, with `sn`, the spectral-norm vectors."""

    def __init__(self, shape, bias, sn):
        super().__init__()
        self.sn = sn
        self.weight = nn.Parameter(torch.empty(shape))
        fan_in = math.prod(shape[1:])
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if bias:
            self.bias = nn.Parameter(torch.empty(shape[0]).uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in)))
        else:
            self.register_parameter("bias", None)
        if sn:
            self.register_buffer("weight_u", _normalize(torch.randn(shape[0])))
            self.register_buffer("weight_v", _normalize(torch.randn(fan_in)))

    def effective_weight(self):
        """The weight the layer applies: `weight`, or `weight / sigma` with spectral norm."""
        if not self.sn:
            return self.weight
        w = self.weight.reshape(self.weight.shape[0], -1)
        if self.training:
            with torch.no_grad():
                v = _normalize(w.t().mv(self.weight_u))
                self.weight_v.copy_(v)
                self.weight_u.copy_(_normalize(w.mv(v)))
        u, v = self.weight_u.clone(), self.weight_v.clone()
        return self.weight / torch.dot(u, w.mv(v))


class Conv2d(_Weighted):
    """Square convolution; `padding` defaults to `kernel // 2` ("same" for odd kernels)."""

    def __init__(self, c_in, c_out, kernel, stride=1, padding=None, bias=True, sn=False):
        super().__init__((c_out, c_in, kernel, kernel), bias, sn)
        self.stride = stride
        self.padding = kernel // 2 if padding is None else padding

    def forward(self, x):
        return F.conv2d(x, self.effective_weight(), self.bias, self.stride, self.padding)


class Linear(_Weighted):
    """`x W^T + b`."""

    def __init__(self, d_in, d_out, bias=True, sn=False):
        super().__init__((d_out, d_in), bias, sn)

    def forward(self, x):
        return F.linear(x, self.effective_weight(), self.bias)
