//! Losses: the adversarial objectives, the gradient penalties, and [`objective`], which computes
//! what each training phase minimises (the training loop decides when phases run). See
//! `docs/training.md`.

pub mod adversarial;
pub mod objective;
pub mod penalty;

use crate::error::{Error, Result};
use crate::models::Architecture;
pub use adversarial::Adversarial;
use serde::{Deserialize, Serialize};

/// `loss.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    /// Adversarial loss: `non-saturating`, `hinge`, `least-squares`, `wasserstein` or
    /// `relativistic` (R3GAN's pairing loss).
    pub kind: Adversarial,
    /// WGAN gradient penalty (Gulrajani et al. 2017) on real/fake interpolates.
    pub gp: GpConfig,
    /// R1 penalty (Mescheder et al. 2018) on real images.
    pub r1: R1Config,
    /// R2: the same zero-centred penalty on fake images (R3GAN uses R1 and R2 together).
    pub r2: R1Config,
    /// Path-length regularisation of G (StyleGAN2).
    pub pl: PlConfig,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            kind: Adversarial::NonSaturating,
            gp: GpConfig::default(),
            r1: R1Config::default(),
            r2: R1Config::default(),
            pl: PlConfig::default(),
        }
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
        GpConfig {
            enabled: false,
            weight: 10.0,
        }
    }
}

/// `loss.r1.*` (and `loss.r2.*`, on fakes)
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
        R1Config {
            gamma: 0.0,
            every: 1,
        }
    }
}

/// `loss.pl.*`: path-length regularisation (Karras et al. 2020, sec. 3.2), which asks a fixed-size
/// step in w to give a fixed-size change in the image. Only generators with an intermediate latent
/// space have it (`stylegan2`); a weight above 0 with any other architecture is an error.
///
/// Like `loss.r1.every`, the lazy term is added to the gradient of the same step's main loss, so
/// there is one Adam step per minibatch. stylegan2-ada instead takes a separate optimiser step for
/// the regulariser and rescales lr and betas by every/(every+1) to compensate; with no extra step
/// that rescaling does not apply, and the presets use the paper's lr and betas as they are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlConfig {
    /// Its weight (2 in StyleGAN2, as the StyleGAN2 presets set); 0 disables it.
    pub weight: f64,
    /// Lazy regularisation: apply every N G steps, scaled by N (4 in StyleGAN2). 1 = every step.
    pub every: u64,
    /// Decay of the running mean of path lengths the penalty pulls towards (0.01).
    pub decay: f64,
    /// The pass runs on the first batch_size / batch_shrink latents of the G step (2).
    pub batch_shrink: u64,
}

impl Default for PlConfig {
    fn default() -> Self {
        PlConfig {
            weight: 0.0,
            every: 4,
            decay: 0.01,
            batch_shrink: 2,
        }
    }
}

impl LossConfig {
    /// Checks the penalties' values and how they combine with the loss and the architecture.
    pub fn validate(&self, arch: &dyn Architecture) -> Result<()> {
        let number = |key: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(Error::config(key, "must be a finite number >= 0"))
            }
        };
        let at_least_one = |key: &str, v: u64| {
            if v >= 1 {
                Ok(())
            } else {
                Err(Error::config(key, "must be at least 1"))
            }
        };
        number("loss.gp.weight", self.gp.weight)?;
        number("loss.r1.gamma", self.r1.gamma)?;
        at_least_one("loss.r1.every", self.r1.every)?;
        number("loss.r2.gamma", self.r2.gamma)?;
        at_least_one("loss.r2.every", self.r2.every)?;
        number("loss.pl.weight", self.pl.weight)?;
        at_least_one("loss.pl.every", self.pl.every)?;
        at_least_one("loss.pl.batch_shrink", self.pl.batch_shrink)?;
        if !(self.pl.decay > 0.0 && self.pl.decay <= 1.0) {
            return Err(Error::config("loss.pl.decay", "must be in (0, 1]"));
        }
        let gp = self.gp.enabled && self.gp.weight > 0.0;
        if gp && arch.d_batch_norm() {
            return Err(Error::config(
                "loss.gp.enabled",
                "the gradient penalty is per sample and D's BatchNorm mixes samples (WGAN-GP forbids it): set model.d_norm = \"layer\" or \"none\"",
            ));
        }
        if self.pl.weight > 0.0 && !arch.has_path_length() {
            return Err(Error::config(
                "loss.pl.weight",
                "path-length regularisation needs a generator with a w space (stylegan2); set 0",
            ));
        }
        if self.kind == Adversarial::Wasserstein
            && !gp
            && self.r1.gamma == 0.0
            && !arch.d_spectral_norm()
        {
            return Err(Error::config(
                "loss.kind",
                "wasserstein needs a constraint on D (gantry has no weight clipping): set loss.gp.enabled = true, loss.r1.gamma > 0 or model.d_sn = true",
            ));
        }
        Ok(())
    }
}
