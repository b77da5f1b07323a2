//! AdaptiveMix (Liu, Zhang et al., "Improving GAN Training via Feature Space Shrinkage", CVPR 2023).
//!
//! Each scored batch (all real or all fake) is mixed with a permutation of itself into hard
//! samples; D's feature of a mixed image is pulled toward the same mix of the clean features, and
//! D's score is `head(z) + head(f_mix)`. `docs/adaptivemix.md` explains the algorithm and where
//! gantry departs from the reference code.
//!
//! Departures from the reference code, on purpose: two `embed` passes instead of three (the
//! feature of `x[perm]` is `f[perm]`, since `embed` is permutation-equivariant; a test shows the
//! results are equal), mixing over the whole per-device batch (not chunks of 8), and no
//! data-parallel wrapper quirks. The WGAN gradient penalty uses the plain critic
//! `head(embed(x_hat))` at the usual interpolates (the reference code has no GP). For class-
//! conditional heads, both halves of the score use the labels of the unpermuted batch.

use super::{Ctx, EmbedFn, Pass, Phase, Plugin, Scored};
use crate::error::{Error, Result};
use crate::models::Discriminator;
use crate::stats::Stats;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// How far the mixed feature is from its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    /// 1 - cosine similarity (GANs; the reference uses -cos, same gradient).
    Cosine,
    /// Mean squared error (the classifier's choice).
    Mse,
    /// Euclidean distance.
    L2,
}

/// `adaptivemix.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveMixConfig {
    /// Turn the plug-in on.
    pub enabled: bool,
    /// lambda ~ Beta(alpha, alpha); 1 = uniform.
    pub alpha: f64,
    /// Std of the Gaussian noise added to the (detached) target feature.
    pub sigma: f64,
    /// Weight w of L_am in D's loss (and G's, with `in_g`).
    pub weight: f64,
    /// `cosine`, `mse` or `l2`.
    pub distance: Distance,
    /// Add w * L_am(fake) to G's loss as well.
    pub in_g: bool,
    /// One lambda per sample instead of one per call.
    pub per_sample_lambda: bool,
}

impl Default for AdaptiveMixConfig {
    fn default() -> Self {
        AdaptiveMixConfig {
            enabled: false,
            alpha: 1.0,
            sigma: 0.05,
            weight: 1.0,
            distance: Distance::Cosine,
            in_g: true,
            per_sample_lambda: false,
        }
    }
}

impl AdaptiveMixConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(Error::config(
                "adaptivemix.alpha",
                "must be a finite number > 0",
            ));
        }
        if !(self.sigma.is_finite() && self.sigma >= 0.0) {
            return Err(Error::config(
                "adaptivemix.sigma",
                "must be a finite number >= 0",
            ));
        }
        if !(self.weight.is_finite() && self.weight >= 0.0) {
            return Err(Error::config(
                "adaptivemix.weight",
                "must be a finite number >= 0",
            ));
        }
        Ok(())
    }
}

/// The random draws of one AdaptiveMix call.
pub struct Draw {
    /// Scalar, or `[B]` with `per_sample_lambda`.
    pub lam: Tensor,
    /// A permutation of `0..B`.
    pub perm: Tensor,
}

impl Draw {
    /// Draws from libtorch's generator (seeded per step by the training loop).
    pub fn sample(b: i64, alpha: f64, per_sample: bool, device: tch::Device) -> Draw {
        let n = if per_sample { b } else { 1 };
        // Beta(a, a) = G1 / (G1 + G2) with G1, G2 ~ Gamma(a, 1).
        let a = Tensor::full([2, n], alpha, (Kind::Float, device));
        let g = a.internal_standard_gamma();
        let lam = g.get(0) / g.sum_dim_intlist(0, false, Kind::Float);
        let lam = if per_sample { lam } else { lam.squeeze() };
        Draw {
            lam,
            perm: Tensor::randperm(b, (Kind::Int64, device)),
        }
    }
}

/// Everything one call computes.
pub struct MixOut {
    pub logits: Tensor,
    /// Mean over the batch of distance(f_mix, target).
    pub l_am: Tensor,
    /// Mean cosine between f_mix and z (diagnostic).
    pub cos: Tensor,
}

/// Broadcasts lambda (scalar or [B]) against a tensor of rank `dim`.
fn lam_like(lam: &Tensor, dim: usize, kind: Kind) -> Tensor {
    let lam = lam.to_kind(kind);
    if lam.dim() == 0 {
        return lam;
    }
    let mut shape = vec![-1i64];
    shape.extend(std::iter::repeat_n(1, dim - 1));
    lam.view(shape.as_slice())
}

/// One AdaptiveMix call with explicit draws and noise (`noise` has the feature's shape; it is
/// multiplied by sigma here). Two `embed` passes.
pub fn mix(
    embed: &mut EmbedFn<'_>,
    head: &dyn Fn(&Tensor) -> Tensor,
    x: &Tensor,
    draw: &Draw,
    noise: &dyn Fn(&[i64]) -> Tensor,
    cfg: &AdaptiveMixConfig,
) -> MixOut {
    let lam_x = lam_like(&draw.lam, x.dim(), x.kind());
    let x_mix = &lam_x * x + (1.0 - &lam_x) * x.index_select(0, &draw.perm);
    let f = embed(x, Pass::Clean);
    let f_mix = embed(&x_mix, Pass::Derived);
    let lam_f = lam_like(&draw.lam, f.dim(), f.kind());
    let z = &lam_f * &f + (1.0 - &lam_f) * f.index_select(0, &draw.perm);
    finish(head, f_mix, z, noise, cfg)
}

fn finish(
    head: &dyn Fn(&Tensor) -> Tensor,
    f_mix: Tensor,
    z: Tensor,
    noise: &dyn Fn(&[i64]) -> Tensor,
    cfg: &AdaptiveMixConfig,
) -> MixOut {
    let target = (&z + noise(&z.size()) * cfg.sigma).detach();
    let (a, t) = (f_mix.flatten(1, -1), target.flatten(1, -1));
    let per_sample = match cfg.distance {
        Distance::Cosine => 1.0 - Tensor::cosine_similarity(&a, &t, 1, 1e-8),
        Distance::Mse => (&a - &t).square().mean_dim(1, false, None::<Kind>),
        Distance::L2 => (&a - &t)
            .square()
            .sum_dim_intlist(1, false, None::<Kind>)
            .g_add_scalar(1e-12)
            .sqrt(),
    };
    let cos = tch::no_grad(|| {
        Tensor::cosine_similarity(&a, &z.flatten(1, -1), 1, 1e-8).mean(Kind::Float)
    });
    let logits = head(&z) + head(&f_mix);
    MixOut {
        logits,
        l_am: per_sample.mean(None::<Kind>),
        cos,
    }
}

/// The reference code's three-pass form (embeds `x[perm]` separately); kept for the equality test.
pub fn mix_three_pass(
    embed: &mut EmbedFn<'_>,
    head: &dyn Fn(&Tensor) -> Tensor,
    x: &Tensor,
    draw: &Draw,
    noise: &dyn Fn(&[i64]) -> Tensor,
    cfg: &AdaptiveMixConfig,
) -> MixOut {
    let lam_x = lam_like(&draw.lam, x.dim(), x.kind());
    let x_perm = x.index_select(0, &draw.perm);
    let x_mix = &lam_x * x + (1.0 - &lam_x) * &x_perm;
    let f = embed(x, Pass::Clean);
    let f_perm = embed(&x_perm, Pass::Derived);
    let f_mix = embed(&x_mix, Pass::Derived);
    let lam_f = lam_like(&draw.lam, f.dim(), f.kind());
    let z = &lam_f * &f + (1.0 - &lam_f) * f_perm;
    finish(head, f_mix, z, noise, cfg)
}

pub struct AdaptiveMix {
    cfg: AdaptiveMixConfig,
    pending: Option<Tensor>,
    stats: BTreeMap<String, Tensor>,
}

impl AdaptiveMix {
    pub fn new(cfg: &AdaptiveMixConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(AdaptiveMix {
            cfg: cfg.clone(),
            pending: None,
            stats: BTreeMap::new(),
        })
    }
}

impl Plugin for AdaptiveMix {
    fn name(&self) -> &'static str {
        "adaptivemix"
    }
    fn scores(&self) -> bool {
        true
    }
    fn score(
        &mut self,
        d: &dyn Discriminator,
        x: &Tensor,
        labels: Option<&Tensor>,
        ctx: &Ctx,
        embed: &mut EmbedFn<'_>,
    ) -> Scored {
        let draw = Draw::sample(
            x.size()[0],
            self.cfg.alpha,
            self.cfg.per_sample_lambda,
            x.device(),
        );
        let noise = |shape: &[i64]| Tensor::randn(shape, (x.kind(), x.device()));
        let head = |f: &Tensor| d.head(f, labels, true);
        let out = mix(embed, &head, x, &draw, &noise, &self.cfg);
        let branch = match ctx.phase {
            Phase::D => ctx.branch.name(),
            Phase::G => "g",
        };
        let counts = ctx.phase == Phase::D || self.cfg.in_g;
        if ctx.record {
            self.stats
                .insert(format!("am/loss/{branch}"), out.l_am.detach());
            self.stats.insert("am/cos".into(), out.cos.shallow_clone());
            self.stats
                .insert("am/lambda".into(), draw.lam.mean(Kind::Float));
        }
        if counts && self.cfg.weight > 0.0 {
            self.pending = Some(out.l_am * self.cfg.weight);
        }
        Scored {
            logits: out.logits,
            extra_loss: None,
        }
    }
    fn take_loss(&mut self, _ctx: &Ctx) -> Option<Tensor> {
        self.pending.take()
    }
    fn stats(&self, out: &mut Stats) {
        for (k, v) in &self.stats {
            out.set_tensor(k.clone(), v);
        }
    }
}
