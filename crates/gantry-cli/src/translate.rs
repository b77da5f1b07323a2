//! Translation runs from the command line: `gantry train` with a translation preset or file
//! (`task = "translate"`, e.g. `--config ugatit-light-64`), and `gantry translate`, which puts a
//! folder of images through a trained run.

use crate::progress::Bar;
use crate::{print_out, stop_flag};
use gantry::rundir::checkpoint;
use gantry::translate::{self, train as tt, TranslateConfig};
use gantry::util::TaskConfig;
use gantry::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Whether `gantry train` was asked for a translation run: a translation preset, a TOML file
/// with `task = "translate"`, or `--resume` of a translation run.
pub fn wanted(config: Option<&str>, resume: Option<&Path>) -> bool {
    if let Some(c) = config {
        if translate::preset(c).is_some() {
            return true;
        }
        if let Ok(text) = std::fs::read_to_string(c) {
            return translate::is_translate_toml(&text);
        }
    }
    if let Some(run) = resume {
        if let Some(meta) = checkpoint::latest(run).and_then(|c| checkpoint::read_meta(&c).ok()) {
            return meta.arch == "translate/ugatit";
        }
    }
    false
}

/// `gantry train` for a translation run.
pub fn train(
    config: Option<String>,
    sets: Vec<String>,
    out: Option<PathBuf>,
    resume: Option<PathBuf>,
    dry_run: bool,
) -> Result<ExitCode> {
    let (cfg, run_dir, start) = match resume {
        Some(run) => {
            if config.is_some() {
                return Err(Error::config(
                    "--config",
                    "a resumed run keeps its own configuration (change run-time keys with --set)",
                ));
            }
            let ckpt = checkpoint::resolve(&run)?;
            let meta = checkpoint::read_meta(&ckpt)?;
            let cfg = TranslateConfig::from_toml(&meta.config, &ckpt.display().to_string())?
                .with_sets(&sets)?;
            (cfg, run, tt::Start::Resume { sets })
        }
        None => {
            let cfg = TranslateConfig::resolve(config.as_deref(), &sets)?;
            let name = if cfg.preset.is_empty() {
                "translate".to_string()
            } else {
                cfg.preset.clone()
            };
            let dir = out.unwrap_or_else(|| gantry::run::next_run_dir(Path::new("runs"), &name));
            (cfg, dir, tt::Start::Fresh)
        }
    };
    if dry_run {
        print_out(&cfg.to_toml());
        return Ok(ExitCode::SUCCESS);
    }
    let stop = stop_flag();
    eprintln!("gantry: run directory {}", run_dir.display());
    let mut bar = Bar::new("train");
    let summary = tt::train(&cfg, &run_dir, start, &stop, &mut |p| {
        if !bar.in_phase("") {
            bar.phase("", p.total, p.step, "steps");
        }
        bar.set(p.step);
        bar.note(format!("D {:.3}  G {:.3}", p.d_loss, p.g_loss));
    })?;
    bar.finish();
    if let Some((ab, ba)) = summary.kid {
        eprintln!("gantry: KID x 100: A->B {ab:.3}, B->A {ba:.3}");
    }
    if summary.stopped {
        eprintln!(
            "gantry: interrupted at step {}; checkpoint saved. Resume with: gantry train --resume {}",
            summary.steps,
            run_dir.display()
        );
        return Ok(ExitCode::from(130));
    }
    eprintln!(
        "gantry: trained {} steps; run directory {}",
        summary.steps,
        run_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// What `gantry translate` was asked.
pub struct FolderArgs<'a> {
    /// A translation run or a UGATIT-pytorch checkpoint.
    pub run: &'a Path,
    pub input: &'a Path,
    pub out: &'a Path,
    pub a2b: bool,
    pub device: Option<gantry::device::DeviceSpec>,
    /// Image size of a UGATIT-pytorch light checkpoint.
    pub size: Option<i64>,
    pub details: bool,
    pub force: bool,
}

/// `gantry translate`.
pub fn folder(a: FolderArgs<'_>) -> Result<ExitCode> {
    let device = a.device.map(|d| d.open()).transpose()?;
    let (gens, notes) = gantry::interop::translation(a.run, device, a.size)?;
    for note in notes {
        eprintln!("gantry: note: {note}");
    }
    let n = with_progress(a.input, a.out, || {
        tt::translate_folder(&gens, a.input, a.out, a.a2b, a.details, a.force)
    })?;
    eprintln!(
        "gantry: translated {n} image(s) {} into {}",
        if a.a2b { "A->B" } else { "B->A" },
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `translate` (which writes each image of `input` to `out` as `<stem>.png`, in
/// `gantry::data::image_files` order, and reports nothing) under a bar: a thread watches the
/// output files appear, written since the start, and moves the bar on. The library's own hook
/// would replace the watching (a `progress(done, total)` after each image written).
fn with_progress(
    input: &Path,
    out: &Path,
    translate: impl FnOnce() -> Result<usize>,
) -> Result<usize> {
    let Ok(files) = gantry::data::image_files(input) else {
        // Not a readable folder: the library names the problem.
        return translate();
    };
    let targets: Vec<PathBuf> = files
        .iter()
        .map(|f| {
            let stem = f.file_stem().map(|s| s.to_string_lossy().into_owned());
            out.join(format!("{}.png", stem.unwrap_or_default()))
        })
        .collect();
    // Files of an earlier run that --force overwrites are older than this (with a second's
    // slack for coarse file-system clocks).
    let since = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
    let written = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= since)
    };
    let mut bar = Bar::new("translate");
    bar.phase("", targets.len() as u64, 0, "images");
    let finished = std::sync::atomic::AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut done = 0;
            while !finished.load(std::sync::atomic::Ordering::SeqCst) {
                while done < targets.len() && written(&targets[done]) {
                    done += 1;
                }
                bar.set(done as u64);
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        });
        let result = translate();
        finished.store(true, std::sync::atomic::Ordering::SeqCst);
        result
    });
    if let Ok(n) = &result {
        bar.set(*n as u64);
        bar.phase_done();
    }
    bar.finish();
    result
}
