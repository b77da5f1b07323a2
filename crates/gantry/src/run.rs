//! The entry points the CLI calls: each takes plain options, does all validation before any work,
//! and returns a `gantry::Error` whose Display is one line.

use crate::config::RunConfig;
use crate::device::{parse_device, seed_torch, set_threads, Purpose};
use crate::error::{Error, Result};
use crate::models;
use crate::train::{self, checkpoint, Event, Outcome, Trainer};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use tch::{nn, Kind, Tensor};

#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Preset name or TOML file.
    pub config: Option<String>,
    /// `key=value` overrides.
    pub sets: Vec<String>,
    /// Run directory; default `runs/NNNNN-<preset>`.
    pub out: Option<PathBuf>,
    /// Continue this run directory from its latest checkpoint.
    pub resume: Option<PathBuf>,
}

/// The configuration a `train` call would use (also what `--dry-run` prints).
pub fn resolve_config(opts: &TrainOptions) -> Result<RunConfig> {
    if let Some(run) = &opts.resume {
        let ckpt = checkpoint::resolve(run)?;
        let meta = checkpoint::read_meta(&ckpt)?;
        let saved = RunConfig::from_value_str(&meta.config, &ckpt)?;
        if opts.config.is_some() {
            return Err(Error::config("--config", "cannot be combined with --resume (the run's own configuration is used; change safe keys with --set)"));
        }
        return saved.with_sets(&opts.sets);
    }
    RunConfig::resolve(opts.config.as_deref(), &opts.sets)
}

/// `runs/00000-<preset>`, the first free number.
pub fn next_run_dir(root: &Path, preset: &str) -> PathBuf {
    let mut n = 0;
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            if let Some(num) = e.file_name().to_str().and_then(|s| s.split('-').next()).and_then(|s| s.parse::<u32>().ok()) {
                n = n.max(num + 1);
            }
        }
    }
    root.join(format!("{n:05}-{preset}"))
}

/// Trains (or resumes) a run; returns how it ended and its directory.
pub fn train(opts: &TrainOptions, stop: &AtomicBool, on_event: &mut dyn FnMut(Event)) -> Result<(Outcome, PathBuf)> {
    let cfg = resolve_config(opts)?;
    let mut trainer = match &opts.resume {
        Some(run) => {
            let run_dir = if run.join("meta.json").exists() {
                // A checkpoint directory: its run is two levels up.
                run.parent().and_then(|p| p.parent()).map(Path::to_path_buf).unwrap_or_else(|| run.clone())
            } else {
                run.clone()
            };
            Trainer::resume(&run_dir, Some(cfg))?
        }
        None => {
            let dir = opts.out.clone().unwrap_or_else(|| next_run_dir(Path::new("runs"), &cfg.preset));
            if checkpoint::latest(&dir).is_some() {
                return Err(Error::config(
                    "--out",
                    format!("{} already holds a run; use --resume {} or another --out", dir.display(), dir.display()),
                ));
            }
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, format!("cannot create the run directory: {e}")))?;
            Trainer::new(cfg, &dir)?
        }
    };
    let outcome = trainer.run(stop, on_event)?;
    Ok((outcome, trainer.run_dir.clone()))
}

#[derive(Clone, Debug)]
pub struct SampleOptions {
    /// A run directory (its latest checkpoint) or a checkpoint directory.
    pub checkpoint: PathBuf,
    pub n: usize,
    /// A PNG file (grid) or a directory (one PNG per sample).
    pub out: PathBuf,
    pub seed: u64,
    pub grid: bool,
    pub device: Option<String>,
    /// Use the raw generator instead of its EMA copy.
    pub no_ema: bool,
}

/// Draws `n` samples from a checkpoint's generator (EMA copy when it has one).
pub fn sample(opts: &SampleOptions) -> Result<Vec<PathBuf>> {
    if opts.n == 0 {
        return Err(Error::config("--n", "must be at least 1"));
    }
    let ckpt = checkpoint::resolve(&opts.checkpoint)?;
    let meta = checkpoint::read_meta(&ckpt)?;
    let cfg = RunConfig::from_value_str(&meta.config, &ckpt)?;
    let device = parse_device(opts.device.as_deref().unwrap_or(&cfg.train.device))?;
    set_threads(cfg.train.threads);
    let dataset = gantry_data::open(&cfg.data)?;
    let shape = train::data_shape(dataset.as_ref());
    let vs = nn::VarStore::new(device);
    let g = models::build_generator(vs.root(), &cfg.model, &shape)?;
    let store = if cfg.train.ema.enabled && !opts.no_ema { "g_ema" } else { "g" };
    let saved = checkpoint::read_store(&ckpt, store)?;
    checkpoint::restore_into(&vs.variables(), &saved, &ckpt.join(format!("{store}.safetensors")))?;
    seed_torch(opts.seed, 0, Purpose::Sample, 0);
    let mut chunks = Vec::new();
    let mut left = opts.n as i64;
    while left > 0 {
        let b = left.min(256);
        let z = Tensor::randn([b, g.z_dim()], (Kind::Float, device));
        let labels = shape.num_classes.map(|n| Tensor::randint(n, [b], (Kind::Int64, device)));
        chunks.push(tch::no_grad(|| g.forward(&z, labels.as_ref(), false)).to_device(tch::Device::Cpu));
        left -= b;
    }
    let x = Tensor::cat(&chunks, 0);
    if opts.grid || opts.out.extension().is_some_and(|e| e == "png") {
        if let Some(parent) = opts.out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        train::samples::save(&x, &opts.out, dataset.as_ref())?;
        return Ok(vec![opts.out.clone()]);
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let size = x.size();
    let values: Vec<f32> = Vec::try_from(x.flatten(0, -1)).map_err(|e: tch::TchError| Error::Torch(e.to_string()))?;
    let shape4 = [size[0] as usize, size[1] as usize, size[2] as usize, size[3] as usize];
    Ok(gantry_data::image_io::save_images(&values, shape4, &opts.out, "sample")?)
}
