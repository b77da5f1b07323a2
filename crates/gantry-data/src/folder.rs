//! A directory tree of PNG/JPEG images.
//!
//! Only the sorted file list is held in memory; images are decoded lazily inside
//! `load_into` (on the loader's worker threads), so large folders cost no RAM up front and a
//! corrupt file surfaces as an `Err` naming that file when it is first read.
//!
//! Labels (`data.labels = true`) come from a `dataset.json` at the root when there is one
//! (stylegan2-ada's format, as `gantry dataset` writes it), else from first-level sub-folders.

use std::fs;
use std::path::{Path, PathBuf};

use rand_chacha::ChaCha8Rng;

use crate::decode::{decode, has_image_extension, Notes};
use crate::labels::{self, LabelMode, Labels, DATASET_JSON};
use crate::transform::{check_index, Transform};
use crate::{DataError, Dataset};

/// Guard against symlink cycles while walking.
const MAX_DEPTH: usize = 32;

/// Images under a folder, optionally labelled by its `dataset.json` or first-level sub-folders.
pub struct Folder {
    root: PathBuf,
    files: Vec<PathBuf>,
    labels: Labels,
    total: usize,
    transform: Transform,
    notes: Notes,
}

/// The images under `root` in data-set order, their names relative to `root` (`/`-separated)
/// and their labels per `mode`. Errors name the keys `data.path` and `data.labels`.
pub(crate) fn index(
    root: &Path,
    mode: LabelMode,
) -> Result<(Vec<PathBuf>, Vec<String>, Labels), DataError> {
    let meta = crate::error::existing(root)?;
    if !meta.is_dir() {
        return Err(DataError::config(
            "data.path",
            format!(
                "{} is not a directory (data.kind=folder wants a folder of PNG/JPEG images)",
                root.display()
            ),
        ));
    }
    let json = root.join(DATASET_JSON);
    let has_json = json.is_file();
    let use_json = match mode {
        LabelMode::Json => true,
        LabelMode::JsonOrNone | LabelMode::JsonOrFolders => has_json,
        LabelMode::None | LabelMode::Folders => false,
    };
    let (files, labels) =
        if mode == LabelMode::Folders || (mode == LabelMode::JsonOrFolders && !use_json) {
            by_class_folder(root)?
        } else {
            let mut files = Vec::new();
            walk(root, 0, &mut files)?;
            let n = files.len();
            (files, Labels::none(n))
        };
    if files.is_empty() {
        return Err(DataError::config(
            "data.path",
            format!("{} contains no PNG/JPEG images", root.display()),
        ));
    }
    let names: Vec<String> = files.iter().map(|f| relative_name(root, f)).collect();
    if !use_json {
        return Ok((files, names, labels));
    }
    if !has_json {
        return Err(DataError::config(
            "data.labels",
            format!(
                "{} has no {DATASET_JSON} to read labels from",
                root.display()
            ),
        ));
    }
    let limit = labels::json_limit(files.len());
    let size = fs::metadata(&json)
        .map_err(|e| DataError::io(&json, e))?
        .len();
    if size > limit {
        return Err(DataError::format(
            &json,
            format!(
                "is {size} bytes, more than the {limit} a labels file for {} images may take",
                files.len()
            ),
        ));
    }
    let bytes = fs::read(&json).map_err(|e| DataError::io(&json, e))?;
    let Some(list) = labels::parse_dataset_json(&bytes, &json)? else {
        if mode == LabelMode::JsonOrNone {
            return Ok((files, names, labels));
        }
        return Err(DataError::config(
            "data.labels",
            format!(
                "{} says \"labels\": null (the data set is unlabelled); set data.labels=false",
                json.display()
            ),
        ));
    };
    let labels = labels::from_json(&names, list, &json, root)?;
    Ok((files, names, labels))
}

/// Images of each first-level sub-folder, labelled by the folder's place in name order.
fn by_class_folder(root: &Path) -> Result<(Vec<PathBuf>, Labels), DataError> {
    let mut files = Vec::new();
    let mut file_labels = Vec::new();
    let mut classes = Vec::new();
    for entry in list_dir(root)? {
        if entry.is_dir() {
            let mut class_files = Vec::new();
            walk(&entry, 1, &mut class_files)?;
            let name = entry
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if class_files.is_empty() {
                return Err(DataError::config(
                    "data.labels",
                    format!(
                        "class folder {} holds no PNG/JPEG images (remove it or set data.labels=false)",
                        entry.display()
                    ),
                ));
            }
            let label = classes.len() as u32;
            file_labels.extend(std::iter::repeat_n(label, class_files.len()));
            files.extend(class_files);
            classes.push(name);
        } else if is_image(&entry) {
            return Err(DataError::config(
                "data.labels",
                format!(
                    "{} is not inside a class sub-folder (with data.labels=true every image must be)",
                    entry.display()
                ),
            ));
        }
    }
    let labels = Labels {
        per_image: file_labels,
        num_classes: Some(classes.len()),
        class_names: Some(classes),
        from: Some("sub-folders"),
    };
    Ok((files, labels))
}

/// `file` relative to `root`, `/`-separated (how `dataset.json` names images).
pub(crate) fn relative_name(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap_or(file);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

impl Folder {
    /// Indexes `root`; with `labels`, from its `dataset.json` if present, else each first-level
    /// sub-folder is a class (sorted by name).
    pub(crate) fn open(
        root: &Path,
        labels: bool,
        limit: Option<usize>,
        transform: Transform,
    ) -> Result<Folder, DataError> {
        let mode = if labels {
            LabelMode::JsonOrFolders
        } else {
            LabelMode::None
        };
        let (mut files, _, mut labels) = index(root, mode)?;
        let total = files.len();
        if let Some(l) = limit {
            files.truncate(l);
            labels.truncate(l);
        }
        Ok(Folder {
            root: root.to_path_buf(),
            files,
            labels,
            total,
            transform,
            notes: Notes::default(),
        })
    }

    /// The class names, in label order, when labelled by sub-folders.
    pub fn classes(&self) -> Option<&[String]> {
        self.labels.class_names.as_deref()
    }

    /// The image files, in index order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

/// The images under `root` in the order an unlabelled folder data set indexes them (sorted,
/// sub-folders walked), for tools that write one output per input file.
pub fn image_files(root: &Path) -> Result<Vec<PathBuf>, DataError> {
    let meta = crate::error::existing(root)?;
    if !meta.is_dir() {
        return Err(DataError::config(
            "--in",
            format!("{} is not a directory", root.display()),
        ));
    }
    let mut files = Vec::new();
    walk(root, 0, &mut files)?;
    Ok(files)
}

/// Files under `root` (hidden ones and `dataset.json` aside) that are not PNG/JPEG: how many,
/// and the first, for a note that they were skipped.
pub(crate) fn other_files(root: &Path) -> (usize, Option<PathBuf>) {
    fn go(dir: &Path, depth: usize, n: &mut usize, first: &mut Option<PathBuf>) {
        let Ok(entries) = list_dir(dir) else { return };
        for p in entries {
            if p.is_dir() {
                if depth < MAX_DEPTH {
                    go(&p, depth + 1, n, first);
                }
            } else {
                let labels_file = depth == 0 && p.ends_with(DATASET_JSON);
                if is_image(&p) || labels_file {
                    continue;
                }
                *n += 1;
                first.get_or_insert(p);
            }
        }
    }
    let (mut n, mut first) = (0, None);
    go(root, 0, &mut n, &mut first);
    (n, first)
}

/// Entries of `dir`, sorted, without hidden ones (dot files such as macOS `._x.jpg` are not images).
fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        if !entry.file_name().to_string_lossy().starts_with('.') {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

fn is_image(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| has_image_extension(&n.to_string_lossy()))
        && p.is_file()
}

/// Appends every image under `dir` in sorted, depth-first order.
fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    if depth > MAX_DEPTH {
        return Err(DataError::config(
            "data.path",
            format!(
                "{} is nested more than {MAX_DEPTH} folders deep (a symlink loop?)",
                dir.display()
            ),
        ));
    }
    for p in list_dir(dir)? {
        // A link to nothing would hide its images (or a whole sub-folder) without a word.
        if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink())
            && fs::metadata(&p).is_err()
        {
            return Err(DataError::config(
                "data.path",
                format!(
                    "{} is a broken symbolic link (its target is missing); remove or fix it",
                    p.display()
                ),
            ));
        }
        if p.is_dir() {
            walk(&p, depth + 1, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

impl Dataset for Folder {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn sample_shape(&self) -> [usize; 3] {
        self.transform.shape()
    }

    fn num_classes(&self) -> Option<usize> {
        self.labels.num_classes
    }

    fn label(&self, index: usize) -> Option<i64> {
        self.labels.per_image.get(index).map(|&l| i64::from(l))
    }

    fn take_notes(&self) -> Vec<String> {
        self.notes.take()
    }

    fn describe(&self) -> String {
        self.labels.describe(
            "folder",
            self.sample_shape(),
            self.len(),
            self.total,
            &self.root,
        )
    }

    fn load_into(
        &self,
        index: usize,
        out: &mut [f32],
        rng: &mut ChaCha8Rng,
    ) -> Result<i64, DataError> {
        check_index(index, self.len(), "the folder dataset")?;
        let path = &self.files[index];
        let bytes = fs::read(path).map_err(|e| DataError::io(path, e))?;
        let img = decode(&bytes, path)?;
        self.notes.check_square(&img, path, &self.transform);
        self.transform.apply(img, out, rng)?;
        Ok(i64::from(self.labels.per_image[index]))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use image::{ImageFormat, Rgb, RgbImage};
    use std::io::Cursor;

    /// A `w`x`h` image of one colour, encoded as `format`.
    pub(crate) fn encoded(w: u32, h: u32, rgb: [u8; 3], format: ImageFormat) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        RgbImage::from_pixel(w, h, Rgb(rgb))
            .write_to(&mut buf, format)
            .unwrap();
        buf.into_inner()
    }

    fn t(res: u32, channels: usize) -> Transform {
        Transform {
            res,
            channels,
            hflip: false,
            fit: crate::ResizeMode::CenterCrop,
        }
    }

    fn load(ds: &Folder, i: usize) -> Result<(Vec<f32>, i64), DataError> {
        crate::testutil::load_sample(ds, i, 0)
    }

    #[test]
    fn walks_recursively_in_sorted_order_and_resizes() {
        let dir = TempDir::new("folder");
        dir.write("b/z.png", &encoded(20, 10, [255, 0, 0], ImageFormat::Png));
        dir.write("a.PNG", &encoded(8, 8, [0, 255, 0], ImageFormat::Png));
        dir.write(
            "b/c/y.jpg",
            &encoded(16, 16, [0, 0, 255], ImageFormat::Jpeg),
        );
        dir.write("notes.txt", b"not an image");
        dir.write(".hidden.png", b"garbage");
        let ds = Folder::open(dir.path(), false, None, t(8, 3)).unwrap();
        assert_eq!(ds.len(), 3);
        let names: Vec<_> = ds
            .files()
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                Path::new("a.PNG"),
                Path::new("b/c/y.jpg"),
                Path::new("b/z.png")
            ]
        );
        assert_eq!(ds.num_classes(), None);
        assert_eq!(ds.sample_shape(), [3, 8, 8]);

        let (green, label) = load(&ds, 0).unwrap();
        assert_eq!(label, 0);
        assert!(green[..64].iter().all(|&v| v == -1.0) && green[64..128].iter().all(|&v| v == 1.0));
        let (blue, _) = load(&ds, 1).unwrap(); // JPEG: lossy, so compare loosely
        assert!(blue[128..].iter().all(|&v| v > 0.9) && blue[..64].iter().all(|&v| v < -0.9));
        let (red, _) = load(&ds, 2).unwrap(); // 20x10 -> 16x8 -> centre 8x8
        assert!(red[..64].iter().all(|&v| v == 1.0));
        assert!(ds.describe().starts_with("folder (3 images, 3x8x8) from "));

        let grey = Folder::open(dir.path(), false, Some(1), t(4, 1)).unwrap();
        assert_eq!((grey.len(), grey.sample_shape()), (1, [1, 4, 4]));
        assert!(grey.describe().contains("first 1 of 3"));
    }

    #[test]
    fn a_cut_jpeg_and_a_broken_link_are_named() {
        let dir = TempDir::new("folder-cut");
        let mut buf = Cursor::new(Vec::new());
        RgbImage::from_fn(128, 128, |x, y| {
            Rgb([(x * 2) as u8, (y * 2) as u8, ((x * y) % 251) as u8])
        })
        .write_to(&mut buf, ImageFormat::Jpeg)
        .unwrap();
        let jpeg = buf.into_inner();
        let cut = &jpeg[..jpeg.len() / 3];
        // What the check is for: the decoder itself takes the cut file.
        assert!(image::load_from_memory(cut).is_ok());
        dir.write("whole.jpg", &jpeg);
        dir.write("cut.jpg", cut);
        let ds = Folder::open(dir.path(), false, None, t(8, 3)).unwrap();
        let e = load(&ds, 0).unwrap_err().to_string();
        assert!(
            e.contains("cut.jpg: cannot decode image: truncated JPEG"),
            "{e}"
        );
        load(&ds, 1).unwrap();
        assert!(crate::decode::jpeg_complete(&jpeg));
        std::os::unix::fs::symlink(dir.path().join("gone.png"), dir.path().join("link.png"))
            .unwrap();
        let e = Folder::open(dir.path(), false, None, t(8, 3))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("data.path: ") && e.contains("link.png is a broken symbolic link"),
            "{e}"
        );
    }

    #[test]
    fn class_sub_folders_become_sorted_labels() {
        let dir = TempDir::new("folder-labels");
        let png = encoded(4, 4, [9, 9, 9], ImageFormat::Png);
        dir.write("dogs/1.png", &png);
        dir.write("cats/1.png", &png);
        dir.write("cats/deep/2.png", &png);
        dir.write("README", b"ignored");
        let ds = Folder::open(dir.path(), true, None, t(4, 3)).unwrap();
        assert_eq!(ds.num_classes(), Some(2));
        assert_eq!(ds.classes().unwrap(), ["cats", "dogs"]);
        let labels: Vec<i64> = (0..3).map(|i| load(&ds, i).unwrap().1).collect();
        assert_eq!(labels, [0, 0, 1]);
        assert!(ds.describe().contains("2 classes"));

        dir.write("stray.png", &png);
        let e = Folder::open(dir.path(), true, None, t(4, 3))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("data.labels: ") && e.contains("stray.png"),
            "{e}"
        );
    }

    #[test]
    fn missing_empty_and_corrupt_inputs_are_errors() {
        let dir = TempDir::new("folder-bad");
        let e = Folder::open(&dir.path().join("cats"), false, None, t(4, 3))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("data.path: ") && e.ends_with("cats does not exist"),
            "{e}"
        );

        dir.write("sub/readme.txt", b"x");
        let e = Folder::open(dir.path(), false, None, t(4, 3))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("contains no PNG/JPEG images"), "{e}");

        let f = dir.write("sub/readme.txt", b"x");
        let e = Folder::open(&f, false, None, t(4, 3))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("is not a directory"), "{e}");

        let bad = dir.write("broken.png", b"\x89PNG\r\n\x1a\nthis is not really a png");
        let ds = Folder::open(dir.path(), false, None, t(4, 3)).unwrap();
        let e = load(&ds, 0).unwrap_err();
        assert!(matches!(e, DataError::Decode { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&bad.display().to_string()) && !msg.contains('\n'),
            "{msg}"
        );

        // A file that vanishes after indexing is an I/O error naming it.
        fs::remove_file(&bad).unwrap();
        let e = load(&ds, 0).unwrap_err().to_string();
        assert!(e.contains("broken.png"), "{e}");

        let empty_class = TempDir::new("folder-empty-class");
        empty_class.write("a/1.png", &encoded(4, 4, [0, 0, 0], ImageFormat::Png));
        fs::create_dir_all(empty_class.path().join("b")).unwrap();
        let e = Folder::open(empty_class.path(), true, None, t(4, 3))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("holds no PNG/JPEG images"), "{e}");
    }
}
