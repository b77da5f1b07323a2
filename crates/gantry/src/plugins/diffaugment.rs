//! DiffAugment (Zhao, Liu, Lin, Zhu, Han, "Differentiable Augmentation for Data-Efficient GAN
//! Training", NeurIPS 2020), the official `DiffAugment_pytorch.py` transcribed op for op:
//!
//! - `color`: brightness `x + (r - 0.5)`, saturation `(x - mean_c) * 2r + mean_c`, contrast
//!   `(x - mean_chw) * (r + 0.5) + mean_chw`, each with its own `r ~ U(0, 1)` per sample;
//! - `translation`: shift by integers in `[-s, s]` per axis and sample, `s = int(side/8 + 0.5)`,
//!   zero fill (gather from a 1-pixel zero-padded copy with clamped indices);
//! - `cutout`: zero a square of `int(side/2 + 0.5)` pixels centred at a random offset (clipped at
//!   the border).
//!
//! Applied by the [`Critic`](super::Critic) to every batch D scores, real and fake, in both phases,
//! before any other plug-in sees it, so AdaptiveMix mixes augmented images and FQ quantises their
//! features. Every op is differentiable in `x`, so G's gradient flows through it. The random draws
//! come from libtorch's generator in the reference's order (the training loop seeds it per step);
//! [`sample`] and [`apply`] are separate so that tests can pass the same draws to the reference.
//!
//! Departures: none in the ops. The gradient penalty's interpolates are not augmented (the critic's
//! plain path), as in the reference code, which has no GP.

use super::{Ctx, Plugin};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// One policy of the reference (`AUGMENT_FNS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Brightness, saturation and contrast.
    Color,
    Translation,
    Cutout,
}

impl Policy {
    fn ops(self) -> &'static [Op] {
        match self {
            Policy::Color => &[Op::Brightness, Op::Saturation, Op::Contrast],
            Policy::Translation => &[Op::Translation],
            Policy::Cutout => &[Op::Cutout],
        }
    }
}

/// `diffaugment.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiffAugmentConfig {
    /// Turn the plug-in on.
    pub enabled: bool,
    /// Policies applied in this order: `color`, `translation`, `cutout` (the paper's CIFAR
    /// setting is all three); a list, or one comma-separated string (`"color,cutout"`).
    #[serde(deserialize_with = "policy_list")]
    pub policy: Vec<Policy>,
}

impl Default for DiffAugmentConfig {
    fn default() -> Self {
        DiffAugmentConfig {
            enabled: false,
            policy: vec![Policy::Color, Policy::Translation, Policy::Cutout],
        }
    }
}

/// A list of policy names, or the reference's comma-separated string.
fn policy_list<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<Policy>, D::Error> {
    use serde::de::value::StrDeserializer;
    match toml::Value::deserialize(d)? {
        toml::Value::String(s) => s
            .split(',')
            .map(|name| Policy::deserialize(StrDeserializer::<D::Error>::new(name.trim())))
            .collect(),
        v => Vec::<Policy>::deserialize(v).map_err(serde::de::Error::custom),
    }
}

/// One augmentation op of the reference (`AUGMENT_FNS` flattened).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Brightness,
    Saturation,
    Contrast,
    Translation,
    Cutout,
}

impl DiffAugmentConfig {
    pub fn validate(&self) -> Result<()> {
        if self.policy.is_empty() {
            return Err(Error::config(
                "diffaugment.policy",
                "is empty (valid: color, translation, cutout)",
            ));
        }
        Ok(())
    }

    /// The ops of `policy`, in order.
    pub fn ops(&self) -> Vec<Op> {
        self.policy.iter().flat_map(|p| p.ops()).copied().collect()
    }
}

/// The random draws of one op for a batch.
pub enum Draw {
    /// `[B, 1, 1, 1]` uniform in [0, 1) (in x's dtype), for the three colour ops.
    Uniform(Op, Tensor),
    /// `[B, 1, 1]` integer shifts along H and W, in `[-s, s]`.
    Translation { x: Tensor, y: Tensor },
    /// `[B, 1, 1]` integer centres along H and W.
    Cutout { x: Tensor, y: Tensor },
}

fn translation_shift(side: i64) -> i64 {
    (side as f64 * 0.125 + 0.5) as i64
}

fn cutout_size(side: i64) -> i64 {
    (side as f64 * 0.5 + 0.5) as i64
}

/// Draws what `op` needs for batch `x`, the way the reference does (same calls, same order).
pub fn sample(op: Op, x: &Tensor) -> Draw {
    let s = x.size();
    let (b, h, w) = (s[0], s[2], s[3]);
    let dev = x.device();
    let ints = |lo: i64, hi: i64| Tensor::randint_low(lo, hi, [b, 1, 1], (Kind::Int64, dev));
    match op {
        Op::Brightness | Op::Saturation | Op::Contrast => {
            Draw::Uniform(op, Tensor::rand([b, 1, 1, 1], (x.kind(), dev)))
        }
        Op::Translation => {
            let (sx, sy) = (translation_shift(h), translation_shift(w));
            let tx = ints(-sx, sx + 1);
            Draw::Translation {
                x: tx,
                y: ints(-sy, sy + 1),
            }
        }
        Op::Cutout => {
            let (cx, cy) = (cutout_size(h), cutout_size(w));
            let ox = ints(0, h + (1 - cx % 2));
            Draw::Cutout {
                x: ox,
                y: ints(0, w + (1 - cy % 2)),
            }
        }
    }
}

/// Applies one op with given draws.
pub fn apply(x: &Tensor, draw: &Draw) -> Tensor {
    let s = x.size();
    let (b, h, w) = (s[0], s[2], s[3]);
    let dev = x.device();
    let arange = |n: i64, shape: [i64; 3]| Tensor::arange(n, (Kind::Int64, dev)).view(shape);
    match draw {
        Draw::Uniform(Op::Brightness, r) => x + (r - 0.5),
        Draw::Uniform(Op::Saturation, r) => {
            let mean = x.mean_dim(1, true, None::<Kind>);
            (x - &mean) * (r * 2.0) + mean
        }
        Draw::Uniform(Op::Contrast, r) => {
            let mean = x.mean_dim(&[1i64, 2, 3][..], true, None::<Kind>);
            (x - &mean) * (r + 0.5) + mean
        }
        Draw::Uniform(op, _) => unreachable!("{op:?} draws are not uniform"),
        Draw::Translation { x: tx, y: ty } => {
            let gb = arange(b, [b, 1, 1]);
            let gx = (arange(h, [1, h, 1]) + tx + 1).clamp(0, h + 1);
            let gy = (arange(w, [1, 1, w]) + ty + 1).clamp(0, w + 1);
            let padded = x.constant_pad_nd([1, 1, 1, 1]).permute([0, 2, 3, 1]);
            padded
                .index(&[Some(gb), Some(gx), Some(gy)])
                .permute([0, 3, 1, 2])
        }
        Draw::Cutout { x: ox, y: oy } => {
            let (cx, cy) = (cutout_size(h), cutout_size(w));
            let gb = arange(b, [b, 1, 1]);
            let gx = (arange(cx, [1, cx, 1]) + ox - cx / 2).clamp(0, h - 1);
            let gy = (arange(cy, [1, 1, cy]) + oy - cy / 2).clamp(0, w - 1);
            let mut mask = Tensor::ones([b, h, w], (x.kind(), dev));
            let _ = mask.index_put_(
                &[Some(gb), Some(gx), Some(gy)],
                &Tensor::zeros(&[] as &[i64], (x.kind(), dev)),
                false,
            );
            x * mask.unsqueeze(1)
        }
    }
}

/// All ops of a policy, drawing as it goes (the reference's `DiffAugment(x, policy)`).
pub fn augment(x: &Tensor, ops: &[Op]) -> Tensor {
    let mut x = x.shallow_clone();
    for &op in ops {
        let d = sample(op, &x);
        x = apply(&x, &d);
    }
    x.contiguous()
}

pub struct DiffAugment {
    ops: Vec<Op>,
}

impl DiffAugment {
    pub fn new(cfg: &DiffAugmentConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(DiffAugment { ops: cfg.ops() })
    }
}

impl Plugin for DiffAugment {
    fn name(&self) -> &'static str {
        "diffaugment"
    }
    fn augment(&mut self, x: Tensor, _ctx: &Ctx) -> Tensor {
        // 2-D points (the MLP on Gaussian mixtures) have nothing to translate or cut out.
        if x.dim() != 4 || x.size()[2] < 2 {
            return x;
        }
        augment(&x, &self.ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_in_order_and_bad_names_are_errors() {
        let parse = |text: &str| toml::from_str::<DiffAugmentConfig>(text);
        for text in [
            "policy = \"cutout, color\"",
            "policy = [\"cutout\", \"color\"]",
        ] {
            assert_eq!(
                parse(text).unwrap().ops(),
                [Op::Cutout, Op::Brightness, Op::Saturation, Op::Contrast]
            );
        }
        for text in ["policy = \"colour\"", "policy = [\"colour\"]"] {
            let e = parse(text).unwrap_err().to_string();
            assert!(
                e.contains("unknown variant `colour`") && e.contains("translation"),
                "{e}"
            );
        }
        let e = DiffAugmentConfig {
            enabled: true,
            policy: vec![],
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("diffaugment.policy:"), "{e}");
    }

    #[test]
    fn translation_by_zero_is_the_identity_and_cutout_zeroes_a_square() {
        let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, tch::Device::Cpu)) + 5.0;
        let zero = Tensor::zeros([2, 1, 1], (Kind::Int64, tch::Device::Cpu));
        let t = apply(
            &x,
            &Draw::Translation {
                x: zero.shallow_clone(),
                y: zero.shallow_clone(),
            },
        );
        assert!(t.equal(&x));
        let c = apply(
            &x,
            &Draw::Cutout {
                x: zero.shallow_clone() + 4,
                y: zero + 4,
            },
        );
        let zeros = c.eq(0.0).sum(Kind::Int64).int64_value(&[]);
        assert_eq!(zeros, 2 * 3 * 4 * 4);
    }
}
