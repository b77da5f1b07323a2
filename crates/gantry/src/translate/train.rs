//! When a U-GAT-IT iteration runs (`UGATIT.py`'s `train` loop): batches of both domains, the D
//! step, the G step, the rho clip, the learning-rate decay; logs, sample grids, checkpoints with
//! everything exact resume needs (both generators, the four critics, the plug-ins' state, both
//! Adams, both loaders' positions), KID x 100 on the test images and the best checkpoint.
//!
//! Departures: translations are made once per iteration (see [`super::objective`]); the random
//! resize-crop enlarges the loaded batch bilinearly by `crop_margin`/256 of its side and crops
//! each image at a random offset (the reference resizes the original file to 286 before its
//! crop); a non-finite loss stops the run (the last checkpoint stays).

use super::nets::{clip_rho, Translated, UgatitConfig, UgatitDiscriminator, UgatitGenerator};
use super::objective::{self, Critics};
use super::{PluginsOn, TranslateConfig};
use crate::device::{seed_torch, Purpose};
use crate::error::{Error, Result};
use crate::models::DataShape;
use crate::plugins::{self, Critic, Phase};
pub use crate::rundir::start::Start;
use crate::rundir::start::{best_at_start, enter, Task};
use crate::rundir::{checkpoint, log::MetricsLog};
use crate::stats::Stats;
use crate::train::adam::Adam;
use crate::util::TaskConfig;
use gantry_data::{Dataset, Loader, Position, Split};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

/// What `--set` may change on resume.
pub const RESUME_SAFE: &[&str] = &[
    "train.steps",
    "train.threads",
    "train.device",
    "train.deterministic",
    "train.tensorboard",
    "train.log_every",
    "train.sample_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
];

/// What a translation run's directory holds.
const TASK: Task = Task {
    arch_prefix: "translate/",
    what: "a translation run",
    resume_safe: RESUME_SAFE,
};

/// Reported after every logged step.
pub struct Progress {
    pub step: u64,
    pub total: u64,
    pub seconds: f64,
    pub d_loss: f64,
    pub g_loss: f64,
}

pub struct Summary {
    pub steps: u64,
    pub stopped: bool,
    pub checkpoint: PathBuf,
    /// The last evaluation's KID x 100 (A->B, B->A), when evaluated.
    pub kid: Option<(f64, f64)>,
}

/// Opens one domain: a data spec, optionally with a `#classes` filter (then labels are read).
pub fn open_domain(
    spec: &str,
    split: Split,
    resolution: u32,
    hflip: bool,
    workers: usize,
) -> Result<Arc<dyn Dataset>> {
    if spec.contains('#') {
        return crate::classify::data::open(spec, split, resolution, None, hflip, None, workers);
    }
    let mut cfg = gantry_data::DataConfig::from_spec(spec)?;
    cfg.resolution = resolution;
    cfg.split = split;
    cfg.hflip = hflip;
    cfg.workers = workers.max(1);
    if cfg.kind.is_points() {
        return Err(Error::config(
            "data",
            format!("{spec} is a set of 2-D points, not images"),
        ));
    }
    Ok(gantry_data::open(&cfg)?)
}

/// The networks, critics and optimisers of a run.
pub struct Translator {
    pub cfg: TranslateConfig,
    pub device: Device,
    pub channels: i64,
    pub g_vs: nn::VarStore,
    pub d_vs: nn::VarStore,
    pub plugins_vs: nn::VarStore,
    pub g_ab: UgatitGenerator,
    pub g_ba: UgatitGenerator,
    pub critics: Critics,
    opt_g: Adam,
    opt_d: Adam,
}

/// What one iteration leaves for logging: the loss parts (on the device) and the rate.
pub struct StepParts {
    pub parts: Vec<(String, Tensor)>,
    pub lr: f64,
}

impl Translator {
    /// Builds everything from the configuration (seeded: the same seed gives the same weights).
    pub fn new(cfg: &TranslateConfig, channels: i64, device: Device) -> Result<Self> {
        seed_torch(cfg.train.seed, 0, Purpose::Init, 0);
        // Drawn on the CPU: a seed gives the same initial weights on every device.
        let ([g_vs, d_vs, plugins_vs], (g_ab, g_ba, critics)) =
            crate::nn::build_with_cpu_draws(device, |vs| Self::build(cfg, channels, vs))?;
        let t = &cfg.train;
        let opt_g = Adam::new(&g_vs, t.lr, t.betas, 1e-8).with_weight_decay(t.weight_decay);
        let opt_d = Adam::new(&d_vs, t.lr, t.betas, 1e-8).with_weight_decay(t.weight_decay);
        Ok(Translator {
            cfg: cfg.clone(),
            device,
            channels,
            g_vs,
            d_vs,
            plugins_vs,
            g_ab,
            g_ba,
            critics,
            opt_g,
            opt_d,
        })
    }

    /// The two generators and four critics in stores (G, D, plug-ins).
    fn build(
        cfg: &TranslateConfig,
        channels: i64,
        [g_vs, d_vs, plugins_vs]: &[nn::VarStore; 3],
    ) -> Result<(UgatitGenerator, UgatitGenerator, Critics)> {
        let size = i64::from(cfg.data.resolution);
        let m = &cfg.model;
        let g_ab = UgatitGenerator::new(&(g_vs.root() / "g_ab"), m, channels, size);
        let g_ba = UgatitGenerator::new(&(g_vs.root() / "g_ba"), m, channels, size);
        let shape = DataShape::image(channels, size, None);
        let all = cfg.plugins();
        let mut no_fq = all.clone();
        no_fq.fq.enabled = false;
        let default_fq = cfg.default_fq_layers();
        let critic = |name: &str, layers: i64, global: bool| -> Result<Critic> {
            let d = UgatitDiscriminator::new(&(d_vs.root() / name), m.ch, layers, channels, size);
            let stack = match (global, cfg.train.plugins_on) {
                (true, _) => plugins::build_stack(
                    &(plugins_vs.root() / name),
                    &all,
                    &d,
                    &shape,
                    &default_fq,
                )?,
                (false, PluginsOn::All) => {
                    plugins::build_stack(&(plugins_vs.root() / name), &no_fq, &d, &shape, &[])?
                }
                (false, PluginsOn::Global) => Vec::new(),
            };
            Critic::new(Box::new(d), stack)
        };
        let critics = Critics {
            global_a: critic("ga", m.global_layers, true)?,
            global_b: critic("gb", m.global_layers, true)?,
            local_a: critic("la", m.local_layers, false)?,
            local_b: critic("lb", m.local_layers, false)?,
        };
        Ok((g_ab, g_ba, critics))
    }

    /// The learning rate of (0-based) iteration `step`: constant, then with `decay` falling
    /// linearly to 0 over the second half (the reference subtracts lr / (steps / 2) per
    /// iteration after the first half).
    pub fn lr_at(&self, step: u64) -> f64 {
        let t = &self.cfg.train;
        let half = t.steps / 2;
        if !t.decay || half == 0 || step < half {
            return t.lr;
        }
        t.lr * (1.0 - (step + 1 - half) as f64 / half as f64).max(0.0)
    }

    /// One iteration on batches `real_a`, `real_b`; returns the logged parts of both losses,
    /// still on the device ([`Translator::stats`] reads them, on logging steps only).
    pub fn step(&mut self, step: u64, real_a: &Tensor, real_b: &Tensor) -> Result<StepParts> {
        let lr = self.lr_at(step);
        self.opt_g.set_lr(lr);
        self.opt_d.set_lr(lr);
        let w = self.cfg.loss.clone();
        let (a2b, b2a) = objective::translate(&self.g_ab, &self.g_ba, real_a, real_b);
        let d = objective::d_phase(
            &mut self.critics,
            real_a,
            real_b,
            &a2b.image,
            &b2a.image,
            &w,
            step,
        );
        finite(&d.total, "D", step)?;
        let grads = self.opt_d.gradients(&d.total);
        self.opt_d.step(&grads);
        for c in self.critics_mut() {
            c.end_phase(Phase::D, &crate::dist::Comm::single())?;
        }
        let g = objective::g_phase(
            &mut self.critics,
            &self.g_ab,
            &self.g_ba,
            real_a,
            real_b,
            &a2b,
            &b2a,
            &w,
            step,
        );
        finite(&g.total, "G", step)?;
        let grads = self.opt_g.gradients(&g.total);
        self.opt_g.step(&grads);
        clip_rho(&self.g_vs);
        for c in self.critics_mut() {
            c.end_phase(Phase::G, &crate::dist::Comm::single())?;
        }
        let mut parts = vec![
            ("loss/d".to_string(), d.total.detach()),
            ("loss/g".to_string(), g.total.detach()),
        ];
        parts.extend(d.parts.into_iter().chain(g.parts));
        Ok(StepParts { parts, lr })
    }

    /// A step's statistics: its parts read in one host read, the learning rate, and each
    /// critic's plug-in statistics.
    pub fn stats(&mut self, step: &StepParts) -> Stats {
        let mut stats = Stats::read_all(step.parts.iter().map(|(k, v)| (k.as_str(), v)));
        stats.set("lr", step.lr);
        // Per critic (the global ones of both domains carry their own plug-in state).
        for (name, c) in ["ga", "gb", "la", "lb"].into_iter().zip(self.critics_mut()) {
            let mut own = Stats::default();
            c.stats(&mut own);
            for (k, v) in own.iter() {
                stats.set(format!("{name}/{k}"), *v);
            }
        }
        stats
    }

    fn critics_mut(&mut self) -> [&mut Critic; 4] {
        let c = &mut self.critics;
        [
            &mut c.global_a,
            &mut c.global_b,
            &mut c.local_a,
            &mut c.local_b,
        ]
    }

    /// Translates `x` (`[-1, 1]`) A->B (`a2b`) or B->A, without a graph.
    pub fn translate(&self, x: &Tensor, a2b: bool) -> Translated {
        tch::no_grad(|| {
            if a2b {
                self.g_ab.forward(x)
            } else {
                self.g_ba.forward(x)
            }
        })
    }

    fn stores(&self) -> Vec<(&'static str, checkpoint::Store)> {
        let mut adam = self.opt_g.state("g");
        adam.extend(self.opt_d.state("d"));
        vec![
            ("g", checkpoint::store_of(&self.g_vs)),
            ("d", checkpoint::store_of(&self.d_vs)),
            ("plugins", checkpoint::store_of(&self.plugins_vs)),
            ("adam", adam),
        ]
    }

    /// Restores weights, plug-in state and both Adams from checkpoint `ckpt`.
    pub fn restore(&mut self, ckpt: &Path) -> Result<()> {
        for (name, vs) in [
            ("g", &self.g_vs),
            ("d", &self.d_vs),
            ("plugins", &self.plugins_vs),
        ] {
            let saved = checkpoint::read_store(ckpt, name)?;
            checkpoint::restore_into(
                &vs.variables(),
                &saved,
                &ckpt.join(format!("{name}.safetensors")),
            )?;
        }
        self.critics.state_restored();
        let file = ckpt.join("adam.safetensors");
        let adam = checkpoint::read_store(ckpt, "adam")?;
        self.opt_g.load_state(&adam, "g", &file)?;
        self.opt_d.load_state(&adam, "d", &file)
    }

    /// Snapshot of every tensor a checkpoint holds (for tests of exact resume).
    pub fn snapshot(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (store, tensors) in self.stores() {
            for (k, t) in tensors {
                out.push((format!("{store}/{k}"), t.detach().copy()));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

fn finite(loss: &Tensor, what: &str, step: u64) -> Result<()> {
    let v = crate::util::read_f64(loss);
    if v.is_finite() {
        return Ok(());
    }
    Err(Error::NonFinite {
        step,
        what: format!("{what} loss ({v}; the last checkpoint is intact)"),
    })
}

/// The reference's RandomHorizontalFlip is the loader's; this is its Resize + RandomCrop:
/// enlarge the batch by `margin`/256 of its side, crop each image at a random offset.
fn resize_crop(x: &Tensor, margin: u32) -> Tensor {
    let (b, _, h, w) = x.size4().expect("[B, C, H, W]");
    let extra = ((margin as f64 / 256.0) * h as f64).round() as i64;
    if extra == 0 {
        return x.shallow_clone();
    }
    let big = x.upsample_bilinear2d([h + extra, w + extra], false, None, None);
    let offs = Tensor::randint(extra + 1, [b, 2], (Kind::Int64, Device::Cpu));
    let crops: Vec<Tensor> = (0..b)
        .map(|i| {
            let (oy, ox) = (offs.int64_value(&[i, 0]), offs.int64_value(&[i, 1]));
            big.get(i).narrow(1, oy, h).narrow(2, ox, w)
        })
        .collect();
    Tensor::stack(&crops, 0)
}

fn batch_tensor(loader: &mut Loader, device: Device) -> Result<Tensor> {
    let b = loader.next_batch()?;
    let shape: Vec<i64> = b.shape.iter().map(|&v| v as i64).collect();
    // From pinned memory without blocking on CUDA, as GAN training's batches.
    crate::precision::to_device_pinned(
        &Tensor::from_slice(&b.images).view(shape.as_slice()),
        device,
    )
}

/// A batch of the first `n` images of `ds` on `device`, in [-1, 1].
pub fn first_images(ds: &dyn Dataset, n: usize, device: Device) -> Result<Tensor> {
    let [c, h, w] = ds.sample_shape();
    let n = n.min(ds.len());
    let mut buf = vec![0f32; n * c * h * w];
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    for (i, chunk) in buf.chunks_mut(c * h * w).enumerate() {
        ds.load_into(i, chunk, &mut rng)?;
    }
    Ok(Tensor::from_slice(&buf)
        .view([n as i64, c as i64, h as i64, w as i64])
        .to_device(device))
}

/// Rows of `[input, translation, cycle reconstruction, CAM heat-map]` for each test image of
/// both directions (A->B rows first), in [-1, 1].
pub fn sample_grid(tr: &Translator, test_a: &Tensor, test_b: &Tensor) -> Tensor {
    let mut rows = Vec::new();
    for (x, a2b) in [(test_a, true), (test_b, false)] {
        let fwd = tr.translate(x, a2b);
        let back = tr.translate(&fwd.image, !a2b);
        let (h, w) = (x.size()[2], x.size()[3]);
        let hm = fwd.heatmap.upsample_bilinear2d([h, w], false, None, None);
        let lo = hm.amin(&[1i64, 2, 3][..], true);
        let hi = hm.amax(&[1i64, 2, 3][..], true);
        let hm = ((hm - &lo) / (hi - lo + 1e-8) * 2.0 - 1.0).expand([-1, x.size()[1], h, w], false);
        for i in 0..x.size()[0] {
            for t in [x, &fwd.image, &back.image, &hm] {
                rows.push(t.get(i));
            }
        }
    }
    Tensor::stack(&rows, 0)
}

/// Writes [`sample_grid`]'s rows, four images wide.
fn save_grid(grid: &Tensor, path: &Path) -> Result<()> {
    let x = grid
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    let s = x.size();
    let values: Vec<f32> =
        Vec::try_from(x.flatten(0, -1)).map_err(|e: tch::TchError| Error::Torch(e.to_string()))?;
    let shape = [s[0] as usize, s[1] as usize, s[2] as usize, s[3] as usize];
    gantry_data::image_io::save_grid(&values, shape, 4, path)?;
    Ok(())
}

/// KID x 100 (mean) between `translated` and `target` images, both in [-1, 1].
fn kid100(
    ex: &dyn gantry_metrics::FeatureExtractor,
    translated: &Tensor,
    target: &Tensor,
    subset: usize,
) -> Result<f64> {
    let feats = |x: &Tensor| -> Result<Tensor> {
        let mut parts = Vec::new();
        for chunk in x.split(50, 0) {
            let q = gantry_metrics::quantize(&chunk).to_device(Device::Cpu);
            parts.push(ex.extract(&q).map_err(crate::eval::metrics_err)?.pool);
        }
        Ok(Tensor::cat(&parts, 0).to_kind(Kind::Double))
    };
    let (a, b) = (feats(translated)?, feats(target)?);
    let n = a.size()[0].min(b.size()[0]) as usize;
    let opts = gantry_metrics::KidOptions {
        subset_size: subset.min(n),
        ..Default::default()
    };
    let kid = gantry_metrics::kernel_inception_distance(&a, &b, &opts)
        .map_err(crate::eval::metrics_err)?;
    Ok(kid.mean * 100.0)
}

/// Trains a translation run into `run_dir`.
pub fn train(
    cfg: &TranslateConfig,
    run_dir: &Path,
    start: Start,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Summary> {
    let (cfg, resume, _lock) = enter(&TASK, cfg, run_dir, start)?;
    cfg.validate()?;
    let t = cfg.train.clone();
    let d = &cfg.data;
    // Everything checkable before work starts: the four parts, their shapes, the evaluator.
    let specs = cfg.specs()?;
    let mut parts = Vec::new();
    for (i, (spec, split)) in specs.iter().enumerate() {
        let train = i < 2;
        parts.push(open_domain(
            spec,
            *split,
            d.resolution,
            d.hflip && train,
            d.workers,
        )?);
    }
    let names = [
        "domain A (training)",
        "domain B (training)",
        "domain A (test)",
        "domain B (test)",
    ];
    let channels = parts[0].sample_shape()[0];
    for (ds, name) in parts.iter().zip(names) {
        if ds.is_empty() {
            return Err(Error::config(
                "data",
                format!("{name}: {} has no images", ds.describe()),
            ));
        }
        if ds.sample_shape()[0] != channels {
            return Err(Error::config(
                "data",
                format!(
                    "{name} has {}-channel images, domain A (training) {channels}-channel: both domains need the same channels",
                    ds.sample_shape()[0]
                ),
            ));
        }
    }
    if channels != 1 && channels != 3 {
        return Err(Error::config(
            "data",
            format!("images have {channels} channels; U-GAT-IT takes grey or RGB"),
        ));
    }
    let features = (!cfg.eval.features.is_empty())
        .then(|| cfg.features())
        .transpose()?;
    if let Some(f) = &features {
        crate::eval::EvalConfig {
            features: f.clone(),
            weights: cfg.eval.weights.clone(),
            ..Default::default()
        }
        .check_files(false)?;
    }
    // Held out of each training domain (un-flipped, never trained on): what chooses the best
    // checkpoint, so that the test split only gives the final numbers.
    let mut held: Vec<Arc<dyn Dataset>> = Vec::new();
    if features.is_some() && cfg.eval.holdout > 0.0 {
        for (i, (spec, split)) in specs.iter().take(2).enumerate() {
            let plain = open_domain(spec, *split, d.resolution, false, d.workers)?;
            let named = |e: Error| match e {
                Error::Config { msg, .. } => {
                    Error::config("eval.holdout", format!("{}: {msg}", names[i]))
                }
                other => other,
            };
            let (train, _) =
                crate::classify::data::train_val(parts[i].clone(), cfg.eval.holdout, t.seed)
                    .map_err(named)?;
            let (_, val) =
                crate::classify::data::train_val(plain, cfg.eval.holdout, t.seed).map_err(named)?;
            if val.len() < 2 {
                return Err(Error::config(
                    "eval.holdout",
                    format!(
                        "holds out {} image(s) of {}; KID needs at least 2 (raise it, or 0 for no held-out part and no best checkpoint)",
                        val.len(),
                        names[i]
                    ),
                ));
            }
            parts[i] = train;
            held.push(val);
        }
    }
    crate::device::set_threads(t.threads);
    let device = t.device.open()?;
    crate::device::set_numerics(false, false, t.deterministic);
    let mut tr = crate::error::catch_alloc(
        || {
            format!(
                "while building the networks ({})",
                crate::util::size_settings(&cfg.to_toml(), &["model", "fq"])
            )
        },
        || Translator::new(&cfg, channels as i64, device),
    )?;
    let (mut step, mut pos_a, mut pos_b, mut wall_before) =
        (0u64, Position::default(), Position::default(), 0.0);
    if let Some((ckpt, meta)) = &resume {
        tr.restore(ckpt)?;
        step = meta.step;
        pos_a = meta.loader;
        let adam = checkpoint::read_store(ckpt, "adam")?;
        let get = |k: &str| {
            adam.get(k)
                .map(|t| t.int64_value(&[]) as u64)
                .ok_or_else(|| Error::checkpoint(ckpt, format!("missing {k}")))
        };
        pos_b = Position {
            epoch: get("loader_b.epoch")?,
            index: get("loader_b.index")?,
        };
        wall_before = meta.wall_seconds;
    }
    let batch = t.batch_size.min(parts[0].len()).min(parts[1].len());
    let mut loader_a = Loader::new(parts[0].clone(), batch, t.seed, pos_a, d.workers, 4)?;
    let mut loader_b = Loader::new(
        parts[1].clone(),
        batch,
        t.seed ^ 0x0005_EEDB,
        pos_b,
        d.workers,
        4,
    )?;
    let grid_a = first_images(parts[2].as_ref(), t.grid, device)?;
    let grid_b = first_images(parts[3].as_ref(), t.grid, device)?;
    let extractor = match &features {
        Some(f) => Some(crate::eval::extractor(
            f,
            cfg.eval.weights.as_deref(),
            gantry_metrics::Preprocessing::PytorchFid,
            crate::precision::Precision::Fp32,
            device,
        )?),
        None => None,
    };
    let eval_n = if cfg.eval.n == 0 {
        usize::MAX
    } else {
        cfg.eval.n
    };
    std::fs::create_dir_all(run_dir.join("samples")).map_err(|e| Error::io(run_dir, e))?;
    crate::util::write_atomic(&run_dir.join("config.toml"), cfg.to_toml().as_bytes())?;
    let mut log = MetricsLog::open(&run_dir.join("metrics.jsonl"), step, t.tensorboard)?;
    if step == 0 {
        log.text(0, "config", &format!("```toml\n{}```", cfg.to_toml()))?;
    }
    let mut best = best_at_start(run_dir, "eval/kid", resume.is_some());
    let t0 = Instant::now();
    let save = |tr: &Translator, step: u64, a: &Loader, b: &Loader, wall: f64| -> Result<PathBuf> {
        let meta = checkpoint::Meta::one_process(
            step,
            batch,
            a.position(),
            wall,
            "translate/ugatit".into(),
            tr.cfg.to_toml(),
        );
        let mut stores = tr.stores();
        let pb = b.position();
        for (name, s) in stores.iter_mut() {
            if *name == "adam" {
                s.push(("loader_b.epoch".into(), Tensor::from(pb.epoch as i64)));
                s.push(("loader_b.index".into(), Tensor::from(pb.index as i64)));
            }
        }
        let refs: Vec<(&str, checkpoint::Store)> = stores.into_iter().collect();
        let path = checkpoint::save(run_dir, &meta, &refs)?;
        checkpoint::prune(run_dir, t.keep_checkpoints);
        Ok(path)
    };
    let mut last_ckpt = None;
    let mut kid = None;
    let mut stopped = false;
    let mut seen_notes = std::collections::HashSet::new();
    while step < t.steps {
        if stop.load(Ordering::SeqCst) {
            stopped = true;
            break;
        }
        seed_torch(t.seed, step, Purpose::Translate, 0);
        let a = batch_tensor(&mut loader_a, device)?;
        let b = batch_tensor(&mut loader_b, device)?;
        let (a, b) = (
            resize_crop(&a, d.crop_margin),
            resize_crop(&b, d.crop_margin),
        );
        let done = tr.step(step, &a, &b)?;
        step += 1;
        let last = step == t.steps;
        if step % t.log_every == 0 || last {
            let mut stats = tr.stats(&done);
            // Training time so far (the experiment report's wall-time column).
            stats.set("wall_s", wall_before + t0.elapsed().as_secs_f64());
            log.write(step, &stats)?;
            progress(&Progress {
                step,
                total: t.steps,
                seconds: t0.elapsed().as_secs_f64(),
                d_loss: stats.get("loss/d").unwrap_or(f64::NAN),
                g_loss: stats.get("loss/g").unwrap_or(f64::NAN),
            });
        }
        if (t.sample_every > 0 && step % t.sample_every == 0) || last {
            let path = run_dir.join("samples").join(format!("{step:07}.png"));
            save_grid(&sample_grid(&tr, &grid_a, &grid_b), &path)?;
            log.image(step, "samples", &path)?;
        }
        let evaluate =
            extractor.is_some() && ((cfg.eval.every > 0 && step % cfg.eval.every == 0) || last);
        let checkpoint_now =
            (t.checkpoint_every > 0 && step % t.checkpoint_every == 0) || last || evaluate;
        if checkpoint_now {
            let wall = wall_before + t0.elapsed().as_secs_f64();
            let path = save(&tr, step, &loader_a, &loader_b, wall)?;
            last_ckpt = Some(path);
        }
        if let (true, Some(ex)) = (evaluate, &extractor) {
            let kids = |a: &dyn Dataset, b: &dyn Dataset| -> Result<(f64, f64)> {
                let n = eval_n.min(a.len()).min(b.len());
                let (ta, tb) = (first_images(a, n, device)?, first_images(b, n, device)?);
                let a2b = tr.translate(&ta, true).image;
                let b2a = tr.translate(&tb, false).image;
                Ok((
                    kid100(ex.as_ref(), &a2b, &tb, cfg.eval.kid_subset_size)?,
                    kid100(ex.as_ref(), &b2a, &ta, cfg.eval.kid_subset_size)?,
                ))
            };
            let mut s = Stats::default();
            if let [ha, hb] = held.as_slice() {
                let (k_ab, k_ba) = kids(ha.as_ref(), hb.as_ref())?;
                s.set("eval/kid_a2b", k_ab);
                s.set("eval/kid_b2a", k_ba);
                s.set("eval/kid", (k_ab + k_ba) / 2.0);
                let mean = (k_ab + k_ba) / 2.0;
                if best.is_none_or(|b| mean < b) {
                    best = Some(mean);
                    if let Some(ckpt) = &last_ckpt {
                        checkpoint::mark_best(run_dir, ckpt, "eval/kid", mean, step)?;
                    }
                }
            }
            // The test split: at the end only, never for choosing.
            if last {
                let (k_ab, k_ba) = kids(parts[2].as_ref(), parts[3].as_ref())?;
                s.set("eval/test_kid_a2b", k_ab);
                s.set("eval/test_kid_b2a", k_ba);
                s.set("eval/test_kid", (k_ab + k_ba) / 2.0);
                kid = Some((k_ab, k_ba));
            }
            log.write(step, &s)?;
        }
        // What the data sets noticed while loading (a first non-square image, ...): in the log
        // and on stderr as GAN training writes it, each text once (the held-out part is a second
        // view of a training domain's files, and may notice the same).
        for note in parts.iter().chain(&held).flat_map(|ds| ds.take_notes()) {
            if seen_notes.insert(note.clone()) {
                log.event(step, "note", &note)?;
                eprintln!("gantry: warning: {note}");
            }
        }
    }
    if stopped {
        let wall = wall_before + t0.elapsed().as_secs_f64();
        last_ckpt = Some(save(&tr, step, &loader_a, &loader_b, wall)?);
    }
    Ok(Summary {
        steps: step,
        stopped,
        checkpoint: last_ckpt.unwrap_or_else(|| run_dir.to_path_buf()),
        kid,
    })
}

/// A trained translation run, loaded for `gantry translate`.
pub fn load(run: &Path, device: Option<Device>) -> Result<Translator> {
    let ckpt = {
        let best = checkpoint::checkpoints_dir(run).join("best");
        if best.join("meta.json").exists() {
            best
        } else {
            checkpoint::resolve(run)?
        }
    };
    let meta = checkpoint::read_meta(&ckpt)?;
    if meta.arch != "translate/ugatit" {
        return Err(Error::checkpoint(
            &ckpt,
            format!("is a {} checkpoint, not a translation run", meta.arch),
        ));
    }
    let cfg = TranslateConfig::from_toml(&meta.config, &ckpt.display().to_string())?;
    let g = checkpoint::read_store(&ckpt, "g")?;
    let channels = g
        .get("g_ab.DownBlock.1.weight")
        .map(|w| w.size()[1])
        .ok_or_else(|| Error::checkpoint(&ckpt, "has no g_ab.DownBlock.1.weight"))?;
    let device = match device {
        Some(d) => d,
        None => cfg.train.device.open()?,
    };
    let mut tr = Translator::new(&cfg, channels, device)?;
    tr.restore(&ckpt)?;
    Ok(tr)
}

/// The two generators of a translation model, for inference (`gantry translate`): a run's, or
/// imported ones (`crate::interop`), which need no critics.
pub struct Generators {
    pub resolution: i64,
    pub channels: i64,
    pub device: Device,
    _vs: nn::VarStore,
    g_ab: UgatitGenerator,
    g_ba: UgatitGenerator,
}

impl Generators {
    /// A run's generators (its best checkpoint, else its latest).
    pub fn of_run(run: &Path, device: Option<Device>) -> Result<Self> {
        let tr = load(run, device)?;
        Ok(Generators {
            resolution: tr.cfg.data.resolution as i64,
            channels: tr.channels,
            device: tr.device,
            _vs: tr.g_vs,
            g_ab: tr.g_ab,
            g_ba: tr.g_ba,
        })
    }

    /// Generators of `cfg` at `resolution`, their weights (gantry names, `g_ab.*` and `g_ba.*`)
    /// taken from `g`; `origin` names the file in messages.
    pub fn from_tensors(
        cfg: &UgatitConfig,
        channels: i64,
        resolution: i64,
        g: &std::collections::HashMap<String, Tensor>,
        device: Device,
        origin: &Path,
    ) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let g_ab = UgatitGenerator::new(&(&root / "g_ab"), cfg, channels, resolution);
        let g_ba = UgatitGenerator::new(&(&root / "g_ba"), cfg, channels, resolution);
        checkpoint::restore_into(&vs.variables(), g, origin)?;
        Ok(Generators {
            resolution,
            channels,
            device,
            _vs: vs,
            g_ab,
            g_ba,
        })
    }

    /// Translates `x` (`[-1, 1]`) A->B (`a2b`) or B->A, without a graph.
    pub fn translate(&self, x: &Tensor, a2b: bool) -> Translated {
        tch::no_grad(|| {
            if a2b {
                self.g_ab.forward(x)
            } else {
                self.g_ba.forward(x)
            }
        })
    }
}

/// Every image of `input` (sorted, sub-folders walked) through the
/// A->B (or B->A) generator, written to `out` under the input's file name as PNG; with
/// `details`, also the cycle reconstruction and the CAM heat-map beside each.
/// Returns how many images were written.
pub fn translate_folder(
    tr: &Generators,
    input: &Path,
    out: &Path,
    a2b: bool,
    details: bool,
    force: bool,
) -> Result<usize> {
    let files = gantry_data::image_files(input)?;
    if files.is_empty() {
        return Err(Error::config(
            "--in",
            format!("{} contains no PNG/JPEG images", input.display()),
        ));
    }
    let res = u32::try_from(tr.resolution).map_err(|_| Error::config("--size", "out of range"))?;
    let ds = open_domain(
        &format!("folder:{}", input.display()),
        Split::Train,
        res,
        false,
        2,
    )?;
    if ds.sample_shape()[0] as i64 != tr.channels {
        return Err(Error::config(
            "--in",
            format!(
                "{} has {}-channel images; the run translates {}-channel ones",
                input.display(),
                ds.sample_shape()[0],
                tr.channels
            ),
        ));
    }
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            let stem = f.file_stem().map(|s| s.to_string_lossy().into_owned());
            format!("{}.png", stem.unwrap_or_default())
        })
        .collect();
    if !force {
        if let Some(n) = names.iter().find(|n| out.join(n).exists()) {
            return Err(Error::config(
                "--out",
                format!(
                    "{} already exists (pass --force to overwrite)",
                    out.join(n).display()
                ),
            ));
        }
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let [c, h, w] = ds.sample_shape();
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    let mut buf = vec![0f32; c * h * w];
    for (i, name) in names.iter().enumerate() {
        ds.load_into(i, &mut buf, &mut rng)?;
        let x = Tensor::from_slice(&buf)
            .view([1, c as i64, h as i64, w as i64])
            .to_device(tr.device);
        let fwd = tr.translate(&x, a2b);
        let img = if details {
            let back = tr.translate(&fwd.image, !a2b).image;
            let hm = fwd
                .heatmap
                .upsample_bilinear2d([h as i64, w as i64], false, None, None);
            let (lo, hi) = (hm.min(), hm.max());
            let hm =
                ((hm - &lo) / (hi - lo + 1e-8) * 2.0 - 1.0).expand([1, c as i64, -1, -1], false);
            Tensor::cat(&[x, fwd.image, back, hm], 3)
        } else {
            fwd.image
        };
        let img = img.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
        let s = img.size();
        let values: Vec<f32> = Vec::try_from(img.flatten(0, -1))
            .map_err(|e: tch::TchError| Error::Torch(e.to_string()))?;
        gantry_data::image_io::save_image(
            &values,
            [s[1] as usize, s[2] as usize, s[3] as usize],
            &out.join(name),
        )?;
    }
    Ok(names.len())
}
