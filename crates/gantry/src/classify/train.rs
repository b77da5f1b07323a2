//! When a classifier's steps run: SGD (momentum, optional Nesterov, weight decay as in
//! `torch.optim.SGD`), a per-step cosine/step/constant schedule, random crop with zero padding plus
//! the data set's horizontal flip, validation at the end of every epoch on the held-out part, a
//! checkpoint per epoch and `checkpoints/best` on the best validation accuracy. Every step reseeds
//! libtorch from (seed, step), and the loader's position is saved, so a resumed run continues
//! exactly (tested).
//!
//! SGD is written here (~30 lines) because tch's optimiser state cannot be saved.

use super::{nets::Net, objective, ClassifyConfig, Schedule};
use crate::device::{seed_torch, Purpose};
use crate::error::{Error, Result};
pub use crate::rundir::start::Start;
use crate::rundir::start::{best_at_start, enter, Task};
use crate::rundir::{checkpoint, log::MetricsLog};
use crate::stats::Stats;
use crate::util::TaskConfig;
use gantry_data::{Loader, Position};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tch::{nn, Kind, Tensor};

/// What the loop reports to its caller after every logged step and epoch.
pub struct Progress<'a> {
    pub step: u64,
    pub total: u64,
    pub epoch: u64,
    pub stats: &'a Stats,
    /// Seconds since this process started training.
    pub elapsed: f64,
    /// Set at the end of an epoch.
    pub val_acc: Option<f64>,
}

/// How a run ended.
#[derive(Debug)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub step: u64,
    pub epochs_done: u64,
    pub best_val_acc: Option<f64>,
    pub train_images: usize,
    pub val_images: usize,
    pub stopped: bool,
}

struct Sgd {
    params: Vec<(String, Tensor)>,
    bufs: Vec<Tensor>,
}

impl Sgd {
    fn new(vs: &nn::VarStore) -> Sgd {
        let params = crate::nn::trainable(vs);
        let bufs = params.iter().map(|(_, p)| p.zeros_like()).collect();
        Sgd { params, bufs }
    }

    fn zero_grad(&mut self) {
        for (_, p) in &self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    /// torch.optim.SGD (dampening 0): d = g + wd p; b = m b + d; d = d + m b (Nesterov) or b.
    fn step(&mut self, lr: f64, momentum: f64, nesterov: bool, wd: f64) {
        tch::no_grad(|| {
            for ((_, p), buf) in self.params.iter().zip(&mut self.bufs) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let mut d = if wd != 0.0 { &g + p * wd } else { g };
                if momentum != 0.0 {
                    let _ = buf.g_mul_scalar_(momentum).g_add_(&d);
                    d = if nesterov {
                        d + &*buf * momentum
                    } else {
                        buf.shallow_clone()
                    };
                }
                let _ = p.shallow_clone().g_sub_(&(d * lr));
            }
        });
    }

    fn state(&self) -> checkpoint::Store {
        self.params
            .iter()
            .zip(&self.bufs)
            .map(|((k, _), b)| (format!("momentum.{k}"), b.shallow_clone()))
            .collect()
    }

    fn restore(&mut self, saved: &HashMap<String, Tensor>, file: &Path) -> Result<()> {
        for ((k, p), buf) in self.params.iter().zip(&mut self.bufs) {
            let key = format!("momentum.{k}");
            let src = saved
                .get(&key)
                .filter(|t| t.size() == p.size())
                .ok_or_else(|| Error::checkpoint(file, format!("missing or misshapen {key}")))?;
            tch::no_grad(|| buf.copy_(src));
        }
        Ok(())
    }
}

fn lr_at(cfg: &super::OptimConfig, step: u64, total: u64) -> f64 {
    let t = step as f64 / total.max(1) as f64;
    match cfg.schedule {
        Schedule::Constant => cfg.lr,
        Schedule::Cosine => cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
        Schedule::Step => {
            let passed = cfg.milestones.iter().filter(|m| t >= **m).count();
            cfg.lr * cfg.gamma.powi(passed as i32)
        }
    }
}

/// A random crop of every image after zero padding by `pad` (torchvision RandomCrop(padding)).
fn random_crop(x: &Tensor, pad: i64) -> Tensor {
    if pad == 0 {
        return x.shallow_clone();
    }
    let size = x.size();
    let (b, h, w) = (size[0], size[2], size[3]);
    let padded = x.constant_pad_nd([pad, pad, pad, pad]);
    let offsets = Vec::<i64>::try_from(
        Tensor::randint(2 * pad + 1, [b, 2], (Kind::Int64, tch::Device::Cpu)).view([-1]),
    )
    .unwrap_or_default();
    let crops: Vec<Tensor> = (0..b as usize)
        .map(|i| {
            padded
                .get(i as i64)
                .narrow(1, offsets[2 * i], h)
                .narrow(2, offsets[2 * i + 1], w)
        })
        .collect();
    Tensor::stack(&crops, 0)
}

/// Accuracy and mean cross-entropy of `net` (inference mode) on a whole data set.
fn validate(net: &Net, ds: &dyn gantry_data::Dataset, device: tch::Device) -> Result<(f64, f64)> {
    let (mut right, mut loss, n) = (0.0, 0.0, ds.len());
    for start in (0..n).step_by(256) {
        let (x, y) = super::batch_of(ds, start, (start + 256).min(n))?;
        let (x, y) = (x.to_device(device), y.to_device(device));
        let logits = tch::no_grad(|| net.forward(&x, false));
        let k = y.size()[0] as f64;
        right += objective::accuracy(&logits, &y).double_value(&[]) * k;
        loss += objective::cross_entropy(&logits, &y).double_value(&[]) * k;
    }
    Ok((right / n as f64, loss / n as f64))
}

/// What data sets noticed while loading ([`gantry_data::Dataset::take_notes`]: a first image that
/// is not square, ...), written to the run's log (`"event": "note"` in metrics.jsonl, and
/// TensorBoard) and to stderr as GAN training writes its warnings, each text once: the training
/// and validation parts of a run are two views of the same files and may both notice the same.
#[derive(Default)]
struct Notes {
    seen: std::collections::HashSet<String>,
}

impl Notes {
    fn log(
        &mut self,
        step: u64,
        sets: &[&dyn gantry_data::Dataset],
        log: &mut MetricsLog,
    ) -> Result<()> {
        for note in sets.iter().flat_map(|ds| ds.take_notes()) {
            if self.seen.insert(note.clone()) {
                log.event(step, "note", &note)?;
                eprintln!("gantry: warning: {note}");
            }
        }
        Ok(())
    }
}

/// The keys `--set` may change on resume: where and how fast it runs, and how long.
pub const RESUME_SAFE: &[&str] = &[
    "train.epochs",
    "train.threads",
    "train.device",
    "train.deterministic",
    "train.tensorboard",
    "train.log_every",
    "train.keep_checkpoints",
];

/// What a classifier's run directory holds.
const TASK: Task = Task {
    arch_prefix: "classify/",
    what: "a classifier run",
    resume_safe: RESUME_SAFE,
};

/// Trains a classifier into `run_dir` (with `Start::Resume`, `cfg` is ignored in favour of the
/// configuration saved with the run).
pub fn train(
    cfg: &ClassifyConfig,
    run_dir: &Path,
    start: Start,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&Progress),
) -> Result<TrainSummary> {
    let (cfg, start, _lock) = enter(&TASK, cfg, run_dir, start)?;
    cfg.validate()?;
    let t = &cfg.train;
    let d = &cfg.data;
    crate::device::set_threads(t.threads);
    let device = t.device.open()?;
    crate::device::set_numerics(false, false, t.deterministic);

    let (train_ds, val_ds_plain) = d.parts(t.seed, d.flips())?;
    let classes = train_ds.num_classes().ok_or_else(|| {
        Error::config(
            "data.spec",
            format!(
                "{} has no labels (a folder needs one sub-folder per class)",
                train_ds.describe()
            ),
        )
    })?;
    if classes < 2 {
        return Err(Error::config(
            "data.spec",
            format!("{} has one class", train_ds.describe()),
        ));
    }
    let [c, h, w] = train_ds.sample_shape();
    cfg.model.validate(Some(c))?;
    if train_ds.len() < 2 {
        return Err(Error::config(
            "data.limit",
            format!(
                "{} leaves {} training image(s); BatchNorm needs at least 2",
                train_ds.describe(),
                train_ds.len()
            ),
        ));
    }
    // Like a DataLoader over fewer images than a batch: one batch of all of them.
    let batch_size = t.batch_size.min(train_ds.len());

    seed_torch(t.seed, 0, Purpose::Init, 0);
    // Drawn on the CPU: a seed gives the same initial weights on every device.
    let ([vs], net) = crate::nn::build_with_cpu_draws(device, |[vs]| {
        crate::error::catch_alloc(
            || {
                format!(
                    "while building the network ({})",
                    crate::util::size_settings(&cfg.to_toml(), &["model"])
                )
            },
            || Ok(Net::new(&vs.root(), &cfg.model, c as i64, classes as i64)),
        )
    })?;
    let mut sgd = Sgd::new(&vs);
    let (mut step, mut position, mut wall_before) = (0u64, Position::default(), 0.0);
    if let Some((ckpt, meta)) = &start {
        let model = checkpoint::read_store(ckpt, "model")?;
        let weights = model
            .into_iter()
            .filter(|(k, _)| !k.starts_with("meta."))
            .collect();
        checkpoint::restore_into(&vs.variables(), &weights, &ckpt.join("model.safetensors"))?;
        sgd.restore(
            &checkpoint::read_store(ckpt, "sgd")?,
            &ckpt.join("sgd.safetensors"),
        )?;
        step = meta.step;
        position = meta.loader;
        wall_before = meta.wall_seconds;
    }
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
    crate::util::write_atomic(&run_dir.join("config.toml"), cfg.to_toml().as_bytes())?;
    let mut log = MetricsLog::open(&run_dir.join("metrics.jsonl"), step, t.tensorboard)?;
    if step == 0 {
        log.text(0, "config", &format!("```toml\n{}```", cfg.to_toml()))?;
    }
    let mut loader = Loader::new(train_ds.clone(), batch_size, t.seed, position, d.workers, 4)?;
    let per_epoch = loader.batches_per_epoch();
    let total = per_epoch * t.epochs as u64;
    let meta_tensors = [
        ("meta.c", c),
        ("meta.h", h),
        ("meta.w", w),
        ("meta.classes", classes),
    ];
    let save = |step: u64, loader: &Loader, wall: f64, sgd: &Sgd| -> Result<PathBuf> {
        let meta = checkpoint::Meta::one_process(
            step,
            batch_size,
            loader.position(),
            wall,
            format!("classify/{}", cfg.model.name()),
            cfg.to_toml(),
        );
        let mut model = checkpoint::store_of(&vs);
        model.extend(
            meta_tensors
                .iter()
                .map(|(k, v)| (k.to_string(), Tensor::from(*v as i64))),
        );
        checkpoint::save(run_dir, &meta, &[("model", model), ("sgd", sgd.state())])
    };

    let t0 = Instant::now();
    let mut best = best_at_start(run_dir, "val/acc", start.is_some());
    let mut stopped = false;
    let mut notes = Notes::default();
    while step < total {
        if stop.load(Ordering::Relaxed) {
            save(
                step,
                &loader,
                wall_before + t0.elapsed().as_secs_f64(),
                &sgd,
            )?;
            stopped = true;
            break;
        }
        seed_torch(t.seed, step, Purpose::Classify, 0);
        let batch = loader.next_batch()?;
        let shape: Vec<i64> = batch.shape.iter().map(|&v| v as i64).collect();
        let x = (Tensor::from_slice(&batch.images).view(shape.as_slice()) + 1.0) / 2.0;
        let x = crate::precision::to_device_pinned(&random_crop(&x, d.crop_padding), device)?;
        let y = crate::precision::to_device_pinned(&Tensor::from_slice(&batch.labels), device)?;
        let out = objective::loss(&net, &x, &y, &cfg.objective);
        let value = crate::util::read_f64(&out.loss);
        if !value.is_finite() {
            return Err(Error::NonFinite {
                step,
                what: "classifier loss (lower train.lr?)".into(),
            });
        }
        sgd.zero_grad();
        out.loss.backward();
        let lr = lr_at(t, step, total);
        sgd.step(lr, t.momentum, t.nesterov, t.weight_decay);
        step += 1;
        // What the data set noticed while loading (a first non-square image, ...), once.
        notes.log(step, &[train_ds.as_ref()], &mut log)?;
        let epoch_end = step % per_epoch == 0;
        if step % t.log_every == 0 || epoch_end {
            let mut stats = out.stats();
            stats.set("train/lr", lr);
            stats.set("wall_s", wall_before + t0.elapsed().as_secs_f64());
            let mut val_acc = None;
            if epoch_end {
                let (acc, loss) = validate(&net, val_ds_plain.as_ref(), device)?;
                notes.log(step, &[val_ds_plain.as_ref()], &mut log)?;
                stats.set("val/acc", acc);
                stats.set("val/loss", loss);
                val_acc = Some(acc);
            }
            log.write(step, &stats)?;
            progress(&Progress {
                step,
                total,
                epoch: step / per_epoch,
                stats: &stats,
                elapsed: t0.elapsed().as_secs_f64(),
                val_acc,
            });
            if let Some(acc) = val_acc {
                let ckpt = save(
                    step,
                    &loader,
                    wall_before + t0.elapsed().as_secs_f64(),
                    &sgd,
                )?;
                if best.is_none_or(|b| acc > b) {
                    checkpoint::mark_best(run_dir, &ckpt, "val/acc", acc, step)?;
                    best = Some(acc);
                }
                checkpoint::prune(run_dir, t.keep_checkpoints.max(1));
            }
        }
    }
    Ok(TrainSummary {
        run_dir: run_dir.to_path_buf(),
        step,
        epochs_done: step / per_epoch,
        best_val_acc: best,
        train_images: train_ds.len(),
        val_images: val_ds_plain.len(),
        stopped,
    })
}

/// Milliseconds of each of `steps` training steps (after `warmup` untimed ones) of `cfg`'s
/// model and objective on one fixed random batch of `shape` images with `classes` classes:
/// forward, backward and the SGD update, nothing else (the benchmark's unit; data loading is
/// measured with the loader).
pub fn time_steps(
    cfg: &ClassifyConfig,
    shape: [i64; 3],
    classes: i64,
    warmup: usize,
    steps: usize,
) -> Result<Vec<f64>> {
    cfg.validate()?;
    super::check_bench_input(shape, classes)?;
    let t = &cfg.train;
    crate::device::set_threads(t.threads);
    let device = t.device.open()?;
    seed_torch(t.seed, 0, Purpose::Init, 0);
    let vs = nn::VarStore::new(device);
    let net = Net::new(&vs.root(), &cfg.model, shape[0], classes);
    let mut sgd = Sgd::new(&vs);
    let b = t.batch_size as i64;
    let x = Tensor::rand([b, shape[0], shape[1], shape[2]], (Kind::Float, device));
    let y = Tensor::randint(classes, [b], (Kind::Int64, device));
    let mut ms = Vec::new();
    for i in 0..warmup + steps {
        let t0 = Instant::now();
        let out = objective::loss(&net, &x, &y, &cfg.objective);
        sgd.zero_grad();
        out.loss.backward();
        sgd.step(t.lr, t.momentum, t.nesterov, t.weight_decay);
        if let tch::Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
        if i >= warmup {
            ms.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::super::ClassifyConfig;
    use super::lr_at;

    /// The `adaptivemix-wrn-cifar` preset's rate is the reference's `learning_rate(0.1, epoch)`
    /// (config.py: x0.2 once the 1-based epoch passes 60, 120, 160) at every epoch's first and
    /// last step, whatever the number of steps per epoch.
    #[test]
    fn the_reference_preset_steps_the_rate_at_the_references_epochs() {
        let cfg = ClassifyConfig::resolve(Some("adaptivemix-wrn-cifar"), &[]).unwrap();
        let t = &cfg.train;
        assert_eq!((t.epochs, t.batch_size), (200, 128));
        assert_eq!((t.momentum, t.weight_decay, t.nesterov), (0.9, 5e-4, false));
        assert_eq!(cfg.model.name(), "wrn-28-10");
        for per_epoch in [351u64, 352, 390, 391] {
            let total = per_epoch * 200;
            for epoch in 1..=200u64 {
                let passed = [60, 120, 160].iter().filter(|&&e| epoch > e).count();
                let want = 0.1 * 0.2f64.powi(passed as i32);
                for step in [(epoch - 1) * per_epoch, epoch * per_epoch - 1] {
                    let got = lr_at(t, step, total);
                    assert!(
                        (got - want).abs() < 1e-15,
                        "epoch {epoch}, step {step} of {total}: {got} != {want}"
                    );
                }
            }
        }
    }
}
