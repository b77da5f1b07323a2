//! Evaluation of a generator against a data set: FID, KID, IS and precision/recall on Inception
//! pool3 features (the pytorch-fid / torch-fidelity protocol, `gantry_metrics`), or on the
//! penultimate features of a gantry-trained classifier (reported as `classifier_*`).
//!
//! Generated images are quantised to uint8 exactly as saving a PNG would, and real images are
//! read as the uint8 they are stored as, so both sides see the same pipeline. Features of the
//! real data are cached per (data set, N, extractor, preprocessing).

use crate::error::{Error, Result};
use crate::models::Generator;
use gantry_data::{DataConfig, Dataset};
use gantry_metrics::{
    FeatureCache, FeatureExtractor, FeatureSet, InceptionExtractor, KidOptions, Preprocessing,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

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
    /// Metrics: any of `fid`, `kid`, `is`, `pr`.
    pub metrics: Vec<String>,
    /// `inception` (needs the FID Inception weights) or `classifier:PATH`.
    pub features: String,
    /// FID Inception weights file; default: $GANTRY_FID_WEIGHTS.
    pub weights: Option<PathBuf>,
    /// Preprocessing for Inception: `pytorch-fid`, `tf` or `clean`.
    pub mode: String,
    /// Reference data set spec (`KIND:PATH`); default: the training data (test split if any).
    pub reference: Option<String>,
    /// Metric that picks the best checkpoint (`fid`, `kid`, ...; lower is better except `is`).
    pub best: String,
    /// KID subset size (torch-fidelity: 1000); both sets need at least this many samples.
    pub kid_subset_size: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            every: 0,
            n: 10_000,
            real_n: 0,
            metrics: vec!["fid".into(), "kid".into()],
            features: "inception".into(),
            weights: None,
            mode: "pytorch-fid".into(),
            reference: None,
            best: "fid".into(),
            kid_subset_size: 1000,
        }
    }
}

const METRICS: &[&str] = &["fid", "kid", "is", "pr"];

impl EvalConfig {
    pub fn validate(&self) -> Result<()> {
        for m in &self.metrics {
            if !METRICS.contains(&m.as_str()) {
                return Err(Error::config(
                    "eval.metrics",
                    format!("unknown metric {m:?} (valid: {})", METRICS.join(", ")),
                ));
            }
        }
        if Preprocessing::from_id(&self.mode).is_none() {
            return Err(Error::config(
                "eval.mode",
                format!(
                    "unknown mode {:?} (valid: pytorch-fid, tf, clean)",
                    self.mode
                ),
            ));
        }
        if self.features != "inception" && !self.features.starts_with("classifier:") {
            return Err(Error::config(
                "eval.features",
                "expected `inception` or `classifier:PATH`",
            ));
        }
        Ok(())
    }

    /// [`validate`](Self::validate) plus the checks that depend on the data: image metrics'
    /// sample counts (2-D point data uses the Gaussian-mixture metrics instead).
    pub fn validate_for(&self, data: &DataConfig) -> Result<()> {
        self.validate()?;
        if data.kind.is_points() {
            return Ok(());
        }
        if self.metrics.iter().any(|m| m == "kid") && self.n < self.kid_subset_size {
            return Err(Error::config("eval.n", format!("{} samples are fewer than KID's subset size {} (raise eval.n or lower eval.kid_subset_size)", self.n, self.kid_subset_size)));
        }
        Ok(())
    }

    /// `classifier_` for classifier features, so nobody mistakes them for Inception FID.
    pub fn prefix(&self) -> &'static str {
        if self.features == "inception" {
            ""
        } else {
            "classifier_"
        }
    }
}

/// Builds the feature extractor named by `features` (`inception` or `classifier:PATH`).
pub fn extractor(
    features: &str,
    weights: Option<&Path>,
    mode: &str,
    device: Device,
) -> Result<Box<dyn FeatureExtractor>> {
    if let Some(path) = features.strip_prefix("classifier:") {
        return Ok(Box::new(crate::classifier::Classifier::load(
            Path::new(path),
            device,
        )?));
    }
    let mode = Preprocessing::from_id(mode).ok_or_else(|| {
        Error::config(
            "--mode",
            format!("unknown mode {mode:?} (valid: pytorch-fid, tf, clean)"),
        )
    })?;
    let path = gantry_metrics::weights_path(weights).map_err(metrics_err)?;
    Ok(Box::new(
        InceptionExtractor::load(&path, device, mode).map_err(metrics_err)?,
    ))
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
    mut progress: impl FnMut(usize, usize),
) -> Result<FeatureSet> {
    tch::manual_seed(crate::device::derive_seed(
        seed,
        0,
        crate::device::Purpose::Eval,
        0,
    ));
    let mut set = FeatureSet::new();
    let mut done = 0;
    while done < n {
        let b = 100.min(n - done) as i64;
        let z = Tensor::randn([b, g.z_dim()], (Kind::Float, device));
        let labels = num_classes.map(|k| Tensor::randint(k, [b], (Kind::Int64, device)));
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
    metrics: &[String],
    prefix: &str,
    real: &FeatureSet,
    fake: &FeatureSet,
    kid_subset_size: usize,
) -> Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    let name = |m: &str| format!("{prefix}{m}");
    for m in metrics {
        match m.as_str() {
            "fid" => {
                let fid = gantry_metrics::frechet_distance(
                    &real.stats().map_err(metrics_err)?,
                    &fake.stats().map_err(metrics_err)?,
                )
                .map_err(metrics_err)?;
                out.push((name("fid"), fid.value));
            }
            "kid" => {
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
            "is" => {
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
            "pr" => {
                let pr = gantry_metrics::precision_recall(
                    &real.pool().map_err(metrics_err)?,
                    &fake.pool().map_err(metrics_err)?,
                    gantry_metrics::PR_NEIGHBOURS,
                )
                .map_err(metrics_err)?;
                out.push((name("precision"), pr.precision));
                out.push((name("recall"), pr.recall));
            }
            other => {
                return Err(Error::config(
                    "eval.metrics",
                    format!("unknown metric {other:?}"),
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
        let entries = std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))?;
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
        return Err(Error::io(dir, "contains no PNG or JPEG images"));
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
                .map_err(|e| Error::io(f, format!("cannot decode image: {e}")))?
                .to_rgb8();
            let dims = img.dimensions();
            match size {
                None => size = Some(dims),
                Some(s) if s != dims => {
                    return Err(Error::io(
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

/// The reference data of a run: `eval.reference`, else the training data's held-out split.
pub fn reference_config(cfg: &crate::config::RunConfig) -> Result<DataConfig> {
    match &cfg.eval.reference {
        Some(spec) => {
            let mut d = DataConfig::from_spec(spec)?;
            d.resolution = cfg.data.resolution;
            d.channels = cfg.data.channels;
            Ok(d)
        }
        None => {
            let mut d = cfg.data.clone();
            d.split = "test".into();
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
        real: FeatureSet,
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
    pub fn new(
        cfg: &EvalConfig,
        data: &DataConfig,
        reference: &DataConfig,
        device: Device,
    ) -> Result<Self> {
        cfg.validate_for(data)?;
        let backend = match data.kind {
            gantry_data::DataKind::Gmm8 => Backend::Gmm(gantry_data::gmm::Mixture::ring8()),
            gantry_data::DataKind::Gmm25 => Backend::Gmm(gantry_data::gmm::Mixture::grid25()),
            _ => {
                let extractor =
                    extractor(&cfg.features, cfg.weights.as_deref(), &cfg.mode, device)?;
                let real = reference_features(
                    reference,
                    cfg.real_n,
                    extractor.as_ref(),
                    &cache_dir(),
                    |_, _| {},
                )?;
                Backend::Features { extractor, real }
            }
        };
        Ok(Evaluator {
            cfg: cfg.clone(),
            backend,
        })
    }

    /// Metrics of `g` (names prefixed `eval/`).
    pub fn run(
        &self,
        g: &dyn Generator,
        num_classes: Option<i64>,
        device: Device,
        seed: u64,
    ) -> Result<Vec<(String, f64)>> {
        let values = match &self.backend {
            Backend::Features { extractor, real } => {
                let fake = generator_features(
                    g,
                    num_classes,
                    self.cfg.n,
                    seed,
                    device,
                    extractor.as_ref(),
                    |_, _| {},
                )?;
                compute(
                    &self.cfg.metrics,
                    self.cfg.prefix(),
                    real,
                    &fake,
                    self.cfg.kid_subset_size,
                )?
            }
            Backend::Gmm(mix) => gmm_metrics(g, mix, self.cfg.n, seed, device),
        };
        Ok(values
            .into_iter()
            .map(|(k, v)| (format!("eval/{k}"), v))
            .collect())
    }

    /// The key of the metric that picks the best checkpoint, and whether higher is better.
    pub fn best_key(&self) -> (String, bool) {
        if let Backend::Gmm(_) = self.backend {
            return match self.cfg.best.as_str() {
                "modes" => ("eval/modes".into(), true),
                "hq_share" => ("eval/hq_share".into(), true),
                _ => ("eval/kl".into(), false),
            };
        }
        let m = self.cfg.best.as_str();
        (
            format!("eval/{}{m}", self.cfg.prefix()),
            matches!(m, "is" | "precision" | "recall"),
        )
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
    let z = Tensor::randn([n as i64, g.z_dim()], (Kind::Float, device));
    let x = tch::no_grad(|| g.forward(&z, None, false))
        .to_device(Device::Cpu)
        .to_kind(Kind::Double)
        .reshape([n as i64, 2]);
    let flat: Vec<f64> = Vec::try_from(x.flatten(0, -1)).unwrap_or_default();
    let pts: Vec<[f64; 2]> = flat.chunks_exact(2).map(|p| [p[0], p[1]]).collect();
    let q = gantry_data::gmm::evaluate(mix, &pts);
    vec![
        ("modes".into(), q.modes_covered as f64),
        ("hq_share".into(), q.high_quality_share),
        ("kl".into(), q.kl_mode_histogram),
    ]
}
