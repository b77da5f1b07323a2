//! ADA, adaptive discriminator augmentation (Karras, Aittala, Hellsten, Laine, Lehtinen, Aila,
//! "Training Generative Adversarial Networks with Limited Data", NeurIPS 2020), after the official
//! `training/augment.py` (`AugmentPipe`) and the p heuristic of `training/training_loop.py`.
//!
//! Every batch D sees (real and fake, both phases) goes through a pipeline of random transforms,
//! each applied to a sample with probability `p`:
//! - geometric, composed into one inverse 2-D homogeneous matrix per sample: x-flip, 90-degree
//!   rotation, integer translation (`blit`); isotropic scaling, rotation (split into a pre- and a
//!   post-rotation around anisotropic scaling, each with `1 - sqrt(1 - p)`), anisotropic scaling,
//!   fractional translation (`geom`). Executed once: reflect-pad by the margin the corners need,
//!   2x upsampling with the symlet-6 wavelet low-pass, bilinear resampling on the affine grid,
//!   filtered 2x downsampling and crop;
//! - colour, composed into one 4x4 matrix per sample: brightness, contrast, luma flip, hue
//!   rotation, saturation (`color`; hue and saturation only for RGB, grey images use the mean of
//!   the matrix's colour rows, as the reference does).
//!
//! Probability multipliers per group as the reference's settings: `color_multiplier` (R3GAN 0.5)
//! and `cutout` (a zeroed square of half the side, the reference's `cutout`; R3GAN 1).
//!
//! `p` is fixed (`mode = "fixed"`), follows `train.lr_schedule` from `p` to `p_final` (`schedule`,
//! R3GAN's augmentation ramp) or is adapted (`mode = "adaptive"`): every `interval` D steps,
//! `p += sign(E[sign(D(real))] - target) * images / (kimg * 1000)`, clamped at 0, where `images`
//! are the reals D scored since the last adjustment (all ranks together). `p` and the signs
//! gathered since the last adjustment live in the plug-in store, so a checkpoint keeps them and a
//! resumed run continues with the same `p` (the reference restarts from its `--p`).
//!
//! Every op is differentiable in the images (G's gradient flows through the fakes' augmentation)
//! to any order (R1 differentiates D's score through it twice): the bilinear resampling is built
//! from gathers, because libtorch's grid sampler has no double backward (the reference works
//! around the same gap with its `grid_sample_gradfix`). The whole pipeline runs in fp32 whatever
//! `train.precision` says, as the reference does (its matrices are fp32).
//!
//! Departures: the pipelines are `blit`, `geom`, `color`, `bg`, `bgc`, each with optional cutout
//! (the reference's image-space filtering and noise, `bgcf*`, are not built). When `p` is 0 the batch passes unchanged;
//! the reference then still resamples it through the identity transform, which returns the batch up
//! to rounding (the wavelet's up-down pair is orthogonal; 2e-12 in float64, tested). The signs are counted
//! once per real batch D scores; the reference also counts its lazy-R1 passes.

use super::{Branch, Ctx, Phase, Plugin};
use crate::dist::Comm;
use crate::error::{Error, Result};
use crate::models::stylegan2::ops::upfirdn2d_separable;
use crate::stats::Stats;
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;
use tch::{nn, Device, Kind, Tensor};

/// Which groups of transforms run (the reference's `augpipe` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pipeline {
    /// x-flip, 90-degree rotation, integer translation.
    Blit,
    /// Scaling, rotation, anisotropic scaling, fractional translation.
    Geom,
    /// Brightness, contrast, luma flip, hue, saturation.
    Color,
    /// `blit` + `geom`.
    Bg,
    /// `blit` + `geom` + `color` (the paper's default).
    Bgc,
}

impl Pipeline {
    fn blit(self) -> bool {
        matches!(self, Pipeline::Blit | Pipeline::Bg | Pipeline::Bgc)
    }
    fn geom(self) -> bool {
        matches!(self, Pipeline::Geom | Pipeline::Bg | Pipeline::Bgc)
    }
    fn color(self) -> bool {
        matches!(self, Pipeline::Color | Pipeline::Bgc)
    }
}

/// How `p` evolves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The ADA heuristic, starting from `ada.p`.
    Adaptive,
    /// `ada.p` throughout.
    Fixed,
    /// From `ada.p` to `ada.p_final` on `train.lr_schedule`'s shape (R3GAN: 0 -> 0.55, cosine).
    Schedule,
}

/// `ada.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaConfig {
    /// Turn the plug-in on.
    pub enabled: bool,
    /// Transforms: `blit`, `geom`, `color`, `bg`, `bgc`.
    pub pipeline: Pipeline,
    /// `adaptive`, `fixed` or `schedule`.
    pub mode: Mode,
    /// The augmentation probability at the start (and throughout, when fixed).
    pub p: f64,
    /// `schedule`: the probability at the end of the schedule.
    pub p_final: f64,
    /// Probability multiplier of the colour transforms (the reference's `brightness`,
    /// `contrast`, `lumaflip`, `hue`, `saturation` settings; R3GAN uses 0.5).
    pub color_multiplier: f64,
    /// Probability multiplier of cutout, a zeroed square of half the side after the other
    /// transforms (0 = off; R3GAN uses 1).
    pub cutout: f64,
    /// The value of E[sign(D(real))] the heuristic steers to (the paper's r_t).
    pub target: f64,
    /// Thousands of real images over which `p` can move by 1.
    pub kimg: f64,
    /// D steps between adjustments of `p`.
    pub interval: u64,
}

impl Default for AdaConfig {
    fn default() -> Self {
        AdaConfig {
            enabled: false,
            pipeline: Pipeline::Bgc,
            mode: Mode::Adaptive,
            p: 0.0,
            p_final: 0.0,
            color_multiplier: 1.0,
            cutout: 0.0,
            target: 0.6,
            kimg: 500.0,
            interval: 4,
        }
    }
}

impl AdaConfig {
    /// `points` is true when the data are 2-D points (nothing to augment).
    pub fn validate(&self, points: bool) -> Result<()> {
        self.validate_with(points, true)
    }

    /// [`validate`](Self::validate) knowing whether D's scores are centred on 0 (non-saturating
    /// and hinge losses), which the adaptive heuristic's sign test assumes.
    pub fn validate_with(&self, points: bool, centred_scores: bool) -> Result<()> {
        if self.mode == Mode::Adaptive && !centred_scores {
            return Err(Error::config(
                "ada.mode",
                "adaptive steers p by the sign of D's scores on reals, which assumes scores centred on 0 (loss.kind non-saturating or hinge; the relativistic loss is blind to an offset in D); with this loss.kind use ada.mode = \"fixed\" or \"schedule\"",
            ));
        }
        if points {
            return Err(Error::config(
                "ada.enabled",
                "ADA augments images; the data are 2-D points",
            ));
        }
        for (key, v) in [("ada.p", self.p), ("ada.p_final", self.p_final)] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(Error::config(key, format!("must be in [0, 1], got {v}")));
            }
        }
        for (key, v) in [
            ("ada.color_multiplier", self.color_multiplier),
            ("ada.cutout", self.cutout),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::config(
                    key,
                    format!("must be a probability multiplier >= 0, got {v}"),
                ));
            }
        }
        if !(self.target.is_finite() && (-1.0..=1.0).contains(&self.target)) {
            return Err(Error::config(
                "ada.target",
                format!("must be in [-1, 1] (a mean of signs), got {}", self.target),
            ));
        }
        if !(self.kimg.is_finite() && self.kimg > 0.0) {
            return Err(Error::config(
                "ada.kimg",
                format!("must be positive, got {}", self.kimg),
            ));
        }
        if self.interval == 0 {
            return Err(Error::config("ada.interval", "must be at least 1"));
        }
        Ok(())
    }
}

// The reference's default ranges (`AugmentPipe.__init__`).
const XINT_MAX: f64 = 0.125;
const SCALE_STD: f64 = 0.2;
const ROTATE_MAX: f64 = 1.0;
const ANISO_STD: f64 = 0.2;
const XFRAC_STD: f64 = 0.125;
const BRIGHTNESS_STD: f64 = 0.2;
const CONTRAST_STD: f64 = 0.5;
const HUE_MAX: f64 = 1.0;
const SATURATION_STD: f64 = 1.0;
const CUTOUT_SIZE: f64 = 0.5;

/// Symlet-6 low-pass taps (the reference's `wavelets['sym6']`).
const SYM6: [f64; 12] = [
    0.015404109327027373,
    0.0034907120842174702,
    -0.11799011114819057,
    -0.048311742585633,
    0.4910559419267466,
    0.787641141030194,
    0.3379294217276218,
    -0.07263752278646252,
    -0.021060292512300564,
    0.04472490177066578,
    0.0017677118642428036,
    -0.007800708325034148,
];

/// The raw random numbers of one batch, named `<op>.<what>` (`xflip.i`, `xflip.gate`, ...): the
/// uniforms and normals the reference draws, before any scaling, in its order.
pub struct Draws(pub Vec<(String, Tensor)>);

impl Draws {
    fn get(&self, name: &str) -> &Tensor {
        &self
            .0
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("ADA draw {name} missing"))
            .1
    }
}

/// Draws what `cfg`'s transforms need for a batch of `b` images with `channels` channels, the
/// way the reference does (same calls, same order, float32).
pub fn sample(cfg: &AdaConfig, b: i64, channels: i64, device: Device) -> Draws {
    let pipeline = cfg.pipeline;
    let opts = (Kind::Float, device);
    let mut pairs: Vec<(&str, Vec<i64>, bool, Vec<i64>)> = Vec::new();
    // (op, value shape, value is normal, gate shape)
    if pipeline.blit() {
        pairs.push(("xflip", vec![b], false, vec![b]));
        pairs.push(("rotate90", vec![b], false, vec![b]));
        pairs.push(("xint", vec![b, 2], false, vec![b, 1]));
    }
    if pipeline.geom() {
        pairs.push(("scale", vec![b], true, vec![b]));
        pairs.push(("rotate_pre", vec![b], false, vec![b]));
        pairs.push(("aniso", vec![b], true, vec![b]));
        pairs.push(("rotate_post", vec![b], false, vec![b]));
        pairs.push(("xfrac", vec![b, 2], true, vec![b, 1]));
    }
    if pipeline.color() {
        pairs.push(("brightness", vec![b], true, vec![b]));
        pairs.push(("contrast", vec![b], true, vec![b]));
        pairs.push(("lumaflip", vec![b, 1, 1], false, vec![b, 1, 1]));
        if channels > 1 {
            pairs.push(("hue", vec![b], false, vec![b]));
            pairs.push(("saturation", vec![b, 1, 1], true, vec![b, 1, 1]));
        }
    }
    let mut out = Vec::new();
    for (op, shape, normal, gate) in pairs {
        let v = if normal {
            Tensor::randn(&shape, opts)
        } else {
            Tensor::rand(&shape, opts)
        };
        out.push((format!("{op}.value"), v));
        out.push((format!("{op}.gate"), Tensor::rand(&gate, opts)));
    }
    if cfg.cutout > 0.0 {
        // The reference draws cutout's gate before its centre.
        out.push(("cutout.gate".into(), Tensor::rand([b, 1, 1, 1, 1], opts)));
        out.push(("cutout.value".into(), Tensor::rand([b, 2, 1, 1, 1], opts)));
    }
    Draws(out)
}

/// Per-sample homogeneous matrices from `[B]` entries (constants broadcast).
struct Mats {
    b: i64,
    opts: (Kind, Device),
}

enum E<'a> {
    C(f64),
    T(&'a Tensor),
}

impl Mats {
    fn mat(&self, rows: &[&[E]]) -> Tensor {
        let n = rows.len() as i64;
        let m = rows[0].len() as i64;
        let elems: Vec<Tensor> = rows
            .iter()
            .flat_map(|r| r.iter())
            .map(|e| match e {
                E::C(v) => Tensor::full([self.b], *v, self.opts),
                E::T(t) => t.reshape([self.b]).to_kind(self.opts.0),
            })
            .collect();
        Tensor::stack(&elems, -1).reshape([self.b, n, m])
    }
    fn translate2d(&self, tx: &Tensor, ty: &Tensor) -> Tensor {
        use E::*;
        self.mat(&[
            &[C(1.), C(0.), T(tx)],
            &[C(0.), C(1.), T(ty)],
            &[C(0.), C(0.), C(1.)],
        ])
    }
    fn scale2d(&self, sx: &Tensor, sy: &Tensor) -> Tensor {
        use E::*;
        self.mat(&[
            &[T(sx), C(0.), C(0.)],
            &[C(0.), T(sy), C(0.)],
            &[C(0.), C(0.), C(1.)],
        ])
    }
    fn rotate2d(&self, theta: &Tensor) -> Tensor {
        use E::*;
        let (c, s, ms) = (theta.cos(), theta.sin(), (-theta).sin());
        self.mat(&[
            &[T(&c), T(&ms), C(0.)],
            &[T(&s), T(&c), C(0.)],
            &[C(0.), C(0.), C(1.)],
        ])
    }
    fn c(&self, v: f64) -> Tensor {
        Tensor::full([self.b], v, self.opts)
    }
    fn translate3d(&self, t: &Tensor) -> Tensor {
        use E::*;
        self.mat(&[
            &[C(1.), C(0.), C(0.), T(t)],
            &[C(0.), C(1.), C(0.), T(t)],
            &[C(0.), C(0.), C(1.), T(t)],
            &[C(0.), C(0.), C(0.), C(1.)],
        ])
    }
    fn scale3d(&self, s: &Tensor) -> Tensor {
        use E::*;
        self.mat(&[
            &[T(s), C(0.), C(0.), C(0.)],
            &[C(0.), T(s), C(0.), C(0.)],
            &[C(0.), C(0.), T(s), C(0.)],
            &[C(0.), C(0.), C(0.), C(1.)],
        ])
    }
    /// Rotation by `theta` around the unit axis `v` (Rodrigues), the reference's `rotate3d`.
    fn rotate3d(&self, v: [f64; 3], theta: &Tensor) -> Tensor {
        use E::*;
        let [vx, vy, vz] = v;
        let (s, c) = (theta.sin(), theta.cos());
        let cc = 1.0 - &c;
        let e = |a: f64, b: f64, plus: Option<(f64, bool)>| -> Tensor {
            let base = &cc * (a * b);
            match plus {
                None => base + &c,
                Some((k, true)) => base + &s * k,
                Some((k, false)) => base - &s * k,
            }
        };
        let m = [
            e(vx, vx, None),
            e(vx, vy, Some((vz, false))),
            e(vx, vz, Some((vy, true))),
            e(vy, vx, Some((vz, true))),
            e(vy, vy, None),
            e(vy, vz, Some((vx, false))),
            e(vz, vx, Some((vy, false))),
            e(vz, vy, Some((vx, true))),
            e(vz, vz, None),
        ];
        self.mat(&[
            &[T(&m[0]), T(&m[1]), T(&m[2]), C(0.)],
            &[T(&m[3]), T(&m[4]), T(&m[5]), C(0.)],
            &[T(&m[6]), T(&m[7]), T(&m[8]), C(0.)],
            &[C(0.), C(0.), C(0.), C(1.)],
        ])
    }
}

/// Constant `[B, n, m]` copies of a small matrix.
fn batch_of(m: &[f64], n: i64, b: i64, opts: (Kind, Device)) -> Tensor {
    Tensor::from_slice(m)
        .to_kind(opts.0)
        .to_device(opts.1)
        .reshape([1, n, n])
        .expand([b, n, n], false)
        .contiguous()
}

/// `grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)` from
/// gathers, linear in `x` with gradients of any order.
pub fn grid_sample_bilinear(x: &Tensor, grid: &Tensor) -> Tensor {
    let (n, c, h, w) = x.size4().expect("grid_sample wants [N, C, H, W]");
    let (ho, wo) = (grid.size()[1], grid.size()[2]);
    let kind = x.kind();
    let grid = grid.to_kind(kind);
    let ix = ((grid.select(3, 0) + 1.0) * w as f64 - 1.0) / 2.0;
    let iy = ((grid.select(3, 1) + 1.0) * h as f64 - 1.0) / 2.0;
    let (x0, y0) = (ix.floor(), iy.floor());
    let (fx, fy) = (&ix - &x0, &iy - &y0);
    let flat = x.reshape([n, c, h * w]);
    let mut out: Option<Tensor> = None;
    for (dx, dy) in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)] {
        let (xc, yc) = (&x0 + dx, &y0 + dy);
        let wx = if dx > 0.0 {
            fx.shallow_clone()
        } else {
            1.0 - &fx
        };
        let wy = if dy > 0.0 {
            fy.shallow_clone()
        } else {
            1.0 - &fy
        };
        let inside = xc
            .ge(0.0)
            .logical_and(&xc.le((w - 1) as f64))
            .logical_and(&yc.ge(0.0))
            .logical_and(&yc.le((h - 1) as f64));
        let weight = (wx * wy * inside.to_kind(kind)).reshape([n, 1, ho * wo]);
        // Integers before the product: a float index loses pixels past 2^24 of them.
        let yi = yc.clamp(0.0, (h - 1) as f64).to_kind(Kind::Int64);
        let xi = xc.clamp(0.0, (w - 1) as f64).to_kind(Kind::Int64);
        let idx = (yi * w + xi)
            .reshape([n, 1, ho * wo])
            .expand([n, c, ho * wo], false);
        let term = flat.gather(2, &idx, false) * weight;
        out = Some(match out {
            None => term,
            Some(acc) => acc + term,
        });
    }
    out.expect("four corners").reshape([n, c, ho, wo])
}

/// The augmented batch for given draws and probability `p` (the reference's `forward`). `x` is
/// `[B, C, H, W]` with C = 1 or 3; the transforms are computed in x's dtype.
pub fn apply(x: &Tensor, draws: &Draws, cfg: &AdaConfig, p: f64) -> Tensor {
    let pipeline = cfg.pipeline;
    let pc = cfg.color_multiplier * p;
    let (b, c, h, w) = x.size4().expect("ADA wants [N, C, H, W]");
    let opts = (x.kind(), x.device());
    let m = Mats { b, opts };
    let value = |name: &str| draws.get(&format!("{name}.value")).to_kind(opts.0);
    let gate = |name: &str, prob: f64| draws.get(&format!("{name}.gate")).lt(prob);
    let mut x = x.shallow_clone();

    if pipeline.blit() || pipeline.geom() {
        let mut g = batch_of(&[1., 0., 0., 0., 1., 0., 0., 0., 1.], 3, b, opts);
        let one = m.c(1.0);
        if pipeline.blit() {
            let i = (value("xflip") * 2.0).floor();
            let i = i.where_self(&gate("xflip", p), &i.zeros_like());
            g = g.matmul(&m.scale2d(&(-(&i * 2.0) + 1.0).reciprocal(), &one));
            let i = (value("rotate90") * 4.0).floor();
            let i = i.where_self(&gate("rotate90", p), &i.zeros_like());
            g = g.matmul(&m.rotate2d(&(&i * (PI / 2.0))));
            let t = (value("xint") * 2.0 - 1.0) * XINT_MAX;
            let t = t.where_self(&gate("xint", p), &t.zeros_like());
            let tx = (t.select(1, 0) * w as f64).round();
            let ty = (t.select(1, 1) * h as f64).round();
            g = g.matmul(&m.translate2d(&-tx, &-ty));
        }
        if pipeline.geom() {
            let s = (value("scale") * SCALE_STD).exp2();
            let s = s.where_self(&gate("scale", p), &s.ones_like());
            g = g.matmul(&m.scale2d(&s.reciprocal(), &s.reciprocal()));
            // P(pre or post) = p.
            let p_rot = 1.0 - (1.0 - p).clamp(0.0, 1.0).sqrt();
            let theta = (value("rotate_pre") * 2.0 - 1.0) * (PI * ROTATE_MAX);
            let theta = theta.where_self(&gate("rotate_pre", p_rot), &theta.zeros_like());
            g = g.matmul(&m.rotate2d(&theta));
            let s = (value("aniso") * ANISO_STD).exp2();
            let s = s.where_self(&gate("aniso", p), &s.ones_like());
            g = g.matmul(&m.scale2d(&s.reciprocal(), &s));
            let theta = (value("rotate_post") * 2.0 - 1.0) * (PI * ROTATE_MAX);
            let theta = theta.where_self(&gate("rotate_post", p_rot), &theta.zeros_like());
            g = g.matmul(&m.rotate2d(&theta));
            let t = value("xfrac") * XFRAC_STD;
            let t = t.where_self(&gate("xfrac", p), &t.zeros_like());
            let tx = t.select(1, 0) * w as f64;
            let ty = t.select(1, 1) * h as f64;
            g = g.matmul(&m.translate2d(&-tx, &-ty));
        }
        x = resample(&x, g, &m);
    }

    if pipeline.color() {
        let mut cm = batch_of(&eye(4), 4, b, opts);
        let bright = value("brightness") * BRIGHTNESS_STD;
        let bright = bright.where_self(&gate("brightness", pc), &bright.zeros_like());
        cm = m.translate3d(&bright).matmul(&cm);
        let con = (value("contrast") * CONTRAST_STD).exp2();
        let con = con.where_self(&gate("contrast", pc), &con.ones_like());
        cm = m.scale3d(&con).matmul(&cm);
        let r3 = 1.0 / 3f64.sqrt();
        let v = Tensor::from_slice(&[r3, r3, r3, 0.0])
            .to_kind(opts.0)
            .to_device(opts.1);
        let vv = v.outer(&v);
        let eye4 = Tensor::eye(4, opts);
        let i = (value("lumaflip") * 2.0).floor();
        let i = i.where_self(&gate("lumaflip", pc), &i.zeros_like());
        // Householder reflection through the plane orthogonal to the luma axis.
        cm = (&eye4 - (&vv * 2.0).unsqueeze(0) * &i).matmul(&cm);
        if c > 1 {
            let theta = (value("hue") * 2.0 - 1.0) * (PI * HUE_MAX);
            let theta = theta.where_self(&gate("hue", pc), &theta.zeros_like());
            cm = m.rotate3d([r3, r3, r3], &theta).matmul(&cm);
            let s = (value("saturation") * SATURATION_STD).exp2();
            let s = s.where_self(&gate("saturation", pc), &s.ones_like());
            cm = (vv.unsqueeze(0) + (&eye4 - &vv).unsqueeze(0) * s).matmul(&cm);
        }
        let flat = x.reshape([b, c, h * w]);
        let y = if c == 3 {
            cm.narrow(1, 0, 3).narrow(2, 0, 3).matmul(&flat) + cm.narrow(1, 0, 3).narrow(2, 3, 1)
        } else {
            let mean = cm.narrow(1, 0, 3).mean_dim(1, true, None::<Kind>);
            flat * mean.narrow(2, 0, 3).sum_dim_intlist(2, true, None::<Kind>)
                + mean.narrow(2, 3, 1)
        };
        x = y.reshape([b, c, h, w]);
    }

    if cfg.cutout > 0.0 {
        let size = Tensor::full([b, 2, 1, 1, 1], CUTOUT_SIZE, opts);
        let size = size.where_self(&gate("cutout", cfg.cutout * p), &size.zeros_like());
        let center = value("cutout");
        let coord =
            |n: i64, shape: [i64; 4]| (Tensor::arange(n, opts).reshape(shape) + 0.5) / n as f64;
        let outside = |axis: i64, coords: Tensor| {
            (coords - center.select(1, axis))
                .abs()
                .ge_tensor(&(size.select(1, axis) / 2.0))
        };
        let mask =
            outside(0, coord(w, [1, 1, 1, w])).logical_or(&outside(1, coord(h, [1, 1, h, 1])));
        // Not `*=`: that would multiply in place, and x may still be the caller's batch.
        x = mask.to_kind(opts.0) * x;
    }
    x
}

fn eye(n: usize) -> Vec<f64> {
    (0..n * n)
        .map(|k| if k / n == k % n { 1.0 } else { 0.0 })
        .collect()
}

/// Executes the composed inverse transform `g` (`g @ pixel_out = pixel_in`): pad, upsample,
/// resample, downsample, crop (the reference's "Execute geometric transformations").
fn resample(x: &Tensor, g: Tensor, m: &Mats) -> Tensor {
    let (b, c, h, w) = x.size4().expect("[N, C, H, W]");
    let opts = m.opts;
    let filter = Tensor::from_slice(&SYM6).to_kind(opts.0).to_device(opts.1);
    let filter = &filter / filter.sum(opts.0);
    let hz_pad = SYM6.len() as i64 / 4;
    let (cx, cy) = ((w - 1) as f64 / 2.0, (h - 1) as f64 / 2.0);
    let corners = Tensor::from_slice(&[-cx, -cy, 1.0, cx, -cy, 1.0, cx, cy, 1.0, -cx, cy, 1.0])
        .to_kind(opts.0)
        .to_device(opts.1)
        .reshape([4, 3]);
    let cp = g.matmul(&corners.tr()); // [B, xyz, corner]
    let margin = cp.narrow(1, 0, 2).permute([1, 0, 2]).flatten(1, 2); // [xy, B * 4]
    let margin = Tensor::cat(&[-&margin, margin.shallow_clone()], 0).amax([1], false);
    // A host read (as in stylegan2-ada, which turns the margin into Python ints): the padding's
    // size depends on this batch's transforms.
    let margin = crate::util::read_vec(&margin);
    let lift = [hz_pad as f64 * 2.0 - cx, hz_pad as f64 * 2.0 - cy];
    let hi = [(w - 1) as f64, (h - 1) as f64];
    let mg: Vec<i64> = (0..4)
        .map(|k| (margin[k] + lift[k % 2]).max(0.0).min(hi[k % 2]).ceil() as i64)
        .collect();
    let (mx0, my0, mx1, my1) = (mg[0], mg[1], mg[2], mg[3]);

    let x = crate::nn::reflection_pad2d(x, [mx0, mx1, my0, my1]);
    let c2 = |v: f64| Tensor::full([b], v, opts);
    let t = |tx: f64, ty: f64| m.translate2d(&c2(tx), &c2(ty));
    let s = |sx: f64, sy: f64| m.scale2d(&c2(sx), &c2(sy));
    let g = t((mx0 - mx1) as f64 / 2.0, (my0 - my1) as f64 / 2.0).matmul(&g);

    let x = upfirdn2d_separable(&x, &filter, 2, 1, [6, 5, 6, 5], false, 4.0);
    let g = s(2.0, 2.0).matmul(&g).matmul(&s(0.5, 0.5));
    let g = t(-0.5, -0.5).matmul(&g).matmul(&t(0.5, 0.5));

    let out_h = (h + hz_pad * 2) * 2;
    let out_w = (w + hz_pad * 2) * 2;
    let (xh, xw) = (x.size()[2] as f64, x.size()[3] as f64);
    let g = s(2.0 / xw, 2.0 / xh)
        .matmul(&g)
        .matmul(&s(out_w as f64 / 2.0, out_h as f64 / 2.0));
    let grid = Tensor::affine_grid_generator(&g.narrow(1, 0, 2), [b, c, out_h, out_w], false);
    let x = grid_sample_bilinear(&x, &grid);
    let pad = -hz_pad * 2;
    let (p0, p1) = (pad + (12 - 2 + 1) / 2, pad + (12 - 2) / 2);
    upfirdn2d_separable(&x, &filter, 1, 2, [p0, p1, p0, p1], true, 1.0)
}

/// The plug-in: augments every batch D scores and steers `p`.
pub struct Ada {
    cfg: AdaConfig,
    /// `[1]`: the current probability (checkpointed).
    p: Tensor,
    /// `[3]`: signs summed and reals counted (over all ranks) and D steps taken since the last
    /// adjustment (checkpointed, so that a resume mid-interval adjusts as the uninterrupted run
    /// would).
    window: Tensor,
    /// This phase's real logits: sign sum and count, until the phase ends.
    pending: Option<(Tensor, f64)>,
    /// Mean sign of the latest window.
    last_signs: Option<f64>,
    /// Host copies of `p` and of the window's step count: read from the tensors once (after
    /// building or a restore wrote them), then kept in step, so a step reads nothing from the
    /// device (the window's sums are read once per `interval`, when p adjusts).
    host: std::cell::Cell<Option<(f64, u64)>>,
}

impl Ada {
    pub fn new(p: &nn::Path, cfg: &AdaConfig, channels: i64) -> Result<Self> {
        if channels != 1 && channels != 3 {
            return Err(Error::config(
                "ada.enabled",
                format!("ADA augments grey (1-channel) or RGB images; the data have {channels} channels"),
            ));
        }
        let prob = p.zeros_no_train("p", &[1]);
        let window = p.zeros_no_train("window", &[3]);
        tch::no_grad(|| {
            let _ = prob.shallow_clone().fill_(cfg.p);
        });
        Ok(Ada {
            cfg: cfg.clone(),
            p: prob,
            window,
            pending: None,
            last_signs: None,
            host: std::cell::Cell::new(None),
        })
    }

    /// (p, D steps in the window), from the host copy.
    fn mirror(&self) -> (f64, u64) {
        if let Some(m) = self.host.get() {
            return m;
        }
        let both = crate::util::read_vec(&Tensor::cat(&[&self.p, &self.window.narrow(0, 2, 1)], 0));
        let m = (both[0], both[1] as u64);
        self.host.set(Some(m));
        m
    }

    /// The current augmentation probability.
    pub fn probability(&self) -> f64 {
        self.mirror().0
    }
}

impl Plugin for Ada {
    fn name(&self) -> &'static str {
        "ada"
    }

    fn augment(&mut self, x: Tensor, _ctx: &Ctx) -> Tensor {
        let p = self.probability();
        if x.dim() != 4 || p <= 0.0 {
            return x;
        }
        let (b, c) = (x.size()[0], x.size()[1]);
        crate::precision::fp32(x.device(), || {
            let draws = sample(&self.cfg, b, c, x.device());
            let kind = x.kind();
            let work = if kind == Kind::Double {
                kind
            } else {
                Kind::Float
            };
            apply(&x.to_kind(work), &draws, &self.cfg, p).to_kind(kind)
        })
    }

    fn begin_step(&mut self, progress: f64) {
        if self.cfg.mode == Mode::Schedule {
            let p = self.cfg.p + (self.cfg.p_final - self.cfg.p) * progress;
            let steps = self.mirror().1;
            tch::no_grad(|| {
                let _ = self.p.fill_(p);
            });
            self.host.set(Some((p, steps)));
        }
    }

    fn observe(&mut self, logits: &Tensor, ctx: &Ctx) {
        if !(ctx.record && ctx.phase == Phase::D && ctx.branch == Branch::Real) {
            return;
        }
        // One sign per image: of its score, or of its row's mean for critics that score an image
        // with several logits (U-GAT-IT's patches), so that p moves by images as `kimg` says.
        let l = logits.detach().to_kind(Kind::Float);
        let per_image = if l.dim() > 1 {
            l.flatten(1, -1).mean_dim(1, false, None::<Kind>)
        } else {
            l
        };
        let signs = per_image.sign().sum(Kind::Float);
        let n = per_image.size()[0] as f64;
        self.pending = Some(match self.pending.take() {
            None => (signs, n),
            Some((s, k)) => (s + signs, k + n),
        });
    }

    fn end_phase(&mut self, phase: Phase, comm: &Comm) -> Result<()> {
        if phase != Phase::D {
            return Ok(());
        }
        // The host copy as it stood before this phase's step joins the window.
        let (mut p, steps) = self.mirror();
        let opts = (Kind::Float, self.p.device());
        let (signs, n) = self
            .pending
            .take()
            .unwrap_or_else(|| (Tensor::zeros([], opts), 0.0));
        // Summed over ranks each D step, so that the checkpointed window is the same on all.
        let phase = Tensor::stack(&[signs, Tensor::full([], n, opts)], 0);
        comm.all_reduce_sum(&phase)?;
        let add = Tensor::cat(&[phase, Tensor::ones([1], opts)], 0);
        tch::no_grad(|| {
            let _ = self.window.g_add_(&add);
        });
        if steps + 1 < self.cfg.interval {
            self.host.set(Some((p, steps + 1)));
            return Ok(());
        }
        let sums = crate::util::read_vec(&self.window.narrow(0, 0, 2));
        let (sum, count) = (sums[0], sums[1]);
        if count > 0.0 {
            // r_t is logged in every mode (an overfitting signal); only `adaptive` acts on it.
            let mean = sum / count;
            self.last_signs = Some(mean);
            if self.cfg.mode == Mode::Adaptive {
                let adjust = sign(mean - self.cfg.target) * count / (self.cfg.kimg * 1000.0);
                p = (p + adjust).max(0.0);
                tch::no_grad(|| {
                    let _ = self.p.fill_(p);
                });
            }
        }
        tch::no_grad(|| {
            let _ = self.window.zero_();
        });
        self.host.set(Some((p, 0)));
        Ok(())
    }

    fn discard_phase(&mut self) {
        self.pending = None;
    }

    fn state_restored(&mut self) {
        self.host.set(None);
    }

    fn stats(&self, out: &mut Stats) {
        out.set("ada/p", self.probability());
        if let Some(s) = self.last_signs {
            out.set("ada/signs", s);
        }
    }
}

/// numpy's `sign`: 0 at 0.
fn sign(v: f64) -> f64 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}
