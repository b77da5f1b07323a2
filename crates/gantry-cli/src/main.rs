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
#[command(name = "gantry", version, about = "Train, evaluate and sample GANs with AdaptiveMix and FQ discriminator plug-ins")]
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
    /// Write plots and an HTML page for a run (RUN_DIR/report/index.html).
    Report {
        run_dir: PathBuf,
    },
    /// List the built-in presets.
    Presets,
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
        Command::Train { config, mut sets, out, resume, device, dry_run } => {
            if let Some(d) = device {
                sets.push(format!("train.device={d}"));
            }
            let opts = TrainOptions { config, sets, out, resume };
            if dry_run {
                print!("{}", run::resolve_config(&opts)?.to_toml());
                return Ok(ExitCode::SUCCESS);
            }
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            // First Ctrl-C: save and stop after the current step. Second: exit at once.
            let _ = ctrlc::set_handler(move || {
                if flag.swap(true, Ordering::SeqCst) {
                    std::process::exit(130);
                }
            });
            let mut bar = progress::Progress::new();
            let result = run::train(&opts, &stop, &mut |ev| bar.event(ev));
            bar.finish();
            let (outcome, run_dir) = result?;
            match outcome {
                gantry::train::Outcome::Finished { step } => {
                    eprintln!("gantry: trained {step} steps; run directory {}", run_dir.display());
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
        Command::Sample { checkpoint, n, out, seed, grid, device, no_ema } => {
            let paths = run::sample(&SampleOptions { checkpoint, n, out, seed, grid, device, no_ema })?;
            match paths.as_slice() {
                [one] => eprintln!("gantry: wrote {}", one.display()),
                many => eprintln!("gantry: wrote {} images", many.len()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { config, sets, what, warmup, steps } => {
            let cfg = gantry::RunConfig::resolve(config.as_deref(), &sets)?;
            let timing = gantry::bench::train_steps(cfg, &what, warmup, steps)?;
            println!("{}", serde_json::to_string(&timing).expect("serialises"));
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
