//! The training loop: when each phase runs, with which optimiser, and the bookkeeping around it
//! (EMA, logging, samples, checkpoints, the divergence guard). What a phase computes is
//! `loss::objective`'s business; the run directory's files are `rundir`'s.

pub mod adam;
pub mod agree;
pub mod ema;
pub mod guard;
pub mod monitor;
pub mod scaler;

use crate::device::{derive_seed, seed_torch, set_threads, DeviceSpec, Purpose};
use crate::dist::Comm;
use crate::error::{catch_alloc, Error, Result};
use crate::eval::{EvalConfig, Evaluator};
use crate::loss::objective::{self, PhaseLoss};
use crate::loss::LossConfig;
use crate::models::{self, DataShape, Generator, ModelConfig};
use crate::plugins::{self, Critic, Phase, PluginsConfig};
use crate::precision::{self, Autocast, Precision};
use crate::rundir::lock::RunLock;
use crate::rundir::{checkpoint, log, samples};
use crate::stats::Stats;
use adam::Adam;
use ema::{Ema, EmaConfig};
use gantry_data::{DataConfig, Dataset, Loader, Position, Shard};
use scaler::{GradScaler, Verdict};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

/// `train.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Generator steps to train for (safe to change on resume).
    pub steps: u64,
    /// Images per batch (real and fake alike).
    pub batch_size: usize,
    /// D steps per G step (5 for WGAN-GP and SNGAN).
    pub n_dis: u64,
    /// G's Adam learning rate.
    pub g_lr: f64,
    /// D's Adam learning rate.
    pub d_lr: f64,
    /// G's Adam betas.
    pub g_betas: [f64; 2],
    /// D's Adam betas.
    pub d_betas: [f64; 2],
    /// Adam epsilon (both networks).
    pub adam_eps: f64,
    /// Learning-rate schedule of both networks, per G step: `constant`, `linear` (to
    /// `lr_final` x lr at `steps`, WGAN-GP's recipe with 0) or `cosine` (R3GAN's shape). A
    /// function of the step, so resume continues it; a changed `steps` stretches it.
    pub lr_schedule: LrSchedule,
    /// Where the schedule ends, as a fraction of `g_lr` / `d_lr`.
    pub lr_final: f64,
    /// Where every schedule (learning rate, beta2, gamma, EMA half-life, augmentation
    /// probability) ends, in thousands of images (G steps x batch, R3GAN's `cur_nimg`); after it
    /// they hold their final values. Unset: at `steps`, so a changed `steps` stretches them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_kimg: Option<f64>,
    /// Adam's beta2 (both networks) moves on the same schedule from the configured betas to
    /// this value (R3GAN: 0.9 -> 0.99); unset = fixed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta2_final: Option<f64>,
    /// R1's and R2's gamma move on the same schedule to this fraction of `loss.r1.gamma` /
    /// `loss.r2.gamma` (R3GAN: 0.1); 1 = fixed.
    pub gamma_final: f64,
    /// EMA copy of G.
    pub ema: EmaConfig,
    /// Seed of everything random: initialisation, data order, latents, plug-ins.
    pub seed: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: DeviceSpec,
    /// CPU threads for libtorch; 0 = all cores.
    pub threads: usize,
    /// Log statistics to metrics.jsonl every N steps.
    pub log_every: u64,
    /// Write a sample grid from fixed latents every N steps (0 = only at the end).
    pub sample_every: u64,
    /// Samples in the grid.
    pub grid: usize,
    /// Save a checkpoint every N steps (0 = only at the end).
    pub checkpoint_every: u64,
    /// Checkpoints to keep (the newest ones).
    pub keep_checkpoints: usize,
    /// On a NaN/Inf loss or gradient: `stop` (keep the last good checkpoint) or `rollback`
    /// (reload it and continue with a changed seed; at most 3 times).
    pub on_nan: OnNan,
    /// Data-parallel jobs: seconds any collective may wait for the other processes before the
    /// job ends with an error naming this rank (a rank that died or hangs).
    pub collective_timeout_s: f64,
    /// Data-parallel jobs: BatchNorm statistics over every rank's share of the batch
    /// (SyncBatchNorm); off = per rank, as DDP does by default.
    pub sync_bn: bool,
    /// What G's and D's forward passes compute in: `fp32`, `bf16` (autocast, CPU and CUDA) or
    /// `fp16` (autocast with dynamic loss scaling). Penalties run in fp32; weights stay fp32.
    pub precision: Precision,
    /// fp16: the loss scale to start from (torch.amp's 2^16); it halves on overflow and doubles
    /// after 2000 good steps.
    pub loss_scale: f64,
    /// Channels-last memory format for convolution weights and image batches.
    pub channels_last: bool,
    /// CUDA: TF32 in matmuls and convolutions (Ampere and later).
    pub tf32: bool,
    /// CUDA: cuDNN's autotuner (fastest kernels for fixed shapes; not bit-reproducible).
    pub cudnn_benchmark: bool,
    /// Deterministic algorithms (torch.use_deterministic_algorithms, cudnn.deterministic): a
    /// CUDA run repeats bit for bit and resumes exactly; slower (docs/training.md).
    pub deterministic: bool,
    /// TensorBoard event files in the run directory (every logged scalar, sample grids, the
    /// configuration), beside metrics.jsonl.
    pub tensorboard: bool,
    /// Log D's outputs on training reals, held-out reals and fakes every N steps (`overfit/*`,
    /// watching D overfit; 0 = never). Held-out reals: `data.holdout`, else the test split.
    pub monitor_every: u64,
    /// Images each process computes at once (stylegan2-ada's `batch_gpu`; 0 = its whole share,
    /// `batch_size / processes`). Smaller: the share is split into micro-batches whose gradients
    /// add up before the one all-reduce and optimiser step, so a global batch larger than
    /// fits still trains. Per-batch statistics then cover a micro-batch (docs/distributed.md).
    pub batch_per_process: usize,
    /// `auto`: a run directory (`--out`) that holds a run of this configuration is resumed from
    /// its latest checkpoint, an empty one starts the run (for jobs that a scheduler or torchrun
    /// restarts); `never`: `--out` must be new (the default). Same as `--resume auto`.
    pub resume: ResumeMode,
}

/// `train.resume`
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResumeMode {
    #[default]
    Never,
    Auto,
}

/// `train.lr_schedule`
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    #[default]
    Constant,
    Linear,
    Cosine,
}

impl LrSchedule {
    /// How far a scheduled value has moved from its start (0) to its end (1) at G step `step` of
    /// `steps` (`constant`: never moves).
    pub fn progress(self, step: u64, steps: u64) -> f64 {
        let t = (step as f64 / steps.max(1) as f64).min(1.0);
        match self {
            LrSchedule::Constant => 0.0,
            LrSchedule::Linear => t,
            LrSchedule::Cosine => 0.5 * (1.0 - (std::f64::consts::PI * t).cos()),
        }
    }

    /// The factor on the base learning rate at G step `step` of `steps`, ending at `last`.
    pub fn factor(self, step: u64, steps: u64, last: f64) -> f64 {
        1.0 + (last - 1.0) * self.progress(step, steps)
    }
}

/// What the loop does when a loss or gradient is not finite.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnNan {
    /// End the run; the last good checkpoint is kept.
    #[default]
    Stop,
    /// Reload the last checkpoint and continue with a changed seed (at most 3 times).
    Rollback,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 3000,
            batch_size: 64,
            n_dis: 1,
            g_lr: 2e-4,
            d_lr: 2e-4,
            g_betas: [0.5, 0.999],
            d_betas: [0.5, 0.999],
            adam_eps: 1e-8,
            lr_schedule: LrSchedule::Constant,
            lr_final: 0.0,
            schedule_kimg: None,
            beta2_final: None,
            gamma_final: 1.0,
            ema: EmaConfig::default(),
            seed: 0,
            device: DeviceSpec::Cpu,
            threads: 0,
            log_every: 50,
            sample_every: 500,
            grid: 64,
            checkpoint_every: 1000,
            keep_checkpoints: 3,
            on_nan: OnNan::Stop,
            collective_timeout_s: 600.0,
            sync_bn: false,
            precision: Precision::Fp32,
            loss_scale: scaler::INIT_SCALE,
            channels_last: false,
            tf32: false,
            cudnn_benchmark: false,
            deterministic: false,
            tensorboard: true,
            batch_per_process: 0,
            monitor_every: 500,
            resume: ResumeMode::Never,
        }
    }
}

impl TrainConfig {
    /// The G step at which the schedules end (`schedule_kimg`, else `steps`).
    pub fn schedule_steps(&self) -> u64 {
        match self.schedule_kimg {
            Some(k) => ((k * 1000.0) / self.batch_size as f64).round().max(1.0) as u64,
            None => self.steps,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, m: &str| Err(Error::config(format!("train.{k}"), m));
        if self.steps == 0 {
            return bad("steps", "must be at least 1");
        }
        if self.deterministic && self.cudnn_benchmark {
            return bad(
                "cudnn_benchmark",
                "cannot be on with train.deterministic (the autotuner's choice varies by run)",
            );
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        if self.n_dis == 0 {
            return bad("n_dis", "must be at least 1");
        }
        for (k, lr) in [("g_lr", self.g_lr), ("d_lr", self.d_lr)] {
            if !(lr.is_finite() && lr > 0.0) {
                return bad(k, "must be a finite number > 0");
            }
        }
        for (k, b) in [("g_betas", self.g_betas), ("d_betas", self.d_betas)] {
            if !b.iter().all(|v| (0.0..1.0).contains(v)) {
                return bad(k, "betas must be in [0, 1)");
            }
        }
        if !(self.lr_final.is_finite() && (0.0..=1.0).contains(&self.lr_final)) {
            return bad(
                "lr_final",
                "must be a fraction of the learning rate in [0, 1]",
            );
        }
        if self
            .schedule_kimg
            .is_some_and(|k| !(k.is_finite() && k * 1000.0 >= self.batch_size as f64))
        {
            return bad(
                "schedule_kimg",
                "must be a finite number of thousands of images, at least one batch",
            );
        }
        if self.beta2_final.is_some_and(|b| !(0.0..1.0).contains(&b)) {
            return bad("beta2_final", "must be in [0, 1)");
        }
        if !(self.gamma_final.is_finite() && self.gamma_final >= 0.0) {
            return bad("gamma_final", "must be a finite fraction >= 0");
        }
        if !(self.adam_eps.is_finite() && self.adam_eps > 0.0) {
            return bad("adam_eps", "must be a finite number > 0");
        }
        if !(0.0..1.0).contains(&self.ema.decay) {
            return bad("ema.decay", "must be in [0, 1)");
        }
        if self
            .ema
            .half_life_kimg
            .is_some_and(|h| !(h.is_finite() && h > 0.0))
        {
            return bad("ema.half_life_kimg", "must be a finite number > 0");
        }
        if !(0.0..=1.0).contains(&self.ema.half_life_start) {
            return bad("ema.half_life_start", "must be a fraction in [0, 1]");
        }
        if self.grid == 0 {
            return bad("grid", "must be at least 1");
        }
        if self.keep_checkpoints == 0 {
            return bad("keep_checkpoints", "must be at least 1");
        }
        if !(self.collective_timeout_s.is_finite() && self.collective_timeout_s > 0.0) {
            return bad("collective_timeout_s", "must be a finite number > 0");
        }
        if !(self.loss_scale.is_finite() && self.loss_scale >= 1.0) {
            return bad("loss_scale", "must be a finite number >= 1");
        }
        Ok(())
    }
}

/// Everything a training run is made of: each module's own settings, and the resolved
/// configuration they came from (`config.toml`, saved in every checkpoint). `config::RunConfig`
/// builds it; the loop never reads the configuration itself.
#[derive(Clone, Debug)]
pub struct Setup {
    pub data: DataConfig,
    pub model: ModelConfig,
    pub loss: LossConfig,
    pub train: TrainConfig,
    pub plugins: PluginsConfig,
    pub eval: EvalConfig,
    /// The resolved configuration as TOML.
    pub resolved: String,
    /// This process's place in a data-parallel job (`Comm::single()` for one process).
    pub comm: Comm,
}

/// Weights to start a new run from (`gantry train --init`), under gantry's names, by store
/// (`g`, `g_ema`, `d`): an imported network (`crate::interop` reads it). Optimiser and plug-in
/// state start fresh.
pub struct InitWeights {
    /// The file they came from, for messages.
    pub origin: PathBuf,
    /// What the weights were built for; the run's data must have the same shape.
    pub shape: DataShape,
    pub stores: Vec<(&'static str, std::collections::HashMap<String, Tensor>)>,
}

/// How a trainer begins: a new run (drawn weights, or given ones) or a resumed checkpoint.
enum Start {
    Fresh(Option<InitWeights>),
    Resume(PathBuf),
}

impl std::fmt::Debug for InitWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stores: Vec<&str> = self.stores.iter().map(|(n, _)| *n).collect();
        write!(f, "InitWeights({}, {stores:?})", self.origin.display())
    }
}

impl InitWeights {
    /// Copies store `name` into `vs`; `false` when the file has no such store.
    fn load(&self, name: &str, vs: &nn::VarStore) -> Result<bool> {
        match self.stores.iter().find(|(n, _)| *n == name) {
            Some((_, t)) => {
                checkpoint::restore_into(&vs.variables(), t, &self.origin).map(|_| true)
            }
            None => Ok(false),
        }
    }

    /// Refuses data of another shape than the weights were built for.
    fn check_shape(&self, data: &DataShape) -> Result<()> {
        let describe = |s: &DataShape| {
            format!(
                "{}x{}x{} images{}",
                s.channels,
                s.resolution,
                s.resolution,
                s.num_classes
                    .map_or(String::new(), |n| format!(" with {n} classes"))
            )
        };
        if data.channels != self.shape.channels
            || data.resolution != self.shape.resolution
            || (self.shape.num_classes.is_some() && data.num_classes != self.shape.num_classes)
        {
            return Err(Error::config(
                "--init",
                format!(
                    "{} was built for {}; the data set is {}",
                    self.origin.display(),
                    describe(&self.shape),
                    describe(data)
                ),
            ));
        }
        Ok(())
    }
}

/// What the loop reports to its caller (the CLI draws the progress bar from these).
pub enum Event<'a> {
    Started {
        step: u64,
        total: u64,
        run_dir: &'a Path,
        data: String,
    },
    Logged {
        step: u64,
        stats: &'a Stats,
    },
    /// After the first few steps: how long the rest should take at the speed measured so far
    /// (training steps only; samples, checkpoints and evaluations come on top).
    Estimate {
        seconds_per_step: f64,
        remaining_steps: u64,
    },
    Evaluated {
        step: u64,
        stats: &'a Stats,
    },
    Sampled {
        step: u64,
        path: &'a Path,
    },
    Saved {
        step: u64,
        path: &'a Path,
    },
    Warning(String),
}

/// How a `run` call ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Finished {
        step: u64,
    },
    Interrupted {
        step: u64,
    },
    /// A resumed run had already trained `train.steps`: nothing was done or written.
    AlreadyDone {
        step: u64,
    },
}

pub struct Trainer {
    pub setup: Setup,
    pub run_dir: PathBuf,
    pub device: Device,
    shape: DataShape,
    dataset: Arc<dyn Dataset>,
    /// `overfit/*` on rank 0 (`train.monitor_every`).
    monitor: Option<monitor::Monitor>,
    g_vs: nn::VarStore,
    d_vs: nn::VarStore,
    ema_vs: nn::VarStore,
    plugins_vs: nn::VarStore,
    g: Box<dyn Generator>,
    g_ema: Box<dyn Generator>,
    critic: Critic,
    opt_g: Adam,
    opt_d: Adam,
    ema: Option<Ema>,
    loader: Loader,
    step: u64,
    images_seen: u64,
    seed_offset: u64,
    wall_before: f64,
    fixed_z: Tensor,
    log: log::MetricsLog,
    guard: guard::Guard,
    evaluator: Option<Evaluator>,
    /// Best value so far of `eval.best` (restored from `checkpoints/best/best.json`).
    best: Option<f64>,
    /// This process's place in a data-parallel job (a copy of `setup.comm`).
    comm: Comm,
    /// G's and D's non-trainable tensors (BatchNorm statistics, SN vectors, StyleGAN2's averages)
    /// and the EMA copy's: rank 0's are broadcast before every step, as DDP does.
    buffers: Vec<Tensor>,
    /// Bytes all-reduced since the last log line.
    bytes_reduced: usize,
    /// Said once training starts (a resume with another number of processes, checkpoints set
    /// aside).
    notes: Vec<String>,
    /// fp16's loss scalers, G's and D's.
    scalers: Option<(GradScaler, GradScaler)>,
    /// fp16 steps skipped for overflowing gradients since the last log line.
    skipped: u64,
    /// Where a conditional G's fake classes come from.
    fake_classes: FakeClasses,
    /// Rank 0's hold on the run directory.
    _lock: Option<RunLock>,
    /// Whether this process has written `config.toml` (with its first checkpoint).
    config_written: bool,
}

/// Refuses to train networks whose parameters, with the gradients and Adam's two moments still
/// to be allocated for `trained`, would not fit in the memory left (activations come on top; an
/// allocation that fails later is reported by `catch_alloc`).
fn check_training_memory(
    trained: &[&nn::VarStore],
    kept: &[&nn::VarStore],
    sizes: &dyn Fn(&[&str]) -> String,
) -> Result<()> {
    let bytes = |vs: &&nn::VarStore| -> u64 {
        vs.variables()
            .values()
            .map(|t| (t.numel() * t.kind().elt_size_in_bytes()) as u64)
            .sum()
    };
    let trained_bytes: u64 = trained.iter().map(bytes).sum();
    let all: u64 = trained_bytes + kept.iter().map(bytes).sum::<u64>();
    let more = trained_bytes.saturating_mul(3);
    match crate::util::available_memory() {
        Some(free) if more > free => Err(Error::config(
            "model",
            format!(
                "the networks and plug-ins hold {} of weights, and training them needs {} more for gradients and Adam; {} of memory is available ({})",
                crate::util::human_bytes(all),
                crate::util::human_bytes(more),
                crate::util::human_bytes(free),
                sizes(&["model", "fq"])
            ),
        )),
        _ => Ok(()),
    }
}

/// Where a conditional generator's fake classes come from.
enum FakeClasses {
    /// Uniform over the classes (BigGAN-PyTorch).
    Uniform,
    /// The labels of random training images (stylegan2-ada): every label of the data set, on the
    /// device, indexed by uniform draws.
    Data(Tensor),
    /// Each fake takes its paired real's class (R3GAN's relativistic pairing).
    PairedReals,
}

impl FakeClasses {
    fn choose(setup: &Setup, dataset: &dyn Dataset, device: Device) -> Result<FakeClasses> {
        if dataset.num_classes().is_none() || !setup.model.arch().conditional() {
            return Ok(FakeClasses::Uniform);
        }
        if setup.loss.kind == crate::loss::Adversarial::Relativistic {
            return Ok(FakeClasses::PairedReals);
        }
        if !setup.model.arch().fake_classes_from_data() {
            return Ok(FakeClasses::Uniform);
        }
        let [c, h, w] = dataset.sample_shape();
        let mut scratch = Vec::new();
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let labels = (0..dataset.len())
            .map(|i| match dataset.label(i) {
                Some(l) => Ok(l),
                None => {
                    scratch.resize(c * h * w, 0f32);
                    dataset.load_into(i, &mut scratch, &mut rng)
                }
            })
            .collect::<std::result::Result<Vec<i64>, _>>()?;
        Ok(FakeClasses::Data(
            Tensor::from_slice(&labels).to_device(device),
        ))
    }
}

/// The shape the models are built for, from the data set.
pub fn data_shape(ds: &dyn Dataset) -> DataShape {
    let [c, h, w] = ds.sample_shape();
    DataShape {
        channels: c as i64,
        resolution: h.max(w) as i64,
        numel: (c * h * w) as i64,
        num_classes: ds.num_classes().map(|n| n as i64),
    }
}

/// A phase's averaged gradients and their norm (`None` from a phase: the step is skipped).
type Gradients = (Vec<Tensor>, Tensor);

impl Trainer {
    /// Builds everything for a fresh run in `run_dir` (which must be new or empty).
    pub fn new(setup: Setup, run_dir: &Path) -> Result<Self> {
        Self::build(setup, run_dir, Start::Fresh(None))
    }

    /// [`Trainer::new`], starting from `init`'s weights instead of drawn ones.
    pub fn from_weights(setup: Setup, run_dir: &Path, init: InitWeights) -> Result<Self> {
        Self::build(setup, run_dir, Start::Fresh(Some(init)))
    }

    /// Continues the run in `run_dir` from checkpoint `ckpt`. `setup` must describe the same run
    /// (`run::resume` checks which keys may change).
    pub fn resume(setup: Setup, run_dir: &Path, ckpt: &Path) -> Result<Self> {
        Self::build(setup, run_dir, Start::Resume(ckpt.to_path_buf()))
    }

    /// Builds on every rank; if any rank fails (its data, its files), all of them stop here,
    /// before the first collective that would wait for the failed one.
    fn build(setup: Setup, run_dir: &Path, start: Start) -> Result<Self> {
        let comm = setup.comm.clone();
        agree::configuration(&comm, &setup.resolved)?;
        let trainer = comm.agree(Self::build_local(setup, run_dir, start))?;
        let params: Vec<(String, Vec<i64>)> = trainer
            .snapshot()
            .into_iter()
            .map(|(name, t)| (name, t.size()))
            .collect();
        agree::parameters(&comm, &params)?;
        trainer.sync_from_main()?;
        Ok(trainer)
    }

    /// Rank 0's parameters, buffers and plug-in state, everywhere (a no-op in one process).
    fn sync_from_main(&self) -> Result<()> {
        if !self.comm.distributed() {
            return Ok(());
        }
        let mut all = Vec::new();
        for vs in [&self.g_vs, &self.d_vs, &self.ema_vs, &self.plugins_vs] {
            all.extend(checkpoint::store_of(vs).into_iter().map(|(_, t)| t));
        }
        self.comm.broadcast_all(&all)
    }

    fn build_local(setup: Setup, run_dir: &Path, start: Start) -> Result<Self> {
        let (ckpt, init) = match start {
            Start::Fresh(init) => (None, init),
            Start::Resume(ckpt) => (Some(ckpt), None),
        };
        let comm = setup.comm.clone();
        // One writer per run directory: rank 0 holds its lock for the life of the trainer.
        let lock = if comm.is_main() {
            let lock = RunLock::acquire(run_dir)?;
            if ckpt.is_none() && checkpoint::latest(run_dir).is_some() {
                return Err(Error::config(
                    "--out",
                    format!(
                        "{} already holds a run; use --resume {} or another --out",
                        run_dir.display(),
                        run_dir.display()
                    ),
                ));
            }
            checkpoint::clean_leftovers(run_dir);
            Some(lock)
        } else {
            None
        };
        let device = setup.train.device.open()?;
        set_threads(setup.train.threads);
        crate::nn::norm::set_sync(setup.train.sync_bn.then(|| comm.clone()));
        crate::device::set_numerics(
            setup.train.tf32,
            setup.train.cudnn_benchmark,
            setup.train.deterministic,
        );
        if !setup.train.batch_size.is_multiple_of(comm.world) {
            return Err(Error::config(
                "train.batch_size",
                format!(
                    "{} does not split evenly over {} processes (it is the global batch)",
                    setup.train.batch_size, comm.world
                ),
            ));
        }
        let share = setup.train.batch_size / comm.world;
        let micro = setup.train.batch_per_process;
        if micro > 0 && !share.is_multiple_of(micro) {
            return Err(Error::config(
                "train.batch_per_process",
                format!(
                    "{micro} does not divide this process's share of the batch ({} / {} processes = {share})",
                    setup.train.batch_size, comm.world
                ),
            ));
        }
        let (dataset, held_out) = gantry_data::open_with_holdout(&setup.data, setup.train.seed)?;
        let shape = data_shape(dataset.as_ref());
        let arch = setup.model.arch();
        arch.validate_data(&shape)?;
        if let Some(init) = &init {
            init.check_shape(&shape)?;
        }
        if setup.train.batch_size > dataset.len() {
            return Err(Error::config(
                "train.batch_size",
                format!(
                    "{} is larger than the data set ({} samples)",
                    setup.train.batch_size,
                    dataset.len()
                ),
            ));
        }

        seed_torch(setup.train.seed, 0, Purpose::Init, 0);
        let sizes = |sections: &[&str]| crate::util::size_settings(&setup.resolved, sections);
        // Drawn on the CPU on every device: a seed gives the same initial weights on a GPU.
        let ([g_vs, d_vs, mut ema_vs, plugins_vs], (g, d, g_ema, stack)) =
            crate::nn::build_with_cpu_draws(device, |[g_vs, d_vs, ema_vs, plugins_vs]| {
                let (g, d, g_ema) = catch_alloc(
                    || format!("while building the networks ({})", sizes(&["model"])),
                    || {
                        let g = models::build_generator(g_vs.root(), &setup.model, &shape)?;
                        let d = models::build_discriminator(d_vs.root(), &setup.model, &shape)?;
                        let g_ema = models::build_generator(ema_vs.root(), &setup.model, &shape)?;
                        Ok((g, d, g_ema))
                    },
                )?;
                let stack = catch_alloc(
                    || {
                        format!(
                            "while building the plug-ins ({})",
                            sizes(&["fq", "adaptivemix"])
                        )
                    },
                    || {
                        plugins::build_stack(
                            &plugins_vs.root(),
                            &setup.plugins,
                            d.as_ref(),
                            &shape,
                            &arch.default_fq_layers(shape.resolution),
                        )
                    },
                )?;
                Ok((g, d, g_ema, stack))
            })?;
        ema_vs.freeze();
        if device == Device::Cpu {
            check_training_memory(&[&g_vs, &d_vs], &[&ema_vs, &plugins_vs], &sizes)?;
        }
        let mut critic = Critic::new(d, stack)?;
        if setup.train.channels_last {
            for vs in [&g_vs, &d_vs, &ema_vs] {
                let all: Vec<Tensor> = vs.variables().into_values().collect();
                precision::make_channels_last(&all)?;
            }
        }
        let t = &setup.train;
        let mut note = None;
        let mut opt_g = Adam::new(&g_vs, t.g_lr, t.g_betas, t.adam_eps);
        let mut opt_d = Adam::new(&d_vs, t.d_lr, t.d_betas, t.adam_eps);
        if let Some(init) = &init {
            init.load("g", &g_vs)?;
            let d_loaded = init.load("d", &d_vs)?;
            let stores: Vec<&str> = init.stores.iter().map(|(n, _)| *n).collect();
            note = Some(format!(
                "weights from {} ({}){}; optimiser and plug-in state start fresh",
                init.origin.display(),
                stores.join(", "),
                if d_loaded {
                    ""
                } else {
                    "; it has no discriminator, so D starts from its initialisation"
                }
            ));
        }
        let mut ema = t.ema.enabled.then(|| Ema::new(&g_vs, &ema_vs, &t.ema));
        if let Some(e) = ema.as_mut() {
            e.reset();
        }
        if let Some(init) = &init {
            init.load("g_ema", &ema_vs)?;
        }
        seed_torch(setup.train.seed, 0, Purpose::FixedLatents, 0);
        // 2-D points need many samples to show the modes; images a grid.
        let n_grid = if shape.numel == 2 {
            t.grid.max(2048)
        } else {
            t.grid
        } as i64;
        let fixed_z = Tensor::randn([n_grid, g.z_dim()], (Kind::Float, Device::Cpu)).to(device);

        let mut trainer_step = 0;
        let mut images_seen = 0;
        let mut position = Position::default();
        let mut wall_before = 0.0;
        let mut seed_offset = 0;
        let mut scalers = (setup.train.precision == Precision::Fp16).then(|| {
            let s = GradScaler::starting_at(setup.train.loss_scale);
            (s.clone(), s)
        });
        if let Some(ckpt) = &ckpt {
            let meta = checkpoint::read_meta(ckpt)?;
            if meta.world_size != comm.world {
                note = Some(format!(
                    "resumed with {} process(es) from a checkpoint written by {}: training continues, but not bit-exactly as it would have",
                    comm.world, meta.world_size
                ));
            }
            let restore = |vs: &nn::VarStore, name: &str| -> Result<()> {
                let saved = checkpoint::read_store(ckpt, name)?;
                checkpoint::restore_into(
                    &vs.variables(),
                    &saved,
                    &ckpt.join(format!("{name}.safetensors")),
                )
            };
            restore(&g_vs, "g")?;
            restore(&d_vs, "d")?;
            restore(&ema_vs, "g_ema")?;
            restore(&plugins_vs, "plugins")?;
            critic.state_restored();
            let adam_file = ckpt.join("adam.safetensors");
            let adam_state = checkpoint::read_store(ckpt, "adam")?;
            opt_g.load_state(&adam_state, "g", &adam_file)?;
            opt_d.load_state(&adam_state, "d", &adam_file)?;
            if let Some((sg, sd)) = scalers.as_mut() {
                sg.load_state(&adam_state, "scaler.g");
                sd.load_state(&adam_state, "scaler.d");
            }
            trainer_step = meta.step;
            images_seen = meta.images_seen;
            position = meta.loader;
            wall_before = meta.wall_seconds;
            seed_offset = meta.seed_offset;
        }
        let fake_classes = FakeClasses::choose(&setup, dataset.as_ref(), device)?;
        let loader = Loader::sharded(
            dataset.clone(),
            t.batch_size,
            setup.train.seed,
            position,
            setup.data.workers,
            setup.data.prefetch,
            Shard {
                rank: comm.rank,
                world: comm.world,
            },
        )?;
        // Rank 0 alone writes the run directory (`config.toml` with the first checkpoint it
        // saves, so a resume that fails or does nothing leaves the run's own in place).
        let log = if comm.is_main() {
            let mut log = log::MetricsLog::open(
                &run_dir.join("metrics.jsonl"),
                trainer_step,
                setup.train.tensorboard,
            )?;
            if trainer_step == 0 {
                log.text(0, "config", &format!("```toml\n{}```", setup.resolved))?;
            }
            log
        } else {
            log::MetricsLog::disabled()
        };
        // Built before training so that missing weights or a bad reference fail at once; the
        // reference features live on rank 0, which computes the metrics.
        let evaluator = if setup.eval.every > 0 {
            Some(Evaluator::new(
                &setup.eval,
                &setup.data,
                &shape,
                device,
                comm.is_main(),
                &mut |_, _, _| {},
            )?)
        } else {
            None
        };
        let mut buffers = Vec::new();
        let ema_vars = ema_vs.variables();
        for (vs, ema) in [(&g_vs, true), (&d_vs, false)] {
            for (name, t) in checkpoint::store_of(vs) {
                if !t.requires_grad() {
                    if ema {
                        buffers.extend(ema_vars.get(&name).map(Tensor::shallow_clone));
                    }
                    buffers.push(t);
                }
            }
        }
        let best = evaluator
            .as_ref()
            .and_then(|e| checkpoint::best_value(run_dir, &e.best().0));
        let monitor = if comm.is_main() && setup.train.monitor_every > 0 {
            Some(monitor::Monitor::new(
                dataset.as_ref(),
                held_out.as_deref(),
                g.z_dim(),
                shape.num_classes.is_some() && arch.conditional(),
                setup.train.seed,
                setup.train.batch_size / comm.world,
                device,
            )?)
        } else {
            None
        };
        Ok(Trainer {
            setup,
            run_dir: run_dir.to_path_buf(),
            device,
            shape,
            dataset,
            monitor,
            g_vs,
            d_vs,
            ema_vs,
            plugins_vs,
            g,
            g_ema,
            critic,
            opt_g,
            opt_d,
            ema,
            loader,
            step: trainer_step,
            images_seen,
            seed_offset,
            wall_before,
            fixed_z,
            log,
            guard: guard::Guard::default(),
            evaluator,
            best,
            comm,
            buffers,
            bytes_reduced: 0,
            notes: note.into_iter().collect(),
            scalers,
            skipped: 0,
            fake_classes,
            _lock: lock,
            config_written: false,
        })
    }

    pub fn step(&self) -> u64 {
        self.step
    }

    /// Says `text` in the log and to the caller when training starts.
    pub fn add_note(&mut self, text: String) {
        self.notes.push(text);
    }

    /// Bytes all-reduced since the last log line (benchmarks read it).
    pub fn bytes_reduced(&self) -> usize {
        self.bytes_reduced
    }

    fn seed(&self) -> u64 {
        self.setup
            .train
            .seed
            .wrapping_add(self.seed_offset.wrapping_mul(1_000_003))
    }

    /// This rank's part of the next global batch (the whole batch in one process).
    pub fn real_batch(&mut self) -> Result<(Tensor, Option<Tensor>)> {
        let b = self.loader.next_batch()?;
        let shape: Vec<i64> = b.shape.iter().map(|&v| v as i64).collect();
        let host = Tensor::from_slice(&b.images).view(shape.as_slice());
        // On CUDA: from pinned memory, without blocking (the copy overlaps queued kernels).
        let mut x = precision::to_device_pinned(&host, self.device)?;
        if self.setup.train.channels_last {
            x = precision::channels_last(&x)?;
        }
        self.images_seen += (shape[0] as u64) * self.comm.world as u64;
        let labels = match self.shape.num_classes {
            Some(_) => Some(precision::to_device_pinned(
                &Tensor::from_slice(&b.labels),
                self.device,
            )?),
            None => None,
        };
        Ok((x, labels))
    }

    /// The latents (and, for class-conditional models, classes) of this rank's fakes: drawn for
    /// the whole global batch from the step's seed, this rank's rows kept, so that the ranks
    /// together use exactly the latents one process would. Then, in a job, the generator is
    /// reseeded per rank for the phase's other draws (plug-ins, penalties).
    pub fn latents(&self, seed: u64, purpose: Purpose, sub: u64) -> (Tensor, Option<Tensor>) {
        seed_torch(seed, self.step, purpose, sub);
        let global = self.setup.train.batch_size as i64;
        let b = global / self.comm.world as i64;
        let at = b * self.comm.rank as i64;
        // Drawn on the CPU (the same draws on every device, as the initial weights), this
        // rank's rows moved.
        let mine = |t: Tensor| t.narrow(0, at, b).to(self.device);
        let z = mine(Tensor::randn(
            [global, self.g.z_dim()],
            (Kind::Float, Device::Cpu),
        ));
        // Fresh classes, uniform (BigGAN-PyTorch) or the data's (stylegan2-ada); the phases
        // replace them with the reals' under the relativistic pairing.
        let labels = self.shape.num_classes.map(|n| match &self.fake_classes {
            FakeClasses::Data(table) => table.index_select(
                0,
                &mine(Tensor::randint(
                    table.size()[0],
                    [global],
                    (Kind::Int64, Device::Cpu),
                )),
            ),
            _ => mine(Tensor::randint(n, [global], (Kind::Int64, Device::Cpu))),
        });
        if self.comm.distributed() {
            let sub = ((self.comm.rank as u64) << 32) | ((purpose as u64) << 16) | sub;
            tch::manual_seed(derive_seed(seed, self.step, Purpose::Plugin, sub));
        }
        (z, labels)
    }

    /// Averages a phase's gradients and loss over the ranks (bucketed all-reduce); returns the
    /// averaged loss, on which (with the gradients) every rank then takes the same NaN decision.
    fn reduce(&mut self, grads: &[Tensor], loss: &PhaseLoss) -> Result<Tensor> {
        if let Some(e) = crate::nn::norm::take_sync_error() {
            return Err(e);
        }
        let total = loss.total.detach().copy().reshape([1]);
        if self.comm.distributed() {
            let mut all: Vec<Tensor> = grads.iter().map(Tensor::shallow_clone).collect();
            all.push(total.shallow_clone());
            self.bytes_reduced += self.comm.average(&all)?;
        }
        Ok(total.reshape([]))
    }

    /// The gradients of a phase's loss for G's or D's parameters, averaged over the ranks, and
    /// their norm. fp16: taken of the scaled loss and unscaled; `None` when the loss or the
    /// gradients overflowed (the step is skipped and the scale backs off; a spent scale is a
    /// divergence). Outside fp16 a non-finite loss or gradient is a divergence.
    ///
    /// `round(r, m)` computes the phase's loss on micro-batch `r` of `m` images
    /// (`train.batch_per_process`); the gradients of the rounds are averaged before the ranks'
    /// all-reduce, and so is the returned loss (its parts too).
    fn phase_gradients(
        &mut self,
        net: Phase,
        mut round: impl FnMut(&mut Self, i64, i64) -> PhaseLoss,
    ) -> Result<(PhaseLoss, Option<Gradients>)> {
        let scale = self.scalers.as_ref().map(|(g, d)| match net {
            Phase::G => g.scale(),
            Phase::D => d.scale(),
        });
        let (rounds, m) = self.rounds();
        let mut grads: Vec<Tensor> = Vec::new();
        let mut loss: Option<PhaseLoss> = None;
        for r in 0..rounds {
            let part = round(self, r, m);
            let opt = match net {
                Phase::D => &self.opt_d,
                Phase::G => &self.opt_g,
            };
            let g = match scale {
                Some(s) => opt.gradients(&(&part.total * s)),
                None => opt.gradients(&part.total),
            };
            let part = PhaseLoss {
                total: part.total.detach(),
                parts: part.parts,
            };
            if r == 0 {
                grads = g;
                loss = Some(part);
            } else {
                tch::no_grad(|| {
                    for (acc, g) in grads.iter_mut().zip(g) {
                        match (acc.defined(), g.defined()) {
                            (true, true) => {
                                let _ = acc.g_add_(&g);
                            }
                            (false, true) => *acc = g,
                            _ => {}
                        }
                    }
                });
                let sum = loss.as_mut().expect("set in round 0");
                sum.total = &sum.total + part.total;
                for ((_, a), (_, b)) in sum.parts.iter_mut().zip(part.parts) {
                    *a = &*a + b;
                }
            }
        }
        let mut loss = loss.expect("at least one round");
        if rounds > 1 {
            let k = 1.0 / rounds as f64;
            tch::no_grad(|| {
                for g in grads.iter().filter(|g| g.defined()) {
                    let _ = g.shallow_clone().g_mul_scalar_(k);
                }
            });
            loss.total = &loss.total * k;
            for (_, v) in loss.parts.iter_mut() {
                *v = &*v * k;
            }
        }
        let outcome = self.finish_gradients(&loss, grads, scale, net)?;
        Ok((loss, outcome))
    }

    /// Micro-batches per phase and their size: `(1, share)` unless `train.batch_per_process`
    /// splits this process's share of the batch.
    fn rounds(&self) -> (i64, i64) {
        let share = (self.setup.train.batch_size / self.comm.world) as i64;
        match self.setup.train.batch_per_process as i64 {
            0 => (1, share),
            m => (share / m, m),
        }
    }

    /// [`phase_gradients`](Self::phase_gradients) after the rounds: one all-reduce, the NaN and
    /// fp16-overflow decisions.
    fn finish_gradients(
        &mut self,
        loss: &PhaseLoss,
        grads: Vec<Tensor>,
        scale: Option<f64>,
        net: Phase,
    ) -> Result<Option<Gradients>> {
        let what = match net {
            Phase::D => "D",
            Phase::G => "G",
        };
        let total = self.reduce(&grads, loss)?;
        let Some(s) = scale else {
            let grad = self.check_finite(&total, &grads, what)?;
            return Ok(Some((grads, grad)));
        };
        tch::no_grad(|| {
            for g in grads.iter().filter(|g| g.defined()) {
                let _ = g.shallow_clone().g_div_scalar_(s);
            }
        });
        let grad_sq = Adam::grad_sq_norm(&grads);
        // One host read for loss and gradients. An overflow in the forward pass (infinite loss)
        // is skipped like one in the gradients; only a scale spent on failing steps stops the run.
        let outcome = crate::util::read_f64(&(&total + &grad_sq));
        let verdict = self.scalers.as_mut().map(|(g, d)| match net {
            Phase::G => g.judge(outcome),
            Phase::D => d.judge(outcome),
        });
        match verdict {
            Some(Verdict::Step) => Ok(Some((grads, grad_sq.sqrt()))),
            Some(Verdict::Skip) => {
                self.skipped += 1;
                Ok(None)
            }
            Some(Verdict::Diverged) | None => Err(Error::NonFinite {
                step: self.step,
                what: format!(
                    "{what} loss or gradient in every fp16 step until the loss scale fell below \
                     {} (diverged, or fp16 overflows in the forward pass: try train.precision = bf16)",
                    scaler::MIN_SCALE
                ),
            }),
        }
    }

    /// Checks the phase's loss and gradients (one device sync); returns the gradient norm.
    fn check_finite(&self, total: &Tensor, grads: &[Tensor], what: &str) -> Result<Tensor> {
        let grad_sq = Adam::grad_sq_norm(grads);
        let v = crate::util::read_f64(&(total + &grad_sq));
        if v.is_finite() {
            Ok(grad_sq.sqrt())
        } else {
            Err(Error::NonFinite {
                step: self.step,
                what: format!("{what} loss or gradient"),
            })
        }
    }

    /// One training step: `n_dis` D steps, then one G step and the EMA update. On a non-finite
    /// loss or gradient nothing of the failing phase is applied.
    pub fn train_step(&mut self) -> Result<Vec<(String, Tensor)>> {
        let batches = (0..self.setup.train.n_dis)
            .map(|_| self.real_batch())
            .collect::<Result<Vec<_>>>()?;
        self.train_step_on(batches)
    }

    /// [`train_step`](Self::train_step) on given real batches (one per D step; benchmarks feed
    /// the same batch to time compute alone).
    pub fn train_step_on(
        &mut self,
        batches: Vec<(Tensor, Option<Tensor>)>,
    ) -> Result<Vec<(String, Tensor)>> {
        let seed = self.seed();
        let t = self.setup.train.clone();
        let r1 = self.setup.loss.r1.clone();
        let r2 = self.setup.loss.r2.clone();
        let mut parts = Vec::new();
        // Scheduled values: a function of the step, so resume continues them.
        let progress = t.lr_schedule.progress(self.step, t.schedule_steps());
        let lr = 1.0 + (t.lr_final - 1.0) * progress;
        self.opt_g.set_lr(t.g_lr * lr);
        self.opt_d.set_lr(t.d_lr * lr);
        if let Some(b2) = t.beta2_final {
            let at = |b: [f64; 2]| [b[0], b[1] + (b2 - b[1]) * progress];
            self.opt_g.set_betas(at(t.g_betas));
            self.opt_d.set_betas(at(t.d_betas));
        }
        let gamma = 1.0 + (t.gamma_final - 1.0) * progress;
        self.critic.begin_step(progress);
        if t.ema.enabled && t.ema.half_life_kimg.is_some() {
            let beta = t.ema.beta(self.step, t.batch_size, progress);
            parts.push(("schedule/ema_beta".into(), Tensor::from(beta)));
        }
        if t.lr_schedule != LrSchedule::Constant {
            parts.push(("schedule/lr".into(), Tensor::from(lr)));
            parts.push(("schedule/gamma".into(), Tensor::from(gamma)));
            if let Some(b2) = t.beta2_final {
                let beta2 = t.d_betas[1] + (b2 - t.d_betas[1]) * progress;
                parts.push(("schedule/beta2".into(), Tensor::from(beta2)));
            }
        }
        // The G phase of a relativistic loss scores the step's last real batch again.
        let mut last_real: Option<(Tensor, Option<Tensor>)> = None;
        if self.comm.distributed() {
            self.comm.broadcast_all(&self.buffers)?;
        }
        for (k, (real, labels)) in (0..t.n_dis).zip(batches) {
            let (z, mut fake_labels) = self.latents(seed, Purpose::DStep, k);
            if let FakeClasses::PairedReals = self.fake_classes {
                fake_labels = labels.as_ref().map(Tensor::shallow_clone);
            }
            let d_index = self.step * t.n_dis + k;
            let scale = |p: &crate::loss::R1Config| {
                if p.gamma > 0.0 && d_index.is_multiple_of(p.every.max(1)) {
                    p.gamma * gamma / 2.0 * p.every.max(1) as f64
                } else {
                    0.0
                }
            };
            let (r1_scale, r2_scale) = (scale(&r1), scale(&r2));
            let penalty_grad_scale = self.scalers.as_ref().map_or(1.0, |(_, d)| d.scale());
            let (loss, outcome) = self.phase_gradients(Phase::D, |tr, r, m| {
                let cut = |x: &Tensor| x.narrow(0, r * m, m);
                let (real, labels) = (cut(&real), labels.as_ref().map(cut));
                let fake_labels = fake_labels.as_ref().map(cut);
                // The forward passes under autocast; backward (and so the guard) outside it.
                let _autocast = Autocast::new(tr.device, t.precision);
                let fake = tch::no_grad(|| tr.g.forward(&cut(&z), fake_labels.as_ref(), true));
                objective::d_phase(
                    &mut tr.critic,
                    &real,
                    &fake,
                    labels.as_ref(),
                    fake_labels.as_ref(),
                    &tr.setup.loss,
                    tr.step,
                    r1_scale,
                    r2_scale,
                    penalty_grad_scale,
                )
            })?;
            let grad = match outcome {
                Some((grads, grad)) => {
                    self.critic.end_phase(Phase::D, &self.comm)?;
                    self.opt_d.step(&grads);
                    grad
                }
                None => {
                    self.critic.discard_phase();
                    Tensor::from(f32::NAN)
                }
            };
            if k + 1 == t.n_dis {
                parts.extend(loss.parts);
                parts.push(("grad/d".into(), grad));
                last_real = Some((real, labels));
            }
        }
        let (z, mut labels) = self.latents(seed, Purpose::GStep, 0);
        if let FakeClasses::PairedReals = self.fake_classes {
            labels = last_real
                .as_ref()
                .and_then(|(_, l)| l.as_ref().map(Tensor::shallow_clone));
        }
        // Lazy path-length regularisation (StyleGAN2, `loss.pl`): every `pl.every` G steps a second
        // G pass on the first m/batch_shrink latents of each micro-batch adds weight * every *
        // penalty to the same gradients, before the one Adam step (as stylegan2-ada's rounds).
        // Generators without a w space return None.
        let pl = self.setup.loss.pl.clone();
        let pl_now = pl.weight > 0.0 && self.step.is_multiple_of(pl.every.max(1));
        let (loss, outcome) = self.phase_gradients(Phase::G, |tr, r, m| {
            let cut = |x: &Tensor| x.narrow(0, r * m, m);
            let (z, labels) = (cut(&z), labels.as_ref().map(cut));
            let last_real = last_real
                .as_ref()
                .map(|(x, l)| (cut(x), l.as_ref().map(cut)));
            let mut loss = {
                let _autocast = Autocast::new(tr.device, t.precision);
                let fake = tr.g.forward(&z, labels.as_ref(), true);
                objective::g_phase(
                    &mut tr.critic,
                    &fake,
                    labels.as_ref(),
                    last_real.as_ref().map(|(x, l)| (x, l.as_ref())),
                    &tr.setup.loss,
                    tr.step,
                )
            };
            if pl_now {
                let n = (m / pl.batch_shrink.max(1) as i64).max(1);
                let labels_n = labels.as_ref().map(|l| l.narrow(0, 0, n));
                // In fp32 whatever the training precision, as stylegan2-ada computes it.
                if let Some(penalty) = precision::fp32(tr.device, || {
                    tr.g.path_length_penalty(&z.narrow(0, 0, n), labels_n.as_ref(), pl.decay)
                }) {
                    let term = penalty * (pl.weight * pl.every.max(1) as f64);
                    loss.parts.push(("loss/g/pl".into(), term.detach()));
                    loss.total = &loss.total + term;
                }
            }
            loss
        })?;
        // Gradients for G's parameters only: D's are never computed in this phase.
        let grad = match outcome {
            Some((grads, grad)) => {
                self.critic.end_phase(Phase::G, &self.comm)?;
                self.opt_g.step(&grads);
                grad
            }
            None => {
                self.critic.discard_phase();
                Tensor::from(f32::NAN)
            }
        };
        parts.extend(loss.parts);
        parts.push(("grad/g".into(), grad));
        self.step += 1;
        if let Some(e) = self.ema.as_mut() {
            e.update(self.step, t.batch_size, progress);
        }
        Ok(parts)
    }

    /// The generator used for samples: the EMA copy when enabled.
    pub fn sampler(&self) -> &dyn Generator {
        if self.ema.is_some() {
            self.g_ema.as_ref()
        } else {
            self.g.as_ref()
        }
    }

    /// Spread of the first `grid` data samples (at least 2; read straight from the data set, so
    /// the loader's position, and with it exact resume, is untouched).
    fn real_diversity(&self) -> Result<f64> {
        let n = self.setup.train.grid.clamp(2, self.dataset.len());
        let [c, h, w] = self.dataset.sample_shape();
        let mut buf = vec![0f32; n * c * h * w];
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        for (i, out) in buf.chunks_mut(c * h * w).enumerate() {
            self.dataset.load_into(i, out, &mut rng)?;
        }
        Ok(guard::diversity(
            &Tensor::from_slice(&buf).view([n as i64, -1]),
        ))
    }

    /// Writes the fixed-latent sample grid; returns its path and the samples' diversity.
    pub fn write_samples(&self) -> Result<(PathBuf, f64)> {
        let labels = self
            .shape
            .num_classes
            .filter(|_| self.setup.model.arch().conditional())
            .map(|c| samples::grid_classes(self.fixed_z.size()[0], c, self.device));
        let x = tch::no_grad(|| {
            self.sampler()
                .forward(&self.fixed_z, labels.as_ref(), false)
        });
        let spread = guard::diversity(&x);
        let dir = self.run_dir.join("samples");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join(format!("step-{:07}.png", self.step));
        samples::save(&x, &path, Some(self.dataset.as_ref()), self.setup.data.kind)?;
        Ok((path, spread))
    }

    /// Saves a checkpoint of the current step (atomically) and logs how long it took.
    pub fn save_checkpoint(&mut self, elapsed: f64) -> Result<PathBuf> {
        let t0 = Instant::now();
        let meta = checkpoint::Meta {
            format_version: checkpoint::FORMAT_VERSION,
            gantry_version: env!("CARGO_PKG_VERSION").into(),
            step: self.step,
            images_seen: self.images_seen,
            loader: self.loader.position(),
            wall_seconds: self.wall_before + elapsed,
            seed_offset: self.seed_offset,
            world_size: self.comm.world,
            arch: self.setup.model.arch_name().into(),
            config: self.setup.resolved.clone(),
        };
        let mut adam = self.opt_g.state("g");
        adam.extend(self.opt_d.state("d"));
        if let Some((g, d)) = &self.scalers {
            adam.extend(g.state("scaler.g"));
            adam.extend(d.state("scaler.d"));
        }
        let stores = [
            ("g", checkpoint::store_of(&self.g_vs)),
            ("d", checkpoint::store_of(&self.d_vs)),
            ("g_ema", checkpoint::store_of(&self.ema_vs)),
            ("plugins", checkpoint::store_of(&self.plugins_vs)),
            ("adam", adam),
        ];
        let path = checkpoint::save(&self.run_dir, &meta, &stores)?;
        if !self.config_written {
            crate::util::write_atomic(
                &self.run_dir.join("config.toml"),
                self.setup.resolved.as_bytes(),
            )?;
            self.config_written = true;
        }
        let mut timing = Stats::default();
        timing.set("checkpoint/save_s", t0.elapsed().as_secs_f64());
        self.log.write(self.step, &timing)?;
        checkpoint::prune(&self.run_dir, self.setup.train.keep_checkpoints);
        Ok(path)
    }

    /// Trains until `train.steps` or until `stop` is raised (then saves and returns Interrupted).
    /// In a data-parallel job every rank runs this loop in step: the stop request, the NaN
    /// decision and every schedule are the same on all of them, and rank 0 alone writes.
    pub fn run(&mut self, stop: &AtomicBool, on_event: &mut dyn FnMut(Event)) -> Result<Outcome> {
        let total = self.setup.train.steps;
        let main = self.comm.is_main();
        on_event(Event::Started {
            step: self.step,
            total,
            run_dir: &self.run_dir,
            data: self.dataset.describe(),
        });
        for note in std::mem::take(&mut self.notes) {
            self.log.event(self.step, "note", &note)?;
            on_event(Event::Warning(note));
        }
        let mut started = Instant::now();
        let mut window = (Instant::now(), self.images_seen);
        let mut rollbacks = 0;
        // Timed from the end of the first step (which warms libtorch up) over the next few.
        const ESTIMATE_OVER: u64 = 10;
        let mut first_done: Option<(Instant, u64)> = None;
        let mut estimated = false;
        let every = |n: u64, step: u64| n > 0 && step.is_multiple_of(n);
        if main && checkpoint::latest(&self.run_dir).is_none() {
            // The initial state, so that a divergence can always stop at (or roll back to) a
            // good checkpoint.
            let path = self.save_checkpoint(0.0)?;
            on_event(Event::Saved {
                step: self.step,
                path: &path,
            });
        }
        while self.step < total {
            if self.comm.any(stop.load(Ordering::SeqCst))? {
                if main {
                    let path = self.save_checkpoint(started.elapsed().as_secs_f64())?;
                    on_event(Event::Saved {
                        step: self.step,
                        path: &path,
                    });
                }
                return Ok(Outcome::Interrupted { step: self.step });
            }
            let parts = match catch_alloc(String::new, || self.train_step()) {
                Err(Error::OutOfMemory { detail, .. }) => {
                    return Err(Error::OutOfMemory {
                        what: format!(
                            "in a training step at step {} ({}; the last checkpoint is kept)",
                            self.step,
                            crate::util::size_settings(
                                &self.setup.resolved,
                                &["train.batch_size", "data.resolution", "model"]
                            )
                        ),
                        detail,
                    })
                }
                Ok(p) => p,
                Err(Error::NonFinite { step, what }) => {
                    self.log.event(step, "non-finite", &what)?;
                    // Rank 0 sees the run directory; every rank follows its decision.
                    let has_ckpt = self
                        .comm
                        .any(main && checkpoint::latest(&self.run_dir).is_some())?;
                    if self.setup.train.on_nan == OnNan::Rollback && rollbacks < 3 && has_ckpt {
                        rollbacks += 1;
                        on_event(Event::Warning(format!("non-finite {what} at step {step}; rolling back to the last checkpoint with a new seed")));
                        self.rollback()?;
                        // Counters and wall time start again from the checkpoint's.
                        started = Instant::now();
                        window = (Instant::now(), self.images_seen);
                        continue;
                    }
                    return Err(Error::NonFinite {
                        step,
                        what: format!("{what} (the last good checkpoint is kept)"),
                    });
                }
                Err(e) => return Err(e),
            };
            let step = self.step;
            match first_done {
                None => first_done = Some((Instant::now(), step)),
                Some((t0, s0)) if !estimated && (step - s0 == ESTIMATE_OVER || step == total) => {
                    estimated = true;
                    on_event(Event::Estimate {
                        seconds_per_step: t0.elapsed().as_secs_f64() / (step - s0) as f64,
                        remaining_steps: total - step,
                    });
                }
                Some(_) => {}
            }
            // What the data set noticed while loading (a first non-square image, ...), once.
            if main {
                for note in self.dataset.take_notes() {
                    self.log.event(step, "note", &note)?;
                    on_event(Event::Warning(note));
                }
            }
            if every(self.setup.train.log_every, step) || step == total {
                let stats =
                    self.step_stats(&parts, &mut window, started.elapsed().as_secs_f64())?;
                self.log.write(step, &stats)?;
                for w in self.guard.on_log(step, &stats, self.setup.loss.kind) {
                    self.log.event(step, "warning", &w)?;
                    on_event(Event::Warning(w));
                }
                on_event(Event::Logged {
                    step,
                    stats: &stats,
                });
            }
            if let Some(m) = self.monitor.as_ref() {
                if every(self.setup.train.monitor_every, step) || step == total {
                    let stats = m.measure(self.g.as_ref(), self.critic.d.as_ref());
                    self.log.write(step, &stats)?;
                }
            }
            // The checkpoint first: nothing after it (samples, evaluation) can lose the steps.
            let mut saved = None;
            if every(self.setup.train.checkpoint_every, step) || step == total {
                self.check_ranks_agree()?;
                if main {
                    let path = self.save_checkpoint(started.elapsed().as_secs_f64())?;
                    on_event(Event::Saved { step, path: &path });
                    saved = Some(path);
                }
            }
            if main && (every(self.setup.train.sample_every, step) || step == total) {
                let (path, spread) = self.write_samples()?;
                // One image has no spread to compare with.
                if self.guard.real_diversity.is_none() && self.dataset.len() >= 2 {
                    self.guard.real_diversity = Some(self.real_diversity()?);
                }
                let mut s = Stats::default();
                s.set("samples/diversity", spread);
                self.log.write(step, &s)?;
                self.log.image(step, "samples", &path)?;
                if let Some(w) = self.guard.on_samples(step, spread) {
                    self.log.event(step, "warning", &w)?;
                    on_event(Event::Warning(w));
                }
                on_event(Event::Sampled { step, path: &path });
            }
            if self.evaluator.is_some() && (every(self.setup.eval.every, step) || step == total) {
                self.evaluate(step, saved, started.elapsed().as_secs_f64(), on_event)?;
            }
        }
        Ok(Outcome::Finished { step: self.step })
    }

    /// The logged statistics of a step: its loss parts averaged over the ranks, the plug-ins'
    /// diagnostics (rank 0's), throughput over every rank's images.
    fn step_stats(
        &mut self,
        parts: &[(String, Tensor)],
        window: &mut (Instant, u64),
        elapsed: f64,
    ) -> Result<Stats> {
        let mut stats = Stats::default();
        // Stacked where they are: one all-reduce and one host read (logging steps only).
        let values = crate::stats::stack_scalars(parts.iter().map(|(_, v)| v));
        self.comm.average(std::slice::from_ref(&values))?;
        stats.set_stacked(parts.iter().map(|(k, _)| k.as_str()), &values);
        self.critic.stats(&mut stats);
        let (t0, n0) = *window;
        let secs = t0.elapsed().as_secs_f64().max(1e-9);
        stats.set("images_per_s", (self.images_seen - n0) as f64 / secs);
        stats.set("kimg", self.images_seen as f64 / 1000.0);
        stats.set("wall_s", self.wall_before + elapsed);
        if let Some((g, d)) = &self.scalers {
            stats.set("fp16/scale_g", g.scale());
            stats.set("fp16/scale_d", d.scale());
            stats.set("fp16/skipped", self.skipped as f64);
            self.skipped = 0;
        }
        if self.comm.distributed() {
            stats.set(
                "dist/mib_reduced",
                self.bytes_reduced as f64 / (1u64 << 20) as f64,
            );
            self.bytes_reduced = 0;
        }
        *window = (Instant::now(), self.images_seen);
        Ok(stats)
    }

    /// In a job, checks that every rank holds the same G and D parameters and plug-in state (they
    /// apply the same averaged gradients and the same dictionary updates), and logs that they do.
    fn check_ranks_agree(&mut self) -> Result<()> {
        if !self.comm.distributed() {
            return Ok(());
        }
        let mut state = self.opt_g.params();
        state.extend(self.opt_d.params());
        state.extend(
            checkpoint::store_of(&self.plugins_vs)
                .into_iter()
                .map(|(_, t)| t),
        );
        let prints = self.comm.fingerprints(&state)?;
        for r in 1..self.comm.world as i64 {
            if !prints.get(r).equal(&prints.get(0)) {
                return Err(Error::Dist {
                    rank: self.comm.rank,
                    msg: format!(
                        "at step {}, rank {r}'s parameters or plug-in state differ from rank 0's (the ranks have diverged)",
                        self.step
                    ),
                });
            }
        }
        let mut s = Stats::default();
        s.set("dist/ranks_agree", 1.0);
        self.log.write(self.step, &s)
    }

    /// Periodic evaluation: logs `eval/*`, and when `eval.best` improves, makes this step's
    /// checkpoint (saved now if it was not) the run's best.
    fn evaluate(
        &mut self,
        step: u64,
        saved: Option<PathBuf>,
        elapsed: f64,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<()> {
        let ev = self.evaluator.as_ref().expect("checked by caller");
        let Some(values) = ev.run(
            self.sampler(),
            self.shape.num_classes,
            self.device,
            self.setup.train.seed,
            &self.comm,
            &mut |_, _, _| {},
        )?
        else {
            return Ok(());
        };
        let (key, metric) = ev.best();
        let mut stats = Stats::default();
        for (k, v) in &values {
            stats.set(k.clone(), *v);
        }
        self.log.write(step, &stats)?;
        on_event(Event::Evaluated {
            step,
            stats: &stats,
        });
        if let Some(v) = stats.get(&key) {
            let improved = self.best.is_none_or(|b| metric.better(v, b));
            if improved {
                let ckpt = match saved {
                    Some(p) => p,
                    None => self.save_checkpoint(elapsed)?,
                };
                let path = checkpoint::mark_best(&self.run_dir, &ckpt, &key, v, step)?;
                self.best = Some(v);
                on_event(Event::Saved { step, path: &path });
            }
        }
        Ok(())
    }

    /// Reloads the latest checkpoint in place and shifts the seed, after a divergence; the log
    /// keeps the divergence and says where it went back to.
    fn rollback(&mut self) -> Result<()> {
        let ckpt = checkpoint::latest(&self.run_dir)
            .ok_or_else(|| Error::io(&self.run_dir, "no checkpoint to roll back to"))?;
        let offset = self.seed_offset + 1;
        let failed_at = self.step;
        let mut fresh = Trainer::resume(self.setup.clone(), &self.run_dir, &ckpt)?;
        fresh.seed_offset = offset;
        let detail = format!(
            "after the divergence at step {failed_at}: continued from step {} with seed offset {offset}",
            fresh.step
        );
        fresh.log.event(failed_at, "rollback", &detail)?;
        *self = fresh;
        Ok(())
    }

    /// Named tensors of every store and of Adam's state (tests compare two runs bit for bit;
    /// the ranks of a job compare their names and shapes before step 0).
    pub fn snapshot(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (prefix, vs) in [
            ("g", &self.g_vs),
            ("d", &self.d_vs),
            ("g_ema", &self.ema_vs),
            ("plugins", &self.plugins_vs),
        ] {
            for (k, t) in checkpoint::store_of(vs) {
                out.push((format!("{prefix}/{k}"), t));
            }
        }
        for (k, t) in self
            .opt_g
            .state("g")
            .into_iter()
            .chain(self.opt_d.state("d"))
        {
            out.push((format!("adam/{k}"), t));
        }
        out
    }
}
