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
    /// The EMA's half-life in thousands of images (stylegan2-ada's `ema_kimg`); when set it
    /// replaces `decay` and `rampup`: beta = 0.5^(batch / (1000 half_life_kimg)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub half_life_kimg: Option<f64>,
    /// The half-life at the start, as a fraction of `half_life_kimg`, from which it moves on
    /// `train.lr_schedule` to the full value (R3GAN: 0, its EMA horizon ramp); 1 = fixed.
    pub half_life_start: f64,
}

impl Default for EmaConfig {
    fn default() -> Self {
        EmaConfig {
            enabled: true,
            decay: 0.999,
            rampup: true,
            half_life_kimg: None,
            half_life_start: 1.0,
        }
    }
}

impl EmaConfig {
    /// The decay of the update after a step of `batch` images, `progress` of the way along the
    /// schedule, at G step `step` (counted from 0).
    pub fn beta(&self, step: u64, batch: usize, progress: f64) -> f64 {
        if let Some(hl) = self.half_life_kimg {
            let frac = self.half_life_start + (1.0 - self.half_life_start) * progress;
            let images = (hl * 1000.0 * frac).max(1e-8);
            return 0.5f64.powf(batch as f64 / images);
        }
        if self.rampup {
            self.decay.min((1.0 + step as f64) / (10.0 + step as f64))
        } else {
            self.decay
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

    /// Copies G into the EMA store exactly (at the start of a run).
    pub fn reset(&mut self) {
        tch::no_grad(|| {
            for (g, e, _) in &mut self.pairs {
                e.copy_(g);
            }
        });
    }

    /// Moves the EMA towards G with [`EmaConfig::beta`]`(step, batch, progress)`.
    pub fn update(&mut self, step: u64, batch: usize, progress: f64) {
        let beta = self.cfg.beta(step, batch, progress);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// R3GAN's EMA: beta = 0.5^(batch / max(ema_nimg, 1e-8)) with ema_nimg ramped from 0 to its
    /// final value on the schedule; stylegan2-ada's fixed half-life is the `half_life_start = 1`
    /// case.
    #[test]
    fn half_life_gives_the_reference_decay() {
        let cfg = EmaConfig {
            half_life_kimg: Some(5000.0),
            half_life_start: 0.0,
            ..Default::default()
        };
        assert_eq!(cfg.beta(0, 512, 0.0), 0.0);
        let mid = cfg.beta(100, 512, 0.5);
        assert!((mid - 0.5f64.powf(512.0 / 2.5e6)).abs() < 1e-15, "{mid}");
        let fixed = EmaConfig {
            half_life_kimg: Some(10.0),
            ..Default::default()
        };
        // stylegan2-ada: ema_beta = 0.5 ** (batch / (ema_kimg * 1000)), no ramp-up here.
        assert_eq!(fixed.beta(0, 64, 0.3), 0.5f64.powf(64.0 / 10000.0));
    }
}
