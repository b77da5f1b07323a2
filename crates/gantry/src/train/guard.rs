//! Early warnings for the usual failure signs, checked on logging and sampling steps: D's loss
//! near zero for a long stretch (D has won), vanishing generator gradients, and collapsing sample
//! diversity (the fixed-latent samples stop differing from each other). Each warning is raised
//! once per stretch and goes to metrics.jsonl and the progress line.

use crate::loss::Adversarial;
use crate::stats::Stats;

/// Consecutive logged steps a sign must persist before it is reported.
const PATIENCE: u32 = 10;
const D_LOSS_NEAR_ZERO: f64 = 1e-2;
const G_GRAD_VANISHED: f64 = 1e-6;
/// Sample spread below this share of the real data's spread counts as collapse.
const DIVERSITY_SHARE: f64 = 0.2;

#[derive(Default)]
pub struct Guard {
    d_low: u32,
    g_low: u32,
    collapsed: bool,
    /// Spread of a real batch (per-pixel std across the batch, averaged).
    pub real_diversity: Option<f64>,
}

impl Guard {
    pub fn on_log(&mut self, step: u64, stats: &Stats, kind: Adversarial) -> Vec<String> {
        let mut out = Vec::new();
        if kind != Adversarial::Wasserstein {
            if let Some(d) = stats.get("loss/d/adv") {
                self.d_low = if d < D_LOSS_NEAR_ZERO {
                    self.d_low + 1
                } else {
                    0
                };
                if self.d_low == PATIENCE {
                    out.push(format!("D's loss has stayed below {D_LOSS_NEAR_ZERO} for {PATIENCE} logged steps (to step {step}): D is winning; consider a lower D lr, R1, DiffAugment or AdaptiveMix"));
                }
            }
        }
        if let Some(g) = stats.get("grad/g") {
            self.g_low = if g < G_GRAD_VANISHED {
                self.g_low + 1
            } else {
                0
            };
            if self.g_low == PATIENCE {
                out.push(format!("G's gradient norm has stayed below {G_GRAD_VANISHED} for {PATIENCE} logged steps (to step {step}): G has stopped learning"));
            }
        }
        out
    }

    pub fn on_samples(&mut self, step: u64, diversity: f64) -> Option<String> {
        let real = self.real_diversity?;
        let low = diversity < DIVERSITY_SHARE * real;
        let warn = low && !self.collapsed;
        self.collapsed = low;
        warn.then(|| format!("sample diversity {diversity:.4} is below {:.0}% of the data's {real:.4} at step {step}: possible mode collapse", DIVERSITY_SHARE * 100.0))
    }
}

/// Per-pixel standard deviation across the batch, averaged: 0 when every sample is identical.
pub fn diversity(x: &tch::Tensor) -> f64 {
    x.flatten(1, -1)
        .to_kind(tch::Kind::Float)
        .std_dim(0, true, false)
        .mean(tch::Kind::Float)
        .double_value(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_once_after_patience() {
        let mut g = Guard::default();
        let mut s = Stats::default();
        s.set("loss/d/adv", 1e-4);
        let warnings: Vec<String> = (0..25)
            .flat_map(|i| g.on_log(i, &s, Adversarial::NonSaturating))
            .collect();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("D is winning"));
        assert!((0..25).all(|i| g.on_log(i, &s, Adversarial::Wasserstein).is_empty()));
    }

    #[test]
    fn collapse_needs_a_reference_and_rearms() {
        let mut g = Guard::default();
        assert!(g.on_samples(1, 0.0).is_none());
        g.real_diversity = Some(0.5);
        assert!(g.on_samples(2, 0.01).is_some());
        assert!(g.on_samples(3, 0.01).is_none());
        assert!(g.on_samples(4, 0.4).is_none());
        assert!(g.on_samples(5, 0.01).is_some());
        let same = tch::Tensor::ones([4, 3, 2, 2], (tch::Kind::Float, tch::Device::Cpu));
        assert_eq!(diversity(&same), 0.0);
    }
}
