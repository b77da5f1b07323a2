//! The CIFAR ResNets of WGAN-GP (Gulrajani, Ahmed, Arjovsky, Dumoulin, Courville, "Improved
//! Training of Wasserstein GANs", NeurIPS 2017: `gan_cifar_resnet.py`) and SNGAN (Miyato, Kataoka,
//! Koyama, Yoshida, ICLR 2018: Table 4 / chainer `sngan_projection` `resnet_32`). Both papers use
//! the same topology; their recipes differ in widths, SN in D, D's pooling and the loss, which are
//! configuration (`sngan-cifar` and `wgangp-resnet-cifar` presets). The blocks here are shared with
//! [`super::biggan`], whose CIFAR architecture is the same residual body.
//!
//! **G** (`model.ngf` = every block's width; SNGAN 256, WGAN-GP 128): z (128) -> linear to
//! `ngf x 4 x 4` (`b4.fc`) -> one up-block per doubling (`b8`, `b16`, `b32`: BN-ReLU-upsample-
//! conv3x3-BN-ReLU-conv3x3, shortcut upsample-conv1x1) -> BN-ReLU-conv3x3 (`out.bn`, `out.conv`)
//! -> tanh. Upsampling is nearest (WGAN-GP's depth-to-space of 4 copies is the same thing).
//!
//! **D** (`model.ndf`; 128 in both papers): the "optimised" first block at the input resolution
//! (conv3x3-ReLU-conv3x3-avgpool, shortcut avgpool-conv1x1), down-blocks (ReLU-conv-ReLU-conv-
//! avgpool, shortcut conv1x1-avgpool) until 8x8, then two blocks without resampling and with an
//! identity shortcut. Blocks are named by the resolution they read: `b32`, `b16`, and the two 8x8
//! blocks `b8a`, `b8b` (two blocks share a resolution, so a letter tells them apart).
//!
//! **The `embed`/`head` split.** `embed` = every residual block, up to the deepest (pre-
//! activation) 8x8 features; it has no cross-sample operation (no BatchNorm in D). `head` = the
//! final ReLU, global pooling over space (`model.pool`: `sum` for SNGAN, `mean` for WGAN-GP) and
//! the linear layer `out`. Taps are the block outputs, under the block names; FQ's default is the
//! middle one (`b16`).
//!
//! **Initialisation** (`model.init = glorot`, the default): both references draw Glorot-uniform
//! weights with gain sqrt(2) on residual-path 3x3 convolutions and gain 1 elsewhere, and zero
//! biases (see `nn::init`). BatchNorm starts at weight 1, bias 0.
//!
//! Departures: resolutions other than 32 extend the recipe (one more G block and one more D
//! down-block per doubling, same widths; 8 and 16 exist for tests). BatchNorm in G uses running
//! statistics in eval mode (sampling), like PyTorch and chainer; WGAN-GP's tflib always
//! normalises with batch statistics. The reference codes' learning-rate decay and WGAN-GP's 2x
//! larger G batch are not modelled (the training loop has neither). WGAN-GP's released script is
//! conditional (AC-GAN) by default; this is the unconditional network of the paper's table.

use super::{Architecture, DataShape, Discriminator, Generator, TapFn};
use crate::error::{Error, Result};
use crate::nn::attention::SelfAttention;
use crate::nn::init::InitScheme;
use crate::nn::layers::{Conv2d, LayerOpts, Linear};
use crate::nn::norm::{self, ConditionalBatchNorm};
use serde::{Deserialize, Serialize};
use tch::nn;
use tch::{Kind, Tensor};

/// `model.*` with `arch = "resnet"`; the defaults are SNGAN's (the `sngan-cifar` preset), and
/// `wgangp-resnet-cifar` sets WGAN-GP's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResnetConfig {
    /// Latent size (128 in both papers).
    pub z_dim: i64,
    /// G width: channels of every residual block (SNGAN 256, WGAN-GP 128).
    pub ngf: i64,
    /// D width: channels of every residual block (128 in both papers).
    pub ndf: i64,
    /// Spectral normalisation on G's layers (neither paper uses it).
    pub g_sn: bool,
    /// Spectral normalisation on every layer of D (SNGAN; off for WGAN-GP, whose gradient
    /// penalty constrains D instead).
    pub d_sn: bool,
    /// D's global pooling before its linear head: `sum` (SNGAN) or `mean` (WGAN-GP).
    pub pool: Pool,
    /// Weight initialisation: `glorot` (both papers), `ortho` or `normal` (N(0, 0.02)).
    pub init: InitScheme,
}

impl Default for ResnetConfig {
    fn default() -> Self {
        ResnetConfig {
            z_dim: Z_DIM,
            ngf: 256,
            ndf: 128,
            g_sn: false,
            d_sn: true,
            pool: Pool::Sum,
            init: InitScheme::Glorot,
        }
    }
}

impl Architecture for ResnetConfig {
    fn validate(&self, resolution: i64) -> Result<()> {
        validate_body(
            "resnet",
            resolution,
            &[("z_dim", self.z_dim), ("ngf", self.ngf), ("ndf", self.ndf)],
        )
    }
    fn taps(&self, resolution: i64) -> Vec<String> {
        d_block_names(resolution)
    }
    fn generator(&self, p: nn::Path, shape: &DataShape) -> Box<dyn Generator> {
        Box::new(ResnetGenerator::new(p, self, shape))
    }
    fn discriminator(&self, p: nn::Path, shape: &DataShape) -> Box<dyn Discriminator> {
        Box::new(ResnetDiscriminator::new(p, self, shape))
    }
    fn d_spectral_norm(&self) -> bool {
        self.d_sn
    }
}

/// Latent size of both papers (and BigGAN's CIFAR runs).
pub(super) const Z_DIM: i64 = 128;

fn log2(r: i64) -> i64 {
    (r as f64).log2().round() as i64
}

/// Up-sampling blocks of G between 4x4 and the resolution.
pub(super) fn g_levels(resolution: i64) -> i64 {
    log2(resolution) - 2
}

/// Down-sampling blocks of D (the optimised block included): down to 8x8, and at least one.
fn d_downs(resolution: i64) -> i64 {
    (log2(resolution) - 3).max(1)
}

/// The resolution of D's deepest features.
pub(super) fn deepest(resolution: i64) -> i64 {
    resolution >> d_downs(resolution)
}

/// Checks shared by `resnet` and `biggan`: the resolution and positive sizes.
pub(super) fn validate_body(arch: &str, r: i64, sizes: &[(&str, i64)]) -> Result<()> {
    if r < 8 || r & (r - 1) != 0 {
        return Err(Error::config(
            "data.resolution",
            format!("{arch} needs a power-of-two resolution >= 8, got {r}"),
        ));
    }
    for (key, v) in sizes {
        if *v <= 0 {
            return Err(Error::config(format!("model.{key}"), "must be positive"));
        }
    }
    Ok(())
}

/// D's block names at resolution `r`: the down-blocks by the resolution they read, then the two
/// blocks at the deepest resolution (`b8a`, `b8b` for 32x32).
pub(super) fn d_block_names(r: i64) -> Vec<String> {
    let low = deepest(r);
    (0..d_downs(r))
        .map(|i| format!("b{}", r >> i))
        .chain(["a", "b"].map(|s| format!("b{low}{s}")))
        .collect()
}

fn upsample(x: &Tensor) -> Tensor {
    let s = x.size();
    x.upsample_nearest2d([s[2] * 2, s[3] * 2], 2.0, 2.0)
}

fn avg_pool(x: &Tensor) -> Tensor {
    x.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>)
}

/// D's global pooling before the linear head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    Sum,
    Mean,
}

impl Pool {
    /// ReLU, then pooling over space: `[B, C, H, W]` -> `[B, C]`.
    pub(super) fn apply(self, features: &Tensor) -> Tensor {
        let h = features.relu();
        match self {
            Pool::Sum => h.sum_dim_intlist(&[2i64, 3][..], false, None::<Kind>),
            Pool::Mean => h.mean_dim(&[2i64, 3][..], false, None::<Kind>),
        }
    }
}

/// How every layer of one network is made.
#[derive(Clone, Copy, Debug)]
pub(super) struct BodyOpts {
    pub scheme: InitScheme,
    pub sn: bool,
    /// Conditional BatchNorm in G's blocks, and what conditions it.
    pub cond: Option<Cond>,
}

/// What G's conditional BatchNorm takes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Cond {
    /// Vectors of this size (BigGAN's shared embedding, plus a z chunk).
    Vector(i64),
    /// The labels of this many classes (per-block embeddings).
    Classes(i64),
}

impl BodyOpts {
    /// A layer; `residual` marks the 3x3 convolutions of residual paths.
    pub(super) fn layer(&self, residual: bool, bias: bool) -> LayerOpts {
        LayerOpts {
            init: self.scheme.layer(residual),
            bias,
            sn: self.sn,
        }
    }

    /// The self-attention block at `resolution` (`attn{resolution}`) over `width` channels.
    fn attention(&self, p: &nn::Path, resolution: i64, width: i64) -> SelfAttention {
        SelfAttention::new(
            p / format!("attn{resolution}"),
            width,
            self.scheme.layer(false),
            self.sn,
        )
    }
}

/// BatchNorm inside a G block.
enum GNorm {
    Batch(nn::BatchNorm),
    Conditional(ConditionalBatchNorm),
}

impl GNorm {
    fn new(p: nn::Path, channels: i64, opts: &BodyOpts) -> Self {
        match opts.cond {
            None => GNorm::Batch(norm::batch_norm(p, channels)),
            Some(Cond::Vector(d)) => GNorm::Conditional(ConditionalBatchNorm::new(
                p,
                channels,
                d,
                opts.scheme.layer(false),
                opts.sn,
            )),
            Some(Cond::Classes(n)) => GNorm::Conditional(ConditionalBatchNorm::per_class(
                p,
                channels,
                n,
                opts.scheme.layer(false),
            )),
        }
    }

    fn forward_t(&self, x: &Tensor, cond: Option<&Tensor>, train: bool) -> Tensor {
        match self {
            GNorm::Batch(bn) => norm::forward(bn, x, train),
            GNorm::Conditional(cbn) => cbn.forward_t(
                x,
                cond.expect("a conditional block needs its conditioning vector"),
                train,
            ),
        }
    }
}

/// G's residual up-block (SNGAN `Block`, WGAN-GP `ResidualBlock(resample='up')`, BigGAN `GBlock`).
struct GBlock {
    bn0: GNorm,
    conv0: Conv2d,
    bn1: GNorm,
    conv1: Conv2d,
    skip: Conv2d,
}

impl GBlock {
    fn new(p: nn::Path, c_in: i64, c_out: i64, opts: &BodyOpts) -> Self {
        GBlock {
            bn0: GNorm::new(&p / "bn0", c_in, opts),
            conv0: Conv2d::new(&p / "conv0", c_in, c_out, 3, opts.layer(true, true)),
            bn1: GNorm::new(&p / "bn1", c_out, opts),
            conv1: Conv2d::new(&p / "conv1", c_out, c_out, 3, opts.layer(true, true)),
            skip: Conv2d::new(&p / "skip", c_in, c_out, 1, opts.layer(false, true)),
        }
    }

    fn forward_t(&self, x: &Tensor, cond: Option<&Tensor>, train: bool) -> Tensor {
        let h = self.bn0.forward_t(x, cond, train).relu();
        let h = self.conv0.forward_t(&upsample(&h), train);
        let h = self.bn1.forward_t(&h, cond, train).relu();
        let h = self.conv1.forward_t(&h, train);
        h + self.skip.forward_t(&upsample(x), train)
    }
}

/// The generator body shared by `resnet` and `biggan`: linear to 4x4, up-blocks, optional
/// self-attention after the block that outputs `attention` (0 = none), BN-ReLU-conv-tanh.
pub(super) struct GBody {
    width: i64,
    fc: Linear,
    blocks: Vec<GBlock>,
    attention: Option<(usize, SelfAttention)>,
    out_bn: nn::BatchNorm,
    out_conv: Conv2d,
}

impl GBody {
    pub(super) fn new(
        p: &nn::Path,
        fc_in: i64,
        width: i64,
        shape: &DataShape,
        opts: &BodyOpts,
        attention: i64,
    ) -> Self {
        let fc = Linear::new(p / "b4" / "fc", fc_in, width * 16, opts.layer(false, true));
        let blocks: Vec<GBlock> = (0..g_levels(shape.resolution))
            .map(|i| GBlock::new(p / format!("b{}", 8 << i), width, width, opts))
            .collect();
        let attention = (attention > 0).then(|| {
            let index = (log2(attention) - 3) as usize;
            (index, opts.attention(p, attention, width))
        });
        GBody {
            width,
            fc,
            blocks,
            attention,
            out_bn: norm::batch_norm(p / "out" / "bn", width),
            out_conv: Conv2d::new(
                p / "out" / "conv",
                width,
                shape.channels,
                3,
                opts.layer(false, true),
            ),
        }
    }

    pub(super) fn n_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// `z`: the linear layer's input; `conds[i]` conditions block `i` (empty when unconditional).
    pub(super) fn forward_t(&self, z: &Tensor, conds: &[Tensor], train: bool) -> Tensor {
        let mut h = self.fc.forward_t(z, train).view([-1, self.width, 4, 4]);
        for (i, block) in self.blocks.iter().enumerate() {
            h = block.forward_t(&h, conds.get(i), train);
            if let Some((_, attn)) = self.attention.as_ref().filter(|(at, _)| *at == i) {
                h = attn.forward_t(&h, train);
            }
        }
        let h = norm::forward(&self.out_bn, &h, train).relu();
        self.out_conv.forward_t(&h, train).tanh()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DKind {
    /// The first block: no pre-activation, shortcut pool-then-conv.
    Optimised,
    /// Pre-activation, shortcut conv-then-pool.
    Down,
    /// Pre-activation, identity shortcut.
    Plain,
}

/// D's residual block (SNGAN `OptimizedBlock`/`Block`, WGAN-GP `OptimizedResBlockDisc1`/
/// `ResidualBlock`, BigGAN `DBlock` with `wide=True`: all the same at equal widths).
struct DBlock {
    name: String,
    kind: DKind,
    conv0: Conv2d,
    conv1: Conv2d,
    skip: Option<Conv2d>,
}

impl DBlock {
    fn new(
        p: &nn::Path,
        name: String,
        kind: DKind,
        c_in: i64,
        c_out: i64,
        opts: &BodyOpts,
    ) -> Self {
        let bp = p / name.as_str();
        let skip = (kind != DKind::Plain || c_in != c_out)
            .then(|| Conv2d::new(&bp / "skip", c_in, c_out, 1, opts.layer(false, true)));
        DBlock {
            kind,
            conv0: Conv2d::new(&bp / "conv0", c_in, c_out, 3, opts.layer(true, true)),
            conv1: Conv2d::new(&bp / "conv1", c_out, c_out, 3, opts.layer(true, true)),
            skip,
            name,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let h = if self.kind == DKind::Optimised {
            x.shallow_clone()
        } else {
            x.relu()
        };
        let h = self
            .conv1
            .forward_t(&self.conv0.forward_t(&h, train).relu(), train);
        let h = if self.kind == DKind::Plain {
            h
        } else {
            avg_pool(&h)
        };
        let s = match (&self.skip, self.kind) {
            (None, _) => x.shallow_clone(),
            (Some(c), DKind::Optimised) => c.forward_t(&avg_pool(x), train),
            (Some(c), DKind::Down) => avg_pool(&c.forward_t(x, train)),
            (Some(c), DKind::Plain) => c.forward_t(x, train),
        };
        h + s
    }
}

/// The discriminator body shared by `resnet` and `biggan` (everything `embed` runs), with an
/// optional self-attention layer after the first block that outputs `attention` (0 = none),
/// applied after that block's tap.
pub(super) struct DBody {
    blocks: Vec<DBlock>,
    attention: Option<(usize, SelfAttention)>,
}

impl DBody {
    pub(super) fn new(
        p: &nn::Path,
        width: i64,
        shape: &DataShape,
        opts: &BodyOpts,
        attention: i64,
    ) -> Self {
        let r = shape.resolution;
        let downs = d_downs(r) as usize;
        let mut blocks = Vec::new();
        let mut outputs = Vec::new();
        for (i, name) in d_block_names(r).into_iter().enumerate() {
            let (kind, c_in, out) = match i {
                0 => (DKind::Optimised, shape.channels, r >> 1),
                i if i < downs => (DKind::Down, width, r >> (i + 1)),
                _ => (DKind::Plain, width, deepest(r)),
            };
            blocks.push(DBlock::new(p, name, kind, c_in, width, opts));
            outputs.push(out);
        }
        let attention = (attention > 0).then(|| {
            let index = outputs
                .iter()
                .position(|&o| o == attention)
                .expect("validated: some block outputs the attention resolution");
            (index, opts.attention(p, attention, width))
        });
        DBody { blocks, attention }
    }

    pub(super) fn embed_tapped(&self, x: &Tensor, train: bool, tap: &mut TapFn<'_>) -> Tensor {
        let mut h = x.shallow_clone();
        for (i, block) in self.blocks.iter().enumerate() {
            h = tap(&block.name, block.forward_t(&h, train));
            if let Some((_, attn)) = self.attention.as_ref().filter(|(at, _)| *at == i) {
                h = attn.forward_t(&h, train);
            }
        }
        h
    }

    pub(super) fn taps(&self) -> Vec<String> {
        self.blocks.iter().map(|b| b.name.clone()).collect()
    }
}

/// The `resnet` generator (see the module docs).
pub struct ResnetGenerator {
    z_dim: i64,
    body: GBody,
}

impl ResnetGenerator {
    pub fn new(p: nn::Path, cfg: &ResnetConfig, shape: &DataShape) -> Self {
        let z_dim = cfg.z_dim;
        let opts = BodyOpts {
            scheme: cfg.init,
            sn: cfg.g_sn,
            cond: None,
        };
        ResnetGenerator {
            z_dim,
            body: GBody::new(&p, z_dim, cfg.ngf, shape, &opts, 0),
        }
    }
}

impl Generator for ResnetGenerator {
    fn z_dim(&self) -> i64 {
        self.z_dim
    }
    fn forward(&self, z: &Tensor, _labels: Option<&Tensor>, train: bool) -> Tensor {
        self.body.forward_t(z, &[], train)
    }
}

/// The `resnet` discriminator (see the module docs).
pub struct ResnetDiscriminator {
    body: DBody,
    pool: Pool,
    out: Linear,
}

impl ResnetDiscriminator {
    pub fn new(p: nn::Path, cfg: &ResnetConfig, shape: &DataShape) -> Self {
        let opts = BodyOpts {
            scheme: cfg.init,
            sn: cfg.d_sn,
            cond: None,
        };
        ResnetDiscriminator {
            body: DBody::new(&p, cfg.ndf, shape, &opts, 0),
            pool: cfg.pool,
            out: Linear::new(&p / "out", cfg.ndf, 1, opts.layer(false, true)),
        }
    }
}

impl Discriminator for ResnetDiscriminator {
    fn embed_tapped(&self, x: &Tensor, train: bool, tap: &mut TapFn<'_>) -> Tensor {
        self.body.embed_tapped(x, train, tap)
    }
    fn head(&self, features: &Tensor, _labels: Option<&Tensor>, train: bool) -> Tensor {
        self.out
            .forward_t(&self.pool.apply(features), train)
            .select(1, 0)
    }
    fn taps(&self) -> Vec<String> {
        self.body.taps()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn shape(res: i64) -> DataShape {
        DataShape::image(3, res, None)
    }

    #[test]
    fn shapes_taps_and_keys_follow_resolution() {
        for (res, taps) in [
            (8, vec!["b8", "b4a", "b4b"]),
            (32, vec!["b32", "b16", "b8a", "b8b"]),
            (64, vec!["b64", "b32", "b16", "b8a", "b8b"]),
        ] {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = ResnetConfig {
                ngf: 4,
                ndf: 4,
                z_dim: 8,
                d_sn: true,
                ..Default::default()
            };
            let g = ResnetGenerator::new(vs.root() / "g", &cfg, &shape(res));
            let d = ResnetDiscriminator::new(vs.root() / "d", &cfg, &shape(res));
            let x = g.forward(
                &Tensor::randn([2, 8], (Kind::Float, Device::Cpu)),
                None,
                true,
            );
            assert_eq!(x.size(), [2, 3, res, res]);
            assert_eq!(d.forward(&x, None, true).size(), [2]);
            assert_eq!(d.taps(), taps);
            let low = deepest(res);
            assert_eq!(d.embed(&x, false).size(), [2, 4, low, low]);
            let keys: Vec<String> = vs.variables().into_keys().collect();
            assert!(keys.iter().all(|k| !k.contains("__")), "{keys:?}");
            assert!(keys.contains(&format!("g.b{res}.conv1.weight")));
            assert!(keys.contains(&format!("d.b{res}.skip.weight_u")));
            assert!(
                !keys.contains(&format!("d.b{low}a.skip.weight")),
                "plain blocks have identity shortcuts"
            );
        }
    }

    #[test]
    fn rejects_bad_settings() {
        let e = ResnetConfig::default()
            .validate(48)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("data.resolution:"), "{e}");
        let e = ResnetConfig {
            ndf: 0,
            ..Default::default()
        }
        .validate(32)
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("model.ndf:"), "{e}");
    }
}
