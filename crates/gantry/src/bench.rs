//! `gantry bench`: times training steps of a configuration on a fixed batch (compute only; data
//! loading is measured separately by the loader's own prefetching), for side-by-side comparison
//! with a PyTorch twin (`benches/*.py`, driven by `scripts/bench.sh`).

use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::train::Trainer;
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Serialize)]
pub struct StepTiming {
    pub what: String,
    pub threads: i32,
    pub device: String,
    pub steps: usize,
    pub median_ms: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
    /// Peak resident memory of this process (VmHWM), MiB; on CUDA, peak allocated GPU memory is
    /// not visible through tch and is left out.
    pub peak_rss_mib: f64,
    /// Processes of the data-parallel job (1 = one process); the timings are rank 0's.
    pub world: usize,
    /// Bytes all-reduced per step, MiB (0 in one process).
    pub mib_reduced_per_step: f64,
}

/// Peak resident set size of this process in MiB (Linux; 0 elsewhere).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Times `steps` training steps after `warmup` untimed ones, in a scratch run directory.
/// In a data-parallel job (the torchrun environment, or `gantry bench --nproc N`) every rank
/// times the same steps, which run in lockstep; rank 0's timings are reported.
pub fn train_steps(cfg: RunConfig, what: &str, warmup: usize, steps: usize) -> Result<StepTiming> {
    if steps == 0 {
        return Err(Error::config("--steps", "must be at least 1 timed step"));
    }
    cfg.validate()?;
    let mut cfg = cfg;
    let comm = crate::run::join_job(&mut cfg)?;
    let world = comm.world;
    let dir = std::env::temp_dir().join(format!("gantry-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut setup = cfg.setup();
    setup.comm = comm;
    let mut trainer = Trainer::new(setup, &dir)?;
    let batch = trainer.real_batch()?;
    let batches = || {
        (0..cfg.train.n_dis)
            .map(|_| {
                (
                    batch.0.shallow_clone(),
                    batch.1.as_ref().map(|l| l.shallow_clone()),
                )
            })
            .collect::<Vec<_>>()
    };
    let device = trainer.device;
    for _ in 0..warmup {
        trainer.train_step_on(batches())?;
    }
    sync(device);
    let reduced_before = trainer.bytes_reduced();
    let ms = time_each(steps, device, |_| {
        trainer.train_step_on(batches()).map(drop)
    })?;
    let _ = std::fs::remove_dir_all(&dir);
    let reduced = (trainer.bytes_reduced() - reduced_before) as f64 / steps as f64;
    Ok(StepTiming::of(
        what,
        &cfg.train.device,
        &ms,
        world,
        reduced / (1u64 << 20) as f64,
    ))
}

fn sync(device: tch::Device) {
    if let tch::Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Runs `step(i)` for `i` in `0..steps`, each timed to the end of its device work, in ms.
fn time_each(
    steps: usize,
    device: tch::Device,
    mut step: impl FnMut(usize) -> Result<()>,
) -> Result<Vec<f64>> {
    let mut ms = Vec::with_capacity(steps);
    for i in 0..steps {
        let t0 = Instant::now();
        step(i)?;
        sync(device);
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok(ms)
}

impl StepTiming {
    /// The summary of per-step times `ms` (at least one).
    fn of(
        what: &str,
        device: &crate::device::DeviceSpec,
        ms: &[f64],
        world: usize,
        mib_reduced_per_step: f64,
    ) -> Self {
        let mut sorted = ms.to_vec();
        sorted.sort_by(|a, b| a.total_cmp(b));
        StepTiming {
            what: what.to_string(),
            threads: tch::get_num_threads(),
            device: device.to_string(),
            steps: ms.len(),
            median_ms: sorted[sorted.len() / 2],
            mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
            min_ms: sorted[0],
            peak_rss_mib: peak_rss_mib(),
            world,
            mib_reduced_per_step,
        }
    }
}

/// Times `steps` U-GAT-IT iterations (after `warmup`) of a translation configuration on fixed
/// random batches of both domains (compute only, as [`train_steps`]).
pub fn translate_steps(
    cfg: crate::translate::TranslateConfig,
    what: &str,
    warmup: usize,
    steps: usize,
) -> Result<StepTiming> {
    if steps == 0 {
        return Err(Error::config("--steps", "must be at least 1 timed step"));
    }
    cfg.validate()?;
    crate::device::set_threads(cfg.train.threads);
    let device = cfg.train.device.open()?;
    let mut tr = crate::translate::train::Translator::new(&cfg, 3, device)?;
    let r = i64::from(cfg.data.resolution);
    let b = cfg.train.batch_size as i64;
    let opts = (tch::Kind::Float, device);
    let (a, bb) = (
        tch::Tensor::rand([b, 3, r, r], opts) * 2.0 - 1.0,
        tch::Tensor::rand([b, 3, r, r], opts) * 2.0 - 1.0,
    );
    for i in 0..warmup {
        tr.step(i as u64, &a, &bb)?;
    }
    sync(device);
    let ms = time_each(steps, device, |i| {
        tr.step((warmup + i) as u64, &a, &bb).map(drop)
    })?;
    Ok(StepTiming::of(what, &cfg.train.device, &ms, 1, 0.0))
}
