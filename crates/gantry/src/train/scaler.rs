//! Dynamic loss scaling for fp16 training, with torch.amp.GradScaler's rules: the loss is
//! multiplied by the scale before backward and the gradients divided by it after; when any
//! gradient is not finite the step is skipped and the scale halves; after `GROWTH_INTERVAL`
//! good steps in a row it doubles. Its state is saved with the optimiser's, so resume is exact.
//! A non-finite loss (an fp16 overflow in the forward pass) is a skipped step too, as it is for
//! torch.amp (whose scaler only sees the gradients it makes); a run whose steps keep failing until
//! the scale falls below `MIN_SCALE` has diverged.

use std::collections::HashMap;
use tch::Tensor;

pub const INIT_SCALE: f64 = 65536.0;
pub const GROWTH_INTERVAL: u64 = 2000;
const GROWTH: f64 = 2.0;
const BACKOFF: f64 = 0.5;
/// Below this, scaling cannot be why steps fail (26 halvings from `INIT_SCALE`).
pub const MIN_SCALE: f64 = 1.0 / 1024.0;

/// What an fp16 phase does with its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Step,
    Skip,
    Diverged,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GradScaler {
    scale: f64,
    /// Good steps since the last change of scale.
    good: u64,
    growth_interval: u64,
}

impl Default for GradScaler {
    fn default() -> Self {
        GradScaler {
            scale: INIT_SCALE,
            good: 0,
            growth_interval: GROWTH_INTERVAL,
        }
    }
}

impl GradScaler {
    pub fn starting_at(scale: f64) -> Self {
        GradScaler {
            scale,
            ..Default::default()
        }
    }

    pub fn with_growth_interval(growth_interval: u64) -> Self {
        GradScaler {
            growth_interval: growth_interval.max(1),
            ..Default::default()
        }
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// After a step's gradients were unscaled: `finite` says whether the step was taken.
    pub fn update(&mut self, finite: bool) {
        if finite {
            self.good += 1;
            if self.good >= self.growth_interval {
                self.scale *= GROWTH;
                self.good = 0;
            }
        } else {
            self.scale *= BACKOFF;
            self.good = 0;
        }
    }

    /// Updates the scale from a phase's unscaled loss plus squared gradient norm (one host read
    /// for both) and says whether to take the step.
    pub fn judge(&mut self, loss_plus_grad_sq: f64) -> Verdict {
        let finite = loss_plus_grad_sq.is_finite();
        self.update(finite);
        if finite {
            Verdict::Step
        } else if self.scale < MIN_SCALE {
            Verdict::Diverged
        } else {
            Verdict::Skip
        }
    }

    pub fn state(&self, prefix: &str) -> Vec<(String, Tensor)> {
        vec![
            (format!("{prefix}.scale"), Tensor::from(self.scale)),
            (format!("{prefix}.good"), Tensor::from(self.good as i64)),
        ]
    }

    /// Restores the state saved under `prefix`; a checkpoint without one (written in another
    /// precision) leaves the scaler fresh.
    pub fn load_state(&mut self, saved: &HashMap<String, Tensor>, prefix: &str) {
        if let (Some(s), Some(g)) = (
            saved.get(&format!("{prefix}.scale")),
            saved.get(&format!("{prefix}.good")),
        ) {
            self.scale = s.double_value(&[]);
            self.good = g.int64_value(&[]).max(0) as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_halves_good_steps_grow_and_state_round_trips() {
        let mut s = GradScaler::with_growth_interval(3);
        s.update(false);
        assert_eq!(s.scale(), INIT_SCALE / 2.0);
        s.update(true);
        s.update(true);
        assert_eq!(s.scale(), INIT_SCALE / 2.0);
        let saved: HashMap<String, Tensor> = s.state("scaler.d").into_iter().collect();
        s.update(true);
        assert_eq!(s.scale(), INIT_SCALE);
        let mut back = GradScaler::with_growth_interval(3);
        back.load_state(&saved, "scaler.d");
        back.update(true);
        assert_eq!(back, s, "resumes exactly where it was");
        let mut fresh = GradScaler::default();
        fresh.load_state(&HashMap::new(), "scaler.d");
        assert_eq!(fresh, GradScaler::default());
    }

    /// An infinite loss or gradient skips the step and halves the scale, until the scale is
    /// below MIN_SCALE: then the run has diverged; a finite outcome is a step.
    #[test]
    fn non_finite_outcomes_skip_until_the_scale_is_spent() {
        let mut s = GradScaler::default();
        assert_eq!(s.judge(1.5), Verdict::Step);
        let mut skips = 0;
        loop {
            match s.judge(f64::INFINITY) {
                Verdict::Skip => skips += 1,
                Verdict::Diverged => break,
                Verdict::Step => panic!("a non-finite outcome taken as a step"),
            }
        }
        assert_eq!(skips, 26, "2^16 halves 26 times before falling below 2^-10");
        assert!(s.scale() < MIN_SCALE);
        assert_eq!(s.judge(f64::NAN), Verdict::Diverged);
    }
}
