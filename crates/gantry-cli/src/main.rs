//! `gantry`: a thin layer over the library. Parses flags, calls one `gantry::run::*` function,
//! prints errors as one line (`gantry: error: ...`) and exits 2 for bad input, 1 for a failed run.

mod progress;

use clap::{Parser, Subcommand};
use gantry::run::{self, SampleOptions, TrainOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "gantry",
    version,
    about = "Train, evaluate and sample GANs with AdaptiveMix and FQ discriminator plug-ins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a GAN (with no arguments: a DCGAN on the built-in shapes data set).
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
        /// Continue a run from its latest checkpoint.
        #[arg(long, value_name = "RUN_DIR")]
        resume: Option<PathBuf>,
        /// cpu, cuda or cuda:N (same as --set train.device=...).
        #[arg(long)]
        device: Option<String>,
        /// Print the resolved configuration and exit.
        #[arg(long)]
        dry_run: bool,
    },
    /// Draw samples from a trained generator.
    Sample {
        /// Run directory (latest checkpoint) or checkpoint directory.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Number of samples.
        #[arg(long, default_value_t = 64)]
        n: usize,
        /// Output: a .png grid, or a directory of PNG files.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Write one grid image (also implied by an --out ending in .png).
        #[arg(long)]
        grid: bool,
        #[arg(long)]
        device: Option<String>,
        /// Sample the raw generator instead of its EMA copy.
        #[arg(long)]
        no_ema: bool,
    },
    /// Time training steps on a fixed batch and print JSON (see scripts/bench.sh for the
    /// side-by-side comparison with PyTorch).
    Bench {
        #[arg(long)]
        config: Option<String>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// A label for the output.
        #[arg(long, default_value = "step")]
        what: String,
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        #[arg(long, default_value_t = 30)]
        steps: usize,
    },
    /// FID between two image sets (like `python -m pytorch_fid A B`). Each is an image folder,
    /// a data set spec (`mnist:DIR`, `cifar10:DIR`, `mnist@test:DIR` for the test split, ...)
    /// or a pytorch-fid `.npz` of statistics.
    Fid {
        a: String,
        b: String,
        /// FID Inception weights (pt_inception-2015-12-05-6726825d.pth); default $GANTRY_FID_WEIGHTS.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Preprocessing: pytorch-fid, tf or clean.
        #[arg(long, default_value = "pytorch-fid")]
        mode: String,
        /// `inception` or `classifier:PATH`.
        #[arg(long, default_value = "inception")]
        features: String,
        /// Use at most N images of each set (0 = all).
        #[arg(long, default_value_t = 0)]
        n: usize,
        /// Also write the statistics of A to this .npz (pytorch-fid format).
        #[arg(long)]
        save_stats: Option<PathBuf>,
        #[arg(long)]
        device: Option<String>,
    },
    /// Evaluate a trained generator against a data set.
    Eval {
        #[arg(long)]
        checkpoint: PathBuf,
        /// Reference data set spec (`mnist:DIR`, `mnist@test:DIR`, a folder, ...); default: the run's held-out data.
        #[arg(long)]
        data: Option<String>,
        /// Comma-separated: fid, kid, is, pr.
        #[arg(long, default_value = "fid,kid")]
        metrics: String,
        /// Generated samples.
        #[arg(long, default_value_t = 10000)]
        n: usize,
        /// Real samples (0 = all).
        #[arg(long, default_value_t = 0)]
        real_n: usize,
        #[arg(long)]
        weights: Option<PathBuf>,
        #[arg(long, default_value = "pytorch-fid")]
        mode: String,
        #[arg(long, default_value = "inception")]
        features: String,
        #[arg(long)]
        device: Option<String>,
    },
    /// Train the small classifier whose features replace Inception's on non-natural images.
    Classifier {
        #[command(subcommand)]
        action: ClassifierCommand,
    },
    /// Run a grid of arms x seeds (baseline, +AdaptiveMix, +FQ, ...) and write a report;
    /// rerun the same command to resume an interrupted experiment.
    Experiment {
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
    Report { run_dir: PathBuf },
    /// List the built-in presets.
    Presets,
}

#[derive(Subcommand)]
enum ClassifierCommand {
    /// Train on a labelled data set; reports accuracy on its test split.
    Train {
        /// Data set spec with labels, e.g. `mnist:../shared/data/mnist`.
        #[arg(long)]
        data: String,
        /// Output weights (.safetensors).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 3)]
        epochs: usize,
        /// Resolution the images are brought to (match the GAN's).
        #[arg(long, default_value_t = 32)]
        resolution: u32,
        /// Validation split of the same data set.
        #[arg(long, default_value = "test")]
        val_split: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        device: Option<String>,
    },
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

fn main() -> ExitCode {
    let cli = Cli::parse();
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
            device,
            dry_run,
        } => {
            if let Some(d) = device {
                sets.push(format!("train.device={d}"));
            }
            let opts = TrainOptions {
                config,
                sets,
                out,
                resume,
            };
            if dry_run {
                print!("{}", run::resolve_config(&opts)?.to_toml());
                return Ok(ExitCode::SUCCESS);
            }
            let stop = stop_flag();
            let mut bar = progress::Progress::new();
            let result = run::train(&opts, &stop, &mut |ev| bar.event(ev));
            bar.finish();
            let (outcome, run_dir) = result?;
            match outcome {
                gantry::train::Outcome::Finished { step } => {
                    eprintln!(
                        "gantry: trained {step} steps; run directory {}",
                        run_dir.display()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                gantry::train::Outcome::Interrupted { step } => {
                    eprintln!(
                        "gantry: interrupted at step {step}; checkpoint saved. Resume with: gantry train --resume {}",
                        run_dir.display()
                    );
                    Ok(ExitCode::from(130))
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
        } => {
            let paths = run::sample(&SampleOptions {
                checkpoint,
                n,
                out,
                seed,
                grid,
                device,
                no_ema,
            })?;
            match paths.as_slice() {
                [one] => eprintln!("gantry: wrote {}", one.display()),
                many => eprintln!("gantry: wrote {} images", many.len()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            config,
            sets,
            what,
            warmup,
            steps,
        } => {
            let cfg = gantry::RunConfig::resolve(config.as_deref(), &sets)?;
            let timing = gantry::bench::train_steps(cfg, &what, warmup, steps)?;
            println!("{}", serde_json::to_string(&timing).expect("serialises"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Fid {
            a,
            b,
            weights,
            mode,
            features,
            n,
            save_stats,
            device,
        } => {
            let device = gantry::device::parse_device(device.as_deref().unwrap_or("cpu"))?;
            let out = run::fid(
                &run::FidOptions {
                    a,
                    b,
                    weights,
                    mode,
                    features,
                    n,
                    save_stats,
                    device,
                },
                &mut progress::counter(),
            )?;
            println!("{}: {}", out.label, out.value);
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
            weights,
            mode,
            features,
            device,
        } => {
            let metrics: Vec<String> = metrics
                .split(',')
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty())
                .collect();
            let opts = run::EvalOptions {
                checkpoint,
                data,
                metrics,
                n,
                real_n,
                weights,
                mode,
                features,
                device,
            };
            let values = run::eval(&opts, &mut progress::counter())?;
            for (k, v) in &values {
                println!("{k:24} {v:.6}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Classifier {
            action:
                ClassifierCommand::Train {
                    data,
                    out,
                    epochs,
                    resolution,
                    val_split,
                    seed,
                    device,
                },
        } => {
            let device = gantry::device::parse_device(device.as_deref().unwrap_or("cpu"))?;
            let mut train_cfg = gantry::data::DataConfig::from_spec(&data)?;
            train_cfg.resolution = resolution;
            train_cfg.labels = true;
            let mut val = train_cfg.clone();
            val.split = val_split;
            let report = gantry::classifier::train(
                &train_cfg,
                &val,
                &out,
                epochs,
                device,
                seed,
                |epoch, loss| {
                    eprintln!("epoch {epoch}/{epochs}  loss {loss:.4}");
                },
            )?;
            println!(
                "wrote {} ({} training images, {} epochs); accuracy on {} validation images: {:.4}",
                report.path.display(),
                report.train_samples,
                report.epochs,
                report.val_samples,
                report.val_accuracy
            );
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
                gantry::experiment::run(&cfg, &out, &stop, |line| eprintln!("gantry: {line}"))?
            };
            eprintln!("gantry: report {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { run_dir } => {
            let index = gantry::report::write(&run_dir)?;
            eprintln!("gantry: wrote {}", index.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Presets => {
            for (name, about, _) in gantry::config::PRESETS {
                println!("{name:20} {about}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
