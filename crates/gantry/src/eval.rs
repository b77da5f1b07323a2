//! Evaluation of a generator against a data set: FID, KID, IS and precision/recall on Inception
//! pool3 features (the pytorch-fid / torch-fidelity protocol, `gantry_metrics`), or on the
//! penultimate features of a gantry-trained classifier (reported as `classifier_*`).
//!
//! Generated images are quantised to uint8 exactly as saving a PNG would, and real images are
//! read as the uint8 they are stored as, so both sides see the same pipeline. Features of the
//! real data are cached per (data set, N, extractor, preprocessing).

use crate::dist::Comm;
use crate::error::{Error, Result};
use crate::models::{DataShape, Generator};
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

/// One entry of `eval.metrics` / `--metrics`: a metric family alone (`fid`: `eval.n` generated
/// images against `eval.reference`), or with its protocol in the name as papers quote it
/// (`fid50k_full`: 50,000 generated images against the whole training split; stylegan2-ada's
/// names). Either way the logged name carries the protocol ([`MetricPlan::name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, SerializeDisplay, DeserializeFromStr)]
pub struct MetricSpec {
    pub set: MetricSet,
    /// `None`: the bare family, measured as `eval.n`, `eval.real_n` and `eval.reference` say.
    pub protocol: Option<Protocol>,
}

/// How many images are generated, and which real images they are compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protocol {
    /// Generated images.
    pub n: usize,
    /// Real images: every image of this split (`None` for IS, which needs none).
    pub real: Option<RealSplit>,
}

/// The real side of a protocol: all images of a split, never a subset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RealSplit {
    /// `_full`: the whole training split (for a limited-data run too: the split, not the subset).
    Full,
    /// `_test`: the whole test split (data sets that have one: MNIST, CIFAR, shapes).
    Test,
}

impl RealSplit {
    fn tag(self) -> &'static str {
        match self {
            RealSplit::Full => "full",
            RealSplit::Test => "test",
        }
    }
}

/// `50000` -> `50k`, `500` -> `500`.
fn count_name(n: usize) -> String {
    if n > 0 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// The inverse of [`count_name`], at the start of `s`: (count, rest).
fn parse_count(s: &str) -> Option<(usize, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let n: usize = s[..digits].parse().ok()?;
    match s[digits..].strip_prefix('k') {
        Some(rest) => Some((n.checked_mul(1000)?, rest)),
        None => Some((n, &s[digits..])),
    }
}

/// A protocol's name: `fid50k_full`, `kid10k_test`, `pr50k3_full` (3 neighbours; `pr500n3_test`
/// where the count has no `k`), `is50k`. `real` is the tag of the real side with any count limit.
fn protocol_name(set: MetricSet, n: usize, real: &str) -> String {
    let count = count_name(n);
    match set {
        MetricSet::Is => format!("is{count}"),
        MetricSet::Pr => {
            let sep = if count.ends_with('k') { "" } else { "n" };
            format!("pr{count}{sep}{}_{real}", gantry_metrics::PR_NEIGHBOURS)
        }
        MetricSet::Gmm => "gmm".to_string(),
        MetricSet::Fid | MetricSet::Kid => format!("{}{count}_{real}", set.name()),
    }
}

impl MetricSet {
    fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl std::str::FromStr for MetricSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim();
        let bad = || {
            format!(
                "unknown metric {s:?} (valid: {}, or a protocol such as fid50k_full, kid50k_full, pr50k3_full, is50k, fid10k_test)",
                MetricSet::NAMES.join(", ")
            )
        };
        let sets = [
            MetricSet::Fid,
            MetricSet::Kid,
            MetricSet::Is,
            MetricSet::Pr,
            MetricSet::Gmm,
        ];
        if let Some(set) = sets.into_iter().find(|m| m.name() == t) {
            return Ok(MetricSpec {
                set,
                protocol: None,
            });
        }
        let (set, rest) = sets
            .into_iter()
            .filter(|m| *m != MetricSet::Gmm)
            .find_map(|m| t.strip_prefix(m.name()).map(|r| (m, r)))
            .ok_or_else(bad)?;
        let (n, rest) = parse_count(rest).ok_or_else(bad)?;
        if n == 0 {
            return Err(format!("metric {s:?}: the sample count must be at least 1"));
        }
        let rest = if set == MetricSet::Pr {
            let k = gantry_metrics::PR_NEIGHBOURS.to_string();
            let sep = if n.is_multiple_of(1000) && rest.starts_with(&k) {
                ""
            } else {
                "n"
            };
            rest.strip_prefix(sep)
                .and_then(|r| r.strip_prefix(k.as_str()))
                .ok_or_else(|| {
                    format!(
                        "metric {s:?}: precision/recall uses {k} neighbours (e.g. pr50k{k}_full)"
                    )
                })?
        } else {
            rest
        };
        let real = match (set, rest) {
            (MetricSet::Is, "") => None,
            (MetricSet::Is, _) => {
                return Err(format!(
                    "metric {s:?}: IS takes no real images (e.g. is50k)"
                ))
            }
            (_, "_full") => Some(RealSplit::Full),
            (_, "_test") => Some(RealSplit::Test),
            _ => return Err(bad()),
        };
        Ok(MetricSpec {
            set,
            protocol: Some(Protocol { n, real }),
        })
    }
}

impl std::fmt::Display for MetricSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.protocol {
            None => f.write_str(self.set.name()),
            Some(p) => f.write_str(&protocol_name(
                self.set,
                p.n,
                p.real.map_or("", RealSplit::tag),
            )),
        }
    }
}

impl From<MetricSet> for MetricSpec {
    fn from(set: MetricSet) -> Self {
        MetricSpec {
            set,
            protocol: None,
        }
    }
}

/// One metric family as an evaluation measures it: its logged name (without the `eval/` and
/// features prefixes), how many generated images, and which reference set (an index into
/// [`EvalPlan::references`]).
#[derive(Clone, Debug, PartialEq)]
pub struct MetricPlan {
    pub set: MetricSet,
    pub name: String,
    pub n: usize,
    pub reference: Option<usize>,
}

/// What an evaluation computes: the metrics and the distinct real sets they compare with
/// (`(data, real_n)`, real_n 0 = all), so FID and KID of one protocol share one reference.
/// Generated images are drawn once, as many as the largest protocol needs; each metric uses the
/// first `n` (stylegan2-ada draws anew per metric: the same distribution, other samples).
#[derive(Clone, Debug, PartialEq)]
pub struct EvalPlan {
    pub metrics: Vec<MetricPlan>,
    pub references: Vec<(DataConfig, usize)>,
}

impl EvalPlan {
    /// The generated images the plan needs.
    pub fn generated(&self) -> usize {
        self.metrics.iter().map(|m| m.n).max().unwrap_or(0)
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

    /// The metric a logged name reports (`eval/fid50k_full`, `classifier_kid2k_test`,
    /// `eval/pr10k3_full_recall`, `eval/hq_share`, and the bare names of older runs such as
    /// `eval/fid`); `None` for spreads (`kid50k_full_std`, `is_std`) and anything else, which
    /// have no better direction.
    pub fn of_key(key: &str) -> Option<Metric> {
        let name = key.strip_prefix("eval/").unwrap_or(key);
        let name = name.strip_prefix("classifier_").unwrap_or(name);
        if name.ends_with("_std") {
            return None;
        }
        if let Some(m) = Metric::ALL.into_iter().find(|m| m.name() == name) {
            return Some(m);
        }
        let counted = |family: &str| {
            name.strip_prefix(family)
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        };
        if counted("pr") {
            if name.ends_with("_precision") {
                return Some(Metric::Precision);
            }
            if name.ends_with("_recall") {
                return Some(Metric::Recall);
            }
            return None;
        }
        [Metric::Fid, Metric::Kid, Metric::Is]
            .into_iter()
            .find(|m| counted(m.name()))
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
    /// Generated samples per evaluation, for metrics named without a protocol (the papers'
    /// 50000 is in the protocol names: `fid50k_full`; smaller is noisier).
    pub n: usize,
    /// Real samples for metrics named without a protocol (0 = the whole reference data set).
    pub real_n: usize,
    /// Metrics: `fid`, `kid`, `is`, `pr` (measured with `eval.n` against `eval.reference`) or
    /// named protocols (`fid50k_full`, `kid50k_full`, `pr50k3_full`, `is50k`, `fid10k_test`) on
    /// images; `gmm` on 2-D points. Logged names always carry the protocol (`eval/fid10k_test`).
    pub metrics: Vec<MetricSpec>,
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
            metrics: vec![MetricSet::Fid.into(), MetricSet::Kid.into()],
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
        let sets: Vec<MetricSet> = self.metrics.iter().map(|m| m.set).collect();
        let gmm = sets.contains(&MetricSet::Gmm);
        if points && sets.iter().any(|m| *m != MetricSet::Gmm) {
            return Err(Error::config(
                "eval.metrics",
                "2-D point data is evaluated with [\"gmm\"] only (modes, hq_share, kl)",
            ));
        }
        if !points && gmm {
            return Err(Error::config(
                "eval.metrics",
                "gmm is for 2-D point data; images take fid, kid, is, pr (or protocols such as fid50k_full)",
            ));
        }
        let reported: Vec<Metric> = sets.iter().flat_map(|m| m.metrics()).copied().collect();
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
        if !points {
            for m in self.metrics.iter().filter(|m| m.set == MetricSet::Kid) {
                let n = m.protocol.map_or(self.n, |p| p.n);
                if self.kid_subset_size == 0 || n < self.kid_subset_size {
                    let (key, fix) = match m.protocol {
                        None => ("eval.n", "raise eval.n"),
                        Some(_) => ("eval.metrics", "name a larger protocol"),
                    };
                    return Err(Error::config(
                        key,
                        format!(
                            "{m}: {n} samples are fewer than KID's subset size {} ({fix} or lower eval.kid_subset_size)",
                            self.kid_subset_size
                        ),
                    ));
                }
            }
        }
        if let Some(spec) = &self.reference {
            DataConfig::from_spec(spec)
                .map_err(|e| Error::config("eval.reference", e.to_string()))?;
        }
        Ok(())
    }

    /// The metrics and reference sets an evaluation of a run on `data` computes (no files are
    /// read). A bare name is measured against [`reference_config`] and named for what that is:
    /// `fid` with `eval.n = 10000` against MNIST's test split is `fid10k_test`; against a folder,
    /// which has one split, `fid10k_full`; with `eval.real_n = 5000`, `fid10k_test5k`.
    pub fn plan(&self, data: &DataConfig) -> Result<EvalPlan> {
        let mut plan = EvalPlan {
            metrics: Vec::new(),
            references: Vec::new(),
        };
        if data.kind.is_points() {
            plan.metrics = self
                .metrics
                .iter()
                .map(|m| MetricPlan {
                    set: m.set,
                    name: m.set.name().to_string(),
                    n: self.n,
                    reference: None,
                })
                .collect();
            return Ok(plan);
        }
        let base = match &self.reference {
            Some(spec) => {
                let mut d = DataConfig::from_spec(spec)?;
                d.resolution = data.resolution;
                d.channels = data.channels;
                d.transform = data.transform;
                d
            }
            None => data.clone(),
        };
        for m in &self.metrics {
            let (n, real) = match m.protocol {
                None if m.set == MetricSet::Is => (self.n, None),
                None => {
                    let d = reference_config(self, data)?;
                    let split = if d.split == Split::Test && d.kind.has_test_split() {
                        RealSplit::Test
                    } else {
                        RealSplit::Full
                    };
                    let mut tag = split.tag().to_string();
                    if self.real_n > 0 {
                        tag.push_str(&count_name(self.real_n));
                    }
                    (self.n, Some((d, self.real_n, tag)))
                }
                Some(Protocol { n, real: None }) => (n, None),
                Some(Protocol {
                    n,
                    real: Some(split),
                }) => {
                    let mut d = base.clone();
                    d.hflip = false;
                    d.limit = None;
                    d.split = match split {
                        RealSplit::Full => Split::Train,
                        RealSplit::Test if d.kind.has_test_split() => Split::Test,
                        RealSplit::Test => {
                            return Err(Error::config(
                                "eval.metrics",
                                format!(
                                    "{m}: {} data has no test split (name the protocol with _full)",
                                    d.kind
                                ),
                            ))
                        }
                    };
                    (n, Some((d, 0, split.tag().to_string())))
                }
            };
            let (reference, tag) = match real {
                Some((d, real_n, tag)) => {
                    let key = (d, real_n);
                    let i = match plan.references.iter().position(|r| *r == key) {
                        Some(i) => i,
                        None => {
                            plan.references.push(key);
                            plan.references.len() - 1
                        }
                    };
                    (Some(i), tag)
                }
                None => (None, String::new()),
            };
            plan.metrics.push(MetricPlan {
                set: m.set,
                name: protocol_name(m.set, n, &tag),
                n,
                reference,
            });
        }
        Ok(plan)
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

/// Features of the first `n` samples of a data set (0 = all), in order, as stored uint8. A
/// thread reads and decodes the next chunk while the network runs on this one.
pub fn dataset_features(
    ds: &dyn Dataset,
    n: usize,
    ex: &dyn FeatureExtractor,
    mut progress: impl FnMut(usize, usize),
) -> Result<FeatureSet> {
    let total = if n == 0 { ds.len() } else { n.min(ds.len()) };
    let [c, h, w] = ds.sample_shape();
    let per = c * h * w;
    let chunk = 250;
    std::thread::scope(|scope| {
        // One decoded chunk waits at most: memory stays at two chunks.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<u8>>>(1);
        scope.spawn(move || {
            let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
            let mut buf = vec![0f32; chunk * per];
            let mut start = 0;
            while start < total {
                let len = chunk.min(total - start);
                let read = (0..len)
                    .try_for_each(|i| {
                        ds.load_into(start + i, &mut buf[i * per..(i + 1) * per], &mut rng)
                            .map(drop)
                    })
                    .map(|()| {
                        buf[..len * per]
                            .iter()
                            .map(|&v| gantry_data::image_io::to_u8(v))
                            .collect()
                    })
                    .map_err(Error::from);
                let failed = read.is_err();
                // The receiver gone (an extraction failed) or a read failed: stop reading.
                if tx.send(read).is_err() || failed {
                    return;
                }
                start += len;
            }
        });
        let mut set = FeatureSet::new();
        let mut done = 0;
        for bytes in rx {
            let bytes = bytes?;
            let len = bytes.len() / per;
            let x = Tensor::from_slice(&bytes).view([len as i64, c as i64, h as i64, w as i64]);
            set.push(&ex.extract(&x).map_err(metrics_err)?)
                .map_err(metrics_err)?;
            done += len;
            progress(done, total);
        }
        Ok(set)
    })
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
/// seeded by its rank), and rank 0, which computes the metrics, receives all `n` in rank order
/// (`None` on the other ranks). One process: the same as `generator_features`.
#[allow(clippy::too_many_arguments)]
pub fn generator_features_split(
    g: &dyn Generator,
    num_classes: Option<i64>,
    n: usize,
    seed: u64,
    device: Device,
    ex: &dyn FeatureExtractor,
    comm: &Comm,
    progress: impl FnMut(usize, usize),
) -> Result<Option<FeatureSet>> {
    if !comm.distributed() {
        return generator_features(g, num_classes, n, seed, device, ex, progress).map(Some);
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
    let pool = comm.gather(&own.pool().map_err(metrics_err)?, 0)?;
    let logits = match own.logits().map_err(metrics_err)? {
        Some(l) => comm.gather(&l, 0)?,
        None => None,
    };
    let Some(pool) = pool else { return Ok(None) };
    let n = n as i64;
    FeatureSet::from_tensors(
        &pool.narrow(0, 0, n),
        logits.map(|l| l.narrow(0, 0, n)).as_ref(),
    )
    .map(Some)
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
    // The cache speaks MetricsError; a data error passes through it unchanged.
    let mut failed = None;
    let set = cache.get_or_compute(&gantry_metrics::hash_bytes(key.as_bytes()), || {
        dataset_features(ds.as_ref(), n, ex, progress).map_err(|e| {
            let msg = e.to_string();
            failed = Some(e);
            gantry_metrics::MetricsError::input("reference data", "readable", msg)
        })
    });
    match (set, failed) {
        (_, Some(e)) => Err(e),
        (set, None) => set.map_err(metrics_err),
    }
}

impl MetricPlan {
    /// The logged name of `metric` (one this family reports) under this plan, without the
    /// `eval/` and features prefixes: `fid50k_full`, `pr50k3_full_recall`, `hq_share`.
    pub fn key(&self, metric: Metric) -> String {
        match (self.set, metric) {
            (MetricSet::Pr, m) => format!("{}_{}", self.name, m.name()),
            (MetricSet::Gmm, m) => m.name().to_string(),
            _ => self.name.clone(),
        }
    }
}

/// The first `n` of a feature set; `None` when it has no more (use it whole).
fn first(set: &FeatureSet, n: usize) -> Result<Option<FeatureSet>> {
    if set.len() <= n {
        return Ok(None);
    }
    let pool = set.pool().map_err(metrics_err)?.narrow(0, 0, n as i64);
    let logits = set
        .logits()
        .map_err(metrics_err)?
        .map(|l| l.narrow(0, 0, n as i64));
    FeatureSet::from_tensors(&pool, logits.as_ref())
        .map(Some)
        .map_err(metrics_err)
}

/// One metric family of a plan on features of real (`None` for IS) and generated images (the
/// first `plan.n` are used). Names: the plan's name with the extractor's prefix, plus `_std`
/// for the spreads of KID and IS and `_precision` / `_recall` for PR.
pub fn compute(
    plan: &MetricPlan,
    prefix: &str,
    real: Option<&FeatureSet>,
    fake: &FeatureSet,
    kid_subset_size: usize,
) -> Result<Vec<(String, f64)>> {
    let fewer = first(fake, plan.n)?;
    let fake = fewer.as_ref().unwrap_or(fake);
    let name = format!("{prefix}{}", plan.name);
    let real =
        || real.ok_or_else(|| Error::Metrics(format!("{name} needs features of real images")));
    Ok(match plan.set {
        MetricSet::Fid => {
            let fid = gantry_metrics::frechet_distance(
                &real()?.stats().map_err(metrics_err)?,
                &fake.stats().map_err(metrics_err)?,
            )
            .map_err(metrics_err)?;
            vec![(name, fid.value)]
        }
        MetricSet::Kid => {
            let opts = KidOptions {
                subset_size: kid_subset_size,
                ..Default::default()
            };
            let kid = gantry_metrics::kernel_inception_distance(
                &real()?.pool().map_err(metrics_err)?,
                &fake.pool().map_err(metrics_err)?,
                &opts,
            )
            .map_err(metrics_err)?;
            let std = format!("{name}_std");
            vec![(name, kid.mean), (std, kid.std)]
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
            let std = format!("{name}_std");
            vec![(name, s.mean), (std, s.std)]
        }
        MetricSet::Pr => {
            let pr = gantry_metrics::precision_recall(
                &real()?.pool().map_err(metrics_err)?,
                &fake.pool().map_err(metrics_err)?,
                gantry_metrics::PR_NEIGHBOURS,
            )
            .map_err(metrics_err)?;
            vec![
                (format!("{name}_precision"), pr.precision),
                (format!("{name}_recall"), pr.recall),
            ]
        }
        MetricSet::Gmm => {
            return Err(Error::config(
                "eval.metrics",
                "gmm is for 2-D point data, not features",
            ))
        }
    })
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
            d.transform = data.transform;
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
        /// Features of each of the plan's reference sets, on the rank that computes the metrics
        /// (rank 0) only.
        real: Option<Vec<FeatureSet>>,
    },
    /// The 2-D Gaussian-mixture benchmark: modes covered, share of high-quality samples, KL of
    /// the mode histogram (the mode-collapse literature's protocol; `gantry_data::gmm`).
    Gmm(gantry_data::gmm::Mixture),
}

/// Progress of an evaluation: (what, done, total), `what` is `real` or `generated`.
pub type EvalProgress<'a> = &'a mut dyn FnMut(&str, usize, usize);

/// Everything needed to evaluate a generator repeatedly (periodic evaluation in training).
pub struct Evaluator {
    pub cfg: EvalConfig,
    pub plan: EvalPlan,
    backend: Backend,
}

impl Evaluator {
    /// For a run on `data` (the training data; the reference follows from `cfg`).
    /// `computes`: this process computes the metrics (and so holds the reference features); in a
    /// data-parallel job that is rank 0, and the others only generate.
    /// `shape`: what the generator makes, which the feature network must take (checked here,
    /// before any work).
    pub fn new(
        cfg: &EvalConfig,
        data: &DataConfig,
        shape: &DataShape,
        device: Device,
        computes: bool,
        progress: EvalProgress<'_>,
    ) -> Result<Self> {
        cfg.validate(data.kind.is_points())?;
        let plan = cfg.plan(data)?;
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
                if let Features::Classifier(path) = &cfg.features {
                    // A classifier takes one shape (Inception takes any): one image shows a
                    // mismatch now rather than at the first evaluation.
                    let probe = Tensor::zeros(
                        [1, shape.channels, shape.resolution, shape.resolution],
                        (Kind::Uint8, Device::Cpu),
                    );
                    extractor.extract(&probe).map_err(|e| {
                        Error::config("eval.features", format!("{}: {e}", path.display()))
                    })?;
                }
                let real = if computes {
                    let mut sets = Vec::new();
                    for (d, real_n) in &plan.references {
                        sets.push(reference_features(
                            d,
                            *real_n,
                            extractor.as_ref(),
                            &cache_dir(),
                            |done, total| progress("real", done, total),
                        )?);
                    }
                    Some(sets)
                } else {
                    None
                };
                Backend::Features { extractor, real }
            }
        };
        Ok(Evaluator {
            cfg: cfg.clone(),
            plan,
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
        progress: EvalProgress<'_>,
    ) -> Result<Option<Vec<(String, f64)>>> {
        let values = match &self.backend {
            Backend::Features { extractor, real } => {
                progress("generated", 0, self.plan.generated());
                let fake = generator_features_split(
                    g,
                    num_classes,
                    self.plan.generated(),
                    seed,
                    device,
                    extractor.as_ref(),
                    comm,
                    |done, total| progress("generated", done, total),
                )?;
                let (Some(real), Some(fake)) = (real, fake) else {
                    return Ok(None);
                };
                let mut values = Vec::new();
                for m in &self.plan.metrics {
                    values.extend(compute(
                        m,
                        self.cfg.features.prefix(),
                        m.reference.map(|i| &real[i]),
                        &fake,
                        self.cfg.kid_subset_size,
                    )?);
                }
                values
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

    /// The logged key of the metric that picks the best checkpoint (`eval/fid10k_test`,
    /// `eval/classifier_fid2k_full`): `eval.best` as the first evaluated family that reports it
    /// measures it.
    pub fn best(&self) -> (String, Metric) {
        let prefix = match self.backend {
            Backend::Gmm(_) => "",
            Backend::Features { .. } => self.cfg.features.prefix(),
        };
        let m = self.cfg.best;
        let name = self
            .plan
            .metrics
            .iter()
            .find(|p| p.set.metrics().contains(&m))
            .map_or_else(|| m.name().to_string(), |p| p.key(m));
        (format!("eval/{prefix}{name}"), m)
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
        for (key, metric) in [
            ("eval/fid50k_full", Metric::Fid),
            ("eval/classifier_kid2k_test", Metric::Kid),
            ("eval/is50k", Metric::Is),
            ("eval/pr50k3_full_precision", Metric::Precision),
            ("eval/pr500n3_test_recall", Metric::Recall),
            ("eval/fid10k_test5k", Metric::Fid),
        ] {
            assert_eq!(Metric::of_key(key), Some(metric), "{key}");
        }
        for spread in [
            "eval/is_std",
            "eval/classifier_kid_std",
            "loss/d/adv",
            "eval/kid50k_full_std",
            "eval/is50k_std",
            "eval/first",
            "eval/island",
            "eval/pr50k3_full",
        ] {
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
            metrics: metrics.into_iter().map(MetricSpec::from).collect(),
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

    #[test]
    fn protocol_names_parse_and_print_as_papers_write_them() {
        for name in [
            "fid50k_full",
            "kid50k_full",
            "pr50k3_full",
            "is50k",
            "fid10k_test",
            "kid2k_test",
            "pr500n3_test",
            "fid500_full",
            "fid",
            "gmm",
        ] {
            let spec: MetricSpec = name.parse().unwrap();
            assert_eq!(spec.to_string(), name);
            let v: MetricSpec = toml::Value::String(name.into()).try_into().unwrap();
            assert_eq!(v, spec);
        }
        let p = "fid50k_full".parse::<MetricSpec>().unwrap();
        assert_eq!(p.set, MetricSet::Fid);
        assert_eq!(
            p.protocol,
            Some(Protocol {
                n: 50_000,
                real: Some(RealSplit::Full)
            })
        );
        for (bad, says) in [
            ("fid50k", "unknown metric"),
            ("fid50k_train", "unknown metric"),
            ("pr50k5_full", "3 neighbours"),
            ("is50k_full", "IS takes no real images"),
            ("fid0k_full", "at least 1"),
            ("gmm10k", "unknown metric"),
            ("fidd", "unknown metric"),
        ] {
            let e = bad.parse::<MetricSpec>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_plan_names_each_metric_for_what_it_measures() {
        let mnist = DataConfig {
            kind: gantry_data::DataKind::Mnist,
            path: Some("m".into()),
            limit: Some(500),
            hflip: true,
            ..Default::default()
        };
        let cfg = |names: &[&str], real_n: usize| EvalConfig {
            metrics: names.iter().map(|n| n.parse().unwrap()).collect(),
            n: 2000,
            real_n,
            kid_subset_size: 100,
            ..Default::default()
        };
        let plan = cfg(&["fid", "kid", "is", "pr"], 0).plan(&mnist).unwrap();
        let names: Vec<&str> = plan.metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["fid2k_test", "kid2k_test", "is2k", "pr2k3_test"]);
        // One reference set, the whole test split, shared by FID, KID and PR; none for IS.
        assert_eq!(plan.references.len(), 1);
        assert_eq!(plan.references[0].0.split, Split::Test);
        assert_eq!(plan.metrics[2].reference, None);
        assert_eq!(plan.generated(), 2000);
        let plan = cfg(&["fid"], 500).plan(&mnist).unwrap();
        assert_eq!(plan.metrics[0].name, "fid2k_test500");

        let plan = cfg(&["fid50k_full", "kid10k_full", "fid10k_test"], 0)
            .plan(&mnist)
            .unwrap();
        assert_eq!(plan.generated(), 50_000);
        assert_eq!(plan.references.len(), 2);
        let full = &plan.references[plan.metrics[0].reference.unwrap()].0;
        // The whole training split: not the run's 500-image subset, not mirrored.
        assert_eq!(
            (full.split, full.limit, full.hflip),
            (Split::Train, None, false)
        );
        assert_eq!(plan.metrics[0].reference, plan.metrics[1].reference);
        assert_ne!(plan.metrics[0].reference, plan.metrics[2].reference);

        // A folder has one split: a bare name measures against all of it, and says so.
        let folder = DataConfig {
            kind: gantry_data::DataKind::Folder,
            path: Some("f".into()),
            ..Default::default()
        };
        let plan = cfg(&["fid", "pr"], 0).plan(&folder).unwrap();
        assert_eq!(plan.metrics[0].name, "fid2k_full");
        assert_eq!(plan.metrics[0].key(Metric::Fid), "fid2k_full");
        assert_eq!(plan.metrics[1].key(Metric::Recall), "pr2k3_full_recall");
        let e = cfg(&["fid10k_test"], 0)
            .plan(&folder)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("has no test split") && e.contains("_full"),
            "{e}"
        );

        // KID's subset must fit every KID protocol.
        let mut few = cfg(&["kid50_full"], 0);
        few.best = Metric::Kid;
        let e = few.validate(false).unwrap_err().to_string();
        assert!(e.starts_with("eval.metrics: kid50_full: 50 samples"), "{e}");
    }
}
