//! Exponential moving average of the generator's weights (samples and evaluation use the EMA copy).
//! Parameters are averaged; buffers (BatchNorm running statistics) are copied, as in
//! stylegan2-ada-pytorch.

use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// `train.ema.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmaConfig {
    /// Keep an EMA copy of G (saved as `g_ema`, used for samples).
    pub enabled: bool,
    /// Per-step decay beta: ema = beta * ema + (1 - beta) * g.
    pub decay: f64,
    /// Ramp the decay up early in training: beta_t = min(decay, (1 + t) / (10 + t)).
    pub rampup: bool,
}

impl Default for EmaConfig {
    fn default() -> Self {
        EmaConfig {
            enabled: true,
            decay: 0.999,
            rampup: true,
        }
    }
}

pub struct Ema {
    cfg: EmaConfig,
    /// (G's tensor, EMA tensor, is a trainable parameter)
    pairs: Vec<(Tensor, Tensor, bool)>,
}

impl Ema {
    /// Pairs the variables of `g` and `ema` by name (both stores were built by the same code).
    pub fn new(g: &nn::VarStore, ema: &nn::VarStore, cfg: &EmaConfig) -> Self {
        let ev = ema.variables();
        let mut pairs: Vec<(String, Tensor, Tensor, bool)> = g
            .variables()
            .into_iter()
            .map(|(name, t)| {
                let e = ev
                    .get(&name)
                    .unwrap_or_else(|| panic!("EMA store lacks {name}"))
                    .shallow_clone();
                let trainable = t.requires_grad();
                (name, t, e, trainable)
            })
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        Ema {
            cfg: cfg.clone(),
            pairs: pairs.into_iter().map(|(_, t, e, p)| (t, e, p)).collect(),
        }
    }

    pub fn beta(&self, step: u64) -> f64 {
        if self.cfg.rampup {
            self.cfg
                .decay
                .min((1.0 + step as f64) / (10.0 + step as f64))
        } else {
            self.cfg.decay
        }
    }

    /// Copies G into the EMA store exactly (at the start of a run).
    pub fn reset(&mut self) {
        tch::no_grad(|| {
            for (g, e, _) in &mut self.pairs {
                e.copy_(g);
            }
        });
    }

    pub fn update(&mut self, step: u64) {
        let beta = self.beta(step);
        tch::no_grad(|| {
            for (g, e, is_param) in &mut self.pairs {
                if *is_param {
                    let _ = e.lerp_(g, 1.0 - beta);
                } else {
                    e.copy_(g);
                }
            }
        });
    }
}
