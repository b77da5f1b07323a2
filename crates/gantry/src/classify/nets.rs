//! Image classifiers with the embed/head split AdaptiveMix needs: `logits = head(embed(x))`, where
//! `embed` takes images in [0, 1] (normalisation is inside the model, so attacks work in pixel
//! space) and returns one feature vector per image.
//!
//! Backbones (one variant each): `small` (three conv-BN-ReLU-maxpool blocks and a 128-d feature
//! layer: fast on CPU, the feature network of classifier-feature FID), `resnet18` (the CIFAR
//! variant: 3x3 stem, no max-pool; He et al. 2016 as in kuangliu/pytorch-cifar), `wrn` (the wide
//! ResNet of the AdaptiveMix classification reference, `Wide_ResNet_orthognal`, with its
//! state-dict names under `trunk.`) and `wrn-zk` (the WRN paper's own layout, Zagoruyko &
//! Komodakis 2016, as most mixup and robustness papers train it; no dropout).
//! Heads: `linear` (with bias, on the raw feature) and `orthogonal` (the AdaptiveMix reference's
//! frozen, orthogonally initialised, bias-free `|W e|` on the L2-normalised feature, stored as
//! `head.weight` = the reference's `linear.weight`).
//!
//! `wrn` against the reference (tested by loading its state dict strictly, tests/pyref/wrn_ref.py):
//! same blocks (stride on conv2, shortcut from the raw block input, conv biases, no BN-ReLU after
//! the last group, so features are signed), same init. Departures: the input's channel count is
//! the data's (the reference hard-codes 3); the features are a global average, which is the
//! reference's `avg_pool2d(8)` at 32x32 and lets other resolutions work; no dropout (the
//! reference's default rate is 0). Without a final BN its raw features are unbounded: it is
//! meant for the orthogonal head (a linear head at lr 0.1 diverges, in PyTorch too).

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, ModuleT};
use tch::{Kind, Tensor};

/// `model.backbone`
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backbone {
    Small,
    Resnet18,
    /// The AdaptiveMix reference's WRN.
    Wrn,
    /// The WRN paper's layout: pre-activated input to the projection, stride on conv1, bias-free
    /// convs, a final BN-ReLU (non-negative features).
    #[serde(rename = "wrn-zk")]
    WrnZk,
}

impl Backbone {
    pub const NAMES: &'static [&'static str] = &["small", "resnet18", "wrn", "wrn-zk"];

    fn is_wrn(self) -> bool {
        matches!(self, Backbone::Wrn | Backbone::WrnZk)
    }
}

/// `model.head`
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Head {
    /// `orthogonal` for `objective.mode = "adaptivemix"` (the reference always uses it: its
    /// L_am is on L2-normalised features, where a linear head's MSE term could fall by shrinking
    /// the features), `linear` otherwise; a resolved configuration holds the concrete head.
    Auto,
    Linear,
    Orthogonal,
}

/// `[model]` of a classification run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetConfig {
    /// `small`, `resnet18`, `wrn` (the AdaptiveMix reference's) or `wrn-zk` (the WRN paper's).
    pub backbone: Backbone,
    /// `auto`, `linear`, or `orthogonal` (frozen `|W e|` on L2-normalised features, the
    /// reference's).
    pub head: Head,
    /// WRN depth (6n + 4: 16, 22, 28, ...).
    pub depth: i64,
    /// WRN widening factor k.
    pub widen: i64,
    /// Per-channel mean and std of the [0, 1] input, applied inside the model (one value = every
    /// channel).
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            backbone: Backbone::Wrn,
            head: Head::Auto,
            depth: 16,
            widen: 4,
            mean: vec![0.5],
            std: vec![0.5],
        }
    }
}

impl NetConfig {
    /// The architecture, and with `channels` known, the normalisation's length.
    pub fn validate(&self, channels: Option<usize>) -> crate::error::Result<()> {
        use crate::error::Error;
        if self.backbone.is_wrn()
            && (self.depth < 10 || (self.depth - 4) % 6 != 0 || self.widen < 1)
        {
            return Err(Error::config(
                "model.depth",
                format!(
                    "a WRN needs depth = 6n + 4 (10, 16, 22, 28, ...) and widen >= 1, got WRN-{}-{}",
                    self.depth, self.widen
                ),
            ));
        }
        for (key, v) in [("model.mean", &self.mean), ("model.std", &self.std)] {
            let fits = match channels {
                Some(c) => v.len() == 1 || v.len() == c,
                None => !v.is_empty(),
            };
            if !fits || v.iter().any(|x| !x.is_finite()) {
                let n = channels.map_or("1 or C".into(), |c| format!("1 or {c}"));
                return Err(Error::config(
                    key,
                    format!("must hold {n} finite values, got {v:?}"),
                ));
            }
        }
        if self.std.iter().any(|s| *s <= 0.0) {
            return Err(Error::config("model.std", "must be > 0"));
        }
        Ok(())
    }

    /// A short name: `wrn-16-4`, `wrn-zk-16-4`, `resnet18`, `small`.
    pub fn name(&self) -> String {
        match self.backbone {
            Backbone::Wrn => format!("wrn-{}-{}", self.depth, self.widen),
            Backbone::WrnZk => format!("wrn-zk-{}-{}", self.depth, self.widen),
            Backbone::Resnet18 => "resnet18".into(),
            Backbone::Small => "small".into(),
        }
    }
}

fn conv(p: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64) -> nn::Conv2D {
    nn::conv2d(
        p,
        c_in,
        c_out,
        k,
        nn::ConvConfig {
            stride,
            padding: k / 2,
            bias: false,
            ..Default::default()
        },
    )
}

/// PyTorch's BatchNorm2d init (weight 1), as every reference here; tch's default draws U(0, 1).
fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    crate::nn::norm::batch_norm(p, c)
}

/// ResNet basic block (post-activation).
struct Basic {
    c1: nn::Conv2D,
    b1: nn::BatchNorm,
    c2: nn::Conv2D,
    b2: nn::BatchNorm,
    short: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl Basic {
    fn new(p: &nn::Path, c_in: i64, c_out: i64, stride: i64) -> Self {
        Basic {
            c1: conv(p / "conv1", c_in, c_out, 3, stride),
            b1: bn(p / "bn1", c_out),
            c2: conv(p / "conv2", c_out, c_out, 3, 1),
            b2: bn(p / "bn2", c_out),
            short: (stride != 1 || c_in != c_out).then(|| {
                (
                    conv(p / "short_conv", c_in, c_out, 1, stride),
                    bn(p / "short_bn", c_out),
                )
            }),
        }
    }
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = self.b1.forward_t(&self.c1.forward(x), train).relu();
        let h = self.b2.forward_t(&self.c2.forward(&h), train);
        let s = match &self.short {
            Some((c, b)) => b.forward_t(&c.forward(x), train),
            None => x.shallow_clone(),
        };
        (h + s).relu()
    }
}

/// The AdaptiveMix reference's wide block: `conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut(x)`,
/// the stride on conv2, the shortcut (a 1x1 conv when the shape changes) on the raw input, every
/// conv with a bias and N(0, sqrt(2 / (k * k * C_out))) weights.
struct WideRef {
    b1: nn::BatchNorm,
    c1: nn::Conv2D,
    b2: nn::BatchNorm,
    c2: nn::Conv2D,
    short: Option<nn::Conv2D>,
}

/// A conv of the reference WRN: biased, padding k / 2, N(0, sqrt(2 / (k * k * C_out))) weights
/// and PyTorch's default bias init.
fn conv_ref(p: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64) -> nn::Conv2D {
    let bound = 1.0 / ((c_in * k * k) as f64).sqrt();
    nn::conv2d(
        p,
        c_in,
        c_out,
        k,
        nn::ConvConfig {
            stride,
            padding: k / 2,
            bias: true,
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: (2.0 / (k * k * c_out) as f64).sqrt(),
            },
            bs_init: nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
            ..Default::default()
        },
    )
}

impl WideRef {
    fn new(p: &nn::Path, c_in: i64, c_out: i64, stride: i64) -> Self {
        WideRef {
            b1: bn(p / "bn1", c_in),
            c1: conv_ref(p / "conv1", c_in, c_out, 3, 1),
            b2: bn(p / "bn2", c_out),
            c2: conv_ref(p / "conv2", c_out, c_out, 3, stride),
            short: (stride != 1 || c_in != c_out)
                .then(|| conv_ref(p / "shortcut" / 0, c_in, c_out, 1, stride)),
        }
    }
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = self.c1.forward(&self.b1.forward_t(x, train).relu());
        let h = self.c2.forward(&self.b2.forward_t(&h, train).relu());
        match &self.short {
            Some(c) => h + c.forward(x),
            None => h + x,
        }
    }
}

/// The WRN paper's pre-activation block.
struct Wide {
    b1: nn::BatchNorm,
    c1: nn::Conv2D,
    b2: nn::BatchNorm,
    c2: nn::Conv2D,
    short: Option<nn::Conv2D>,
}

impl Wide {
    fn new(p: &nn::Path, c_in: i64, c_out: i64, stride: i64) -> Self {
        Wide {
            b1: bn(p / "bn1", c_in),
            c1: conv(p / "conv1", c_in, c_out, 3, stride),
            b2: bn(p / "bn2", c_out),
            c2: conv(p / "conv2", c_out, c_out, 3, 1),
            short: (stride != 1 || c_in != c_out)
                .then(|| conv(p / "short", c_in, c_out, 1, stride)),
        }
    }
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let o = self.b1.forward_t(x, train).relu();
        let h = self.c1.forward(&o);
        let h = self.c2.forward(&self.b2.forward_t(&h, train).relu());
        match &self.short {
            // As in the WRN reference: the projection takes the pre-activated input.
            Some(c) => h + c.forward(&o),
            None => h + x,
        }
    }
}

enum Trunk {
    Small {
        blocks: Vec<(nn::Conv2D, nn::BatchNorm)>,
        feature: nn::Linear,
    },
    Resnet {
        stem: (nn::Conv2D, nn::BatchNorm),
        blocks: Vec<Basic>,
    },
    Wrn {
        stem: nn::Conv2D,
        blocks: Vec<WideRef>,
    },
    WrnZk {
        stem: nn::Conv2D,
        blocks: Vec<Wide>,
        out_bn: nn::BatchNorm,
    },
}

impl Trunk {
    fn new(p: &nn::Path, cfg: &NetConfig, channels: i64) -> (Trunk, i64) {
        match cfg.backbone {
            Backbone::Small => {
                let mut blocks = Vec::new();
                let mut c_in = channels;
                for (i, c) in [32, 64, 128].into_iter().enumerate() {
                    let bp = p / format!("block{i}");
                    let conv = nn::conv2d(
                        &bp / "conv",
                        c_in,
                        c,
                        3,
                        nn::ConvConfig {
                            padding: 1,
                            ..Default::default()
                        },
                    );
                    blocks.push((conv, bn(&bp / "bn", c)));
                    c_in = c;
                }
                let feature = nn::linear(p / "feature", c_in, 128, Default::default());
                (Trunk::Small { blocks, feature }, 128)
            }
            Backbone::Resnet18 => {
                let mut blocks = Vec::new();
                let mut c_in = 64;
                for (i, (c, stride)) in [(64, 1), (128, 2), (256, 2), (512, 2)]
                    .into_iter()
                    .enumerate()
                {
                    for j in 0..2 {
                        let s = if j == 0 { stride } else { 1 };
                        blocks.push(Basic::new(&(p / format!("layer{}_{j}", i + 1)), c_in, c, s));
                        c_in = c;
                    }
                }
                let stem = (
                    conv(p / "stem_conv", channels, 64, 3, 1),
                    bn(p / "stem_bn", 64),
                );
                (Trunk::Resnet { stem, blocks }, 512)
            }
            Backbone::Wrn => {
                let n = (cfg.depth - 4) / 6;
                let k = cfg.widen;
                let stem = conv_ref(p / "conv1", channels, 16, 3, 1);
                let mut blocks = Vec::new();
                let mut c_in = 16;
                for (g, (c, stride)) in [(16 * k, 1), (32 * k, 2), (64 * k, 2)]
                    .into_iter()
                    .enumerate()
                {
                    let lp = p / format!("layer{}", g + 1);
                    for j in 0..n {
                        let s = if j == 0 { stride } else { 1 };
                        blocks.push(WideRef::new(&(&lp / j), c_in, c, s));
                        c_in = c;
                    }
                }
                // The reference defines a BatchNorm2d `bn1` after layer3 that its forward never
                // calls; kept (frozen, unused) so state dicts match key for key both ways.
                let unused = p / "bn1";
                for name in ["weight", "running_var"] {
                    let _ = unused.ones_no_train(name, &[c_in]);
                }
                for name in ["bias", "running_mean"] {
                    let _ = unused.zeros_no_train(name, &[c_in]);
                }
                (Trunk::Wrn { stem, blocks }, c_in)
            }
            Backbone::WrnZk => {
                let n = (cfg.depth - 4) / 6;
                let k = cfg.widen;
                let mut blocks = Vec::new();
                let mut c_in = 16;
                for (g, (c, stride)) in [(16 * k, 1), (32 * k, 2), (64 * k, 2)]
                    .into_iter()
                    .enumerate()
                {
                    for j in 0..n {
                        let s = if j == 0 { stride } else { 1 };
                        blocks.push(Wide::new(&(p / format!("group{}_{j}", g + 1)), c_in, c, s));
                        c_in = c;
                    }
                }
                let stem = conv(p / "stem", channels, 16, 3, 1);
                let out_bn = bn(p / "out_bn", c_in);
                (
                    Trunk::WrnZk {
                        stem,
                        blocks,
                        out_bn,
                    },
                    c_in,
                )
            }
        }
    }

    /// Normalised images -> [B, F].
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let pool = |h: Tensor| h.mean_dim(&[2i64, 3][..], false, None::<Kind>);
        match self {
            Trunk::Small { blocks, feature } => {
                let mut h = x.shallow_clone();
                for (c, b) in blocks {
                    h = b
                        .forward_t(&c.forward(&h), train)
                        .relu()
                        .max_pool2d_default(2);
                }
                feature.forward(&pool(h)).relu()
            }
            Trunk::Resnet { stem, blocks } => {
                let mut h = stem.1.forward_t(&stem.0.forward(x), train).relu();
                for b in blocks {
                    h = b.forward(&h, train);
                }
                pool(h)
            }
            Trunk::Wrn { stem, blocks } => {
                let mut h = stem.forward(x);
                for b in blocks {
                    h = b.forward(&h, train);
                }
                pool(h)
            }
            Trunk::WrnZk {
                stem,
                blocks,
                out_bn,
            } => {
                let mut h = stem.forward(x);
                for b in blocks {
                    h = b.forward(&h, train);
                }
                pool(out_bn.forward_t(&h, train).relu())
            }
        }
    }
}

/// A classifier: `head(embed(x))`.
pub struct Net {
    trunk: Trunk,
    head: HeadLayer,
    mean: Tensor,
    std: Tensor,
    pub feature_dim: i64,
    pub classes: i64,
}

enum HeadLayer {
    Linear(nn::Linear),
    /// Frozen `[classes, F]`, not a trainable variable.
    Orthogonal(Tensor),
}

impl Net {
    /// Builds the network under `p`. The orthogonal head's weight is a non-trainable variable
    /// (saved with the model, so a checkpoint fixes it).
    pub fn new(p: &nn::Path, cfg: &NetConfig, channels: i64, classes: i64) -> Net {
        let (trunk, f) = Trunk::new(&(p / "trunk"), cfg, channels);
        let head = match cfg.head {
            // `auto` is resolved with the configuration; a linear head where it was not.
            Head::Linear | Head::Auto => {
                HeadLayer::Linear(nn::linear(p / "head", f, classes, Default::default()))
            }
            Head::Orthogonal => {
                let w = (p / "head").zeros_no_train("weight", &[classes, f]);
                let init = crate::nn::init::weight(
                    crate::nn::init::WeightInit::Orthogonal,
                    &[classes, f],
                    p.device(),
                );
                tch::no_grad(|| w.shallow_clone().copy_(&init));
                HeadLayer::Orthogonal(w)
            }
        };
        let per_channel = |v: &[f64]| {
            let v: Vec<f32> = if v.len() == 1 {
                vec![v[0] as f32; channels as usize]
            } else {
                v.iter().map(|x| *x as f32).collect()
            };
            Tensor::from_slice(&v)
                .view([1, channels, 1, 1])
                .to_device(p.device())
        };
        Net {
            trunk,
            head,
            mean: per_channel(&cfg.mean),
            std: per_channel(&cfg.std),
            feature_dim: f,
            classes,
        }
    }

    /// Images in [0, 1] -> features [B, F] (L2-normalised with the orthogonal head).
    pub fn embed(&self, x01: &Tensor, train: bool) -> Tensor {
        let f = self.trunk.forward(&((x01 - &self.mean) / &self.std), train);
        match self.head {
            HeadLayer::Linear(_) => f,
            HeadLayer::Orthogonal(_) => l2_normalise(&f),
        }
    }

    /// Features -> logits.
    pub fn head(&self, f: &Tensor) -> Tensor {
        match &self.head {
            HeadLayer::Linear(l) => l.forward(f),
            HeadLayer::Orthogonal(w) => f.matmul(&w.tr()).abs(),
        }
    }

    pub fn forward(&self, x01: &Tensor, train: bool) -> Tensor {
        self.head(&self.embed(x01, train))
    }
}

/// Rows scaled to unit L2 norm (F.normalize, eps 1e-12).
pub fn l2_normalise(f: &Tensor) -> Tensor {
    // `norm`, not sqrt(sum of squares): its gradient at a zero row is zero, not NaN.
    let n = f
        .norm_scalaropt_dim(2, [1i64].as_slice(), true)
        .clamp_min(1e-12);
    f / n
}
