//! Class labels of image folders and zip archives: stylegan2-ada's `dataset.json`
//! (`{"labels": [["00000/img00000000.png", 6], ...]}` or `{"labels": null}`) or first-level
//! sub-folders (sorted names -> 0..K-1, as torchvision's `ImageFolder`).
//!
//! Images are named by their path relative to the data set's root with `/` separators, which is
//! how `dataset.json` names them (its `\` are read as `/`, as stylegan2-ada's reader does).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Deserialize;

use crate::DataError;

/// Class indices must be below this (a label is a row of a class-embedding table).
pub const MAX_CLASSES: u64 = 100_000;

/// The name of the labels file at the root of a folder or zip.
pub(crate) const DATASET_JSON: &str = "dataset.json";

/// Most bytes a `dataset.json` may have for `images` images: a label line takes about 30.
pub(crate) fn json_limit(images: usize) -> u64 {
    ((1u64 << 20) + 256 * images as u64).min(512 << 20)
}

/// Where labels come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LabelMode {
    /// None.
    None,
    /// First-level sub-folders.
    Folders,
    /// The root's `dataset.json` (which must exist and hold labels).
    Json,
    /// `dataset.json` when there is one, else none (stylegan2-ada's `dataset_tool.py`).
    JsonOrNone,
    /// `dataset.json` when there is one, else sub-folders (`data.labels = true`).
    JsonOrFolders,
}

/// Labels of a listing of images.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Labels {
    /// One per image (all 0 when unlabelled).
    pub per_image: Vec<u32>,
    /// `Some(k)`: classes `0..k`.
    pub num_classes: Option<usize>,
    /// The class folders' names, in label order (sub-folder labels only).
    pub class_names: Option<Vec<String>>,
    /// "dataset.json" or "sub-folders" when labelled.
    pub from: Option<&'static str>,
}

impl Labels {
    /// `KIND (N images, CxHxW[, K classes from SOURCE]) from PATH[ (first N of TOTAL)]`: how a
    /// folder or zip data set describes itself.
    pub(crate) fn describe(
        &self,
        kind: &str,
        shape: [usize; 3],
        len: usize,
        total: usize,
        path: &std::path::Path,
    ) -> String {
        let [c, h, w] = shape;
        let mut s = format!("{kind} ({len} images, {c}x{h}x{w}");
        if let (Some(k), Some(from)) = (self.num_classes, self.from) {
            s.push_str(&format!(", {k} classes from {from}"));
        }
        s.push_str(&format!(") from {}", path.display()));
        if len < total {
            s.push_str(&format!(" (first {len} of {total})"));
        }
        s
    }
}

impl Labels {
    pub fn none(n: usize) -> Labels {
        Labels {
            per_image: vec![0; n],
            ..Labels::default()
        }
    }

    pub fn truncate(&mut self, n: usize) {
        self.per_image.truncate(n);
    }
}

#[derive(Deserialize)]
struct Meta {
    labels: Required,
}

/// `labels` must be present (`null` says "unlabelled"); serde would take a missing
/// `Option` as `None`.
#[derive(Deserialize)]
struct Required(Option<Vec<(String, serde_json::Value)>>);

/// Parses a `dataset.json`: `None` when it says `"labels": null`, else (name, class) pairs.
pub fn parse_dataset_json(
    bytes: &[u8],
    path: &Path,
) -> Result<Option<Vec<(String, u32)>>, DataError> {
    let meta: Meta = serde_json::from_slice(bytes).map_err(|e| {
        DataError::format(
            path,
            format!(
                "not a stylegan2-ada dataset.json ({{\"labels\": [[\"name.png\", class], ...]}}): {e}"
            ),
        )
    })?;
    let Some(list) = meta.labels.0 else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(list.len());
    for (name, label) in list {
        let class = match &label {
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(v) if (0..MAX_CLASSES as i64).contains(&v) => v as u32,
                Some(v) => {
                    return Err(DataError::format(
                        path,
                        format!(
                            "label {v} of {name:?} is out of range (classes are 0..{MAX_CLASSES})"
                        ),
                    ))
                }
                None => {
                    return Err(DataError::format(
                        path,
                        format!("label {n} of {name:?} is not a class index (a whole number)"),
                    ))
                }
            },
            serde_json::Value::Array(_) => {
                return Err(DataError::format(
                    path,
                    format!(
                        "label of {name:?} is a vector; gantry reads class indices only (no \
                         stylegan2-ada float-vector conditioning)"
                    ),
                ))
            }
            other => {
                let mut shown = other.to_string();
                shown.truncate(40);
                return Err(DataError::format(
                    path,
                    format!("label {shown} of {name:?} is not a class index"),
                ));
            }
        };
        out.push((name.replace('\\', "/"), class));
    }
    Ok(Some(out))
}

/// The labels `json` gives `names` (the data set's images, in order). Every image needs one, and
/// every name in `json` must be one of the images (a stale `dataset.json` is an error, not a
/// silent mismatch).
pub(crate) fn from_json(
    names: &[String],
    json: Vec<(String, u32)>,
    json_path: &Path,
    root: &Path,
) -> Result<Labels, DataError> {
    let mut map: HashMap<String, u32> = HashMap::with_capacity(json.len());
    for (name, class) in json {
        if map.insert(name.clone(), class).is_some() {
            return Err(DataError::format(
                json_path,
                format!("labels {name:?} twice"),
            ));
        }
    }
    let images: HashSet<&str> = names.iter().map(String::as_str).collect();
    let mut strays: Vec<&String> = map
        .keys()
        .filter(|k| !images.contains(k.as_str()))
        .collect();
    if !strays.is_empty() {
        strays.sort();
        let more = if strays.len() > 1 {
            format!(" (and {} more)", strays.len() - 1)
        } else {
            String::new()
        };
        return Err(DataError::format(
            json_path,
            format!(
                "labels {:?}{more}, which is not a PNG/JPEG image in {}",
                strays[0],
                root.display()
            ),
        ));
    }
    let mut per_image = Vec::with_capacity(names.len());
    let mut missing = names.iter().filter(|n| !map.contains_key(n.as_str()));
    if let Some(first) = missing.next() {
        let n = 1 + missing.count();
        return Err(DataError::format(
            json_path,
            format!(
                "has no label for {first:?} ({n} of {} images have none; every image needs one)",
                names.len()
            ),
        ));
    }
    let mut max = 0;
    for name in names {
        let class = map[name.as_str()];
        max = max.max(class);
        per_image.push(class);
    }
    Ok(Labels {
        per_image,
        num_classes: (!names.is_empty()).then_some(max as usize + 1),
        class_names: None,
        from: Some(DATASET_JSON),
    })
}

/// Labels from the first component of each name (sorted distinct names -> 0..K-1). `key` names
/// the setting in the error for an image outside any sub-folder.
pub(crate) fn from_folders(names: &[String], root: &Path, key: &str) -> Result<Labels, DataError> {
    let mut classes: Vec<&str> = Vec::new();
    for name in names {
        match name.split_once('/') {
            Some((class, _)) => classes.push(class),
            None => {
                return Err(DataError::config(
                    key,
                    format!(
                        "{} is not inside a class sub-folder (with labels from sub-folders every image must be)",
                        root.join(name).display()
                    ),
                ))
            }
        }
    }
    let mut sorted = classes.clone();
    sorted.sort_unstable();
    sorted.dedup();
    let index: HashMap<&str, u32> = sorted
        .iter()
        .enumerate()
        .map(|(i, c)| (*c, i as u32))
        .collect();
    Ok(Labels {
        per_image: classes.iter().map(|c| index[c]).collect(),
        num_classes: Some(sorted.len()),
        class_names: Some(sorted.iter().map(|c| c.to_string()).collect()),
        from: Some("sub-folders"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("d/dataset.json")
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_labels_null_and_windows_names() {
        let j = br#"{"labels": [["00000/img00000000.png", 3], ["00000\\img00000001.png", 0]]}"#;
        let l = parse_dataset_json(j, p()).unwrap().unwrap();
        assert_eq!(
            l,
            [
                ("00000/img00000000.png".to_string(), 3),
                ("00000/img00000001.png".to_string(), 0)
            ]
        );
        assert_eq!(
            parse_dataset_json(br#"{"labels": null}"#, p()).unwrap(),
            None
        );
        let l = from_json(
            &names(&["00000/img00000001.png", "00000/img00000000.png"]),
            l,
            p(),
            Path::new("d"),
        )
        .unwrap();
        assert_eq!((l.per_image, l.num_classes), (vec![0, 3], Some(4)));
    }

    #[test]
    fn malformed_out_of_range_and_mismatched_are_one_line_errors() {
        for (json, want) in [
            (&b"{}"[..], "missing field `labels`"),
            (b"{\"labels\": 5}", "not a stylegan2-ada dataset.json"),
            (
                b"{\"labels\": [[\"a.png\"]]}",
                "not a stylegan2-ada dataset.json",
            ),
            (b"\xff\xfe", "not a stylegan2-ada dataset.json"),
            (
                b"{\"labels\": [[\"a.png\", -1]]}",
                "label -1 of \"a.png\" is out of range",
            ),
            (b"{\"labels\": [[\"a.png\", 100000]]}", "out of range"),
            (b"{\"labels\": [[\"a.png\", 1.5]]}", "not a class index"),
            (b"{\"labels\": [[\"a.png\", [0.5, 1]]]}", "is a vector"),
            (
                b"{\"labels\": [[\"a.png\", \"cat\"]]}",
                "label \"cat\" of \"a.png\" is not",
            ),
        ] {
            let e = parse_dataset_json(json, p()).unwrap_err().to_string();
            assert!(
                e.starts_with("d/dataset.json: ") && e.contains(want) && !e.contains('\n'),
                "{e}"
            );
        }
        let imgs = names(&["a.png", "b.png"]);
        let e = from_json(
            &imgs,
            vec![("a.png".into(), 0), ("a.png".into(), 1)],
            p(),
            Path::new("d"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("labels \"a.png\" twice"), "{e}");
        let e = from_json(&imgs, vec![("a.png".into(), 0)], p(), Path::new("d"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("has no label for \"b.png\" (1 of 2 images"),
            "{e}"
        );
        let json = vec![
            ("a.png".into(), 0),
            ("b.png".into(), 0),
            ("c.png".into(), 1),
            ("e.png".into(), 1),
        ];
        let e = from_json(&imgs, json, p(), Path::new("d"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("labels \"c.png\" (and 1 more), which is not a PNG/JPEG image in d"),
            "{e}"
        );
    }

    #[test]
    fn sub_folders_are_sorted_classes() {
        let l = from_folders(
            &names(&["dogs/1.png", "cats/a/2.png", "cats/3.png"]),
            Path::new("r"),
            "k",
        )
        .unwrap();
        assert_eq!(l.per_image, [1, 0, 0]);
        assert_eq!(l.class_names.unwrap(), ["cats", "dogs"]);
        let e = from_folders(&names(&["x.png"]), Path::new("r"), "data.labels")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("data.labels: r/x.png is not inside a class sub-folder"),
            "{e}"
        );
    }
}
