//! What each phase minimises. The D phase scores a real and a fake batch through the critic (so
//! plug-ins shape the scores and add their terms), adds the adversarial loss and the penalties;
//! the G phase scores fakes that carry G's graph. Which phase runs when, and when the plug-ins
//! close a phase (`Critic::end_phase`, once its gradients are known to be finite), is the training
//! loop's job.

use super::{penalty, LossConfig};
use crate::plugins::{Branch, Critic, Ctx, Phase};
use tch::{Kind, Tensor};

/// A phase's total loss and its named, detached scalar parts (read only on logging steps).
pub struct PhaseLoss {
    pub total: Tensor,
    pub parts: Vec<(String, Tensor)>,
}

impl PhaseLoss {
    pub fn new(name: &str, adv: Tensor) -> Self {
        PhaseLoss {
            parts: vec![(name.to_string(), adv.detach())],
            total: adv,
        }
    }
    pub fn add(&mut self, name: &str, term: Tensor) {
        self.parts.push((name.to_string(), term.detach()));
        self.total = &self.total + term;
    }
}

/// D phase. `fake` must be detached from G; `real_labels`/`fake_labels` condition the scores of
/// class-conditional critics (the gradient penalty's interpolates use the real labels).
/// `r1_scale` / `r2_scale` are the R1 / R2 weights for this step (gamma/2 times the lazy
/// interval) or 0 when they do not run now; R2 is R1's penalty on the fake batch.
/// `penalty_grad_scale`: fp16's loss scale for R1/R2's input gradients (1 otherwise; see
/// [`penalty::r1_scaled`]).
#[allow(clippy::too_many_arguments)]
pub fn d_phase(
    critic: &mut Critic,
    real: &Tensor,
    fake: &Tensor,
    real_labels: Option<&Tensor>,
    fake_labels: Option<&Tensor>,
    cfg: &LossConfig,
    step: u64,
    r1_scale: f64,
    r2_scale: f64,
    penalty_grad_scale: f64,
) -> PhaseLoss {
    let ctx = |branch| Ctx {
        phase: Phase::D,
        branch,
        step,
        record: true,
    };
    let real_in = if r1_scale > 0.0 {
        real.detach().set_requires_grad(true)
    } else {
        real.shallow_clone()
    };
    // Scores may come out of autocast in a low precision; the losses are taken in fp32.
    let sr = critic.score(&real_in, real_labels, &ctx(Branch::Real));
    let fake_in = if r2_scale > 0.0 {
        fake.detach().set_requires_grad(true)
    } else {
        fake.shallow_clone()
    };
    let sf = critic.score(&fake_in, fake_labels, &ctx(Branch::Fake));
    let (real_logits, fake_logits) = (
        sr.logits.to_kind(Kind::Float),
        sf.logits.to_kind(Kind::Float),
    );
    let mut loss = PhaseLoss::new("loss/d/adv", cfg.kind.d_loss(&real_logits, &fake_logits));
    for extra in [sr.extra_loss, sf.extra_loss].into_iter().flatten() {
        loss.add("loss/d/plugins", extra.to_kind(Kind::Float));
    }
    if cfg.gp.enabled && cfg.gp.weight > 0.0 {
        // In fp32 whatever the training precision.
        let gp = crate::precision::fp32(real.device(), || {
            penalty::gradient_penalty(|x| critic.plain(x, real_labels), real, fake)
        });
        loss.add("loss/d/gp", gp * cfg.gp.weight);
    }
    if r1_scale > 0.0 {
        loss.add(
            "loss/d/r1",
            penalty::r1_scaled(&real_logits, &real_in, penalty_grad_scale) * r1_scale,
        );
    }
    if r2_scale > 0.0 {
        loss.add(
            "loss/d/r2",
            penalty::r1_scaled(&fake_logits, &fake_in, penalty_grad_scale) * r2_scale,
        );
    }
    loss.parts
        .push(("d/real".into(), real_logits.detach().mean(None::<Kind>)));
    loss.parts
        .push(("d/fake".into(), fake_logits.detach().mean(None::<Kind>)));
    loss
}

/// G phase. `fake` carries G's graph; `real` (with its labels) is scored, without a graph and
/// without changing plug-in state, for the losses whose G term needs real logits
/// ([`Adversarial::g_needs_real`](super::Adversarial::g_needs_real)).
pub fn g_phase(
    critic: &mut Critic,
    fake: &Tensor,
    labels: Option<&Tensor>,
    real: Option<(&Tensor, Option<&Tensor>)>,
    cfg: &LossConfig,
    step: u64,
) -> PhaseLoss {
    let ctx = Ctx {
        phase: Phase::G,
        branch: Branch::Fake,
        step,
        record: true,
    };
    let sf = critic.score(fake, labels, &ctx);
    let real_logits = match real.filter(|_| cfg.kind.g_needs_real()) {
        Some((x, real_labels)) => {
            let ctx = Ctx {
                phase: Phase::G,
                branch: Branch::Real,
                step,
                record: false,
            };
            // D's logits on reals are constants for G: no graph.
            Some(tch::no_grad(|| {
                critic
                    .score(x, real_labels, &ctx)
                    .logits
                    .to_kind(Kind::Float)
            }))
        }
        None => None,
    };
    let mut loss = PhaseLoss::new(
        "loss/g/adv",
        cfg.kind
            .g_loss(&sf.logits.to_kind(Kind::Float), real_logits.as_ref()),
    );
    if let Some(extra) = sf.extra_loss {
        loss.add("loss/g/plugins", extra.to_kind(Kind::Float));
    }
    loss
}
