//! The entry points the CLI calls: each takes typed options, does all validation before any work,
//! and returns a `gantry::Error` whose Display is one line.

use crate::config::{RunConfig, SAFE_ON_RESUME};
use crate::device::{seed_torch, set_threads, DeviceSpec, Purpose};
use crate::dist::{Comm, JobEnv};
use crate::error::{Error, Result};
use crate::eval::{Features, MetricSet};
use crate::models;
use crate::models::stylegan2::layers::NoiseMode;
use crate::rundir::{checkpoint, samples};
use crate::train::{self, Event, Outcome, Trainer};
use gantry_metrics::Preprocessing;
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
    /// Start a new run from these weights (a network pickle): the architecture is the file's,
    /// optimiser and plug-in state start fresh.
    pub init: Option<PathBuf>,
}

/// The configuration a `train` call would use, checked by the validation gate (also what
/// `--dry-run` prints).
pub fn resolve_config(opts: &TrainOptions) -> Result<RunConfig> {
    resolve_with_init(&without_auto(opts)).map(|(cfg, _)| cfg)
}

/// `--resume auto` is `train.resume = "auto"` with the configuration as given (no run to read
/// it from yet).
fn without_auto(opts: &TrainOptions) -> TrainOptions {
    if opts.resume.as_deref() != Some(Path::new(RESUME_AUTO)) {
        return opts.clone();
    }
    TrainOptions {
        resume: None,
        sets: [opts.sets.clone(), vec!["train.resume=\"auto\"".into()]].concat(),
        ..opts.clone()
    }
}

/// [`resolve_config`], and the weights of `--init` (whose architecture replaces `model`).
fn resolve_with_init(opts: &TrainOptions) -> Result<(RunConfig, Option<crate::interop::Imported>)> {
    let mut cfg = if let Some(run) = &opts.resume {
        if opts.config.is_some() {
            return Err(Error::config("--config", "cannot be combined with --resume (the run's own configuration is used; change safe keys with --set)"));
        }
        saved_config(&checkpoint::resolve(run)?)?.with_sets(&opts.sets)?
    } else {
        RunConfig::resolve(opts.config.as_deref(), &opts.sets)?
    };
    let imported =
        match &opts.init {
            None => None,
            Some(_) if opts.resume.is_some() => return Err(Error::config(
                "--init",
                "cannot be combined with --resume (a resumed run continues from its own weights)",
            )),
            Some(path) => {
                if let Some(set) = opts
                    .sets
                    .iter()
                    .find(|s| s.trim_start().starts_with("model."))
                {
                    return Err(Error::config(
                        "--set",
                        format!(
                            "{set}: the architecture comes from --init {}",
                            path.display()
                        ),
                    ));
                }
                let imported = crate::interop::import(path)?;
                cfg.model = imported.model.clone();
                Some(imported)
            }
        };
    cfg.validate()?;
    Ok((cfg, imported))
}

/// The resolved configuration a checkpoint was written with.
fn saved_config(ckpt: &Path) -> Result<RunConfig> {
    let meta = checkpoint::read_meta(ckpt)?;
    // Another task's run: say which, and what takes it.
    if meta.arch.starts_with("classify/") {
        return Err(Error::checkpoint(
            ckpt,
            "is a classifier run, not a GAN (gantry classify eval | attack | ood --run takes it)",
        ));
    }
    if meta.arch.starts_with("translate/") {
        return Err(Error::checkpoint(
            ckpt,
            "is a translation run, not a GAN (gantry translate --checkpoint takes it; gantry train --resume continues it)",
        ));
    }
    RunConfig::from_value_str(&meta.config, ckpt)
}

/// The run directory of `path`: itself, or for a checkpoint directory the run it belongs to.
fn run_dir_of(path: &Path) -> PathBuf {
    if path.join("meta.json").exists() {
        path.parent()
            .and_then(|p| p.parent())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| path.to_path_buf())
    } else {
        path.to_path_buf()
    }
}

/// Continues the run at `path`: a run directory from its latest checkpoint, or a checkpoint
/// directory from exactly that checkpoint (later ones are set aside in
/// `checkpoints/abandoned-<time>/`, so the run's history is the one continued). `cfg` is the configuration asked for now (the saved one when `None`); it may
/// differ from the saved one only in [`SAFE_ON_RESUME`] keys.
pub fn resume(path: &Path, cfg: Option<RunConfig>) -> Result<Trainer> {
    resume_in(path, cfg, Comm::single())
}

/// [`resume`] as one rank of a data-parallel job. Every rank reads the checkpoint: in a job of
/// several machines the run directory must be on a filesystem they share.
pub fn resume_in(path: &Path, cfg: Option<RunConfig>, comm: Comm) -> Result<Trainer> {
    let named = path.join("meta.json").exists();
    let run_dir = run_dir_of(path);
    let latest = checkpoint::latest(&run_dir);
    let resumed = (|| {
        let prepared = prepare_resume(path, cfg);
        let (run_dir, ckpt, cfg) = comm.agree(prepared)?;
        // Rank 0 holds the run from here on (the trainer shares the lock).
        let lock = comm
            .is_main()
            .then(|| crate::rundir::lock::RunLock::acquire(&run_dir));
        let _lock = comm.agree(lock.transpose())?;
        let aside = if named && comm.is_main() {
            set_aside_later(&run_dir, &ckpt)?
        } else {
            None
        };
        let mut setup = cfg.setup();
        setup.comm = comm;
        let mut trainer = Trainer::resume(setup, &run_dir, &ckpt)?;
        if let Some(dir) = aside {
            trainer.add_note(format!(
                "resumed from {}; the later checkpoints were set aside in {}",
                ckpt.display(),
                dir.display()
            ));
        }
        Ok(trainer)
    })();
    // The latest checkpoint of a run directory unreadable: say so, and name the one before.
    match resumed {
        Err(Error::Checkpoint { path: bad, msg }) if !named => {
            let earlier = latest.as_ref().and_then(|l| {
                checkpoint::list(&run_dir)
                    .into_iter()
                    .rev()
                    .find(|c| c != l)
            });
            Err(Error::Checkpoint {
                path: bad,
                msg: match earlier {
                    Some(e) => format!(
                        "{msg}; the run's latest checkpoint is unusable, the one before it is {} (gantry train --resume {})",
                        e.display(),
                        e.display()
                    ),
                    None => msg,
                },
            })
        }
        other => other,
    }
}

/// Moves the checkpoints after `ckpt` into `checkpoints/abandoned-<unix time>/`; its path, if any
/// were moved.
fn set_aside_later(run_dir: &Path, ckpt: &Path) -> Result<Option<PathBuf>> {
    let step = checkpoint::read_meta(ckpt)?.step;
    let later: Vec<PathBuf> = checkpoint::list(run_dir)
        .into_iter()
        .filter(|c| checkpoint::read_meta(c).is_ok_and(|m| m.step > step))
        .collect();
    if later.is_empty() {
        return Ok(None);
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let dir = checkpoint::checkpoints_dir(run_dir).join(format!("abandoned-{secs}"));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    for c in later {
        let to = dir.join(c.file_name().expect("ckpt-N"));
        std::fs::rename(&c, &to).map_err(|e| Error::io(&c, e))?;
    }
    Ok(Some(dir))
}

fn prepare_resume(path: &Path, cfg: Option<RunConfig>) -> Result<(PathBuf, PathBuf, RunConfig)> {
    let run_dir = run_dir_of(path);
    // Exactly the checkpoint named, or the run's latest.
    let ckpt = if path.join("meta.json").exists() {
        path.to_path_buf()
    } else {
        checkpoint::resolve(&run_dir)?
    };
    let saved = saved_config(&ckpt)?;
    let cfg = match cfg {
        None => saved,
        Some(new) => {
            let changed: Vec<String> = saved
                .diff(&new)
                .into_iter()
                .filter(|k| !SAFE_ON_RESUME.contains(&k.as_str()))
                .collect();
            if !changed.is_empty() {
                return Err(Error::config(
                    changed[0].clone(),
                    format!(
                        "differs from the run being resumed ({} changed key(s): {}); only run settings may change on resume (train.steps, device, threads, precision, logging and checkpoint intervals; data.path, workers, prefetch)",
                        changed.len(),
                        changed.join(", ")
                    ),
                ));
            }
            new
        }
    };
    cfg.validate()?;
    Ok((run_dir, ckpt, cfg))
}

/// Joins the data-parallel job the environment describes (torchrun's variables, which
/// `gantry train --nproc N` sets too), or stays one process. In a job on CUDA each rank takes
/// the GPU of its `LOCAL_RANK`, or the only one it sees ([`crate::dist::rank_gpu`]).
pub fn join_job(cfg: &mut RunConfig) -> Result<Comm> {
    let Some(env) = JobEnv::from_env()? else {
        return Ok(Comm::single());
    };
    if let DeviceSpec::Cuda(_) = cfg.train.device {
        let visible = tch::Cuda::device_count().max(0) as usize;
        cfg.train.device = DeviceSpec::Cuda(crate::dist::rank_gpu(env.local_rank, visible)?);
    }
    Comm::join(&env, cfg.train.device, cfg.train.collective_timeout_s)
}

/// `runs/00000-<preset>`, the first free number.
pub fn next_run_dir(root: &Path, preset: &str) -> PathBuf {
    let mut n = 0;
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            if let Some(num) = e
                .file_name()
                .to_str()
                .and_then(|s| s.split('-').next())
                .and_then(|s| s.parse::<u32>().ok())
            {
                n = n.max(num + 1);
            }
        }
    }
    root.join(format!("{n:05}-{preset}"))
}

/// `--resume auto`: resume the run in `--out` if it holds one, else start it there.
pub const RESUME_AUTO: &str = "auto";

/// Trains (or resumes) a run; returns how it ended and its directory.
pub fn train(
    opts: &TrainOptions,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(Event),
) -> Result<(Outcome, PathBuf)> {
    let opts = &without_auto(opts);
    let (mut cfg, imported) = resolve_with_init(opts)?;
    let auto = opts.resume.is_none() && cfg.train.resume == crate::train::ResumeMode::Auto;
    let resume = if auto {
        let out = opts.out.as_deref().ok_or_else(|| {
            Error::config(
                "--out",
                "--resume auto (train.resume = \"auto\") needs --out DIR: the run directory to continue, or to start the run in",
            )
        })?;
        // The same decision on every rank: a checkpoint in `out` means a run to continue.
        checkpoint::latest(out).is_some().then(|| out.to_path_buf())
    } else {
        opts.resume.clone()
    };
    if let Some(run) = &resume {
        // A finished run resumed with the same length has nothing to do, and a shorter one
        // cannot be had: both are told before anything is built or written. An incompatible
        // configuration is refused here with the keys that changed.
        let (_, ckpt, _) = prepare_resume(run, Some(cfg.clone()))?;
        let done = checkpoint::read_meta(&ckpt)?.step;
        if cfg.train.steps < done {
            return Err(Error::config(
                "train.steps",
                format!(
                    "{} is below the {done} steps {} has trained (a run cannot be shortened; to go on from an earlier point, resume one of its checkpoint directories)",
                    cfg.train.steps,
                    ckpt.display()
                ),
            ));
        }
        if cfg.train.steps == done {
            return Ok((Outcome::AlreadyDone { step: done }, run_dir_of(run)));
        }
    }
    let comm = join_job(&mut cfg)?;
    let mut trainer = match &resume {
        Some(run) => resume_in(run, Some(cfg), comm)?,
        None => {
            // Rank 0 picks, locks and checks the run directory; the others take its choice.
            let chosen = if comm.is_main() {
                new_run_dir(opts, &cfg).map(|(dir, lock)| (dir, Some(lock)))
            } else {
                Ok((PathBuf::new(), None))
            };
            let (dir, _lock) = comm.agree(chosen)?;
            let dir = PathBuf::from(comm.broadcast_text(&dir.to_string_lossy())?);
            let mut setup = cfg.setup();
            setup.comm = comm;
            match imported {
                Some(i) => Trainer::from_weights(
                    setup,
                    &dir,
                    crate::train::InitWeights {
                        origin: opts.init.clone().unwrap_or_default(),
                        shape: i.shape,
                        stores: i.stores,
                    },
                )?,
                None => Trainer::new(setup, &dir)?,
            }
        }
    };
    let outcome = trainer.run(stop, on_event)?;
    Ok((outcome, trainer.run_dir.clone()))
}

/// `--out`, or `runs/NNNNN-<preset>`: created and locked; must not hold a run yet.
fn new_run_dir(
    opts: &TrainOptions,
    cfg: &RunConfig,
) -> Result<(PathBuf, crate::rundir::lock::RunLock)> {
    let dir = opts
        .out
        .clone()
        .unwrap_or_else(|| next_run_dir(Path::new("runs"), &cfg.preset));
    if dir.join("meta.json").exists() {
        return Err(Error::config(
            "--out",
            format!(
                "{} is a checkpoint; give a new directory (or --resume it)",
                dir.display()
            ),
        ));
    }
    let lock = crate::rundir::lock::RunLock::acquire(&dir)?;
    if checkpoint::latest(&dir).is_some() {
        return Err(Error::config(
            "--out",
            format!(
                "{} already holds a run; use --resume {} or another --out",
                dir.display(),
                dir.display()
            ),
        ));
    }
    Ok((dir, lock))
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
    pub device: Option<DeviceSpec>,
    /// Use the raw generator instead of its EMA copy.
    pub no_ema: bool,
    /// Overwrite samples already in `out`.
    pub force: bool,
    /// Conditional generators: every sample of this class (default: a grid cycles through the
    /// classes row by row, a directory gets random classes).
    pub class: Option<i64>,
    /// Latents from these seeds, as stylegan2-ada draws them (`RandomState(seed).randn`); the
    /// count replaces `n`. `None`: `n` latents from `seed`.
    pub seeds: Option<Vec<u32>>,
    /// Truncation psi (1 = none): around the tracked average w for StyleGAN2, towards z = 0 for
    /// the others.
    pub psi: f64,
    /// StyleGAN2's noise inputs (the others have none).
    pub noise: NoiseMode,
    /// Frames between consecutive `seeds` (a grid of frames, or an animated GIF when `out` ends in
    /// `.gif`), spherical or linear; in w for StyleGAN2.
    pub interpolate: Option<(i64, bool)>,
    /// StyleGAN2 style mixing: column seeds and the layers they give (`seeds` are the rows).
    pub style_mix: Option<(Vec<u32>, std::ops::Range<i64>)>,
}

impl SampleOptions {
    /// `n` samples of `checkpoint` from `seed` into `out`, with every control at its default.
    pub fn new(checkpoint: PathBuf, n: usize, out: PathBuf, seed: u64) -> Self {
        SampleOptions {
            checkpoint,
            n,
            out,
            seed,
            grid: false,
            device: None,
            no_ema: false,
            force: false,
            class: None,
            seeds: None,
            psi: 1.0,
            noise: NoiseMode::Const,
            interpolate: None,
            style_mix: None,
        }
    }
}

/// Images one grid may hold.
pub const MAX_GRID: usize = 4096;

/// What `gantry sample` wrote.
#[derive(Debug)]
pub struct SampleReport {
    /// The grid file, or the directory of sample files.
    pub path: PathBuf,
    pub images: usize,
    /// What the user should know (a newer checkpoint that could not be used).
    pub warnings: Vec<String>,
}

/// A warning for each `ckpt-*` newer than the one a run directory resolves to that is missing
/// its `meta.json` (a save or deletion cut short), which readers skip.
fn skipped_checkpoints(path: &Path) -> Vec<String> {
    if path.join("meta.json").exists() {
        return Vec::new();
    }
    let used = checkpoint::latest(path);
    checkpoint::incomplete_after_latest(path)
        .into_iter()
        .map(|c| {
            format!(
                "{} has no meta.json (a save or deletion was cut short) and was skipped; using {}",
                c.display(),
                used.as_ref()
                    .map_or("none".into(), |u| u.display().to_string())
            )
        })
        .collect()
}

/// A checkpoint's generator, ready for inference, with what it was trained on.
struct LoadedGenerator {
    cfg: RunConfig,
    shape: models::DataShape,
    device: tch::Device,
    /// The run's data set; `None` for an imported network, which carries none.
    dataset: Option<std::sync::Arc<dyn gantry_data::Dataset>>,
    _vs: nn::VarStore,
    g: Box<dyn models::Generator>,
}

/// Loads the generator of a run or checkpoint directory (the EMA copy when `ema` and the run
/// kept one), on `device` or the run's own.
fn load_generator(path: &Path, device: Option<DeviceSpec>, ema: bool) -> Result<LoadedGenerator> {
    if crate::interop::is_foreign(path) {
        return load_imported_generator(path, device, ema);
    }
    let ckpt = checkpoint::resolve(path)?;
    let cfg = saved_config(&ckpt)?;
    let device = device.unwrap_or(cfg.train.device).open()?;
    set_threads(cfg.train.threads);
    let dataset = gantry_data::open(&cfg.data)?;
    let shape = train::data_shape(dataset.as_ref());
    let vs = nn::VarStore::new(device);
    let g = crate::error::catch_alloc(
        || {
            format!(
                "while building the generator ({})",
                crate::util::size_settings(&cfg.to_toml(), &["model"])
            )
        },
        || models::build_generator(vs.root(), &cfg.model, &shape),
    )?;
    let store = if cfg.train.ema.enabled && ema {
        "g_ema"
    } else {
        "g"
    };
    let saved = checkpoint::read_store(&ckpt, store)?;
    checkpoint::restore_into(
        &vs.variables(),
        &saved,
        &ckpt.join(format!("{store}.safetensors")),
    )?;
    Ok(LoadedGenerator {
        cfg,
        shape,
        device,
        dataset: Some(dataset),
        _vs: vs,
        g,
    })
}

/// [`load_generator`] for a foreign weights file (a network pickle): gantry's architecture
/// built from its constructor arguments, on `device` or the CPU.
fn load_imported_generator(
    path: &Path,
    device: Option<DeviceSpec>,
    ema: bool,
) -> Result<LoadedGenerator> {
    let imported = crate::interop::import(path)?;
    for note in &imported.notes {
        eprintln!("gantry: note: {}: {note}", path.display());
    }
    let mut cfg = RunConfig {
        model: imported.model.clone(),
        ..RunConfig::default()
    };
    cfg.train.ema.enabled = imported.store("g_ema").is_some();
    // Real images for evaluation are brought to the network's own size and channels.
    cfg.data.resolution = imported.shape.resolution as u32;
    cfg.data.channels = Some(imported.shape.channels as u32);
    let device = device.unwrap_or(cfg.train.device).open()?;
    set_threads(cfg.train.threads);
    let vs = nn::VarStore::new(device);
    let g = models::build_generator(vs.root(), &cfg.model, &imported.shape)?;
    let (_, tensors) = imported.generator_store(ema)?;
    crate::interop::load_into(&vs.variables(), tensors, path)?;
    Ok(LoadedGenerator {
        cfg,
        shape: imported.shape,
        device,
        dataset: None,
        _vs: vs,
        g,
    })
}

/// Draws `n` samples from a checkpoint's generator (EMA copy when it has one): one grid image,
/// or one PNG per sample generated and written in batches, so memory stays at one batch however
/// many are asked for. Checked first: the grid's size, samples already in the directory (kept
/// unless `force`), and the free space the files need.
pub fn sample(opts: &SampleOptions) -> Result<SampleReport> {
    sample_with_progress(opts, &mut |_, _, _| {})
}

/// [`sample`], reporting `("samples", written, n)` before the first and after each batch
/// written to a directory (a grid is one batch, and reports nothing).
pub fn sample_with_progress(
    opts: &SampleOptions,
    progress: &mut ProgressFn,
) -> Result<SampleReport> {
    let seeded;
    let opts = match &opts.seeds {
        Some(seeds) if opts.interpolate.is_none() && opts.style_mix.is_none() => {
            seeded = SampleOptions {
                n: seeds.len(),
                ..opts.clone()
            };
            &seeded
        }
        _ => opts,
    };
    if !(opts.psi.is_finite() && (0.0..=2.0).contains(&opts.psi)) {
        return Err(Error::config("--trunc", "must be a number from 0 to 2"));
    }
    if opts.interpolate.is_some() || opts.style_mix.is_some() {
        return sample_figure(opts);
    }
    if opts.n == 0 {
        return Err(Error::config("--n", "must be at least 1"));
    }
    let grid = opts.grid || opts.out.extension().is_some_and(|e| e == "png");
    if grid && opts.n > MAX_GRID {
        return Err(Error::config(
            "--n",
            format!(
                "{} images do not fit one grid (at most {MAX_GRID}); write a directory instead",
                opts.n
            ),
        ));
    }
    if grid && opts.out.exists() && !opts.force {
        return Err(Error::input(
            &opts.out,
            "already exists; pass --force to overwrite it",
        ));
    }
    if !grid && !opts.force {
        if let Some(first) = std::fs::read_dir(&opts.out).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .find(|n| n.starts_with("sample") && n.ends_with(".png"))
        }) {
            return Err(Error::input(
                &opts.out,
                format!("already holds samples ({first}, ...); pass --force to overwrite them or choose another --out"),
            ));
        }
    }
    let LoadedGenerator {
        cfg,
        shape,
        device,
        dataset,
        g,
        ..
    } = load_generator(&opts.checkpoint, opts.device, !opts.no_ema)?;
    if !grid {
        // A PNG is at most about its raw size plus headers.
        let per = (shape.numel as u64).max(1) + 256;
        let need = per.saturating_mul(opts.n as u64);
        if let Some(free) = crate::util::available_bytes(&opts.out) {
            if need > free {
                return Err(Error::config(
                    "--n",
                    format!(
                        "{} images of up to {per} bytes need up to {:.1} GB; {} has {:.1} GB free",
                        opts.n,
                        need as f64 / 1e9,
                        opts.out.display(),
                        free as f64 / 1e9
                    ),
                ));
            }
        }
    }
    let classes = shape.num_classes.filter(|_| cfg.model.arch().conditional());
    match (opts.class, classes) {
        (Some(_), None) => {
            return Err(Error::config(
                "--class",
                "this generator is not class-conditional",
            ))
        }
        (Some(k), Some(n)) if !(0..n).contains(&k) => {
            return Err(Error::config(
                "--class",
                format!("{k} is not a class of this generator (0 to {})", n - 1),
            ))
        }
        _ => {}
    }
    seed_torch(opts.seed, 0, Purpose::Sample, 0);
    let mut next_seed = 0usize;
    let mut batch = |b: i64| {
        // Drawn on the CPU: the same samples for a seed on every device.
        let z = match &opts.seeds {
            Some(seeds) => {
                let z = crate::generate::seed_latents(
                    &seeds[next_seed..next_seed + b as usize],
                    g.z_dim(),
                );
                next_seed += b as usize;
                z
            }
            None => Tensor::randn([b, g.z_dim()], (Kind::Float, tch::Device::Cpu)),
        }
        .to(device);
        let labels = classes.map(|n| match opts.class {
            Some(k) => Tensor::full([b], k, (Kind::Int64, device)),
            None if grid => samples::grid_classes(b, n, device),
            None => Tensor::randint(n, [b], (Kind::Int64, tch::Device::Cpu)).to(device),
        });
        tch::no_grad(|| g.generate(&z, labels.as_ref(), opts.psi, opts.noise))
            .to_device(tch::Device::Cpu)
    };
    if grid {
        let x = batch(opts.n as i64);
        if let Some(parent) = opts.out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::input(parent, e))?;
        }
        samples::save(&x, &opts.out, dataset.as_deref(), cfg.data.kind)?;
        return Ok(SampleReport {
            path: opts.out.clone(),
            images: opts.n,
            warnings: skipped_checkpoints(&opts.checkpoint),
        });
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::input(&opts.out, e))?;
    let mut done = 0;
    progress("samples", done, opts.n);
    while done < opts.n {
        let b = (opts.n - done).min(256);
        let (values, shape4) = samples::host_images(&batch(b as i64))?;
        gantry_data::image_io::save_images_from(&values, shape4, &opts.out, "sample", done)
            .map_err(|e| Error::io(&opts.out, e))?;
        done += b;
        progress("samples", done, opts.n);
    }
    Ok(SampleReport {
        path: opts.out.clone(),
        images: opts.n,
        warnings: skipped_checkpoints(&opts.checkpoint),
    })
}

/// `gantry sample --interpolate` and `--style-mix`: one grid (or, for an interpolation into a
/// `.gif`, an animation).
fn sample_figure(opts: &SampleOptions) -> Result<SampleReport> {
    let seeds = opts
        .seeds
        .as_deref()
        .ok_or_else(|| Error::config("--seeds", "--interpolate and --style-mix take --seeds"))?;
    if opts.out.exists() && !opts.force {
        return Err(Error::input(
            &opts.out,
            "already exists; pass --force to overwrite it",
        ));
    }
    let LoadedGenerator {
        shape,
        device,
        g,
        cfg,
        ..
    } = load_generator(&opts.checkpoint, opts.device, !opts.no_ema)?;
    let controls = crate::generate::Controls {
        psi: opts.psi,
        noise: opts.noise,
    };
    let classes = shape.num_classes.filter(|_| cfg.model.arch().conditional());
    let labels = classes.map(|_| Tensor::full([1], opts.class.unwrap_or(0), (Kind::Int64, device)));
    let (x, columns) = match (&opts.interpolate, &opts.style_mix) {
        (Some((steps, spherical)), _) => {
            let frames = crate::generate::walk(
                g.as_ref(),
                seeds,
                *steps,
                *spherical,
                labels.as_ref(),
                &controls,
                device,
            )?;
            (frames, *steps as usize)
        }
        (None, Some((cols, layers))) => {
            let x = crate::generate::style_mix(
                g.as_ref(),
                seeds,
                cols,
                layers.clone(),
                &controls,
                device,
            )?;
            (x, cols.len() + 1)
        }
        (None, None) => unreachable!("the caller checked for a figure"),
    };
    if x.size()[0] as usize > MAX_GRID {
        return Err(Error::config(
            "--seeds",
            format!("the figure would hold more than {MAX_GRID} images"),
        ));
    }
    if let Some(parent) = opts.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::input(parent, e))?;
    }
    let (values, shape4) = samples::host_images(&x)?;
    if opts.out.extension().is_some_and(|e| e == "gif") {
        gantry_data::image_io::save_gif(&values, shape4, 4, &opts.out)?;
    } else {
        gantry_data::image_io::save_grid(&values, shape4, columns, &opts.out)?;
    }
    Ok(SampleReport {
        path: opts.out.clone(),
        images: shape4[0],
        warnings: skipped_checkpoints(&opts.checkpoint),
    })
}

/// Progress of a long computation: (what, done, total).
pub type ProgressFn<'a> = dyn FnMut(&str, usize, usize) + 'a;

#[derive(Clone, Debug)]
pub struct FidOptions {
    pub a: String,
    pub b: String,
    pub weights: Option<PathBuf>,
    pub mode: Preprocessing,
    pub precision: crate::precision::Precision,
    pub features: Features,
    pub n: usize,
    pub save_stats: Option<PathBuf>,
    pub device: tch::Device,
}

pub struct FidOutput {
    /// `FID` or `classifier-feature FID`.
    pub label: String,
    pub value: f64,
    pub warnings: Vec<String>,
}

/// Statistics of one side of `gantry fid`: a pytorch-fid `.npz`, an image folder (native size,
/// as pytorch-fid reads it) or a data set spec.
/// One side of `gantry fid`, opened (statistics read, data set headers checked) before the
/// network loads, so a bad side is named before minutes of feature extraction on the other.
enum Side<'a> {
    Stats(gantry_metrics::Stats),
    Folder(&'a Path),
    Data(std::sync::Arc<dyn gantry_data::Dataset>),
}

fn open_side(spec: &str) -> Result<Side<'_>> {
    let path = Path::new(spec);
    if path.extension().is_some_and(|e| e == "npz") {
        if !path.exists() {
            return Err(Error::input(path, "does not exist"));
        }
        let stats = gantry_metrics::Stats::load_npz(path).map_err(crate::eval::metrics_err)?;
        return Ok(Side::Stats(stats));
    }
    if path.is_dir() {
        return Ok(Side::Folder(path));
    }
    if !spec.contains(':') && !path.exists() && spec.parse::<gantry_data::DataKind>().is_err() {
        return Err(Error::input(
            path,
            "does not exist (an image folder, a pytorch-fid .npz or a data set spec like mnist:DIR)",
        ));
    }
    let data = gantry_data::DataConfig::from_spec(spec)?;
    Ok(Side::Data(gantry_data::open(&data)?))
}

fn side_stats(
    spec: &str,
    side: Side,
    n: usize,
    ex: &mut Option<Box<dyn gantry_metrics::FeatureExtractor>>,
    opts: &FidOptions,
    progress: &mut ProgressFn,
) -> Result<gantry_metrics::Stats> {
    if let Side::Stats(stats) = side {
        return Ok(stats);
    }
    let ex = match ex {
        Some(ex) => ex,
        None => ex.insert(crate::eval::extractor(
            &opts.features,
            opts.weights.as_deref(),
            opts.mode,
            opts.precision,
            opts.device,
        )?),
    };
    let set = match side {
        Side::Folder(path) => {
            crate::eval::folder_features(path, n, ex.as_ref(), |d, t| progress(spec, d, t))?
        }
        Side::Data(ds) => {
            crate::eval::dataset_features(ds.as_ref(), n, ex.as_ref(), |d, t| progress(spec, d, t))?
        }
        Side::Stats(_) => unreachable!("returned above"),
    };
    // Name the side: "a/: FID statistics: expected at least 2 samples ..., got 1".
    set.stats()
        .map_err(|e| Error::Metrics(format!("{spec}: {e}")))
}

/// `gantry fid A B`.
pub fn fid(opts: &FidOptions, progress: &mut ProgressFn) -> Result<FidOutput> {
    // Both sides first (spellings, paths, headers), before the network loads.
    let side_a = open_side(&opts.a)?;
    let side_b = open_side(&opts.b)?;
    let mut ex = None;
    let a = side_stats(&opts.a, side_a, opts.n, &mut ex, opts, progress)?;
    if let Some(out) = &opts.save_stats {
        a.save_npz(out).map_err(crate::eval::metrics_err)?;
    }
    let b = side_stats(&opts.b, side_b, opts.n, &mut ex, opts, progress)?;
    let fid = gantry_metrics::frechet_distance(&a, &b).map_err(crate::eval::metrics_err)?;
    let label = match opts.features {
        Features::Inception => "FID",
        Features::Classifier(_) => "classifier-feature FID",
    }
    .to_string();
    Ok(FidOutput {
        label,
        value: fid.value,
        warnings: fid.warnings.iter().map(|w| w.to_string()).collect(),
    })
}

#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub checkpoint: PathBuf,
    pub data: Option<String>,
    pub metrics: Vec<crate::eval::MetricSpec>,
    pub n: usize,
    pub real_n: usize,
    pub weights: Option<PathBuf>,
    pub mode: Preprocessing,
    pub precision: crate::precision::Precision,
    pub features: Features,
    pub device: Option<DeviceSpec>,
}

/// `gantry eval`: metrics of a checkpoint's generator (EMA copy when it has one).
pub fn eval(opts: &EvalOptions, progress: &mut ProgressFn) -> Result<Vec<(String, f64)>> {
    if opts.n == 0 {
        return Err(Error::config("--n", "must be at least 1 generated sample"));
    }
    let LoadedGenerator {
        mut cfg,
        shape,
        device,
        g,
        dataset,
        ..
    } = load_generator(&opts.checkpoint, opts.device, true)?;
    if dataset.is_none() && opts.data.is_none() {
        return Err(Error::config(
            "--data",
            format!(
                "{} is an imported network, which names no data set: pass the real images to compare with",
                opts.checkpoint.display()
            ),
        ));
    }
    let e = &mut cfg.eval;
    e.metrics = opts.metrics.clone();
    e.n = opts.n;
    e.real_n = opts.real_n;
    e.weights = opts.weights.clone();
    e.mode = opts.mode;
    e.precision = opts.precision;
    e.features = opts.features.clone();
    e.reference = opts.data.clone();
    // Small evaluations keep KID computable: subsets no larger than the smallest KID sample.
    let kid_n = e
        .metrics
        .iter()
        .filter(|m| m.set == MetricSet::Kid)
        .map(|m| m.protocol.map_or(opts.n, |p| p.n))
        .min();
    if let Some(n) = kid_n {
        e.kid_subset_size = e.kid_subset_size.min(n);
    }
    // `--metrics` decides; the run's own `eval.best` may not be among them.
    e.best = e
        .metrics
        .first()
        .and_then(|m| m.set.metrics().first())
        .copied()
        .unwrap_or(e.best);
    let to_flags = |err| match err {
        Error::Config { key, msg } => Error::Config {
            key: key.replace("eval.", "--"),
            msg,
        },
        other => other,
    };
    cfg.eval
        .validate(cfg.data.kind.is_points())
        .map_err(to_flags)?;
    let ev = crate::eval::Evaluator::new(&cfg.eval, &cfg.data, &shape, device, true, progress)
        .map_err(to_flags)?;
    let values = ev
        .run(
            g.as_ref(),
            shape.num_classes,
            device,
            cfg.train.seed,
            &crate::dist::Comm::single(),
            progress,
        )?
        .unwrap_or_default();
    Ok(values
        .into_iter()
        .map(|(k, v)| (k.trim_start_matches("eval/").to_string(), v))
        .collect())
}
