//! What one classifier training step computes (the loop in `train.rs` decides when).
//!
//! - `ce`: cross-entropy on the clean batch.
//! - `mixup`: Zhang et al. 2018, `lam * CE(f(x_mix), y) + (1 - lam) * CE(f(x_mix), y[perm])`.
//! - `adaptivemix`: docs/adaptivemix.md "Classifier use": the GAN plug-in's mixing call
//!   ([`crate::plugins::adaptivemix::mix`], two `embed` passes where the reference runs three;
//!   equal results, tested there) gives `logit = h(z) + h(e(x_mix))` and `L_am`; the loss is
//!   `lam * CE(logit, y) + (1 - lam) * CE(logit, y[perm]) + w * L_am`, MSE distance by default;
//!   one lambda and one permutation of the whole batch per step, as the reference.

use super::nets::Net;
use crate::error::{Error, Result};
use crate::plugins::adaptivemix::{self, AdaptiveMixConfig, Distance, Draw};
use crate::plugins::Pass;
use crate::stats::Stats;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// `objective.mode`
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Ce,
    Mixup,
    Adaptivemix,
}

impl Mode {
    pub const NAMES: &'static [&'static str] = &["ce", "mixup", "adaptivemix"];
}

/// `[objective]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectiveConfig {
    /// `ce`, `mixup` or `adaptivemix`.
    pub mode: Mode,
    /// lambda ~ Beta(alpha, alpha) (mixup and AdaptiveMix).
    pub alpha: f64,
    /// AdaptiveMix: noise std on the detached target feature.
    pub sigma: f64,
    /// AdaptiveMix: weight of the shrinkage loss.
    pub weight: f64,
    /// AdaptiveMix: `mse` (the reference's for classifiers), `cosine` or `l2`.
    pub distance: Distance,
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        ObjectiveConfig {
            mode: Mode::Ce,
            alpha: 1.0,
            sigma: 0.05,
            weight: 1.0,
            distance: Distance::Mse,
        }
    }
}

impl ObjectiveConfig {
    fn adaptivemix(&self) -> AdaptiveMixConfig {
        AdaptiveMixConfig {
            enabled: true,
            alpha: self.alpha,
            sigma: self.sigma,
            weight: self.weight,
            distance: self.distance,
            in_g: false,
            per_sample_lambda: false,
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.adaptivemix().validate().map_err(|e| match e {
            Error::Config { key, msg } => Error::Config {
                key: key.replace("adaptivemix.", "objective."),
                msg,
            },
            e => e,
        })
    }
}

/// The loss of one step and what to log about it (detached scalars, still on the device).
pub struct StepLoss {
    pub loss: Tensor,
    pub parts: Vec<(&'static str, Tensor)>,
}

impl StepLoss {
    /// The logged parts, read to the host in one read (on logging steps only).
    pub fn stats(&self) -> Stats {
        Stats::read_all(self.parts.iter().map(|(k, v)| (*k, v)))
    }
}

/// One step's loss with the random draws made here (libtorch's generator, seeded by the loop).
pub fn loss(net: &Net, x01: &Tensor, y: &Tensor, cfg: &ObjectiveConfig) -> StepLoss {
    let b = x01.size()[0];
    let draw = Draw::sample(b, cfg.alpha, false, x01.device());
    let noise = |shape: &[i64]| Tensor::randn(shape, (Kind::Float, x01.device()));
    loss_with(net, x01, y, cfg, &draw, &noise)
}

/// One step's loss with explicit draws (`noise` returns N(0, 1) of the feature's shape).
pub fn loss_with(
    net: &Net,
    x01: &Tensor,
    y: &Tensor,
    cfg: &ObjectiveConfig,
    draw: &Draw,
    noise: &dyn Fn(&[i64]) -> Tensor,
) -> StepLoss {
    let mut parts: Vec<(&'static str, Tensor)> = Vec::new();
    let mut log = |k: &'static str, v: &Tensor| parts.push((k, v.detach()));
    let mixed_ce = |logits: &Tensor, lam: &Tensor| {
        let y_b = y.index_select(0, &draw.perm);
        let lam = lam.to_kind(logits.kind());
        &lam * cross_entropy(logits, y) + (1.0 - &lam) * cross_entropy(logits, &y_b)
    };
    let loss = match cfg.mode {
        Mode::Ce => {
            let logits = net.forward(x01, true);
            log("train/acc", &accuracy(&logits, y));
            cross_entropy(&logits, y)
        }
        Mode::Mixup => {
            let lam = draw.lam.to_kind(x01.kind());
            let x_mix = &lam * x01 + (1.0 - &lam) * x01.index_select(0, &draw.perm);
            let logits = net.forward(&x_mix, true);
            log("train/lambda", &draw.lam);
            mixed_ce(&logits, &draw.lam)
        }
        Mode::Adaptivemix => {
            let mut embed = |x: &Tensor, _: Pass| net.embed(x, true);
            let head = |f: &Tensor| net.head(f);
            let out = adaptivemix::mix(&mut embed, &head, x01, draw, noise, &cfg.adaptivemix());
            log("train/l_am", &out.l_am);
            log("train/am_cos", &out.cos);
            log("train/lambda", &draw.lam);
            let ce = mixed_ce(&out.logits, &draw.lam);
            log("train/ce", &ce);
            ce + out.l_am * cfg.weight
        }
    };
    log("train/loss", &loss);
    StepLoss { loss, parts }
}

/// Mean cross-entropy in the logits' own precision (tch's `cross_entropy_for_logits` computes in
/// f32, which would make the f64 reference tests meaningless).
pub fn cross_entropy(logits: &Tensor, y: &Tensor) -> Tensor {
    let logp = logits.log_softmax(-1, logits.kind());
    if crate::device::deterministic() {
        // CUDA's nll_loss raises under deterministic algorithms; the same mean of the picked
        // log-probabilities through gather (deterministic there).
        return -logp.gather(1, &y.unsqueeze(1), false).mean(None::<Kind>);
    }
    logp.nll_loss(y)
}

/// Share of rows whose arg-max is the label.
pub fn accuracy(logits: &Tensor, y: &Tensor) -> Tensor {
    logits
        .argmax(1, false)
        .eq_tensor(y)
        .to_kind(Kind::Float)
        .mean(Kind::Float)
}
