//! `gantry classify train | eval | attack | ood`: flags to a `ClassifyConfig` and calls into
//! `gantry::classify`.

use crate::progress::{self, Bar};
use crate::{choice, device, print_out, stop_flag};
use clap::Subcommand;
use gantry::classify::{self, attack, objective::Mode, ClassifyConfig};
use gantry::device::DeviceSpec;
use gantry::util::TaskConfig;
use std::path::PathBuf;
use std::process::ExitCode;

/// A number or a fraction: `0.03`, `8/255`.
fn fraction(s: &str) -> Result<f64, String> {
    let v = match s.split_once('/') {
        Some((a, b)) => {
            let (a, b): (f64, f64) = (
                a.trim()
                    .parse()
                    .map_err(|_| format!("'{s}' is not a number or a/b"))?,
                b.trim()
                    .parse()
                    .map_err(|_| format!("'{s}' is not a number or a/b"))?,
            );
            a / b
        }
        None => s
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not a number or a/b"))?,
    };
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("'{s}' must be a finite number > 0"))
    }
}

#[derive(Subcommand)]
pub enum ClassifyCommand {
    /// Train a classifier (cross-entropy, mixup or AdaptiveMix); the best checkpoint on a
    /// validation part held out of the training data becomes RUN/checkpoints/best.
    Train {
        /// A classification preset (`adaptivemix-wrn-cifar`; `gantry presets` lists them) or a
        /// TOML file of settings (see docs/classification.md).
        #[arg(long)]
        config: Option<String>,
        /// Output run directory.
        #[arg(long, default_value = "runs/classify")]
        out: PathBuf,
        /// Continue the run in this directory exactly where its last checkpoint stopped.
        /// (`--epochs N` then sets the new total; `--set` may change train.epochs, threads,
        /// device, log_every, keep_checkpoints.)
        #[arg(long, conflicts_with_all = ["config", "data", "classes", "model", "mode"])]
        resume: Option<PathBuf>,
        /// Labelled data spec (`data.spec`), e.g. `mnist:../shared/data/mnist`.
        #[arg(long)]
        data: Option<String>,
        /// Keep only these classes (`data.classes`), e.g. `0-4`.
        #[arg(long)]
        classes: Option<String>,
        /// `small`, `resnet18`, `wrn-DEPTH-WIDEN` (the AdaptiveMix reference's WRN, e.g.
        /// wrn-16-4, wrn-28-10) or `wrn-zk-DEPTH-WIDEN` (the WRN paper's layout).
        #[arg(long)]
        model: Option<String>,
        /// Training objective (`objective.mode`): cross-entropy, mixup or AdaptiveMix.
        #[arg(long, value_parser = choice::<Mode>(Mode::NAMES))]
        mode: Option<Mode>,
        /// Passes over the training data (`train.epochs`).
        #[arg(long)]
        epochs: Option<usize>,
        /// `key=value`, after the file (e.g. `train.lr=0.05`, `model.head=orthogonal`).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Check and print the resolved configuration, then exit.
        #[arg(long)]
        dry_run: bool,
    },
    /// Clean accuracy on the test split.
    Eval {
        /// Run directory (its best checkpoint) or checkpoint directory.
        #[arg(long)]
        run: PathBuf,
        /// Another labelled data spec of the same shape (default: the run's, test split).
        #[arg(long)]
        data: Option<String>,
        /// At most N test images (0 = all).
        #[arg(long, default_value_t = 0)]
        n: usize,
        /// cpu, cuda or cuda:N (default: the run's own).
        #[arg(long, value_parser = device)]
        device: Option<DeviceSpec>,
    },
    /// Accuracy under FGSM and PGD attacks (white-box, on the test split).
    Attack {
        /// Run directory (its best checkpoint) or checkpoint directory.
        #[arg(long)]
        run: PathBuf,
        /// Comma-separated: fgsm, pgd-STEPS (e.g. fgsm,pgd-10,pgd-20).
        #[arg(long, default_value = "fgsm,pgd-10,pgd-20")]
        attacks: String,
        /// The attacks' threat model: an L-inf or an L2 ball of radius --eps.
        #[arg(long, default_value = "linf", value_parser = choice::<attack::Norm>(attack::Norm::NAMES))]
        norm: attack::Norm,
        /// Radius in [0, 1] pixel units (a number or a fraction); default 8/255 for linf, 0.5 for l2.
        #[arg(long, value_parser = fraction)]
        eps: Option<f64>,
        /// PGD step size; default eps/4.
        #[arg(long, value_parser = fraction)]
        step: Option<f64>,
        /// At most N test images (0 = all).
        #[arg(long, default_value_t = 1000)]
        n: usize,
        /// Images attacked at once.
        #[arg(long, default_value_t = 250)]
        batch: usize,
        /// Another labelled data spec of the same shape (default: the run's, test split).
        #[arg(long)]
        data: Option<String>,
        /// cpu, cuda or cuda:N (default: the run's own).
        #[arg(long, value_parser = device)]
        device: Option<DeviceSpec>,
    },
    /// Time training steps (or an attack) of a model on a fixed random batch; prints one JSON
    /// line like `gantry bench` (the PyTorch twin is benches/classify_step.py).
    Bench {
        /// `small`, `resnet18`, `wrn-DEPTH-WIDEN` or `wrn-zk-DEPTH-WIDEN` (as classify train).
        #[arg(long, default_value = "resnet18")]
        model: String,
        /// Training objective: cross-entropy, mixup or AdaptiveMix.
        #[arg(long, default_value = "ce", value_parser = choice::<Mode>(Mode::NAMES))]
        mode: Mode,
        /// Images per step.
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Image side in pixels.
        #[arg(long, default_value_t = 32)]
        resolution: i64,
        /// Image channels (1 or 3).
        #[arg(long, default_value_t = 3)]
        channels: i64,
        /// Number of classes of the head.
        #[arg(long, default_value_t = 10)]
        classes: i64,
        /// Timed steps.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Untimed steps first (allocations, autotuning).
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Time this attack (fgsm, pgd-N; L-inf 8/255, step 2/255) instead of training steps.
        #[arg(long)]
        attack: Option<String>,
        /// CPU threads (0 = one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu", value_parser = device)]
        device: DeviceSpec,
    },
    /// Out-of-distribution detection: the run's test split against each --ood set, per score.
    Ood {
        /// Run directory (its best checkpoint) or checkpoint directory.
        #[arg(long)]
        run: PathBuf,
        /// An OOD set: a data spec with an optional class filter (`mnist:DIR#5-9`),
        /// `noise:gaussian` or `noise:uniform`. Repeat for several.
        #[arg(long = "ood", required = true)]
        ood: Vec<String>,
        /// At most N images per set (0 = all).
        #[arg(long, default_value_t = 0)]
        n: usize,
        /// cpu, cuda or cuda:N (default: the run's own).
        #[arg(long, value_parser = device)]
        device: Option<DeviceSpec>,
    },
}

fn model_sets(model: &str) -> gantry::Result<Vec<String>> {
    let bad = || {
        gantry::Error::config(
            "--model",
            format!(
                "'{model}': expected small, resnet18, wrn-DEPTH-WIDEN (e.g. wrn-16-4, the \
                 AdaptiveMix reference's) or wrn-zk-DEPTH-WIDEN (the WRN paper's)"
            ),
        )
    };
    Ok(match model {
        "small" | "resnet18" => vec![format!("model.backbone={model}")],
        _ => {
            let rest = model.strip_prefix("wrn-").ok_or_else(bad)?;
            let (backbone, rest) = match rest.strip_prefix("zk-") {
                Some(r) => ("wrn-zk", r),
                None => ("wrn", rest),
            };
            let (d, k) = rest.split_once('-').ok_or_else(bad)?;
            let (d, k): (i64, i64) = (d.parse().map_err(|_| bad())?, k.parse().map_err(|_| bad())?);
            vec![
                format!("model.backbone={backbone}"),
                format!("model.depth={d}"),
                format!("model.widen={k}"),
            ]
        }
    })
}

/// `classify::train`'s progress: a bar over the steps (the latest loss beside it), and each
/// epoch's validation accuracy as a line of its own.
pub fn train_progress<'a>(bar: &'a mut Bar, name: &'a str) -> impl FnMut(&classify::Progress) + 'a {
    move |p| {
        if !bar.in_phase("") {
            bar.phase("", p.total, p.step, "steps");
        }
        bar.set(p.step);
        let loss = p.stats.get("train/loss").unwrap_or(f64::NAN);
        bar.note(format!("loss {loss:.4}"));
        if let Some(acc) = p.val_acc {
            bar.say(format!(
                "gantry: {name}: epoch {}  step {}/{}  loss {loss:.4}  val acc {acc:.4}",
                p.epoch, p.step, p.total
            ));
        }
    }
}

fn finish(summary: classify::TrainSummary) -> gantry::Result<ExitCode> {
    if summary.stopped {
        eprintln!(
            "gantry: interrupted at step {}; resume with: gantry classify train --resume {}",
            summary.step,
            summary.run_dir.display()
        );
        return Ok(ExitCode::from(130));
    }
    print_out(&format!(
        "{}: {} epochs on {} images; best validation accuracy {:.4} on {} held-out images (RUN/checkpoints/best)\n",
        summary.run_dir.display(),
        summary.epochs_done,
        summary.train_images,
        summary.best_val_acc.unwrap_or(f64::NAN),
        summary.val_images
    ));
    Ok(ExitCode::SUCCESS)
}

pub fn dispatch(cmd: ClassifyCommand) -> gantry::Result<ExitCode> {
    match cmd {
        ClassifyCommand::Train {
            config,
            out,
            resume,
            data,
            classes,
            model,
            mode,
            epochs,
            sets,
            dry_run,
        } => {
            let mut all = Vec::new();
            if let Some(d) = data {
                all.push(format!("data.spec={d}"));
            }
            if let Some(c) = classes {
                all.push(format!("data.classes=\"{c}\""));
            }
            if let Some(m) = model {
                all.extend(model_sets(&m)?);
            }
            if let Some(m) = mode {
                all.push(format!("objective.mode={}", Mode::NAMES[m as usize]));
            }
            if let Some(e) = epochs {
                all.push(format!("train.epochs={e}"));
            }
            all.extend(sets);
            if let Some(r) = resume {
                let stop = stop_flag();
                let mut bar = Bar::new("classify train");
                let summary = classify::train(
                    &ClassifyConfig::default(),
                    &r,
                    classify::Start::Resume { sets: all },
                    &stop,
                    &mut train_progress(&mut bar, "classify train"),
                )?;
                bar.finish();
                return finish(summary);
            }
            let cfg = ClassifyConfig::resolve(config.as_deref(), &all)?;
            if dry_run {
                print_out(&cfg.to_toml());
                return Ok(ExitCode::SUCCESS);
            }
            let stop = stop_flag();
            let mut bar = Bar::new("classify train");
            let summary = classify::train(
                &cfg,
                &out,
                classify::Start::Fresh,
                &stop,
                &mut train_progress(&mut bar, "classify train"),
            )?;
            bar.finish();
            finish(summary)
        }
        ClassifyCommand::Eval {
            run,
            data,
            n,
            device,
        } => {
            let t = classify::load(&run, device.map(|d| d.open()).transpose()?)?;
            let mut bar = Bar::new("classify eval");
            let (acc, count) = classify::evaluate_with(
                &t,
                data.as_deref(),
                n,
                &mut progress::counter(&mut bar, "images"),
            )?;
            bar.finish();
            print_out(&format!(
                "test accuracy {acc:.4} on {count} images ({})\n",
                t.checkpoint.display()
            ));
            Ok(ExitCode::SUCCESS)
        }
        ClassifyCommand::Attack {
            run,
            attacks,
            norm,
            eps,
            step,
            n,
            batch,
            data,
            device,
        } => {
            let eps = eps.unwrap_or(match norm {
                attack::Norm::Linf => 8.0 / 255.0,
                attack::Norm::L2 => 0.5,
            });
            let step = step.unwrap_or(eps / 4.0);
            if batch == 0 {
                return Err(gantry::Error::config("--batch", "must be at least 1"));
            }
            let attacks = attack::parse_list(&attacks, norm, eps, step, "--attacks")?;
            if attacks.is_empty() {
                return Err(gantry::Error::config(
                    "--attacks",
                    "name at least one attack (fgsm, pgd-N)",
                ));
            }
            let t = classify::load(&run, device.map(|d| d.open()).transpose()?)?;
            let mut bar = Bar::new("classify attack");
            // Each batch goes through every attack in turn, reported after each: the bar counts
            // (image, attack) pairs, from the batch's start and how many attacks are done on it.
            let per = attacks.len() as u64;
            let (mut start, mut end, mut k) = (0u64, 0u64, 0u64);
            let (rows, used) = classify::attack_accuracy(
                &t,
                &attacks,
                data.as_deref(),
                n,
                batch,
                |name, done, total| {
                    if !bar.in_phase("") {
                        bar.phase("", total as u64 * per, 0, "attacked images");
                    }
                    let done = done as u64;
                    if done != end {
                        (start, end, k) = (end, done, 0);
                    }
                    k += 1;
                    bar.set(start * per + k * (end - start));
                    bar.note(format!("{name} done on images {start}-{end}"));
                },
            )?;
            bar.finish();
            let mut text =
                format!("| accuracy ({used} test images, eps {eps:.5}) | |\n|---|---|\n");
            for (k, v) in &rows {
                text.push_str(&format!("| {k} | {v:.4} |\n"));
            }
            print_out(&text);
            Ok(ExitCode::SUCCESS)
        }
        ClassifyCommand::Bench {
            model,
            mode,
            batch,
            resolution,
            channels,
            classes,
            steps,
            warmup,
            attack,
            threads,
            device,
        } => {
            let mut sets = model_sets(&model)?;
            sets.extend([
                format!("objective.mode={}", Mode::NAMES[mode as usize]),
                format!("train.batch_size={batch}"),
                format!("train.threads={threads}"),
                format!("train.device=\"{device}\""),
            ]);
            let cfg = ClassifyConfig::resolve(None, &sets)?;
            let shape = [channels, resolution, resolution];
            let (what, ms) = match attack {
                Some(a) => {
                    let a = attack::parse_list(
                        &a,
                        attack::Norm::Linf,
                        8.0 / 255.0,
                        2.0 / 255.0,
                        "--attack",
                    )?;
                    if a.len() != 1 {
                        return Err(gantry::Error::config(
                            "--attack",
                            "time one attack (fgsm or pgd-N)",
                        ));
                    }
                    let ms = classify::time_attack(&cfg, shape, classes, &a[0], steps)?;
                    (format!("gantry {model} {}", a[0].name()), ms)
                }
                None => {
                    let ms = classify::time_steps(&cfg, shape, classes, warmup, steps)?;
                    (format!("gantry {model} {}", Mode::NAMES[mode as usize]), ms)
                }
            };
            if ms.is_empty() {
                return Err(gantry::Error::config("--steps", "must be at least 1"));
            }
            let mut sorted = ms.clone();
            sorted.sort_by(f64::total_cmp);
            let line = serde_json::json!({
                "what": what,
                "threads": tch::get_num_threads(),
                "device": device.to_string(),
                "steps": ms.len(),
                "median_ms": sorted[sorted.len() / 2],
                "mean_ms": ms.iter().sum::<f64>() / ms.len() as f64,
                "min_ms": sorted[0],
                "peak_rss_mib": gantry::bench::peak_rss_mib(),
                "images_per_s": batch as f64 / (sorted[sorted.len() / 2] / 1e3),
            });
            print_out(&format!("{line}\n"));
            Ok(ExitCode::SUCCESS)
        }
        ClassifyCommand::Ood {
            run,
            ood,
            n,
            device,
        } => {
            let t = classify::load(&run, device.map(|d| d.open()).transpose()?)?;
            let mut bar = Bar::new("classify ood");
            let rows =
                classify::ood_table_with(&t, &ood, n, &mut progress::counter(&mut bar, "images"))?;
            bar.finish();
            // FPR95 as ODIN and most of the OOD literature count it: in-distribution positive
            // (the UoS code the AdaptiveMix paper cites counts OOD as positive).
            let mut text = String::from("| OOD set | score | AUROC | FPR95 (FPR on OOD at 95% TPR on in-distribution) | detection error | AUPR-in | AUPR-out |\n|---|---|---|---|---|---|---|\n");
            for r in rows {
                let m = r.metrics;
                text.push_str(&format!(
                    "| {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |\n",
                    r.set,
                    r.score.as_str(),
                    m.auroc,
                    m.fpr95,
                    m.detection_error,
                    m.aupr_in,
                    m.aupr_out
                ));
            }
            print_out(&text);
            Ok(ExitCode::SUCCESS)
        }
    }
}
