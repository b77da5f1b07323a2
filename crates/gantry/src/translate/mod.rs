//! Unpaired image-to-image translation: U-GAT-IT (ICLR 2020) with gantry's discriminator
//! plug-ins. The FQ paper's third system is U-GAT-IT with FQ in its global discriminators; here
//! the discriminators implement [`crate::models::Discriminator`], so FQ, AdaptiveMix, DiffAugment
//! and ADA attach to them through the same [`crate::plugins::Critic`] as to a GAN's.
//!
//! [`nets`] holds the networks, [`objective`] what one iteration minimises, [`train`] when it
//! runs (checkpoints, exact resume, logs, samples). `docs/translation.md` is the user's view.

pub mod nets;
pub mod objective;
pub mod train;

use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::plugins::ada::AdaConfig;
use crate::plugins::adaptivemix::AdaptiveMixConfig;
use crate::plugins::diffaugment::DiffAugmentConfig;
use crate::plugins::fq::FqConfig;
use crate::plugins::PluginsConfig;
use crate::util::{parse_toml, set_value, TaskConfig};
use nets::{UgatitConfig, UgatitDiscriminator};
use objective::Weights;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Built-in translation presets: `(name, description, TOML)`.
pub const PRESETS: &[(&str, &str, &str)] = &[
    (
        "ugatit-light-64",
        "U-GAT-IT light at 64x64 on the built-in shapes, circles <-> squares (CPU, no files)",
        include_str!("../../presets/ugatit-light-64.toml"),
    ),
    (
        "ugatit-light-64-fq",
        "ugatit-light-64 with FQ in the global critics (the FQ-U-GAT-IT settings)",
        include_str!("../../presets/ugatit-light-64-fq.toml"),
    ),
    (
        "ugatit-256",
        "U-GAT-IT at 256x256 with the paper's settings (selfie2anime layout; set data.path; GPU)",
        include_str!("../../presets/ugatit-256.toml"),
    ),
];

/// `[data]` of a translation run: two domains.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranslateData {
    /// A folder in the official data sets' layout (`trainA`, `trainB`, `testA`, `testB`); when
    /// set, it defines all four parts and `a`, `b` must be empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Domain A's training images: a data spec (`folder:DIR`, `mnist:DIR#0-4`, `shapes#0`).
    pub a: String,
    /// Domain B's training images.
    pub b: String,
    /// Domain A's test images (translated for samples and KID); default: `a`'s test split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_a: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_b: Option<String>,
    /// Side of the square images the networks take.
    pub resolution: u32,
    /// Random left-right flips (the reference's RandomHorizontalFlip).
    pub hflip: bool,
    /// Random crops after enlarging by this many pixels per 256 (the reference resizes 256 to
    /// 286 and crops 256: 30); 0 = none.
    pub crop_margin: u32,
    /// Decoding threads of each loader.
    pub workers: usize,
}

impl Default for TranslateData {
    fn default() -> Self {
        TranslateData {
            path: None,
            a: String::new(),
            b: String::new(),
            test_a: None,
            test_b: None,
            resolution: 256,
            hflip: true,
            crop_margin: 30,
            workers: 2,
        }
    }
}

/// Which critics the plug-ins wrap (FQ always goes on the global critics only, where its
/// layers are named and where FQ-U-GAT-IT puts it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginsOn {
    /// The two global critics.
    Global,
    /// All four (FQ: the global ones).
    All,
}

/// `[train]` of a translation run (the reference's `main.py` defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranslateTrain {
    /// Iterations (one D and one G step each; `--iteration`).
    pub steps: u64,
    pub batch_size: usize,
    /// Adam learning rate of both optimisers.
    pub lr: f64,
    /// Adam's L2 weight decay (`--weight_decay`).
    pub weight_decay: f64,
    pub betas: [f64; 2],
    /// Linear decay of the learning rate to 0 over the second half (`--decay_flag`).
    pub decay: bool,
    /// Which critics the plug-ins wrap: `global` or `all`.
    pub plugins_on: PluginsOn,
    pub seed: u64,
    pub threads: usize,
    pub device: DeviceSpec,
    /// Deterministic algorithms (as `gantry train`'s `train.deterministic`): a CUDA run repeats
    /// bit for bit; slower.
    pub deterministic: bool,
    /// TensorBoard event files beside metrics.jsonl (as `gantry train`'s `train.tensorboard`).
    pub tensorboard: bool,
    pub log_every: u64,
    /// Steps between sample grids (0 = only at the end).
    pub sample_every: u64,
    /// Test images per direction in a sample grid.
    pub grid: usize,
    /// Steps between checkpoints (0 = only at the end).
    pub checkpoint_every: u64,
    pub keep_checkpoints: usize,
}

impl Default for TranslateTrain {
    fn default() -> Self {
        TranslateTrain {
            steps: 1_000_000,
            batch_size: 1,
            lr: 1e-4,
            weight_decay: 1e-4,
            betas: [0.5, 0.999],
            decay: true,
            plugins_on: PluginsOn::Global,
            seed: 0,
            threads: 0,
            device: DeviceSpec::Cpu,
            deterministic: false,
            tensorboard: true,
            log_every: 100,
            sample_every: 1000,
            grid: 4,
            checkpoint_every: 10_000,
            keep_checkpoints: 2,
        }
    }
}

/// `[eval]` of a translation run: KID x 100 between translated images and the other domain's.
/// During training on images held out of the training domains (`eval/kid*`, which chooses the
/// best checkpoint); at the end also on the test split (`eval/test_kid*`, the numbers to quote).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranslateEval {
    /// Evaluate every N steps (0 = never during training; the end is always evaluated when
    /// features are set).
    pub every: u64,
    /// Feature network: `inception` or `classifier:RUN` (as `eval.features` of GAN runs); empty
    /// = no evaluation.
    pub features: String,
    /// FID Inception weights file (default: $GANTRY_FID_WEIGHTS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<std::path::PathBuf>,
    /// Images per direction (0 = all).
    pub n: usize,
    /// Fraction of each training domain held out (never trained on) to choose the best
    /// checkpoint on, when evaluating; 0 = no held-out part and no best checkpoint.
    pub holdout: f64,
    /// KID subset size (torch-fidelity: 1000; smaller test sets use their size).
    pub kid_subset_size: usize,
}

impl Default for TranslateEval {
    fn default() -> Self {
        TranslateEval {
            every: 0,
            features: String::new(),
            weights: None,
            n: 0,
            holdout: 0.1,
            kid_subset_size: 1000,
        }
    }
}

/// The whole configuration of a translation run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranslateConfig {
    /// Always `translate` (what tells `gantry train` which kind of run a file describes).
    pub task: String,
    /// The preset this configuration started from (informational).
    pub preset: String,
    pub data: TranslateData,
    pub model: UgatitConfig,
    pub loss: Weights,
    pub train: TranslateTrain,
    pub eval: TranslateEval,
    pub fq: FqConfig,
    pub adaptivemix: AdaptiveMixConfig,
    pub diffaugment: DiffAugmentConfig,
    pub ada: AdaConfig,
}

impl Default for TranslateConfig {
    fn default() -> Self {
        TranslateConfig {
            task: "translate".into(),
            preset: String::new(),
            data: TranslateData::default(),
            model: UgatitConfig::default(),
            loss: Weights::default(),
            train: TranslateTrain::default(),
            eval: TranslateEval::default(),
            fq: FqConfig::default(),
            adaptivemix: AdaptiveMixConfig::default(),
            diffaugment: DiffAugmentConfig::default(),
            ada: AdaConfig::default(),
        }
    }
}

/// Direction of a translation run's evaluation keys (KID: lower is better), for reports.
pub fn higher_is_better(key: &str) -> Option<bool> {
    key.strip_prefix("eval/")
        .filter(|k| k.starts_with("kid") || k.starts_with("test_kid"))
        .map(|_| false)
}

/// Whether a TOML text describes a translation run (`task = "translate"` at the top).
pub fn is_translate_toml(text: &str) -> bool {
    text.parse::<toml::Table>()
        .ok()
        .and_then(|t| {
            t.get("task")
                .and_then(|v| v.as_str().map(|s| s == "translate"))
        })
        .unwrap_or(false)
}

/// The TOML of preset `name`, if it is a translation preset.
pub fn preset(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|(n, _, _)| *n == name).map(|p| p.2)
}

impl TaskConfig for TranslateConfig {
    fn validate(&self) -> Result<()> {
        TranslateConfig::validate(self)
    }
}

impl TranslateConfig {
    /// Defaults, then a preset or TOML file, then `--set key=value` assignments; validated.
    pub fn resolve(config: Option<&str>, sets: &[String]) -> Result<TranslateConfig> {
        let mut layers = Vec::new();
        if let Some(c) = config {
            let (text, origin) = match preset(c) {
                Some(t) => (t.to_string(), format!("preset {c}")),
                None => {
                    let path = Path::new(c);
                    (
                        std::fs::read_to_string(path).map_err(|e| Error::input(path, e))?,
                        c.to_string(),
                    )
                }
            };
            let mut layer = parse_toml(&text, &origin)?;
            if preset(c).is_some() {
                set_value(&mut layer, &format!("preset={c}"))?;
            }
            layers.push(layer);
        }
        Self::layered(layers, sets)
    }

    /// The plug-ins' settings together.
    pub fn plugins(&self) -> PluginsConfig {
        PluginsConfig {
            diffaugment: self.diffaugment.clone(),
            ada: self.ada.clone(),
            fq: self.fq.clone(),
            adaptivemix: self.adaptivemix.clone(),
        }
    }

    /// The four data specs: (train A, train B, test A, test B).
    pub fn specs(&self) -> Result<[(String, gantry_data::Split); 4]> {
        use gantry_data::Split::{Test, Train};
        let d = &self.data;
        if let Some(root) = &d.path {
            let part = |p: &str| {
                (
                    format!("folder:{}", Path::new(root).join(p).display()),
                    Train,
                )
            };
            return Ok([part("trainA"), part("trainB"), part("testA"), part("testB")]);
        }
        let test = |t: &Option<String>, train: &str| match t {
            Some(s) => (s.clone(), Train),
            None => (train.to_string(), Test),
        };
        Ok([
            (d.a.clone(), Train),
            (d.b.clone(), Train),
            test(&d.test_a, &d.a),
            test(&d.test_b, &d.b),
        ])
    }

    /// Taps FQ takes when `fq.layers` is empty: the global critic's three maps before its last
    /// two (at 256x256 with 7 layers: 64x64, 32x32 and 16x16, FQ-U-GAT-IT's).
    pub fn default_fq_layers(&self) -> Vec<String> {
        let taps = self.global_taps();
        let end = taps.len().saturating_sub(2);
        taps[end.saturating_sub(3)..end].to_vec()
    }

    /// The global critic's tap names at this resolution.
    pub fn global_taps(&self) -> Vec<String> {
        let mut side = i64::from(self.data.resolution);
        let mut taps = Vec::new();
        for _ in 0..self.model.global_layers - 2 {
            side = (side + 2 - 4) / 2 + 1;
            taps.push(format!("b{side}"));
        }
        taps.push("last".into());
        taps
    }

    /// Everything that can be checked without opening data.
    pub fn validate(&self) -> Result<()> {
        if self.task != "translate" {
            return Err(Error::config(
                "task",
                format!(
                    "must be \"translate\" in a translation run, got {:?}",
                    self.task
                ),
            ));
        }
        let d = &self.data;
        let t = &self.train;
        let m = &self.model;
        match &d.path {
            Some(_) if !(d.a.is_empty() && d.b.is_empty()) => {
                return Err(Error::config(
                    "data.path",
                    "defines both domains (trainA/trainB/testA/testB); leave data.a and data.b empty",
                ))
            }
            None if d.a.is_empty() || d.b.is_empty() => {
                return Err(Error::config(
                    if d.a.is_empty() { "data.a" } else { "data.b" },
                    "required: a data spec of the domain's training images (or data.path with the trainA/trainB layout)",
                ))
            }
            _ => {}
        }
        if d.resolution < 16 || !d.resolution.is_multiple_of(4) {
            return Err(Error::config(
                "data.resolution",
                "must be a multiple of 4, at least 16",
            ));
        }
        if d.workers == 0 {
            return Err(Error::config("data.workers", "must be at least 1"));
        }
        if m.ch < 1 || m.n_res < 0 {
            return Err(Error::config(
                "model.ch",
                "model.ch must be >= 1 and model.n_res >= 0",
            ));
        }
        let size = i64::from(d.resolution);
        for (key, layers) in [
            ("model.global_layers", m.global_layers),
            ("model.local_layers", m.local_layers),
        ] {
            if UgatitDiscriminator::patch_side(layers, size).is_none() {
                return Err(Error::config(
                    key,
                    format!("{layers} layers leave no patch to classify at {size}x{size} (use fewer layers)"),
                ));
            }
        }
        if t.steps == 0 {
            return Err(Error::config("train.steps", "must be at least 1"));
        }
        if t.batch_size == 0 {
            return Err(Error::config("train.batch_size", "must be at least 1"));
        }
        for (key, v) in [("train.lr", t.lr), ("train.weight_decay", t.weight_decay)] {
            if !(v.is_finite() && v >= 0.0) || (key == "train.lr" && v == 0.0) {
                return Err(Error::config(
                    key,
                    format!("must be a finite number >= 0 (lr > 0), got {v}"),
                ));
            }
        }
        if t.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            return Err(Error::config("train.betas", "must be in [0, 1)"));
        }
        if t.log_every == 0 || t.grid == 0 || t.keep_checkpoints == 0 {
            return Err(Error::config(
                "train.log_every",
                "train.log_every, train.grid and train.keep_checkpoints must be at least 1",
            ));
        }
        for (key, w) in [
            ("loss.adv", self.loss.adv),
            ("loss.cycle", self.loss.cycle),
            ("loss.identity", self.loss.identity),
            ("loss.cam", self.loss.cam),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(Error::config(
                    key,
                    format!("must be a finite weight >= 0, got {w}"),
                ));
            }
        }
        if !self.eval.features.is_empty() {
            self.features()?;
            if self.eval.kid_subset_size < 2 {
                return Err(Error::config("eval.kid_subset_size", "must be at least 2"));
            }
            if !(self.eval.holdout.is_finite() && (0.0..0.5).contains(&self.eval.holdout)) {
                return Err(Error::config(
                    "eval.holdout",
                    "must be a fraction in [0, 0.5) of each training domain",
                ));
            }
        }
        if self.ada.enabled && self.ada.mode == crate::plugins::ada::Mode::Schedule {
            return Err(Error::config(
                "ada.mode",
                "translation runs have no schedule for p to follow; use mode = \"fixed\"",
            ));
        }
        // U-GAT-IT's least-squares critics aim reals at 1 and fakes at 0: not centred.
        self.plugins()
            .validate(&self.global_taps(), &self.default_fq_layers(), false, false)
    }

    /// `eval.features` parsed.
    pub fn features(&self) -> Result<crate::eval::Features> {
        self.eval
            .features
            .parse::<crate::eval::Features>()
            .map_err(|e| Error::config("eval.features", e.to_string()))
    }
}
