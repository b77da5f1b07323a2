//! MNIST in its original IDX format (gzip-compressed or raw), held in memory as u8.
//!
//! The IDX header is big-endian: two zero bytes, a type code (0x08 = u8), the number of
//! dimensions, then one u32 per dimension. Magic numbers and sizes are checked up front so a
//! truncated download is reported by `open`, not as garbage images in the middle of training.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use image::{DynamicImage, GrayImage};
use rand_chacha::ChaCha8Rng;

use crate::transform::{check_index, Transform};
use crate::{DataError, Dataset};

/// Magic of an IDX file of u8 images (3 dimensions).
const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic of an IDX file of u8 labels (1 dimension).
const LABELS_MAGIC: u32 = 0x0000_0801;

/// A parsed IDX tensor of u8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions from the header.
    pub dims: Vec<usize>,
    /// Row-major payload (`dims.iter().product()` bytes).
    pub data: Vec<u8>,
}

/// Reads an IDX file, transparently gunzipping it (detected by the gzip magic, not the name).
pub fn read_idx(path: &Path) -> Result<IdxArray, DataError> {
    let raw = fs::read(path).map_err(|e| DataError::io(path, e))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| DataError::format(path, format!("corrupt gzip stream: {e}")))?;
        out
    } else {
        raw
    };
    parse_idx(path, &bytes)
}

/// Parses IDX bytes; `path` is only used in error messages.
pub fn parse_idx(path: &Path, bytes: &[u8]) -> Result<IdxArray, DataError> {
    if bytes.len() < 4 {
        return Err(DataError::format(
            path,
            format!("truncated IDX file: {} bytes, no header", bytes.len()),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(DataError::format(
            path,
            format!(
                "not an IDX file (magic {:02x}{:02x}{:02x}{:02x})",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(DataError::format(
            path,
            format!("IDX element type 0x{:02x} is not u8 (0x08)", bytes[2]),
        ));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(DataError::format(
            path,
            format!(
                "truncated IDX file: {} bytes, header needs {header}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let want = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| DataError::format(path, format!("IDX dimensions {dims:?} overflow")))?;
    let have = bytes.len() - header;
    if have < want {
        return Err(DataError::format(
            path,
            format!(
                "truncated IDX file: dimensions {} need {want} data bytes but only {have} are present",
                dims_str(&dims)
            ),
        ));
    }
    if have > want {
        return Err(DataError::format(
            path,
            format!(
                "IDX file has {} trailing bytes after the {} data",
                have - want,
                dims_str(&dims)
            ),
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

fn dims_str(dims: &[usize]) -> String {
    dims.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("x")
}

fn magic_of(arr: &IdxArray) -> u32 {
    0x0800 | arr.dims.len() as u32
}

/// MNIST (or any IDX u8 image set with optional u8 labels) in memory.
pub struct Mnist {
    images: Vec<u8>,
    labels: Option<Vec<u8>>,
    /// Height and width of the stored images (28x28 for MNIST).
    hw: (usize, usize),
    len: usize,
    /// Number of images in the files before `limit`.
    total: usize,
    source: PathBuf,
    split: String,
    transform: Transform,
}

impl Mnist {
    /// Opens `path` (a directory holding the split's files, or the images file itself).
    pub(crate) fn open(
        path: &Path,
        split: &str,
        limit: Option<usize>,
        transform: Transform,
    ) -> Result<Mnist, DataError> {
        let (images_path, labels_path) = locate(path, split)?;
        let images = read_idx(&images_path)?;
        if magic_of(&images) != IMAGES_MAGIC {
            return Err(DataError::format(
                &images_path,
                format!(
                    "expected an IDX image file (3 dimensions, magic 0x00000803), found {} dimension(s)",
                    images.dims.len()
                ),
            ));
        }
        let (n, h, w) = (images.dims[0], images.dims[1], images.dims[2]);
        if n == 0 || h == 0 || w == 0 {
            return Err(DataError::format(
                &images_path,
                format!(
                    "IDX image file holds no images ({})",
                    dims_str(&images.dims)
                ),
            ));
        }
        let labels = match &labels_path {
            None => None,
            Some(lp) => {
                let arr = read_idx(lp)?;
                if magic_of(&arr) != LABELS_MAGIC {
                    return Err(DataError::format(
                        lp,
                        format!(
                            "expected an IDX label file (1 dimension, magic 0x00000801), found {} dimension(s)",
                            arr.dims.len()
                        ),
                    ));
                }
                if arr.dims[0] != n {
                    return Err(DataError::format(
                        lp,
                        format!(
                            "{} labels for {n} images in {}",
                            arr.dims[0],
                            images_path.display()
                        ),
                    ));
                }
                if let Some(bad) = arr.data.iter().find(|&&l| l > 9) {
                    return Err(DataError::format(
                        lp,
                        format!("label {bad} is outside 0..=9"),
                    ));
                }
                Some(arr.data)
            }
        };
        let len = limit.map_or(n, |l| l.min(n));
        let mut images = images.data;
        images.truncate(len * h * w);
        let labels = labels.map(|mut l| {
            l.truncate(len);
            l
        });
        Ok(Mnist {
            images,
            labels,
            hw: (h, w),
            len,
            total: n,
            source: path.to_path_buf(),
            split: split.to_string(),
            transform,
        })
    }
}

/// Finds the images file (and the labels file, when present) of `split` under `path`.
fn locate(path: &Path, split: &str) -> Result<(PathBuf, Option<PathBuf>), DataError> {
    let meta = crate::error::existing(path)?;
    let images = if meta.is_dir() {
        find_images(path, split)?
    } else {
        path.to_path_buf()
    };
    let name = images
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The labels file mirrors the images name; either may be the gzipped one.
    let stem = name.strip_suffix(".gz").unwrap_or(&name);
    let labels_stem = stem.replace("images", "labels").replace("idx3", "idx1");
    let labels = if labels_stem == stem {
        None
    } else {
        [labels_stem.clone(), format!("{labels_stem}.gz")]
            .into_iter()
            .map(|n| images.with_file_name(n))
            .find(|p| p.is_file())
    };
    Ok((images, labels))
}

/// `t10k*images*idx3-ubyte[.gz]` for test, `train*images*idx3-ubyte[.gz]` for train; a raw
/// file wins over its own `.gz` twin, any other ambiguity is an error.
fn find_images(dir: &Path, split: &str) -> Result<PathBuf, DataError> {
    let prefix = if split == "test" { "t10k" } else { "train" };
    let entries = fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut found: Vec<String> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let stem = name.strip_suffix(".gz").unwrap_or(&name);
        let matches = stem.starts_with(prefix)
            && stem.ends_with("idx3-ubyte")
            && stem[prefix.len()..].contains("images");
        if matches && entry.path().is_file() {
            found.push(name);
        }
    }
    let mut stems: Vec<&str> = found
        .iter()
        .map(|n| n.strip_suffix(".gz").unwrap_or(n))
        .collect();
    stems.sort_unstable();
    stems.dedup();
    match stems.len() {
        0 => Err(DataError::config(
            "data.path",
            format!(
                "{} has no MNIST {split} images file ({prefix}*images*idx3-ubyte[.gz])",
                dir.display()
            ),
        )),
        1 => {
            let raw = dir.join(stems[0]);
            Ok(if raw.is_file() {
                raw
            } else {
                dir.join(format!("{}.gz", stems[0]))
            })
        }
        _ => Err(DataError::config(
            "data.path",
            format!(
                "{} has several MNIST {split} images files ({}); point data.path at one of them",
                dir.display(),
                stems.join(", ")
            ),
        )),
    }
}

impl Dataset for Mnist {
    fn len(&self) -> usize {
        self.len
    }

    fn sample_shape(&self) -> [usize; 3] {
        self.transform.shape()
    }

    fn num_classes(&self) -> Option<usize> {
        self.labels.as_ref().map(|_| 10)
    }

    fn label(&self, index: usize) -> Option<i64> {
        Some(i64::from(*self.labels.as_ref()?.get(index)?))
    }

    fn describe(&self) -> String {
        let [c, h, w] = self.sample_shape();
        let mut s = format!(
            "mnist {} ({} images, {c}x{h}x{w}) from {}",
            self.split,
            self.len,
            self.source.display()
        );
        if self.len < self.total {
            s.push_str(&format!(" (first {} of {})", self.len, self.total));
        }
        if self.labels.is_none() {
            s.push_str(" (no labels file)");
        }
        s
    }

    fn load_into(
        &self,
        index: usize,
        out: &mut [f32],
        rng: &mut ChaCha8Rng,
    ) -> Result<i64, DataError> {
        check_index(index, self.len, "mnist")?;
        let (h, w) = self.hw;
        let px = self.images[index * h * w..(index + 1) * h * w].to_vec();
        let img = GrayImage::from_raw(w as u32, h as u32, px)
            .ok_or_else(|| DataError::format(&self.source, "image buffer size mismatch"))?;
        self.transform
            .apply(DynamicImage::ImageLuma8(img), out, rng)?;
        Ok(self.labels.as_ref().map_or(0, |l| i64::from(l[index])))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;

    /// IDX bytes of `n` images of `h`x`w`, image i filled with value i*10.
    pub(crate) fn idx_images(n: usize, h: usize, w: usize) -> Vec<u8> {
        let mut b = vec![0, 0, 8, 3];
        for d in [n, h, w] {
            b.extend_from_slice(&(d as u32).to_be_bytes());
        }
        for i in 0..n {
            b.extend(std::iter::repeat_n((i * 10) as u8, h * w));
        }
        b
    }

    pub(crate) fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, 1];
        b.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        b.extend_from_slice(labels);
        b
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn t(res: u32) -> Transform {
        Transform {
            res,
            channels: 1,
            hflip: false,
            fit: crate::ResizeMode::CenterCrop,
        }
    }

    fn load(ds: &Mnist, i: usize) -> (Vec<f32>, i64) {
        crate::testutil::load_sample(ds, i, 0).unwrap()
    }

    #[test]
    fn reads_gzip_and_raw_files_from_a_directory_by_split() {
        let dir = TempDir::new("idx");
        dir.write("train-images-idx3-ubyte.gz", &gz(&idx_images(5, 28, 28)));
        dir.write(
            "train-labels-idx1-ubyte.gz",
            &gz(&idx_labels(&[3, 1, 4, 1, 5])),
        );
        dir.write("t10k-images-idx3-ubyte", &idx_images(2, 28, 28));
        dir.write("t10k-labels-idx1-ubyte", &idx_labels(&[9, 2]));

        let train = Mnist::open(dir.path(), "train", None, t(32)).unwrap();
        assert_eq!((train.len(), train.sample_shape()), (5, [1, 32, 32]));
        assert_eq!(train.num_classes(), Some(10));
        let (px, label) = load(&train, 2);
        assert_eq!(label, 4);
        // Constant image of value 20 stays constant through the 28 -> 32 resize.
        assert!(px.iter().all(|&v| (v - (20.0 / 127.5 - 1.0)).abs() < 1e-6));

        let test = Mnist::open(dir.path(), "test", None, t(32)).unwrap();
        assert_eq!(test.len(), 2);
        assert_eq!(load(&test, 0).1, 9);
        assert!(test
            .describe()
            .starts_with("mnist test (2 images, 1x32x32) from "));

        let limited = Mnist::open(dir.path(), "train", Some(3), t(16)).unwrap();
        assert_eq!(limited.len(), 3);
        assert!(limited.describe().contains("first 3 of 5"));
    }

    #[test]
    fn accepts_the_images_file_itself_and_tolerates_missing_labels() {
        let dir = TempDir::new("idx-file");
        let f = dir.write("train-17k-images-idx3-ubyte", &idx_images(3, 4, 4));
        let ds = Mnist::open(&f, "train", None, t(4)).unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.num_classes(), None);
        assert_eq!(load(&ds, 1).1, 0);
        assert!(ds.describe().contains("no labels"));
    }

    #[test]
    fn truncated_and_malformed_files_are_clear_errors() {
        let dir = TempDir::new("idx-bad");
        let mut bytes = idx_images(4, 28, 28);
        bytes.truncate(bytes.len() - 100);
        let f = dir.write("train-images-idx3-ubyte", &bytes);
        let e = Mnist::open(&f, "train", None, t(32))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("truncated IDX file") && e.contains("4x28x28"),
            "{e}"
        );
        assert!(e.starts_with(&f.display().to_string()), "{e}");

        let gzf = dir.write("x-images-idx3-ubyte.gz", &gz(&bytes));
        let e = read_idx(&gzf).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");

        let mut gz_cut = gz(&idx_images(4, 28, 28));
        gz_cut.truncate(gz_cut.len() / 2);
        let f2 = dir.write("cut-images-idx3-ubyte.gz", &gz_cut);
        assert!(read_idx(&f2).is_err());

        let e = parse_idx(Path::new("x"), b"PK\x03\x04")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an IDX file"), "{e}");
        let e = parse_idx(Path::new("x"), &[0, 0, 8])
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated"), "{e}");
        let e = parse_idx(Path::new("x"), &[0, 0, 0x0d, 1, 0, 0, 0, 0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not u8"), "{e}");

        // Labels file given where images are expected, and a label-count mismatch.
        let lab = dir.write("l-images-idx3-ubyte", &idx_labels(&[1, 2]));
        let e = Mnist::open(&lab, "train", None, t(32))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("expected an IDX image file"), "{e}");
        let sub = TempDir::new("idx-mismatch");
        sub.write("train-images-idx3-ubyte", &idx_images(3, 4, 4));
        sub.write("train-labels-idx1-ubyte", &idx_labels(&[1, 2]));
        let e = Mnist::open(sub.path(), "train", None, t(4))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("2 labels for 3 images"), "{e}");
    }

    #[test]
    fn missing_or_ambiguous_files_are_errors() {
        let dir = TempDir::new("idx-none");
        let e = Mnist::open(dir.path(), "train", None, t(32))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("data.path: ") && e.contains("train*images*idx3-ubyte"),
            "{e}"
        );
        let e = Mnist::open(&dir.path().join("nope"), "train", None, t(32))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");

        dir.write("train-a-images-idx3-ubyte", &idx_images(1, 4, 4));
        dir.write("train-b-images-idx3-ubyte", &idx_images(1, 4, 4));
        let e = Mnist::open(dir.path(), "train", None, t(4))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("several"), "{e}");

        // A raw file and its own .gz twin are not ambiguous: the raw one is read.
        let twin = TempDir::new("idx-twin");
        twin.write("train-images-idx3-ubyte", &idx_images(2, 4, 4));
        twin.write("train-images-idx3-ubyte.gz", b"not gzip at all");
        assert_eq!(
            Mnist::open(twin.path(), "train", None, t(4)).unwrap().len(),
            2
        );
    }

    #[test]
    fn real_mnist_if_present() {
        // The shared data sit beside the repository (`../shared`), wherever it is checked out.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/mnist");
        let dir = dir.as_path();
        if !dir.is_dir() {
            println!(
                "note: {} absent, skipping the real-MNIST test",
                dir.display()
            );
            return;
        }
        let ds = Mnist::open(dir, "train", None, t(32)).unwrap();
        assert_eq!(ds.len(), 17435);
        assert_eq!(ds.num_classes(), Some(10));
        let mut hist = [0usize; 10];
        for i in (0..ds.len()).step_by(97) {
            let (px, l) = load(&ds, i);
            assert!(px.iter().all(|v| (-1.0..=1.0).contains(v)));
            // Digits are white strokes on black: the corner is background, something is ink.
            assert_eq!(px[0], -1.0);
            assert!(px.iter().any(|&v| v > 0.5));
            hist[l as usize] += 1;
        }
        assert!(hist.iter().all(|&n| n > 0), "{hist:?}");
        let test = Mnist::open(dir, "test", None, t(32)).unwrap();
        assert_eq!(test.len(), 10_000);
        println!("{}", ds.describe());
    }
}
