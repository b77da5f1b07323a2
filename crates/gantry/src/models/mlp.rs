//! Small MLP generator and discriminator for 2-D toy data (Gaussian mixtures), the setting of the
//! mode-collapse literature (Unrolled GAN, VEEGAN, PacGAN): ReLU G, LeakyReLU(0.2) D. D's `embed`
//! is every hidden layer; its taps are `h1`, `h2`, ...

use super::{Architecture, DataShape, Discriminator, Generator, TapFn};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::Tensor;

/// `model.*` with `arch = "mlp"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MlpConfig {
    /// Latent size.
    pub z_dim: i64,
    /// Width of every hidden layer.
    pub hidden: i64,
    /// Hidden layers per network.
    pub depth: i64,
}

impl Default for MlpConfig {
    fn default() -> Self {
        MlpConfig {
            z_dim: 64,
            hidden: 128,
            depth: 2,
        }
    }
}

impl Architecture for MlpConfig {
    fn validate(&self, _resolution: i64) -> Result<()> {
        for (key, v) in [
            ("z_dim", self.z_dim),
            ("hidden", self.hidden),
            ("depth", self.depth),
        ] {
            if v <= 0 {
                return Err(Error::config(format!("model.{key}"), "must be positive"));
            }
        }
        Ok(())
    }
    fn taps(&self, _resolution: i64) -> Vec<String> {
        (1..=self.depth).map(|i| format!("h{i}")).collect()
    }
    fn generator(&self, p: nn::Path, shape: &DataShape) -> Box<dyn Generator> {
        Box::new(MlpGenerator::new(p, self, shape))
    }
    fn discriminator(&self, p: nn::Path, shape: &DataShape) -> Box<dyn Discriminator> {
        Box::new(MlpDiscriminator::new(p, self, shape))
    }
    fn takes_points(&self) -> bool {
        true
    }
}

pub struct MlpGenerator {
    z_dim: i64,
    out_shape: Vec<i64>,
    layers: Vec<nn::Linear>,
}

impl MlpGenerator {
    pub fn new(p: nn::Path, cfg: &MlpConfig, shape: &DataShape) -> Self {
        let z_dim = cfg.z_dim;
        let mut layers = Vec::new();
        let mut c_in = z_dim;
        for i in 1..=cfg.depth {
            layers.push(nn::linear(
                &p / format!("h{i}"),
                c_in,
                cfg.hidden,
                Default::default(),
            ));
            c_in = cfg.hidden;
        }
        layers.push(nn::linear(
            &p / "out",
            c_in,
            shape.numel,
            Default::default(),
        ));
        let out_shape = if shape.resolution == 1 {
            vec![-1, shape.channels, 1, 1]
        } else {
            vec![-1, shape.channels, shape.resolution, shape.resolution]
        };
        MlpGenerator {
            z_dim,
            out_shape,
            layers,
        }
    }
}

impl Generator for MlpGenerator {
    fn z_dim(&self) -> i64 {
        self.z_dim
    }
    fn forward(&self, z: &Tensor, _labels: Option<&Tensor>, _train: bool) -> Tensor {
        let (last, hidden) = self.layers.split_last().expect("at least one layer");
        let h = hidden
            .iter()
            .fold(z.shallow_clone(), |h, l| l.forward(&h).relu());
        last.forward(&h).view(self.out_shape.as_slice())
    }
}

pub struct MlpDiscriminator {
    layers: Vec<(String, nn::Linear)>,
    out: nn::Linear,
}

impl MlpDiscriminator {
    pub fn new(p: nn::Path, cfg: &MlpConfig, shape: &DataShape) -> Self {
        let mut layers = Vec::new();
        let mut c_in = shape.numel;
        for name in cfg.taps(1) {
            layers.push((
                name.clone(),
                nn::linear(&p / name.as_str(), c_in, cfg.hidden, Default::default()),
            ));
            c_in = cfg.hidden;
        }
        let out = nn::linear(&p / "out", c_in, 1, Default::default());
        MlpDiscriminator { layers, out }
    }
}

impl Discriminator for MlpDiscriminator {
    fn embed_tapped(&self, x: &Tensor, _train: bool, tap: &mut TapFn<'_>) -> Tensor {
        let mut h = x.flatten(1, -1);
        for (name, layer) in &self.layers {
            h = tap(name, crate::nn::leaky_relu(&layer.forward(&h), 0.2));
        }
        h
    }
    fn head(&self, features: &Tensor, _labels: Option<&Tensor>, _train: bool) -> Tensor {
        self.out.forward(features).select(1, 0)
    }
    fn taps(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.0.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn maps_latents_to_points_and_scores_them() {
        let vs = nn::VarStore::new(Device::Cpu);
        let shape = DataShape::image(2, 1, None);
        let cfg = MlpConfig {
            hidden: 16,
            ..Default::default()
        };
        let g = MlpGenerator::new(vs.root() / "g", &cfg, &shape);
        let d = MlpDiscriminator::new(vs.root() / "d", &cfg, &shape);
        let x = g.forward(
            &Tensor::randn([5, 64], (Kind::Float, Device::Cpu)),
            None,
            true,
        );
        assert_eq!(x.size(), [5, 2, 1, 1]);
        assert_eq!(d.forward(&x, None, true).size(), [5]);
        assert_eq!(d.taps(), ["h1", "h2"]);
    }
}
