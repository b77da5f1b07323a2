//! Weight initialisation schemes of the reference implementations gantry's ResNet backbones
//! follow, as tensors ready to register in a VarStore.
//!
//! - `Glorot`: SNGAN's chainer code (`GlorotUniform(sqrt(2))` on the 3x3 convolutions of residual
//!   paths, `GlorotUniform()` on shortcuts, linears and the output convolution, zero biases). The
//!   WGAN-GP ResNet's tflib init is the same distribution: its `he_init` conv is uniform with std
//!   `sqrt(4 / (fan_in + fan_out))`, i.e. Glorot-uniform with gain sqrt(2), and its default
//!   ("glorot") linears and shortcuts are gain 1.
//! - `Orthogonal`, `Normal` (N(0, 0.02)): BigGAN-PyTorch's `G_init`/`D_init` = `ortho` | `N02`,
//!   which touch only the weights of Conv2d, Linear and Embedding modules; biases keep PyTorch's
//!   default `U(+-1/sqrt(fan_in))`, reproduced here.

use tch::{Device, Kind, Tensor};

/// How one weight tensor is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WeightInit {
    /// `U(+-gain * sqrt(6 / (fan_in + fan_out)))` (torch `xavier_uniform_`, chainer `GlorotUniform`).
    XavierUniform { gain: f64 },
    /// torch `orthogonal_`: the weight flattened to `[rows, rest]` is (semi-)orthogonal.
    Orthogonal,
    /// `N(0, std^2)`.
    Normal { std: f64 },
    /// PyTorch's default for Conv2d/Linear (`kaiming_uniform_(a=sqrt(5))`): `U(+-1/sqrt(fan_in))`.
    TorchDefault,
}

/// How a bias vector is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasInit {
    Zeros,
    /// PyTorch's default for Conv2d/Linear: `U(+-1/sqrt(fan_in))`.
    TorchDefault,
}

/// The initialisation of one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerInit {
    pub weight: WeightInit,
    pub bias: BiasInit,
}

/// A network-wide scheme (`model.init`: `glorot`, `ortho`, `normal`); [`InitScheme::layer`]
/// says what it means for one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum InitScheme {
    /// SNGAN / WGAN-GP ResNets (see the module docs).
    #[serde(rename = "glorot")]
    Glorot,
    /// BigGAN's `ortho`.
    #[serde(rename = "ortho")]
    Orthogonal,
    /// BigGAN-PyTorch's `N02` (the FQ-GAN CIFAR runs).
    #[serde(rename = "normal")]
    Normal,
}

impl InitScheme {
    /// The init of one layer; `residual` marks the 3x3 convolutions on a residual path, which
    /// the Glorot scheme scales by sqrt(2) for the ReLU in front of them.
    pub fn layer(self, residual: bool) -> LayerInit {
        match self {
            InitScheme::Glorot => LayerInit {
                weight: WeightInit::XavierUniform {
                    gain: if residual { 2f64.sqrt() } else { 1.0 },
                },
                bias: BiasInit::Zeros,
            },
            InitScheme::Orthogonal => LayerInit {
                weight: WeightInit::Orthogonal,
                bias: BiasInit::TorchDefault,
            },
            InitScheme::Normal => LayerInit {
                weight: WeightInit::Normal { std: 0.02 },
                bias: BiasInit::TorchDefault,
            },
        }
    }
}

/// PyTorch's `_calculate_fan_in_and_fan_out`: dim 1 and dim 0 times the receptive field.
pub fn fans(dims: &[i64]) -> (i64, i64) {
    let receptive: i64 = dims.iter().skip(2).product();
    (dims[1] * receptive, dims[0] * receptive)
}

/// A float weight of shape `dims` drawn from libtorch's generator.
pub fn weight(init: WeightInit, dims: &[i64], device: Device) -> Tensor {
    let opts = (Kind::Float, device);
    match init {
        WeightInit::XavierUniform { gain } => {
            let (fan_in, fan_out) = fans(dims);
            let bound = gain * (6.0 / (fan_in + fan_out) as f64).sqrt();
            Tensor::empty(dims, opts).uniform_(-bound, bound)
        }
        WeightInit::Normal { std } => Tensor::randn(dims, opts) * std,
        WeightInit::TorchDefault => {
            let bound = 1.0 / (fans(dims).0 as f64).sqrt();
            Tensor::empty(dims, opts).uniform_(-bound, bound)
        }
        WeightInit::Orthogonal => {
            // torch.nn.init.orthogonal_: QR of a Gaussian matrix (transposed when wide), with the
            // signs of R's diagonal folded into Q so that the result is uniformly distributed.
            let rows = dims[0];
            let cols: i64 = dims.iter().skip(1).product();
            let mut a = Tensor::randn([rows, cols], opts);
            if rows < cols {
                a = a.tr();
            }
            let (q, r) = Tensor::linalg_qr(&a, "reduced");
            let mut q = q * r.diag(0).sign();
            if rows < cols {
                q = q.tr();
            }
            q.contiguous().view(dims)
        }
    }
}

/// A float bias of `n` entries for a layer with `fan_in` inputs.
pub fn bias(init: BiasInit, n: i64, fan_in: i64, device: Device) -> Tensor {
    match init {
        BiasInit::Zeros => Tensor::zeros([n], (Kind::Float, device)),
        BiasInit::TorchDefault => {
            let bound = 1.0 / (fan_in as f64).sqrt();
            Tensor::empty([n], (Kind::Float, device)).uniform_(-bound, bound)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthogonal_rows_or_columns_are_orthonormal() {
        for dims in [[8i64, 3, 3, 3], [64, 2, 1, 1]] {
            let w = weight(WeightInit::Orthogonal, &dims, Device::Cpu).to_kind(Kind::Double);
            let m = w.view([dims[0], -1]);
            let (r, c) = (m.size()[0], m.size()[1]);
            let gram = if r <= c {
                m.matmul(&m.tr())
            } else {
                m.tr().matmul(&m)
            };
            let eye = Tensor::eye(r.min(c), (Kind::Double, Device::Cpu));
            assert!((gram - eye).abs().max().double_value(&[]) < 1e-5);
        }
    }

    #[test]
    fn glorot_bound_and_fans_follow_pytorch() {
        assert_eq!(fans(&[16, 4, 3, 3]), (36, 144));
        assert_eq!(fans(&[10, 7]), (7, 10));
        let w = weight(
            WeightInit::XavierUniform { gain: 2f64.sqrt() },
            &[16, 4, 3, 3],
            Device::Cpu,
        );
        let bound = 2f64.sqrt() * (6.0f64 / 180.0).sqrt();
        let max = w.abs().max().double_value(&[]);
        assert!(max <= bound && max > 0.9 * bound, "{max} vs {bound}");
    }
}
