//! U-GAT-IT's networks (Kim, Kim, Kang, Lee, "U-GAT-IT: Unsupervised Generative Attentional
//! Networks with Adaptive Layer-Instance Normalization for Image-to-Image Translation", ICLR
//! 2020), after the official PyTorch code (znxlwm/UGATIT-pytorch, `networks.py`), with its
//! parameter names, so that a state dict loads strictly in either direction:
//!
//! - the generator: a ResNet encoder (reflect-padded 7x7 and two strided 3x3 convolutions with
//!   instance norm, `n_res` residual blocks), the CAM attention (global-average- and global-max-
//!   pooled auxiliary classifiers whose weights re-weight the channels, a 1x1 fusion; their two
//!   logits and the channel-summed heat-map are returned), gamma and beta from an MLP on the
//!   attended features (`light`: on their global average), `n_res` residual blocks with AdaLIN,
//!   and a decoder of nearest upsampling, convolutions with ILN and a tanh 7x7 output;
//! - the discriminator: reflect-padded 4x4 convolutions with spectral norm and LeakyReLU(0.2)
//!   (`layers` = 7 for the global, 5 for the local critic), the same CAM on the last map, a 1x1
//!   fusion and a 4x4 patch classifier.
//!
//! AdaLIN and ILN mix instance and layer normalisation by a learnt `rho`, which the training loop
//! clips to [0, 1] after every step ([`clip_rho`]); both use the unbiased variance, as the
//! reference's `torch.var`. The CAM weighting of the discriminator uses its auxiliary classifiers'
//! weight *before* spectral normalisation (`list(gap_fc.parameters())[0]` is `weight_orig`), while
//! their logits use the normalised weight, as the reference does.
//!
//! The discriminator implements [`Discriminator`]: `embed` is the convolution stack (its outputs
//! are the taps `b<side>` for each stride-2 layer and `last`), `head` the CAM and patch classifier;
//! `head` returns one row per image, the patch logits flattened followed by the two CAM logits
//! (split them with [`split_scores`]), so that every plug-in attaches to it unchanged.

use crate::models::{Discriminator, TapFn};
use crate::nn::init::{BiasInit, LayerInit, WeightInit};
use crate::nn::layers::{Conv2d, LayerOpts, Linear};
use crate::nn::leaky_relu;
use tch::{nn, Kind, Tensor};

const EPS: f64 = 1e-5;

fn opts(bias: bool, sn: bool) -> LayerOpts {
    LayerOpts {
        init: LayerInit {
            weight: WeightInit::TorchDefault,
            bias: BiasInit::TorchDefault,
        },
        bias,
        sn,
    }
}

/// `nn.InstanceNorm2d` without affine parameters (biased variance).
fn instance_norm(x: &Tensor) -> Tensor {
    let mean = x.mean_dim(&[2i64, 3][..], true, None::<Kind>);
    let var = x.var_dim(&[2i64, 3][..], false, true);
    (x - mean) / (var + EPS).sqrt()
}

/// The instance- and layer-normalised inputs of AdaLIN / ILN, mixed by `rho` `[1, C, 1, 1]`.
fn lin_mix(x: &Tensor, rho: &Tensor) -> Tensor {
    let in_mean = x.mean_dim(&[2i64, 3][..], true, None::<Kind>);
    let in_var = x.var_dim(&[2i64, 3][..], true, true);
    let out_in = (x - in_mean) / (in_var + EPS).sqrt();
    let ln_mean = x.mean_dim(&[1i64, 2, 3][..], true, None::<Kind>);
    let ln_var = x.var_dim(&[1i64, 2, 3][..], true, true);
    let out_ln = (x - ln_mean) / (ln_var + EPS).sqrt();
    rho * out_in + (1.0 - rho) * out_ln
}

/// Adaptive layer-instance normalisation: `rho` learnt (starts at 0.9), gamma and beta given.
struct AdaLin {
    rho: Tensor,
}

impl AdaLin {
    fn new(p: nn::Path, c: i64) -> Self {
        AdaLin {
            rho: p.var("rho", &[1, c, 1, 1], nn::Init::Const(0.9)),
        }
    }
    fn forward(&self, x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Tensor {
        lin_mix(x, &self.rho) * gamma.unsqueeze(2).unsqueeze(3) + beta.unsqueeze(2).unsqueeze(3)
    }
}

/// Layer-instance normalisation with learnt rho (starts at 0), gamma (1) and beta (0).
struct Iln {
    rho: Tensor,
    gamma: Tensor,
    beta: Tensor,
}

impl Iln {
    fn new(p: nn::Path, c: i64) -> Self {
        Iln {
            rho: p.var("rho", &[1, c, 1, 1], nn::Init::Const(0.0)),
            gamma: p.var("gamma", &[1, c, 1, 1], nn::Init::Const(1.0)),
            beta: p.var("beta", &[1, c, 1, 1], nn::Init::Const(0.0)),
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        lin_mix(x, &self.rho) * &self.gamma + &self.beta
    }
}

/// Clamps every `rho` (AdaLIN and ILN) of `vs` to [0, 1], the reference's `RhoClipper(0, 1)`
/// applied after each generator step.
pub fn clip_rho(vs: &nn::VarStore) {
    tch::no_grad(|| {
        for (name, t) in vs.variables() {
            if name.ends_with(".rho") {
                let _ = t.shallow_clone().clamp_(0.0, 1.0);
            }
        }
    });
}

/// `[ReflectionPad2d(pad), Conv2d(k, stride, bias)]`.
struct PadConv {
    pad: i64,
    conv: Conv2d,
}

impl PadConv {
    #[allow(clippy::too_many_arguments)]
    fn new(
        p: nn::Path,
        c_in: i64,
        c_out: i64,
        k: i64,
        stride: i64,
        pad: i64,
        o: LayerOpts,
    ) -> Self {
        PadConv {
            pad,
            conv: Conv2d::strided(p, c_in, c_out, k, stride, 0, o),
        }
    }
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let p = self.pad;
        let x = if p > 0 {
            crate::nn::reflection_pad2d(x, [p, p, p, p])
        } else {
            x.shallow_clone()
        };
        self.conv.forward_t(&x, train)
    }
}

/// U-GAT-IT's generator settings (the `[model]` of a translation run).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UgatitConfig {
    /// Base width (the reference's `--ch`).
    pub ch: i64,
    /// Residual blocks in the encoder and in the decoder (`--n_res`).
    pub n_res: i64,
    /// U-GAT-IT light: gamma and beta from the globally averaged features.
    pub light: bool,
    /// Layers of the global discriminator (the reference: 7).
    pub global_layers: i64,
    /// Layers of the local discriminator (the reference: 5).
    pub local_layers: i64,
}

impl Default for UgatitConfig {
    fn default() -> Self {
        UgatitConfig {
            ch: 64,
            n_res: 4,
            light: false,
            global_layers: 7,
            local_layers: 5,
        }
    }
}

/// What a generator returns: the translation, its two CAM logits `[B, 2]`, the heat-map
/// `[B, 1, h, w]`.
pub struct Translated {
    pub image: Tensor,
    pub cam_logits: Tensor,
    pub heatmap: Tensor,
}

enum Down {
    /// Reflect-padded convolution, instance norm, ReLU.
    Conv(PadConv),
    /// Residual block of two such convolutions (no ReLU after the second).
    Res(PadConv, PadConv),
}

struct AdaLinBlock {
    conv1: PadConv,
    norm1: AdaLin,
    conv2: PadConv,
    norm2: AdaLin,
}

/// The generator (`ResnetGenerator`).
pub struct UgatitGenerator {
    down: Vec<Down>,
    gap_fc: Linear,
    gmp_fc: Linear,
    conv1x1: Conv2d,
    fc: Vec<Linear>,
    gamma: Linear,
    beta: Linear,
    up1: Vec<AdaLinBlock>,
    /// (convolution, ILN) of the two upsampling stages.
    up2: Vec<(PadConv, Iln)>,
    out: PadConv,
    light: bool,
}

impl UgatitGenerator {
    /// For `channels`-channel images of side `size` (both domains share the channel count).
    pub fn new(p: &nn::Path, cfg: &UgatitConfig, channels: i64, size: i64) -> Self {
        let ngf = cfg.ch;
        let no_bias = opts(false, false);
        let db = p / "DownBlock";
        let mut down = vec![Down::Conv(PadConv::new(
            &db / 1,
            channels,
            ngf,
            7,
            1,
            3,
            no_bias,
        ))];
        let mut idx = 4;
        for i in 0..2 {
            let mult = 1 << i;
            down.push(Down::Conv(PadConv::new(
                &db / (idx + 1),
                ngf * mult,
                ngf * mult * 2,
                3,
                2,
                1,
                no_bias,
            )));
            idx += 4;
        }
        let c = ngf * 4;
        for _ in 0..cfg.n_res {
            let b = &db / idx / "conv_block";
            down.push(Down::Res(
                PadConv::new(&b / 1, c, c, 3, 1, 1, no_bias),
                PadConv::new(&b / 5, c, c, 3, 1, 1, no_bias),
            ));
            idx += 1;
        }
        let fc_in = if cfg.light {
            c
        } else {
            (size / 4) * (size / 4) * c
        };
        let up1 = (1..=cfg.n_res)
            .map(|i| {
                let b = p / format!("UpBlock1_{i}");
                AdaLinBlock {
                    conv1: PadConv::new(&b / "conv1", c, c, 3, 1, 1, no_bias),
                    norm1: AdaLin::new(&b / "norm1", c),
                    conv2: PadConv::new(&b / "conv2", c, c, 3, 1, 1, no_bias),
                    norm2: AdaLin::new(&b / "norm2", c),
                }
            })
            .collect();
        let ub = p / "UpBlock2";
        let up2 = (0..2)
            .map(|i| {
                let mult = 4 >> i;
                let base = 5 * i;
                (
                    PadConv::new(
                        &ub / (base + 2),
                        ngf * mult,
                        ngf * mult / 2,
                        3,
                        1,
                        1,
                        no_bias,
                    ),
                    Iln::new(&ub / (base + 3), ngf * mult / 2),
                )
            })
            .collect();
        UgatitGenerator {
            down,
            gap_fc: Linear::new(p / "gap_fc", c, 1, no_bias),
            gmp_fc: Linear::new(p / "gmp_fc", c, 1, no_bias),
            conv1x1: Conv2d::strided(p / "conv1x1", 2 * c, c, 1, 1, 0, opts(true, false)),
            fc: vec![
                Linear::new(p / "FC" / 0, fc_in, c, no_bias),
                Linear::new(p / "FC" / 2, c, c, no_bias),
            ],
            gamma: Linear::new(p / "gamma", c, c, no_bias),
            beta: Linear::new(p / "beta", c, c, no_bias),
            up1,
            up2,
            out: PadConv::new(&ub / 11, ngf, channels, 7, 1, 3, no_bias),
            light: cfg.light,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Translated {
        let train = true;
        let mut h = x.shallow_clone();
        for d in &self.down {
            h = match d {
                Down::Conv(c) => instance_norm(&c.forward(&h, train)).relu(),
                Down::Res(c1, c2) => {
                    let r = instance_norm(&c1.forward(&h, train)).relu();
                    &h + instance_norm(&c2.forward(&r, train))
                }
            };
        }
        let (cam, cam_logits) = cam(&h, &self.gap_fc, &self.gmp_fc, train);
        let h = self.conv1x1.forward_t(&cam, train).relu();
        let heatmap = h.sum_dim_intlist(1, true, None::<Kind>);
        let b = h.size()[0];
        let mut v = if self.light {
            h.mean_dim(&[2i64, 3][..], false, None::<Kind>)
        } else {
            h.view([b, -1])
        };
        for l in &self.fc {
            v = l.forward_t(&v, train).relu();
        }
        let (gamma, beta) = (
            self.gamma.forward_t(&v, train),
            self.beta.forward_t(&v, train),
        );
        let mut h = h;
        for blk in &self.up1 {
            let r = blk
                .norm1
                .forward(&blk.conv1.forward(&h, train), &gamma, &beta)
                .relu();
            h = blk
                .norm2
                .forward(&blk.conv2.forward(&r, train), &gamma, &beta)
                + h;
        }
        for (conv, iln) in &self.up2 {
            let up = h.upsample_nearest2d([h.size()[2] * 2, h.size()[3] * 2], Some(2.0), Some(2.0));
            h = iln.forward(&conv.forward(&up, train)).relu();
        }
        Translated {
            image: self.out.forward(&h, train).tanh(),
            cam_logits,
            heatmap,
        }
    }
}

/// The CAM of generator and discriminator: `(x * w_gap ++ x * w_gmp, [gap_logit, gmp_logit])`.
/// The weights that re-weight the channels are the classifiers' raw (pre-SN) weights.
fn cam(x: &Tensor, gap_fc: &Linear, gmp_fc: &Linear, train: bool) -> (Tensor, Tensor) {
    let b = x.size()[0];
    // A mean, not adaptive_avg_pool2d: the same values, and a deterministic backward on CUDA.
    let gap = x.mean_dim(&[2i64, 3][..], false, None::<Kind>);
    let gap_logit = gap_fc.forward_t(&gap, train);
    let gmp = x.amax(&[2i64, 3][..], true).view([b, -1]);
    let gmp_logit = gmp_fc.forward_t(&gmp, train);
    let w = |l: &Linear| l.raw_weight().unsqueeze(2).unsqueeze(3);
    let weighted = Tensor::cat(&[x * w(gap_fc), x * w(gmp_fc)], 1);
    (weighted, Tensor::cat(&[gap_logit, gmp_logit], 1))
}

/// The discriminator (`Discriminator` of networks.py), global (`layers` = 7) or local (5).
pub struct UgatitDiscriminator {
    /// (convolution, tap name).
    model: Vec<(PadConv, String)>,
    gap_fc: Linear,
    gmp_fc: Linear,
    conv1x1: Conv2d,
    conv: PadConv,
}

impl UgatitDiscriminator {
    /// Side of the patch-logit map for an input of side `size`, or `None` if `layers` is too
    /// deep for it.
    pub fn patch_side(layers: i64, size: i64) -> Option<i64> {
        let mut s = size;
        for _ in 0..layers - 2 {
            s = (s + 2 - 4) / 2 + 1;
        }
        // The stride-1 layer, then the patch classifier: each 4x4 with padding 1.
        let s = s - 2;
        (layers >= 3 && s >= 1).then_some(s)
    }

    pub fn new(p: &nn::Path, ndf: i64, layers: i64, channels: i64, size: i64) -> Self {
        let sn = opts(true, true);
        let m = p / "model";
        let mut model = Vec::new();
        let mut side = size;
        let mut c = channels;
        let mut idx = 1;
        for i in 0..layers - 2 {
            let out = if i == 0 { ndf } else { c * 2 };
            side = (side + 2 - 4) / 2 + 1;
            model.push((
                PadConv::new(&m / idx, c, out, 4, 2, 1, sn),
                format!("b{side}"),
            ));
            c = out;
            idx += 3;
        }
        model.push((PadConv::new(&m / idx, c, c * 2, 4, 1, 1, sn), "last".into()));
        c *= 2;
        let sn_no_bias = opts(false, true);
        UgatitDiscriminator {
            model,
            gap_fc: Linear::new(p / "gap_fc", c, 1, sn_no_bias),
            gmp_fc: Linear::new(p / "gmp_fc", c, 1, sn_no_bias),
            conv1x1: Conv2d::strided(p / "conv1x1", 2 * c, c, 1, 1, 0, opts(true, false)),
            conv: PadConv::new(p / "conv", c, 1, 4, 1, 1, sn_no_bias),
        }
    }

    /// `(patch logits [B, 1, s, s], CAM logits [B, 2], heat-map [B, 1, h, w])` of features
    /// from `embed`.
    pub fn head_parts(&self, features: &Tensor, train: bool) -> (Tensor, Tensor, Tensor) {
        let (weighted, cam_logits) = cam(features, &self.gap_fc, &self.gmp_fc, train);
        let h = leaky_relu(&self.conv1x1.forward_t(&weighted, train), 0.2);
        let heatmap = h.sum_dim_intlist(1, true, None::<Kind>);
        (self.conv.forward(&h, train), cam_logits, heatmap)
    }
}

/// Splits a U-GAT-IT critic's row of scores into the patch logits `[B, s*s]` and the CAM logits
/// `[B, 2]`.
pub fn split_scores(scores: &Tensor) -> (Tensor, Tensor) {
    let n = scores.size()[1];
    (scores.narrow(1, 0, n - 2), scores.narrow(1, n - 2, 2))
}

impl Discriminator for UgatitDiscriminator {
    fn embed_tapped(&self, x: &Tensor, train: bool, tap: &mut TapFn<'_>) -> Tensor {
        let mut h = x.shallow_clone();
        for (conv, name) in &self.model {
            h = tap(name, leaky_relu(&conv.forward(&h, train), 0.2));
        }
        h
    }

    fn head(&self, features: &Tensor, _labels: Option<&Tensor>, train: bool) -> Tensor {
        let (patch, cam_logits, _) = self.head_parts(features, train);
        let b = patch.size()[0];
        Tensor::cat(&[patch.view([b, -1]), cam_logits], 1)
    }

    fn taps(&self) -> Vec<String> {
        self.model.iter().map(|(_, n)| n.clone()).collect()
    }
}
