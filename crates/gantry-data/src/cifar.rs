//! CIFAR-10 and CIFAR-100, binary versions, held in memory.
//!
//! A CIFAR-10 record is 1 label byte + 3072 pixel bytes (1024 R, then G, then B, each plane
//! row-major 32x32); CIFAR-100 records carry a coarse and a fine label byte before the pixels,
//! and we use the fine (100-class) label.

use std::fs;
use std::path::{Path, PathBuf};

use image::{DynamicImage, RgbImage};
use rand_chacha::ChaCha8Rng;

use crate::transform::{check_index, Transform};
use crate::{DataError, Dataset};

/// Pixels per record: 3 planes of 32x32.
const PIXELS: usize = 3 * 32 * 32;

/// Which of the two CIFAR variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// 10 classes, one label byte per record.
    Cifar10,
    /// 100 fine classes, coarse + fine label bytes per record.
    Cifar100,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Cifar10 => "cifar10",
            Variant::Cifar100 => "cifar100",
        }
    }

    fn label_bytes(self) -> usize {
        match self {
            Variant::Cifar10 => 1,
            Variant::Cifar100 => 2,
        }
    }

    /// Bytes per record.
    pub fn record_len(self) -> usize {
        self.label_bytes() + PIXELS
    }

    fn classes(self) -> usize {
        match self {
            Variant::Cifar10 => 10,
            Variant::Cifar100 => 100,
        }
    }

    /// The split's files, in the order the dataset concatenates them.
    fn files(self, split: &str) -> Vec<String> {
        match (self, split) {
            (Variant::Cifar10, "test") => vec!["test_batch.bin".into()],
            (Variant::Cifar10, _) => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
            (Variant::Cifar100, "test") => vec!["test.bin".into()],
            (Variant::Cifar100, _) => vec!["train.bin".into()],
        }
    }

    /// The folder the official archive extracts to, looked into when `path` is its parent.
    fn archive_dir(self) -> &'static str {
        match self {
            Variant::Cifar10 => "cifar-10-batches-bin",
            Variant::Cifar100 => "cifar-100-binary",
        }
    }
}

/// Labels and planar pixels of a run of records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Records {
    /// One label per record (the fine label for CIFAR-100).
    pub labels: Vec<u8>,
    /// `PIXELS` bytes per record, planar RGB.
    pub pixels: Vec<u8>,
}

/// Parses the bytes of one CIFAR binary file; `path` is only used in error messages.
pub fn parse_records(variant: Variant, path: &Path, bytes: &[u8]) -> Result<Records, DataError> {
    let rec = variant.record_len();
    if bytes.is_empty() || !bytes.len().is_multiple_of(rec) {
        return Err(DataError::format(
            path,
            format!(
                "size {} is not a positive multiple of the {rec}-byte {} record (truncated, or not the binary version?)",
                bytes.len(),
                variant.name()
            ),
        ));
    }
    let n = bytes.len() / rec;
    let mut out = Records {
        labels: Vec::with_capacity(n),
        pixels: Vec::with_capacity(n * PIXELS),
    };
    let lb = variant.label_bytes();
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        let label = r[lb - 1];
        if usize::from(label) >= variant.classes() {
            return Err(DataError::format(
                path,
                format!(
                    "record {i} has label {label}, outside the {} classes of {}",
                    variant.classes(),
                    variant.name()
                ),
            ));
        }
        out.labels.push(label);
        out.pixels.extend_from_slice(&r[lb..]);
    }
    Ok(out)
}

/// A CIFAR split in memory.
pub struct Cifar {
    variant: Variant,
    records: Records,
    source: PathBuf,
    split: String,
    /// Records available before `limit` (only known exactly when all files were read).
    total: Option<usize>,
    transform: Transform,
}

impl Cifar {
    /// Reads the split's files under `path` (or the single `.bin` file `path`).
    pub(crate) fn open(
        variant: Variant,
        path: &Path,
        split: &str,
        limit: Option<usize>,
        transform: Transform,
    ) -> Result<Cifar, DataError> {
        let meta = crate::error::existing(path)?;
        let files: Vec<PathBuf> = if meta.is_dir() {
            let names = variant.files(split);
            let nested = path.join(variant.archive_dir());
            let base = if !path.join(&names[0]).exists() && nested.is_dir() {
                nested
            } else {
                path.to_path_buf()
            };
            names.iter().map(|n| base.join(n)).collect()
        } else {
            vec![path.to_path_buf()]
        };
        for f in &files {
            if !f.is_file() {
                return Err(DataError::config(
                    "data.path",
                    format!(
                        "{} is missing (the {split} split of the {} binary version needs {})",
                        f.display(),
                        variant.name(),
                        variant.files(split).join(", ")
                    ),
                ));
            }
        }
        let mut records = Records::default();
        let mut complete = true;
        for (i, f) in files.iter().enumerate() {
            let bytes = fs::read(f).map_err(|e| DataError::io(f, e))?;
            let r = parse_records(variant, f, &bytes)?;
            records.labels.extend(r.labels);
            records.pixels.extend(r.pixels);
            if limit.is_some_and(|l| records.labels.len() >= l) {
                complete = i + 1 == files.len();
                break;
            }
        }
        let total = records.labels.len();
        if let Some(l) = limit {
            records.labels.truncate(l);
            records.pixels.truncate(l * PIXELS);
        }
        Ok(Cifar {
            variant,
            records,
            source: path.to_path_buf(),
            split: split.to_string(),
            total: complete.then_some(total),
            transform,
        })
    }
}

impl Dataset for Cifar {
    fn len(&self) -> usize {
        self.records.labels.len()
    }

    fn sample_shape(&self) -> [usize; 3] {
        self.transform.shape()
    }

    fn num_classes(&self) -> Option<usize> {
        Some(self.variant.classes())
    }

    fn label(&self, index: usize) -> Option<i64> {
        self.records.labels.get(index).map(|&l| i64::from(l))
    }

    fn describe(&self) -> String {
        let [c, h, w] = self.sample_shape();
        let mut s = format!(
            "{} {} ({} images, {c}x{h}x{w}, {} classes) from {}",
            self.variant.name(),
            self.split,
            self.len(),
            self.variant.classes(),
            self.source.display()
        );
        match self.total {
            Some(t) if t > self.len() => s.push_str(&format!(" (first {} of {t})", self.len())),
            None => s.push_str(&format!(" (first {})", self.len())),
            _ => {}
        }
        s
    }

    fn load_into(
        &self,
        index: usize,
        out: &mut [f32],
        rng: &mut ChaCha8Rng,
    ) -> Result<i64, DataError> {
        check_index(index, self.len(), self.variant.name())?;
        let planes = &self.records.pixels[index * PIXELS..(index + 1) * PIXELS];
        let (r, rest) = planes.split_at(1024);
        let (g, b) = rest.split_at(1024);
        let img = RgbImage::from_fn(32, 32, |x, y| {
            let i = (y * 32 + x) as usize;
            image::Rgb([r[i], g[i], b[i]])
        });
        self.transform
            .apply(DynamicImage::ImageRgb8(img), out, rng)?;
        Ok(i64::from(self.records.labels[index]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    /// One record whose R/G/B planes are constant `v`, `v+1`, `v+2`, with pixel (0, 0) of R = 255.
    fn record(variant: Variant, coarse: u8, fine: u8, v: u8) -> Vec<u8> {
        let mut r = match variant {
            Variant::Cifar10 => vec![fine],
            Variant::Cifar100 => vec![coarse, fine],
        };
        for c in 0..3u8 {
            r.extend(std::iter::repeat_n(v + c, 1024));
        }
        let lb = variant.label_bytes();
        r[lb] = 255;
        r
    }

    fn t(res: u32, channels: usize) -> Transform {
        Transform {
            res,
            channels,
            hflip: false,
            fit: crate::ResizeMode::CenterCrop,
        }
    }

    fn load(ds: &Cifar, i: usize) -> (Vec<f32>, i64) {
        crate::testutil::load_sample(ds, i, 0).unwrap()
    }

    #[test]
    fn cifar10_records_are_parsed_in_file_order_with_planar_pixels() {
        let dir = TempDir::new("cifar10");
        for b in 1..=5u8 {
            let mut bytes = record(Variant::Cifar10, 0, b, 10 * b);
            bytes.extend(record(Variant::Cifar10, 0, 9, 0));
            dir.write(&format!("data_batch_{b}.bin"), &bytes);
        }
        dir.write("test_batch.bin", &record(Variant::Cifar10, 0, 7, 100));

        let ds = Cifar::open(Variant::Cifar10, dir.path(), "train", None, t(32, 3)).unwrap();
        assert_eq!(
            (ds.len(), ds.sample_shape(), ds.num_classes()),
            (10, [3, 32, 32], Some(10))
        );
        let labels: Vec<i64> = (0..10).map(|i| load(&ds, i).1).collect();
        assert_eq!(labels, [1, 9, 2, 9, 3, 9, 4, 9, 5, 9]);
        let (px, _) = load(&ds, 2); // batch 2, v = 20
        assert_eq!(px[0], 1.0); // R(0,0) = 255
        assert_eq!(px[1], 20.0 / 127.5 - 1.0);
        assert_eq!(px[1024], 21.0 / 127.5 - 1.0);
        assert_eq!(px[2048 + 5], 22.0 / 127.5 - 1.0);

        let test = Cifar::open(Variant::Cifar10, dir.path(), "test", None, t(16, 1)).unwrap();
        assert_eq!((test.len(), test.sample_shape()), (1, [1, 16, 16]));
        assert_eq!(load(&test, 0).1, 7);
        assert!(test
            .describe()
            .starts_with("cifar10 test (1 images, 1x16x16, 10 classes) from "));

        let limited =
            Cifar::open(Variant::Cifar10, dir.path(), "train", Some(3), t(32, 3)).unwrap();
        assert_eq!(limited.len(), 3);
        assert!(
            limited.describe().contains("(first 3)"),
            "{}",
            limited.describe()
        );
    }

    #[test]
    fn cifar100_uses_the_fine_label_and_finds_the_archive_folder() {
        let dir = TempDir::new("cifar100");
        let mut bytes = record(Variant::Cifar100, 3, 42, 5);
        bytes.extend(record(Variant::Cifar100, 19, 99, 6));
        dir.write("cifar-100-binary/train.bin", &bytes);
        let ds = Cifar::open(Variant::Cifar100, dir.path(), "train", None, t(32, 3)).unwrap();
        assert_eq!((ds.len(), ds.num_classes()), (2, Some(100)));
        assert_eq!(load(&ds, 0).1, 42);
        let (px, l) = load(&ds, 1);
        assert_eq!(l, 99);
        assert_eq!(px[1], 6.0 / 127.5 - 1.0);
    }

    #[test]
    fn malformed_files_are_clear_errors() {
        let dir = TempDir::new("cifar-bad");
        let mut bytes = record(Variant::Cifar10, 0, 1, 0);
        bytes.pop();
        let f = dir.write("test_batch.bin", &bytes);
        let e = Cifar::open(Variant::Cifar10, dir.path(), "test", None, t(32, 3))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with(&f.display().to_string()) && e.contains("3073-byte"),
            "{e}"
        );

        let e = Cifar::open(Variant::Cifar10, dir.path(), "train", None, t(32, 3))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("data.path: ") && e.contains("data_batch_1.bin is missing"),
            "{e}"
        );

        let e = parse_records(
            Variant::Cifar10,
            Path::new("x.bin"),
            &record(Variant::Cifar10, 0, 10, 0),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("label 10"), "{e}");

        let e = Cifar::open(
            Variant::Cifar10,
            &dir.path().join("nope"),
            "train",
            None,
            t(32, 3),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("does not exist"), "{e}");
    }

    #[test]
    fn a_single_bin_file_can_be_given() {
        let dir = TempDir::new("cifar-file");
        let f = dir.write("some.bin", &record(Variant::Cifar10, 0, 4, 1));
        let ds = Cifar::open(Variant::Cifar10, &f, "train", None, t(32, 3)).unwrap();
        assert_eq!(load(&ds, 0).1, 4);
    }
}
