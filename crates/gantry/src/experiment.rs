//! `gantry experiment --config FILE.toml`: a grid of arms (e.g. baseline, +AdaptiveMix, +FQ,
//! +both) x seeds on one data set and preset, fair by construction: every arm of a seed has the
//! same data order, the same latents at every step and the same budget (gantry seeds each step's
//! draws from (seed, step, purpose), and the loader's order from the seed alone). Runs go in
//! sequence in this process, or in parallel child processes; an interrupted experiment resumes
//! where it stopped (finished runs are skipped, partial ones resumed). Then a report: mean +- std
//! per arm at the final and the best evaluation, curves, sample grids, wall time, configuration.
//!
//! ```toml
//! name = "gmm25"
//! base = "gmm-25"                       # preset name or TOML file
//! set = ["train.steps=5000", "eval.every=1000"]
//! seeds = [0, 1, 2, 3, 4]
//! parallel = 1
//! [[arm]]
//! name = "baseline"
//! [[arm]]
//! name = "adaptivemix"
//! set = ["adaptivemix.enabled=true"]
//! ```
//!
//! `task = "classify"` runs `gantry classify` arms instead (`base`: a classification preset or TOML file,
//! or "" for the defaults): each run trains, then an `[evaluate]` section (attacks, OOD sets)
//! measures it, and the report tabulates clean and attacked accuracy and each OOD score's AUROC
//! and FPR95 over seeds, with the same significance marks.

use crate::classify::{self, ClassifyConfig, EvalSpec};
use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::report;
use crate::rundir::start::Start;
use crate::rundir::{checkpoint, log};
use crate::train::Trainer;
use crate::translate::TranslateConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arm {
    /// Name of the arm (a directory name).
    pub name: String,
    /// `key=value` overrides on top of the base.
    #[serde(default)]
    pub set: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Name (the default output directory is `experiments/<name>`).
    pub name: String,
    /// Preset name or TOML file of the base run.
    pub base: String,
    /// `key=value` overrides applied to every arm.
    #[serde(default)]
    pub set: Vec<String>,
    /// Seeds; each seed runs every arm.
    pub seeds: Vec<u64>,
    /// Runs at once (child processes started by the caller's launcher); 1 = in sequence, in
    /// this process.
    #[serde(default = "one")]
    pub parallel: usize,
    /// Processes per run (data-parallel, `gantry train --nproc`); more than 1 runs every run in
    /// child processes.
    #[serde(default = "one")]
    pub nproc: usize,
    #[serde(rename = "arm")]
    pub arms: Vec<Arm>,
    /// `gan` (default), `classify` or `translate`.
    #[serde(default)]
    pub task: Task,
    /// What each classification run is measured on after training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluate: Option<EvalSpec>,
}

/// What the runs of an experiment train.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    #[default]
    Gan,
    Classify,
    /// Image translation (U-GAT-IT); `base` is a translation preset or file.
    Translate,
}

fn one() -> usize {
    1
}

/// Makes the command that starts one run in a child process (`gantry` with its arguments still to
/// add): the CLI passes one that runs its own binary; the library never re-executes a binary by
/// itself.
pub type Launcher<'a> = &'a dyn Fn() -> std::process::Command;

impl ExperimentConfig {
    /// Reads an experiment file and appends `overrides` (`key=value`, the CLI's `--set`, e.g.
    /// `data.path` of a template) to its `set`; the result is recorded in the output's
    /// `experiment.toml`. Every run (arm x seed) passes the validation gate, and every data set
    /// they read opens, before any work starts.
    pub fn from_file(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::input(path, e))?;
        let value = text
            .parse::<toml::Table>()
            .map(toml::Value::Table)
            .map_err(|e| {
                let line = e.span().map(|s| text[..s.start].lines().count().max(1));
                let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
                Error::config(
                    path.display().to_string(),
                    format!("bad TOML{at}: {}", e.message().trim().replace('\n', "; ")),
                )
            })?;
        let mut cfg: ExperimentConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let msg = e.into_inner().to_string();
            Error::config(
                key,
                msg.lines().next().unwrap_or_default().trim().to_string(),
            )
        })?;
        if cfg.arms.is_empty() || cfg.seeds.is_empty() {
            return Err(Error::config(
                "arm",
                "an experiment needs at least one [[arm]] and one seed",
            ));
        }
        let mut names: Vec<&str> = cfg.arms.iter().map(|a| a.name.as_str()).collect();
        names.sort();
        names.dedup();
        if names.len() != cfg.arms.len()
            || cfg
                .arms
                .iter()
                .any(|a| a.name.is_empty() || a.name.contains('/'))
        {
            return Err(Error::config(
                "arm.name",
                "arm names must be unique, non-empty and contain no '/'",
            ));
        }
        let mut seeds = cfg.seeds.clone();
        seeds.sort();
        seeds.dedup();
        if seeds.len() != cfg.seeds.len() {
            return Err(Error::config(
                "seeds",
                format!(
                    "{:?} repeats a seed (a repeated seed repeats a run and would count twice in the statistics)",
                    cfg.seeds
                ),
            ));
        }
        if cfg.parallel == 0 {
            return Err(Error::config("parallel", "must be at least 1"));
        }
        if cfg.nproc == 0 {
            return Err(Error::config("nproc", "must be at least 1"));
        }
        cfg.set.extend(overrides.iter().cloned());
        cfg.validate()?;
        Ok(cfg)
    }

    /// The validation gate for every arm and seed, then every distinct data set opened once (a
    /// wrong `data.path` in the last arm fails before the first run starts).
    pub fn validate(&self) -> Result<()> {
        if self.task == Task::Classify {
            return self.validate_classify();
        }
        if self.task == Task::Translate {
            return self.validate_translate();
        }
        if self.evaluate.is_some() {
            return Err(Error::config(
                "evaluate",
                "belongs to task = \"classify\" experiments (GAN runs evaluate through eval.*)",
            ));
        }
        let mut data = Vec::new();
        for arm in &self.arms {
            for &seed in &self.seeds {
                let rc = self
                    .run_config(arm, seed)
                    .map_err(|e| self.in_arm(arm, e))?;
                rc.validate().map_err(|e| self.in_arm(arm, e))?;
                if !rc.train.batch_size.is_multiple_of(self.nproc) {
                    return Err(self.in_arm(
                        arm,
                        Error::config(
                            "train.batch_size",
                            format!(
                                "{} does not split evenly over nproc = {} processes",
                                rc.train.batch_size, self.nproc
                            ),
                        ),
                    ));
                }
                if rc.eval.every > 0 {
                    rc.eval.check_files(rc.data.kind.is_points())?;
                }
                if !data.contains(&rc.data) {
                    data.push(rc.data);
                }
            }
        }
        for d in &data {
            gantry_data::open(d)?;
        }
        Ok(())
    }

    /// Says which arm a configuration error belongs to.
    fn in_arm(&self, arm: &Arm, e: Error) -> Error {
        match e {
            Error::Config { key, msg } => Error::Config {
                key,
                msg: format!("{msg} (arm {})", arm.name),
            },
            other => other,
        }
    }

    fn sets(&self, arm: &Arm, seed: u64) -> Vec<String> {
        let mut sets = self.set.clone();
        sets.extend(arm.set.iter().cloned());
        sets.push(format!("train.seed={seed}"));
        sets
    }

    pub fn run_config(&self, arm: &Arm, seed: u64) -> Result<RunConfig> {
        RunConfig::resolve(Some(&self.base), &self.sets(arm, seed))
    }

    /// A classification run's configuration (`base` = "" means the defaults).
    pub fn classify_config(&self, arm: &Arm, seed: u64) -> Result<ClassifyConfig> {
        let base = (!self.base.is_empty()).then_some(self.base.as_str());
        ClassifyConfig::resolve(base, &self.sets(arm, seed))
    }

    /// A translation run's configuration.
    pub fn translate_config(&self, arm: &Arm, seed: u64) -> Result<TranslateConfig> {
        let base = (!self.base.is_empty()).then_some(self.base.as_str());
        TranslateConfig::resolve(base, &self.sets(arm, seed))
    }

    /// Every arm and seed through the translation gate, evaluation files checked (the data each
    /// run checks itself before its first step).
    fn validate_translate(&self) -> Result<()> {
        if self.nproc != 1 || self.evaluate.is_some() {
            return Err(Error::config(
                "nproc",
                "translation runs use one process and evaluate through eval.* (nproc = 1, no [evaluate])",
            ));
        }
        for arm in &self.arms {
            for &seed in &self.seeds {
                let c = self
                    .translate_config(arm, seed)
                    .map_err(|e| self.in_arm(arm, e))?;
                if let Ok(f) = c.features() {
                    if !c.eval.features.is_empty() {
                        crate::eval::EvalConfig {
                            features: f,
                            weights: c.eval.weights.clone(),
                            ..Default::default()
                        }
                        .check_files(false)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn eval_spec(&self) -> EvalSpec {
        self.evaluate.clone().unwrap_or_default()
    }

    fn validate_classify(&self) -> Result<()> {
        if self.nproc != 1 {
            return Err(Error::config(
                "nproc",
                "classification runs use one process (nproc = 1)",
            ));
        }
        self.eval_spec().validate()?;
        // Every distinct training set opens, and every OOD set opens at each resolution with
        // the training data's shape (a channel mismatch fails now, not after training).
        // (spec, classes, resolution, limit) -> sample shape
        type DataKey = (String, Option<String>, u32, Option<usize>);
        let mut seen: Vec<(DataKey, [usize; 3])> = Vec::new();
        for arm in &self.arms {
            for &seed in &self.seeds {
                let c = self
                    .classify_config(arm, seed)
                    .map_err(|e| self.in_arm(arm, e))?;
                let d = &c.data;
                let key = (d.spec.clone(), d.classes.clone(), d.resolution, d.limit);
                if !seen.iter().any(|(k, _)| *k == key) {
                    let ds = classify::data::open(
                        &d.spec,
                        gantry_data::Split::Train,
                        d.resolution,
                        d.classes.as_deref(),
                        false,
                        d.limit,
                        1,
                    )?;
                    seen.push((key, ds.sample_shape()));
                }
            }
        }
        for spec in self
            .eval_spec()
            .ood
            .values()
            .filter(|s| !s.starts_with("noise:"))
        {
            for (key, shape) in &seen {
                let ds = classify::data::open(
                    spec,
                    gantry_data::Split::Test,
                    key.2,
                    None,
                    false,
                    None,
                    1,
                )?;
                if ds.sample_shape() != *shape {
                    let [c, h, w] = ds.sample_shape();
                    let [tc, th, tw] = *shape;
                    return Err(Error::config(
                        "evaluate.ood",
                        format!(
                            "{spec} holds {c}x{h}x{w} images; the classifiers take {tc}x{th}x{tw}"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether a classification run has been measured (its log holds `eval/acc`).
fn measured(dir: &Path) -> bool {
    log::read(&dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .iter()
        .any(|r| r.get("eval/acc").is_some())
}

/// Trains (or resumes) and measures every classification run, then writes the report.
fn run_classify(
    cfg: &ExperimentConfig,
    out: &Path,
    stop: &AtomicBool,
    launcher: Option<Launcher>,
    say: &mut impl FnMut(String),
) -> Result<PathBuf> {
    let spec = cfg.eval_spec();
    let mut todo = Vec::new();
    for &seed in &cfg.seeds {
        for arm in &cfg.arms {
            let dir = run_dir(out, arm, seed);
            if measured(&dir) {
                say(format!("{}/seed-{seed}: done", arm.name));
            } else {
                todo.push((arm.clone(), seed, dir));
            }
        }
    }
    let interrupted = || Error::Interrupted {
        step: 0,
        run_dir: out.to_path_buf(),
    };
    match launcher.filter(|_| cfg.parallel > 1) {
        None => {
            for (arm, seed, dir) in &todo {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(interrupted());
                }
                say(format!("{}/seed-{seed}: training", arm.name));
                let c = cfg.classify_config(arm, *seed)?;
                let summary = classify::train(&c, dir, Start::for_dir(dir), stop, &mut |_| {})?;
                if summary.stopped {
                    return Err(interrupted());
                }
            }
        }
        Some(launcher) => {
            let jobs = todo
                .iter()
                .map(|(arm, seed, dir)| {
                    let command = vec!["classify".to_string(), "train".into()];
                    let args = child_args(cfg, command, arm, *seed, dir);
                    (format!("{}/seed-{seed}", arm.name), dir.clone(), args)
                })
                .collect();
            run_children(cfg, jobs, stop, launcher, say)?;
        }
    }
    for (arm, seed, dir) in &todo {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(interrupted());
        }
        say(format!("{}/seed-{seed}: measuring", arm.name));
        let t = classify::load(dir, None)?;
        let values = spec.measure(&t)?;
        let step = checkpoint::latest(dir)
            .and_then(|c| checkpoint::read_meta(&c).ok())
            .map_or(0, |m| m.step);
        let mut stats = crate::stats::Stats::default();
        for (k, v) in values {
            stats.set(format!("eval/{k}"), v);
        }
        let tensorboard = t.cfg.train.tensorboard;
        log::MetricsLog::open(&dir.join("metrics.jsonl"), u64::MAX, tensorboard)?
            .write(step, &stats)?;
    }
    write_report(cfg, out)
}

/// Trains (or resumes) every translation run, then writes the report.
fn run_translate(
    cfg: &ExperimentConfig,
    out: &Path,
    stop: &AtomicBool,
    launcher: Option<Launcher>,
    say: &mut impl FnMut(String),
) -> Result<PathBuf> {
    use crate::translate::train as tt;
    let mut todo = Vec::new();
    for &seed in &cfg.seeds {
        for arm in &cfg.arms {
            let tc = cfg.translate_config(arm, seed)?;
            let dir = run_dir(out, arm, seed);
            if finished(&dir, tc.train.steps) {
                say(format!("{}/seed-{seed}: done", arm.name));
            } else {
                todo.push((arm.clone(), seed, tc, dir));
            }
        }
    }
    let interrupted = || Error::Interrupted {
        step: 0,
        run_dir: out.to_path_buf(),
    };
    match launcher.filter(|_| cfg.parallel > 1) {
        None => {
            for (arm, seed, tc, dir) in &todo {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(interrupted());
                }
                say(format!("{}/seed-{seed}: training", arm.name));
                if tt::train(tc, dir, Start::for_dir(dir), stop, &mut |_| {})?.stopped {
                    return Err(interrupted());
                }
            }
        }
        Some(launcher) => {
            let jobs = todo
                .iter()
                .map(|(arm, seed, _, dir)| {
                    let args = child_args(cfg, vec!["train".into()], arm, *seed, dir);
                    (format!("{}/seed-{seed}", arm.name), dir.clone(), args)
                })
                .collect();
            run_children(cfg, jobs, stop, launcher, say)?;
        }
    }
    write_report(cfg, out)
}

/// `gantry` arguments of one run in a child process: `command`, then `--resume DIR` where the run
/// has a checkpoint (an interrupted run continues), else the base configuration, `--out DIR` and
/// the arm's and seed's `--set`s.
fn child_args(
    cfg: &ExperimentConfig,
    mut command: Vec<String>,
    arm: &Arm,
    seed: u64,
    dir: &Path,
) -> Vec<String> {
    match Start::for_dir(dir) {
        Start::Resume { .. } => command.extend(["--resume".into(), dir.display().to_string()]),
        Start::Fresh => {
            if !cfg.base.is_empty() {
                command.extend(["--config".into(), cfg.base.clone()]);
            }
            command.extend(["--out".into(), dir.display().to_string()]);
            for s in cfg.sets(arm, seed) {
                command.extend(["--set".into(), s]);
            }
        }
    }
    command
}

fn run_dir(out: &Path, arm: &Arm, seed: u64) -> PathBuf {
    out.join(&arm.name).join(format!("seed-{seed}"))
}

/// Where one run stands.
fn finished(dir: &Path, steps: u64) -> bool {
    checkpoint::latest(dir)
        .and_then(|c| checkpoint::read_meta(&c).ok())
        .is_some_and(|m| m.step >= steps)
}

/// Runs (or resumes) every run of the experiment, then writes the report; returns its path.
/// `launcher` starts child processes when `cfg.parallel > 1` or `cfg.nproc > 1`.
pub fn run(
    cfg: &ExperimentConfig,
    out: &Path,
    stop: &AtomicBool,
    launcher: Option<Launcher>,
    mut say: impl FnMut(String),
) -> Result<PathBuf> {
    let children = cfg.parallel > 1 || cfg.nproc > 1;
    let launcher = match (children, launcher) {
        (false, _) => None,
        (true, Some(l)) => Some(l),
        (true, None) => {
            return Err(Error::config(
                "parallel",
                "runs in parallel or in several processes need a launcher for child processes (the gantry binary has one); set parallel = 1 and nproc = 1",
            ))
        }
    };
    // One experiment per directory at a time (its runs take their own locks as they start).
    let _lock = crate::rundir::lock::RunLock::acquire(out)?;
    crate::util::write_atomic(
        &out.join("experiment.toml"),
        toml::to_string_pretty(cfg).expect("serialises").as_bytes(),
    )?;
    if cfg.task == Task::Classify {
        return run_classify(cfg, out, stop, launcher, &mut say);
    }
    if cfg.task == Task::Translate {
        return run_translate(cfg, out, stop, launcher, &mut say);
    }
    let mut todo = Vec::new();
    for &seed in &cfg.seeds {
        for arm in &cfg.arms {
            let rc = cfg.run_config(arm, seed)?;
            let dir = run_dir(out, arm, seed);
            if finished(&dir, rc.train.steps) {
                say(format!("{}/seed-{seed}: done", arm.name));
            } else {
                todo.push((arm.clone(), seed, rc, dir));
            }
        }
    }
    if !children {
        let mut grid = GridProgress::new(todo.iter().map(|t| t.2.train.steps).sum());
        for (arm, seed, rc, dir) in todo {
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(Error::Interrupted {
                    step: 0,
                    run_dir: out.to_path_buf(),
                });
            }
            let name = format!("{}/seed-{seed}", arm.name);
            say(format!("{name}: training"));
            let mut t = if checkpoint::latest(&dir).is_some() {
                crate::run::resume(&dir, Some(rc))?
            } else {
                Trainer::new(rc.setup(), &dir)?
            };
            let outcome = t.run(stop, &mut |ev| match ev {
                crate::train::Event::Started { step, total, .. } => grid.start(step, total),
                crate::train::Event::Logged { step, .. } => {
                    if let Some(line) = grid.step(&name, step) {
                        say(line)
                    }
                }
                _ => {}
            })?;
            grid.finish();
            if let crate::train::Outcome::Interrupted { .. } = outcome {
                return Err(Error::Interrupted {
                    step: t.step(),
                    run_dir: out.to_path_buf(),
                });
            }
        }
    } else if let Some(launcher) = launcher {
        let jobs = todo
            .into_iter()
            .map(|(arm, seed, _, dir)| {
                let mut command = vec!["train".to_string()];
                if cfg.nproc > 1 {
                    command.extend(["--nproc".into(), cfg.nproc.to_string()]);
                }
                let args = child_args(cfg, command, &arm, seed, &dir);
                (format!("{}/seed-{seed}", arm.name), dir, args)
            })
            .collect();
        run_children(cfg, jobs, stop, launcher, &mut say)?;
    }
    write_report(cfg, out)
}

/// Progress of a whole experiment, as lines at most every [`GridProgress::EVERY`]: the run's
/// step and the time left for it and for the grid, from the steps done per second so far.
struct GridProgress {
    total_steps: u64,
    /// Steps of finished runs, and of this run before it (re)started.
    done_before: u64,
    run: (u64, u64),
    started: std::time::Instant,
    steps_timed: u64,
    last_line: std::time::Instant,
}

impl GridProgress {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(30);

    fn new(total_steps: u64) -> Self {
        let now = std::time::Instant::now();
        GridProgress {
            total_steps,
            done_before: 0,
            run: (0, 0),
            started: now,
            steps_timed: 0,
            last_line: now,
        }
    }

    fn start(&mut self, step: u64, total: u64) {
        self.run = (step, total);
    }

    /// The line to say at `step`, when one is due.
    fn step(&mut self, name: &str, step: u64) -> Option<String> {
        self.steps_timed += step.saturating_sub(self.run.0);
        self.run.0 = step;
        if self.last_line.elapsed() < Self::EVERY {
            return None;
        }
        self.last_line = std::time::Instant::now();
        let rate = self.steps_timed as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let left_run = self.run.1.saturating_sub(step);
        let left_all = self
            .total_steps
            .saturating_sub(self.done_before + step.min(self.run.1));
        let eta = |steps: u64| crate::util::human_duration(steps as f64 / rate.max(1e-9));
        Some(format!(
            "{name}: step {step}/{} ({rate:.1} steps/s); this run {} left, the experiment {} left",
            self.run.1,
            eta(left_run),
            eta(left_all)
        ))
    }

    fn finish(&mut self) {
        self.done_before += self.run.1;
        self.run = (0, 0);
    }
}

/// The last logged step of a run directory (for the progress of child processes).
fn last_step(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("step")?.as_u64())
}

/// Runs jobs (name, run directory, `gantry` arguments) in child processes, `parallel` at a time,
/// splitting the cores between them (`--set train.threads=N` is appended).
fn run_children(
    cfg: &ExperimentConfig,
    jobs: Vec<(String, PathBuf, Vec<String>)>,
    stop: &AtomicBool,
    launcher: Launcher,
    say: &mut impl FnMut(String),
) -> Result<()> {
    let exe = PathBuf::from("gantry");
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads = (cores / (cfg.parallel * cfg.nproc)).max(1);
    let total_jobs = jobs.len();
    let mut queue = jobs.into_iter();
    let mut running: Vec<(String, PathBuf, std::process::Child)> = Vec::new();
    let (mut finished, started) = (0usize, std::time::Instant::now());
    let mut last_line = std::time::Instant::now();
    loop {
        if last_line.elapsed() >= GridProgress::EVERY && !running.is_empty() {
            last_line = std::time::Instant::now();
            let steps: Vec<String> = running
                .iter()
                .map(|(name, log, _)| {
                    let step = last_step(&log.with_extension(""))
                        .map_or("starting".into(), |s| format!("step {s}"));
                    format!("{name} {step}")
                })
                .collect();
            let per_job = started.elapsed().as_secs_f64() / finished.max(1) as f64;
            let eta = if finished > 0 {
                format!(
                    "; about {} left for the {} runs to go",
                    crate::util::human_duration(
                        per_job * (total_jobs - finished) as f64 / cfg.parallel as f64
                    ),
                    total_jobs - finished
                )
            } else {
                String::new()
            };
            say(format!(
                "{} of {total_jobs} runs done; {}{eta}",
                finished,
                steps.join(", ")
            ));
        }
        while running.len() < cfg.parallel && !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let Some((name, dir, args)) = queue.next() else {
                break;
            };
            let mut cmd = launcher();
            cmd.args(&args);
            cmd.args(["--set", &format!("train.threads={threads}")]);
            let log_path = dir.with_extension("log");
            std::fs::create_dir_all(dir.parent().expect("arm dir"))
                .map_err(|e| Error::io(&dir, e))?;
            let log_file = std::fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
            cmd.stdout(std::process::Stdio::null()).stderr(log_file);
            say(format!(
                "{name}: training (process, {threads} threads; log {})",
                log_path.display()
            ));
            running.push((name, log_path, cmd.spawn().map_err(|e| Error::io(&exe, e))?));
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut i = 0;
        while i < running.len() {
            if let Some(status) = running[i].2.try_wait().map_err(|e| Error::io(&exe, e))? {
                let (name, log_path, _) = running.remove(i);
                if !status.success() {
                    for (_, _, c) in running.iter_mut() {
                        let _ = c.kill();
                    }
                    // The child's own one-line error is the last line of its log.
                    let why = std::fs::read_to_string(&log_path)
                        .ok()
                        .and_then(|log| {
                            log.lines()
                                .rev()
                                .find(|l| !l.trim().is_empty())
                                .map(|l| l.trim_start_matches("gantry: error: ").to_string())
                        })
                        .unwrap_or_default();
                    let msg = format!("run failed ({status}): {why} (log {})", log_path.display());
                    // The child's own verdict: its bad input is the experiment's bad input.
                    return Err(if status.code() == Some(2) {
                        Error::input(name.clone(), msg)
                    } else {
                        Error::io(name.clone(), msg)
                    });
                }
                finished += 1;
                say(format!("{name}: done"));
            } else {
                i += 1;
            }
        }
    }
    Ok(())
}

/// Mean and sample standard deviation.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// Per arm: every run's series of one logged quantity.
type Curves = BTreeMap<String, Vec<Vec<(f64, f64)>>>;

/// Per arm, per metric: (final values per seed, best values per seed).
type Table = BTreeMap<String, BTreeMap<String, (Vec<f64>, Vec<f64>)>>;

/// A piece of the report, written both as markdown (`report.md`) and HTML (`report.html`).
enum Block {
    H1(String),
    H2(String),
    /// A paragraph (markdown inlines: `code`, **bold**).
    P(String),
    /// First row: the header.
    Table(Vec<Vec<String>>),
    Bullets(Vec<String>),
}

fn markdown(blocks: &[Block]) -> String {
    let mut md = String::new();
    let row = |cells: &[String]| format!("| {} |", cells.join(" | "));
    for b in blocks {
        match b {
            Block::H1(t) => {
                let _ = writeln!(md, "# {t}\n");
            }
            Block::H2(t) => {
                let _ = writeln!(md, "## {t}\n");
            }
            Block::P(t) => {
                let _ = writeln!(md, "{t}\n");
            }
            Block::Table(grid) => {
                let _ = writeln!(md, "{}", row(&grid[0]));
                let _ = writeln!(md, "{}", row(&vec!["---".to_string(); grid[0].len()]));
                for cells in &grid[1..] {
                    let _ = writeln!(md, "{}", row(cells));
                }
                md.push('\n');
            }
            Block::Bullets(items) => {
                for i in items {
                    let _ = writeln!(md, "- {i}");
                }
            }
        }
    }
    md
}

fn html_blocks(blocks: &[Block]) -> String {
    use report::page::{md_inline, table};
    let mut html = String::new();
    for b in blocks {
        match b {
            // The page's own heading and status come first.
            Block::H1(_) => {}
            Block::H2(t) => {
                let _ = writeln!(html, "<h2>{}</h2>", md_inline(t));
            }
            Block::P(t) => {
                let _ = writeln!(html, "<p>{}</p>", md_inline(t));
            }
            Block::Table(grid) => html.push_str(&table(grid)),
            Block::Bullets(items) => {
                html.push_str("<ul>\n");
                for i in items {
                    let _ = writeln!(html, "<li>{}</li>", md_inline(i));
                }
                html.push_str("</ul>\n");
            }
        }
    }
    html
}

/// Logged quantities drawn per arm besides the evaluations, where the runs log them.
const TRAINING_CURVES: &[&str] = &[
    "loss/d",
    "loss/g",
    "loss/d/adv",
    "loss/g/adv",
    // D's outputs on training minus held-out reals (train.monitor_every): D memorising.
    "overfit/gap",
    "train/loss",
    "val/loss",
    "val/acc",
];

/// Reads every run and writes `report.md`, `report.html` and the curves; returns `report.md`.
/// Runs still under way (or not started) are left out of the tables and named; their curves so
/// far are drawn.
pub fn write_report(cfg: &ExperimentConfig, out: &Path) -> Result<PathBuf> {
    write_report_page(cfg, out, None)
}

/// The `train.steps` of an arm's runs (0 for classification, counted in epochs).
fn arm_steps(cfg: &ExperimentConfig, arm: &Arm) -> Result<u64> {
    Ok(match cfg.task {
        Task::Gan => cfg.run_config(arm, cfg.seeds[0])?.train.steps,
        Task::Translate => cfg.translate_config(arm, cfg.seeds[0])?.train.steps,
        Task::Classify => 0,
    })
}

/// [`write_report`], with `refresh`: the seconds after which the HTML page reloads itself (a
/// watched, live experiment).
fn write_report_page(cfg: &ExperimentConfig, out: &Path, refresh: Option<u64>) -> Result<PathBuf> {
    let rdir = out.join("report");
    std::fs::create_dir_all(&rdir).map_err(|e| Error::io(&rdir, e))?;
    let mut table: Table = BTreeMap::new();
    // key -> arm -> every run's series of it (finished or not).
    let mut curves: BTreeMap<String, Curves> = BTreeMap::new();
    let mut wall: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    // (name, higher is better)
    let mut metrics: Vec<(String, bool)> = Vec::new();
    // A run still under way would enter its latest evaluation as "final": leave it out, say so.
    let mut unfinished = Vec::new();
    let mut last_step = 0.0f64;
    for arm in &cfg.arms {
        let steps = arm_steps(cfg, arm)?;
        last_step = last_step.max(steps as f64);
        for &seed in &cfg.seeds {
            let dir = run_dir(out, arm, seed);
            let rows = log::read(&dir.join("metrics.jsonl")).unwrap_or_default();
            let series = report::read_series(&rows);
            for (k, pts) in &series {
                let drawn = (k.starts_with("eval/") && report::higher_is_better(k).is_some())
                    || TRAINING_CURVES.contains(&k.as_str());
                if drawn && !pts.is_empty() {
                    last_step = last_step.max(pts.last().expect("non-empty").0);
                    curves
                        .entry(k.clone())
                        .or_default()
                        .entry(arm.name.clone())
                        .or_default()
                        .push(pts.clone());
                }
            }
            let done = match cfg.task {
                Task::Gan | Task::Translate => rows
                    .iter()
                    .filter_map(|r| r["step"].as_u64())
                    .max()
                    .is_some_and(|s| s >= steps),
                Task::Classify => measured(&dir),
            };
            if !done {
                unfinished.push(format!("{}/seed-{seed}", arm.name));
                continue;
            }
            if let Some(w) = series.get("wall_s").and_then(|v| v.last()) {
                wall.entry(arm.name.clone()).or_default().push(w.1);
            }
            for (k, pts, metric) in series
                .iter()
                .filter(|(k, _)| k.starts_with("eval/"))
                .filter_map(|(k, pts)| Some((k, pts, report::higher_is_better(k)?)))
            {
                let m = k.trim_start_matches("eval/").to_string();
                if !metrics.contains(&(m.clone(), metric)) {
                    metrics.push((m.clone(), metric));
                }
                let last = pts.last().expect("non-empty").1;
                let best = pts
                    .iter()
                    .map(|p| p.1)
                    .reduce(|a, b| if (b > a) == metric { b } else { a })
                    .expect("non-empty");
                let e = table
                    .entry(arm.name.clone())
                    .or_default()
                    .entry(m.clone())
                    .or_default();
                e.0.push(last);
                e.1.push(best);
            }
        }
    }
    let baseline = &cfg.arms[0].name;
    let mut blocks = vec![
        Block::H1(format!("Experiment `{}`", cfg.name)),
        Block::P(format!("Base `{}` with `{}`; seeds {:?}; every arm of a seed sees the same data order, latents and budget.", cfg.base, cfg.set.join(" "), cfg.seeds)),
        Block::P(format!("Cells: mean ± sample std over seeds. A difference from `{baseline}` is marked * when it exceeds twice its standard error (sqrt(s1²/n1 + s2²/n2)); otherwise it is within the seed spread and **not significant**.")),
    ];
    if !unfinished.is_empty() {
        blocks.push(Block::P(format!(
            "**Incomplete**: not finished, so not in the tables: {}.",
            unfinished.join(", ")
        )));
    }
    let sections: &[(&str, usize)] = if metrics.is_empty() {
        blocks.push(Block::P(
            "No evaluations in these runs (`eval.every` = 0).".into(),
        ));
        &[("Runs", 0)]
    } else if cfg.task == Task::Classify {
        blocks.push(Block::P("Each run is measured once, on its checkpoint of best validation accuracy: `acc` on the test split, `acc_<attack>` under L-inf attacks, `auroc_<set>_<score>` / `fpr95_<set>_<score>` for each OOD set and score.".into()));
        &[("Results", 0)]
    } else {
        &[("Final evaluation", 0), ("Best evaluation", 1)]
    };
    for &(title, pick) in sections {
        blocks.push(Block::H2(title.into()));
        let mut header = vec!["arm".to_string()];
        header.extend(
            metrics
                .iter()
                .map(|(m, metric)| format!("{m} {}", if *metric { "↑" } else { "↓" })),
        );
        header.push("wall time (s)".into());
        let mut grid = vec![header];
        for arm in &cfg.arms {
            let mut cells = vec![arm.name.clone()];
            for (m, _) in &metrics {
                let cell = match table.get(&arm.name).and_then(|t| t.get(m)) {
                    Some(v) => {
                        let vals = if pick == 0 { &v.0 } else { &v.1 };
                        let (mu, sd) = mean_std(vals);
                        let mark = match table.get(baseline).and_then(|t| t.get(m)) {
                            Some(b) if &arm.name != baseline => {
                                let bv = if pick == 0 { &b.0 } else { &b.1 };
                                let (bm, bs) = mean_std(bv);
                                let se = (sd * sd / vals.len() as f64 + bs * bs / bv.len() as f64)
                                    .sqrt();
                                if (mu - bm).abs() > 2.0 * se && se > 0.0 {
                                    " *"
                                } else {
                                    " (n.s.)"
                                }
                            }
                            _ => "",
                        };
                        format!("{mu:.4} ± {sd:.4}{mark}")
                    }
                    None => "—".into(),
                };
                cells.push(cell);
            }
            let w = wall
                .get(&arm.name)
                .map(|w| mean_std(w).0)
                .map(|w| format!("{w:.0}"))
                .unwrap_or_else(|| "—".into());
            cells.push(w);
            grid.push(cells);
        }
        // Many metrics (classification: accuracies, then AUROC / FPR95 per set and score) read
        // better as rows, one column per arm.
        if cfg.task == Task::Classify {
            grid = (0..grid[0].len())
                .map(|j| grid.iter().map(|r| r[j].clone()).collect())
                .collect();
            grid[0][0] = "metric".into();
        }
        blocks.push(Block::Table(grid));
    }
    blocks.push(Block::H2("Arms".into()));
    blocks.push(Block::Bullets(
        cfg.arms
            .iter()
            .map(|arm| {
                format!(
                    "`{}`: {}",
                    arm.name,
                    if arm.set.is_empty() {
                        "(base)".to_string()
                    } else {
                        format!("`{}`", arm.set.join(" "))
                    }
                )
            })
            .collect(),
    ));
    let mut md = markdown(&blocks);

    // Curves: per arm, the mean over seeds with the min-max band over seeds.
    let mut charts = Vec::new();
    let eval_first = curves.keys().filter(|k| k.starts_with("eval/")).chain(
        TRAINING_CURVES
            .iter()
            .filter_map(|k| curves.get_key_value(*k).map(|e| e.0)),
    );
    for key in eval_first {
        let per_arm = &curves[key];
        // One evaluation per run (classification) is a table, not a curve.
        if per_arm.values().flatten().all(|pts| pts.len() < 2) {
            continue;
        }
        let lines = cfg
            .arms
            .iter()
            .filter_map(|arm| {
                let runs: Vec<&[(f64, f64)]> =
                    per_arm.get(&arm.name)?.iter().map(Vec::as_slice).collect();
                Some(report::plot::mean_band(&arm.name, &runs))
            })
            .collect();
        let (name, file) = match key.strip_prefix("eval/") {
            Some(m) => (m.to_string(), format!("curve-{}.png", m.replace('/', "_"))),
            None => (key.clone(), format!("curve-{}.png", key.replace('/', "_"))),
        };
        let direction = match report::higher_is_better(key) {
            Some(true) => ", higher is better",
            Some(false) => ", lower is better",
            None => "",
        };
        let _ = writeln!(md, "\n![{name}]({file})");
        charts.push(report::Chart {
            file,
            panel: report::plot::Panel {
                title: format!("{name} (mean over seeds{direction})"),
                lines,
                x_range: Some((0.0, last_step.max(1.0))),
                note: (cfg.seeds.len() > 1).then(|| "shaded: min to max over seeds".to_string()),
                width: None,
            },
            small: false,
        });
    }
    let figures = report::write_charts(&rdir, &charts)?;
    let mut grids = String::new();
    for arm in &cfg.arms {
        let pngs = report::sample_pictures(&run_dir(out, arm, cfg.seeds[0]));
        if let Some(last) = pngs.last() {
            let name = format!("samples-{}.png", arm.name);
            let bytes = std::fs::read(last).map_err(|e| Error::io(last, e))?;
            let (w, h) = report::shown_size(last);
            crate::util::write_atomic(&rdir.join(&name), &bytes)?;
            let _ = writeln!(
                grids,
                "<figure style=\"display:inline-block\"><img class=\"samples\" src=\"{}?v={}\" alt=\"samples of {}\" width=\"{}\" height=\"{}\"><figcaption>{}</figcaption></figure>",
                report::html_escape(&name),
                report::page::version(&bytes),
                report::html_escape(&arm.name),
                w,
                h,
                report::html_escape(&arm.name)
            );
        }
    }
    let md_path = rdir.join("report.md");
    crate::util::write_atomic(&md_path, md.as_bytes())?;

    // The page: status, the report's text and tables, curves, samples, configuration.
    let runs = cfg.arms.len() * cfg.seeds.len();
    let done = runs - unfinished.len();
    let live = report::live::locked(out);
    let when = report::page::utc_now();
    // Every run done is finished, whoever still holds the experiment's lock (`run` writes this
    // report as its last act, holding it).
    let (class, status) = if unfinished.is_empty() {
        (
            "finished",
            format!("Finished: all {runs} runs done. Written {when}."),
        )
    } else if live {
        let upd = match refresh {
            Some(s) => format!("this page reloads every {s} s while the experiment runs"),
            None => "a snapshot: `watch_experiment` keeps it current".into(),
        };
        (
            "live",
            format!("Running: {done} of {runs} runs done, as of {when}; {upd}."),
        )
    } else {
        ("stopped", format!("Not running: {done} of {runs} runs done; `gantry experiment` with the same configuration and output resumes it. Written {when}."))
    };
    let cfg_text = std::fs::read_to_string(out.join("experiment.toml")).unwrap_or_default();
    let mut body = format!(
        "<h1>Experiment <code>{}</code></h1>\n<p class=\"status {class}\" id=\"status\">{}</p>\n<nav><a href=\"#tables\">tables</a><a href=\"#curves\">curves</a><a href=\"#samples\">samples</a><a href=\"#configuration\">configuration</a><a href=\"report.md\">report.md</a></nav>\n<div id=\"tables\">\n{}</div>\n",
        report::html_escape(&cfg.name),
        report::page::md_inline(&status),
        html_blocks(&blocks)
    );
    let _ = write!(
        body,
        "<h2 id=\"curves\">Curves</h2>\n<p>Per arm: the mean over the seeds that reached a step{}; dense training curves are smoothed per run first (moving average over 2% of the points). A y-axis is logarithmic where its values are positive and span more than two decades.</p>\n{}",
        if cfg.seeds.len() > 1 { ", shaded from the lowest to the highest seed (min-max band)" } else { "" },
        if figures.is_empty() { "<p>No curves yet.</p>\n".to_string() } else { figures }
    );
    let _ = write!(
        body,
        "<h2 id=\"samples\">Samples (seed {})</h2>\n{}\n<h2 id=\"configuration\">Configuration</h2>\n<pre>{}</pre>\n",
        cfg.seeds[0],
        if grids.is_empty() { "<p>No sample pictures yet.</p>".to_string() } else { grids },
        report::html_escape(&cfg_text)
    );
    let html = report::page::page(&format!("gantry experiment: {}", cfg.name), refresh, &body);
    crate::util::write_atomic(&rdir.join("report.html"), html.as_bytes())?;
    Ok(md_path)
}

/// The configuration an experiment directory recorded (`OUT/experiment.toml`), as it ran (not
/// validated again: its data need not be at hand to report on it). `write_report(&recorded(out)?,
/// out)` rewrites the report of any experiment directory.
pub fn recorded(out: &Path) -> Result<ExperimentConfig> {
    let path = out.join("experiment.toml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::input(&path, format!("not an experiment directory ({e})")))?;
    let cfg: ExperimentConfig = toml::from_str(&text)
        .map_err(|e| Error::input(&path, e.message().trim().replace('\n', "; ")))?;
    if cfg.arms.is_empty() || cfg.seeds.is_empty() {
        return Err(Error::input(&path, "records no arm or no seed"));
    }
    Ok(cfg)
}

/// Keeps an experiment directory's `report/report.html` (and `report.md`) current while it runs,
/// as `report::watch` does for one run: looks every `every`, rewrites the report when a run's
/// metrics log, samples or checkpoints, or who holds a lock, changed, and returns after a last
/// write without the page's reload once the experiment has finished (no process holds the
/// experiment's lock or a run's lock, and every run is done: its log reached `train.steps`, or a
/// classification run was measured) or `stop` is set. The configuration is the one the
/// experiment recorded (`OUT/experiment.toml`).
pub fn watch_experiment(out: &Path, every: std::time::Duration, stop: &AtomicBool) -> Result<()> {
    let cfg = recorded(out)?;
    let recorded = out.join("experiment.toml");
    let steps: Vec<u64> = cfg
        .arms
        .iter()
        .map(|a| arm_steps(&cfg, a))
        .collect::<Result<_>>()?;
    report::live::watch_loop(
        every,
        stop,
        || {
            use std::hash::{Hash, Hasher};
            let mut h = report::live::hasher();
            report::live::fingerprint(&recorded, &mut h);
            let mut all_done = !report::live::locked(out);
            all_done.hash(&mut h);
            for (arm, &steps) in cfg.arms.iter().zip(&steps) {
                for &seed in &cfg.seeds {
                    let dir = run_dir(out, arm, seed);
                    for f in ["metrics.jsonl", "samples", "checkpoints"] {
                        report::live::fingerprint(&dir.join(f), &mut h);
                    }
                    let held = report::live::locked(&dir);
                    held.hash(&mut h);
                    let done = match cfg.task {
                        Task::Classify => measured(&dir),
                        _ => finished(&dir, steps),
                    };
                    all_done &= done && !held;
                }
            }
            Ok(report::live::Look {
                signature: h.finish(),
                finished: all_done,
            })
        },
        |refresh| write_report_page(&cfg, out, refresh).map(|_| ()),
    )
}

#[cfg(test)]
mod tests {

    #[test]
    fn grid_progress_says_where_a_run_and_the_experiment_stand_every_30_s() {
        let mut g = GridProgress::new(300);
        g.start(0, 100);
        assert!(g.step("a/seed-0", 10).is_none(), "nothing before 30 s");
        g.last_line -= GridProgress::EVERY;
        g.started -= std::time::Duration::from_secs(10);
        let line = g.step("a/seed-0", 20).unwrap();
        assert!(
            line.starts_with("a/seed-0: step 20/100 (2.0 steps/s)"),
            "{line}"
        );
        assert!(
            line.contains("this run 40 s left, the experiment 2 min left"),
            "{line}"
        );
        g.finish();
        g.start(0, 100);
        g.last_line -= GridProgress::EVERY;
        let line = g.step("b/seed-0", 0).unwrap();
        assert!(line.contains("the experiment"), "{line}");
    }
    use super::*;

    fn experiment(arms: &[&str]) -> ExperimentConfig {
        ExperimentConfig {
            name: "t".into(),
            base: "gmm-25".into(),
            set: vec!["train.steps=10".into()],
            seeds: vec![0, 1],
            parallel: 1,
            nproc: 1,
            task: Task::Gan,
            evaluate: None,
            arms: arms
                .iter()
                .map(|a| Arm {
                    name: a.to_string(),
                    set: vec![],
                })
                .collect(),
        }
    }

    /// Writes one run's log rows (as the training loop would).
    fn log_run(out: &Path, arm: &str, seed: u64, rows: &[&str]) {
        let dir = out.join(arm).join(format!("seed-{seed}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("metrics.jsonl"), rows.join("\n") + "\n").unwrap();
    }

    /// Every table row has as many cells as its header, with and without evaluations.
    fn assert_tables_are_rectangular(md: &str) {
        let mut header = None;
        for line in md.lines() {
            if !line.starts_with('|') {
                header = None;
                continue;
            }
            let n = line.matches('|').count();
            assert_eq!(*header.get_or_insert(n), n, "{line:?} in\n{md}");
        }
    }

    #[test]
    fn report_tables_with_significance_marks() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = experiment(&["baseline", "a", "b"]);
        for seed in 0..2u64 {
            let s = seed as f64;
            let row = |fid: f64| format!(r#"{{"step":10,"wall_s":5.0,"eval/fid":{fid}}}"#);
            log_run(dir.path(), "baseline", seed, &[&row(10.0 + s)]);
            log_run(dir.path(), "a", seed, &[&row(20.0 + s)]); // far beyond the spread
            log_run(dir.path(), "b", seed, &[&row(10.5 + s)]); // within it
        }
        let md = std::fs::read_to_string(write_report(&cfg, dir.path()).unwrap()).unwrap();
        assert_tables_are_rectangular(&md);
        assert!(md.contains("| arm | fid ↓ | wall time (s) |"), "{md}");
        assert!(md.contains("| baseline | 10.5000 ± 0.7071 | 5 |"), "{md}");
        assert!(md.contains("| a | 20.5000 ± 0.7071 * | 5 |"), "{md}");
        assert!(md.contains("| b | 11.0000 ± 0.7071 (n.s.) | 5 |"), "{md}");
        assert!(!md.contains("Incomplete"), "{md}");

        // A run still under way is left out of the tables, and named.
        log_run(
            dir.path(),
            "b",
            1,
            &[r#"{"step":5,"wall_s":2.0,"eval/fid":99.0}"#],
        );
        let md = std::fs::read_to_string(write_report(&cfg, dir.path()).unwrap()).unwrap();
        assert!(md.contains("not in the tables: b/seed-1."), "{md}");
        assert!(md.contains("| b | 10.5000 ± 0.0000 (n.s.) | 5 |"), "{md}");
    }

    #[test]
    fn report_without_evaluations_lists_wall_time() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = experiment(&["baseline", "a"]);
        for seed in 0..2 {
            log_run(
                dir.path(),
                "baseline",
                seed,
                &[r#"{"step":10,"wall_s":3.0}"#],
            );
            log_run(dir.path(), "a", seed, &[r#"{"step":10,"wall_s":4.0}"#]);
        }
        let md = std::fs::read_to_string(write_report(&cfg, dir.path()).unwrap()).unwrap();
        assert_tables_are_rectangular(&md);
        assert!(md.contains("No evaluations"), "{md}");
        assert!(md.contains("| arm | wall time (s) |"), "{md}");
        assert!(md.contains("| a | 4 |"), "{md}");
        assert!(!md.contains("Best evaluation"), "{md}");
    }
}
