//! StyleGAN2 (Karras, Laine, Aittala, Hellsten, Lehtinen, Aila: "Analyzing and Improving the Image
//! Quality of StyleGAN", CVPR 2020), config F: a mapping network (pixel-normalised z through
//! `model.mapping_layers` equalised FC layers at learning-rate multiplier 0.01) to w, broadcast to
//! one w per layer, with style mixing in training; a synthesis network of modulated + demodulated
//! 3x3 convolutions from a learned 4x4 constant, with per-pixel noise of learned strength and
//! [1,3,3,1]-filtered upsampling; a *skip* generator (a toRGB at every resolution, upsampled and
//! summed); a *residual* discriminator with minibatch standard deviation in its 4x4 epilogue.
//! Every weight uses the equalised learning rate. Widths are `min(channel_base / res,
//! channel_max)` as in stylegan2-ada-pytorch's `training/networks.py`, whose structure, init and
//! parameter names this file follows (`mapping.fc0`, `synthesis.b4.conv1.affine`, `b32.skip`), so
//! checkpoint keys read like its state dicts. Path-length regularisation is
//! [`StyleGan2Generator::path_length_penalty`]; the loop applies it lazily (`loss.pl`).
//!
//! Departures from stylegan2-ada-pytorch, and why:
//! - Class-conditional with `model.conditional = true` (stylegan2-ada's `cond=True`): G's mapping
//!   embeds the one-hot label (`mapping.embed`), normalises it and concatenates it to the
//!   normalised z; D maps the label through its own 8-layer mapping network (`mapping.*`, no
//!   tracked average; train.py leaves D's mapping at its defaults) to `cmap`, and its epilogue's
//!   `out` gives `cmap_dim` features whose inner product with `cmap`, over sqrt(cmap_dim), is the
//!   logit (projection). Unconditional runs ignore labels.
//! - Mixed precision is `train.precision` (autocast over the whole network), not the reference's
//!   fp16 for the 4 highest resolutions only; as the reference, fp16 activations are clamped at
//!   256 (`conv_clamp`, [`ops::fp16_clamp`]) and fp16 modulated convolutions pre-normalise weight
//!   and styles. In fp32 and bf16 nothing is clamped (the reference's fp32 runs do not clamp).
//! - Only the config-F architectures: `skip` G and `resnet` D.
//! - Style mixing skips the second mapping pass when a sample draw says "no mixing" (same
//!   distribution, less work); libtorch's generator supplies the draws, seeded per step by the
//!   loop, so runs are reproducible but not draw-for-draw identical to PyTorch's.
//! - Minibatch stddev groups fall back to the largest divisor of the batch (see
//!   [`ops::minibatch_std`]) instead of failing.
//! - The path-length EMA `pl_mean` lives in G's store (saved with `g`), where the reference keeps
//!   it in its loss object and loses it on restart.
//! - Noise is random in inference too (the reference's metrics do the same; its `generate.py`
//!   defaults to const noise): [`StyleGan2Generator::synthesis`] takes a [`NoiseMode`].
//! - `D.embed` is every residual block (taps `b256` .. `b8`, named by the resolution a block
//!   reads) and `D.head` the 4x4 epilogue, so `embed` has no cross-sample operation (AdaptiveMix
//!   mixes features between the two).

pub mod layers;
pub mod ops;

use super::{Architecture, DataShape, Discriminator, Generator, TapFn};
use crate::error::{Error, Result};
use layers::{Conv2dLayer, ConvSpec, FullyConnected, NoiseMode, SynthesisLayer, ToRgb};
use ops::{Act, ModConvForm};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

/// Decay of the tracked average of w (`w_avg_beta` in the reference), used for truncation.
pub const W_AVG_BETA: f64 = 0.995;

/// `model.*` with `arch = "stylegan2"`. Widths are `min(channel_base / res, channel_max)` channels
/// at resolution `res` (networks.py).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StyleGan2Config {
    /// Latent (z) size.
    pub z_dim: i64,
    /// Intermediate latent (w) size.
    pub w_dim: i64,
    /// 32768 is config F; 16384 is stylegan2-ada's `paper256`.
    pub channel_base: i64,
    /// The most channels any layer has.
    pub channel_max: i64,
    /// Mapping-network depth (8 in the paper; stylegan2-ada uses 2 for small data).
    pub mapping_layers: i64,
    /// Mapping-network learning-rate multiplier (equalised lr; 0.01 in the paper).
    pub mapping_lr_mul: f64,
    /// Style-mixing probability in training (0.9 in the paper; 0 disables).
    pub style_mixing: f64,
    /// Minibatch-stddev group size in D's epilogue (4; stylegan2-ada `paper256` uses 8).
    pub mbstd_group: i64,
    /// Minibatch-stddev features (1; 0 disables the layer).
    pub mbstd_channels: i64,
    /// Class-conditional G (label embedding into the mapping) and D (projection in the
    /// epilogue); needs labelled data.
    pub conditional: bool,
}

impl Default for StyleGan2Config {
    fn default() -> Self {
        StyleGan2Config {
            z_dim: 512,
            w_dim: 512,
            channel_base: 32768,
            channel_max: 512,
            mapping_layers: 8,
            mapping_lr_mul: 0.01,
            style_mixing: 0.9,
            mbstd_group: 4,
            mbstd_channels: 1,
            conditional: false,
        }
    }
}

/// Channels at resolution `res`: `min(channel_base / res, channel_max)`.
pub fn channels(cfg: &StyleGan2Config, res: i64) -> i64 {
    (cfg.channel_base / res).min(cfg.channel_max)
}

impl Architecture for StyleGan2Config {
    fn conditional(&self) -> bool {
        self.conditional
    }
    fn validate(&self, r: i64) -> Result<()> {
        if !(8..=1024).contains(&r) || r & (r - 1) != 0 {
            return Err(Error::config(
                "data.resolution",
                format!("stylegan2 needs a power-of-two resolution from 8 to 1024, got {r}"),
            ));
        }
        if self.channel_base <= 0 || self.channel_max <= 0 || channels(self, r) < 1 {
            return Err(Error::config(
                "model.channel_base",
                format!("channel_base and channel_max must be positive and channel_base >= the resolution ({r})"),
            ));
        }
        for (key, v) in [("z_dim", self.z_dim), ("w_dim", self.w_dim)] {
            if v <= 0 {
                return Err(Error::config(format!("model.{key}"), "must be positive"));
            }
        }
        if self.mapping_layers < 1 {
            return Err(Error::config(
                "model.mapping_layers",
                "the mapping network needs at least 1 layer",
            ));
        }
        if !(self.mapping_lr_mul.is_finite() && self.mapping_lr_mul > 0.0) {
            return Err(Error::config("model.mapping_lr_mul", "must be positive"));
        }
        if !(0.0..=1.0).contains(&self.style_mixing) {
            return Err(Error::config(
                "model.style_mixing",
                "is a probability, in [0, 1]",
            ));
        }
        if self.mbstd_group < 1 {
            return Err(Error::config("model.mbstd_group", "must be at least 1"));
        }
        let c4 = channels(self, 4);
        if self.mbstd_channels < 0 || (self.mbstd_channels > 0 && c4 % self.mbstd_channels != 0) {
            return Err(Error::config(
                "model.mbstd_channels",
                format!("must be >= 0 and divide D's 4x4 channels ({c4})"),
            ));
        }
        Ok(())
    }
    fn validate_data(&self, shape: &DataShape) -> Result<()> {
        if self.conditional && shape.num_classes.unwrap_or(0) <= 0 {
            return Err(Error::config(
                "model.conditional",
                "a conditional stylegan2 needs labelled data (cifar10, cifar100, shapes, mnist, or folder with data.labels=true)",
            ));
        }
        Ok(())
    }
    /// D's blocks, named by the resolution they read: `b<res>` .. `b8`.
    fn taps(&self, resolution: i64) -> Vec<String> {
        resolutions(resolution)
            .iter()
            .skip(1)
            .rev()
            .map(|r| format!("b{r}"))
            .collect()
    }
    fn generator(&self, p: nn::Path, shape: &DataShape) -> Box<dyn Generator> {
        Box::new(StyleGan2Generator::new(p, self, shape))
    }
    fn discriminator(&self, p: nn::Path, shape: &DataShape) -> Box<dyn Discriminator> {
        Box::new(StyleGan2Discriminator::new(p, self, shape))
    }
    fn fake_classes_from_data(&self) -> bool {
        true
    }
    fn has_path_length(&self) -> bool {
        true
    }
}

/// Resolutions from 4 up to the data's, `[4, 8, .., res]`.
fn resolutions(res: i64) -> Vec<i64> {
    std::iter::successors(Some(4i64), |r| Some(r * 2))
        .take_while(|&r| r <= res)
        .collect()
}

/// The mapping network (z, c) -> w: G's (with the tracked average of w) and, with `z_dim = 0`,
/// D's label mapping.
struct Mapping {
    /// The label embedding (one-hot c -> w_dim, linear) when conditional.
    embed: Option<FullyConnected>,
    num_classes: i64,
    layers: Vec<FullyConnected>,
    w_avg: Option<Tensor>,
}

impl Mapping {
    fn new(
        p: nn::Path,
        z_dim: i64,
        num_classes: i64,
        w_dim: i64,
        layers: i64,
        lr_mul: f64,
        track: bool,
    ) -> Self {
        let embed = (num_classes > 0)
            .then(|| FullyConnected::new(&p / "embed", num_classes, w_dim, Act::Linear, 1.0, 0.0));
        let first = z_dim + if num_classes > 0 { w_dim } else { 0 };
        let layers = (0..layers)
            .map(|i| {
                let in_features = if i == 0 { first } else { w_dim };
                FullyConnected::new(
                    &p / format!("fc{i}"),
                    in_features,
                    w_dim,
                    Act::Lrelu,
                    lr_mul,
                    0.0,
                )
            })
            .collect();
        Mapping {
            embed,
            num_classes,
            layers,
            w_avg: track.then(|| p.zeros_no_train("w_avg", &[w_dim])),
        }
    }

    /// w for latents `z` `[N, z_dim]` (None for D's label mapping) and class indices `labels`
    /// (used when conditional) of the `n` samples of `like` (kind and device); with `track`,
    /// moves `w_avg` towards this batch's mean.
    fn forward(
        &self,
        z: Option<&Tensor>,
        labels: Option<&Tensor>,
        like: &Tensor,
        track: bool,
    ) -> Tensor {
        let mut parts: Vec<Tensor> = z.map(ops::normalize_2nd_moment).into_iter().collect();
        if let Some(embed) = &self.embed {
            // Unlabelled calls (none in training: the gate asks for labelled data) embed class 0.
            let c = match labels {
                Some(l) => l.to_device(like.device()),
                None => Tensor::zeros([like.size()[0]], (Kind::Int64, like.device())),
            };
            let c = c.onehot(self.num_classes).to_kind(like.kind());
            parts.push(ops::normalize_2nd_moment(&embed.forward(&c)));
        }
        let x = if parts.len() == 1 {
            parts.remove(0)
        } else {
            Tensor::cat(&parts, 1)
        };
        let w = self.layers.iter().fold(x, |x, l| l.forward(&x));
        if let (true, Some(w_avg)) = (track, &self.w_avg) {
            tch::no_grad(|| {
                let avg = w
                    .detach()
                    .mean_dim(0, false, None::<Kind>)
                    .lerp(w_avg, W_AVG_BETA);
                w_avg.shallow_clone().copy_(&avg);
            });
        }
        w
    }
}

/// One resolution of the synthesis network: `conv0` (2x up; absent at 4x4, which starts from the
/// learned constant), `conv1`, and `torgb`.
struct SynthesisBlock {
    constant: Option<Tensor>,
    conv0: Option<SynthesisLayer>,
    conv1: SynthesisLayer,
    torgb: ToRgb,
    filter: Tensor,
}

impl SynthesisBlock {
    /// Number of ws its convolutions consume (its toRGB shares the next block's first w).
    fn num_conv(&self) -> i64 {
        1 + self.conv0.is_some() as i64
    }

    fn forward(
        &self,
        x: Option<Tensor>,
        img: Option<Tensor>,
        ws: &Tensor,
        noise: NoiseMode,
        form: ModConvForm,
    ) -> (Tensor, Tensor) {
        let n = ws.size()[0];
        let x = match (&self.constant, &self.conv0, x) {
            (Some(c), _, _) => self.conv1.forward(
                &c.unsqueeze(0).repeat([n, 1, 1, 1]),
                &ws.select(1, 0),
                noise,
                form,
            ),
            (None, Some(conv0), Some(x)) => {
                let x = conv0.forward(&x, &ws.select(1, 0), noise, form);
                self.conv1.forward(&x, &ws.select(1, 1), noise, form)
            }
            _ => unreachable!("a block has a constant or an input"),
        };
        let y = self.torgb.forward(&x, &ws.select(1, self.num_conv()), form);
        let img = match img {
            Some(img) => ops::upsample2d(&img, &self.filter) + y,
            None => y,
        };
        (x, img)
    }
}

/// The StyleGAN2 generator: `mapping.*`, `synthesis.b4` .. `synthesis.b<res>`, and `pl_mean`.
pub struct StyleGan2Generator {
    z_dim: i64,
    w_dim: i64,
    num_ws: i64,
    style_mixing: f64,
    mapping: Mapping,
    blocks: Vec<SynthesisBlock>,
    pl_mean: Tensor,
}

impl StyleGan2Generator {
    pub fn new(p: nn::Path, cfg: &StyleGan2Config, shape: &DataShape) -> Self {
        let (z_dim, w_dim) = (cfg.z_dim, cfg.w_dim);
        let filter = ops::setup_filter(&ops::BLUR_TAPS, p.device());
        let sp = &p / "synthesis";
        let mut blocks: Vec<SynthesisBlock> = Vec::new();
        for res in resolutions(shape.resolution) {
            let bp = &sp / format!("b{res}");
            let out = channels(cfg, res);
            let (constant, conv0) = if res == 4 {
                (
                    Some(bp.var(
                        "const",
                        &[out, 4, 4],
                        nn::Init::Randn {
                            mean: 0.0,
                            stdev: 1.0,
                        },
                    )),
                    None,
                )
            } else {
                let inp = channels(cfg, res / 2);
                (
                    None,
                    Some(SynthesisLayer::new(
                        &bp / "conv0",
                        inp,
                        out,
                        w_dim,
                        res,
                        2,
                        &filter,
                    )),
                )
            };
            let conv1 = SynthesisLayer::new(&bp / "conv1", out, out, w_dim, res, 1, &filter);
            let torgb = ToRgb::new(&bp / "torgb", out, shape.channels, w_dim, &filter);
            blocks.push(SynthesisBlock {
                constant,
                conv0,
                conv1,
                torgb,
                filter: filter.shallow_clone(),
            });
        }
        let num_ws = blocks.iter().map(|b| b.num_conv()).sum::<i64>() + 1;
        let num_classes = if cfg.conditional {
            shape.num_classes.unwrap_or(0)
        } else {
            0
        };
        let mapping = Mapping::new(
            &p / "mapping",
            z_dim,
            num_classes,
            w_dim,
            cfg.mapping_layers,
            cfg.mapping_lr_mul,
            true,
        );
        let pl_mean = p.zeros_no_train("pl_mean", &[]);
        StyleGan2Generator {
            z_dim,
            w_dim,
            num_ws,
            style_mixing: cfg.style_mixing,
            mapping,
            blocks,
            pl_mean,
        }
    }

    /// Number of ws the synthesis network consumes (2 per resolution above 4x4, 1 at 4x4, plus
    /// the last toRGB).
    pub fn num_ws(&self) -> i64 {
        self.num_ws
    }

    pub fn w_dim(&self) -> i64 {
        self.w_dim
    }

    /// The tracked average of w.
    pub fn w_avg(&self) -> &Tensor {
        self.mapping
            .w_avg
            .as_ref()
            .expect("G's mapping tracks w_avg")
    }

    /// The path-length EMA `a` (0 before the first regularisation pass).
    pub fn pl_mean(&self) -> &Tensor {
        &self.pl_mean
    }

    /// Per-layer latents `[N, num_ws, w_dim]`. In training the mapping also updates `w_avg`, and
    /// with probability `style_mixing` the ws from a random cut-off onwards come from a second
    /// latent (the regulariser of sec. 3.1 of the StyleGAN paper).
    pub fn ws(&self, z: &Tensor, labels: Option<&Tensor>, train: bool) -> Tensor {
        let w = self.mapping.forward(Some(z), labels, z, train);
        let broadcast = |w: &Tensor, n: i64| w.unsqueeze(1).repeat([1, n, 1]);
        if !(train && self.style_mixing > 0.0) {
            return broadcast(&w, self.num_ws);
        }
        let cutoff =
            Tensor::randint_low(1, self.num_ws, [], (Kind::Int64, Device::Cpu)).int64_value(&[]);
        let mix =
            Tensor::rand([], (Kind::Double, Device::Cpu)).double_value(&[]) < self.style_mixing;
        if !mix {
            return broadcast(&w, self.num_ws);
        }
        let w2 = self
            .mapping
            .forward(Some(&z.randn_like()), labels, z, false);
        Tensor::cat(
            &[broadcast(&w, cutoff), broadcast(&w2, self.num_ws - cutoff)],
            1,
        )
    }

    /// Images from per-layer latents. `form` picks how modulated convolutions execute (the
    /// reference uses [`ModConvForm::ScaleActivations`] in training, grouped otherwise).
    pub fn synthesis(&self, ws: &Tensor, noise: NoiseMode, form: ModConvForm) -> Tensor {
        let mut x = None;
        let mut img = None;
        let mut w_idx = 0;
        for block in &self.blocks {
            let k = block.num_conv();
            let (nx, nimg) = block.forward(x, img, &ws.narrow(1, w_idx, k + 1), noise, form);
            x = Some(nx);
            img = Some(nimg);
            w_idx += k;
        }
        img.expect("at least the 4x4 block")
    }

    /// Inference with the truncation trick: `w = w_avg + psi (w - w_avg)` for the first `cutoff`
    /// ws (all when `None`). psi = 1 is plain sampling; FID is measured at psi = 1.
    pub fn forward_truncated(
        &self,
        z: &Tensor,
        labels: Option<&Tensor>,
        psi: f64,
        cutoff: Option<i64>,
        noise: NoiseMode,
    ) -> Tensor {
        let ws = self.ws(z, labels, false);
        let ws = if psi == 1.0 {
            ws
        } else {
            let avg = self.w_avg().to_kind(ws.kind()).reshape([1, 1, -1]);
            let truncated = &avg + (&ws - &avg) * psi;
            match cutoff {
                Some(c) if c < self.num_ws => Tensor::cat(
                    &[truncated.narrow(1, 0, c), ws.narrow(1, c, self.num_ws - c)],
                    1,
                ),
                _ => truncated,
            }
        };
        self.synthesis(&ws, noise, ModConvForm::Grouped)
    }
}

impl Generator for StyleGan2Generator {
    fn z_dim(&self) -> i64 {
        self.z_dim
    }

    /// `labels` condition the mapping of a conditional G; others ignore them.
    fn forward(&self, z: &Tensor, labels: Option<&Tensor>, train: bool) -> Tensor {
        let form = if train {
            ModConvForm::ScaleActivations
        } else {
            ModConvForm::Grouped
        };
        self.synthesis(&self.ws(z, labels, train), NoiseMode::Random, form)
    }

    /// Truncation around the tracked average w (`w_avg + psi (w - w_avg)`, every layer), as
    /// stylegan2-ada's `generate.py`.
    fn generate(&self, z: &Tensor, labels: Option<&Tensor>, psi: f64, noise: NoiseMode) -> Tensor {
        self.forward_truncated(z, labels, psi, None, noise)
    }

    fn as_stylegan2(&self) -> Option<&StyleGan2Generator> {
        Some(self)
    }

    /// Path-length regularisation (sec. 3.2): for images `y = g(w)` and random images `u ~ N(0, I)
    /// / sqrt(H W)`, the lengths `|J_w^T u|` (summed over w_dim, averaged over the ws) are pulled
    /// towards their running mean `a` (EMA with `decay`, updated here in place). Runs G in training
    /// mode (style mixing, random noise), as the reference's `Gpl` phase does.
    fn path_length_penalty(
        &self,
        z: &Tensor,
        labels: Option<&Tensor>,
        decay: f64,
    ) -> Option<Tensor> {
        let ws = self.ws(z, labels, true);
        let img = self.synthesis(&ws, NoiseMode::Random, ModConvForm::ScaleActivations);
        let (h, w) = (img.size()[2], img.size()[3]);
        let noise = img.randn_like() / ((h * w) as f64).sqrt();
        let grads = Tensor::run_backward(&[(&img * noise).sum(None::<Kind>)], &[&ws], true, true);
        let lengths = grads[0]
            .square()
            .sum_dim_intlist(2, false, None::<Kind>)
            .mean_dim(1, false, None::<Kind>)
            .sqrt();
        // As in the reference, `a` in the penalty is the updated EMA, which still carries a
        // (decay-scaled) gradient through this batch's mean length.
        let pl_mean = self
            .pl_mean
            .to_kind(lengths.kind())
            .lerp(&lengths.mean(None::<Kind>), decay);
        tch::no_grad(|| self.pl_mean.shallow_clone().copy_(&pl_mean.detach()));
        Some((lengths - pl_mean).square().mean(None::<Kind>))
    }
}

/// One residual discriminator block at resolution `res` (the resolution it reads): `fromrgb` (the
/// first block only), `conv0`, `conv1` (2x down), `skip` (1x1, 2x down, no bias).
struct DiscriminatorBlock {
    name: String,
    fromrgb: Option<Conv2dLayer>,
    conv0: Conv2dLayer,
    conv1: Conv2dLayer,
    skip: Conv2dLayer,
}

impl DiscriminatorBlock {
    fn forward(&self, x: &Tensor) -> Tensor {
        let x = match &self.fromrgb {
            Some(fromrgb) => fromrgb.forward(x, 1.0),
            None => x.shallow_clone(),
        };
        let g = std::f64::consts::FRAC_1_SQRT_2;
        let y = self.skip.forward(&x, g);
        let x = self.conv0.forward(&x, 1.0);
        y + self.conv1.forward(&x, g)
    }
}

/// The StyleGAN2 residual discriminator: `b<res>` .. `b8` (the embed), then the 4x4 epilogue `b4`
/// (minibatch stddev, `conv`, `fc`, `out`; the head).
pub struct StyleGan2Discriminator {
    blocks: Vec<DiscriminatorBlock>,
    mbstd_group: i64,
    mbstd_channels: i64,
    conv: Conv2dLayer,
    fc: FullyConnected,
    out: FullyConnected,
    /// Conditional: the label mapping to `cmap` (`cmap_dim` = the 4x4 channels).
    mapping: Option<Mapping>,
}

impl StyleGan2Discriminator {
    pub fn new(p: nn::Path, cfg: &StyleGan2Config, shape: &DataShape) -> Self {
        let filter = ops::setup_filter(&ops::BLUR_TAPS, p.device());
        let mut blocks = Vec::new();
        for name in cfg.taps(shape.resolution) {
            let res: i64 = name[1..].parse().expect("b<res>");
            let bp = &p / name.as_str();
            let (tmp, out) = (channels(cfg, res), channels(cfg, res / 2));
            let fromrgb = (res == shape.resolution).then(|| {
                Conv2dLayer::new(
                    &bp / "fromrgb",
                    ConvSpec::new(shape.channels, tmp, 1, Act::Lrelu),
                    &filter,
                )
            });
            let conv0 = Conv2dLayer::new(
                &bp / "conv0",
                ConvSpec::new(tmp, tmp, 3, Act::Lrelu),
                &filter,
            );
            let conv1 = Conv2dLayer::new(
                &bp / "conv1",
                ConvSpec::new(tmp, out, 3, Act::Lrelu).down(),
                &filter,
            );
            let skip = Conv2dLayer::new(
                &bp / "skip",
                ConvSpec::new(tmp, out, 1, Act::Linear).down().no_bias(),
                &filter,
            );
            blocks.push(DiscriminatorBlock {
                name,
                fromrgb,
                conv0,
                conv1,
                skip,
            });
        }
        let c4 = channels(cfg, 4);
        let ep = &p / "b4";
        let conv = Conv2dLayer::new(
            &ep / "conv",
            ConvSpec::new(c4 + cfg.mbstd_channels, c4, 3, Act::Lrelu),
            &filter,
        );
        let fc = FullyConnected::new(&ep / "fc", c4 * 16, c4, Act::Lrelu, 1.0, 0.0);
        let num_classes = if cfg.conditional {
            shape.num_classes.unwrap_or(0)
        } else {
            0
        };
        // cmap_dim = the 4x4 channels (stylegan2-ada's default); D's mapping keeps
        // MappingNetwork's defaults: 8 layers at lr multiplier 0.01.
        let mapping = (num_classes > 0)
            .then(|| Mapping::new(&p / "mapping", 0, num_classes, c4, 8, 0.01, false));
        let out_features = if mapping.is_some() { c4 } else { 1 };
        let out = FullyConnected::new(&ep / "out", c4, out_features, Act::Linear, 1.0, 0.0);
        StyleGan2Discriminator {
            blocks,
            mbstd_group: cfg.mbstd_group,
            mbstd_channels: cfg.mbstd_channels,
            conv,
            fc,
            out,
            mapping,
        }
    }
}

impl Discriminator for StyleGan2Discriminator {
    fn embed_tapped(&self, x: &Tensor, _train: bool, tap: &mut TapFn<'_>) -> Tensor {
        self.blocks
            .iter()
            .fold(x.shallow_clone(), |h, b| tap(&b.name, b.forward(&h)))
    }

    /// Conditional: projection of the epilogue's output on the mapped label; unconditional
    /// heads ignore `labels`.
    fn head(&self, features: &Tensor, labels: Option<&Tensor>, _train: bool) -> Tensor {
        let x = if self.mbstd_channels > 0 {
            ops::minibatch_std(features, self.mbstd_group, self.mbstd_channels)
        } else {
            features.shallow_clone()
        };
        let x = self.conv.forward(&x, 1.0);
        let x = self.fc.forward(&x.flatten(1, -1));
        let x = self.out.forward(&x);
        match &self.mapping {
            Some(m) => {
                let cmap = m.forward(None, labels, &x, false);
                let dim = cmap.size()[1] as f64;
                (x * cmap).sum_dim_intlist(1, false, None::<Kind>) / dim.sqrt()
            }
            None => x.select(1, 0),
        }
    }

    fn taps(&self) -> Vec<String> {
        self.blocks.iter().map(|b| b.name.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(res: i64) -> DataShape {
        DataShape::image(3, res, None)
    }

    fn tiny() -> StyleGan2Config {
        StyleGan2Config {
            z_dim: 16,
            w_dim: 16,
            channel_base: 128,
            channel_max: 16,
            mapping_layers: 2,
            ..Default::default()
        }
    }

    #[test]
    fn shapes_widths_and_taps_follow_resolution() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = tiny();
        let g = StyleGan2Generator::new(vs.root() / "g", &cfg, &shape(32));
        let d = StyleGan2Discriminator::new(vs.root() / "d", &cfg, &shape(32));
        assert_eq!(g.num_ws(), 1 + 2 * 3 + 1);
        assert_eq!(channels(&cfg, 32), 4);
        assert_eq!(channels(&cfg, 8), 16);
        let z = Tensor::randn([4, 16], (Kind::Float, Device::Cpu));
        for train in [true, false] {
            let x = g.forward(&z, None, train);
            assert_eq!(x.size(), [4, 3, 32, 32]);
            assert_eq!(d.forward(&x, None, train).size(), [4]);
        }
        assert_eq!(d.taps(), ["b32", "b16", "b8"]);
        assert_eq!(cfg.default_fq_layers(32), ["b16"]);
        let f = d.embed(
            &Tensor::zeros([2, 3, 32, 32], (Kind::Float, Device::Cpu)),
            true,
        );
        assert_eq!(f.size(), [2, 16, 4, 4]);
    }

    #[test]
    fn training_forward_tracks_w_avg_and_inference_does_not() {
        let vs = nn::VarStore::new(Device::Cpu);
        let g = StyleGan2Generator::new(vs.root(), &tiny(), &shape(8));
        let z = Tensor::randn([4, 16], (Kind::Float, Device::Cpu));
        let _ = tch::no_grad(|| g.forward(&z, None, false));
        assert_eq!(g.w_avg().abs().sum(Kind::Float).double_value(&[]), 0.0);
        let _ = tch::no_grad(|| g.forward(&z, None, true));
        assert!(g.w_avg().abs().sum(Kind::Float).double_value(&[]) > 0.0);
        // psi = 0 maps every latent to w_avg: all samples equal under const noise.
        let x = tch::no_grad(|| g.forward_truncated(&z, None, 0.0, None, NoiseMode::Const));
        assert!((x.get(0) - x.get(3)).abs().max().double_value(&[]) < 1e-5);
    }

    #[test]
    fn path_length_penalty_is_finite_and_updates_its_mean() {
        let vs = nn::VarStore::new(Device::Cpu);
        let g = StyleGan2Generator::new(vs.root(), &tiny(), &shape(8));
        let z = Tensor::randn([4, 16], (Kind::Float, Device::Cpu));
        let pl = g
            .path_length_penalty(&z, None, 0.01)
            .expect("stylegan2 has a path length");
        assert!(pl.double_value(&[]).is_finite());
        assert!(g.pl_mean().double_value(&[]) > 0.0);
        pl.backward();
        let keys: Vec<String> = vs.variables().into_keys().collect();
        assert!(keys.contains(&"pl_mean".to_string()));
    }

    #[test]
    fn rejects_bad_settings() {
        let e = tiny().validate(48).unwrap_err().to_string();
        assert!(e.starts_with("data.resolution:"), "{e}");
        let e = StyleGan2Config {
            style_mixing: 1.5,
            ..tiny()
        }
        .validate(32)
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("model.style_mixing:"), "{e}");
        let e = StyleGan2Config {
            channel_base: 16,
            ..tiny()
        }
        .validate(32)
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("model.channel_base:"), "{e}");
        let e = StyleGan2Config {
            mbstd_channels: 3,
            ..tiny()
        }
        .validate(32)
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("model.mbstd_channels:"), "{e}");
    }
}
