//! White-box attacks on a classifier, in pixel space ([0, 1]; the model normalises inside), with
//! the model in inference mode: FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018) under
//! L-inf or L2, maximising the cross-entropy of the true label. Every iterate is projected onto
//! the eps-ball around the clean image and clipped to [0, 1], as in torchattacks / advertorch.
//! Departure: PGD-L2's random start is uniform in the ball (radius eps * U^(1/d)); torchattacks
//! draws the radius as eps * U.

use super::nets::Net;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// `attack.norm`
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    Linf,
    L2,
}

impl Norm {
    pub const NAMES: &'static [&'static str] = &["linf", "l2"];
}

/// One attack: FGSM is PGD with one step of size eps and no random start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attack {
    pub norm: Norm,
    /// Radius of the ball, in [0, 1] pixel units (8/255 for L-inf, 0.5 for L2 are usual).
    pub eps: f64,
    /// Step size.
    pub step: f64,
    pub steps: usize,
    /// Start from a uniform point of the ball (PGD), or from the clean image (FGSM).
    pub random_start: bool,
}

impl Attack {
    pub fn fgsm(norm: Norm, eps: f64) -> Attack {
        Attack {
            norm,
            eps,
            step: eps,
            steps: 1,
            random_start: false,
        }
    }

    pub fn pgd(norm: Norm, eps: f64, step: f64, steps: usize) -> Attack {
        Attack {
            norm,
            eps,
            step,
            steps,
            random_start: true,
        }
    }

    /// `fgsm`, `pgd-10`, ... with the norm when not L-inf.
    pub fn name(&self) -> String {
        let base = if !self.random_start && self.steps == 1 && self.step == self.eps {
            "fgsm".to_string()
        } else {
            format!("pgd-{}", self.steps)
        };
        match self.norm {
            Norm::Linf => base,
            Norm::L2 => format!("{base}-l2"),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::config("--eps", "must be a finite number > 0"));
        }
        if !(self.step.is_finite() && self.step > 0.0) {
            return Err(Error::config("--step", "must be a finite number > 0"));
        }
        if self.steps == 0 {
            return Err(Error::config("--steps", "must be at least 1"));
        }
        Ok(())
    }

    /// A random start for `x` ([B, C, H, W]): uniform in the L-inf ball, or uniform in the L2 ball
    /// (a Gaussian direction scaled by eps * U^(1/d)). Drawn from libtorch's generator.
    pub fn random_start(&self, x: &Tensor) -> Tensor {
        let opts = (Kind::Float, x.device());
        match self.norm {
            Norm::Linf => Tensor::rand(x.size(), opts) * (2.0 * self.eps) - self.eps,
            Norm::L2 => {
                let b = x.size()[0];
                let d = x.numel() as i64 / b.max(1);
                let dir = Tensor::randn(x.size(), opts);
                let r = Tensor::rand([b], opts).pow_tensor_scalar(1.0 / d as f64) * self.eps;
                per_sample_unit(&dir) * r.view([b, 1, 1, 1])
            }
        }
    }

    /// The adversarial batch for clean `x` in [0, 1] and labels `y`; `start` (a perturbation,
    /// from [`Attack::random_start`]) when `random_start` is on.
    pub fn run(&self, net: &Net, x: &Tensor, y: &Tensor, start: Option<&Tensor>) -> Tensor {
        let x = x.detach();
        let mut adv = match (self.random_start, start) {
            (true, Some(s)) => self.project(&x, &(&x + s)),
            (true, None) => self.project(&x, &(&x + self.random_start(&x))),
            (false, _) => x.shallow_clone(),
        };
        for _ in 0..self.steps {
            let a = adv.detach().set_requires_grad(true);
            let loss = super::objective::cross_entropy(&net.forward(&a, false), y);
            let g = Tensor::run_backward(&[loss], &[&a], false, false).remove(0);
            let moved = tch::no_grad(|| match self.norm {
                Norm::Linf => &a + g.sign() * self.step,
                Norm::L2 => &a + per_sample_unit(&g) * self.step,
            });
            adv = self.project(&x, &moved.detach());
        }
        adv.detach()
    }

    /// Onto the eps-ball around `x`, then into [0, 1].
    fn project(&self, x: &Tensor, adv: &Tensor) -> Tensor {
        let delta = adv - x;
        let delta = match self.norm {
            Norm::Linf => delta.clamp(-self.eps, self.eps),
            Norm::L2 => {
                let b = delta.size()[0];
                let n = delta
                    .flatten(1, -1)
                    .norm_scalaropt_dim(2, [1i64].as_slice(), false)
                    .view([b, 1, 1, 1]);
                let factor = (n.clamp_min(1e-12).reciprocal() * self.eps).clamp_max(1.0);
                delta * factor
            }
        };
        (x + delta).clamp(0.0, 1.0)
    }
}

/// Each sample divided by its L2 norm (zero stays zero).
fn per_sample_unit(t: &Tensor) -> Tensor {
    let b = t.size()[0];
    let n = t
        .flatten(1, -1)
        .norm_scalaropt_dim(2, [1i64].as_slice(), false)
        .view([b, 1, 1, 1]);
    t / n.clamp_min(1e-12)
}

/// A comma-separated attack list: `fgsm`, `pgd-N` (e.g. `fgsm,pgd-10,pgd-20`); `key` names the
/// setting in errors.
pub fn parse_list(text: &str, norm: Norm, eps: f64, step: f64, key: &str) -> Result<Vec<Attack>> {
    text.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            let atk = match a {
                "fgsm" => Some(Attack::fgsm(norm, eps)),
                _ => a
                    .strip_prefix("pgd-")
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|n| *n > 0)
                    .map(|n| Attack::pgd(norm, eps, step, n)),
            };
            let atk = atk.ok_or_else(|| {
                Error::config(
                    key,
                    format!("'{a}': expected fgsm or pgd-STEPS (e.g. pgd-10)"),
                )
            })?;
            atk.validate()?;
            Ok(atk)
        })
        .collect()
}
