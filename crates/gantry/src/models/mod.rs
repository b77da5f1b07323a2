//! Generators and discriminators. Every discriminator is split as `D(x) = head(embed(x))` so that
//! plug-ins (AdaptiveMix, FQ) can wrap any architecture through that seam, and it names the feature
//! maps that `embed` passes through (`taps`), so FQ can be placed after any of them.
//!
//! A new architecture is one file here plus one arm in [`build`].

pub mod dcgan;
pub mod mlp;

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// Called at every named feature tap inside `embed`; returns the tensor that continues through D
/// (the input itself, or a replacement such as FQ's straight-through quantised features).
pub type TapFn<'a> = dyn FnMut(&str, Tensor) -> Tensor + 'a;

pub trait Generator: Send {
    /// Length of the latent vector z.
    fn z_dim(&self) -> i64;
    /// Maps latents `[B, z_dim]` (and labels, for conditional models) to samples `[B, C, H, W]`.
    fn forward(&self, z: &Tensor, labels: Option<&Tensor>, train: bool) -> Tensor;
}

pub trait Discriminator: Send {
    /// Features up to the deepest spatial map, calling `tap` at each named layer output. `embed`
    /// has no cross-sample operation other than BatchNorm (AdaptiveMix relies on that).
    fn embed_tapped(&self, x: &Tensor, train: bool, tap: &mut TapFn<'_>) -> Tensor;
    /// The rest of D: features to one score per sample, `[B]`.
    fn head(&self, features: &Tensor, labels: Option<&Tensor>, train: bool) -> Tensor;
    /// Names of the feature maps `embed` passes through, shallow to deep.
    fn taps(&self) -> Vec<String>;
    /// The layers FQ quantises when the user names none (the middle of D).
    fn default_fq_layers(&self) -> Vec<String>;

    fn embed(&self, x: &Tensor, train: bool) -> Tensor {
        self.embed_tapped(x, train, &mut |_, h| h)
    }
    fn forward(&self, x: &Tensor, labels: Option<&Tensor>, train: bool) -> Tensor {
        self.head(&self.embed(x, train), labels, train)
    }
}

/// `model.*`: the architecture and its widths. Resolution and channels come from the data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Architecture: `dcgan` (images, 32x32 and up) or `mlp` (2-D points).
    pub arch: String,
    /// Latent size; 0 picks the architecture's default (dcgan 100, mlp 64).
    pub z_dim: i64,
    /// DCGAN generator base width (channels of its last hidden layer; doubles per block).
    pub ngf: i64,
    /// DCGAN discriminator base width (channels of its first layer; doubles per block).
    pub ndf: i64,
    /// Normalisation inside D: `batch` (DCGAN), `layer` (WGAN-GP's advice) or `none`.
    pub d_norm: String,
    /// MLP hidden width.
    pub hidden: i64,
    /// MLP hidden layers (per network).
    pub depth: i64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            arch: "dcgan".into(),
            z_dim: 0,
            ngf: 64,
            ndf: 64,
            d_norm: "batch".into(),
            hidden: 128,
            depth: 2,
        }
    }
}

/// The architectures [`build`] knows.
pub const ARCHS: &[&str] = &["dcgan", "mlp"];

/// What a model needs to know about the data it is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataShape {
    pub channels: i64,
    pub resolution: i64,
    /// Flat sample size for non-image data (2-D points): `C*H*W`.
    pub numel: i64,
    pub num_classes: Option<i64>,
}

impl ModelConfig {
    pub fn validate(&self, shape: &DataShape) -> Result<()> {
        match self.arch.as_str() {
            "dcgan" => dcgan::validate(self, shape),
            "mlp" => mlp::validate(self),
            other => Err(Error::config(
                "model.arch",
                format!("unknown architecture {other:?} (valid: {})", ARCHS.join(", ")),
            )),
        }
    }
}

/// Builds a generator under `p` (the same call builds G and its EMA copy, so their keys match).
pub fn build_generator(p: nn::Path, cfg: &ModelConfig, shape: &DataShape) -> Result<Box<dyn Generator>> {
    cfg.validate(shape)?;
    Ok(match cfg.arch.as_str() {
        "dcgan" => Box::new(dcgan::DcganGenerator::new(p, cfg, shape)),
        "mlp" => Box::new(mlp::MlpGenerator::new(p, cfg, shape)),
        _ => unreachable!("validated above"),
    })
}

pub fn build_discriminator(p: nn::Path, cfg: &ModelConfig, shape: &DataShape) -> Result<Box<dyn Discriminator>> {
    cfg.validate(shape)?;
    Ok(match cfg.arch.as_str() {
        "dcgan" => Box::new(dcgan::DcganDiscriminator::new(p, cfg, shape)),
        "mlp" => Box::new(mlp::MlpDiscriminator::new(p, cfg, shape)),
        _ => unreachable!("validated above"),
    })
}
