//! Feature Quantization (Zhao, Li, Yu, Gao, Chen, "Feature Quantization Improves GAN Training",
//! ICML 2020): an EMA dictionary per chosen D layer into which the features of real and fake
//! images are quantised, one shared discrete space. `docs/feature-quantization.md` explains the
//! algorithm and where gantry departs from the reference code.
//!
//! The dictionary lives outside the optimiser, in the `plugins` store (`fq.<layer>.codebook`,
//! `.ema_count`, `.ema_sum`), and is checkpointed with it. Its update takes per-phase counts and
//! sums, which data-parallel replicas can all-reduce (sum) before the EMA step. In the D phase the
//! real and fake batches are assigned against the same (pre-update) codebook and the dictionary is
//! updated once from both; in the G phase, from the fakes (`update_in_g`).

use super::{Ctx, Pass, Phase, Plugin};
use crate::dist::Comm;
use crate::error::{Error, Result};
use crate::stats::Stats;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::{nn, Kind, Tensor};

/// A value for every layer, or one per layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerLayer<T> {
    All(T),
    Each(Vec<T>),
}

impl<T: Clone> PerLayer<T> {
    fn get(&self, i: usize) -> Option<T> {
        match self {
            PerLayer::All(v) => Some(v.clone()),
            PerLayer::Each(v) => v.get(i).cloned(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FqMode {
    /// D continues with its continuous features; FQ adds the commitment loss (reference code).
    LossOnly,
    /// D continues with the straight-through quantised features (the paper's figure).
    Forward,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FqInit {
    /// Codewords ~ N(0, 1), counts 0, sums = codewords (reference BigGAN code).
    Normal,
    /// Codewords drawn from the first batch's feature vectors.
    FirstBatch,
}

/// `fq.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FqConfig {
    /// Turn the plug-in on.
    pub enabled: bool,
    /// D layers (tap names, e.g. `["b16"]`) to quantise; empty = the architecture's middle layer.
    pub layers: Vec<String>,
    /// Dictionary size K: one number, or one per layer.
    pub k: PerLayer<i64>,
    /// EMA decay of counts and sums (0.7-0.9 tracks recent features).
    pub decay: f64,
    /// Weight of the commitment loss.
    pub beta: f64,
    /// `loss-only` or `forward`.
    pub mode: FqMode,
    /// In `forward` mode, G steps to spend in `loss-only` mode first.
    pub warmup: u64,
    /// `normal` or `first-batch`.
    pub init: FqInit,
    /// Also update the dictionary from the fakes in the G step.
    pub update_in_g: bool,
    /// Re-seed dead codewords (EMA count < 1e-3) from random current features.
    pub restart_dead: bool,
    /// Feature vectors per chunk of the nearest-codeword search (bounds memory at chunk x K).
    pub chunk: i64,
}

impl Default for FqConfig {
    fn default() -> Self {
        FqConfig {
            enabled: false,
            layers: Vec::new(),
            k: PerLayer::All(256),
            decay: 0.8,
            beta: 1.0,
            mode: FqMode::LossOnly,
            warmup: 0,
            init: FqInit::Normal,
            update_in_g: true,
            restart_dead: false,
            chunk: 8192,
        }
    }
}

const LAPLACE_EPS: f64 = 1e-5;
const DEAD_BELOW: f64 = 1e-3;

/// One FQ layer: codebook and EMA state for features of `dim` channels.
pub struct FqLayer {
    pub name: String,
    k: i64,
    decay: f64,
    chunk: i64,
    pub codebook: Tensor,
    pub ema_count: Tensor,
    pub ema_sum: Tensor,
    initialised: Tensor,
    first_batch: bool,
    /// Set when `first-batch` drew the codebook in the current phase.
    just_initialised: bool,
    /// Counts and sums of the current phase (summed over its batches).
    acc: Option<(Tensor, Tensor)>,
    /// With `restart_dead`: feature vectors drawn at random from the current phase's batches,
    /// which re-seed dead codewords.
    recent: Option<Tensor>,
    restart_dead: bool,
}

/// Feature map `[B, C, H, W]` (or `[B, C]`) to vectors `[B*H*W, C]`.
fn to_vectors(h: &Tensor) -> Tensor {
    match h.dim() {
        2 => h.shallow_clone(),
        _ => {
            let c = h.size()[1];
            h.permute([0, 2, 3, 1]).reshape([-1, c])
        }
    }
}

fn from_vectors(v: &Tensor, like: &Tensor) -> Tensor {
    match like.dim() {
        2 => v.shallow_clone(),
        _ => {
            let s = like.size();
            v.view([s[0], s[2], s[3], s[1]]).permute([0, 3, 1, 2])
        }
    }
}

impl FqLayer {
    pub fn new(p: nn::Path, name: &str, k: i64, dim: i64, cfg: &FqConfig) -> Self {
        let codebook = p.zeros_no_train("codebook", &[k, dim]);
        let ema_count = p.zeros_no_train("ema_count", &[k]);
        let ema_sum = p.zeros_no_train("ema_sum", &[k, dim]);
        let initialised = p.zeros_no_train("initialised", &[1]);
        tch::no_grad(|| {
            let e = Tensor::randn([k, dim], (Kind::Float, p.device()));
            codebook.shallow_clone().copy_(&e);
            ema_sum.shallow_clone().copy_(&e);
            if cfg.init == FqInit::Normal {
                let _ = initialised.shallow_clone().fill_(1.0);
            }
        });
        FqLayer {
            name: name.to_string(),
            k,
            decay: cfg.decay,
            chunk: cfg.chunk.max(1),
            codebook,
            ema_count,
            ema_sum,
            initialised,
            first_batch: cfg.init == FqInit::FirstBatch,
            just_initialised: false,
            acc: None,
            recent: None,
            restart_dead: cfg.restart_dead,
        }
    }

    /// Index of the nearest codeword for each row of `x` (`argmin ||x - e||^2`, computed as
    /// `argmin ||e||^2 - 2 x.e` in chunks of rows so memory stays at chunk x K). Always in fp32,
    /// autocast off: in bf16/fp16 the distances of near codewords round together (wrong
    /// assignments) and fp16 products of large features overflow.
    pub fn assign(&self, x: &Tensor) -> Tensor {
        crate::precision::fp32(x.device(), || self.assign_fp32(x))
    }

    fn assign_fp32(&self, x: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let x = x.to_kind(Kind::Float);
            let e2 = self
                .codebook
                .square()
                .sum_dim_intlist(1, false, Kind::Float)
                .unsqueeze(0);
            let et = self.codebook.transpose(0, 1) * -2.0;
            let n = x.size()[0];
            let parts: Vec<Tensor> = (0..n)
                .step_by(self.chunk as usize)
                .map(|start| {
                    let len = self.chunk.min(n - start);
                    (x.narrow(0, start, len).mm(&et) + &e2).argmin(1, false)
                })
                .collect();
            Tensor::cat(&parts, 0)
        })
    }

    fn maybe_init_from(&mut self, x: &Tensor) {
        if !self.first_batch || crate::util::read_f64(&self.initialised) > 0.0 {
            return;
        }
        tch::no_grad(|| {
            let n = x.size()[0];
            let idx = if n >= self.k {
                Tensor::randperm(n, (Kind::Int64, x.device())).narrow(0, 0, self.k)
            } else {
                Tensor::randint(n, [self.k], (Kind::Int64, x.device()))
            };
            let e = x.detach().to_kind(Kind::Float).index_select(0, &idx);
            self.codebook.copy_(&e);
            self.ema_sum.copy_(&e);
            let _ = self.ema_count.zero_();
            let _ = self.initialised.fill_(1.0);
            self.just_initialised = true;
        });
    }

    /// Quantises `h`; returns (straight-through output, per-position squared error mean, idx).
    /// When `record`, the assignment counts and sums join this phase's accumulators.
    pub fn quantise(&mut self, h: &Tensor, record: bool) -> (Tensor, Tensor, Tensor) {
        let x = to_vectors(h);
        self.maybe_init_from(&x);
        let idx = self.assign(&x);
        let q = self.codebook.index_select(0, &idx).to_kind(x.kind());
        if record {
            tch::no_grad(|| {
                let xd = x.detach().to_kind(Kind::Float);
                let counts = Tensor::zeros([self.k], (Kind::Float, x.device())).index_add(
                    0,
                    &idx,
                    &Tensor::ones_like(&idx).to_kind(Kind::Float),
                );
                let sums = Tensor::zeros([self.k, xd.size()[1]], (Kind::Float, x.device()))
                    .index_add(0, &idx, &xd);
                self.acc = Some(match self.acc.take() {
                    Some((c, s)) => (c + counts, s + sums),
                    None => (counts, sums),
                });
                if self.restart_dead {
                    // A random subset of all positions of all images (not the first image's).
                    let n = xd.size()[0];
                    let keep = n.min(self.k.max(256));
                    let rows = Tensor::randperm(n, (Kind::Int64, xd.device())).narrow(0, 0, keep);
                    self.recent = Some(xd.index_select(0, &rows));
                }
            });
        }
        let commitment = (&x - q.detach()).square().mean(x.kind());
        let out = &x + (&q - &x).detach();
        (from_vectors(&out, h), commitment, idx)
    }

    /// The dictionary's state tensors (codebook, EMA counts and sums, the initialised flag).
    pub fn state(&self) -> [Tensor; 4] {
        [
            self.codebook.shallow_clone(),
            self.ema_count.shallow_clone(),
            self.ema_sum.shallow_clone(),
            self.initialised.shallow_clone(),
        ]
    }

    /// The accumulated counts and sums of this phase (to be all-reduced across replicas).
    pub fn take_accumulators(&mut self) -> Option<(Tensor, Tensor)> {
        self.acc.take()
    }

    /// EMA update from (already all-reduced) counts `c[K]` and sums `s[K, C]`; returns
    /// (perplexity, dead codewords) of this update.
    pub fn ema_update(
        &mut self,
        counts: &Tensor,
        sums: &Tensor,
        restart_dead: bool,
    ) -> (Tensor, Tensor) {
        tch::no_grad(|| {
            let d = self.decay;
            let _ = self
                .ema_count
                .g_mul_scalar_(d)
                .g_add_(&(counts * (1.0 - d)));
            let _ = self.ema_sum.g_mul_scalar_(d).g_add_(&(sums * (1.0 - d)));
            let tot = self.ema_count.sum(Kind::Float);
            let smoothed =
                (&self.ema_count + LAPLACE_EPS) / (&tot + self.k as f64 * LAPLACE_EPS) * &tot;
            self.codebook
                .copy_(&(&self.ema_sum / smoothed.unsqueeze(1)));
            let dead_mask = self.ema_count.lt(DEAD_BELOW);
            let dead = dead_mask.sum(Kind::Float);
            if restart_dead {
                if let Some(recent) = &self.recent {
                    let n_dead = crate::util::read_f64(&dead) as i64;
                    if n_dead > 0 {
                        let rows = Tensor::randint(
                            recent.size()[0],
                            [n_dead],
                            (Kind::Int64, recent.device()),
                        );
                        let fresh = recent.index_select(0, &rows);
                        let where_ = dead_mask.nonzero().squeeze_dim(1);
                        let _ = self.codebook.index_copy_(0, &where_, &fresh);
                        let _ = self.ema_sum.index_copy_(0, &where_, &fresh);
                        let _ = self.ema_count.index_fill_(0, &where_, 1.0);
                    }
                }
            }
            let n = counts.sum(Kind::Float).clamp_min(1.0);
            let p = counts / n;
            let perplexity = (-(&p * (&p + 1e-10).log()).sum(Kind::Float)).exp();
            (perplexity, dead)
        })
    }
}

pub struct Fq {
    cfg: FqConfig,
    layers: Vec<FqLayer>,
    pending: Option<Tensor>,
    stats: BTreeMap<String, Tensor>,
}

impl FqConfig {
    /// The layers quantised: `layers`, or `default_layers` when it is empty.
    pub fn layer_names(&self, default_layers: &[String]) -> Vec<String> {
        if self.layers.is_empty() {
            default_layers.to_vec()
        } else {
            self.layers.clone()
        }
    }

    /// Checks the settings against D's `taps` (no network needed).
    pub fn validate(&self, taps: &[String], default_layers: &[String]) -> Result<()> {
        if !(0.0..1.0).contains(&self.decay) {
            return Err(Error::config("fq.decay", "must be in [0, 1)"));
        }
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return Err(Error::config("fq.beta", "must be a finite number >= 0"));
        }
        if self.chunk < 1 {
            return Err(Error::config("fq.chunk", "must be at least 1"));
        }
        let names = self.layer_names(default_layers);
        for name in &names {
            if !taps.contains(name) {
                return Err(Error::config(
                    "fq.layers",
                    format!("D has no layer {name:?} (valid: {})", taps.join(", ")),
                ));
            }
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        if unique.len() != names.len() {
            return Err(Error::config("fq.layers", "names a layer twice"));
        }
        if let PerLayer::Each(ks) = &self.k {
            if ks.len() != names.len() {
                return Err(Error::config(
                    "fq.k",
                    format!(
                        "{} values for {} layers ({})",
                        ks.len(),
                        names.len(),
                        names.join(", ")
                    ),
                ));
            }
        }
        for i in 0..names.len() {
            if self.k.get(i).is_some_and(|k| k < 1) {
                return Err(Error::config("fq.k", "must be at least 1"));
            }
        }
        Ok(())
    }
}

impl Fq {
    /// `tap_dims`: channels of each of D's taps (from a probe pass).
    pub fn new(
        p: &nn::Path,
        cfg: &FqConfig,
        default_layers: &[String],
        tap_dims: &BTreeMap<String, i64>,
    ) -> Result<Self> {
        let taps: Vec<String> = tap_dims.keys().cloned().collect();
        cfg.validate(&taps, default_layers)?;
        let layers = cfg
            .layer_names(default_layers)
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let k = cfg.k.get(i).expect("validated");
                FqLayer::new(p / "fq" / name.as_str(), name, k, tap_dims[name], cfg)
            })
            .collect();
        Ok(Fq {
            cfg: cfg.clone(),
            layers,
            pending: None,
            stats: BTreeMap::new(),
        })
    }

    fn updates(&self, phase: Phase) -> bool {
        phase == Phase::D || self.cfg.update_in_g
    }
}

impl Plugin for Fq {
    fn name(&self) -> &'static str {
        "fq"
    }

    fn on_tap(&mut self, layer: &str, h: Tensor, ctx: &Ctx, pass: Pass) -> Tensor {
        if pass != Pass::Clean {
            return h;
        }
        let Some(i) = self.layers.iter().position(|l| l.name == layer) else {
            return h;
        };
        let record = ctx.record && self.updates(ctx.phase);
        let (out, commitment, _) = self.layers[i].quantise(&h, record);
        let weighted = commitment * self.cfg.beta;
        if ctx.record {
            let key = format!(
                "fq/{layer}/loss_{}",
                if ctx.phase == Phase::G {
                    "g"
                } else {
                    ctx.branch.name()
                }
            );
            self.stats.insert(key, weighted.detach());
        }
        self.pending = Some(match self.pending.take() {
            Some(acc) => acc + &weighted,
            None => weighted,
        });
        let forward = self.cfg.mode == FqMode::Forward && ctx.step >= self.cfg.warmup;
        if forward {
            out
        } else {
            h
        }
    }

    fn take_loss(&mut self, _ctx: &Ctx) -> Option<Tensor> {
        if self.cfg.beta == 0.0 {
            self.pending = None;
            return None;
        }
        self.pending.take()
    }

    /// The EMA step, from counts and sums summed over every rank, so that every rank keeps the
    /// same dictionary. What is drawn per rank (a `first-batch` start, restarted codewords) is
    /// then taken from rank 0.
    fn end_phase(&mut self, _phase: Phase, comm: &Comm) -> Result<()> {
        for layer in &mut self.layers {
            if let Some((counts, sums)) = layer.take_accumulators() {
                comm.all_reduce_sum(&counts)?;
                comm.all_reduce_sum(&sums)?;
                let (perplexity, dead) = layer.ema_update(&counts, &sums, self.cfg.restart_dead);
                // Both decisions are the same on every rank (dead counts come from summed counts).
                let restarted = self.cfg.restart_dead && crate::util::read_f64(&dead) > 0.0;
                if comm.distributed() && (restarted || layer.just_initialised) {
                    comm.broadcast_all(&layer.state())?;
                }
                layer.just_initialised = false;
                self.stats
                    .insert(format!("fq/{}/perplexity", layer.name), perplexity);
                self.stats.insert(format!("fq/{}/dead", layer.name), dead);
            }
        }
        Ok(())
    }

    fn discard_phase(&mut self) {
        for layer in &mut self.layers {
            let _ = layer.take_accumulators();
            layer.just_initialised = false;
        }
    }

    fn stats(&self, out: &mut Stats) {
        for (k, v) in &self.stats {
            out.set_tensor(k.clone(), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn identical_vectors_have_perplexity_one_and_codewords_die() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = FqConfig {
            k: PerLayer::All(8),
            ..Default::default()
        };
        let mut layer = FqLayer::new(vs.root(), "b16", 8, 4, &cfg);
        let h = Tensor::ones([2, 4, 3, 3], (Kind::Float, Device::Cpu));
        for _ in 0..40 {
            let (out, _, idx) = layer.quantise(&h, true);
            assert_eq!(out.size(), h.size());
            assert_eq!(idx.unique_dim(0, false, false, false).0.size()[0], 1);
            let (c, s) = layer.take_accumulators().unwrap();
            let (perplexity, dead) = layer.ema_update(&c, &s, false);
            assert!((perplexity.double_value(&[]) - 1.0).abs() < 1e-6);
            let _ = dead;
        }
        let (c, s) = {
            let _ = layer.quantise(&h, true);
            layer.take_accumulators().unwrap()
        };
        let (_, dead) = layer.ema_update(&c, &s, false);
        assert_eq!(dead.double_value(&[]), 7.0);
    }

    #[test]
    fn chunked_assignment_equals_unchunked() {
        let vs = nn::VarStore::new(Device::Cpu);
        let a = FqLayer::new(
            vs.root() / "a",
            "x",
            16,
            5,
            &FqConfig {
                chunk: 3,
                ..Default::default()
            },
        );
        let mut b = FqLayer::new(
            vs.root() / "b",
            "x",
            16,
            5,
            &FqConfig {
                chunk: 1000,
                ..Default::default()
            },
        );
        b.codebook = a.codebook.shallow_clone();
        let x = Tensor::randn([50, 5], (Kind::Float, Device::Cpu));
        assert!(a.assign(&x).equal(&b.assign(&x)));
        let brute = (x.unsqueeze(1) - a.codebook.unsqueeze(0))
            .square()
            .sum_dim_intlist(2, false, Kind::Float)
            .argmin(1, false);
        assert!(a.assign(&x).equal(&brute));
    }

    /// issue 13: dead codewords are re-seeded from random current features of every image, not
    /// from the first image's positions.
    #[test]
    fn restart_dead_draws_from_every_image() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = FqConfig {
            restart_dead: true,
            ..Default::default()
        };
        let mut layer = FqLayer::new(vs.root(), "b16", 8, 4, &cfg);
        // Four images of 16x16 positions (1024 vectors, more than are kept); image i's features
        // all equal 10 * i, so a re-seeded codeword tells which image it came from.
        let h = Tensor::arange(4, (Kind::Float, Device::Cpu)).view([4, 1, 1, 1])
            * 10.0
            * Tensor::ones([4, 4, 16, 16], (Kind::Float, Device::Cpu));
        let _ = layer.quantise(&h, true);
        let (c, s) = layer.take_accumulators().unwrap();
        // Everything went to at most 4 codewords; the others are dead and get restarted.
        let (_, dead) = layer.ema_update(&c, &s, true);
        assert!(dead.double_value(&[]) >= 4.0);
        // Restarted codewords are the ones whose count was set to 1.
        let restarted = layer.ema_count.eq(1.0).nonzero().squeeze_dim(1);
        let origins: Vec<f64> =
            Vec::try_from(layer.codebook.select(1, 0).index_select(0, &restarted)).unwrap();
        assert_eq!(origins.len() as f64, dead.double_value(&[]));
        let from_later_images = origins.iter().filter(|&&v| v >= 9.99).count();
        assert!(from_later_images >= 2, "{origins:?}");
    }

    #[test]
    fn straight_through_gradient_is_identity() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut layer = FqLayer::new(vs.root(), "x", 4, 3, &FqConfig::default());
        let h = Tensor::randn([2, 3, 2, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let (out, _, _) = layer.quantise(&h, false);
        (out * 3.0).sum(Kind::Float).backward();
        assert!(h.grad().equal(&(h.ones_like() * 3.0)));
    }
}
