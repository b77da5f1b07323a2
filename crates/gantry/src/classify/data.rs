//! The data of a classification run: a labelled data set (any gantry data spec), optionally
//! restricted to some classes (relabelled 0..k in the order given), a validation part held out of
//! its training split (checkpoints are chosen on it, never on test data), and the sets OOD
//! detection scores against: data specs with their own class filters, and noise.

use crate::error::{Error, Result};
use gantry_data::{DataConfig, Dataset, Split};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// `[data]` of a classification run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// A gantry data spec: `mnist:DIR`, `cifar10:DIR`, `shapes`, or a folder with class
    /// sub-folders.
    pub spec: String,
    /// Keep only these classes, e.g. `"0-4"` or `"0,2,7"` (relabelled 0..k in this order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classes: Option<String>,
    /// Side length the images are brought to (a power of two >= 8).
    pub resolution: u32,
    /// Share of the training split held out for validation (checkpoint selection).
    pub val_fraction: f64,
    /// Random left-right mirroring of training images (unset: on, except for MNIST digits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hflip: Option<bool>,
    /// Zero padding of the random crop (0 = no crop).
    pub crop_padding: i64,
    /// Decoding threads.
    pub workers: usize,
    /// Use at most this many training images (before the validation split).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection {
            spec: "shapes".into(),
            classes: None,
            resolution: 32,
            val_fraction: 0.1,
            hflip: None,
            crop_padding: 4,
            workers: 2,
            limit: None,
        }
    }
}

impl DataSection {
    /// Whether training images are mirrored: `hflip`, or by default on except for MNIST digits.
    pub fn flips(&self) -> bool {
        self.hflip.unwrap_or_else(|| {
            DataConfig::from_spec(self.spec.rsplit_once('#').map_or(&self.spec, |s| s.0))
                .is_ok_and(|c| c.kind != gantry_data::DataKind::Mnist)
        })
    }

    /// The run's training split (classes, limit, resolution) and, drawn with `seed`, its
    /// (training, validation) parts; flipped only in the training part when `flips`.
    pub fn parts(&self, seed: u64, flips: bool) -> Result<(Arc<dyn Dataset>, Arc<dyn Dataset>)> {
        let split = |hflip| {
            open(
                &self.spec,
                Split::Train,
                self.resolution,
                self.classes.as_deref(),
                hflip,
                self.limit,
                self.workers,
            )
        };
        let plain = split(false)?;
        if !flips {
            return train_val(plain, self.val_fraction, seed);
        }
        // The validation part never flips: it comes from a second, unflipped view of the images.
        let (train, _) = train_val(split(true)?, self.val_fraction, seed)?;
        let (_, val) = train_val(plain, self.val_fraction, seed)?;
        Ok((train, val))
    }
}

/// Parses a class list: `0-4`, `0,2,7`, `0-2,5`.
pub fn parse_classes(text: &str, key: &str) -> Result<Vec<usize>> {
    let bad = || {
        Error::config(
            key,
            format!("'{text}' is not a class list (e.g. 0-4 or 0,2,7)"),
        )
    };
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (
                    a.trim().parse().map_err(|_| bad())?,
                    b.trim().parse().map_err(|_| bad())?,
                );
                if a > b || b - a > 100_000 {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = out.iter().find(|c| !seen.insert(**c)) {
        return Err(Error::config(key, format!("class {dup} is listed twice")));
    }
    Ok(out)
}

/// A data set restricted to some classes, relabelled 0..k.
struct ClassFilter {
    inner: Arc<dyn Dataset>,
    indices: Vec<usize>,
    /// Old label -> new label.
    map: Vec<i64>,
    classes: Vec<usize>,
}

impl Dataset for ClassFilter {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn sample_shape(&self) -> [usize; 3] {
        self.inner.sample_shape()
    }
    fn num_classes(&self) -> Option<usize> {
        Some(self.classes.len())
    }
    fn describe(&self) -> String {
        format!("classes {:?} of {}", self.classes, self.inner.describe())
    }
    fn take_notes(&self) -> Vec<String> {
        self.inner.take_notes()
    }
    fn label(&self, index: usize) -> Option<i64> {
        let l = self.inner.label(*self.indices.get(index)?)?;
        self.map.get(usize::try_from(l).ok()?).copied()
    }
    fn load_into(
        &self,
        index: usize,
        out: &mut [f32],
        rng: &mut rand_chacha::ChaCha8Rng,
    ) -> std::result::Result<i64, gantry_data::DataError> {
        let label = self.inner.load_into(self.indices[index], out, rng)?;
        Ok(self.map[label as usize])
    }
}

/// Opens `spec` (with an optional `#CLASSES` suffix, e.g. `mnist:DIR#5-9`) at `resolution`, with
/// labels. `filter` overrides the suffix.
pub fn open(
    spec: &str,
    split: Split,
    resolution: u32,
    filter: Option<&str>,
    hflip: bool,
    limit: Option<usize>,
    workers: usize,
) -> Result<Arc<dyn Dataset>> {
    let (spec, suffix) = match spec.rsplit_once('#') {
        Some((s, c)) => (s, Some(c)),
        None => (spec, None),
    };
    let mut cfg = DataConfig::from_spec(spec)?;
    cfg.resolution = resolution;
    cfg.labels = true;
    cfg.split = split;
    cfg.hflip = hflip;
    cfg.limit = limit;
    cfg.workers = workers.max(1);
    cfg.validate()?;
    let ds = gantry_data::open(&cfg)?;
    let Some(classes_text) = filter.or(suffix) else {
        return Ok(ds);
    };
    let n = ds.num_classes().ok_or_else(|| {
        Error::config(
            "data.classes",
            format!("{} has no labels to filter by", ds.describe()),
        )
    })?;
    let classes = parse_classes(classes_text, "data.classes")?;
    if let Some(c) = classes.iter().find(|c| **c >= n) {
        return Err(Error::config(
            "data.classes",
            format!(
                "class {c} does not exist: {} has classes 0-{}",
                ds.describe(),
                n - 1
            ),
        ));
    }
    let mut map = vec![-1i64; n];
    for (new, old) in classes.iter().enumerate() {
        map[*old] = new as i64;
    }
    // Labels only: one pass over the set (MNIST's 60k 32x32 images take well under a second).
    let mut buf = vec![0f32; ds.sample_shape().iter().product()];
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    let mut indices = Vec::new();
    for i in 0..ds.len() {
        let label = match ds.label(i) {
            Some(l) => l,
            None => ds.load_into(i, &mut buf, &mut rng)?,
        };
        if map.get(label as usize).is_some_and(|m| *m >= 0) {
            indices.push(i);
        }
    }
    if indices.is_empty() {
        return Err(Error::config(
            "data.classes",
            format!("no image of {} has a class in {classes:?}", ds.describe()),
        ));
    }
    Ok(Arc::new(ClassFilter {
        inner: ds,
        indices,
        map,
        classes,
    }))
}

/// The training and validation parts of the training split (disjoint; drawn with `seed`).
pub fn train_val(
    all: Arc<dyn Dataset>,
    val_fraction: f64,
    seed: u64,
) -> Result<(Arc<dyn Dataset>, Arc<dyn Dataset>)> {
    if all.len() < 2 {
        return Err(Error::config(
            "data.val_fraction",
            format!("{} has too few images to hold any out", all.describe()),
        ));
    }
    let order = gantry_data::epoch_order(all.len(), seed, u64::MAX);
    let held = ((all.len() as f64 * val_fraction).ceil() as usize).clamp(1, all.len() - 1);
    let (val, train) = order.split_at(held);
    Ok((
        Arc::new(gantry_data::Subset::new(
            all.clone(),
            train.to_vec(),
            "training part",
        )),
        Arc::new(gantry_data::Subset::new(
            all,
            val.to_vec(),
            "validation part",
        )),
    ))
}
