//! A zip archive of PNG/JPEG images (`data.kind = zip`, or kind `folder` with a path to a
//! `.zip` file), such as stylegan2-ada's `dataset_tool.py` and `gantry dataset` write.
//!
//! The central directory is read once at open (see `archive` for the limits that keep a hostile
//! archive bounded); each sample reads its one entry with a positioned read, so the loader's
//! workers share the open file and nothing is unpacked to disk. Images are the entries with a
//! PNG/JPEG extension outside hidden folders, ordered by path component as a folder is walked
//! (which for `00000/img00000000.png` names is their number order). Labels as for a folder:
//! the root `dataset.json`, else first-level folders.

use std::path::{Path, PathBuf};

use rand_chacha::ChaCha8Rng;

use crate::archive::{Archive, Limits};
use crate::decode::{decode, is_image_entry, Notes};
use crate::labels::{self, LabelMode, Labels, DATASET_JSON};
use crate::transform::{check_index, Transform};
use crate::{DataError, Dataset};

/// Images in a zip archive, optionally labelled.
pub struct Zip {
    archive: Archive,
    /// Indices into the archive's entries, in data-set order.
    images: Vec<usize>,
    labels: Labels,
    total: usize,
    transform: Transform,
    notes: Notes,
}

/// Opens `path` and lists its images (indices into the archive's entries, in data-set order),
/// their names and their labels per `mode`. Errors name the keys `data.path` and `data.labels`.
pub(crate) fn index(
    path: &Path,
    mode: LabelMode,
    limits: Limits,
) -> Result<(Archive, Vec<usize>, Labels), DataError> {
    let meta = crate::error::existing(path)?;
    if meta.is_dir() {
        return Err(DataError::config(
            "data.path",
            format!(
                "{} is a directory (data.kind=zip wants a .zip file; data.kind=folder reads folders)",
                path.display()
            ),
        ));
    }
    let archive = Archive::open(path, limits)?;
    let entries = archive.entries();
    let mut images: Vec<usize> = (0..entries.len())
        .filter(|&i| is_image_entry(&entries[i].name))
        .collect();
    images.sort_by(|&a, &b| entries[a].name.split('/').cmp(entries[b].name.split('/')));
    if let Some(w) = images
        .windows(2)
        .find(|w| entries[w[0]].name == entries[w[1]].name)
    {
        return Err(DataError::format(
            path,
            format!("holds entry {:?} twice", entries[w[0]].name),
        ));
    }
    if images.is_empty() {
        return Err(DataError::config(
            "data.path",
            format!("{} contains no PNG/JPEG images", path.display()),
        ));
    }
    let names: Vec<String> = images.iter().map(|&i| entries[i].name.clone()).collect();
    let json = entries.iter().find(|e| e.name == DATASET_JSON);
    let json_path = path.join(DATASET_JSON);
    let use_json = match mode {
        LabelMode::Json => true,
        LabelMode::JsonOrNone | LabelMode::JsonOrFolders => json.is_some(),
        LabelMode::None | LabelMode::Folders => false,
    };
    let labels = if use_json {
        let Some(json) = json else {
            return Err(DataError::config(
                "data.labels",
                format!(
                    "{} has no {DATASET_JSON} to read labels from",
                    path.display()
                ),
            ));
        };
        let limit = labels::json_limit(images.len());
        if json.size > limit {
            return Err(DataError::format(
                &json_path,
                format!(
                    "is {} bytes, more than the {limit} a labels file for {} images may take",
                    json.size,
                    images.len()
                ),
            ));
        }
        let bytes = archive.read(json)?;
        match labels::parse_dataset_json(&bytes, &json_path)? {
            Some(list) => labels::from_json(&names, list, &json_path, path)?,
            None if mode == LabelMode::JsonOrNone => Labels::none(names.len()),
            None => {
                return Err(DataError::config(
                    "data.labels",
                    format!(
                    "{} says \"labels\": null (the data set is unlabelled); set data.labels=false",
                    json_path.display()
                ),
                ))
            }
        }
    } else if matches!(mode, LabelMode::Folders | LabelMode::JsonOrFolders) {
        labels::from_folders(&names, path, "data.labels")?
    } else {
        Labels::none(names.len())
    };
    Ok((archive, images, labels))
}

impl Zip {
    /// Opens the archive at `path`; with `labels`, from its `dataset.json` if present, else each
    /// first-level folder is a class (sorted by name).
    pub(crate) fn open(
        path: &Path,
        labels: bool,
        limit: Option<usize>,
        transform: Transform,
    ) -> Result<Zip, DataError> {
        Zip::open_with(path, labels, limit, transform, Limits::default())
    }

    pub(crate) fn open_with(
        path: &Path,
        labels: bool,
        limit: Option<usize>,
        transform: Transform,
        limits: Limits,
    ) -> Result<Zip, DataError> {
        let mode = if labels {
            LabelMode::JsonOrFolders
        } else {
            LabelMode::None
        };
        let (archive, mut images, mut labels) = index(path, mode, limits)?;
        let total = images.len();
        if let Some(l) = limit {
            images.truncate(l);
            labels.truncate(l);
        }
        Ok(Zip {
            archive,
            images,
            labels,
            total,
            transform,
            notes: Notes::default(),
        })
    }

    /// The entry names of the images, in index order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.images
            .iter()
            .map(|&i| self.archive.entries()[i].name.as_str())
    }

    /// The class names, in label order, when labelled by folders.
    pub fn classes(&self) -> Option<&[String]> {
        self.labels.class_names.as_deref()
    }

    /// The archive's path.
    pub fn path(&self) -> &Path {
        self.archive.path()
    }

    /// `<archive>/<entry>` of image `index`, as errors name it.
    pub fn entry_path(&self, index: usize) -> Option<PathBuf> {
        let i = *self.images.get(index)?;
        Some(self.archive.entry_path(&self.archive.entries()[i]))
    }
}

impl Dataset for Zip {
    fn len(&self) -> usize {
        self.images.len()
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
            "zip",
            self.sample_shape(),
            self.len(),
            self.total,
            self.archive.path(),
        )
    }

    fn load_into(
        &self,
        index: usize,
        out: &mut [f32],
        rng: &mut ChaCha8Rng,
    ) -> Result<i64, DataError> {
        check_index(index, self.len(), "the zip dataset")?;
        let entry = &self.archive.entries()[self.images[index]];
        let bytes = self.archive.read(entry)?;
        let path = self.archive.entry_path(entry);
        let img = decode(&bytes, &path)?;
        self.notes.check_square(&img, &path, &self.transform);
        self.transform.apply(img, out, rng)?;
        Ok(i64::from(self.labels.per_image[index]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::tests::zip_of;
    use crate::folder::tests::encoded;
    use crate::testutil::{load_sample, TempDir};
    use crate::ResizeMode;
    use image::ImageFormat;

    fn t(res: u32, fit: ResizeMode) -> Transform {
        Transform {
            res,
            channels: 3,
            hflip: false,
            fit,
        }
    }

    #[test]
    fn reads_images_in_component_order_with_json_or_folder_labels() {
        let dir = TempDir::new("zip-read");
        let red = encoded(4, 4, [255, 0, 0], ImageFormat::Png);
        let green = encoded(4, 4, [0, 255, 0], ImageFormat::Png);
        let blue = encoded(4, 4, [0, 0, 255], ImageFormat::Jpeg);
        let json = br#"{"labels": [["b/x.png", 2], ["a-c/y.png", 0], ["a/z.jpg", 1]]}"#;
        let files: Vec<(&str, &[u8])> = vec![
            ("b/x.png", &red),
            ("a-c/y.png", &green),
            ("a/z.jpg", &blue),
            ("__MACOSX/a/._z.png", b"junk"),
            ("a/", b""),
            ("readme.txt", b"hello"),
            ("dataset.json", json),
        ];
        let p = dir.write("d.zip", &zip_of(&files, true));
        let ds = Zip::open(&p, true, None, t(4, ResizeMode::CenterCrop)).unwrap();
        // By component: "a" < "a-c" < "b" (a plain string sort would put "a-c/" before "a/").
        assert_eq!(
            ds.names().collect::<Vec<_>>(),
            ["a/z.jpg", "a-c/y.png", "b/x.png"]
        );
        assert_eq!(ds.num_classes(), Some(3));
        let labels: Vec<i64> = (0..3).map(|i| load_sample(&ds, i, 0).unwrap().1).collect();
        assert_eq!(labels, [1, 0, 2]);
        assert_eq!(ds.label(2), Some(2));
        let (px, _) = load_sample(&ds, 2, 0).unwrap();
        assert!(px[..16].iter().all(|&v| v == 1.0) && px[16..].iter().all(|&v| v == -1.0));
        assert!(ds
            .describe()
            .starts_with("zip (3 images, 3x4x4, 3 classes from dataset.json) from "));

        // Without dataset.json, labels=true takes first-level folders.
        let p = dir.write("f.zip", &zip_of(&files[..3], false));
        let ds = Zip::open(&p, true, Some(2), t(4, ResizeMode::CenterCrop)).unwrap();
        assert_eq!(ds.classes().unwrap(), ["a", "a-c", "b"]);
        assert_eq!((ds.len(), ds.label(1)), (2, Some(1)));
        assert!(
            ds.describe().ends_with("(first 2 of 3)"),
            "{}",
            ds.describe()
        );
        let ds = Zip::open(&p, false, None, t(4, ResizeMode::CenterCrop)).unwrap();
        assert_eq!((ds.num_classes(), ds.label(2)), (None, Some(0)));
    }

    #[test]
    fn non_square_images_are_noted_once_and_fitted_per_mode() {
        let dir = TempDir::new("zip-fit");
        let wide = encoded(8, 4, [255, 255, 255], ImageFormat::Png);
        let p = dir.write(
            "w.zip",
            &zip_of(&[("a.png", &wide), ("b.png", &wide)], false),
        );
        let ds = Zip::open(&p, false, None, t(4, ResizeMode::Pad)).unwrap();
        let (px, _) = load_sample(&ds, 0, 0).unwrap();
        load_sample(&ds, 1, 0).unwrap();
        // 8x4 -> 4x2 centred: rows 0 and 3 black, rows 1-2 white.
        let row = |y: usize| &px[y * 4..y * 4 + 4];
        assert!(row(0).iter().chain(row(3)).all(|&v| v == -1.0), "{px:?}");
        assert!(row(1).iter().chain(row(2)).all(|&v| v == 1.0), "{px:?}");
        let notes = ds.take_notes();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("w.zip/a.png is 8x4, not square: data.transform=pad"),
            "{notes:?}"
        );
        assert!(ds.take_notes().is_empty());
    }

    #[test]
    fn bad_entries_and_labels_are_clear_errors() {
        let dir = TempDir::new("zip-bad");
        let png = encoded(4, 4, [1, 2, 3], ImageFormat::Png);
        let open = |files: &[(&str, &[u8])], labels: bool| {
            let p = dir.write("x.zip", &zip_of(files, false));
            Zip::open(&p, labels, None, t(4, ResizeMode::CenterCrop))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let e = open(
            &[
                ("a.png", &png),
                (
                    "dataset.json",
                    br#"{"labels": [["a.png", 0], ["gone.png", 1]]}"#,
                ),
            ],
            true,
        );
        assert!(
            e.contains(
                "x.zip/dataset.json: labels \"gone.png\", which is not a PNG/JPEG image in "
            ),
            "{e}"
        );
        let e = open(
            &[
                ("a.png", &png),
                ("dataset.json", br#"{"labels": [["a.png", 100000]]}"#),
            ],
            true,
        );
        assert!(
            e.contains("x.zip/dataset.json: label 100000 of \"a.png\" is out of range"),
            "{e}"
        );
        let e = open(
            &[("a.png", &png), ("dataset.json", b"{\"labels\": [")],
            true,
        );
        assert!(
            e.contains("x.zip/dataset.json: not a stylegan2-ada dataset.json"),
            "{e}"
        );
        let e = open(
            &[("a.png", &png), ("dataset.json", br#"{"labels": null}"#)],
            true,
        );
        assert!(
            e.starts_with("data.labels: ") && e.contains("set data.labels=false"),
            "{e}"
        );
        assert_eq!(
            open(
                &[("a.png", &png), ("dataset.json", br#"{"labels": null}"#)],
                false
            ),
            ""
        );
        let big = format!("{{\"labels\": null, \"pad\": \"{}\"}}", "x".repeat(2 << 20));
        let e = open(&[("a.png", &png), ("dataset.json", big.as_bytes())], true);
        assert!(
            e.contains("dataset.json: is 2097")
                && e.contains("a labels file for 1 images may take"),
            "{e}"
        );
        let e = open(&[("a.png", &png)], true);
        assert!(
            e.starts_with("data.labels: ") && e.contains("a.png is not inside a class sub-folder"),
            "{e}"
        );
        let e = open(&[("notes.txt", b"x")], false);
        assert!(
            e.starts_with("data.path: ") && e.ends_with("contains no PNG/JPEG images"),
            "{e}"
        );
        let e = open(&[("a.png", &png), ("a.png", &png)], false);
        assert!(e.contains("holds entry \"a.png\" twice"), "{e}");
        let e = open(&[("a.png", &png), ("../b.png", &png)], false);
        assert!(e.contains("entry \"../b.png\" has a '..' component"), "{e}");

        // A corrupt image is an Err naming the entry when it is loaded.
        let p = dir.write(
            "c.zip",
            &zip_of(&[("a.png", b"\x89PNG\r\n\x1a\nnope")], false),
        );
        let ds = Zip::open(&p, false, None, t(4, ResizeMode::CenterCrop)).unwrap();
        let e = load_sample(&ds, 0, 0).unwrap_err().to_string();
        assert!(e.contains("c.zip/a.png: cannot decode image"), "{e}");
        let e = Zip::open(dir.path(), false, None, t(4, ResizeMode::CenterCrop))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("data.path: ") && e.contains("is a directory"),
            "{e}"
        );
    }
}
