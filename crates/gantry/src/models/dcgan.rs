//! DCGAN (Radford, Metz, Chintala, 2016), as in PyTorch's `examples/dcgan`: transposed-conv
//! generator with BatchNorm + ReLU, strided-conv discriminator with LeakyReLU(0.2), N(0, 0.02)
//! initialisation, no conv biases. Departures: D returns a logit (the loss applies the sigmoid),
//! the depth follows the resolution (32 -> 3 blocks, 64 -> 4), and D's normalisation is selectable
//! (`layer` or `none` for WGAN-GP, which forbids BatchNorm in the critic).
//!
//! Blocks are named by resolution: G's by the resolution they output (`b4` .. `b32`), D's by the
//! resolution they read (`b32` .. `b8`). D's taps are its block outputs, under the block's name.

use super::{Architecture, DataShape, Discriminator, Generator, TapFn};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::Tensor;

/// Normalisation inside D's blocks (the first block has none, as in the paper).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DNorm {
    /// BatchNorm (DCGAN).
    #[default]
    Batch,
    /// LayerNorm over (C, H, W) per sample: what a gradient penalty allows (WGAN-GP).
    Layer,
    None,
}

/// `model.*` with `arch = "dcgan"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DcganConfig {
    /// Latent size.
    pub z_dim: i64,
    /// Generator width: channels of its last hidden layer (doubling per block towards 4x4).
    pub ngf: i64,
    /// Discriminator width: channels of its first layer (doubling per block).
    pub ndf: i64,
    /// Normalisation inside D: `batch` (DCGAN), `layer` (for WGAN-GP) or `none`.
    pub d_norm: DNorm,
}

impl Default for DcganConfig {
    fn default() -> Self {
        DcganConfig {
            z_dim: 100,
            ngf: 64,
            ndf: 64,
            d_norm: DNorm::Batch,
        }
    }
}

fn init() -> nn::Init {
    nn::Init::Randn {
        mean: 0.0,
        stdev: 0.02,
    }
}

fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    let cfg = nn::BatchNormConfig {
        ws_init: nn::Init::Randn {
            mean: 1.0,
            stdev: 0.02,
        },
        bs_init: nn::Init::Const(0.0),
        ..Default::default()
    };
    nn::batch_norm2d(p, c, cfg)
}

/// Number of stride-2 blocks between 4x4 and the resolution.
fn levels(resolution: i64) -> i64 {
    (resolution as f64).log2().round() as i64 - 2
}

/// D's block names: the resolution each block reads, from the input down to 8.
fn block_names(resolution: i64) -> Vec<String> {
    (0..levels(resolution))
        .map(|i| format!("b{}", resolution >> i))
        .collect()
}

impl Architecture for DcganConfig {
    fn validate(&self, r: i64) -> Result<()> {
        if r < 8 || r & (r - 1) != 0 {
            return Err(Error::config(
                "data.resolution",
                format!("dcgan needs a power-of-two resolution >= 8, got {r}"),
            ));
        }
        for (key, v) in [("z_dim", self.z_dim), ("ngf", self.ngf), ("ndf", self.ndf)] {
            if v <= 0 {
                return Err(Error::config(format!("model.{key}"), "must be positive"));
            }
        }
        Ok(())
    }
    fn taps(&self, resolution: i64) -> Vec<String> {
        block_names(resolution)
    }
    fn generator(&self, p: nn::Path, shape: &DataShape) -> Box<dyn Generator> {
        Box::new(DcganGenerator::new(p, self, shape))
    }
    fn discriminator(&self, p: nn::Path, shape: &DataShape) -> Box<dyn Discriminator> {
        Box::new(DcganDiscriminator::new(p, self, shape))
    }
    fn d_batch_norm(&self) -> bool {
        self.d_norm == DNorm::Batch
    }
}

pub struct DcganGenerator {
    z_dim: i64,
    blocks: Vec<(nn::ConvTranspose2D, Option<nn::BatchNorm>)>,
}

impl DcganGenerator {
    pub fn new(p: nn::Path, cfg: &DcganConfig, shape: &DataShape) -> Self {
        let z_dim = cfg.z_dim;
        let n = levels(shape.resolution);
        let mut blocks = Vec::new();
        let mut c_in = z_dim;
        for i in 0..=n {
            let res = 4 << i;
            let last = i == n;
            let c_out = if last {
                shape.channels
            } else {
                cfg.ngf << (n - 1 - i)
            };
            let (stride, padding) = if i == 0 { (1, 0) } else { (2, 1) };
            let bp = &p / format!("b{res}");
            let conv_cfg = nn::ConvTransposeConfig {
                stride,
                padding,
                bias: false,
                ws_init: init(),
                ..Default::default()
            };
            let conv = nn::conv_transpose2d(&bp / "conv", c_in, c_out, 4, conv_cfg);
            let norm = (!last).then(|| bn(&bp / "bn", c_out));
            blocks.push((conv, norm));
            c_in = c_out;
        }
        DcganGenerator { z_dim, blocks }
    }
}

impl Generator for DcganGenerator {
    fn z_dim(&self) -> i64 {
        self.z_dim
    }
    fn forward(&self, z: &Tensor, _labels: Option<&Tensor>, train: bool) -> Tensor {
        let mut h = z.view([-1, self.z_dim, 1, 1]);
        for (conv, norm) in &self.blocks {
            h = conv.forward(&h);
            h = match norm {
                Some(bn) => crate::nn::norm::forward(bn, &h, train).relu(),
                None => h.tanh(),
            };
        }
        h
    }
}

enum Norm {
    Batch(nn::BatchNorm),
    Layer(nn::LayerNorm),
    None,
}

pub struct DcganDiscriminator {
    blocks: Vec<(String, nn::Conv2D, Norm)>,
    out: nn::Conv2D,
}

impl DcganDiscriminator {
    pub fn new(p: nn::Path, cfg: &DcganConfig, shape: &DataShape) -> Self {
        let mut blocks = Vec::new();
        let mut c_in = shape.channels;
        for (i, name) in block_names(shape.resolution).into_iter().enumerate() {
            let res = shape.resolution >> i;
            let c_out = cfg.ndf << i;
            let bp = &p / name.as_str();
            let conv_cfg = nn::ConvConfig {
                stride: 2,
                padding: 1,
                bias: false,
                ws_init: init(),
                ..Default::default()
            };
            let conv = nn::conv2d(&bp / "conv", c_in, c_out, 4, conv_cfg);
            // The first block has no normalisation (DCGAN paper).
            let norm = match (i, cfg.d_norm) {
                (0, _) | (_, DNorm::None) => Norm::None,
                (_, DNorm::Layer) => {
                    let out_res = res / 2;
                    Norm::Layer(nn::layer_norm(
                        &bp / "ln",
                        vec![c_out, out_res, out_res],
                        Default::default(),
                    ))
                }
                (_, DNorm::Batch) => Norm::Batch(bn(&bp / "bn", c_out)),
            };
            blocks.push((name, conv, norm));
            c_in = c_out;
        }
        let out_cfg = nn::ConvConfig {
            bias: false,
            ws_init: init(),
            ..Default::default()
        };
        let out = nn::conv2d(&p / "b4" / "conv", c_in, 1, 4, out_cfg);
        DcganDiscriminator { blocks, out }
    }
}

impl Discriminator for DcganDiscriminator {
    fn embed_tapped(&self, x: &Tensor, train: bool, tap: &mut TapFn<'_>) -> Tensor {
        let mut h = x.shallow_clone();
        for (name, conv, norm) in &self.blocks {
            h = conv.forward(&h);
            h = match norm {
                Norm::Batch(bn) => crate::nn::norm::forward(bn, &h, train),
                Norm::Layer(ln) => ln.forward(&h),
                Norm::None => h,
            };
            h = tap(name, crate::nn::leaky_relu(&h, 0.2));
        }
        h
    }
    fn head(&self, features: &Tensor, _labels: Option<&Tensor>, _train: bool) -> Tensor {
        self.out.forward(features).flatten(1, -1).select(1, 0)
    }
    fn taps(&self) -> Vec<String> {
        self.blocks.iter().map(|b| b.0.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn shape(res: i64) -> DataShape {
        DataShape::image(3, res, None)
    }

    #[test]
    fn shapes_and_keys_follow_resolution() {
        for res in [32, 64] {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = DcganConfig {
                ngf: 8,
                ndf: 8,
                ..Default::default()
            };
            let g = DcganGenerator::new(vs.root() / "g", &cfg, &shape(res));
            let d = DcganDiscriminator::new(vs.root() / "d", &cfg, &shape(res));
            let z = Tensor::randn([2, 100], (Kind::Float, Device::Cpu));
            let x = g.forward(&z, None, true);
            assert_eq!(x.size(), [2, 3, res, res]);
            assert_eq!(d.forward(&x, None, true).size(), [2]);
            let f = d.embed(&x, true);
            assert_eq!(f.size(), [2, 8 << (levels(res) - 1), 4, 4]);
            let keys: Vec<String> = vs.variables().into_keys().collect();
            assert!(
                keys.iter().all(|k| !k.contains("__")),
                "duplicate names: {keys:?}"
            );
            assert!(keys.contains(&format!("d.b{res}.conv.weight")));
            assert!(keys.contains(&format!("g.b{res}.conv.weight")));
        }
    }

    #[test]
    fn taps_see_every_block_and_can_replace_features() {
        let vs = nn::VarStore::new(Device::Cpu);
        let d = DcganDiscriminator::new(
            vs.root(),
            &DcganConfig {
                ndf: 4,
                ..Default::default()
            },
            &shape(32),
        );
        assert_eq!(d.taps(), ["b32", "b16", "b8"]);
        assert_eq!(DcganConfig::default().default_fq_layers(32), ["b16"]);
        let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let mut seen = Vec::new();
        let f = d.embed_tapped(&x, false, &mut |name, h| {
            seen.push((name.to_string(), h.size()));
            if name == "b8" {
                h.zeros_like()
            } else {
                h
            }
        });
        assert_eq!(seen[1], ("b16".to_string(), vec![2, 8, 8, 8]));
        assert_eq!(f.abs().sum(tch::Kind::Float).double_value(&[]), 0.0);
    }

    #[test]
    fn rejects_bad_resolution() {
        let e = DcganConfig::default().validate(48).unwrap_err();
        assert!(e.to_string().starts_with("data.resolution:"), "{e}");
    }
}
