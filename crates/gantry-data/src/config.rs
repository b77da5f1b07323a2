//! The `data.*` section of a run configuration and the `KIND:PATH` spec syntax of the CLI.
//!
//! The doc comment of every field is the user-facing list of valid keys, so keep them short and
//! accurate; `deny_unknown_fields` turns a typo such as `data.resolutoin` into an error instead
//! of a silently ignored setting.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::DataError;

/// Which data source to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataKind {
    /// Procedurally drawn coloured circles, squares and triangles (needs no files).
    #[default]
    Shapes,
    /// 2-D mixture of 8 Gaussians on a ring of radius 2 (std 0.02).
    #[serde(rename = "gmm-8")]
    Gmm8,
    /// 2-D mixture of 25 Gaussians on the grid {-4,-2,0,2,4}^2 (std 0.05).
    #[serde(rename = "gmm-25")]
    Gmm25,
    /// A directory tree of PNG/JPEG images (a path to a `.zip` file is read as kind `zip`).
    Folder,
    /// A zip archive of PNG/JPEG images, e.g. one written by stylegan2-ada's `dataset_tool.py`
    /// or `gantry dataset`; entries are read one at a time, never unpacked to disk.
    Zip,
    /// MNIST IDX files (gzip or raw).
    Mnist,
    /// CIFAR-10, binary version.
    Cifar10,
    /// CIFAR-100, binary version (fine labels).
    Cifar100,
}

impl DataKind {
    /// Every kind, in documentation order.
    pub const ALL: [DataKind; 8] = [
        DataKind::Shapes,
        DataKind::Gmm8,
        DataKind::Gmm25,
        DataKind::Folder,
        DataKind::Zip,
        DataKind::Mnist,
        DataKind::Cifar10,
        DataKind::Cifar100,
    ];

    /// The name used in configs and specs (same as the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            DataKind::Shapes => "shapes",
            DataKind::Gmm8 => "gmm-8",
            DataKind::Gmm25 => "gmm-25",
            DataKind::Folder => "folder",
            DataKind::Zip => "zip",
            DataKind::Mnist => "mnist",
            DataKind::Cifar10 => "cifar10",
            DataKind::Cifar100 => "cifar100",
        }
    }

    /// Whether the kind reads files (and therefore needs `data.path`).
    pub fn needs_path(self) -> bool {
        matches!(
            self,
            DataKind::Folder
                | DataKind::Zip
                | DataKind::Mnist
                | DataKind::Cifar10
                | DataKind::Cifar100
        )
    }

    /// Whether the source has a held-out part (`data.split = "test"`): the MNIST and CIFAR test
    /// files, the synthetic kinds' disjoint stream; a folder or a zip has none.
    pub fn has_test_split(self) -> bool {
        !matches!(self, DataKind::Folder | DataKind::Zip)
    }

    /// Whether samples are 2-D points rather than images.
    pub fn is_points(self) -> bool {
        matches!(self, DataKind::Gmm8 | DataKind::Gmm25)
    }

    fn names() -> String {
        DataKind::ALL.map(DataKind::as_str).join(", ")
    }
}

impl fmt::Display for DataKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DataKind {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, DataError> {
        let wanted = s.trim().to_ascii_lowercase();
        DataKind::ALL
            .into_iter()
            .find(|k| k.as_str() == wanted)
            .ok_or_else(|| {
                DataError::config(
                    "data.kind",
                    format!(
                        "unknown kind '{s}' (expected one of: {})",
                        DataKind::names()
                    ),
                )
            })
    }
}

/// Which part of a data set to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The training files (synthetic kinds: the training stream).
    #[default]
    Train,
    /// The held-out files (synthetic kinds: a stream disjoint from the training one).
    Test,
}

impl Split {
    pub const NAMES: &'static [&'static str] = &["train", "test"];

    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, DataError> {
        match s.trim() {
            "train" => Ok(Split::Train),
            "test" => Ok(Split::Test),
            other => Err(DataError::config(
                "data.split",
                format!("unknown split '{other}' (valid: train, test)"),
            )),
        }
    }
}

/// How an image that is not square is fitted into the square `data.resolution` (`data.transform`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeMode {
    /// Shorter side resized to the resolution, the longer one centre-cropped.
    #[default]
    CenterCrop,
    /// Longer side resized to the resolution, the whole image centred on black (letterbox).
    Pad,
    /// Both sides resized to the resolution; the aspect ratio is not kept.
    Stretch,
}

impl ResizeMode {
    pub const NAMES: &'static [&'static str] = &["center-crop", "pad", "stretch"];

    pub fn as_str(self) -> &'static str {
        match self {
            ResizeMode::CenterCrop => "center-crop",
            ResizeMode::Pad => "pad",
            ResizeMode::Stretch => "stretch",
        }
    }

    fn is_default(&self) -> bool {
        *self == ResizeMode::default()
    }
}

impl fmt::Display for ResizeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResizeMode {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, DataError> {
        let wanted = s.trim();
        [ResizeMode::CenterCrop, ResizeMode::Pad, ResizeMode::Stretch]
            .into_iter()
            .find(|m| m.as_str() == wanted)
            .ok_or_else(|| {
                DataError::config(
                    "data.transform",
                    format!(
                        "unknown transform '{s}' (valid: {})",
                        ResizeMode::NAMES.join(", ")
                    ),
                )
            })
    }
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// Dataset settings (`data.*`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Source: shapes (default), gmm-8, gmm-25, folder, zip, mnist, cifar10 or cifar100.
    pub kind: DataKind,
    /// Directory or file to read; required for folder, zip, mnist, cifar10 and cifar100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Output side length in pixels (a power of two >= 4); non-square images per `transform`.
    pub resolution: u32,
    /// Non-square images: center-crop (default), pad (letterbox on black) or stretch.
    #[serde(skip_serializing_if = "ResizeMode::is_default")]
    pub transform: ResizeMode,
    /// Output channels: unset = the source's own (MNIST 1, others 3); 1 = grey; 3 = RGB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<u32>,
    /// Randomly mirror images left-right (augmentation).
    pub hflip: bool,
    /// Folder, zip: labels from its `dataset.json`, else first-level sub-folders are classes (name order).
    pub labels: bool,
    /// `train` or `test` (mnist/cifar files; synthetic kinds draw a disjoint stream; folder, zip ignore it).
    pub split: Split,
    /// Use only the first N samples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Real images never trained on, for watching D overfit (`overfit/*`): a count (500) or a
    /// share of the data set (0.05), drawn with `train.seed` before `limit` applies; 0 = none
    /// (the test split serves, where the data set has one).
    #[serde(skip_serializing_if = "is_zero")]
    pub holdout: f64,
    /// Number of samples of the synthetic kinds (shapes, gmm-8, gmm-25).
    pub size: usize,
    /// Decoding threads of the loader (>= 1).
    pub workers: usize,
    /// Batches the loader prepares ahead of the trainer.
    pub prefetch: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            kind: DataKind::Shapes,
            path: None,
            resolution: 32,
            transform: ResizeMode::CenterCrop,
            channels: None,
            hflip: false,
            labels: false,
            split: Split::Train,
            limit: None,
            holdout: 0.0,
            size: 50_000,
            workers: 2,
            prefetch: 4,
        }
    }
}

impl DataConfig {
    /// Parses a command-line dataset spec: `KIND:PATH` (`mnist:../shared/data/mnist`), or
    /// `KIND@SPLIT:PATH` for a held-out split (`mnist@test:../shared/data/mnist`), a bare
    /// synthetic `KIND` (`shapes`, `gmm-25`), or a bare path (a folder of images).
    /// Every other field keeps its default.
    pub fn from_spec(spec: &str) -> Result<DataConfig, DataError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(DataError::config(
                "data",
                format!(
                    "empty dataset spec (expected KIND:PATH, a synthetic KIND or a folder path; kinds: {})",
                    DataKind::names()
                ),
            ));
        }
        let mut cfg = DataConfig::default();
        if let Ok(kind) = spec.parse::<DataKind>() {
            if kind.needs_path() {
                return Err(DataError::config(
                    "data",
                    format!("dataset spec '{spec}' needs a path, e.g. '{kind}:/path/to/data'"),
                ));
            }
            cfg.kind = kind;
        } else if let Some((head, rest)) = spec.split_once(':') {
            let (head, split) = match head.split_once('@') {
                Some((kind, split)) => (kind, Some(split)),
                None => (head, None),
            };
            match head.parse::<DataKind>() {
                Ok(kind) => {
                    if let Some(split) = split {
                        cfg.split = split.parse()?;
                    }
                    if rest.is_empty() {
                        return Err(DataError::config(
                            "data",
                            format!("dataset spec '{spec}' has an empty path after '{kind}:'"),
                        ));
                    }
                    if !kind.needs_path() {
                        return Err(DataError::config(
                            "data",
                            format!(
                                "dataset spec '{spec}': kind {kind} is synthetic and takes no path"
                            ),
                        ));
                    }
                    cfg.kind = kind;
                    cfg.path = Some(PathBuf::from(rest));
                }
                // A word before the colon (or the '@' of a split) that is not a kind is most
                // likely a misspelt kind ("minst:..."); anything path-like ("C:\x", "./a:b",
                // "./a@b:c") is taken as a folder.
                Err(_)
                    if (head.len() > 1 || split.is_some())
                        && head.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
                {
                    return Err(DataError::config(
                        "data",
                        format!(
                            "dataset spec '{spec}': unknown kind '{head}' (expected one of: {})",
                            DataKind::names()
                        ),
                    ));
                }
                Err(_) => {
                    cfg.kind = DataKind::Folder;
                    cfg.path = Some(PathBuf::from(spec));
                }
            }
        } else {
            cfg.kind = DataKind::Folder;
            cfg.path = Some(PathBuf::from(spec));
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the values that can be checked without touching the file system.
    pub fn validate(&self) -> Result<(), DataError> {
        if self.kind.needs_path() && self.path.is_none() {
            return Err(DataError::config(
                "data.path",
                format!(
                    "required for data.kind={} (e.g. --set data.path=/path/to/data)",
                    self.kind
                ),
            ));
        }
        if let Some(p) = &self.path {
            if p.as_os_str().is_empty() {
                return Err(DataError::config("data.path", "is empty"));
            }
        }
        if self.resolution < 4 || !self.resolution.is_power_of_two() {
            return Err(DataError::config(
                "data.resolution",
                format!(
                    "{} is not a power of two >= 4 (e.g. 32, 64)",
                    self.resolution
                ),
            ));
        }
        if let Some(c) = self.channels {
            if c != 1 && c != 3 {
                return Err(DataError::config(
                    "data.channels",
                    format!("{c} is not supported (1 = grey, 3 = RGB, unset = the source's own)"),
                ));
            }
        }
        if !(self.holdout.is_finite() && self.holdout >= 0.0)
            || (self.holdout >= 1.0 && self.holdout.fract() != 0.0)
        {
            return Err(DataError::config(
                "data.holdout",
                format!(
                    "{} is neither a count of images (500) nor a share below 1 (0.05)",
                    self.holdout
                ),
            ));
        }
        if self.limit == Some(0) {
            return Err(DataError::config(
                "data.limit",
                "0 leaves no samples (unset it to use all)",
            ));
        }
        if self.size == 0 && !self.kind.needs_path() {
            return Err(DataError::config(
                "data.size",
                format!("0 leaves data.kind={} with no samples", self.kind),
            ));
        }
        if self.workers == 0 {
            return Err(DataError::config("data.workers", "must be at least 1"));
        }
        Ok(())
    }

    /// The channel count the data will have after conversion, given the source's own count.
    pub(crate) fn channels_or(&self, native: usize) -> usize {
        self.channels.map_or(native, |c| c as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let c = DataConfig::default();
        assert_eq!(c.kind, DataKind::Shapes);
        assert_eq!(c.resolution, 32);
        assert_eq!((c.size, c.workers, c.prefetch), (50_000, 2, 4));
        assert_eq!(c.split, Split::Train);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn serde_uses_kebab_names_defaults_and_rejects_unknown_keys() {
        let c: DataConfig = serde_json::from_str(r#"{"kind":"gmm-25","size":100}"#).unwrap();
        assert_eq!(c.kind, DataKind::Gmm25);
        assert_eq!(c.size, 100);
        assert_eq!(c.resolution, 32);
        let c: DataConfig = serde_json::from_str(r#"{"kind":"cifar100","path":"/d"}"#).unwrap();
        assert_eq!(c.kind, DataKind::Cifar100);
        assert_eq!(c.path, Some(PathBuf::from("/d")));

        let err = serde_json::from_str::<DataConfig>(r#"{"resolutoin":64}"#).unwrap_err();
        assert!(err.to_string().contains("resolutoin"), "{err}");
        assert!(serde_json::from_str::<DataConfig>(r#"{"kind":"gmm25"}"#).is_err());
        let err = serde_json::from_str::<DataConfig>(r#"{"split":"val"}"#).unwrap_err();
        assert!(err.to_string().contains("`train` or `test`"), "{err}");
        for name in Split::NAMES {
            let s: Split = name.parse().unwrap();
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{name}\""));
        }

        let back: DataConfig =
            serde_json::from_str(&serde_json::to_string(&DataConfig::default()).unwrap()).unwrap();
        assert_eq!(back, DataConfig::default());
        for k in DataKind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(k.as_str().parse::<DataKind>().unwrap(), k);
        }
    }

    #[test]
    fn transform_is_a_kebab_enum_left_out_when_default() {
        let c: DataConfig =
            serde_json::from_str(r#"{"kind":"zip","path":"d.zip","transform":"pad"}"#).unwrap();
        assert_eq!((c.kind, c.transform), (DataKind::Zip, ResizeMode::Pad));
        assert!(serde_json::to_string(&c)
            .unwrap()
            .contains(r#""transform":"pad""#));
        let json = serde_json::to_string(&DataConfig::default()).unwrap();
        assert!(!json.contains("transform"), "{json}");
        let err = serde_json::from_str::<DataConfig>(r#"{"transform":"crop"}"#).unwrap_err();
        assert!(
            err.to_string().contains("`center-crop`, `pad`, `stretch`"),
            "{err}"
        );
        for name in ResizeMode::NAMES {
            let m: ResizeMode = name.parse().unwrap();
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{name}\""));
        }
        let e = "crop".parse::<ResizeMode>().unwrap_err().to_string();
        assert_eq!(
            e,
            "data.transform: unknown transform 'crop' (valid: center-crop, pad, stretch)"
        );
        let c = DataConfig::from_spec("zip:/data/ffhq.zip").unwrap();
        assert_eq!((c.kind, c.split), (DataKind::Zip, Split::Train));
        assert!(!DataKind::Zip.has_test_split() && DataKind::Zip.needs_path());
    }

    #[test]
    fn from_spec_parses_kind_path_bare_kind_and_bare_path() {
        let c = DataConfig::from_spec("mnist:../shared/data/mnist").unwrap();
        assert_eq!(c.kind, DataKind::Mnist);
        assert_eq!(
            c.path.as_deref(),
            Some(std::path::Path::new("../shared/data/mnist"))
        );

        let c = DataConfig::from_spec("cifar10:/data/cifar-10-batches-bin").unwrap();
        assert_eq!(c.kind, DataKind::Cifar10);

        assert_eq!(
            DataConfig::from_spec("gmm-25").unwrap().kind,
            DataKind::Gmm25
        );
        assert_eq!(
            DataConfig::from_spec("shapes").unwrap().kind,
            DataKind::Shapes
        );

        let c = DataConfig::from_spec("/data/cats").unwrap();
        assert_eq!(c.kind, DataKind::Folder);
        assert_eq!(c.path, Some(PathBuf::from("/data/cats")));
        let c = DataConfig::from_spec("folder:./x:y").unwrap();
        assert_eq!(c.path, Some(PathBuf::from("./x:y")));

        let c = DataConfig::from_spec("mnist@test:../shared/data/mnist").unwrap();
        assert_eq!((c.kind, c.split), (DataKind::Mnist, Split::Test));
        assert_eq!(
            DataConfig::from_spec("mnist:/d").unwrap().split,
            Split::Train
        );
        let c = DataConfig::from_spec("./a@b:c").unwrap();
        assert_eq!(c.kind, DataKind::Folder);
        assert_eq!(c.path, Some(PathBuf::from("./a@b:c")));
    }

    #[test]
    fn from_spec_errors_are_clear() {
        let e = DataConfig::from_spec("mnist").unwrap_err().to_string();
        assert!(e.contains("needs a path") && e.contains("mnist:"), "{e}");
        let e = DataConfig::from_spec("minst:/data")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown kind 'minst'") && e.contains("cifar100"),
            "{e}"
        );
        let e = DataConfig::from_spec("shapes:/x").unwrap_err().to_string();
        assert!(e.contains("synthetic"), "{e}");
        assert!(DataConfig::from_spec("  ").is_err());
        assert!(DataConfig::from_spec("cifar10:").is_err());
        let e = DataConfig::from_spec("mnist@val:/d")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("data.split") && e.contains("'val'"), "{e}");
        let e = DataConfig::from_spec("minst@test:/d")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown kind 'minst'"), "{e}");
    }

    #[test]
    fn validate_names_the_offending_key() {
        let bad = |f: fn(&mut DataConfig)| {
            let mut c = DataConfig::default();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        let e = bad(|c| c.kind = DataKind::Folder);
        assert!(
            e.starts_with("data.path: required for data.kind=folder"),
            "{e}"
        );
        assert!(bad(|c| c.resolution = 48).starts_with("data.resolution: 48"));
        assert!(bad(|c| c.resolution = 2).starts_with("data.resolution"));
        assert!(bad(|c| c.channels = Some(2)).starts_with("data.channels: 2"));
        assert!(bad(|c| c.limit = Some(0)).starts_with("data.limit"));
        assert!(bad(|c| c.size = 0).starts_with("data.size"));
        assert!(bad(|c| c.workers = 0).starts_with("data.workers"));
        let mut ok = DataConfig {
            resolution: 64,
            channels: Some(1),
            ..DataConfig::default()
        };
        assert!(ok.validate().is_ok());
        ok.split = Split::Test;
        assert!(ok.validate().is_ok());
    }
}
