//! `RunConfig`: everything a run needs, one serde struct per concept, nested under the key that
//! names it (`data.*`, `model.*`, `loss.*`, `train.*`, `adaptivemix.*`, `fq.*`, `diffaugment.*`,
//! `ada.*`, `eval.*`). Every option is defined once, with its default, next to the code that reads it; this
//! file defines none, and nothing below it imports it.
//!
//! Resolution order: defaults < preset < config file < `--set key=value`. A layer that changes
//! `model.arch` starts the model section afresh from that architecture's defaults. Unknown keys
//! and bad values are errors that name the dotted key (and list the valid ones), and
//! [`RunConfig::validate`] is the one gate every check that needs no data passes through before
//! any work starts (`--dry-run` included). `docs/configuration.md` is the user's view.

use crate::error::{Error, Result};
use crate::eval::EvalConfig;
use crate::loss::LossConfig;
use crate::models::ModelConfig;
use crate::plugins::ada::AdaConfig;
use crate::plugins::adaptivemix::AdaptiveMixConfig;
use crate::plugins::diffaugment::DiffAugmentConfig;
use crate::plugins::fq::FqConfig;
use crate::plugins::PluginsConfig;
use crate::train::{Setup, TrainConfig};
use crate::util::{merge, parse_toml, set_value};
use gantry_data::DataConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// The preset this configuration started from (informational; set by `--config NAME`).
    pub preset: String,
    /// Data set and loading (`gantry_data::DataConfig`).
    pub data: DataConfig,
    /// Architecture (`arch`) and that architecture's own settings.
    pub model: ModelConfig,
    /// Adversarial loss and penalties.
    pub loss: LossConfig,
    /// Optimisation, schedule, logging and checkpoints.
    pub train: TrainConfig,
    /// AdaptiveMix discriminator plug-in.
    pub adaptivemix: AdaptiveMixConfig,
    /// Feature Quantization discriminator plug-in.
    pub fq: FqConfig,
    /// DiffAugment: differentiable augmentation of every batch D sees.
    pub diffaugment: DiffAugmentConfig,
    /// ADA: adaptive discriminator augmentation (StyleGAN2-ADA's pipeline and p heuristic).
    pub ada: AdaConfig,
    /// Periodic evaluation (FID/KID/IS/PR) during training.
    pub eval: EvalConfig,
}

/// Built-in presets: `(name, description, TOML)`.
pub const PRESETS: &[(&str, &str, &str)] = &[
    (
        "shapes",
        "DCGAN on built-in coloured shapes at 32x32 (the default; no files needed)",
        include_str!("../presets/shapes.toml"),
    ),
    (
        "dcgan-cifar",
        "DCGAN on CIFAR-10 (binary version), 32x32, NS loss",
        include_str!("../presets/dcgan-cifar.toml"),
    ),
    (
        "dcgan-mnist",
        "DCGAN on MNIST IDX files, 1x32x32",
        include_str!("../presets/dcgan-mnist.toml"),
    ),
    (
        "dcgan-64",
        "DCGAN on an image folder at 64x64",
        include_str!("../presets/dcgan-64.toml"),
    ),
    (
        "wgangp-dcgan-cifar",
        "WGAN-GP with a DCGAN critic (layer norm) on CIFAR-10",
        include_str!("../presets/wgangp-dcgan-cifar.toml"),
    ),
    (
        "gmm-8",
        "MLP GAN on 8 Gaussians on a ring",
        include_str!("../presets/gmm-8.toml"),
    ),
    (
        "gmm-25",
        "MLP GAN on a 5x5 grid of Gaussians",
        include_str!("../presets/gmm-25.toml"),
    ),
    (
        "sngan-cifar",
        "SNGAN CIFAR-10 ResNet: SN in D, hinge, n_dis 5 (Miyato et al. 2018)",
        include_str!("../presets/sngan-cifar.toml"),
    ),
    (
        "wgangp-resnet-cifar",
        "WGAN-GP CIFAR-10 ResNet: Wasserstein + GP 10, n_dis 5 (Gulrajani et al. 2017)",
        include_str!("../presets/wgangp-resnet-cifar.toml"),
    ),
    (
        "r3gan-small",
        "R3GAN (relativistic loss + R1/R2, ResNeXt G/D) at CPU size on built-in shapes, 32x32",
        include_str!("../presets/r3gan-small.toml"),
    ),
    (
        "r3gan-cifar",
        "R3GAN's CIFAR-10 configuration, class-conditional (Huang et al. 2024); needs a GPU",
        include_str!("../presets/r3gan-cifar.toml"),
    ),
    (
        "biggan-cifar",
        "Class-conditional BigGAN on CIFAR-10 as in the FQ-GAN runs (Brock et al. 2019)",
        include_str!("../presets/biggan-cifar.toml"),
    ),
    (
        "stylegan2-256",
        "StyleGAN2 config F at 256x256 on an image folder (stylegan2-ada paper256)",
        include_str!("../presets/stylegan2-256.toml"),
    ),
    (
        "stylegan2-32-small",
        "CPU-sized StyleGAN2 on built-in shapes at 32x32",
        include_str!("../presets/stylegan2-32-small.toml"),
    ),
];

/// Keys that may differ between a run's saved configuration and a resume.
pub const SAFE_ON_RESUME: &[&str] = &[
    "train.steps",
    "train.device",
    "train.threads",
    "train.log_every",
    "train.sample_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.on_nan",
    "train.collective_timeout_s",
    "train.precision",
    "train.channels_last",
    "train.tf32",
    "train.cudnn_benchmark",
    "train.deterministic",
    "train.tensorboard",
    "train.resume",
    "data.workers",
    "data.prefetch",
    "data.path",
];

pub fn preset(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|p| p.0 == name).map(|p| p.2)
}

/// The presets `gantry train` takes (GAN and translation), and where a classification preset goes.
fn preset_names() -> String {
    let names: Vec<&str> = PRESETS
        .iter()
        .chain(crate::translate::PRESETS)
        .map(|p| p.0)
        .collect();
    let classify: Vec<&str> = crate::classify::PRESETS.iter().map(|p| p.0).collect();
    format!(
        "{}; classifier presets ({}) go to `gantry classify train --config NAME`",
        names.join(", "),
        classify.join(", ")
    )
}

/// Merges one layer (preset, file, or all `--set`s together) into `base`: tables merge deeply,
/// everything else replaces, and a layer that changes `model.arch` replaces the whole model
/// section (the old architecture's keys mean nothing to the new one).
fn merge_layer(base: &mut toml::Value, mut layer: toml::Value) {
    let arch = |v: &toml::Value| {
        v.get("model")
            .and_then(|m| m.get("arch"))
            .and_then(|a| a.as_str())
            .map(str::to_string)
    };
    if let (Some(new), Some(root)) = (arch(&layer), base.as_table_mut()) {
        if Some(&new)
            != root
                .get("model")
                .and_then(|m| m.get("arch"))
                .and_then(|a| a.as_str())
                .map(|s| s.to_string())
                .as_ref()
        {
            if let Some(model) = layer.as_table_mut().and_then(|t| t.remove("model")) {
                root.insert("model".into(), model);
            }
        }
    }
    merge(base, layer);
}

impl RunConfig {
    /// Resolves defaults, a preset name or TOML file (`config`), and `--set` assignments.
    pub fn resolve(config: Option<&str>, sets: &[String]) -> Result<RunConfig> {
        let mut root = toml::Value::try_from(RunConfig::default()).expect("defaults serialise");
        let mut preset_name = "shapes".to_string();
        let user = match config {
            None => None,
            Some(arg) if preset(arg).is_some() => {
                preset_name = arg.to_string();
                None
            }
            Some(arg) => {
                let path = Path::new(arg);
                if !path.exists() {
                    let hint = if arg.ends_with(".toml") || arg.contains('/') {
                        format!("{arg} does not exist")
                    } else if crate::classify::preset(arg).is_some() {
                        format!(
                            "{arg} is a classifier preset: gantry classify train --config {arg}"
                        )
                    } else {
                        format!("unknown preset {arg:?} (valid: {})", preset_names())
                    };
                    return Err(Error::config("--config", hint));
                }
                let text = std::fs::read_to_string(path).map_err(|e| Error::input(path, e))?;
                let value = parse_toml(&text, arg)?;
                // A file may start from a preset: `preset = "dcgan-cifar"`.
                if let Some(name) = value.get("preset").and_then(|v| v.as_str()) {
                    if preset(name).is_none() {
                        return Err(Error::config(
                            "preset",
                            format!("unknown preset {name:?} (valid: {})", preset_names()),
                        ));
                    }
                    preset_name = name.to_string();
                }
                Some(value)
            }
        };
        let preset_text = preset(&preset_name).expect("checked above");
        merge_layer(
            &mut root,
            parse_toml(preset_text, &preset_name).expect("built-in presets parse"),
        );
        if let Some(user) = user {
            merge_layer(&mut root, user);
        }
        merge_layer(&mut root, Self::sets_layer(sets)?);
        let mut cfg = Self::from_value(root)?;
        cfg.preset = preset_name;
        Ok(cfg)
    }

    /// All `--set` assignments as one layer.
    fn sets_layer(sets: &[String]) -> Result<toml::Value> {
        let mut layer = toml::Value::Table(toml::Table::new());
        for s in sets {
            set_value(&mut layer, s)?;
        }
        Ok(layer)
    }

    /// Applies `--set` assignments on top of an existing configuration (used on resume).
    pub fn with_sets(&self, sets: &[String]) -> Result<RunConfig> {
        let mut root = toml::Value::try_from(self).expect("RunConfig serialises");
        merge_layer(&mut root, Self::sets_layer(sets)?);
        Self::from_value(root)
    }

    fn from_value(root: toml::Value) -> Result<RunConfig> {
        serde_path_to_error::deserialize(root).map_err(|e| {
            let path = e.path().to_string();
            // toml appends "\nin `key`"; the key is already in front.
            let inner = e
                .into_inner()
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            // The model section parses itself and puts the key below `model` in front of its
            // message (see `ModelConfig`'s Deserialize): join it to the path.
            let (path, inner) = match inner.split_once(": ") {
                Some((sub, rest))
                    if path == "model"
                        && !sub.is_empty()
                        && sub
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_.[]".contains(c)) =>
                {
                    (format!("model.{sub}"), rest.to_string())
                }
                _ => (path, inner),
            };
            let inner = crate::util::did_you_mean(
                &inner
                    .replace("unknown field", "unknown key")
                    .replace("expected one of", "valid:")
                    .replace("expected `", "valid: `"),
            );
            Error::config(if path == "." { "config".into() } else { path }, inner)
        })
    }

    /// The one gate: every check that needs no data and no device, run before any work starts
    /// (training, experiments, `--dry-run`). Checks that need the opened data (labels, the data
    /// set's size) run when it is opened.
    pub fn validate(&self) -> Result<()> {
        self.data.validate()?;
        self.train.validate()?;
        let arch = self.model.arch();
        let points = self.data.kind.is_points();
        if points != arch.takes_points() {
            let what = if points {
                "2-D points need model.arch = \"mlp\""
            } else {
                "mlp takes 2-D points (data.kind = gmm-8 or gmm-25); images need another model.arch"
            };
            return Err(Error::config(
                "model.arch",
                format!(
                    "{} does not fit data.kind = {}: {what}",
                    self.model.arch_name(),
                    self.data.kind
                ),
            ));
        }
        let resolution = if points {
            1
        } else {
            i64::from(self.data.resolution)
        };
        arch.validate(resolution)?;
        if !points {
            self.check_batch_memory()?;
        }
        self.loss.validate(arch)?;
        self.plugins().validate(
            &arch.taps(resolution),
            &arch.default_fq_layers(resolution),
            points,
            self.loss.kind.scores_centred(),
        )?;
        if self.eval.every > 0 {
            self.eval.validate(points)?;
        }
        Ok(())
    }

    /// Refuses image sizes whose batches alone could not be held: the loader keeps
    /// `data.prefetch` batches ready, and a step holds a real and a fake batch besides.
    fn check_batch_memory(&self) -> Result<()> {
        let res = u64::from(self.data.resolution);
        let channels = u64::from(self.data.channels.unwrap_or(3));
        let batch = (self.train.batch_size as u64)
            .saturating_mul(channels)
            .saturating_mul(res)
            .saturating_mul(res)
            .saturating_mul(4);
        let need = batch.saturating_mul(self.data.prefetch as u64 + 2);
        match crate::util::available_memory() {
            Some(free) if need > free => Err(Error::config(
                "data.resolution",
                format!(
                    "{res}x{res} makes one batch of {} images {}; with the {} batches the loader keeps ready and a step's real and fake batches that is {}, and {} of memory is available (lower data.resolution or train.batch_size)",
                    self.train.batch_size,
                    crate::util::human_bytes(batch),
                    self.data.prefetch,
                    crate::util::human_bytes(need),
                    crate::util::human_bytes(free)
                ),
            )),
            _ => Ok(()),
        }
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

    /// What the training loop is built from.
    pub fn setup(&self) -> Setup {
        Setup {
            data: self.data.clone(),
            model: self.model.clone(),
            loss: self.loss.clone(),
            train: self.train.clone(),
            plugins: self.plugins(),
            eval: self.eval.clone(),
            resolved: self.to_toml(),
            comm: crate::dist::Comm::single(),
        }
    }

    /// Parses a resolved configuration (as saved in a checkpoint's metadata).
    pub fn from_value_str(text: &str, origin: &Path) -> Result<RunConfig> {
        Self::from_value(parse_toml(text, &origin.display().to_string())?)
    }

    /// Reads a resolved `config.toml` as written into a run directory.
    pub fn from_file(path: &Path) -> Result<RunConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::input(path, e))?;
        Self::from_value(parse_toml(&text, &path.display().to_string())?)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("RunConfig serialises to TOML")
    }

    /// The keys where two configurations differ (dotted paths), for resume checks.
    pub fn diff(&self, other: &RunConfig) -> Vec<String> {
        crate::util::changed_keys(self, other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_shapes_preset() {
        let cfg = RunConfig::resolve(None, &[]).unwrap();
        assert_eq!(cfg.preset, "shapes");
        assert_eq!(cfg.model.arch_name(), "dcgan");
    }

    #[test]
    fn every_preset_resolves() {
        for (name, _, _) in PRESETS {
            let cfg = RunConfig::resolve(Some(name), &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&cfg.preset, name);
            // Presets that need files only lack data.path.
            let cfg = cfg.with_sets(&["data.path=/data".into()]).unwrap();
            cfg.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    /// issue 13: a resolved configuration shows only its architecture's keys, and a layer that
    /// changes the architecture starts its section afresh.
    #[test]
    fn every_preset_shows_only_its_architectures_keys() {
        let keys =
            |v: toml::Value| -> Vec<String> { v.as_table().unwrap().keys().cloned().collect() };
        for (name, _, _) in PRESETS {
            let cfg = RunConfig::resolve(Some(name), &[]).unwrap();
            let arch = cfg.model.arch_name();
            let fresh: ModelConfig = toml::from_str(&format!("arch = \"{arch}\"")).unwrap();
            assert_eq!(
                keys(toml::Value::try_from(&cfg.model).unwrap()),
                keys(toml::Value::try_from(&fresh).unwrap()),
                "{name}"
            );
        }
        let cfg = RunConfig::resolve(
            None,
            &[
                "model.channel_base=2048".into(),
                "model.arch=stylegan2".into(),
            ],
        )
        .unwrap();
        assert_eq!(cfg.model.arch_name(), "stylegan2");
        let e = RunConfig::resolve(None, &["model.arch=stylegan2".into(), "model.ngf=3".into()])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("model.ngf: unknown key `ngf`, valid:"), "{e}");
        assert!(e.contains("channel_base"), "{e}");
    }

    #[test]
    fn set_overrides_and_reports_bad_keys() {
        let cfg = RunConfig::resolve(
            None,
            &[
                "train.steps=7".into(),
                "loss.kind=hinge".into(),
                "data.path=/x y".into(),
            ],
        )
        .unwrap();
        assert_eq!(cfg.train.steps, 7);
        assert_eq!(cfg.loss.kind, crate::loss::Adversarial::Hinge);
        assert_eq!(cfg.data.path.as_deref(), Some(Path::new("/x y")));
        let e = RunConfig::resolve(None, &["train.stepz=7".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("train.stepz: unknown key `stepz` (did you mean `steps`?), valid:")
                && e.contains("batch_size"),
            "{e}"
        );
        let e = RunConfig::resolve(None, &["train.steps=-3".into()])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("train.steps:"), "{e}");
        let e = RunConfig::resolve(None, &["loss.kind=nope".into()])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("loss.kind:") && e.contains("hinge"), "{e}");
        let e = RunConfig::resolve(Some("nope"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown preset \"nope\"") && e.contains("dcgan-cifar"),
            "{e}"
        );
    }

    #[test]
    fn bad_toml_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, "[train]\nsteps = 3\nbatch_size = \n").unwrap();
        let e = RunConfig::resolve(Some(p.to_str().unwrap()), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad TOML (line 3)"), "{e}");
    }

    #[test]
    fn round_trips_through_toml_and_diffs() {
        let a = RunConfig::resolve(Some("gmm-25"), &[]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, a.to_toml()).unwrap();
        let b = RunConfig::from_file(&p).unwrap();
        assert_eq!(a, b);
        let c = RunConfig::resolve(
            Some("gmm-25"),
            &["train.steps=1".into(), "model.hidden=3".into()],
        )
        .unwrap();
        assert_eq!(a.diff(&c), ["model.hidden", "train.steps"]);
    }
}
