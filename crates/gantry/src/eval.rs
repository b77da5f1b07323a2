//! Evaluation of a generator against a data set: FID, KID, IS and precision/recall on Inception
//! pool3 features (the pytorch-fid / torch-fidelity protocol, `gantry_metrics`), or on the
//! penultimate features of a gantry-trained classifier (reported as `classifier_*`).
//!
//! Generated images are quantised to uint8 exactly as saving a PNG would, and real images are
//! read as the uint8 they are stored as, so both sides see the same pipeline. Features of the
//! real data are cached per (data set, N, extractor, preprocessing).

use crate::dist::Comm;
use crate::error::{Error, Result};
use crate::models::Generator;
use crate::precision::{Autocast, Precision};
use gantry_data::{DataConfig, Dataset, Split};
use gantry_metrics::{
    FeatureCache, FeatureExtractor, FeatureSet, InceptionExtractor, KidOptions, Preprocessing,
};
use serde::{Deserialize, Serialize};
use serde_with::{DeserializeFromStr, SerializeDisplay};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// What `eval.metrics` can ask for; each yields one or more [`Metric`] values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricSet {
    /// Frechet Inception distance (`fid`).
    Fid,
    /// Kernel Inception distance (`kid`, `kid_std`).
    Kid,
    /// Inception score (`is`, `is_std`).
    Is,
    /// Improved precision and recall (`precision`, `recall`).
    Pr,
    /// The 2-D Gaussian-mixture benchmark (`modes`, `hq_share`, `kl`); point data only.
    Gmm,
}

impl MetricSet {
    /// The values of `eval.metrics` and `--metrics`.
    pub const NAMES: &'static [&'static str] = &["fid", "kid", "is", "pr", "gmm"];

    /// The metrics this set reports (their spreads, `kid_std` and `is_std`, come along).
    pub fn metrics(self) -> &'static [Metric] {
        match self {
            MetricSet::Fid => &[Metric::Fid],
            MetricSet::Kid => &[Metric::Kid],
            MetricSet::Is => &[Metric::Is],
            MetricSet::Pr => &[Metric::Precision, Metric::Recall],
            MetricSet::Gmm => &[Metric::Modes, Metric::HqShare, Metric::Kl],
        }
    }
}

/// One reported number and which way is better: the one place evaluation, best-checkpoint
/// selection, experiments and reports learn a metric's direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Fid,
    Kid,
    Is,
    Precision,
    Recall,
    /// Gaussian-mixture modes covered.
    Modes,
    /// Share of high-quality samples (within 3 standard deviations of a mode).
    HqShare,
    /// KL divergence of the mode histogram from uniform.
    Kl,
}

impl Metric {
    pub const ALL: [Metric; 8] = [
        Metric::Fid,
        Metric::Kid,
        Metric::Is,
        Metric::Precision,
        Metric::Recall,
        Metric::Modes,
        Metric::HqShare,
        Metric::Kl,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Fid => "fid",
            Metric::Kid => "kid",
            Metric::Is => "is",
            Metric::Precision => "precision",
            Metric::Recall => "recall",
            Metric::Modes => "modes",
            Metric::HqShare => "hq_share",
            Metric::Kl => "kl",
        }
    }

    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Metric::Is | Metric::Precision | Metric::Recall | Metric::Modes | Metric::HqShare
        )
    }

    /// Whether `a` is better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        if self.higher_is_better() {
            a > b
        } else {
            a < b
        }
    }

    /// The metric a logged name reports (`eval/fid`, `classifier_kid`, `eval/hq_share`); `None`
    /// for spreads (`kid_std`, `is_std`) and anything else, which have no better direction.
    pub fn of_key(key: &str) -> Option<Metric> {
        let name = key.strip_prefix("eval/").unwrap_or(key);
        let name = name.strip_prefix("classifier_").unwrap_or(name);
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// The features metrics are computed on: `inception` or `classifier:PATH`.
#[derive(Clone, Debug, Default, PartialEq, Eq, SerializeDisplay, DeserializeFromStr)]
pub enum Features {
    /// Pool3 of the FID Inception network (needs its weights file).
    #[default]
    Inception,
    /// The penultimate features of a classifier trained by `gantry classifier train`.
    Classifier(PathBuf),
}

impl std::str::FromStr for Features {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "inception" => Ok(Features::Inception),
            t => match t.strip_prefix("classifier:") {
                Some(p) if !p.is_empty() => Ok(Features::Classifier(PathBuf::from(p))),
                _ => Err(format!(
                    "unknown features {s:?} (valid: inception, classifier:PATH)"
                )),
            },
        }
    }
}

impl std::fmt::Display for Features {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Features::Inception => f.write_str("inception"),
            Features::Classifier(p) => write!(f, "classifier:{}", p.display()),
        }
    }
}

impl Features {
    /// `classifier_` for classifier features, so nobody mistakes them for Inception FID.
    pub fn prefix(&self) -> &'static str {
        match self {
            Features::Inception => "",
            Features::Classifier(_) => "classifier_",
        }
    }
}

/// `eval.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Evaluate every N training steps (0 = never during training).
    pub every: u64,
    /// Generated samples per evaluation (the standard is 50000; smaller is noisier).
    pub n: usize,
    /// Real samples (0 = the whole reference data set).
    pub real_n: usize,
    /// Metrics: any of `fid`, `kid`, `is`, `pr` on images; `gmm` on 2-D points.
    pub metrics: Vec<MetricSet>,
    /// `inception` (needs the FID Inception weights) or `classifier:PATH`.
    pub features: Features,
    /// FID Inception weights file; default: $GANTRY_FID_WEIGHTS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<PathBuf>,
    /// Preprocessing for Inception: `pytorch-fid`, `tf` or `clean`.
    pub mode: Preprocessing,
    /// What feature extraction computes in: `fp32` (the protocol), `bf16` or `fp16` (autocast:
    /// faster on GPUs, and the numbers move; docs/metrics.md says by how much).
    pub precision: Precision,
    /// Reference data set spec (`KIND:PATH`); default: the training data (test split if any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The metric that picks the best checkpoint: one the evaluated sets report (`fid`, `kid`,
    /// `is`, `precision`, `recall`; `modes`, `hq_share`, `kl` for `gmm`).
    pub best: Metric,
    /// KID subset size (torch-fidelity: 1000); both sets need at least this many samples.
    pub kid_subset_size: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            every: 0,
            n: 10_000,
            real_n: 0,
            metrics: vec![MetricSet::Fid, MetricSet::Kid],
            features: Features::Inception,
            weights: None,
            mode: Preprocessing::PytorchFid,
            precision: Precision::Fp32,
            reference: None,
            best: Metric::Fid,
            kid_subset_size: 1000,
        }
    }
}

impl EvalConfig {
    /// Checks the settings against the kind of data evaluated (images or 2-D points).
    pub fn validate(&self, points: bool) -> Result<()> {
        if self.metrics.is_empty() {
            return Err(Error::config(
                "eval.metrics",
                format!("is empty (valid: {})", MetricSet::NAMES.join(", ")),
            ));
        }
        let gmm = self.metrics.contains(&MetricSet::Gmm);
        if points && self.metrics.iter().any(|m| *m != MetricSet::Gmm) {
            return Err(Error::config(
                "eval.metrics",
                "2-D point data is evaluated with [\"gmm\"] only (modes, hq_share, kl)",
            ));
        }
        if !points && gmm {
            return Err(Error::config(
                "eval.metrics",
                "gmm is for 2-D point data; images take fid, kid, is, pr",
            ));
        }
        let reported: Vec<Metric> = self
            .metrics
            .iter()
            .flat_map(|m| m.metrics())
            .copied()
            .collect();
        if !reported.contains(&self.best) {
            let names: Vec<&str> = reported.iter().map(|m| m.name()).collect();
            return Err(Error::config(
                "eval.best",
                format!(
                    "{} is not among the evaluated metrics (valid with eval.metrics as set: {})",
                    self.best.name(),
                    names.join(", ")
                ),
            ));
        }
        if self.n == 0 {
            return Err(Error::config("eval.n", "must be at least 1"));
        }
        if !points
            && self.metrics.contains(&MetricSet::Kid)
            && (self.kid_subset_size == 0 || self.n < self.kid_subset_size)
        {
            return Err(Error::config("eval.n", format!("{} samples are fewer than KID's subset size {} (raise eval.n or lower eval.kid_subset_size)", self.n, self.kid_subset_size)));
        }
        if let Some(spec) = &self.reference {
            DataConfig::from_spec(spec)
                .map_err(|e| Error::config("eval.reference", e.to_string()))?;
        }
        Ok(())
    }
}

impl EvalConfig {
    /// Checks that the files evaluation will read exist (the Inception weights; a classifier run
    /// holding a classifier's checkpoint), without loading the networks: for callers that must
    /// fail before any work starts.
    pub fn check_files(&self, points: bool) -> Result<()> {
        if points {
            return Ok(());
        }
        match &self.features {
            Features::Inception => {
                let path =
                    gantry_metrics::weights_path(self.weights.as_deref()).map_err(metrics_err)?;
                if !path.is_file() {
                    return Err(Error::input(
                        &path,
                        format!(
                            "does not exist (FID needs {}; pass its path in eval.weights or set GANTRY_FID_WEIGHTS)",
                            gantry_metrics::FID_WEIGHTS_FILE
                        ),
                    ));
                }
            }
            Features::Classifier(p) => {
                crate::classify::find(p)?;
            }
        }
        Ok(())
    }
}

/// Builds the feature extractor of `features`, run in `precision`.
pub fn extractor(
    features: &Features,
    weights: Option<&Path>,
    mode: Preprocessing,
    precision: Precision,
    device: Device,
) -> Result<Box<dyn FeatureExtractor>> {
    let inner: Box<dyn FeatureExtractor> = match features {
        Features::Classifier(path) => Box::new(crate::classify::load(path, Some(device))?),
        Features::Inception => {
            let path = gantry_metrics::weights_path(weights).map_err(metrics_err)?;
            Box::new(InceptionExtractor::load(&path, device, mode).map_err(metrics_err)?)
        }
    };
    Ok(match precision {
        Precision::Fp32 => inner,
        _ => Box::new(InPrecision {
            inner,
            precision,
            device,
        }),
    })
}

/// A feature extractor run under autocast; its features are widened back to fp32, and its id
/// names the precision, so cached reference features of one precision never serve another.
struct InPrecision {
    inner: Box<dyn FeatureExtractor>,
    precision: Precision,
    device: Device,
}

impl FeatureExtractor for InPrecision {
    fn id(&self) -> String {
        format!("{}-{:?}", self.inner.id(), self.precision).to_lowercase()
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn extract(
        &self,
        images_u8: &Tensor,
    ) -> std::result::Result<gantry_metrics::Features, gantry_metrics::MetricsError> {
        let f = {
            let _autocast = Autocast::new(self.device, self.precision);
            self.inner.extract(images_u8)?
        };
        Ok(gantry_metrics::Features {
            pool: f.pool.to_kind(Kind::Float),
            logits: f.logits.map(|l| l.to_kind(Kind::Float)),
        })
    }
}

pub fn metrics_err(e: gantry_metrics::MetricsError) -> Error {
    Error::Metrics(e.to_string())
}

/// Features of the first `n` samples of a data set (0 = all), in order, as stored uint8.
pub fn dataset_features(
    ds: &dyn Dataset,
    n: usize,
    ex: &dyn FeatureExtractor,
    mut progress: impl FnMut(usize, usize),
) -> Result<FeatureSet> {
    let total = if n == 0 { ds.len() } else { n.min(ds.len()) };
    let [c, h, w] = ds.sample_shape();
    let per = c * h * w;
    let mut set = FeatureSet::new();
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    let chunk = 250;
    let mut buf = vec![0f32; chunk * per];
    let mut done = 0;
    while done < total {
        let len = chunk.min(total - done);
        for i in 0..len {
            ds.load_into(done + i, &mut buf[i * per..(i + 1) * per], &mut rng)?;
        }
        let bytes: Vec<u8> = buf[..len * per]
            .iter()
            .map(|&v| gantry_data::image_io::to_u8(v))
            .collect();
        let x = Tensor::from_slice(&bytes).view([len as i64, c as i64, h as i64, w as i64]);
        set.push(&ex.extract(&x).map_err(metrics_err)?)
            .map_err(metrics_err)?;
        done += len;
        progress(done, total);
    }
    Ok(set)
}

/// Features of `n` samples of `g` (inference mode), latents seeded by `seed`.
pub fn generator_features(
    g: &dyn Generator,
    num_classes: Option<i64>,
    n: usize,
    seed: u64,
    device: Device,
    ex: &dyn FeatureExtractor,
    progress: impl FnMut(usize, usize),
) -> Result<FeatureSet> {
    features_of(g, num_classes, n, seed, 0, device, ex, progress)
}

/// [`generator_features`] split over the ranks of a job: each generates its share (latents
/// seeded by its rank), and every rank receives all `n`, in rank order. One process: the same as
/// `generator_features`.
#[allow(clippy::too_many_arguments)]
pub fn generator_features_split(
    g: &dyn Generator,
    num_classes: Option<i64>,
    n: usize,
    seed: u64,
    device: Device,
    ex: &dyn FeatureExtractor,
    comm: &Comm,
) -> Result<FeatureSet> {
    if !comm.distributed() {
        return generator_features(g, num_classes, n, seed, device, ex, |_, _| {});
    }
    let share = n.div_ceil(comm.world);
    let own = features_of(
        g,
        num_classes,
        share,
        seed,
        comm.rank as u64,
        device,
        ex,
        |_, _| {},
    )?;
    let pool = comm.all_gather(&own.pool().map_err(metrics_err)?)?;
    let logits = own
        .logits()
        .map_err(metrics_err)?
        .map(|l| comm.all_gather(&l))
        .transpose()?;
    let n = n as i64;
    FeatureSet::from_tensors(
        &pool.narrow(0, 0, n),
        logits.map(|l| l.narrow(0, 0, n)).as_ref(),
    )
    .map_err(metrics_err)
}

/// [`generator_features`] from latent stream `stream` (rank `r` of a job generates from stream
/// `r`; stream 0 is `generator_features`'s).
#[allow(clippy::too_many_arguments)]
pub fn generator_features_stream(
    g: &dyn Generator,
    num_classes: Option<i64>,
    n: usize,
    seed: u64,
    stream: u64,
    device: Device,
    ex: &dyn FeatureExtractor,
) -> Result<FeatureSet> {
    features_of(g, num_classes, n, seed, stream, device, ex, |_, _| {})
}

#[allow(clippy::too_many_arguments)]
fn features_of(
    g: &dyn Generator,
    num_classes: Option<i64>,
    n: usize,
    seed: u64,
    stream: u64,
    device: Device,
    ex: &dyn FeatureExtractor,
    mut progress: impl FnMut(usize, usize),
) -> Result<FeatureSet> {
    tch::manual_seed(crate::device::derive_seed(
        seed,
        0,
        crate::device::Purpose::Eval,
        stream,
    ));
    let mut set = FeatureSet::new();
    let mut done = 0;
    while done < n {
        let b = 100.min(n - done) as i64;
        // Drawn on the CPU: the same fakes for a seed on every device.
        let z = Tensor::randn([b, g.z_dim()], (Kind::Float, Device::Cpu)).to(device);
        let labels =
            num_classes.map(|k| Tensor::randint(k, [b], (Kind::Int64, Device::Cpu)).to(device));
        let x = tch::no_grad(|| g.forward(&z, labels.as_ref(), false));
        set.push(
            &ex.extract(&gantry_metrics::quantize(&x).to_device(Device::Cpu))
                .map_err(metrics_err)?,
        )
        .map_err(metrics_err)?;
        done += b as usize;
        progress(done, n);
    }
    Ok(set)
}

/// Cached features of a reference data set.
pub fn reference_features(
    spec: &DataConfig,
    n: usize,
    ex: &dyn FeatureExtractor,
    cache_dir: &Path,
    progress: impl FnMut(usize, usize),
) -> Result<FeatureSet> {
    let ds = gantry_data::open(spec)?;
    let key = format!(
        "{}|{}|{:?}|{}|{}",
        ds.describe(),
        spec.split,
        spec.limit,
        n,
        ex.id()
    );
    let cache = FeatureCache::new(cache_dir);
    cache
        .get_or_compute(&gantry_metrics::hash_bytes(key.as_bytes()), || {
            dataset_features(ds.as_ref(), n, ex, progress).map_err(|e| {
                gantry_metrics::MetricsError::input("reference data", "readable", e.to_string())
            })
        })
        .map_err(metrics_err)
}

/// Computes the requested metrics; names are `fid`, `kid`, `kid_std`, `is`, `is_std`,
/// `precision`, `recall` with the extractor's prefix.
pub fn compute(
    metrics: &[MetricSet],
    prefix: &str,
    real: &FeatureSet,
    fake: &FeatureSet,
    kid_subset_size: usize,
) -> Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    let name = |m: &str| format!("{prefix}{m}");
    for m in metrics {
        match m {
            MetricSet::Fid => {
                let fid = gantry_metrics::frechet_distance(
                    &real.stats().map_err(metrics_err)?,
                    &fake.stats().map_err(metrics_err)?,
                )
                .map_err(metrics_err)?;
                out.push((name("fid"), fid.value));
            }
            MetricSet::Kid => {
                let opts = KidOptions {
                    subset_size: kid_subset_size,
                    ..Default::default()
                };
                let kid = gantry_metrics::kernel_inception_distance(
                    &real.pool().map_err(metrics_err)?,
                    &fake.pool().map_err(metrics_err)?,
                    &opts,
                )
                .map_err(metrics_err)?;
                out.push((name("kid"), kid.mean));
                out.push((name("kid_std"), kid.std));
            }
            MetricSet::Is => {
                let logits = fake
                    .logits()
                    .map_err(metrics_err)?
                    .ok_or_else(|| Error::Metrics("these features have no logits for IS".into()))?;
                let s = gantry_metrics::inception_score(
                    &logits,
                    gantry_metrics::IS_SPLITS,
                    Some(gantry_metrics::IS_SEED),
                )
                .map_err(metrics_err)?;
                out.push((name("is"), s.mean));
                out.push((name("is_std"), s.std));
            }
            MetricSet::Pr => {
                let pr = gantry_metrics::precision_recall(
                    &real.pool().map_err(metrics_err)?,
                    &fake.pool().map_err(metrics_err)?,
                    gantry_metrics::PR_NEIGHBOURS,
                )
                .map_err(metrics_err)?;
                out.push((name("precision"), pr.precision));
                out.push((name("recall"), pr.recall));
            }
            MetricSet::Gmm => {
                return Err(Error::config(
                    "eval.metrics",
                    "gmm is for 2-D point data, not features",
                ))
            }
        }
    }
    Ok(out)
}

/// Image files of a folder (recursive, sorted), as pytorch-fid reads them: native size, RGB.
pub fn folder_features(
    dir: &Path,
    n: usize,
    ex: &dyn FeatureExtractor,
    mut progress: impl FnMut(usize, usize),
) -> Result<FeatureSet> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| Error::input(&d, e))?;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| ["png", "jpg", "jpeg", "PNG", "JPG", "JPEG"].contains(&x))
            {
                files.push(p);
            }
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::input(dir, "contains no PNG or JPEG images"));
    }
    if n > 0 {
        files.truncate(n);
    }
    let total = files.len();
    let mut set = FeatureSet::new();
    let mut size = None;
    for chunk in files.chunks(100) {
        let mut bytes = Vec::new();
        for f in chunk {
            let img = image::open(f)
                .map_err(|e| Error::input(f, format!("cannot decode image: {e}")))?
                .to_rgb8();
            let dims = img.dimensions();
            match size {
                None => size = Some(dims),
                Some(s) if s != dims => {
                    return Err(Error::input(
                        f,
                        format!(
                            "is {}x{}, other images are {}x{} (all images must have one size)",
                            dims.0, dims.1, s.0, s.1
                        ),
                    ))
                }
                _ => {}
            }
            // HWC -> CHW
            let (w, h) = dims;
            let raw = img.into_raw();
            for c in 0..3 {
                bytes.extend((0..(w * h) as usize).map(|i| raw[i * 3 + c]));
            }
        }
        let (w, h) = size.expect("set above");
        let x = Tensor::from_slice(&bytes).view([chunk.len() as i64, 3, h as i64, w as i64]);
        set.push(&ex.extract(&x).map_err(metrics_err)?)
            .map_err(metrics_err)?;
        progress(set.len(), total);
    }
    Ok(set)
}

/// Where features of reference data sets are cached: `$GANTRY_CACHE` or `~/.cache/gantry`.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("GANTRY_CACHE") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache/gantry/features")
}

/// The reference data of a run: `eval.reference` (at the training data's resolution and
/// channels), else the training data's held-out split.
pub fn reference_config(eval: &EvalConfig, data: &DataConfig) -> Result<DataConfig> {
    match &eval.reference {
        Some(spec) => {
            let mut d = DataConfig::from_spec(spec)?;
            d.resolution = data.resolution;
            d.channels = data.channels;
            Ok(d)
        }
        None => {
            let mut d = data.clone();
            d.split = Split::Test;
            d.hflip = false;
            d.limit = None;
            Ok(d)
        }
    }
}

/// What an evaluation measures against.
enum Backend {
    /// Image metrics on extracted features of generated vs real images.
    Features {
        extractor: Box<dyn FeatureExtractor>,
        /// On the rank that computes the metrics (rank 0) only.
        real: Option<FeatureSet>,
    },
    /// The 2-D Gaussian-mixture benchmark: modes covered, share of high-quality samples, KL of
    /// the mode histogram (the mode-collapse literature's protocol; `gantry_data::gmm`).
    Gmm(gantry_data::gmm::Mixture),
}

/// Everything needed to evaluate a generator repeatedly (periodic evaluation in training).
pub struct Evaluator {
    pub cfg: EvalConfig,
    backend: Backend,
}

impl Evaluator {
    /// For a run on `data` (the training data; the reference follows from `cfg`).
    /// `computes`: this process computes the metrics (and so holds the reference features); in a
    /// data-parallel job that is rank 0, and the others only generate.
    pub fn new(
        cfg: &EvalConfig,
        data: &DataConfig,
        device: Device,
        computes: bool,
    ) -> Result<Self> {
        cfg.validate(data.kind.is_points())?;
        let backend = match data.kind {
            gantry_data::DataKind::Gmm8 => Backend::Gmm(gantry_data::gmm::Mixture::ring8()),
            gantry_data::DataKind::Gmm25 => Backend::Gmm(gantry_data::gmm::Mixture::grid25()),
            _ => {
                let extractor = extractor(
                    &cfg.features,
                    cfg.weights.as_deref(),
                    cfg.mode,
                    cfg.precision,
                    device,
                )?;
                let real = if computes {
                    Some(reference_features(
                        &reference_config(cfg, data)?,
                        cfg.real_n,
                        extractor.as_ref(),
                        &cache_dir(),
                        |_, _| {},
                    )?)
                } else {
                    None
                };
                Backend::Features { extractor, real }
            }
        };
        Ok(Evaluator {
            cfg: cfg.clone(),
            backend,
        })
    }

    /// Metrics of `g` (names prefixed `eval/`), on the process that computes them (`None` on
    /// the others, which only take their share of the generation).
    pub fn run(
        &self,
        g: &dyn Generator,
        num_classes: Option<i64>,
        device: Device,
        seed: u64,
        comm: &Comm,
    ) -> Result<Option<Vec<(String, f64)>>> {
        let values = match &self.backend {
            Backend::Features { extractor, real } => {
                let fake = generator_features_split(
                    g,
                    num_classes,
                    self.cfg.n,
                    seed,
                    device,
                    extractor.as_ref(),
                    comm,
                )?;
                let Some(real) = real else { return Ok(None) };
                compute(
                    &self.cfg.metrics,
                    self.cfg.features.prefix(),
                    real,
                    &fake,
                    self.cfg.kid_subset_size,
                )?
            }
            Backend::Gmm(_) if !comm.is_main() => return Ok(None),
            Backend::Gmm(mix) => gmm_metrics(g, mix, self.cfg.n, seed, device),
        };
        Ok(Some(
            values
                .into_iter()
                .map(|(k, v)| (format!("eval/{k}"), v))
                .collect(),
        ))
    }

    /// The logged key of the metric that picks the best checkpoint (`eval/classifier_fid`), and
    /// the metric.
    pub fn best(&self) -> (String, Metric) {
        let prefix = match self.backend {
            Backend::Gmm(_) => "",
            Backend::Features { .. } => self.cfg.features.prefix(),
        };
        let m = self.cfg.best;
        (format!("eval/{prefix}{}", m.name()), m)
    }
}

/// `modes`, `hq_share` and `kl` of `n` generated points.
pub fn gmm_metrics(
    g: &dyn Generator,
    mix: &gantry_data::gmm::Mixture,
    n: usize,
    seed: u64,
    device: Device,
) -> Vec<(String, f64)> {
    tch::manual_seed(crate::device::derive_seed(
        seed,
        0,
        crate::device::Purpose::Eval,
        1,
    ));
    let z = Tensor::randn([n as i64, g.z_dim()], (Kind::Float, Device::Cpu)).to(device);
    let x = tch::no_grad(|| g.forward(&z, None, false))
        .to_device(Device::Cpu)
        .to_kind(Kind::Double)
        .reshape([n as i64, 2]);
    let flat: Vec<f64> = Vec::try_from(x.flatten(0, -1)).unwrap_or_default();
    let pts: Vec<[f64; 2]> = flat.chunks_exact(2).map(|p| [p[0], p[1]]).collect();
    let q = gantry_data::gmm::evaluate(mix, &pts);
    vec![
        (Metric::Modes.name().into(), q.modes_covered as f64),
        (Metric::HqShare.name().into(), q.high_quality_share),
        (Metric::Kl.name().into(), q.kl_mode_histogram),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_know_their_direction_from_any_logged_name() {
        for (key, metric, higher) in [
            ("eval/fid", Metric::Fid, false),
            ("eval/classifier_kid", Metric::Kid, false),
            ("eval/classifier_is", Metric::Is, true),
            ("eval/modes", Metric::Modes, true),
            ("hq_share", Metric::HqShare, true),
            ("eval/kl", Metric::Kl, false),
            ("eval/recall", Metric::Recall, true),
        ] {
            assert_eq!(Metric::of_key(key), Some(metric), "{key}");
            assert_eq!(metric.higher_is_better(), higher, "{key}");
        }
        for spread in ["eval/is_std", "eval/classifier_kid_std", "loss/d/adv"] {
            assert_eq!(Metric::of_key(spread), None, "{spread}");
        }
        assert!(Metric::Modes.better(25.0, 24.0));
        assert!(Metric::Fid.better(3.0, 4.0));
        for m in Metric::ALL {
            let text = toml::Value::try_from(m).unwrap();
            assert_eq!(text.as_str(), Some(m.name()));
        }
        for name in MetricSet::NAMES {
            let v: MetricSet = toml::Value::String(name.to_string()).try_into().unwrap();
            assert_eq!(toml::Value::try_from(v).unwrap().as_str(), Some(*name));
        }
    }

    #[test]
    fn the_best_metric_must_be_evaluated() {
        let cfg = |metrics: Vec<MetricSet>, best: Metric| EvalConfig {
            every: 10,
            metrics,
            best,
            ..Default::default()
        };
        assert!(cfg(vec![MetricSet::Fid], Metric::Fid)
            .validate(false)
            .is_ok());
        let e = cfg(vec![MetricSet::Fid], Metric::Is)
            .validate(false)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("eval.best: is is not among") && e.contains("fid"),
            "{e}"
        );
        assert!(cfg(vec![MetricSet::Pr], Metric::Recall)
            .validate(false)
            .is_ok());
        let e = cfg(vec![], Metric::Fid)
            .validate(false)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("eval.metrics: is empty"), "{e}");
        let e = cfg(vec![MetricSet::Fid], Metric::Kl)
            .validate(true)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("eval.metrics:"), "{e}");
        let e = cfg(vec![MetricSet::Gmm], Metric::Fid)
            .validate(true)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("eval.best: fid") && e.contains("modes, hq_share, kl"),
            "{e}"
        );
        assert!(cfg(vec![MetricSet::Gmm], Metric::Modes)
            .validate(true)
            .is_ok());
        let e = "bogus".parse::<Features>().unwrap_err();
        assert!(e.contains("valid: inception, classifier:PATH"), "{e}");
        assert_eq!(
            "classifier:a/b.safetensors".parse::<Features>().unwrap(),
            Features::Classifier("a/b.safetensors".into())
        );
    }
}
