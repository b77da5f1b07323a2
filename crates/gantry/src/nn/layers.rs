//! Conv2d, Linear and Embedding with optional spectral normalisation ([`super::spectral`]) and
//! the initialisation schemes of [`super::init`]. tch's own layers cannot wrap their weight, and
//! SN must sit between the parameter and the op, so the ResNet backbones use these instead.
//!
//! Keys follow PyTorch's module names: `<layer>.weight`, `<layer>.bias`, and with SN
//! `<layer>.weight_u` / `<layer>.weight_v` (torch names the raw weight `weight_orig`; gantry
//! keeps `weight`, the tensor the optimiser sees).

use super::init::{self, LayerInit};
use super::spectral::SpectralNorm;
use tch::{nn, Tensor};

/// What a layer is made of.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerOpts {
    pub init: LayerInit,
    /// Learn a bias.
    pub bias: bool,
    /// Spectrally normalise the weight.
    pub sn: bool,
}

/// A weight (and its SN state) plus an optional bias.
#[derive(Debug)]
struct Weighted {
    weight: Tensor,
    bias: Option<Tensor>,
    sn: Option<SpectralNorm>,
}

impl Weighted {
    fn new(p: &nn::Path, dims: &[i64], opts: LayerOpts) -> Self {
        let device = p.device();
        let weight = p.add("weight", init::weight(opts.init.weight, dims, device), true);
        let fan_in = if dims.len() >= 2 {
            init::fans(dims).0
        } else {
            1
        };
        let bias = opts.bias.then(|| {
            p.add(
                "bias",
                init::bias(opts.init.bias, dims[0], fan_in, device),
                true,
            )
        });
        let sn = opts.sn.then(|| SpectralNorm::new(p, &weight));
        Weighted { weight, bias, sn }
    }

    fn weight(&self, train: bool) -> Tensor {
        match &self.sn {
            Some(sn) => sn.normalise(&self.weight, train),
            None => self.weight.shallow_clone(),
        }
    }
}

/// A 2-D convolution: stride 1 with "same" padding (odd kernels) from [`Conv2d::new`], or any
/// stride and zero padding from [`Conv2d::strided`].
#[derive(Debug)]
pub struct Conv2d {
    w: Weighted,
    padding: i64,
    stride: i64,
}

impl Conv2d {
    pub fn new(p: nn::Path, c_in: i64, c_out: i64, kernel: i64, opts: LayerOpts) -> Self {
        Self::strided(p, c_in, c_out, kernel, 1, kernel / 2, opts)
    }

    /// `stride` and `padding` as torch's `Conv2d` takes them (square).
    pub fn strided(
        p: nn::Path,
        c_in: i64,
        c_out: i64,
        kernel: i64,
        stride: i64,
        padding: i64,
        opts: LayerOpts,
    ) -> Self {
        Conv2d {
            w: Weighted::new(&p, &[c_out, c_in, kernel, kernel], opts),
            padding,
            stride,
        }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let (p, s) = (self.padding, self.stride);
        x.conv2d(
            &self.w.weight(train),
            self.w.bias.as_ref(),
            [s, s],
            [p, p],
            [1, 1],
            1,
        )
    }
}

/// `x W^T + b`.
#[derive(Debug)]
pub struct Linear {
    w: Weighted,
}

impl Linear {
    pub fn new(p: nn::Path, d_in: i64, d_out: i64, opts: LayerOpts) -> Self {
        Linear {
            w: Weighted::new(&p, &[d_out, d_in], opts),
        }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        x.linear(&self.w.weight(train), self.w.bias.as_ref())
    }

    /// The weight parameter itself, before spectral normalisation (torch's `weight_orig`).
    pub fn raw_weight(&self) -> &Tensor {
        &self.w.weight
    }
}

/// A lookup table `[n, dim]` (no bias); SN treats it as an `n x dim` matrix, like torch.
#[derive(Debug)]
pub struct Embedding {
    w: Weighted,
}

impl Embedding {
    pub fn new(p: nn::Path, n: i64, dim: i64, opts: LayerOpts) -> Self {
        Embedding {
            w: Weighted::new(
                &p,
                &[n, dim],
                LayerOpts {
                    bias: false,
                    ..opts
                },
            ),
        }
    }

    /// Rows for integer `labels` of any shape.
    pub fn forward_t(&self, labels: &Tensor, train: bool) -> Tensor {
        Tensor::embedding(&self.w.weight(train), labels, -1, false, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::init::InitScheme;
    use tch::{Device, Kind};

    #[test]
    fn keys_and_trainability() {
        let vs = nn::VarStore::new(Device::Cpu);
        let opts = LayerOpts {
            init: InitScheme::Glorot.layer(true),
            bias: true,
            sn: true,
        };
        let conv = Conv2d::new(vs.root() / "c", 2, 4, 3, opts);
        let lin = Linear::new(vs.root() / "l", 3, 5, LayerOpts { sn: false, ..opts });
        let emb = Embedding::new(vs.root() / "e", 7, 4, opts);
        let mut keys: Vec<String> = vs.variables().into_keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "c.bias",
                "c.weight",
                "c.weight_u",
                "c.weight_v",
                "e.weight",
                "e.weight_u",
                "e.weight_v",
                "l.bias",
                "l.weight"
            ]
        );
        assert_eq!(vs.trainable_variables().len(), 5);
        let x = Tensor::randn([2, 2, 6, 6], (Kind::Float, Device::Cpu));
        assert_eq!(conv.forward_t(&x, true).size(), [2, 4, 6, 6]);
        assert_eq!(
            lin.forward_t(&Tensor::ones([2, 3], (Kind::Float, Device::Cpu)), true)
                .size(),
            [2, 5]
        );
        assert_eq!(
            emb.forward_t(&Tensor::from_slice(&[0i64, 6]), false).size(),
            [2, 4]
        );
    }
}
