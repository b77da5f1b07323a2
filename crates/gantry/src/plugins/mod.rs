//! Discriminator plug-ins. A plug-in wraps any discriminator through its `embed`/`head` seam and
//! may: transform D's input (`augment`, e.g. DiffAugment, ADA), watch D's logits (`observe`, ADA's
//! overfitting signal), observe or replace named feature maps
//! inside `embed` (`on_tap`, e.g. FQ), replace how a batch is scored (`score`, e.g. AdaptiveMix),
//! and add loss terms (`take_loss`). [`Critic`] is D plus its plug-ins; the losses only ever talk
//! to a `Critic`, so every plug-in composes with every loss and every backbone.
//!
//! A new plug-in is one file here (with its settings type), one field of [`PluginsConfig`] with
//! its line in [`build_stack`], and one `RunConfig` field.

pub mod ada;
pub mod adaptivemix;
pub mod diffaugment;
pub mod fq;

use crate::dist::Comm;
use crate::error::{Error, Result};
use crate::models::{DataShape, Discriminator};
use crate::stats::Stats;
use ada::AdaConfig;
use adaptivemix::AdaptiveMixConfig;
use diffaugment::DiffAugmentConfig;
use fq::FqConfig;
use tch::{nn, Tensor};

/// Every plug-in's settings (each type lives in its plug-in's file; `RunConfig` holds them under
/// their own keys, `adaptivemix.*`, `fq.*`, `diffaugment.*`, `ada.*`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PluginsConfig {
    pub diffaugment: DiffAugmentConfig,
    pub ada: AdaConfig,
    pub fq: FqConfig,
    pub adaptivemix: AdaptiveMixConfig,
}

impl PluginsConfig {
    /// Checks the settings of the enabled plug-ins against D's `taps` (and the layers FQ takes
    /// when it is given none), the kind of data (`points`: 2-D points, not images) and the loss
    /// (`centred_scores`: D's scores on reals and fakes straddle 0), before anything is built.
    pub fn validate(
        &self,
        taps: &[String],
        default_fq_layers: &[String],
        points: bool,
        centred_scores: bool,
    ) -> Result<()> {
        if self.diffaugment.enabled {
            self.diffaugment.validate()?;
        }
        if self.ada.enabled {
            self.ada.validate_with(points, centred_scores)?;
        }
        if self.fq.enabled {
            self.fq.validate(taps, default_fq_layers)?;
        }
        if self.adaptivemix.enabled {
            self.adaptivemix.validate()?;
        }
        Ok(())
    }
}

/// Which network the current phase trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    D,
    G,
}

/// Whether a batch is all real or all fake (plug-ins never see a mix of the two).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Branch {
    Real,
    Fake,
}

impl Branch {
    pub fn name(self) -> &'static str {
        match self {
            Branch::Real => "real",
            Branch::Fake => "fake",
        }
    }
}

/// Which `embed` pass a tap belongs to: the clean batch, or a derived one (AdaptiveMix's mixed
/// images). Plug-ins that keep statistics (FQ) look at clean passes only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Clean,
    Derived,
}

/// Where in training a score is computed.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    pub phase: Phase,
    pub branch: Branch,
    pub step: u64,
    /// False for extra passes (penalties, evaluation) that must not change plug-in state.
    pub record: bool,
}

/// D's verdict on one batch: per-sample logits and the plug-ins' extra loss (a scalar, already
/// weighted), if any.
pub struct Scored {
    pub logits: Tensor,
    pub extra_loss: Option<Tensor>,
}

/// Runs `embed` with the tap hooks of the other plug-ins.
pub type EmbedFn<'a> = dyn FnMut(&Tensor, Pass) -> Tensor + 'a;

pub trait Plugin: Send {
    fn name(&self) -> &'static str;
    /// Transforms the batch before D sees it (applied to real and fake alike).
    fn augment(&mut self, x: Tensor, _ctx: &Ctx) -> Tensor {
        x
    }
    /// Sees D's final logits for every batch the critic scores.
    fn observe(&mut self, _logits: &Tensor, _ctx: &Ctx) {}
    /// Called before each training step with how far `train.lr_schedule` has moved (0 to 1),
    /// for plug-ins with scheduled values (ADA's scheduled p).
    fn begin_step(&mut self, _progress: f64) {}
    /// Sees the feature map at `layer` during `embed`; returns what continues through D.
    fn on_tap(&mut self, _layer: &str, h: Tensor, _ctx: &Ctx, _pass: Pass) -> Tensor {
        h
    }
    /// True if this plug-in replaces the plain `head(embed(x))` score (at most one may).
    fn scores(&self) -> bool {
        false
    }
    /// The replacement score; only called when `scores()` is true.
    fn score(
        &mut self,
        _d: &dyn Discriminator,
        _x: &Tensor,
        _labels: Option<&Tensor>,
        _ctx: &Ctx,
        _embed: &mut EmbedFn<'_>,
    ) -> Scored {
        unreachable!("score() called on a plug-in whose scores() is false")
    }
    /// Loss terms accumulated since the last call (e.g. FQ's commitment loss), weighted.
    fn take_loss(&mut self, _ctx: &Ctx) -> Option<Tensor> {
        None
    }
    /// Called once the phase has scored every batch and its gradients are finite (FQ updates its
    /// dictionary here). State that must stay equal on every rank of a data-parallel job is
    /// combined through `comm` (a single process's `comm` does nothing).
    fn end_phase(&mut self, _phase: Phase, _comm: &Comm) -> Result<()> {
        Ok(())
    }
    /// Called instead of `end_phase` when the phase's step was skipped (fp16 overflow): drops
    /// what the phase accumulated.
    fn discard_phase(&mut self) {}
    /// Diagnostics of the latest phase, under `name/...` keys.
    fn stats(&self, _out: &mut Stats) {}
    /// The plug-in's variables were overwritten (a checkpoint restored): drop host copies.
    fn state_restored(&mut self) {}
}

/// D and its plug-ins, in the order they apply.
pub struct Critic {
    pub d: Box<dyn Discriminator>,
    pub plugins: Vec<Box<dyn Plugin>>,
}

impl Critic {
    pub fn new(d: Box<dyn Discriminator>, plugins: Vec<Box<dyn Plugin>>) -> Result<Self> {
        let scorers: Vec<&str> = plugins
            .iter()
            .filter(|p| p.scores())
            .map(|p| p.name())
            .collect();
        if scorers.len() > 1 {
            return Err(Error::config(
                "plugins",
                format!(
                    "{} each replace D's score; enable at most one",
                    scorers.join(" and ")
                ),
            ));
        }
        Ok(Critic { d, plugins })
    }

    /// Scores one batch (all real or all fake) the way the enabled plug-ins prescribe.
    pub fn score(&mut self, x: &Tensor, labels: Option<&Tensor>, ctx: &Ctx) -> Scored {
        let mut x = x.shallow_clone();
        for p in self.plugins.iter_mut() {
            x = p.augment(x, ctx);
        }
        let d = self.d.as_ref();
        let train = true;
        let scorer = self.plugins.iter().position(|p| p.scores());
        let mut scored = match scorer {
            None => {
                let plugins = &mut self.plugins;
                let f = d.embed_tapped(&x, train, &mut |name, h| {
                    plugins
                        .iter_mut()
                        .fold(h, |h, p| p.on_tap(name, h, ctx, Pass::Clean))
                });
                Scored {
                    logits: d.head(&f, labels, train),
                    extra_loss: None,
                }
            }
            Some(i) => {
                let (before, rest) = self.plugins.split_at_mut(i);
                let (scorer, after) = rest.split_first_mut().expect("index from position()");
                let mut embed = |x: &Tensor, pass: Pass| {
                    d.embed_tapped(x, train, &mut |name, h| {
                        let h = before
                            .iter_mut()
                            .fold(h, |h, p| p.on_tap(name, h, ctx, pass));
                        after
                            .iter_mut()
                            .fold(h, |h, p| p.on_tap(name, h, ctx, pass))
                    })
                };
                scorer.score(d, &x, labels, ctx, &mut embed)
            }
        };
        for p in self.plugins.iter_mut() {
            p.observe(&scored.logits, ctx);
            if let Some(l) = p.take_loss(ctx) {
                scored.extra_loss = Some(match scored.extra_loss.take() {
                    Some(acc) => acc + l,
                    None => l,
                });
            }
        }
        scored
    }

    /// The plain critic `head(embed(x))` without plug-ins (gradient penalty, evaluation).
    pub fn plain(&self, x: &Tensor, labels: Option<&Tensor>) -> Tensor {
        self.d.forward(x, labels, true)
    }

    pub fn begin_step(&mut self, progress: f64) {
        for p in self.plugins.iter_mut() {
            p.begin_step(progress);
        }
    }

    pub fn end_phase(&mut self, phase: Phase, comm: &Comm) -> Result<()> {
        for p in self.plugins.iter_mut() {
            p.end_phase(phase, comm)?;
        }
        Ok(())
    }

    pub fn discard_phase(&mut self) {
        for p in self.plugins.iter_mut() {
            p.discard_phase();
        }
    }

    pub fn state_restored(&mut self) {
        for p in self.plugins.iter_mut() {
            p.state_restored();
        }
    }

    pub fn stats(&self, out: &mut Stats) {
        for p in &self.plugins {
            p.stats(out);
        }
    }
}

/// Channels of each of D's taps, found by one probe pass in inference mode (no state changes).
pub fn tap_dims(
    d: &dyn Discriminator,
    shape: &DataShape,
    device: tch::Device,
) -> std::collections::BTreeMap<String, i64> {
    let mut dims = std::collections::BTreeMap::new();
    let x = if shape.resolution == 1 {
        Tensor::zeros([2, shape.channels, 1, 1], (tch::Kind::Float, device))
    } else {
        Tensor::zeros(
            [2, shape.channels, shape.resolution, shape.resolution],
            (tch::Kind::Float, device),
        )
    };
    let _features = tch::no_grad(|| {
        d.embed_tapped(&x, false, &mut |name, h| {
            dims.insert(name.to_string(), h.size()[1]);
            h
        })
    });
    dims
}

/// Builds the enabled plug-ins, in application order. State that must be checkpointed (FQ
/// dictionaries) lives under `p`, a VarStore of its own that no optimizer sees.
pub fn build_stack(
    p: &nn::Path,
    cfg: &PluginsConfig,
    d: &dyn Discriminator,
    shape: &DataShape,
    default_fq_layers: &[String],
) -> Result<Vec<Box<dyn Plugin>>> {
    let mut stack: Vec<Box<dyn Plugin>> = Vec::new();
    if cfg.diffaugment.enabled {
        stack.push(Box::new(diffaugment::DiffAugment::new(&cfg.diffaugment)?));
    }
    if cfg.ada.enabled {
        stack.push(Box::new(ada::Ada::new(
            &(p / "ada"),
            &cfg.ada,
            shape.channels,
        )?));
    }
    if cfg.fq.enabled {
        stack.push(Box::new(fq::Fq::new(
            p,
            &cfg.fq,
            default_fq_layers,
            &tap_dims(d, shape, p.device()),
        )?));
    }
    if cfg.adaptivemix.enabled {
        stack.push(Box::new(adaptivemix::AdaptiveMix::new(&cfg.adaptivemix)?));
    }
    Ok(stack)
}
