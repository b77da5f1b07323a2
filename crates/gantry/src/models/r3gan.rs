//! R3GAN (Huang, Gokaslan, Kuleshov, Tompkin: "The GAN is dead; long live the GAN! A Modern GAN
//! Baseline", NeurIPS 2024), after the structure of brownvc/R3GAN's `R3GAN/Networks.py`: no
//! normalisation anywhere; stages of ResNeXt-style residual blocks (1x1 expand, grouped kxk, 1x1
//! project with a zero-initialised last layer, biased leaky ReLUs between), [1,2,1]-filtered
//! resampling with a 1x1 convolution where the width changes; G starts from a learned 4x4 basis
//! modulated by a linear map of z, ends in a 1x1 aggregation to the image; D starts with a 1x1
//! extraction and ends in a depthwise 4x4 basis and a linear layer (class-conditional: a
//! projection on a linear label embedding). Initialisation is the reference's MSR (fan-in) scaling
//! with the variance-scaling factor `sum(blocks)^(-1/4)` on the residual branches. Parameter names
//! follow the reference's module paths (`MainLayers.0.Layers.1.LinearLayer2.Layer.weight`).
//!
//! Plug-in seam: `D.embed` is the extraction and every stage up to the last stage's residual
//! blocks (the deepest spatial map, 4x4); `D.head` is the last stage's basis (and the
//! projection). Taps are named `b<res>` by the resolution a stage reads, `b4` the last one.
//!
//! Departures: G's image has the data's channel count (the reference fixes 3); no bf16 stages
//! (use `train.precision`); the [1,2,1] resampling is [`super::stylegan2::ops`]'s upfirdn2d with
//! the equivalent [1,3,3,1] kernel, as the reference's CUDA path computes it. R3GAN's loss is
//! `loss.kind = "relativistic"` with `loss.r1` and `loss.r2` (a conditional run pairs each fake
//! with its real's class, as the reference's Trainer does); its lr / beta2 / gamma schedules
//! `train.lr_schedule` with `lr_final`, `beta2_final`, `gamma_final`, its EMA half-life schedule
//! `train.ema.half_life_kimg` with `half_life_start`, its augmentation schedule `ada.mode =
//! "schedule"`; all of them end at `train.schedule_kimg` (the reference: 20M images) and hold
//! their final values after it.

use super::stylegan2::ops;
use super::{Architecture, DataShape, Discriminator, Generator, TapFn};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Init};
use tch::{Kind, Tensor};

/// `model.*` with `arch = "r3gan"`. Per-stage lists run from G's 4x4 stage up to the data's
/// resolution (D uses them reversed, as the reference's `train.py`); a list of one value applies
/// to every stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct R3ganConfig {
    /// Latent (noise) size.
    pub z_dim: i64,
    /// Channels per stage.
    pub widths: Vec<i64>,
    /// Groups of the kxk convolution per stage.
    pub cardinality: Vec<i64>,
    /// Residual blocks per stage.
    pub blocks: Vec<i64>,
    /// Channel expansion inside a residual block.
    pub expansion: i64,
    /// Kernel of the grouped convolution.
    pub kernel: i64,
    /// Class-conditional G (label embedding of z_dim concatenated to z) and D (projection).
    pub conditional: bool,
}

impl Default for R3ganConfig {
    /// A CPU-sized model (the paper's CIFAR-10 one is the `r3gan-cifar` preset).
    fn default() -> Self {
        R3ganConfig {
            z_dim: 64,
            widths: vec![64],
            cardinality: vec![4],
            blocks: vec![1],
            expansion: 2,
            kernel: 3,
            conditional: false,
        }
    }
}

impl R3ganConfig {
    /// The per-stage values of `list` for `stages` stages (one value = every stage).
    fn per_stage(list: &[i64], stages: usize) -> Vec<i64> {
        if list.len() == 1 {
            vec![list[0]; stages]
        } else {
            list.to_vec()
        }
    }

    /// (widths, cardinalities, blocks) from 4x4 up to `resolution`.
    fn stages(&self, resolution: i64) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
        let n = stage_count(resolution);
        (
            Self::per_stage(&self.widths, n),
            Self::per_stage(&self.cardinality, n),
            Self::per_stage(&self.blocks, n),
        )
    }
}

/// Stages from 4x4 to `resolution` (4, 8, ..., res).
fn stage_count(resolution: i64) -> usize {
    (resolution.max(4) as f64).log2() as usize - 1
}

impl Architecture for R3ganConfig {
    fn conditional(&self) -> bool {
        self.conditional
    }
    fn validate(&self, r: i64) -> Result<()> {
        if !(8..=1024).contains(&r) || r & (r - 1) != 0 {
            return Err(Error::config(
                "data.resolution",
                format!("r3gan needs a power-of-two resolution from 8 to 1024, got {r}"),
            ));
        }
        let n = stage_count(r);
        for (key, list) in [
            ("widths", &self.widths),
            ("cardinality", &self.cardinality),
            ("blocks", &self.blocks),
        ] {
            if !(list.len() == 1 || list.len() == n) {
                return Err(Error::config(
                    format!("model.{key}"),
                    format!(
                        "needs 1 value or one per stage ({n} stages from 4x4 to {r}x{r}), got {}",
                        list.len()
                    ),
                ));
            }
            let min = if key == "blocks" { 0 } else { 1 };
            if list.iter().any(|v| *v < min) {
                return Err(Error::config(
                    format!("model.{key}"),
                    format!("values must be >= {min}"),
                ));
            }
        }
        if self.z_dim < 1 || self.expansion < 1 || self.kernel < 1 || self.kernel % 2 == 0 {
            return Err(Error::config(
                "model.kernel",
                "z_dim and expansion must be >= 1 and kernel an odd number >= 1",
            ));
        }
        let (w, c, _) = self.stages(r);
        if let Some((i, (w, c))) = w
            .iter()
            .zip(&c)
            .enumerate()
            .find(|(_, (w, c))| (*w * self.expansion) % *c != 0)
        {
            return Err(Error::config(
                "model.cardinality",
                format!(
                    "stage {i}: {c} groups do not divide its {} expanded channels",
                    w * self.expansion
                ),
            ));
        }
        Ok(())
    }
    fn validate_data(&self, shape: &DataShape) -> Result<()> {
        if self.conditional && shape.num_classes.unwrap_or(0) <= 0 {
            return Err(Error::config(
                "model.conditional",
                "a conditional r3gan needs labelled data (cifar10, cifar100, shapes, mnist, or folder with data.labels=true)",
            ));
        }
        Ok(())
    }
    /// D's stages by the resolution they read: `b<res>` .. `b4`.
    fn taps(&self, resolution: i64) -> Vec<String> {
        (0..stage_count(resolution))
            .map(|i| format!("b{}", resolution >> i))
            .collect()
    }
    fn generator(&self, p: nn::Path, shape: &DataShape) -> Box<dyn Generator> {
        Box::new(R3ganGenerator::new(p, self, shape))
    }
    fn discriminator(&self, p: nn::Path, shape: &DataShape) -> Box<dyn Discriminator> {
        Box::new(R3ganDiscriminator::new(p, self, shape))
    }
}

/// `BiasedActivation.Gain`: the gain of a leaky ReLU with slope 0.2.
fn lrelu_gain() -> f64 {
    (2.0 / (1.0 + 0.2f64.powi(2))).sqrt()
}

/// A weight drawn N(0, (gain / sqrt(fan_in))^2), fan_in = dims[1] * kernel area (MSRInitializer).
fn msr(p: &nn::Path, name: &str, dims: &[i64], gain: f64) -> Tensor {
    let fan_in: i64 = dims.iter().skip(1).product();
    let stdev = gain / (fan_in as f64).sqrt();
    if stdev == 0.0 {
        p.var(name, dims, Init::Const(0.0))
    } else {
        p.var(name, dims, Init::Randn { mean: 0.0, stdev })
    }
}

/// A bias-free convolution with "same" padding (`Convolution`).
struct Conv {
    weight: Tensor,
    groups: i64,
    padding: i64,
}

impl Conv {
    fn new(p: &nn::Path, c_in: i64, c_out: i64, k: i64, groups: i64, gain: f64) -> Conv {
        let weight = msr(
            &(p / "Layer"),
            "weight",
            &[c_out, c_in / groups, k, k],
            gain,
        );
        Conv {
            weight,
            groups,
            padding: (k - 1) / 2,
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(
            &self.weight.to_kind(x.kind()),
            None::<Tensor>,
            [1, 1],
            [self.padding, self.padding],
            [1, 1],
            self.groups,
        )
    }
}

/// Bias then leaky ReLU(0.2) (`BiasedActivation`, gain 1).
struct BiasedAct {
    bias: Tensor,
}

impl BiasedAct {
    fn new(p: &nn::Path, c: i64) -> BiasedAct {
        BiasedAct {
            bias: p.var("Bias", &[c], Init::Const(0.0)),
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        crate::nn::leaky_relu(&(x + self.bias.to_kind(x.kind()).view([1, -1, 1, 1])), 0.2)
    }
}

struct ResidualBlock {
    l1: Conv,
    a1: BiasedAct,
    l2: Conv,
    a2: BiasedAct,
    l3: Conv,
}

impl ResidualBlock {
    fn new(p: &nn::Path, c: i64, card: i64, expansion: i64, k: i64, vsp: f64) -> Self {
        let e = c * expansion;
        // Three linear layers: the residual branch's gain scales by vsp^(-1 / (2 * 3 - 2)).
        let gain = lrelu_gain() * vsp.powf(-1.0 / 4.0);
        ResidualBlock {
            l1: Conv::new(&(p / "LinearLayer1"), c, e, 1, 1, gain),
            a1: BiasedAct::new(&(p / "NonLinearity1"), e),
            l2: Conv::new(&(p / "LinearLayer2"), e, e, k, card, gain),
            a2: BiasedAct::new(&(p / "NonLinearity2"), e),
            l3: Conv::new(&(p / "LinearLayer3"), e, c, 1, 1, 0.0),
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        let y = self.l1.forward(x);
        let y = self.l2.forward(&self.a1.forward(&y));
        x + self.l3.forward(&self.a2.forward(&y))
    }
}

/// One G stage: a transition (the 4x4 basis, or upsampling) and residual blocks.
struct GStage {
    basis: Option<(Tensor, Tensor)>,
    up: Option<Option<Conv>>,
    blocks: Vec<ResidualBlock>,
}

pub struct R3ganGenerator {
    z_dim: i64,
    stages: Vec<GStage>,
    aggregation: Conv,
    embedding: Option<(Tensor, i64)>,
    filter: Tensor,
}

impl R3ganGenerator {
    pub fn new(p: nn::Path, cfg: &R3ganConfig, shape: &DataShape) -> Self {
        let (widths, cards, blocks) = cfg.stages(shape.resolution);
        let vsp = blocks.iter().sum::<i64>().max(1) as f64;
        let classes = if cfg.conditional {
            shape.num_classes.unwrap_or(0)
        } else {
            0
        };
        let embed_dim = if classes > 0 { cfg.z_dim } else { 0 };
        let main = &p / "MainLayers";
        let mut stages = Vec::new();
        for (i, ((&w, &card), &n)) in widths.iter().zip(&cards).zip(&blocks).enumerate() {
            let sp = &main / i as i64 / "Layers";
            let t = &sp / 0;
            let (basis, up) = if i == 0 {
                let basis = t.var(
                    "Basis",
                    &[w, 4, 4],
                    Init::Randn {
                        mean: 0.0,
                        stdev: 1.0,
                    },
                );
                let lin = msr(
                    &(&t / "LinearLayer"),
                    "weight",
                    &[w, cfg.z_dim + embed_dim],
                    1.0,
                );
                (Some((basis, lin)), None)
            } else {
                let prev = widths[i - 1];
                let conv =
                    (prev != w).then(|| Conv::new(&(&t / "LinearLayer"), prev, w, 1, 1, 1.0));
                (None, Some(conv))
            };
            let blocks = (0..n)
                .map(|j| {
                    ResidualBlock::new(&(&sp / (j + 1)), w, card, cfg.expansion, cfg.kernel, vsp)
                })
                .collect();
            stages.push(GStage { basis, up, blocks });
        }
        let last = *widths.last().unwrap_or(&1);
        let aggregation = Conv::new(&(&p / "AggregationLayer"), last, shape.channels, 1, 1, 1.0);
        let embedding = (classes > 0).then(|| {
            (
                msr(
                    &(&p / "EmbeddingLayer"),
                    "weight",
                    &[embed_dim, classes],
                    1.0,
                ),
                classes,
            )
        });
        R3ganGenerator {
            z_dim: cfg.z_dim,
            stages,
            aggregation,
            embedding,
            filter: ops::setup_filter(&ops::BLUR_TAPS, p.device()),
        }
    }
}

/// One-hot `labels` (class 0 when absent) times a linear embedding `[dim, classes]`.
fn embed_labels(weight: &Tensor, classes: i64, labels: Option<&Tensor>, like: &Tensor) -> Tensor {
    let l = match labels {
        Some(l) => l.to_device(like.device()),
        None => Tensor::zeros([like.size()[0]], (Kind::Int64, like.device())),
    };
    l.onehot(classes)
        .to_kind(like.kind())
        .matmul(&weight.to_kind(like.kind()).tr())
}

impl Generator for R3ganGenerator {
    fn z_dim(&self) -> i64 {
        self.z_dim
    }

    fn forward(&self, z: &Tensor, labels: Option<&Tensor>, _train: bool) -> Tensor {
        let mut x = match &self.embedding {
            Some((w, classes)) => Tensor::cat(
                &[z.shallow_clone(), embed_labels(w, *classes, labels, z)],
                1,
            ),
            None => z.shallow_clone(),
        };
        for s in &self.stages {
            x = match (&s.basis, &s.up) {
                (Some((basis, lin)), _) => {
                    let n = x.size()[0];
                    let a = x.matmul(&lin.to_kind(x.kind()).tr()).view([n, -1, 1, 1]);
                    basis.to_kind(x.kind()).unsqueeze(0) * a
                }
                (None, Some(conv)) => {
                    let x = match conv {
                        Some(c) => c.forward(&x),
                        None => x,
                    };
                    ops::upsample2d(&x, &self.filter.to_kind(x.kind()))
                }
                (None, None) => unreachable!("a stage has a basis or an upsampler"),
            };
            for b in &s.blocks {
                x = b.forward(&x);
            }
        }
        self.aggregation.forward(&x)
    }
}

/// One D stage: residual blocks, then a transition (downsampling, or the final basis).
struct DStage {
    name: String,
    blocks: Vec<ResidualBlock>,
    down: Option<Option<Conv>>,
}

pub struct R3ganDiscriminator {
    extraction: Conv,
    stages: Vec<DStage>,
    /// The last stage's depthwise 4x4 basis and linear layer.
    basis: (Tensor, Tensor),
    embedding: Option<(Tensor, i64)>,
    filter: Tensor,
}

impl R3ganDiscriminator {
    pub fn new(p: nn::Path, cfg: &R3ganConfig, shape: &DataShape) -> Self {
        let (mut widths, mut cards, mut blocks) = cfg.stages(shape.resolution);
        widths.reverse();
        cards.reverse();
        blocks.reverse();
        let vsp = blocks.iter().sum::<i64>().max(1) as f64;
        let classes = if cfg.conditional {
            shape.num_classes.unwrap_or(0)
        } else {
            0
        };
        let last = *widths.last().unwrap_or(&1);
        // The reference embeds labels into G's first width, which is D's last.
        let out_dim = if classes > 0 { last } else { 1 };
        let main = &p / "MainLayers";
        let names = cfg.taps(shape.resolution);
        let n_stages = widths.len();
        let mut stages = Vec::new();
        let mut basis = None;
        for (i, ((&w, &card), &n)) in widths.iter().zip(&cards).zip(&blocks).enumerate() {
            let sp = &main / i as i64 / "Layers";
            let blocks: Vec<ResidualBlock> = (0..n)
                .map(|j| ResidualBlock::new(&(&sp / j), w, card, cfg.expansion, cfg.kernel, vsp))
                .collect();
            let t = &sp / n;
            let down = if i + 1 < n_stages {
                let next = widths[i + 1];
                Some((next != w).then(|| Conv::new(&(&t / "LinearLayer"), w, next, 1, 1, 1.0)))
            } else {
                let b = msr(&(&t / "Basis"), "weight", &[w, 1, 4, 4], 1.0);
                let lin = msr(&(&t / "LinearLayer"), "weight", &[out_dim, w], 1.0);
                basis = Some((b, lin));
                None
            };
            stages.push(DStage {
                name: names[i].clone(),
                blocks,
                down,
            });
        }
        let embedding = (classes > 0).then(|| {
            (
                msr(
                    &(&p / "EmbeddingLayer"),
                    "weight",
                    &[out_dim, classes],
                    1.0 / (out_dim as f64).sqrt(),
                ),
                classes,
            )
        });
        R3ganDiscriminator {
            extraction: Conv::new(
                &(&p / "ExtractionLayer"),
                shape.channels,
                widths[0],
                1,
                1,
                1.0,
            ),
            stages,
            basis: basis.expect("at least one stage"),
            embedding,
            filter: ops::setup_filter(&ops::BLUR_TAPS, p.device()),
        }
    }
}

impl Discriminator for R3ganDiscriminator {
    fn embed_tapped(&self, x: &Tensor, _train: bool, tap: &mut TapFn<'_>) -> Tensor {
        let mut h = self.extraction.forward(x);
        for s in &self.stages {
            for b in &s.blocks {
                h = b.forward(&h);
            }
            if let Some(conv) = &s.down {
                h = ops::downsample2d(&h, &self.filter.to_kind(h.kind()));
                if let Some(c) = conv {
                    h = c.forward(&h);
                }
            }
            h = tap(&s.name, h);
        }
        h
    }

    fn head(&self, features: &Tensor, labels: Option<&Tensor>, _train: bool) -> Tensor {
        let (b, lin) = &self.basis;
        let c = features.size()[1];
        let x = features
            .conv2d(
                &b.to_kind(features.kind()),
                None::<Tensor>,
                [1, 1],
                [0, 0],
                [1, 1],
                c,
            )
            .flatten(1, -1)
            .matmul(&lin.to_kind(features.kind()).tr());
        match &self.embedding {
            Some((w, classes)) => (x.shallow_clone() * embed_labels(w, *classes, labels, &x))
                .sum_dim_intlist(1, false, None::<Kind>),
            None => x.select(1, 0),
        }
    }

    fn taps(&self) -> Vec<String> {
        self.stages.iter().map(|s| s.name.clone()).collect()
    }
}
