//! BatchNorm for the ResNet generators: the plain affine kind (SNGAN, WGAN-GP, BigGAN's output
//! layer) and BigGAN's class-conditional kind (`layers.ccbn` of BigGAN-PyTorch with `G_shared`):
//!
//! `out = BN(x) * (1 + gain(c)) + bias(c)`, with `BN` unaffine (batch statistics in training,
//! running statistics in eval; eps 1e-5, momentum 0.1) and `gain`, `bias` bias-free linear maps of
//! the conditioning vector `c` (the shared class embedding, plus a z chunk with hierarchical z),
//! spectrally normalised when G is. Without a shared embedding (BigGAN-PyTorch's `G_shared`
//! off, as the FQ-GAN CIFAR runs train), `gain` and `bias` are instead per-class lookup tables
//! (`nn.Embedding`, never spectrally normalised) indexed by the label itself
//! ([`ConditionalBatchNorm::per_class`]). Keys: `<bn>.gain.weight`, `<bn>.bias.weight` (as in
//! BigGAN-PyTorch) and torch's `<bn>.running_mean` / `<bn>.running_var`.
//!
//! Departure: BigGAN-PyTorch names the running statistics `stored_mean` / `stored_var`.

use super::init::LayerInit;
use super::layers::{Embedding, LayerOpts, Linear};
use tch::{nn, Tensor};

/// BatchNorm's eps and running-average momentum in every reference (PyTorch defaults).
pub const EPS: f64 = 1e-5;
pub const MOMENTUM: f64 = 0.1;

/// Plain BatchNorm2d with weight 1 and bias 0 at start (tch's default draws the weight from
/// U(0, 1), which none of the references do).
pub fn batch_norm(p: nn::Path, channels: i64) -> nn::BatchNorm {
    let cfg = nn::BatchNormConfig {
        ws_init: nn::Init::Const(1.0),
        bs_init: nn::Init::Const(0.0),
        eps: EPS,
        momentum: MOMENTUM,
        ..Default::default()
    };
    nn::batch_norm2d(p, channels, cfg)
}

/// What maps the conditioning input to a gain or bias.
#[derive(Debug)]
enum CondMap {
    /// A vector `[B, cond_dim]` (shared embedding, plus a z chunk).
    Linear(Linear),
    /// Integer labels `[B]`.
    PerClass(Embedding),
}

impl CondMap {
    fn forward_t(&self, cond: &Tensor, train: bool) -> Tensor {
        match self {
            CondMap::Linear(l) => l.forward_t(cond, train),
            CondMap::PerClass(e) => e.forward_t(cond, train),
        }
    }
}

/// Class-conditional BatchNorm (see the module docs).
#[derive(Debug)]
pub struct ConditionalBatchNorm {
    gain: CondMap,
    bias: CondMap,
    running_mean: Tensor,
    running_var: Tensor,
}

impl ConditionalBatchNorm {
    /// `channels` of the feature map, `cond_dim` of the conditioning vector; `sn` normalises the
    /// two linear maps.
    pub fn new(p: nn::Path, channels: i64, cond_dim: i64, init: LayerInit, sn: bool) -> Self {
        let opts = LayerOpts {
            init,
            bias: false,
            sn,
        };
        ConditionalBatchNorm {
            gain: CondMap::Linear(Linear::new(&p / "gain", cond_dim, channels, opts)),
            bias: CondMap::Linear(Linear::new(&p / "bias", cond_dim, channels, opts)),
            running_mean: p.zeros_no_train("running_mean", &[channels]),
            running_var: p.ones_no_train("running_var", &[channels]),
        }
    }

    /// Gains and biases looked up per class (`n_classes` rows each); `forward_t` then takes the
    /// labels as `cond`.
    pub fn per_class(p: nn::Path, channels: i64, n_classes: i64, init: LayerInit) -> Self {
        let opts = LayerOpts {
            init,
            bias: false,
            sn: false,
        };
        ConditionalBatchNorm {
            gain: CondMap::PerClass(Embedding::new(&p / "gain", n_classes, channels, opts)),
            bias: CondMap::PerClass(Embedding::new(&p / "bias", n_classes, channels, opts)),
            running_mean: p.zeros_no_train("running_mean", &[channels]),
            running_var: p.ones_no_train("running_var", &[channels]),
        }
    }

    /// `x`: `[B, C, H, W]`; `cond`: `[B, cond_dim]` (or labels `[B]` for [`Self::per_class`]).
    pub fn forward_t(&self, x: &Tensor, cond: &Tensor, train: bool) -> Tensor {
        let b = x.size()[0];
        let gain = (self.gain.forward_t(cond, train) + 1.0).view([b, -1, 1, 1]);
        let bias = self.bias.forward_t(cond, train).view([b, -1, 1, 1]);
        let h = x.batch_norm(
            None::<&Tensor>,
            None,
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            MOMENTUM,
            EPS,
            true,
        );
        h * gain + bias
    }
}
