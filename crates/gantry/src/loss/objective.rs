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
    fn new(name: &str, adv: Tensor) -> Self {
        PhaseLoss {
            parts: vec![(name.to_string(), adv.detach())],
            total: adv,
        }
    }
    fn add(&mut self, name: &str, term: Tensor) {
        self.parts.push((name.to_string(), term.detach()));
        self.total = &self.total + term;
    }
}

/// D phase. `fake` must be detached from G; `real_labels`/`fake_labels` condition the scores of
/// class-conditional critics (the gradient penalty's interpolates use the real labels). `r1_scale` is the R1 weight for this step
/// (gamma/2 times the lazy interval) or 0 when R1 does not run now.
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
    let sf = critic.score(fake, fake_labels, &ctx(Branch::Fake));
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
        loss.add("loss/d/r1", penalty::r1(&real_logits, &real_in) * r1_scale);
    }
    loss.parts
        .push(("d/real".into(), real_logits.detach().mean(None::<Kind>)));
    loss.parts
        .push(("d/fake".into(), fake_logits.detach().mean(None::<Kind>)));
    loss
}

/// G phase. `fake` carries G's graph.
pub fn g_phase(
    critic: &mut Critic,
    fake: &Tensor,
    labels: Option<&Tensor>,
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
    let mut loss = PhaseLoss::new(
        "loss/g/adv",
        cfg.kind.g_loss(&sf.logits.to_kind(Kind::Float)),
    );
    if let Some(extra) = sf.extra_loss {
        loss.add("loss/g/plugins", extra.to_kind(Kind::Float));
    }
    loss
}
