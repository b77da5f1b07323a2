//! BigGAN (Brock, Donahue, Simonyan, "Large Scale GAN Training for High Fidelity Natural Image
//! Synthesis", ICLR 2019) at CIFAR scale, as BigGAN-PyTorch's `G_arch[32]`/`D_arch[32]` with
//! `G_shared` and as the FQ-GAN CIFAR runs train it (`FQ-BigGAN/scripts/launch_C10.sh`).
//!
//! **G**: a shared class embedding `shared` (`n_classes x shared_dim`, `shared_dim` 0 = z_dim;
//! never spectrally normalised, as in the reference) feeds every block's conditional BatchNorm
//! (`nn::norm::ConditionalBatchNorm`: gains `1 + W_g y`, biases `W_b y`); the body is the ResNet
//! generator of [`super::resnet`] (`b4.fc`, up-blocks `b8`..`b32` of width `model.ngf`, 256 =
//! 4 x `G_ch` 64 for CIFAR; plain BN-ReLU-conv-tanh output). With `model.hier`, z is split into
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
//! the conditional BN's maps and D's class embedding. Initialisation (`model.init`): `auto` =
//! orthogonal (the paper); the FQ-GAN CIFAR runs use `normal` (N(0, 0.02)), which the preset sets.
//!
//! Departures: SN is torch's `spectral_norm` (stores `u` and `v`, no power iteration in eval) rather
//! than BigGAN-PyTorch's variant (see `nn::spectral`). Attention is added after the *first* D block
//! that outputs the chosen resolution (BigGAN-PyTorch's `D_arch[32]` labels all four CIFAR blocks
//! "16" and would add one after each). In the D step, G is conditioned on the real batch's labels
//! (the training loop's choice) where BigGAN-PyTorch samples fresh fake labels; G's own step uses
//! random labels in both.

use super::resnet::{self, BodyOpts, DBody, GBody, Pool};
use super::{DataShape, Discriminator, Generator, ModelConfig, TapFn};
use crate::error::{Error, Result};
use crate::nn::init::InitScheme;
use crate::nn::layers::{Embedding, LayerOpts, Linear};
use tch::{nn, Kind, Tensor};

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

pub(super) fn validate(cfg: &ModelConfig, shape: &DataShape) -> Result<()> {
    resnet::validate_common(cfg, shape)?;
    if shape.num_classes.unwrap_or(0) <= 0 {
        return Err(Error::config(
            "model.arch",
            "biggan is class-conditional but the data has no labels (use cifar10, cifar100, shapes, or folder with data.labels=true)",
        ));
    }
    if cfg.shared_dim < 0 {
        return Err(Error::config(
            "model.shared_dim",
            "must be >= 0 (0 = z_dim)",
        ));
    }
    if cfg.attention != 0 {
        let choices = attention_choices(shape.resolution);
        if !choices.contains(&cfg.attention) {
            let valid: Vec<String> = std::iter::once("0".to_string())
                .chain(choices.iter().map(|c| c.to_string()))
                .collect();
            return Err(Error::config(
                "model.attention",
                format!(
                    "no block of both G and D outputs {0}x{0} at resolution {1} (valid: {2})",
                    cfg.attention,
                    shape.resolution,
                    valid.join(", ")
                ),
            ));
        }
        if cfg.ngf < 8 || cfg.ndf < 8 {
            return Err(Error::config(
                "model.attention",
                "attention needs widths of at least 8 (it projects to width/8 channels)",
            ));
        }
    }
    if cfg.hier {
        let z = if cfg.z_dim > 0 {
            cfg.z_dim
        } else {
            resnet::Z_DIM
        };
        let slots = resnet::g_levels(shape.resolution) + 1;
        if z < slots {
            return Err(Error::config(
                "model.z_dim",
                format!("hierarchical z needs z_dim >= {slots} (one chunk per block, plus one)"),
            ));
        }
    }
    Ok(())
}

/// The `biggan` generator (see the module docs).
pub struct BigGanGenerator {
    z_dim: i64,
    /// Size of each z chunk with hierarchical z, 0 without.
    chunk: i64,
    n_classes: i64,
    shared: Embedding,
    body: GBody,
}

impl BigGanGenerator {
    pub fn new(p: nn::Path, cfg: &ModelConfig, shape: &DataShape) -> Self {
        let n_classes = shape.num_classes.expect("validated: biggan has labels");
        let z0 = if cfg.z_dim > 0 {
            cfg.z_dim
        } else {
            resnet::Z_DIM
        };
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
        let scheme = resnet::scheme(cfg, InitScheme::Orthogonal);
        let opts = BodyOpts {
            scheme,
            sn: cfg.g_sn,
            cond_dim: Some(shared_dim + chunk),
        };
        let shared = Embedding::new(
            &p / "shared",
            n_classes,
            shared_dim,
            LayerOpts {
                init: scheme.layer(false),
                bias: false,
                sn: false,
            },
        );
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
        let y = self.shared.forward_t(labels, train);
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
    pub fn new(p: nn::Path, cfg: &ModelConfig, shape: &DataShape) -> Self {
        let n_classes = shape.num_classes.expect("validated: biggan has labels");
        let opts = BodyOpts {
            scheme: resnet::scheme(cfg, InitScheme::Orthogonal),
            sn: cfg.d_sn,
            cond_dim: None,
        };
        BigGanDiscriminator {
            body: DBody::new(&p, cfg.ndf, shape, &opts, cfg.attention),
            pool: Pool::parse(&cfg.pool).expect("validated"),
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
    fn default_fq_layers(&self) -> Vec<String> {
        self.taps()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn shape(res: i64) -> DataShape {
        DataShape::image(3, res, Some(3))
    }

    fn cfg() -> ModelConfig {
        ModelConfig {
            arch: "biggan".into(),
            ngf: 8,
            ndf: 8,
            z_dim: 12,
            g_sn: true,
            d_sn: true,
            ..Default::default()
        }
    }

    #[test]
    fn conditional_shapes_keys_and_hierarchical_z() {
        let vs = nn::VarStore::new(Device::Cpu);
        let c = ModelConfig {
            hier: true,
            attention: 8,
            ..cfg()
        };
        validate(&c, &shape(16)).unwrap();
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

    #[test]
    fn validation_names_the_key() {
        let unlabelled = DataShape {
            num_classes: None,
            ..shape(32)
        };
        assert!(validate(&cfg(), &unlabelled)
            .unwrap_err()
            .to_string()
            .starts_with("model.arch:"));
        let e = validate(
            &ModelConfig {
                attention: 32,
                ..cfg()
            },
            &shape(32),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("model.attention:") && e.contains("valid: 0, 8, 16"),
            "{e}"
        );
    }
}
