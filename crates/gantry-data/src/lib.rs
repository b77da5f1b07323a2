//! Data for gantry: datasets (procedural shapes, 2-D Gaussian mixtures, image folders and zip
//! archives, MNIST, CIFAR-10/100), a deterministic prefetching loader, PNG writing of sample
//! grids, and [`dataset_tool`], which converts images into stylegan2-ada's zip/folder layout.
//!
//! This crate deliberately does not depend on libtorch: batches are plain `Vec<f32>` in NCHW
//! order that the training crate turns into tensors, so the data path compiles fast and can be
//! tested on its own.

// No `unwrap()` outside tests: user input reaches most paths, and a panic is never the answer to
// it (`expect` remains for invariants the code itself established, with the invariant as message).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod archive;
mod cifar;
mod config;
pub mod dataset_tool;
mod decode;
mod error;
mod folder;
pub mod gmm;
mod idx;
pub mod image_io;
mod labels;
mod loader;
mod resample;
mod rng;
mod shapes;
mod transform;
mod zipped;

#[cfg(test)]
mod testutil;

use std::sync::Arc;

pub use archive::{EXPANSION_SLACK, MAX_ENTRIES, MAX_ENTRY_BYTES, MAX_EXPANSION};
pub use cifar::{parse_records, Cifar, Records, Variant as CifarVariant};
pub use config::{DataConfig, DataKind, ResizeMode, Split};
pub use error::DataError;
pub use folder::{image_files, Folder};
pub use gmm::{GmmData, GmmQuality, Mixture};
pub use idx::{parse_idx, read_idx, IdxArray, Mnist};
pub use labels::{parse_dataset_json, MAX_CLASSES};
pub use loader::{epoch_order, Batch, Loader, Position, Shard};
pub use shapes::{Shapes, CLASSES as SHAPE_CLASSES};
pub use zipped::Zip;

/// A random-access source of samples, shared by the loader's worker threads.
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples (never true for datasets built by [`open`]).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `[C, H, W]` of one sample.
    fn sample_shape(&self) -> [usize; 3];

    /// `Some(n)` when labels are meaningful (class indices `0..n`).
    fn num_classes(&self) -> Option<usize>;

    /// One line for logs, e.g. "mnist train (17435 images, 1x32x32) from ../shared/data/mnist".
    fn describe(&self) -> String;

    /// Writes sample `index` into `out` (len C*H*W, images scaled to [-1, 1]); augmentation
    /// (hflip) is drawn from `rng`. Returns the label (0 when unlabelled).
    fn load_into(
        &self,
        index: usize,
        out: &mut [f32],
        rng: &mut rand_chacha::ChaCha8Rng,
    ) -> Result<i64, DataError>;

    /// The label of sample `index` without decoding the sample, when the data set can tell
    /// cheaply (`None`: load it to find out). Class filters read every label this way.
    fn label(&self, _index: usize) -> Option<i64> {
        None
    }

    /// Warnings found while loading that the caller should print, each returned by exactly one
    /// call (so call it now and then, e.g. after each logged step). Folders and zips note the
    /// first image that is not square and what `data.transform` does with it.
    fn take_notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A data set shared by the loader's threads and its users.
pub type Shared = Arc<dyn Dataset>;

/// Some samples of another data set, in a given order (a held-out validation part).
pub struct Subset {
    inner: Arc<dyn Dataset>,
    indices: Vec<usize>,
    what: String,
}

impl Subset {
    /// `indices` index `inner`; `what` says which part this is, for `describe`.
    pub fn new(inner: Arc<dyn Dataset>, indices: Vec<usize>, what: &str) -> Subset {
        Subset {
            inner,
            indices,
            what: what.to_string(),
        }
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn sample_shape(&self) -> [usize; 3] {
        self.inner.sample_shape()
    }
    fn num_classes(&self) -> Option<usize> {
        self.inner.num_classes()
    }
    fn describe(&self) -> String {
        format!("{} of {}", self.what, self.inner.describe())
    }
    fn label(&self, index: usize) -> Option<i64> {
        self.inner.label(*self.indices.get(index)?)
    }
    fn take_notes(&self) -> Vec<String> {
        self.inner.take_notes()
    }
    fn load_into(
        &self,
        index: usize,
        out: &mut [f32],
        rng: &mut rand_chacha::ChaCha8Rng,
    ) -> Result<i64, DataError> {
        self.inner.load_into(self.indices[index], out, rng)
    }
}

/// Validates `cfg` and opens the dataset it describes. File-backed sources index (folder) or
/// read (MNIST, CIFAR) their files here, so a wrong path fails before training starts.
pub fn open(cfg: &DataConfig) -> Result<Arc<dyn Dataset>, DataError> {
    cfg.validate()?;
    let transform = |native: usize| transform::Transform {
        res: cfg.resolution,
        channels: cfg.channels_or(native),
        hflip: cfg.hflip,
        fit: cfg.transform,
    };
    let synthetic_len = cfg.limit.map_or(cfg.size, |l| l.min(cfg.size));
    let path = || {
        cfg.path.as_deref().ok_or_else(|| {
            DataError::config("data.path", format!("required for data.kind={}", cfg.kind))
        })
    };
    let ds: Arc<dyn Dataset> = match cfg.kind {
        DataKind::Shapes => Arc::new(Shapes::new(synthetic_len, cfg.split.as_str(), transform(3))),
        DataKind::Gmm8 => Arc::new(GmmData::new(
            "gmm-8",
            Mixture::ring8(),
            synthetic_len,
            cfg.split.as_str(),
        )),
        DataKind::Gmm25 => Arc::new(GmmData::new(
            "gmm-25",
            Mixture::grid25(),
            synthetic_len,
            cfg.split.as_str(),
        )),
        // A `.zip` file given as a folder is read as the zip it is (`gantry train --data x.zip`).
        DataKind::Folder if !is_zip_file(path()?) => {
            Arc::new(Folder::open(path()?, cfg.labels, cfg.limit, transform(3))?)
        }
        DataKind::Folder | DataKind::Zip => {
            Arc::new(Zip::open(path()?, cfg.labels, cfg.limit, transform(3))?)
        }
        DataKind::Mnist => Arc::new(Mnist::open(
            path()?,
            cfg.split.as_str(),
            cfg.limit,
            transform(1),
        )?),
        DataKind::Cifar10 => Arc::new(Cifar::open(
            CifarVariant::Cifar10,
            path()?,
            cfg.split.as_str(),
            cfg.limit,
            transform(3),
        )?),
        DataKind::Cifar100 => Arc::new(Cifar::open(
            CifarVariant::Cifar100,
            path()?,
            cfg.split.as_str(),
            cfg.limit,
            transform(3),
        )?),
    };
    Ok(ds)
}

/// The data set of `cfg` to train on, and the real images kept from training to watch D
/// overfit: with `data.holdout`, that many images (or that share) drawn with `seed` from the
/// whole data set, `data.limit` then applying to the rest; without it, the test split where
/// the data set has one (none for folders and zips).
pub fn open_with_holdout(
    cfg: &DataConfig,
    seed: u64,
) -> Result<(Shared, Option<Shared>), DataError> {
    if cfg.holdout == 0.0 {
        let held = if cfg.kind.has_test_split() && !cfg.kind.is_points() {
            let mut test = cfg.clone();
            test.split = Split::Test;
            test.limit = None;
            test.hflip = false;
            Some(open(&test)?)
        } else {
            None
        };
        return Ok((open(cfg)?, held));
    }
    let mut whole = cfg.clone();
    whole.limit = None;
    let all = open(&whole)?;
    let n = all.len();
    let held_n = if cfg.holdout >= 1.0 {
        cfg.holdout as usize
    } else {
        ((cfg.holdout * n as f64).ceil() as usize).max(1)
    };
    if held_n >= n {
        return Err(DataError::config(
            "data.holdout",
            format!(
                "{held_n} held-out images leave none of the {n} to train on ({})",
                all.describe()
            ),
        ));
    }
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = rng::keyed(seed, rng::domain::HOLDOUT, 0, 0);
    rand::seq::SliceRandom::shuffle(order.as_mut_slice(), &mut rng);
    let mut held: Vec<usize> = order[..held_n].to_vec();
    let mut train: Vec<usize> = order[held_n..].to_vec();
    held.sort_unstable();
    train.sort_unstable();
    if let Some(limit) = cfg.limit {
        train.truncate(limit);
    }
    let train_what = format!("{} images not held out", train.len());
    Ok((
        Arc::new(Subset::new(all.clone(), train, &train_what)),
        Some(Arc::new(Subset::new(
            all,
            held,
            &format!("{held_n} held-out images"),
        ))),
    ))
}

/// Whether `path` is a file named `*.zip` (any case).
fn is_zip_file(path: &std::path::Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
        && path.is_file()
}

/// Opens the dataset of `cfg` and starts a loader over it with `cfg.workers` / `cfg.prefetch`.
pub fn open_loader(
    cfg: &DataConfig,
    batch_size: usize,
    seed: u64,
    start: Position,
) -> Result<Loader, DataError> {
    Loader::new(
        open(cfg)?,
        batch_size,
        seed,
        start,
        cfg.workers,
        cfg.prefetch,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use image::ImageFormat;
    use std::path::PathBuf;

    fn batch_ok(b: &Batch, shape: [usize; 4], range: Option<f32>) {
        assert_eq!(b.shape, shape);
        assert_eq!(b.images.len(), shape.iter().product::<usize>());
        assert_eq!(b.labels.len(), shape[0]);
        if let Some(r) = range {
            assert!(b.images.iter().all(|v| (-r..=r).contains(v)));
        }
    }

    #[test]
    fn every_synthetic_kind_opens_and_loads_through_the_loader() {
        let cfg = DataConfig {
            size: 40,
            resolution: 16,
            hflip: true,
            ..DataConfig::default()
        };
        let mut l = open_loader(&cfg, 8, 1, Position::default()).unwrap();
        let b = l.next_batch().unwrap();
        batch_ok(&b, [8, 3, 16, 16], Some(1.0));
        assert!(b.labels.iter().all(|&x| (0..3).contains(&x)));

        for (spec, modes, radius) in [("gmm-8", 8, 2.2), ("gmm-25", 25, 6.0)] {
            let mut cfg = DataConfig::from_spec(spec).unwrap();
            cfg.size = 64;
            let ds = open(&cfg).unwrap();
            assert_eq!(
                (ds.len(), ds.sample_shape(), ds.num_classes()),
                (64, [2, 1, 1], Some(modes))
            );
            let mut l = Loader::new(ds, 16, 3, Position::default(), 2, 2).unwrap();
            let b = l.next_batch().unwrap();
            batch_ok(&b, [16, 2, 1, 1], Some(radius));
            assert!(b.labels.iter().all(|&x| (0..modes as i64).contains(&x)));
        }

        let grey = DataConfig {
            channels: Some(1),
            limit: Some(10),
            ..DataConfig::default()
        };
        let ds = open(&grey).unwrap();
        assert_eq!((ds.len(), ds.sample_shape()), (10, [1, 32, 32]));
    }

    #[test]
    fn file_kinds_open_through_the_config() {
        let dir = TempDir::new("lib-open");
        let png = crate::folder::tests::encoded(10, 10, [200, 100, 0], ImageFormat::Png);
        for i in 0..6 {
            dir.write(
                &format!("imgs/{}/{i}.png", if i % 2 == 0 { "a" } else { "b" }),
                &png,
            );
        }
        let mut cfg =
            DataConfig::from_spec(&dir.path().join("imgs").display().to_string()).unwrap();
        cfg.labels = true;
        cfg.resolution = 8;
        let mut l = open_loader(&cfg, 3, 0, Position::default()).unwrap();
        let b = l.next_batch().unwrap();
        batch_ok(&b, [3, 3, 8, 8], Some(1.0));
        assert_eq!(l.dataset().num_classes(), Some(2));

        dir.write(
            "mnist/train-images-idx3-ubyte",
            &crate::idx::tests::idx_images(4, 28, 28),
        );
        dir.write(
            "mnist/train-labels-idx1-ubyte",
            &crate::idx::tests::idx_labels(&[0, 1, 2, 3]),
        );
        let spec = format!("mnist:{}", dir.path().join("mnist").display());
        let mut cfg = DataConfig::from_spec(&spec).unwrap();
        let ds = open(&cfg).unwrap();
        assert_eq!((ds.len(), ds.sample_shape()), (4, [1, 32, 32]));
        assert!(ds
            .describe()
            .starts_with("mnist train (4 images, 1x32x32) from "));
        cfg.channels = Some(3);
        cfg.resolution = 64;
        assert_eq!(open(&cfg).unwrap().sample_shape(), [3, 64, 64]);

        let missing = DataConfig {
            kind: DataKind::Cifar10,
            path: Some(PathBuf::from("/definitely/not/here")),
            ..DataConfig::default()
        };
        let e = open(&missing).err().unwrap().to_string();
        assert_eq!(e, "data.path: /definitely/not/here does not exist");
        let no_path = DataConfig {
            kind: DataKind::Mnist,
            ..DataConfig::default()
        };
        assert!(open(&no_path)
            .err()
            .unwrap()
            .to_string()
            .starts_with("data.path: required"));
    }

    #[test]
    fn a_corrupt_folder_image_is_an_err_from_the_loader() {
        let dir = TempDir::new("lib-corrupt");
        let png = crate::folder::tests::encoded(4, 4, [1, 2, 3], ImageFormat::Png);
        for i in 0..4 {
            dir.write(&format!("{i}.png"), &png);
        }
        dir.write("2.png", b"\x89PNG\r\n\x1a\ntruncated");
        let cfg = DataConfig {
            kind: DataKind::Folder,
            path: Some(dir.path().to_path_buf()),
            resolution: 4,
            ..DataConfig::default()
        };
        let mut l = open_loader(&cfg, 4, 0, Position::default()).unwrap();
        let e = l.next_batch().unwrap_err().to_string();
        assert!(e.contains("2.png: cannot decode image"), "{e}");
    }
}
