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
//!
//! Every BatchNorm of gantry's networks goes through [`normalise`], which in a data-parallel job
//! with `train.sync_bn` ([`set_sync`]) normalises training batches with statistics over every
//! rank's share (torch's SyncBatchNorm): per-channel sums of `x - running_mean` and of their
//! squares are summed over the ranks by an all-reduce that autograd differentiates through, so
//! each rank's loss reaches every rank's inputs. The shift by the running mean (equal on every
//! rank: buffers are broadcast before each step) keeps the one-pass variance accurate.

use super::init::LayerInit;
use super::layers::{Embedding, LayerOpts, Linear};
use crate::dist::Comm;
use std::cell::RefCell;
use tch::{nn, Kind, Tensor};

thread_local! {
    static SYNC: RefCell<Option<Comm>> = const { RefCell::new(None) };
    static SYNC_ERROR: RefCell<Option<crate::error::Error>> = const { RefCell::new(None) };
}

/// Synchronised BatchNorm on this thread over `comm`'s ranks (`None`, or one process: per rank).
pub fn set_sync(comm: Option<Comm>) {
    SYNC.with(|s| *s.borrow_mut() = comm.filter(Comm::distributed));
}

/// The failure of a synchronised BatchNorm's all-reduce since the last call, if any (a forward
/// pass cannot return it; the training loop asks after the phase).
pub fn take_sync_error() -> Option<crate::error::Error> {
    SYNC_ERROR.with(|e| e.borrow_mut().take())
}

/// A tch `nn::BatchNorm`'s forward through [`normalise`].
pub fn forward(bn: &nn::BatchNorm, x: &Tensor, train: bool) -> Tensor {
    normalise(
        x,
        bn.ws.as_ref(),
        bn.bs.as_ref(),
        &bn.running_mean,
        &bn.running_var,
        train,
    )
}

/// BatchNorm of `x` (`[B, C, ...]`) with optional affine `weight`/`bias`, updating the running
/// statistics in training; synchronised over the ranks when [`set_sync`] says so.
pub fn normalise(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    running_mean: &Tensor,
    running_var: &Tensor,
    train: bool,
) -> Tensor {
    let comm = if train {
        SYNC.with(|s| s.borrow().clone())
    } else {
        None
    };
    if let Some(comm) = comm {
        match synchronised(&comm, x, weight, bias, running_mean, running_var) {
            Ok(y) => return y,
            // The next collective of the phase fails too and ends the step; until then, carry on
            // with this rank's statistics.
            Err(e) => SYNC_ERROR.with(|s| *s.borrow_mut() = Some(e)),
        }
    }
    x.batch_norm(
        weight,
        bias,
        Some(running_mean),
        Some(running_var),
        train,
        MOMENTUM,
        EPS,
        true,
    )
}

fn synchronised(
    comm: &Comm,
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    running_mean: &Tensor,
    running_var: &Tensor,
) -> crate::error::Result<Tensor> {
    let c = x.size()[1];
    let mut shape = vec![1i64; x.dim()];
    shape[1] = c;
    let dims: Vec<i64> = (0..x.dim() as i64).filter(|&d| d != 1).collect();
    // Statistics accumulate in fp32 at least: in fp16 a count of 65,520 or a sum of squares past
    // 65,504 is infinite (torch's SyncBatchNorm accumulates in fp32 too).
    let acc = match x.kind() {
        Kind::Half | Kind::BFloat16 => Kind::Float,
        k => k,
    };
    let shift = running_mean.detach().to_kind(acc).view(shape.as_slice());
    let d = x.to_kind(acc) - &shift;
    let count = Tensor::full([1], (x.numel() as i64 / c) as f64, (acc, x.device()));
    let local = Tensor::cat(
        &[
            d.sum_dim_intlist(dims.as_slice(), false, acc),
            d.square().sum_dim_intlist(dims.as_slice(), false, acc),
            count,
        ],
        0,
    );
    let total = comm.sum_differentiable(&local)?;
    let n = total.narrow(0, 2 * c, 1);
    let mean_d = total.narrow(0, 0, c) / &n;
    let var = total.narrow(0, c, c) / &n - mean_d.square();
    let mean = &mean_d + shift.view([c]);
    let mut y = (d - mean_d.view(shape.as_slice()))
        * (var.shallow_clone() + EPS).rsqrt().view(shape.as_slice());
    if let Some(w) = weight {
        y *= w.to_kind(acc).view(shape.as_slice());
    }
    if let Some(b) = bias {
        y += b.to_kind(acc).view(shape.as_slice());
    }
    let y = y.to_kind(x.kind());
    tch::no_grad(|| {
        // On the device (no host read per layer): the unbiased variance n / (n - 1).
        let unbiased = var.detach() * &n / (&n - 1.0).clamp_min(1.0);
        let _ = running_mean
            .shallow_clone()
            .g_mul_scalar_(1.0 - MOMENTUM)
            .g_add_(&(mean.detach().to_kind(running_mean.kind()) * MOMENTUM));
        let _ = running_var
            .shallow_clone()
            .g_mul_scalar_(1.0 - MOMENTUM)
            .g_add_(&(unbiased.to_kind(running_var.kind()) * MOMENTUM));
    });
    Ok(y)
}

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
        let h = normalise(x, None, None, &self.running_mean, &self.running_var, train);
        h * gain + bias
    }
}
