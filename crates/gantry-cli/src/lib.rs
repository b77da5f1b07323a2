//! `gantry`: a thin layer over the library. Parses flags, calls one `gantry::run::*` function,
//! prints errors as one line (`gantry: error: ...`) and exits 2 for bad input, 1 for a failed run.
//! A library with a one-line binary (`src/main.rs`), so that tests can walk the flags ([`Cli`]).

// No `unwrap()` outside tests: user input reaches most paths, and a panic is never the answer to
// it (`expect` remains for invariants the code itself established, with the invariant as message).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod classify;
mod launch;
mod progress;
mod translate;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use gantry::device::DeviceSpec;
use gantry::eval::{Features, MetricSpec};
use gantry::precision::Precision;
use gantry::run::{self, SampleOptions, TrainOptions};
use gantry_metrics::Preprocessing;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag taking one of a closed set of names, parsed by the library's own (serde) parser so that
/// flags and config files accept the same values; clap lists them in `--help` and in errors.
fn choice<T>(names: &'static [&'static str]) -> impl TypedValueParser<Value = T>
where
    T: serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
{
    PossibleValuesParser::new(names).map(|name| {
        T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(&name))
            .expect("the listed names are the serde names (tested in the library)")
    })
}

fn device(s: &str) -> Result<DeviceSpec, String> {
    s.parse()
}

fn features(s: &str) -> Result<Features, String> {
    s.parse()
}

fn metric_spec(s: &str) -> Result<MetricSpec, String> {
    s.parse()
}

/// A number of seconds > 0 (`--every 2.5`).
fn seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!("'{s}': expected seconds > 0 (at most 86400)")),
    }
}

/// The feature network of `fid` and `eval`, and how it sees the images.
#[derive(clap::Args)]
struct ExtractorFlags {
    /// FID Inception weights (pt_inception-2015-12-05-6726825d.pth); default $GANTRY_FID_WEIGHTS.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Whose preprocessing to reproduce.
    #[arg(long, default_value = "pytorch-fid", value_parser = choice::<Preprocessing>(&Preprocessing::NAMES))]
    mode: Preprocessing,
    /// Feature extraction in fp32 (the protocol), bf16 or fp16 (autocast).
    #[arg(long, default_value = "fp32", value_parser = choice::<Precision>(Precision::NAMES))]
    precision: Precision,
    /// `inception` or `classifier:PATH`.
    #[arg(long, default_value = "inception", value_parser = features)]
    features: Features,
}

#[derive(Parser)]
#[command(
    name = "gantry",
    version,
    about = "Train, evaluate and sample GANs with AdaptiveMix and FQ discriminator plug-ins"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a GAN (with no arguments: a DCGAN on the built-in shapes data set), or an image
    /// translation model (a translation preset such as `ugatit-light-64`, or a file with
    /// `task = "translate"`).
    Train {
        /// Preset name (see `gantry presets`) or TOML file.
        #[arg(long)]
        config: Option<String>,
        /// Override one key, e.g. `--set train.steps=500 --set adaptivemix.enabled=true`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Run directory (default: runs/NNNNN-<preset>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue a run from its latest checkpoint; `auto`: continue the run in --out if it
        /// holds one, else start it there (for jobs a scheduler or torchrun restarts).
        #[arg(long, value_name = "RUN_DIR|auto")]
        resume: Option<PathBuf>,
        /// Start a new run (fine-tuning) from published weights: a stylegan2-ada-pytorch
        /// network pickle. The architecture is the file's; optimiser state starts fresh.
        #[arg(long, value_name = "FILE")]
        init: Option<PathBuf>,
        /// cpu, cuda or cuda:N (same as --set train.device=...).
        #[arg(long, value_parser = device)]
        device: Option<DeviceSpec>,
        /// Check and print the resolved configuration, and exit.
        #[arg(long)]
        dry_run: bool,
        /// Train data-parallel in N processes on this machine (CPU: gloo; CUDA: one GPU each,
        /// NCCL). train.batch_size stays the global batch. For several machines, start
        /// `gantry train` under torchrun or a scheduler instead (see the README).
        #[arg(long, default_value_t = 1, value_name = "N")]
        nproc: usize,
    },
    /// Draw samples from a trained generator.
    Sample {
        /// Run directory (latest checkpoint), checkpoint directory, or a network pickle
        /// (stylegan2-ada-pytorch's network-snapshot-*.pkl).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Number of samples.
        #[arg(long, default_value_t = 64)]
        n: usize,
        /// Output: a .png grid, or a directory of PNG files.
        #[arg(long)]
        out: PathBuf,
        /// Seed of the latents (the same seed draws the same samples on every device).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Write one grid image (also implied by an --out ending in .png).
        #[arg(long)]
        grid: bool,
        /// cpu, cuda or cuda:N (default: the run's own).
        #[arg(long, value_parser = device)]
        device: Option<DeviceSpec>,
        /// Sample the raw generator instead of its EMA copy.
        #[arg(long)]
        no_ema: bool,
        /// Overwrite samples (or a grid file) already at --out.
        #[arg(long)]
        force: bool,
        /// Class-conditional generators: every sample of class K (default: a grid shows one
        /// class per row, cycling; a directory gets random classes).
        #[arg(long, value_name = "K")]
        class: Option<i64>,
        /// Latents of these seeds, as stylegan2-ada-pytorch draws them
        /// (np.random.RandomState(seed).randn(z_dim)): e.g. 0-63,100. Replaces --n and --seed.
        #[arg(long, value_name = "LIST")]
        seeds: Option<String>,
        /// Truncation psi: around the tracked average w for StyleGAN2, towards z = 0 for the
        /// others (1 = none).
        #[arg(long = "trunc", value_name = "PSI", default_value_t = 1.0)]
        trunc: f64,
        /// StyleGAN2 noise inputs: const (the layers' fixed noise, stylegan2-ada's default),
        /// random or none.
        #[arg(long, default_value = "const", value_parser = ["const", "random", "none"])]
        noise_mode: String,
        /// Interpolate between consecutive --seeds in N frames each (in w for StyleGAN2):
        /// a grid, or an animated GIF when --out ends in .gif.
        #[arg(long, value_name = "N")]
        interpolate: Option<i64>,
        /// Linear instead of spherical interpolation.
        #[arg(long)]
        linear: bool,
        /// StyleGAN2 style-mixing grid: these column seeds' styles on the --seeds rows.
        #[arg(long, value_name = "LIST")]
        style_mix: Option<String>,
        /// Layers (ws) the column seeds give in --style-mix, e.g. 0-6 (coarse styles).
        #[arg(long, value_name = "A-B", default_value = "0-6")]
        style_layers: String,
    },
    /// Time training steps on a fixed batch and print JSON (see scripts/bench.sh for the
    /// side-by-side comparison with PyTorch).
    Bench {
        /// Preset name (see `gantry presets`) or TOML file, as for `gantry train`.
        #[arg(long)]
        config: Option<String>,
        /// Override one key, e.g. `--set train.threads=2`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// A label for the output.
        #[arg(long, default_value = "step")]
        what: String,
        /// Untimed steps first (allocations, autotuning).
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        /// Timed steps.
        #[arg(long, default_value_t = 30)]
        steps: usize,
        /// Time a data-parallel job of N processes on this machine (rank 0's timings).
        #[arg(long, default_value_t = 1, value_name = "N")]
        nproc: usize,
    },
    /// FID between two image sets (like `python -m pytorch_fid A B`). Each is an image folder,
    /// a data set spec (`mnist:DIR`, `cifar10:DIR`, `mnist@test:DIR` for the test split, ...)
    /// or a pytorch-fid `.npz` of statistics.
    Fid {
        /// The first set: an image folder, a data set spec or a pytorch-fid .npz.
        a: String,
        /// The second set, as A.
        b: String,
        #[command(flatten)]
        extractor: ExtractorFlags,
        /// Use at most N images of each set (0 = all).
        #[arg(long, default_value_t = 0)]
        n: usize,
        /// Also write the statistics of A to this .npz (pytorch-fid format).
        #[arg(long)]
        save_stats: Option<PathBuf>,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu", value_parser = device)]
        device: DeviceSpec,
    },
    /// Evaluate a trained generator against a data set.
    Eval {
        /// Run directory, checkpoint directory, or a network pickle (then --data is needed).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Reference data set spec (`mnist:DIR`, `mnist@test:DIR`, a folder, ...); default: the run's held-out data.
        #[arg(long)]
        data: Option<String>,
        /// Comma-separated metrics: protocols as papers name them (`fid50k_full`: 50,000
        /// generated images against the whole training split; `kid50k_full`, `pr50k3_full`,
        /// `is50k`, shorter ones such as `fid10k_test`), or `fid`, `kid`, `is`, `pr` measured
        /// with --n against --data.
        #[arg(long, default_value = "fid50k_full", value_delimiter = ',', value_parser = metric_spec)]
        metrics: Vec<MetricSpec>,
        /// Generated samples for metrics named without a protocol (`fid`, `kid`, ...).
        #[arg(long, default_value_t = 10000)]
        n: usize,
        /// Real samples for metrics named without a protocol (0 = all).
        #[arg(long, default_value_t = 0)]
        real_n: usize,
        #[command(flatten)]
        extractor: ExtractorFlags,
        /// cpu, cuda or cuda:N (default: the run's own).
        #[arg(long, value_parser = device)]
        device: Option<DeviceSpec>,
    },
    /// Image classification: train (CE, mixup, AdaptiveMix), evaluate, attack (FGSM/PGD) and
    /// score out-of-distribution data.
    Classify {
        #[command(subcommand)]
        action: classify::ClassifyCommand,
    },
    /// Train the small classifier whose features replace Inception's on non-natural images.
    Classifier {
        #[command(subcommand)]
        action: ClassifierCommand,
    },
    /// Run a grid of arms x seeds (baseline, +AdaptiveMix, +FQ, ...) and write a report;
    /// rerun the same command to resume an interrupted experiment.
    Experiment {
        /// The experiment's TOML file (arms, seeds, budget; see experiments/*.toml).
        #[arg(long)]
        config: PathBuf,
        /// Output directory (default experiments/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only (re)write the report from the runs that exist.
        #[arg(long)]
        report_only: bool,
        /// `key=value` for every arm, after the file's own `set` (e.g. `data.path=my_images/`).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Write plots and an HTML page for a run (RUN_DIR/report/index.html).
    Report {
        /// The run directory.
        run_dir: PathBuf,
        /// Keep the page current while the run trains (it reloads itself); ends after a last
        /// write once the run has finished, or at Ctrl-C.
        #[arg(long)]
        watch: bool,
        /// With --watch: seconds between looks at the run.
        #[arg(long, value_name = "SECONDS", default_value_t = 10.0, requires = "watch", value_parser = seconds)]
        every: f64,
    },
    /// List the built-in presets.
    Presets,
    /// Translate a folder of images with a trained translation run (U-GAT-IT): each image is
    /// written to --out as PNG under its own name.
    Translate {
        /// Run directory (its best checkpoint, else its latest), checkpoint, or a
        /// UGATIT-pytorch checkpoint (`*_params_*.pt`).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Image size for a UGATIT-pytorch light checkpoint, which does not record it
        /// (default 256, UGATIT-pytorch's default).
        #[arg(long, value_name = "PIXELS")]
        size: Option<i64>,
        /// Folder of PNG/JPEG images (sub-folders included).
        #[arg(long = "in", value_name = "DIR")]
        input: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// a2b (the run's domain A to B) or b2a.
        #[arg(long, default_value = "a2b", value_parser = ["a2b", "b2a"])]
        direction: String,
        /// Write input | translation | cycle reconstruction | CAM heat-map side by side.
        #[arg(long)]
        details: bool,
        /// Overwrite files already in --out.
        #[arg(long)]
        force: bool,
        /// cpu, cuda or cuda:N (default: the run's own).
        #[arg(long, value_parser = device)]
        device: Option<DeviceSpec>,
    },
    /// Convert a folder or zip of images into a data set as stylegan2-ada-pytorch's
    /// dataset_tool.py writes it (PNG files + dataset.json with labels), a zip or a folder.
    Dataset {
        /// A folder of PNG/JPEG images (sub-folders included) or a zip of them.
        #[arg(long)]
        source: PathBuf,
        /// Output: OUT.zip, or a folder.
        #[arg(long)]
        dest: PathBuf,
        /// Output side in pixels (default: the images' own size, which must agree).
        #[arg(long, value_name = "PIXELS")]
        resolution: Option<u32>,
        /// How images become square: none, center-crop, center-crop-wide or pad.
        #[arg(long, default_value = "none")]
        transform: String,
        /// Labels: auto (the source's dataset.json if any), none, folders (class sub-folders)
        /// or dataset-json.
        #[arg(long, default_value = "auto")]
        labels: String,
        /// Keep at most this many images.
        #[arg(long, value_name = "N")]
        max_images: Option<usize>,
        /// keep, grey or rgb.
        #[arg(long, default_value = "keep")]
        channels: String,
        /// Replace an existing --dest.
        #[arg(long)]
        force: bool,
    },
    /// Write a run's networks as safetensors files plus kwargs.json, loadable in PyTorch: under
    /// the reference implementation's names (stylegan2-ada-pytorch, R3GAN, BigGAN-PyTorch,
    /// UGATIT-pytorch) or gantry's own (python/gantry_torch builds those). docs/interop.md.
    Export {
        /// Run directory (latest checkpoint) or checkpoint directory.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output directory (G.safetensors, G_ema.safetensors, D.safetensors, kwargs.json).
        #[arg(long)]
        out: PathBuf,
        /// reference: the official code's names and constructor arguments; gantry: gantry's.
        #[arg(long, default_value = "reference", value_parser = ["reference", "gantry"])]
        format: String,
        /// Overwrite the files of an earlier export.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum ClassifierCommand {
    /// Train the feature network of classifier-feature FID: `gantry classify train`'s preset
    /// (small CNN, linear head, no crops), checkpoint chosen on held-out training data.
    Train {
        /// Data set spec with labels, e.g. `mnist:../shared/data/mnist`.
        #[arg(long)]
        data: String,
        /// Output run directory (use it as `classifier:DIR`).
        #[arg(long)]
        out: PathBuf,
        /// Passes over the training data.
        #[arg(long, default_value_t = 3)]
        epochs: usize,
        /// Resolution the images are brought to (match the GAN's).
        #[arg(long, default_value_t = 32)]
        resolution: u32,
        /// Seed of initialisation, data order and the held-out split.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu", value_parser = device)]
        device: DeviceSpec,
    },
}

/// This very binary, even if it is rebuilt meanwhile (`current_exe` then names a deleted file):
/// all processes of a job or an experiment use one build.
fn self_exe() -> PathBuf {
    let proc_exe = std::path::Path::new("/proc/self/exe");
    if proc_exe.exists() {
        proc_exe.to_path_buf()
    } else {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("gantry"))
    }
}

/// Starts `gantry` as a child process of an experiment.
fn launcher() -> std::process::Command {
    #[allow(unused_mut)]
    let mut cmd = std::process::Command::new(self_exe());
    #[cfg(unix)]
    std::os::unix::process::CommandExt::arg0(&mut cmd, "gantry");
    cmd
}

/// Processes `--nproc` may start per CPU core (a CPU job of more ranks than cores is a test of
/// the job, not a way to train faster).
const RANKS_PER_CORE: usize = 4;

/// `--nproc N` for this device: at least 1; on CUDA at most one per visible GPU, on the CPU at
/// most [`RANKS_PER_CORE`] per core.
fn check_nproc(nproc: usize, device: DeviceSpec) -> gantry::Result<()> {
    if nproc == 0 {
        return Err(gantry::Error::config("--nproc", "must be at least 1"));
    }
    if nproc == 1 {
        return Ok(());
    }
    // The device first: "no CUDA GPU is visible" says more than a job that cannot start.
    device.open()?;
    let (limit, why) = match device {
        DeviceSpec::Cuda(_) => (
            tch::Cuda::device_count().max(0) as usize,
            "one process per visible CUDA GPU".to_string(),
        ),
        DeviceSpec::Cpu => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (
                cores * RANKS_PER_CORE,
                format!("{RANKS_PER_CORE} processes per CPU core, {cores} cores"),
            )
        }
    };
    if nproc > limit {
        return Err(gantry::Error::config(
            "--nproc",
            format!("{nproc} is more than this machine takes: at most {limit} ({why})"),
        ));
    }
    Ok(())
}

/// `gantry train --nproc N`: every check the job's processes would make first, then the job.
fn launch_local(opts: TrainOptions, nproc: usize) -> gantry::Result<ExitCode> {
    if std::env::var_os("WORLD_SIZE").is_some() {
        return Err(gantry::Error::config(
            "--nproc",
            "cannot be used inside a job that torchrun or a scheduler started (WORLD_SIZE is set)",
        ));
    }
    let cfg = run::resolve_config(&opts)?;
    check_nproc(nproc, cfg.train.device)?;
    if cfg.train.batch_size % nproc != 0 {
        return Err(gantry::Error::config(
            "train.batch_size",
            format!(
                "{} does not split evenly over {nproc} processes (it is the global batch)",
                cfg.train.batch_size
            ),
        ));
    }
    if !gantry::dist::has_backend(matches!(cfg.train.device, DeviceSpec::Cuda(_))) {
        return Err(gantry::Error::config(
            "--nproc",
            "this gantry was built without the process group for this device (CPU needs gloo's headers: apt-get install libgloo-dev, then rebuild)",
        ));
    }
    let mut args: Vec<std::ffi::OsString> = vec!["train".into()];
    if let Some(c) = &opts.config {
        args.extend(["--config".into(), c.into()]);
    }
    match &opts.resume {
        Some(r) => args.extend(["--resume".into(), r.into()]),
        None => {
            // Every rank must be told the same directory.
            let out = opts
                .out
                .clone()
                .unwrap_or_else(|| run::next_run_dir(std::path::Path::new("runs"), &cfg.preset));
            args.extend(["--out".into(), out.into()]);
        }
    }
    if let Some(init) = &opts.init {
        args.extend(["--init".into(), init.into()]);
    }
    for s in &opts.sets {
        args.extend(["--set".into(), s.into()]);
    }
    if cfg.train.threads == 0 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        args.extend([
            "--set".into(),
            format!("train.threads={}", (cores / nproc).max(1)).into(),
        ]);
    }
    Ok(launch::run(nproc, args))
}

/// Raised by the first Ctrl-C / SIGTERM (work stops after saving); a second one exits at once.
fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
    stop
}

/// clap's own errors as gantry's one line (help and version print as usual).
fn parse_args() -> Result<Cli, ExitCode> {
    Cli::try_parse().map_err(|e| {
        use clap::error::ErrorKind;
        if matches!(
            e.kind(),
            ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        ) {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        eprintln!("gantry: error: {}", error_line(&e));
        ExitCode::from(2)
    })
}

/// A clap error as one line: its first line, the arguments it lists below a colon, clap's own
/// suggestion (`unrecognized subcommand 'trian' (did you mean 'train'?)`, from the same
/// similarity clap's "tip:" lines use) and, for a bad value, the valid ones.
pub fn error_line(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let text = e.to_string();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let mut line = first.trim_start_matches("error: ").to_string();
    // "the following required arguments were not provided:" lists them on the lines below.
    if line.ends_with(':') {
        let listed: Vec<&str> = lines
            .take_while(|l| l.starts_with(' '))
            .map(str::trim)
            .collect();
        line = format!("{} {}", line, listed.join(", "));
    }
    // clap lists similar names from the least to the most similar.
    let quoted = |names: &[String]| {
        names
            .iter()
            .rev()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let mut notes = Vec::new();
    for kind in [
        ContextKind::SuggestedSubcommand,
        ContextKind::SuggestedArg,
        ContextKind::SuggestedValue,
    ] {
        match e.get(kind) {
            Some(ContextValue::Strings(names)) if !names.is_empty() => {
                notes.push(format!("did you mean {}?", quoted(names)))
            }
            Some(ContextValue::String(name)) => notes.push(format!(
                "did you mean {}?",
                quoted(std::slice::from_ref(name))
            )),
            _ => {}
        }
    }
    // clap's other tips: "'gantry classify --run' exists", "to pass '-x' as a value, use ...".
    if let Some(ContextValue::StyledStrs(tips)) = e.get(ContextKind::Suggested) {
        notes.extend(tips.iter().map(|t| format!("tip: {t}")));
    }
    if !notes.is_empty() {
        line = format!("{line} ({})", notes.join("; "));
    }
    if let Some(ContextValue::Strings(valid)) = e.get(ContextKind::ValidValue) {
        if !valid.is_empty() && !line.contains("valid:") {
            line.push_str(&format!(" (valid: {})", valid.join(", ")));
        }
    }
    line
}

/// Writes to stdout; a closed pipe (`gantry presets | head -1`) ends the output quietly.
fn print_out(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

/// The `gantry` binary's `main`.
pub fn main() -> ExitCode {
    let cli = match parse_args() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    // One numerics setting for every command (libtorch's own defaults differ between cuBLAS and
    // cuDNN): TF32 off, the autotuner off, as the benchmarks' PyTorch twins set them; training
    // runs then apply their `train.tf32`, `train.cudnn_benchmark` and `train.deterministic`.
    gantry::device::set_numerics(false, false, false);
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gantry: error: {e}");
            ExitCode::from(if e.is_user_error() { 2 } else { 1 })
        }
    }
}

fn dispatch(cli: Cli) -> gantry::Result<ExitCode> {
    match cli.command {
        Command::Train {
            config,
            mut sets,
            out,
            resume,
            init,
            device,
            dry_run,
            nproc,
        } => {
            if let Some(d) = device {
                sets.push(format!("train.device={d}"));
            }
            if translate::wanted(config.as_deref(), resume.as_deref()) {
                if resume.as_deref() == Some(std::path::Path::new(run::RESUME_AUTO)) {
                    return Err(gantry::Error::config(
                        "--resume",
                        "auto is for GAN training; resume a translation run by its directory",
                    ));
                }
                if nproc != 1 {
                    return Err(gantry::Error::config(
                        "--nproc",
                        "translation runs train in one process",
                    ));
                }
                return translate::train(config, sets, out, resume, dry_run);
            }
            let opts = TrainOptions {
                config,
                sets,
                out,
                resume,
                init,
            };
            if dry_run {
                let cfg = run::resolve_config(&opts)?;
                check_nproc(nproc, cfg.train.device)?;
                print_out(&cfg.to_toml());
                return Ok(ExitCode::SUCCESS);
            }
            if nproc != 1 {
                return launch_local(opts, nproc);
            }
            // A rank of a job other than 0 trains quietly; its errors still reach stderr.
            let rank0 = std::env::var("RANK").map_or(true, |r| r.trim() == "0");
            let stop = stop_flag();
            let mut bar = rank0.then(progress::Progress::new);
            let result = run::train(&opts, &stop, &mut |ev| {
                if let Some(bar) = &mut bar {
                    bar.event(ev)
                }
            });
            if let Some(bar) = &mut bar {
                bar.finish();
            }
            let (outcome, run_dir) = result?;
            if !rank0 {
                return Ok(match outcome {
                    gantry::train::Outcome::Finished { .. }
                    | gantry::train::Outcome::AlreadyDone { .. } => ExitCode::SUCCESS,
                    gantry::train::Outcome::Interrupted { .. } => ExitCode::from(130),
                });
            }
            match outcome {
                gantry::train::Outcome::Finished { step } => {
                    eprintln!(
                        "gantry: trained {step} steps; run directory {}",
                        run_dir.display()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                gantry::train::Outcome::Interrupted { step } => {
                    // A job `--nproc N` started resumes with `--nproc N` (the launcher says N).
                    let nproc = std::env::var(launch::NPROC_VAR)
                        .map(|n| format!(" --nproc {n}"))
                        .unwrap_or_default();
                    eprintln!(
                        "gantry: interrupted at step {step}; checkpoint saved. Resume with: gantry train{nproc} --resume {}",
                        run_dir.display()
                    );
                    Ok(ExitCode::from(130))
                }
                gantry::train::Outcome::AlreadyDone { step } => {
                    eprintln!(
                        "gantry: {} has already trained {step} steps (train.steps); nothing to do (raise it with --set train.steps=N to train on)",
                        run_dir.display()
                    );
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Command::Sample {
            checkpoint,
            n,
            out,
            seed,
            grid,
            device,
            no_ema,
            force,
            class,
            seeds,
            trunc,
            noise_mode,
            interpolate,
            linear,
            style_mix,
            style_layers,
        } => {
            use gantry::models::stylegan2::layers::NoiseMode;
            let seeds = seeds
                .as_deref()
                .map(gantry::generate::parse_seeds)
                .transpose()?;
            let style_mix = match style_mix {
                None => None,
                Some(cols) => {
                    let cols = gantry::generate::parse_seeds(&cols)
                        .map_err(|e| gantry::Error::config("--style-mix", e.to_string()))?;
                    let (a, b) = style_layers
                        .split_once('-')
                        .and_then(|(a, b)| Some((a.parse::<i64>().ok()?, b.parse::<i64>().ok()?)))
                        .filter(|(a, b)| a <= b)
                        .ok_or_else(|| {
                            gantry::Error::config("--style-layers", "expected A-B, e.g. 0-6")
                        })?;
                    Some((cols, a..b + 1))
                }
            };
            let opts = SampleOptions {
                grid,
                device,
                no_ema,
                force,
                class,
                seeds,
                psi: trunc,
                noise: match noise_mode.as_str() {
                    "random" => NoiseMode::Random,
                    "none" => NoiseMode::None,
                    _ => NoiseMode::Const,
                },
                interpolate: interpolate.map(|n| (n, !linear)),
                style_mix,
                ..SampleOptions::new(checkpoint, n, out, seed)
            };
            // A grid is one batch; a directory of many files gets a bar.
            let figure = opts.interpolate.is_some() || opts.style_mix.is_some();
            let report = if figure || grid || opts.out.extension().is_some_and(|e| e == "png") {
                run::sample(&opts)?
            } else {
                let mut bar = progress::Bar::new("sample");
                let mut count = progress::counter(&mut bar, "images");
                let report =
                    run::sample_with_progress(&opts, &mut |_, done, total| count("", done, total));
                drop(count);
                let report = report?;
                bar.finish();
                report
            };
            for w in &report.warnings {
                eprintln!("gantry: warning: {w}");
            }
            if report.path.is_dir() {
                eprintln!(
                    "gantry: wrote {} images to {}",
                    report.images,
                    report.path.display()
                );
            } else {
                eprintln!("gantry: wrote {}", report.path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            config,
            sets,
            what,
            warmup,
            steps,
            nproc,
        } => {
            if nproc > 1 {
                let mut args: Vec<std::ffi::OsString> = vec!["bench".into()];
                if let Some(c) = &config {
                    args.extend(["--config".into(), c.into()]);
                }
                for s in &sets {
                    args.extend(["--set".into(), s.into()]);
                }
                args.extend([
                    "--what".into(),
                    what.into(),
                    "--warmup".into(),
                    warmup.to_string().into(),
                    "--steps".into(),
                    steps.to_string().into(),
                ]);
                return Ok(launch::run(nproc, args));
            }
            let timing = if translate::wanted(config.as_deref(), None) {
                let cfg = gantry::translate::TranslateConfig::resolve(config.as_deref(), &sets)?;
                gantry::bench::translate_steps(cfg, &what, warmup, steps)?
            } else {
                let cfg = gantry::RunConfig::resolve(config.as_deref(), &sets)?;
                gantry::bench::train_steps(cfg, &what, warmup, steps)?
            };
            print_out(&format!(
                "{}\n",
                serde_json::to_string(&timing).expect("serialises")
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Fid {
            a,
            b,
            extractor:
                ExtractorFlags {
                    weights,
                    mode,
                    precision,
                    features,
                },
            n,
            save_stats,
            device,
        } => {
            let device = device.open()?;
            let mut bar = progress::Bar::new("fid");
            let out = run::fid(
                &run::FidOptions {
                    a,
                    b,
                    weights,
                    mode,
                    precision,
                    features,
                    n,
                    save_stats,
                    device,
                },
                &mut progress::counter(&mut bar, "images"),
            )?;
            bar.finish();
            print_out(&format!("{}: {}\n", out.label, out.value));
            for w in out.warnings {
                eprintln!("gantry: warning: {w}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval {
            checkpoint,
            data,
            metrics,
            n,
            real_n,
            extractor:
                ExtractorFlags {
                    weights,
                    mode,
                    precision,
                    features,
                },
            device,
        } => {
            let opts = run::EvalOptions {
                checkpoint,
                data,
                metrics,
                n,
                real_n,
                weights,
                mode,
                precision,
                features,
                device,
            };
            let mut bar = progress::Bar::new("eval");
            let values = run::eval(&opts, &mut progress::counter(&mut bar, "images"))?;
            bar.finish();
            let text: String = values
                .iter()
                .map(|(k, v)| format!("{k:24} {v:.6}\n"))
                .collect();
            print_out(&text);
            Ok(ExitCode::SUCCESS)
        }
        Command::Classify { action } => classify::dispatch(action),
        Command::Classifier {
            action:
                ClassifierCommand::Train {
                    data,
                    out,
                    epochs,
                    resolution,
                    seed,
                    device,
                },
        } => {
            let cfg = gantry::classify::features_preset(&data, resolution, epochs, seed, device)?;
            let stop = stop_flag();
            let mut bar = progress::Bar::new("classifier train");
            let summary = gantry::classify::train(
                &cfg,
                &out,
                gantry::classify::Start::Fresh,
                &stop,
                &mut classify::train_progress(&mut bar, "classifier train"),
            )?;
            bar.finish();
            if summary.stopped {
                return Err(gantry::Error::config("classifier", "interrupted"));
            }
            print_out(&format!(
                "wrote {} ({} training images, {} epochs); accuracy on {} validation images (held out of the training data, never trained on): {:.4}; use it as classifier:{}\n",
                out.display(),
                summary.train_images,
                summary.epochs_done,
                summary.val_images,
                summary.best_val_acc.unwrap_or(f64::NAN),
                out.display()
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Experiment {
            config,
            out,
            report_only,
            sets,
        } => {
            let cfg = gantry::experiment::ExperimentConfig::from_file(&config, &sets)?;
            let out = out.unwrap_or_else(|| PathBuf::from("experiments").join(&cfg.name));
            let path = if report_only {
                gantry::experiment::write_report(&cfg, &out)?
            } else {
                let stop = stop_flag();
                gantry::experiment::run(&cfg, &out, &stop, Some(&launcher), |line| {
                    eprintln!("gantry: {line}")
                })?
            };
            eprintln!("gantry: report {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Translate {
            checkpoint,
            input,
            out,
            direction,
            details,
            force,
            device,
            size,
        } => translate::folder(translate::FolderArgs {
            run: &checkpoint,
            input: &input,
            out: &out,
            a2b: direction == "a2b",
            device,
            size,
            details,
            force,
        }),
        Command::Dataset {
            source,
            dest,
            resolution,
            transform,
            labels,
            max_images,
            channels,
            force,
        } => {
            use gantry::data::dataset_tool as dt;
            let parse = |key: &str, v: &str, names: &[&str]| {
                gantry::Error::config(key, format!("{v:?} is not one of {}", names.join(", ")))
            };
            let opts = dt::ConvertOptions {
                source,
                dest,
                resolution,
                transform: transform
                    .parse()
                    .map_err(|_| parse("--transform", &transform, dt::ConvertTransform::NAMES))?,
                labels: labels
                    .parse()
                    .map_err(|_| parse("--labels", &labels, dt::LabelSource::NAMES))?,
                max_images,
                channels: channels
                    .parse()
                    .map_err(|_| parse("--channels", &channels, dt::Channels::NAMES))?,
                overwrite: force,
                ..Default::default()
            };
            let mut bar = progress::Bar::new("dataset");
            let mut count = progress::counter(&mut bar, "images");
            let summary =
                dt::convert_with_progress(&opts, &mut |done, total| count("", done, total));
            drop(count);
            bar.finish();
            let summary = summary?;
            for note in &summary.notes {
                eprintln!("gantry: note: {note}");
            }
            eprintln!("gantry: {summary}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            checkpoint,
            out,
            format,
            force,
        } => {
            let report = gantry::interop::export(&gantry::interop::ExportOptions {
                checkpoint,
                out,
                format: gantry::interop::ExportFormat::parse(&format)
                    .expect("clap checked the value"),
                force,
            })?;
            for f in &report.files {
                eprintln!("gantry: wrote {}", f.display());
            }
            eprintln!("gantry: load them with {} (docs/interop.md)", report.target);
            Ok(ExitCode::SUCCESS)
        }
        Command::Report {
            run_dir,
            watch,
            every,
        } => {
            // An experiment directory gets the experiment's page across its arms.
            let experiment = run_dir.join("experiment.toml").is_file();
            if experiment && !watch {
                let cfg = gantry::experiment::recorded(&run_dir)?;
                let page = gantry::experiment::write_report(&cfg, &run_dir)?;
                eprintln!("gantry: wrote {}", page.display());
                return Ok(ExitCode::SUCCESS);
            }
            if watch {
                let stop = stop_flag();
                eprintln!(
                    "gantry: keeping {} current (every {every} s; Ctrl-C to stop)",
                    run_dir.join("report/index.html").display()
                );
                let every = std::time::Duration::from_secs_f64(every);
                if experiment {
                    gantry::experiment::watch_experiment(&run_dir, every, &stop)?;
                } else {
                    gantry::report::watch(&run_dir, every, &stop)?;
                }
                eprintln!(
                    "gantry: wrote {}",
                    run_dir.join("report/index.html").display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let index = gantry::report::write(&run_dir)?;
            eprintln!("gantry: wrote {}", index.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Presets => {
            let text: String = gantry::config::PRESETS
                .iter()
                .chain(gantry::translate::PRESETS)
                .chain(gantry::classify::PRESETS)
                .map(|(name, about, _)| format!("{name:20} {about}\n"))
                .collect();
            print_out(&text);
            Ok(ExitCode::SUCCESS)
        }
    }
}
