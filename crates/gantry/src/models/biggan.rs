//! BigGAN (Brock, Donahue, Simonyan, "Large Scale GAN Training for High Fidelity Natural Image
//! Synthesis", ICLR 2019) at CIFAR scale, as BigGAN-PyTorch's `G_arch[32]`/`D_arch[32]`, with or
//! without `G_shared`; the FQ-GAN CIFAR runs (`FQ-BigGAN/scripts/launch_C10.sh`) train it without.
//!
//! **G**: every block's conditional BatchNorm (`nn::norm::ConditionalBatchNorm`: gains
//! `1 + gain(c)`, biases `bias(c)`) is conditioned on the class. With `model.shared_embedding`
//! (the paper, the default), a shared class embedding `shared` (`n_classes x shared_dim`,
//! `shared_dim` 0 = z_dim; never spectrally normalised, as in the reference) gives `c`, and gain and
//! bias are linear maps of it; without (the `biggan-cifar` preset), each BatchNorm looks its gain
//! and bias up in its own per-class table. The body is the ResNet generator of [`super::resnet`]
//! (`b4.fc`, up-blocks `b8`..`b32` of width `model.ngf`, 256 = 4 x `G_ch` 64 for CIFAR; plain
//! BN-ReLU-conv-tanh output). With `model.hier` (needs the shared embedding), z is split into
//! `blocks + 1` equal chunks: the first feeds `b4.fc`, chunk `i+1` is concatenated to the class
//! embedding for block `i` (BigGAN's hierarchical latents). Optional self-attention after the block
//! that outputs `model.attention`. Without labels (sample grids), class `i mod n_classes` is used
//! for sample `i`.
//!
//! **D** (projection discriminator, Miyato & Koyama 2018): the ResNet body of
//! [`super::resnet`] (`b32`, `b16`, `b8a`, `b8b`, width `model.ndf` = 4 x `D_ch`), then
//! `out(h) + <embed(y), h>` with `h` the ReLU'd features summed over space.
//!
//! **The `embed`/`head` split.** `embed` = every residual block (and the attention layer, which
//! mixes positions within a sample only), up to the deepest 8x8 pre-activation features. `head` =
//! ReLU, global sum pooling, the linear `out` and the projection term with the class embedding
//! `embed`. Taps are the block outputs, taken before an attention layer placed after the same block
//! (FQ-GAN quantises there). FQ's default layers are all four blocks (`--discrete_layer 0123`).
//!
//! SN (`model.g_sn`, `model.d_sn`; both on in the preset) covers every convolution and linear map,
//! the shared-embedding conditional BN's maps and D's class embedding (never a lookup table of
//! G: BigGAN-PyTorch keeps `nn.Embedding` plain). Initialisation (`model.init`): `ortho` (the
//! paper, the default); the FQ-GAN CIFAR runs use `normal` (N(0, 0.02)), which the preset sets.
//!
//! Departures: SN is torch's `spectral_norm` (stores `u` and `v`, no power iteration in eval) rather
//! than BigGAN-PyTorch's variant (see `nn::spectral`). Attention is added after the *first* D block
//! that outputs the chosen resolution (BigGAN-PyTorch's `D_arch[32]` labels all four CIFAR blocks
//! "16" and would add one after each).

use super::resnet::{self, BodyOpts, Cond, DBody, GBody, Pool};
use super::{Architecture, DataShape, Discriminator, Generator, TapFn};
use crate::error::{Error, Result};
use crate::nn::init::InitScheme;
use crate::nn::layers::{Embedding, LayerOpts, Linear};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// `model.*` with `arch = "biggan"`; the defaults are the paper's at CIFAR width.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BigGanConfig {
    /// Latent size.
    pub z_dim: i64,
    /// G width: channels of every residual block (4 x `G_ch` = 256 for CIFAR).
    pub ngf: i64,
    /// D width: channels of every residual block (4 x `D_ch` = 256 for CIFAR).
    pub ndf: i64,
    /// Spectral normalisation on G's convolutions and linear maps.
    pub g_sn: bool,
    /// Spectral normalisation on every layer of D.
    pub d_sn: bool,
    /// D's global pooling before its linear head: `sum` (BigGAN) or `mean`.
    pub pool: Pool,
    /// Weight initialisation: `ortho` (the paper), `normal` (N(0, 0.02), the FQ-GAN runs) or
    /// `glorot`.
    pub init: InitScheme,
    /// Self-attention after the G and D blocks that output this resolution (0 = none).
    pub attention: i64,
    /// One class embedding shared by all of G's conditional BatchNorms (`G_shared`); off = a
    /// per-class gain and bias table in each of them.
    pub shared_embedding: bool,
    /// Size of the shared class embedding; 0 = z_dim.
    pub shared_dim: i64,
    /// Hierarchical z (one chunk for the input layer, one per block with the class); needs the
    /// shared embedding.
    pub hier: bool,
}

impl Default for BigGanConfig {
    fn default() -> Self {
        BigGanConfig {
            z_dim: resnet::Z_DIM,
            ngf: 256,
            ndf: 256,
            g_sn: true,
            d_sn: true,
            pool: Pool::Sum,
            init: InitScheme::Orthogonal,
            attention: 0,
            shared_embedding: true,
            shared_dim: 0,
            hier: false,
        }
    }
}

/// Attention resolutions both networks have a block output at (G: 8..=res, D: deepest..=res/2).
fn attention_choices(resolution: i64) -> Vec<i64> {
    let mut r = resolution / 2;
    let mut out = Vec::new();
    while r >= resnet::deepest(resolution).max(8) {
        out.push(r);
        r /= 2;
    }
    out.reverse();
    out
}

impl Architecture for BigGanConfig {
    fn conditional(&self) -> bool {
        true
    }
    fn validate(&self, resolution: i64) -> Result<()> {
        resnet::validate_body(
            "biggan",
            resolution,
            &[("z_dim", self.z_dim), ("ngf", self.ngf), ("ndf", self.ndf)],
        )?;
        if self.shared_dim < 0 {
            return Err(Error::config(
                "model.shared_dim",
                "must be >= 0 (0 = z_dim)",
            ));
        }
        if !self.shared_embedding && (self.shared_dim != 0 || self.hier) {
            let key = if self.hier { "hier" } else { "shared_dim" };
            return Err(Error::config(
                format!("model.{key}"),
                "needs model.shared_embedding = true",
            ));
        }
        if self.attention != 0 {
            let choices = attention_choices(resolution);
            if !choices.contains(&self.attention) {
                let valid: Vec<String> = std::iter::once("0".to_string())
                    .chain(choices.iter().map(|c| c.to_string()))
                    .collect();
                return Err(Error::config(
                    "model.attention",
                    format!(
                        "no block of both G and D outputs {0}x{0} at resolution {resolution} (valid: {1})",
                        self.attention,
                        valid.join(", ")
                    ),
                ));
            }
            if self.ngf < 8 || self.ndf < 8 {
                return Err(Error::config(
                    "model.attention",
                    "attention needs widths of at least 8 (it projects to width/8 channels)",
                ));
            }
        }
        if self.hier {
            let slots = resnet::g_levels(resolution) + 1;
            if self.z_dim < slots {
                return Err(Error::config(
                    "model.z_dim",
                    format!(
                        "hierarchical z needs z_dim >= {slots} (one chunk per block, plus one)"
                    ),
                ));
            }
        }
        Ok(())
    }
    fn validate_data(&self, shape: &DataShape) -> Result<()> {
        if shape.num_classes.unwrap_or(0) <= 0 {
            return Err(Error::config(
                "model.arch",
                "biggan is class-conditional but the data has no labels (use cifar10, cifar100, shapes, or folder with data.labels=true)",
            ));
        }
        Ok(())
    }
    fn taps(&self, resolution: i64) -> Vec<String> {
        resnet::d_block_names(resolution)
    }
    /// Every block (FQ-GAN's `--discrete_layer 0123`).
    fn default_fq_layers(&self, resolution: i64) -> Vec<String> {
        self.taps(resolution)
    }
    fn generator(&self, p: nn::Path, shape: &DataShape) -> Box<dyn Generator> {
        Box::new(BigGanGenerator::new(p, self, shape))
    }
    fn discriminator(&self, p: nn::Path, shape: &DataShape) -> Box<dyn Discriminator> {
        Box::new(BigGanDiscriminator::new(p, self, shape))
    }
    fn d_spectral_norm(&self) -> bool {
        self.d_sn
    }
}

/// The `biggan` generator (see the module docs).
pub struct BigGanGenerator {
    z_dim: i64,
    /// Size of each z chunk with hierarchical z, 0 without.
    chunk: i64,
    n_classes: i64,
    /// The shared class embedding (`G_shared`); without it the labels condition each block.
    shared: Option<Embedding>,
    body: GBody,
}

impl BigGanGenerator {
    pub fn new(p: nn::Path, cfg: &BigGanConfig, shape: &DataShape) -> Self {
        let n_classes = shape.num_classes.expect("validated: biggan has labels");
        let z0 = cfg.z_dim;
        let shared_dim = if cfg.shared_dim > 0 {
            cfg.shared_dim
        } else {
            z0
        };
        let blocks = resnet::g_levels(shape.resolution);
        // BigGAN rounds z down to a multiple of the number of slots.
        let (z_dim, chunk) = if cfg.hier {
            let chunk = z0 / (blocks + 1);
            (chunk * (blocks + 1), chunk)
        } else {
            (z0, 0)
        };
        let fc_in = if cfg.hier { chunk } else { z_dim };
        let scheme = cfg.init;
        let opts = BodyOpts {
            scheme,
            sn: cfg.g_sn,
            cond: Some(if cfg.shared_embedding {
                Cond::Vector(shared_dim + chunk)
            } else {
                Cond::Classes(n_classes)
            }),
        };
        let shared = cfg.shared_embedding.then(|| {
            Embedding::new(
                &p / "shared",
                n_classes,
                shared_dim,
                LayerOpts {
                    init: scheme.layer(false),
                    bias: false,
                    sn: false,
                },
            )
        });
        let body = GBody::new(&p, fc_in, cfg.ngf, shape, &opts, cfg.attention);
        BigGanGenerator {
            z_dim,
            chunk,
            n_classes,
            shared,
            body,
        }
    }
}

impl Generator for BigGanGenerator {
    fn z_dim(&self) -> i64 {
        self.z_dim
    }
    fn forward(&self, z: &Tensor, labels: Option<&Tensor>, train: bool) -> Tensor {
        let b = z.size()[0];
        let cycled;
        let labels = match labels {
            Some(l) => l,
            None => {
                cycled = Tensor::arange(b, (Kind::Int64, z.device())).remainder(self.n_classes);
                &cycled
            }
        };
        let y = match &self.shared {
            Some(shared) => shared.forward_t(labels, train),
            None => labels.shallow_clone(),
        };
        if self.chunk > 0 {
            let zs = z.split(self.chunk, 1);
            let conds: Vec<Tensor> = zs[1..].iter().map(|zc| Tensor::cat(&[&y, zc], 1)).collect();
            self.body.forward_t(&zs[0], &conds, train)
        } else {
            let conds: Vec<Tensor> = (0..self.body.n_blocks())
                .map(|_| y.shallow_clone())
                .collect();
            self.body.forward_t(z, &conds, train)
        }
    }
}

/// The `biggan` projection discriminator (see the module docs).
pub struct BigGanDiscriminator {
    body: DBody,
    pool: Pool,
    out: Linear,
    embed: Embedding,
}

impl BigGanDiscriminator {
    pub fn new(p: nn::Path, cfg: &BigGanConfig, shape: &DataShape) -> Self {
        let n_classes = shape.num_classes.expect("validated: biggan has labels");
        let opts = BodyOpts {
            scheme: cfg.init,
            sn: cfg.d_sn,
            cond: None,
        };
        BigGanDiscriminator {
            body: DBody::new(&p, cfg.ndf, shape, &opts, cfg.attention),
            pool: cfg.pool,
            out: Linear::new(&p / "out", cfg.ndf, 1, opts.layer(false, true)),
            embed: Embedding::new(&p / "embed", n_classes, cfg.ndf, opts.layer(false, false)),
        }
    }
}

impl Discriminator for BigGanDiscriminator {
    fn embed_tapped(&self, x: &Tensor, train: bool, tap: &mut TapFn<'_>) -> Tensor {
        self.body.embed_tapped(x, train, tap)
    }
    /// Without labels the projection term is left out (unconditional score).
    fn head(&self, features: &Tensor, labels: Option<&Tensor>, train: bool) -> Tensor {
        let h = self.pool.apply(features);
        let out = self.out.forward_t(&h, train).select(1, 0);
        match labels {
            Some(y) => {
                out + (self.embed.forward_t(y, train) * &h).sum_dim_intlist(1, false, None::<Kind>)
            }
            None => out,
        }
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
        DataShape::image(3, res, Some(3))
    }

    fn cfg() -> BigGanConfig {
        BigGanConfig {
            ngf: 8,
            ndf: 8,
            z_dim: 12,
            ..Default::default()
        }
    }

    #[test]
    fn conditional_shapes_keys_and_hierarchical_z() {
        let vs = nn::VarStore::new(Device::Cpu);
        let c = BigGanConfig {
            hier: true,
            attention: 8,
            ..cfg()
        };
        c.validate(16).unwrap();
        c.validate_data(&shape(16)).unwrap();
        let g = BigGanGenerator::new(vs.root() / "g", &c, &shape(16));
        let d = BigGanDiscriminator::new(vs.root() / "d", &c, &shape(16));
        // 2 blocks + 1 slot: 12 -> chunks of 4.
        assert_eq!(g.z_dim(), 12);
        let labels = Tensor::from_slice(&[0i64, 2]);
        let x = g.forward(
            &Tensor::randn([2, 12], (Kind::Float, Device::Cpu)),
            Some(&labels),
            true,
        );
        assert_eq!(x.size(), [2, 3, 16, 16]);
        assert_eq!(
            g.forward(
                &Tensor::randn([4, 12], (Kind::Float, Device::Cpu)),
                None,
                false
            )
            .size(),
            [4, 3, 16, 16]
        );
        assert_eq!(d.forward(&x, Some(&labels), true).size(), [2]);
        assert_eq!(d.taps(), ["b16", "b8a", "b8b"]);
        let keys: Vec<String> = vs.variables().into_keys().collect();
        assert!(keys.iter().all(|k| !k.contains("__")), "{keys:?}");
        for k in [
            "g.shared.weight",
            "g.b8.bn0.gain.weight_u",
            "g.attn8.gamma",
            "d.attn8.theta.weight",
            "d.embed.weight_v",
            "d.out.bias",
        ] {
            assert!(keys.contains(&k.to_string()), "{k} missing from {keys:?}");
        }
        assert!(
            !keys.contains(&"g.shared.weight_u".to_string()),
            "G's shared embedding is never SN'd"
        );
    }

    /// FQ-GAN's CIFAR runs: no shared embedding; each conditional BN has its own per-class gain
    /// and bias tables (plain lookup tables, never SN'd), and the class alone changes a sample.
    #[test]
    fn per_block_class_tables_without_the_shared_embedding() {
        let vs = nn::VarStore::new(Device::Cpu);
        let c = BigGanConfig {
            shared_embedding: false,
            init: InitScheme::Normal,
            ..cfg()
        };
        c.validate(16).unwrap();
        let g = BigGanGenerator::new(vs.root() / "g", &c, &shape(16));
        let keys: Vec<String> = vs.variables().into_keys().collect();
        assert!(!keys.iter().any(|k| k.starts_with("g.shared")), "{keys:?}");
        let vars = vs.variables();
        assert_eq!(vars["g.b8.bn0.gain.weight"].size(), [3, 8]);
        assert_eq!(vars["g.b16.bn1.bias.weight"].size(), [3, 8]);
        assert!(!keys.contains(&"g.b8.bn0.gain.weight_u".to_string()));
        // Gains start near 0 (N(0, 0.02)), so give the tables room to differ by class.
        tch::no_grad(|| {
            let _ = vars["g.b8.bn0.gain.weight"]
                .shallow_clone()
                .normal_(0.0, 1.0);
        });
        let z = Tensor::randn([1, 12], (Kind::Float, Device::Cpu)).repeat([2, 1]);
        let x = g.forward(&z, Some(&Tensor::from_slice(&[0i64, 1])), false);
        assert!((x.get(0) - x.get(1)).abs().max().double_value(&[]) > 1e-4);
        let e = BigGanConfig {
            hier: true,
            ..c.clone()
        }
        .validate(16)
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("model.hier: needs model.shared_embedding"),
            "{e}"
        );
    }

    #[test]
    fn validation_names_the_key() {
        let unlabelled = DataShape {
            num_classes: None,
            ..shape(32)
        };
        assert!(cfg()
            .validate_data(&unlabelled)
            .unwrap_err()
            .to_string()
            .starts_with("model.arch:"));
        let e = BigGanConfig {
            attention: 32,
            ..cfg()
        }
        .validate(32)
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("model.attention:") && e.contains("valid: 0, 8, 16"),
            "{e}"
        );
    }
}
