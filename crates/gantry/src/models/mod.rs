//! Generators and discriminators. Every discriminator is split as `D(x) = head(embed(x))` so that
//! plug-ins (AdaptiveMix, FQ) can wrap any architecture through that seam, and it names the feature
//! maps that `embed` passes through (`taps`), so FQ can be placed after any of them.
//!
//! A new architecture is one file here plus one arm in [`build`].

pub mod biggan;
pub mod dcgan;
pub mod mlp;
pub mod resnet;
pub mod stylegan2;

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
    /// Path-length regularisation (StyleGAN2, `loss.pl`): the penalty `E[(|J_w^T u| - a)^2]` for
    /// latents `z` (unweighted), updating the running mean `a` with `decay`. `None` (the default)
    /// for generators without an intermediate latent space, which then skip the pass.
    fn path_length_penalty(
        &self,
        _z: &Tensor,
        _labels: Option<&Tensor>,
        _decay: f64,
    ) -> Option<Tensor> {
        None
    }
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
    /// Architecture: `dcgan` (images, 32x32 and up), `stylegan2` (images, 8x8 to 1024x1024),
    /// `resnet` (WGAN-GP / SNGAN CIFAR ResNet), `biggan` (class-conditional) or `mlp` (2-D points).
    pub arch: String,
    /// Latent size; 0 picks the architecture's default (dcgan 100, mlp 64, stylegan2 512, resnet and
    /// biggan 128).
    pub z_dim: i64,
    /// Generator width. dcgan: channels of its last hidden layer (doubles per block); resnet,
    /// biggan: channels of every residual block (SNGAN 256, WGAN-GP 128, BigGAN CIFAR 4 x 64).
    pub ngf: i64,
    /// Discriminator width. dcgan: channels of its first layer (doubles per block); resnet,
    /// biggan: channels of every residual block (SNGAN and WGAN-GP 128, BigGAN CIFAR 4 x 64).
    pub ndf: i64,
    /// Normalisation inside D: `batch` (DCGAN), `layer` (WGAN-GP's advice) or `none`.
    pub d_norm: String,
    /// MLP hidden width.
    pub hidden: i64,
    /// MLP hidden layers (per network).
    pub depth: i64,
    /// StyleGAN2 widths: `min(channel_base / res, channel_max)` channels at resolution `res`
    /// (networks.py). 32768 is config F; 16384 is stylegan2-ada's `paper256`.
    pub channel_base: i64,
    /// StyleGAN2: the most channels any layer has.
    pub channel_max: i64,
    /// StyleGAN2 intermediate latent (w) size; 0 = same as z_dim.
    pub w_dim: i64,
    /// StyleGAN2 mapping-network depth (8 in the paper; stylegan2-ada uses 2 for small data).
    pub mapping_layers: i64,
    /// StyleGAN2 mapping-network learning-rate multiplier (equalised lr; 0.01 in the paper).
    pub mapping_lr_mul: f64,
    /// StyleGAN2 style-mixing probability in training (0.9 in the paper; 0 disables).
    pub style_mixing: f64,
    /// StyleGAN2 minibatch-stddev group size in D's epilogue (4; stylegan2-ada `paper256` uses 8).
    pub mbstd_group: i64,
    /// StyleGAN2 minibatch-stddev features (1; 0 disables the layer).
    pub mbstd_channels: i64,
    /// resnet, biggan: spectral normalisation on G's convolutions and linear maps (BigGAN's
    /// recipe; optional for the ResNets, whose papers leave G plain).
    pub g_sn: bool,
    /// resnet, biggan: spectral normalisation on every layer of D (SNGAN, BigGAN; off for WGAN-GP,
    /// whose gradient penalty constrains D instead).
    pub d_sn: bool,
    /// resnet, biggan: D's global pooling before its linear head: `sum` (SNGAN, BigGAN) or `mean`
    /// (WGAN-GP).
    pub pool: String,
    /// resnet, biggan: weight initialisation: `auto` (the paper's: resnet `glorot`, biggan
    /// `ortho`), `glorot` (SNGAN / WGAN-GP), `ortho` (BigGAN) or `normal` (N(0, 0.02), the FQ-GAN
    /// CIFAR runs).
    pub init: String,
    /// biggan: self-attention after the G and D blocks that output this resolution (0 = none).
    pub attention: i64,
    /// biggan: size of the shared class embedding; 0 = z_dim.
    pub shared_dim: i64,
    /// biggan: hierarchical z (one chunk for the input layer, one per block with the class).
    pub hier: bool,
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
            channel_base: 32768,
            channel_max: 512,
            w_dim: 0,
            mapping_layers: 8,
            mapping_lr_mul: 0.01,
            style_mixing: 0.9,
            mbstd_group: 4,
            mbstd_channels: 1,
            g_sn: false,
            d_sn: false,
            pool: "sum".into(),
            init: "auto".into(),
            attention: 0,
            shared_dim: 0,
            hier: false,
        }
    }
}

/// The architectures [`build`] knows.
pub const ARCHS: &[&str] = &["dcgan", "mlp", "stylegan2", "resnet", "biggan"];

/// What a model needs to know about the data it is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataShape {
    pub channels: i64,
    pub resolution: i64,
    /// Flat sample size for non-image data (2-D points): `C*H*W`.
    pub numel: i64,
    pub num_classes: Option<i64>,
}

impl DataShape {
    /// Square images: `channels` x `resolution` x `resolution`.
    pub fn image(channels: i64, resolution: i64, num_classes: Option<i64>) -> Self {
        DataShape {
            channels,
            resolution,
            numel: channels * resolution * resolution,
            num_classes,
        }
    }
}

impl ModelConfig {
    pub fn validate(&self, shape: &DataShape) -> Result<()> {
        match self.arch.as_str() {
            "dcgan" => dcgan::validate(self, shape),
            "mlp" => mlp::validate(self),
            "stylegan2" => stylegan2::validate(self, shape),
            "resnet" => resnet::validate(self, shape),
            "biggan" => biggan::validate(self, shape),
            other => Err(Error::config(
                "model.arch",
                format!(
                    "unknown architecture {other:?} (valid: {})",
                    ARCHS.join(", ")
                ),
            )),
        }
    }
}

/// Builds a generator under `p` (the same call builds G and its EMA copy, so their keys match).
pub fn build_generator(
    p: nn::Path,
    cfg: &ModelConfig,
    shape: &DataShape,
) -> Result<Box<dyn Generator>> {
    cfg.validate(shape)?;
    Ok(match cfg.arch.as_str() {
        "dcgan" => Box::new(dcgan::DcganGenerator::new(p, cfg, shape)),
        "mlp" => Box::new(mlp::MlpGenerator::new(p, cfg, shape)),
        "stylegan2" => Box::new(stylegan2::StyleGan2Generator::new(p, cfg, shape)),
        "resnet" => Box::new(resnet::ResnetGenerator::new(p, cfg, shape)),
        "biggan" => Box::new(biggan::BigGanGenerator::new(p, cfg, shape)),
        _ => unreachable!("validated above"),
    })
}

pub fn build_discriminator(
    p: nn::Path,
    cfg: &ModelConfig,
    shape: &DataShape,
) -> Result<Box<dyn Discriminator>> {
    cfg.validate(shape)?;
    Ok(match cfg.arch.as_str() {
        "dcgan" => Box::new(dcgan::DcganDiscriminator::new(p, cfg, shape)),
        "mlp" => Box::new(mlp::MlpDiscriminator::new(p, cfg, shape)),
        "stylegan2" => Box::new(stylegan2::StyleGan2Discriminator::new(p, cfg, shape)),
        "resnet" => Box::new(resnet::ResnetDiscriminator::new(p, cfg, shape)),
        "biggan" => Box::new(biggan::BigGanDiscriminator::new(p, cfg, shape)),
        _ => unreachable!("validated above"),
    })
}
