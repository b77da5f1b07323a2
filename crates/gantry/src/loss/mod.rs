//! Losses: the adversarial objectives, the gradient penalties, and [`objective`], which computes
//! what each training phase minimises (the training loop decides when phases run).

pub mod adversarial;
pub mod objective;
pub mod penalty;

pub use adversarial::Adversarial;
use serde::{Deserialize, Serialize};

/// `loss.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    /// Adversarial loss: `non-saturating`, `hinge`, `least-squares` or `wasserstein`.
    pub kind: Adversarial,
    /// WGAN gradient penalty (Gulrajani et al. 2017) on real/fake interpolates.
    pub gp: GpConfig,
    /// R1 penalty (Mescheder et al. 2018) on real images.
    pub r1: R1Config,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig { kind: Adversarial::NonSaturating, gp: GpConfig::default(), r1: R1Config::default() }
    }
}

/// `loss.gp.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpConfig {
    /// Apply the gradient penalty in every D step.
    pub enabled: bool,
    /// Its weight (lambda); 10 in the WGAN-GP paper.
    pub weight: f64,
}

impl Default for GpConfig {
    fn default() -> Self {
        GpConfig { enabled: false, weight: 10.0 }
    }
}

/// `loss.r1.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct R1Config {
    /// gamma; 0 disables R1. The penalty is gamma/2 * E ||grad_x D(x)||^2.
    pub gamma: f64,
    /// Lazy regularisation: apply every N D steps, scaled by N (StyleGAN2). 1 = every step.
    pub every: u64,
}

impl Default for R1Config {
    fn default() -> Self {
        R1Config { gamma: 0.0, every: 1 }
    }
}
