//! What one U-GAT-IT iteration minimises (`UGATIT.py`'s `train`), phase by phase; when the phases
//! run is the training loop's job.
//!
//! - D: least squares on every critic's patch logits and CAM logits, reals to 1 and translations
//!   to 0; domain A's critics (global and local) judge B->A translations, domain B's A->B, weighted
//!   by `adv`; plus what the critics' plug-ins add (FQ's commitment term, AdaptiveMix's).
//! - G: least squares of the critics' logits on the translations to 1, `cycle` x L1 of A->B->A to
//!   A (and B->A->B to B), `identity` x L1 of B->A applied to A to A (and A->B to B to B), and
//!   `cam` x the generators' CAM: binary cross-entropy saying "from the other domain" (1) for the
//!   translation and "already this domain" (0) for the identity pass.
//!
//! Departure, for speed: the reference translates both batches twice per iteration (once for D's
//! step, once for G's); here the G phase's translations (made before D's update, with their
//! graph) serve the D phase detached: the same values, since G has not changed in between.

use super::nets::{split_scores, Translated, UgatitGenerator};
use crate::loss::objective::PhaseLoss;
use crate::plugins::{Branch, Critic, Ctx, Phase};
use tch::{Kind, Tensor};

/// The loss weights (`[loss]` of a translation run).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    /// Adversarial terms (the reference's `--adv_weight`).
    pub adv: f64,
    /// Cycle L1 (`--cycle_weight`).
    pub cycle: f64,
    /// Identity L1 (`--identity_weight`).
    pub identity: f64,
    /// Generator CAM cross-entropy (`--cam_weight`).
    pub cam: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            adv: 1.0,
            cycle: 10.0,
            identity: 10.0,
            cam: 1000.0,
        }
    }
}

/// The four critics: global and local for each domain.
pub struct Critics {
    pub global_a: Critic,
    pub global_b: Critic,
    pub local_a: Critic,
    pub local_b: Critic,
}

impl Critics {
    /// A checkpoint was restored into the plug-ins' variables.
    pub fn state_restored(&mut self) {
        for (_, c, _) in self.each() {
            c.state_restored();
        }
    }

    /// `(name, critic, judges domain A)` in the reference's order.
    fn each(&mut self) -> [(&'static str, &mut Critic, bool); 4] {
        [
            ("ga", &mut self.global_a, true),
            ("la", &mut self.local_a, true),
            ("gb", &mut self.global_b, false),
            ("lb", &mut self.local_b, false),
        ]
    }
}

/// Losses are taken in fp32 at least (scores may come out of autocast in a lower precision).
fn widen(t: &Tensor) -> Tensor {
    match t.kind() {
        Kind::Half | Kind::BFloat16 => t.to_kind(Kind::Float),
        _ => t.shallow_clone(),
    }
}

fn mse_to(x: &Tensor, target: f64) -> Tensor {
    (x - target).square().mean(None::<Kind>)
}

fn l1(a: &Tensor, b: &Tensor) -> Tensor {
    (a - b).abs().mean(None::<Kind>)
}

fn bce_to(logits: &Tensor, target: f64) -> Tensor {
    logits.binary_cross_entropy_with_logits::<Tensor>(
        &logits.full_like(target),
        None,
        None,
        tch::Reduction::Mean,
    )
}

/// Both translations of the iteration, with their graphs: `(A->B, B->A)`.
pub fn translate(
    g_ab: &UgatitGenerator,
    g_ba: &UgatitGenerator,
    real_a: &Tensor,
    real_b: &Tensor,
) -> (Translated, Translated) {
    (g_ab.forward(real_a), g_ba.forward(real_b))
}

/// D phase: `a2b` and `b2a` are the translations (detached here).
pub fn d_phase(
    critics: &mut Critics,
    real_a: &Tensor,
    real_b: &Tensor,
    a2b: &Tensor,
    b2a: &Tensor,
    w: &Weights,
    step: u64,
) -> PhaseLoss {
    let ctx = |branch| Ctx {
        phase: Phase::D,
        branch,
        step,
        record: true,
    };
    let mut terms: Vec<(String, Tensor)> = Vec::new();
    let mut extra: Vec<Tensor> = Vec::new();
    for (name, critic, judges_a) in critics.each() {
        let (real, fake) = if judges_a {
            (real_a, b2a.detach())
        } else {
            (real_b, a2b.detach())
        };
        let sr = critic.score(real, None, &ctx(Branch::Real));
        let sf = critic.score(&fake, None, &ctx(Branch::Fake));
        let (rp, rc) = split_scores(&widen(&sr.logits));
        let (fp, fc) = split_scores(&widen(&sf.logits));
        terms.push((
            format!("loss/d/{name}"),
            mse_to(&rp, 1.0) + mse_to(&fp, 0.0),
        ));
        terms.push((
            format!("loss/d/{name}_cam"),
            mse_to(&rc, 1.0) + mse_to(&fc, 0.0),
        ));
        extra.extend([sr.extra_loss, sf.extra_loss].into_iter().flatten());
    }
    let adv = terms
        .iter()
        .map(|(_, t)| t.shallow_clone())
        .reduce(|a, b| a + b)
        .expect("four critics")
        * w.adv;
    let mut loss = PhaseLoss::new("loss/d/adv", adv);
    for e in extra {
        loss.add("loss/d/plugins", widen(&e));
    }
    for (k, t) in terms {
        loss.parts.push((k, t.detach()));
    }
    loss
}

/// G phase: the translations `a2b` and `b2a` carry their graphs; the cycle and identity passes
/// run here.
#[allow(clippy::too_many_arguments)]
pub fn g_phase(
    critics: &mut Critics,
    g_ab: &UgatitGenerator,
    g_ba: &UgatitGenerator,
    real_a: &Tensor,
    real_b: &Tensor,
    a2b: &Translated,
    b2a: &Translated,
    w: &Weights,
    step: u64,
) -> PhaseLoss {
    let ctx = Ctx {
        phase: Phase::G,
        branch: Branch::Fake,
        step,
        record: true,
    };
    let mut adv_a = Vec::new();
    let mut adv_b = Vec::new();
    let mut extra: Vec<Tensor> = Vec::new();
    for (_, critic, judges_a) in critics.each() {
        let fake = if judges_a { &b2a.image } else { &a2b.image };
        let s = critic.score(fake, None, &ctx);
        let (p, c) = split_scores(&widen(&s.logits));
        let t = mse_to(&p, 1.0) + mse_to(&c, 1.0);
        if judges_a {
            adv_a.push(t);
        } else {
            adv_b.push(t);
        }
        extra.extend(s.extra_loss);
    }
    let sum = |v: Vec<Tensor>| v.into_iter().reduce(|a, b| a + b).expect("two critics");
    let (adv_a, adv_b) = (sum(adv_a), sum(adv_b));
    let a2b2a = g_ba.forward(&a2b.image);
    let b2a2b = g_ab.forward(&b2a.image);
    let a2a = g_ba.forward(real_a);
    let b2b = g_ab.forward(real_b);
    let cycle = l1(&a2b2a.image, real_a) + l1(&b2a2b.image, real_b);
    let identity = l1(&a2a.image, real_a) + l1(&b2b.image, real_b);
    let cam_a = bce_to(&b2a.cam_logits, 1.0) + bce_to(&a2a.cam_logits, 0.0);
    let cam_b = bce_to(&a2b.cam_logits, 1.0) + bce_to(&b2b.cam_logits, 0.0);
    let mut loss = PhaseLoss::new("loss/g/adv", (&adv_a + &adv_b) * w.adv);
    loss.add("loss/g/cycle", cycle * w.cycle);
    loss.add("loss/g/identity", identity * w.identity);
    loss.add("loss/g/cam", (cam_a + cam_b) * w.cam);
    for e in extra {
        loss.add("loss/g/plugins", widen(&e));
    }
    loss
}
