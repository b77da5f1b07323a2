//! Image classification as a gantry task: train a classifier (cross-entropy, mixup or
//! AdaptiveMix), measure its accuracy under FGSM/PGD attacks, and score out-of-distribution
//! inputs. docs/classification.md is the user's page; the algorithm is docs/adaptivemix.md's
//! "Classifier use".
//!
//! A run directory holds `config.toml`, `metrics.jsonl` and `checkpoints/` (the same layout and
//! atomic saves as GAN runs, stores `model` and `sgd`); `checkpoints/best` is the checkpoint of the
//! best validation accuracy, where validation data is held out of the training split.

pub mod attack;
pub mod data;
pub mod nets;
pub mod objective;
pub mod ood;
mod train;

pub use train::{time_steps, train, Progress, Start, TrainSummary, RESUME_SAFE};

use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::rundir::checkpoint;
use crate::util::{parse_toml, TaskConfig};
use data::DataSection;
use gantry_data::{Dataset, Split};
use nets::{Net, NetConfig};
use objective::ObjectiveConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{nn, Device, Kind, Tensor};

/// `train.schedule`
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// lr * (1 + cos(pi * t / T)) / 2, per step.
    Cosine,
    /// lr * gamma^(milestones passed), milestones as fractions of training.
    Step,
    Constant,
}

/// `[train]` of a classification run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// SGD learning rate (before the schedule).
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    /// `cosine`, `step` or `constant`.
    pub schedule: Schedule,
    /// `step`: where the rate is multiplied by `gamma`, as fractions of training.
    pub milestones: Vec<f64>,
    pub gamma: f64,
    pub seed: u64,
    /// CPU threads (0 = libtorch's default).
    pub threads: usize,
    pub device: DeviceSpec,
    /// Deterministic algorithms (as `gantry train`'s `train.deterministic`): a CUDA run repeats
    /// bit for bit; slower.
    pub deterministic: bool,
    /// TensorBoard event files beside metrics.jsonl (as `gantry train`'s `train.tensorboard`).
    pub tensorboard: bool,
    /// Steps between lines of metrics.jsonl.
    pub log_every: u64,
    /// Checkpoints kept besides `best` (one per epoch is written).
    pub keep_checkpoints: usize,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            epochs: 10,
            batch_size: 128,
            lr: 0.1,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 5e-4,
            schedule: Schedule::Cosine,
            milestones: vec![0.5, 0.75],
            gamma: 0.1,
            seed: 0,
            threads: 0,
            device: DeviceSpec::Cpu,
            deterministic: false,
            tensorboard: true,
            log_every: 20,
            keep_checkpoints: 2,
        }
    }
}

/// The whole configuration of a classification run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifyConfig {
    pub data: DataSection,
    pub model: NetConfig,
    pub objective: ObjectiveConfig,
    pub train: OptimConfig,
}

impl TaskConfig for ClassifyConfig {
    fn validate(&self) -> Result<()> {
        ClassifyConfig::validate(self)
    }

    /// `model.head = "auto"`: the reference's orthogonal head for AdaptiveMix, linear otherwise.
    fn resolved(mut self) -> Self {
        if self.model.head == nets::Head::Auto {
            self.model.head = if self.objective.mode == objective::Mode::Adaptivemix {
                nets::Head::Orthogonal
            } else {
                nets::Head::Linear
            };
        }
        self
    }
}

/// Built-in classification presets: `(name, description, TOML)`.
pub const PRESETS: &[(&str, &str, &str)] = &[(
    "adaptivemix-wrn-cifar",
    "classifier: the AdaptiveMix reference's WRN-28-10 on CIFAR-10, 200 epochs (set data.spec; GPU)",
    include_str!("../../presets/adaptivemix-wrn-cifar.toml"),
)];

/// The TOML of classification preset `name`.
pub fn preset(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|(n, _, _)| *n == name).map(|p| p.2)
}

impl ClassifyConfig {
    /// Defaults, then a preset name or TOML file (which may start from a preset with
    /// `preset = "NAME"`), then `--set key=value` assignments; validated.
    pub fn resolve(config: Option<&str>, sets: &[String]) -> Result<ClassifyConfig> {
        let mut layers = Vec::new();
        if let Some(c) = config {
            let (base, file) = match preset(c) {
                Some(_) => (Some(c.to_string()), None),
                None => {
                    let path = Path::new(c);
                    let text = std::fs::read_to_string(path).map_err(|e| Error::input(path, e))?;
                    let mut layer = parse_toml(&text, c)?;
                    let base = match layer.as_table_mut().and_then(|t| t.remove("preset")) {
                        Some(toml::Value::String(name)) => Some(name),
                        Some(other) => {
                            return Err(Error::config(
                                "preset",
                                format!("must be a preset name, got {other}"),
                            ))
                        }
                        None => None,
                    };
                    (base, Some(layer))
                }
            };
            if let Some(name) = base {
                let text = preset(&name).ok_or_else(|| {
                    let names: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
                    Error::config(
                        "preset",
                        format!(
                            "unknown classification preset {name:?} (valid: {})",
                            names.join(", ")
                        ),
                    )
                })?;
                layers.push(parse_toml(text, &name).expect("built-in presets parse"));
            }
            layers.extend(file);
        }
        Self::layered(layers, sets)
    }

    /// Everything that can be checked without opening data.
    pub fn validate(&self) -> Result<()> {
        let t = &self.train;
        let d = &self.data;
        if t.epochs == 0 {
            return Err(Error::config("train.epochs", "must be at least 1"));
        }
        if t.batch_size < 2 {
            return Err(Error::config("train.batch_size", "must be at least 2"));
        }
        for (key, v, positive) in [
            ("train.lr", t.lr, true),
            ("train.momentum", t.momentum, false),
            ("train.weight_decay", t.weight_decay, false),
            ("train.gamma", t.gamma, true),
        ] {
            if !(v.is_finite() && (v > 0.0 || (!positive && v == 0.0))) {
                let want = if positive { "> 0" } else { ">= 0" };
                return Err(Error::config(
                    key,
                    format!("must be a finite number {want}, got {v}"),
                ));
            }
        }
        if t.momentum >= 1.0 {
            return Err(Error::config("train.momentum", "must be < 1"));
        }
        if t.nesterov && t.momentum == 0.0 {
            return Err(Error::config("train.nesterov", "needs train.momentum > 0"));
        }
        if t.milestones.iter().any(|m| !(*m > 0.0 && *m < 1.0)) {
            return Err(Error::config(
                "train.milestones",
                "must be fractions of training in (0, 1), e.g. [0.5, 0.75]",
            ));
        }
        if t.log_every == 0 {
            return Err(Error::config("train.log_every", "must be at least 1"));
        }
        if !(d.val_fraction > 0.0 && d.val_fraction < 1.0) {
            return Err(Error::config("data.val_fraction", "must be in (0, 1)"));
        }
        if d.resolution < 8 || !d.resolution.is_power_of_two() {
            return Err(Error::config(
                "data.resolution",
                "must be a power of two >= 8",
            ));
        }
        if d.crop_padding < 0 || d.crop_padding >= d.resolution as i64 {
            return Err(Error::config(
                "data.crop_padding",
                "must be >= 0 and below the resolution",
            ));
        }
        if let Some(c) = &d.classes {
            data::parse_classes(c, "data.classes")?;
        }
        let spec =
            gantry_data::DataConfig::from_spec(d.spec.rsplit_once('#').map_or(&d.spec, |s| s.0))?;
        if spec.kind.is_points() {
            return Err(Error::config(
                "data.spec",
                format!("{} is a set of 2-D points, not images", d.spec),
            ));
        }
        self.model.validate(None)?;
        self.objective.validate()
    }
}

/// A trained classifier loaded from a run.
pub struct Trained {
    pub cfg: ClassifyConfig,
    pub net: Net,
    _vs: nn::VarStore,
    pub device: Device,
    /// `[C, H, W]` the network takes.
    pub shape: [usize; 3],
    pub classes: i64,
    /// The checkpoint it came from.
    pub checkpoint: PathBuf,
}

/// The checkpoint a classify run directory `path` is used from (`best`, else the latest), checked
/// to be a classifier's: the cheap part of [`load`], for the checks before work starts.
pub fn find(path: &Path) -> Result<(PathBuf, checkpoint::Meta)> {
    if !path.exists() {
        return Err(Error::input(
            path,
            "classifier not found (train one with `gantry classify train` or `gantry classifier train`)",
        ));
    }
    let best = checkpoint::checkpoints_dir(path).join("best");
    let ckpt = if best.join("meta.json").exists() {
        best
    } else {
        checkpoint::resolve(path)?
    };
    let meta = checkpoint::read_meta(&ckpt)?;
    if !meta.arch.starts_with("classify/") {
        return Err(Error::checkpoint(
            &ckpt,
            format!(
                "is a {} GAN checkpoint, not a classifier (gantry classify train)",
                meta.arch
            ),
        ));
    }
    Ok((ckpt, meta))
}

/// Loads `path`: a run directory (its best checkpoint, else its latest) or a checkpoint.
pub fn load(path: &Path, device: Option<Device>) -> Result<Trained> {
    let (ckpt, meta) = find(path)?;
    let cfg =
        ClassifyConfig::from_toml(&meta.config, &ckpt.join("meta.json").display().to_string())?;
    let device = match device {
        Some(d) => d,
        None => cfg.train.device.open()?,
    };
    let saved = checkpoint::read_store(&ckpt, "model")?;
    let get = |k: &str| {
        saved
            .get(k)
            .map(|t| t.int64_value(&[]))
            .ok_or_else(|| Error::checkpoint(&ckpt, format!("model store lacks {k}")))
    };
    let (c, h, w, classes) = (
        get("meta.c")?,
        get("meta.h")?,
        get("meta.w")?,
        get("meta.classes")?,
    );
    let vs = nn::VarStore::new(device);
    let net = Net::new(&vs.root(), &cfg.model, c, classes);
    let weights: std::collections::HashMap<String, Tensor> = saved
        .into_iter()
        .filter(|(k, _)| !k.starts_with("meta."))
        .collect();
    if cfg.model.backbone == nets::Backbone::Wrn && weights.contains_key("trunk.stem.weight") {
        return Err(Error::checkpoint(
            &ckpt,
            "holds the WRN paper's layout, called `wrn-zk` since gantry's `wrn` became the \
             AdaptiveMix reference's: set model.backbone = \"wrn-zk\" in its meta.json's config",
        ));
    }
    checkpoint::restore_into(&vs.variables(), &weights, &ckpt.join("model.safetensors"))?;
    Ok(Trained {
        cfg,
        net,
        _vs: vs,
        device,
        shape: [c as usize, h as usize, w as usize],
        classes,
        checkpoint: ckpt,
    })
}

/// Samples `start..end` of a data set as (images in [0, 1], labels).
pub fn batch_of(ds: &dyn Dataset, start: usize, end: usize) -> Result<(Tensor, Tensor)> {
    let [c, h, w] = ds.sample_shape();
    let per = c * h * w;
    let mut images = vec![0f32; (end - start) * per];
    let mut labels = Vec::with_capacity(end - start);
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    for (k, i) in (start..end).enumerate() {
        labels.push(ds.load_into(i, &mut images[k * per..(k + 1) * per], &mut rng)?);
    }
    let x = Tensor::from_slice(&images).view([(end - start) as i64, c as i64, h as i64, w as i64]);
    Ok(((x + 1.0) / 2.0, Tensor::from_slice(&labels)))
}

/// (features, logits, labels) of the first `n` samples of `ds` (all with `n = 0`), on the CPU.
pub fn features(t: &Trained, ds: &dyn Dataset, n: usize) -> Result<(Tensor, Tensor, Tensor)> {
    features_with(t, ds, n, &mut |_, _| {})
}

/// [`features`], reporting `(done, n)` before the first batch and after each.
pub fn features_with(
    t: &Trained,
    ds: &dyn Dataset,
    n: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Tensor, Tensor, Tensor)> {
    let n = if n == 0 { ds.len() } else { n.min(ds.len()) };
    let (mut fs, mut ls, mut ys) = (Vec::new(), Vec::new(), Vec::new());
    progress(0, n);
    for start in (0..n).step_by(256) {
        let (x, y) = batch_of(ds, start, (start + 256).min(n))?;
        let (f, l) = embed_and_head(t, &x);
        fs.push(f);
        ls.push(l);
        ys.push(y);
        progress((start + 256).min(n), n);
    }
    Ok((
        Tensor::cat(&fs, 0),
        Tensor::cat(&ls, 0),
        Tensor::cat(&ys, 0),
    ))
}

/// Opens a data set for a trained classifier: its own spec and classes unless `spec` is given,
/// at its resolution; refuses a shape the network does not take.
pub fn open_for(t: &Trained, spec: Option<&str>, split: Split) -> Result<Arc<dyn Dataset>> {
    let d = &t.cfg.data;
    let (spec, classes) = match spec {
        Some(s) => (s, None),
        None => (d.spec.as_str(), d.classes.as_deref()),
    };
    let ds = data::open(spec, split, d.resolution, classes, false, None, d.workers)?;
    if ds.sample_shape() != t.shape {
        let [c, h, w] = ds.sample_shape();
        let [tc, th, tw] = t.shape;
        return Err(Error::config(
            spec,
            format!("holds {c}x{h}x{w} images; the classifier takes {tc}x{th}x{tw}"),
        ));
    }
    Ok(ds)
}

/// Clean accuracy on the test split of the run's data (or `spec`).
pub fn evaluate(t: &Trained, spec: Option<&str>, n: usize) -> Result<(f64, usize)> {
    evaluate_with(t, spec, n, &mut |_, _, _| {})
}

/// [`evaluate`], reporting `("test", done, total)` as the test images go through the network.
pub fn evaluate_with(
    t: &Trained,
    spec: Option<&str>,
    n: usize,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<(f64, usize)> {
    let ds = open_for(t, spec, Split::Test)?;
    let (_, logits, y) = features_with(t, ds.as_ref(), n, &mut |d, k| progress("test", d, k))?;
    let acc = objective::accuracy(&logits, &y).double_value(&[]);
    Ok((acc, y.size()[0] as usize))
}

/// Accuracy under each attack on the first `n` test images (clean accuracy first), and how many
/// images that was.
pub fn attack_accuracy(
    t: &Trained,
    attacks: &[attack::Attack],
    spec: Option<&str>,
    n: usize,
    batch: usize,
    mut progress: impl FnMut(&str, usize, usize),
) -> Result<(Vec<(String, f64)>, usize)> {
    for a in attacks {
        a.validate()?;
    }
    if batch == 0 {
        return Err(Error::config("--batch", "must be at least 1"));
    }
    let ds = open_for(t, spec, Split::Test)?;
    let n = if n == 0 { ds.len() } else { n.min(ds.len()) };
    let mut right = vec![0i64; attacks.len() + 1];
    for (bi, start) in (0..n).step_by(batch).enumerate() {
        let (x, y) = batch_of(ds.as_ref(), start, (start + batch).min(n))?;
        let (x, y) = (x.to_device(t.device), y.to_device(t.device));
        let count = |x: &Tensor| {
            tch::no_grad(|| {
                t.net
                    .forward(x, false)
                    .argmax(1, false)
                    .eq_tensor(&y)
                    .sum(Kind::Int64)
                    .int64_value(&[])
            })
        };
        right[0] += count(&x);
        for (k, a) in attacks.iter().enumerate() {
            crate::device::seed_torch(
                t.cfg.train.seed,
                bi as u64,
                crate::device::Purpose::Attack,
                k as u64,
            );
            let adv = a.run(&t.net, &x, &y, None);
            right[k + 1] += count(&adv);
            progress(&a.name(), (start + batch).min(n), n);
        }
    }
    let mut names = vec!["clean".to_string()];
    names.extend(attacks.iter().map(|a| a.name()));
    let rows = names
        .into_iter()
        .zip(right)
        .map(|(k, r)| (k, r as f64 / n as f64))
        .collect();
    Ok((rows, n))
}

/// One row of an OOD table.
#[derive(Clone, Debug)]
pub struct OodRow {
    /// Position of the set in the list asked for.
    pub index: usize,
    pub set: String,
    pub score: ood::Score,
    pub metrics: gantry_metrics::OodMetrics,
}

/// Fits the principal directions on the run's training part, scores its test split and every
/// OOD set (`noise:gaussian`, `noise:uniform` or a data spec with an optional `#classes`
/// filter), at most `n` images each (0 = all).
pub fn ood_table(t: &Trained, ood_specs: &[String], n: usize) -> Result<Vec<OodRow>> {
    ood_table_with(t, ood_specs, n, &mut |_, _, _| {})
}

/// [`ood_table`], reporting `(set, done, total)` as each set goes through the network: `train`
/// (the part the directions are fitted on), `test`, then each OOD set by its spec.
pub fn ood_table_with(
    t: &Trained,
    ood_specs: &[String],
    n: usize,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Vec<OodRow>> {
    if ood_specs.is_empty() {
        return Err(Error::config(
            "--ood",
            "name at least one OOD set (a data spec, noise:gaussian or noise:uniform)",
        ));
    }
    // Open every OOD set first: a bad one fails before minutes of feature extraction.
    enum Set {
        Noise(String),
        Data(Arc<dyn Dataset>),
    }
    let mut sets = Vec::new();
    for spec in ood_specs {
        match spec.strip_prefix("noise:") {
            Some(kind) => {
                let _ = ood::noise(kind, 1, t.shape, 0)?;
                sets.push((spec.clone(), Set::Noise(kind.to_string())));
            }
            None => sets.push((
                spec.clone(),
                Set::Data(open_for(t, Some(spec), Split::Test)?),
            )),
        }
    }
    // The run's own training part (same classes, limit and split as training drew), unflipped.
    let (train_part, _) = t.cfg.data.parts(t.cfg.train.seed, false)?;
    let (f_train, _, y_train) = features_with(t, train_part.as_ref(), n, &mut |d, k| {
        progress("train", d, k)
    })?;
    let directions =
        ood::principal_directions(&f_train, &y_train, t.classes).map_err(|e| match e {
            Error::Config { msg, .. } if n > 0 => Error::config(
                "--n",
                format!("{msg} among the first {n} training images; raise --n (0 = all)"),
            ),
            e => e,
        })?;
    let test = open_for(t, None, Split::Test)?;
    let (f_in, l_in, _) = features_with(t, test.as_ref(), n, &mut |d, k| progress("test", d, k))?;
    let s_in = ood::scores(&f_in, &l_in, &directions);
    let n_in = f_in.size()[0];
    let mut rows = Vec::new();
    for (k, (name, set)) in sets.into_iter().enumerate() {
        let (f, l) = match set {
            Set::Noise(kind) => {
                let x = ood::noise(&kind, n_in, t.shape, 1000 + k as u64)?;
                let (mut fs, mut ls) = (Vec::new(), Vec::new());
                progress(&name, 0, n_in as usize);
                for chunk in x.split(256, 0) {
                    let (f, l) = embed_and_head(t, &chunk);
                    fs.push(f);
                    ls.push(l);
                    progress(
                        &name,
                        fs.iter().map(|f| f.size()[0] as usize).sum(),
                        n_in as usize,
                    );
                }
                (Tensor::cat(&fs, 0), Tensor::cat(&ls, 0))
            }
            Set::Data(ds) => {
                let (f, l, _) =
                    features_with(t, ds.as_ref(), n, &mut |d, k| progress(&name, d, k))?;
                (f, l)
            }
        };
        let s_out = ood::scores(&f, &l, &directions);
        for (i, score) in ood::Score::ALL.into_iter().enumerate() {
            let metrics = gantry_metrics::ood_metrics(&to_vec(&s_in[i])?, &to_vec(&s_out[i])?)
                .map_err(|e| Error::Metrics(e.to_string()))?;
            rows.push(OodRow {
                index: k,
                set: name.clone(),
                score,
                metrics,
            });
        }
    }
    Ok(rows)
}

fn to_vec(t: &Tensor) -> Result<Vec<f64>> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).contiguous())
        .map_err(|e| Error::Torch(e.to_string()))
}

/// (features, logits) of images in [0, 1], inference mode, on the CPU.
fn embed_and_head(t: &Trained, x: &Tensor) -> (Tensor, Tensor) {
    tch::no_grad(|| {
        let f = t.net.embed(&x.to_device(t.device), false);
        let l = t.net.head(&f);
        (f.to_device(Device::Cpu), l.to_device(Device::Cpu))
    })
}

/// The input a benchmark may time: 1 or 3 channels, a power-of-two side >= 8, >= 2 classes.
pub(crate) fn check_bench_input(shape: [i64; 3], classes: i64) -> Result<()> {
    let [c, h, w] = shape;
    if !(c == 1 || c == 3) {
        return Err(Error::config("--channels", "must be 1 or 3"));
    }
    if h != w || h < 8 || !(h as u64).is_power_of_two() {
        return Err(Error::config("--resolution", "must be a power of two >= 8"));
    }
    if classes < 2 {
        return Err(Error::config("--classes", "must be at least 2"));
    }
    Ok(())
}

/// Milliseconds of each of `rounds` runs of `attack` on one random batch, with a freshly
/// initialised `cfg` model in inference mode (after one untimed run).
pub fn time_attack(
    cfg: &ClassifyConfig,
    shape: [i64; 3],
    classes: i64,
    attack: &attack::Attack,
    rounds: usize,
) -> Result<Vec<f64>> {
    cfg.validate()?;
    check_bench_input(shape, classes)?;
    attack.validate()?;
    crate::device::set_threads(cfg.train.threads);
    let device = cfg.train.device.open()?;
    crate::device::seed_torch(cfg.train.seed, 0, crate::device::Purpose::Init, 0);
    let vs = nn::VarStore::new(device);
    let net = Net::new(&vs.root(), &cfg.model, shape[0], classes);
    let b = cfg.train.batch_size as i64;
    let x = Tensor::rand([b, shape[0], shape[1], shape[2]], (Kind::Float, device));
    let y = Tensor::randint(classes, [b], (Kind::Int64, device));
    let mut ms = Vec::new();
    for i in 0..=rounds {
        let t0 = std::time::Instant::now();
        let _ = attack.run(&net, &x, &y, None);
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
        if i > 0 {
            ms.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(ms)
}

/// What an experiment measures on each finished classification run (`[evaluate]` of an
/// experiment file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSpec {
    /// `fgsm`, `pgd-N`, comma-separated ("" = none).
    pub attacks: String,
    /// L-inf radius and PGD step in [0, 1] pixel units.
    pub eps: f64,
    pub step: f64,
    /// Test images attacked (0 = all).
    pub attack_n: usize,
    /// OOD sets by name: `digits = "mnist:DIR#5-9"`, `gaussian = "noise:gaussian"`.
    pub ood: std::collections::BTreeMap<String, String>,
    /// Images per OOD set and of the test split scored (0 = all).
    pub ood_n: usize,
}

impl Default for EvalSpec {
    fn default() -> Self {
        EvalSpec {
            attacks: "fgsm,pgd-10,pgd-20".into(),
            eps: 8.0 / 255.0,
            step: 2.0 / 255.0,
            attack_n: 1000,
            ood: Default::default(),
            ood_n: 0,
        }
    }
}

impl EvalSpec {
    /// The attacks, parsed (`fgsm`, `pgd-N`).
    pub fn attacks(&self) -> Result<Vec<attack::Attack>> {
        attack::parse_list(
            &self.attacks,
            attack::Norm::Linf,
            self.eps,
            self.step,
            "evaluate.attacks",
        )
    }

    pub fn validate(&self) -> Result<()> {
        self.attacks()?;
        for (name, spec) in &self.ood {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
            {
                return Err(Error::config(
                    "evaluate.ood",
                    format!("'{name}': OOD set names are letters, digits, - and _"),
                ));
            }
            if let Some(kind) = spec.strip_prefix("noise:") {
                let _ = ood::noise(kind, 1, [1, 8, 8], 0)?;
            }
        }
        Ok(())
    }

    /// Every number of a trained run: `acc`, `acc_<attack>`, and per OOD set and score
    /// `auroc_<set>_<score>`, `fpr95_<set>_<score>`.
    pub fn measure(&self, t: &Trained) -> Result<Vec<(String, f64)>> {
        let mut out = Vec::new();
        let (acc, _) = evaluate(t, None, 0)?;
        out.push(("acc".to_string(), acc));
        let attacks = self.attacks()?;
        if !attacks.is_empty() {
            let (rows, _) = attack_accuracy(t, &attacks, None, self.attack_n, 250, |_, _, _| {})?;
            out.extend(
                rows.into_iter()
                    .skip(1)
                    .map(|(k, v)| (format!("acc_{k}"), v)),
            );
        }
        if !self.ood.is_empty() {
            let (names, specs): (Vec<&String>, Vec<String>) =
                self.ood.iter().map(|(k, v)| (k, v.clone())).unzip();
            for r in ood_table(t, &specs, self.ood_n)? {
                let name = names[r.index];
                let s = r.score.as_str();
                out.push((format!("auroc_{name}_{s}"), r.metrics.auroc));
                out.push((format!("fpr95_{name}_{s}"), r.metrics.fpr95));
            }
        }
        Ok(out)
    }
}

/// Whether higher is better for a number [`EvalSpec::measure`] reports (`None`: not one).
pub fn higher_is_better(key: &str) -> Option<bool> {
    let key = key.strip_prefix("eval/").unwrap_or(key);
    if key == "acc" || key.starts_with("acc_") || key.starts_with("auroc_") {
        Some(true)
    } else if key.starts_with("fpr95_") {
        Some(false)
    } else {
        None
    }
}

/// The feature network of classifier-feature FID (`gantry classifier train`): the `small`
/// backbone (128-d penultimate features) with a linear head, trained on `spec` at `resolution`
/// for `epochs` epochs without crops, checkpoint chosen on held-out training data.
pub fn features_preset(
    spec: &str,
    resolution: u32,
    epochs: usize,
    seed: u64,
    device: DeviceSpec,
) -> Result<ClassifyConfig> {
    ClassifyConfig::resolve(
        None,
        &[
            format!("data.spec={spec}"),
            format!("data.resolution={resolution}"),
            "data.crop_padding=0".into(),
            "model.backbone=small".into(),
            "model.head=linear".into(),
            format!("train.epochs={epochs}"),
            format!("train.seed={seed}"),
            format!("train.device=\"{device}\""),
        ],
    )
}

/// A trained classifier as the feature network of classifier-feature FID/KID/IS/PR: its
/// penultimate features (`embed`) and logits, on uint8 images of exactly the shape it was
/// trained on. Other shapes are refused rather than converted: features of a grey MNIST
/// classifier on RGB images, or of a 28-pixel one on 64-pixel images, measure nothing useful.
impl gantry_metrics::FeatureExtractor for Trained {
    fn id(&self) -> String {
        let hash = std::fs::read(self.checkpoint.join("model.safetensors"))
            .map(|b| gantry_metrics::hash_bytes(&b))
            .unwrap_or_default();
        format!("classifier-{hash}")
    }

    fn dim(&self) -> usize {
        self.net.feature_dim as usize
    }

    fn extract(
        &self,
        images_u8: &Tensor,
    ) -> std::result::Result<gantry_metrics::Features, gantry_metrics::MetricsError> {
        let size = images_u8.size();
        let [c, h, w] = self.shape.map(|v| v as i64);
        if size.len() != 4 || size[1..] != [c, h, w] {
            let found = match size[..] {
                [_, c, h, w] => format!("{c}x{h}x{w} images"),
                _ => format!("a tensor of shape {size:?}"),
            };
            return Err(gantry_metrics::MetricsError::input(
                format!("classifier features ({})", self.checkpoint.display()),
                format!(
                    "{c}x{h}x{w} images, the shape it was trained on (train one on this data with `gantry classifier train`)"
                ),
                found,
            ));
        }
        let x = images_u8.to_device(self.device).to_kind(Kind::Float) / 255.0;
        let (mut pools, mut logits) = (Vec::new(), Vec::new());
        for chunk in x.split(256, 0) {
            let (f, l) = tch::no_grad(|| {
                let f = self.net.embed(&chunk, false);
                let l = self.net.head(&f);
                (f, l)
            });
            pools.push(f.to_device(Device::Cpu));
            logits.push(l.to_device(Device::Cpu));
        }
        Ok(gantry_metrics::Features {
            pool: Tensor::cat(&pools, 0),
            logits: Some(Tensor::cat(&logits, 0)),
        })
    }
}
