//! `gantry_data::dataset_tool` and reading its output, against NVlabs' own `dataset_tool.py`:
//! `tests/fixtures/dataset_tool/` holds what the official tool wrote (see `make.py` there) and
//! what the official loader read from gantry's zip (`official-read.json`, see `read_official.py`).

use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use gantry_data::dataset_tool::{
    convert, Channels, ConvertOptions, ConvertSummary, ConvertTransform, LabelSource, Refusal,
};
use gantry_data::{DataConfig, DataKind, Dataset, ResizeMode};
use image::{DynamicImage, GrayImage, ImageFormat, Luma, Rgb, RgbImage, Rgba, RgbaImage};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dataset_tool")
        .join(rel)
}

/// A fresh directory, removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "gantry-dataset-tool-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }

    fn join(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Names of everything left in the directory (to check that no temporary file remains).
    fn listing(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn png(img: &DynamicImage) -> Vec<u8> {
    let mut b = Cursor::new(Vec::new());
    img.write_to(&mut b, ImageFormat::Png).unwrap();
    b.into_inner()
}

fn rgb(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| Rgb(f(x, y))))
}

/// Every file of a zip, read with the `zip` crate (not gantry's reader), in archive order.
fn unzip(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut b = Vec::new();
            f.read_to_end(&mut b).unwrap();
            (f.name().to_string(), b)
        })
        .collect()
}

/// The images of a stylegan2-ada zip (by name order) and its labels, read independently.
fn official(path: &Path) -> (Vec<(String, DynamicImage)>, Option<Vec<u32>>) {
    let mut files = unzip(path);
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut images = Vec::new();
    let mut json = None;
    for (name, bytes) in files {
        if name == "dataset.json" {
            json = Some(gantry_data::parse_dataset_json(&bytes, path).unwrap());
        } else {
            images.push((name, image::load_from_memory(&bytes).unwrap()));
        }
    }
    let labels = json.unwrap().map(|l| {
        let map: std::collections::HashMap<_, _> = l.into_iter().collect();
        images.iter().map(|(n, _)| map[n]).collect()
    });
    (images, labels)
}

/// Opens `path` as gantry trains on it: kind, labels, resolution, channels.
fn open(
    path: &Path,
    kind: DataKind,
    labels: bool,
    res: u32,
    channels: u32,
) -> std::sync::Arc<dyn Dataset> {
    gantry_data::open(&DataConfig {
        kind,
        path: Some(path.to_path_buf()),
        labels,
        resolution: res,
        channels: Some(channels),
        ..DataConfig::default()
    })
    .unwrap()
}

fn load(ds: &dyn Dataset, i: usize) -> (Vec<f32>, i64) {
    let [c, h, w] = ds.sample_shape();
    let mut out = vec![0f32; c * h * w];
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    let label = ds.load_into(i, &mut out, &mut rng).unwrap();
    (out, label)
}

/// CHW floats in [-1, 1] of an image, as the loader writes them.
fn floats(img: &DynamicImage, channels: u32) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw: Vec<u8> = if channels == 1 {
        img.to_luma8().into_raw()
    } else {
        img.to_rgb8().into_raw()
    };
    let c = channels as usize;
    let mut out = vec![0f32; c * h * w];
    for (p, px) in raw.chunks_exact(c).enumerate() {
        for (ch, v) in px.iter().enumerate() {
            out[ch * h * w + p] = f32::from(*v) / 127.5 - 1.0;
        }
    }
    out
}

/// Reads `path` back through gantry and checks every sample against the PNGs in it.
fn reads_back_exactly(path: &Path, kind: DataKind, res: u32, channels: u32) -> Vec<i64> {
    let (images, labels) = official(path);
    let ds = open(path, kind, labels.is_some(), res, channels);
    assert_eq!(ds.len(), images.len(), "{}", ds.describe());
    let mut got = Vec::new();
    for (i, (name, img)) in images.iter().enumerate() {
        let (px, label) = load(ds.as_ref(), i);
        assert!(
            px == floats(img, channels),
            "{}: {name} differs",
            path.display()
        );
        got.push(label);
    }
    if let Some(l) = labels {
        assert_eq!(got, l.iter().map(|&v| i64::from(v)).collect::<Vec<_>>());
        assert_eq!(
            ds.num_classes(),
            Some(*l.iter().max().unwrap() as usize + 1)
        );
    } else {
        assert_eq!(ds.num_classes(), None);
    }
    got
}

#[test]
fn zips_and_folders_of_the_official_tool_read_back_with_labels_and_pixels() {
    for zip in ["center-crop.zip", "center-crop-wide.zip", "stretch.zip"] {
        reads_back_exactly(&fixture(zip), DataKind::Zip, 16, 3);
    }
    // A .zip given as kind folder is read as the zip it is.
    let labels = reads_back_exactly(&fixture("center-crop.zip"), DataKind::Folder, 16, 3);
    assert_eq!(labels, [0, 0, 2, 1, 1]);
    reads_back_exactly(&fixture("grey.zip"), DataKind::Zip, 8, 1);

    // The official folder output: same images, labels from its dataset.json.
    let ds = open(&fixture("center-crop"), DataKind::Folder, true, 16, 3);
    let zipped = open(&fixture("center-crop.zip"), DataKind::Zip, true, 16, 3);
    assert_eq!(ds.len(), 5);
    assert!(
        ds.describe().contains("3 classes from dataset.json"),
        "{}",
        ds.describe()
    );
    for i in 0..ds.len() {
        assert_eq!(load(ds.as_ref(), i), load(zipped.as_ref(), i));
    }
}

/// Max and mean absolute difference of two images of the same size, per channel value.
fn diff(a: &DynamicImage, b: &DynamicImage) -> (u8, f64) {
    assert_eq!(
        (a.width(), a.height(), a.color()),
        (b.width(), b.height(), b.color())
    );
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let d: Vec<u8> = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).collect();
    (
        *d.iter().max().unwrap(),
        d.iter().map(|&v| f64::from(v)).sum::<f64>() / d.len() as f64,
    )
}

fn run(source: &Path, dest: &Path, f: impl FnOnce(&mut ConvertOptions)) -> ConvertSummary {
    let mut o = ConvertOptions {
        source: source.to_path_buf(),
        dest: dest.to_path_buf(),
        ..ConvertOptions::default()
    };
    f(&mut o);
    convert(&o).unwrap()
}

#[test]
fn conversion_matches_the_official_tool() {
    let tmp = Tmp::new("official");
    let src = fixture("src");
    for (name, transform, res, height) in [
        (
            "center-crop.zip",
            ConvertTransform::CenterCrop,
            Some(16),
            None,
        ),
        (
            "center-crop-wide.zip",
            ConvertTransform::CenterCropWide,
            Some(16),
            Some(8),
        ),
        ("stretch.zip", ConvertTransform::None, Some(16), None),
    ] {
        let dest = tmp.join(name);
        let s = run(&src, &dest, |o| {
            o.transform = transform;
            o.resolution = res;
            o.height = height;
        });
        let (ours, our_labels) = official(&dest);
        let (theirs, their_labels) = official(&fixture(name));
        assert_eq!(
            (s.kept, ours.len()),
            (theirs.len(), theirs.len()),
            "{name}: {s}"
        );
        assert_eq!(our_labels, their_labels, "{name}");
        assert_eq!((s.resolution, s.channels, s.num_classes), (16, 3, Some(3)));
        for ((n, a), (m, b)) in ours.iter().zip(&theirs) {
            // The same arithmetic as PIL's LANCZOS: bit for bit where Pillow filters rows first
            // (always for a square crop); Pillow 13 filters columns first for some non-uniform
            // scalings (stretch.zip's 36x64 -> 16x16), which moves a few values by 1-2 levels.
            let (max, mean) = diff(a, b);
            let (max_ok, mean_ok) = if transform == ConvertTransform::None {
                (2, 0.3)
            } else {
                (0, 0.0)
            };
            assert!(
                max <= max_ok && mean <= mean_ok,
                "{name}: {n} vs official {m}: max {max}, mean {mean}"
            );
        }
        if transform == ConvertTransform::CenterCropWide {
            // The official tool drops cats/e.png without a word and leaves a gap in its numbers.
            assert_eq!(theirs[2].0, "00000/img00000003.png");
            assert_eq!(ours[2].0, "00000/img00000002.png");
            assert_eq!(s.refused.len(), 1);
            assert_eq!(s.refused[0].source, "cats/e.png");
            assert_eq!(
                s.refused[0].reason,
                Refusal::TooSmall {
                    width: 50,
                    height: 20
                }
            );
            assert!(
                s.to_string()
                    .starts_with("kept 4 of 5 images (refused: 1 too small) -> "),
                "{s}"
            );
        } else {
            // Same names, so the same dataset.json, byte for byte.
            let json = |p: &Path| {
                unzip(p)
                    .into_iter()
                    .find(|(n, _)| n == "dataset.json")
                    .unwrap()
                    .1
            };
            assert_eq!(json(&dest), json(&fixture(name)));
        }
        if transform == ConvertTransform::None {
            assert!(
                s.notes
                    .iter()
                    .any(|n| n.starts_with("4 image(s) were not square and were stretched")),
                "{:?}",
                s.notes
            );
        }
    }

    // No resampling: grey images come out bit for bit.
    let dest = tmp.join("grey.zip");
    let s = run(&fixture("grey"), &dest, |_| {});
    assert_eq!(
        (s.kept, s.resolution, s.channels, s.num_classes),
        (3, 8, 1, None)
    );
    assert_eq!(
        unzip(&dest).last().unwrap(),
        &("dataset.json".to_string(), b"{\"labels\": null}".to_vec())
    );
    let (ours, _) = official(&dest);
    let (theirs, _) = official(&fixture("grey.zip"));
    for ((_, a), (_, b)) in ours.iter().zip(&theirs) {
        assert_eq!(a.color(), image::ColorType::L8);
        assert_eq!(a.as_bytes(), b.as_bytes());
    }

    // A folder dest has the official folder's layout.
    let dest = tmp.join("out");
    run(&src, &dest, |o| {
        o.transform = ConvertTransform::CenterCrop;
        o.resolution = Some(16);
    });
    let files = |root: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(root.join("00000"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(files(&dest), files(&fixture("center-crop")));
    assert_eq!(
        std::fs::read(dest.join("dataset.json")).unwrap(),
        std::fs::read(fixture("center-crop/dataset.json")).unwrap()
    );
    assert_eq!(
        tmp.listing(),
        [
            "center-crop-wide.zip",
            "center-crop.zip",
            "grey.zip",
            "out",
            "stretch.zip"
        ]
    );
}

/// SHA-256 of `data` as lowercase hex (FIPS 180-4; small enough to keep the test self-contained).
fn sha256_hex(data: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&(data.len() as u64 * 8).to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, b) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            (hh, g, f, e, d, c, b, a) = (g, f, e, d.wrapping_add(t1), c, b, a, t1.wrapping_add(t2));
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

/// An 8-bit image as stylegan2-ada's loader returns it: `np.array(PIL.Image.open(f))` in its own
/// channels (grey stays one), transposed HWC -> CHW.
fn chw_u8(img: &DynamicImage) -> (Vec<usize>, Vec<u8>) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let c = usize::from(img.color().channel_count());
    assert_eq!(img.color().bytes_per_pixel(), c as u8, "{:?}", img.color());
    let hwc = img.as_bytes();
    let mut out = vec![0u8; c * h * w];
    for (p, px) in hwc.chunks_exact(c).enumerate() {
        for (ch, v) in px.iter().enumerate() {
            out[ch * h * w + p] = *v;
        }
    }
    (vec![c, h, w], out)
}

#[test]
fn stylegan2_ada_loader_reads_gantrys_zip_with_the_same_images_and_labels() {
    // official-read.json: what stylegan2-ada-pytorch's own ImageFolderDataset(use_labels=True)
    // returned for `gantry dataset --source src --resolution 16 --transform center-crop` (made
    // by read_official.py next to it): per image, sha256 of the CHW uint8 array, shape, label.
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        sha256_hex(&[b'a'; 64]),
        "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"
    );
    let want: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("official-read.json")).unwrap()).unwrap();
    let want = want["images"].as_array().unwrap();
    assert_eq!(want.len(), 5);

    let tmp = Tmp::new("official-read");
    let dest = tmp.join("gantry.zip");
    // Four of the five sources are not square; their labels come from src/dataset.json.
    let s = run(&fixture("src"), &dest, |o| {
        o.transform = ConvertTransform::CenterCrop;
        o.resolution = Some(16);
    });
    assert_eq!((s.kept, s.num_classes), (5, Some(3)), "{s}");

    // What gantry wrote, decoded as the official loader decodes it, in its order (sorted names).
    let (images, labels) = official(&dest);
    let labels = labels.unwrap();
    assert_eq!(images.len(), want.len());
    // ... and as gantry's own loader reads the zip back for training (floats back to bytes).
    let ds = open(&dest, DataKind::Zip, true, 16, 3);
    assert_eq!(ds.num_classes(), Some(3));
    for (i, ((name, img), w)) in images.iter().zip(want).enumerate() {
        let (shape, bytes) = chw_u8(img);
        assert_eq!(name, w["name"].as_str().unwrap());
        assert_eq!(
            serde_json::json!(shape),
            w["shape"],
            "{name}: shape as the official loader saw it"
        );
        let hash = sha256_hex(&bytes);
        assert_eq!(hash, w["sha256"].as_str().unwrap(), "{name}: pixels");
        assert_eq!(
            u64::from(labels[i]),
            w["label"].as_u64().unwrap(),
            "{name}: label"
        );
        let (px, label) = load(ds.as_ref(), i);
        let back: Vec<u8> = px
            .iter()
            .map(|v| ((v + 1.0) * 127.5).round() as u8)
            .collect();
        assert_eq!(sha256_hex(&back), hash, "{name}: gantry's loader");
        assert_eq!(label as u64, w["label"].as_u64().unwrap(), "{name}");
    }
}

#[test]
fn folder_to_zip_round_trip_keeps_pixels_and_folder_labels() {
    let tmp = Tmp::new("round-trip");
    let mut jpeg = Cursor::new(Vec::new());
    rgb(24, 24, |x, y| [x as u8 * 10, y as u8 * 10, 77])
        .write_to(&mut jpeg, ImageFormat::Jpeg)
        .unwrap();
    tmp.write(
        "src/zebra/1.png",
        &png(&rgb(20, 12, |x, y| [x as u8 * 12, y as u8 * 20, 5])),
    );
    tmp.write("src/ant/a/2.jpg", jpeg.get_ref());
    tmp.write(
        "src/ant/3.png",
        &png(&rgb(9, 31, |x, y| [200, x as u8 * 25, y as u8 * 8])),
    );
    tmp.write(
        "src/bee/4.PNG",
        &png(&rgb(64, 64, |x, y| [(x ^ y) as u8 * 4, 0, 255])),
    );
    tmp.write("src/bee/notes.txt", b"not an image");
    let src = tmp.join("src");
    let s = run(&src, &tmp.join("d.zip"), |o| {
        o.transform = ConvertTransform::CenterCrop;
        o.resolution = Some(16);
        o.labels = LabelSource::Folders;
    });
    assert_eq!((s.kept, s.seen, s.num_classes), (4, 4, Some(3)));
    assert_eq!(s.class_names.as_deref().unwrap(), ["ant", "bee", "zebra"]);
    assert!(
        s.notes
            .iter()
            .any(|n| n.contains("skipped 1 file(s)") && n.contains("notes.txt")),
        "{:?}",
        s.notes
    );
    // Sorted walk: ant/3.png, ant/a/2.jpg, bee/4.PNG, zebra/1.png.
    assert_eq!(
        reads_back_exactly(&tmp.join("d.zip"), DataKind::Zip, 16, 3),
        [0, 0, 1, 2]
    );

    // The same conversion into a folder writes the same PNG bytes, and reads the same.
    run(&src, &tmp.join("d"), |o| {
        o.transform = ConvertTransform::CenterCrop;
        o.resolution = Some(16);
        o.labels = LabelSource::Folders;
    });
    for (name, bytes) in unzip(&tmp.join("d.zip")) {
        assert_eq!(
            std::fs::read(tmp.join("d").join(&name)).unwrap(),
            bytes,
            "{name}"
        );
    }
    let a = open(&tmp.join("d"), DataKind::Folder, true, 16, 3);
    let b = open(&tmp.join("d.zip"), DataKind::Zip, true, 16, 3);
    for i in 0..4 {
        assert_eq!(load(a.as_ref(), i), load(b.as_ref(), i));
    }

    // zip -> zip keeps everything (the source's dataset.json gives the labels).
    let s = run(&tmp.join("d.zip"), &tmp.join("e.zip"), |_| {});
    assert_eq!((s.kept, s.resolution, s.num_classes), (4, 16, Some(3)));
    assert_eq!(unzip(&tmp.join("d.zip")), unzip(&tmp.join("e.zip")));
    let s = run(&tmp.join("d.zip"), &tmp.join("f.zip"), |o| {
        o.max_images = Some(3);
        o.labels = LabelSource::None;
        o.resolution = Some(8);
    });
    assert_eq!((s.kept, s.num_classes, s.resolution), (3, None, 8));
    assert!(s.to_string().starts_with("kept 3 of 3 images -> "), "{s}");
    assert!(
        s.to_string().ends_with("(8x8 RGB, unlabelled, 0.0 MB)"),
        "{s}"
    );
}

#[test]
fn the_three_conversion_transforms_on_a_wide_image() {
    let tmp = Tmp::new("transforms");
    // 12x6: columns 0-2 red, 3-8 green, 9-11 blue.
    let img = rgb(12, 6, |x, _| match x {
        0..=2 => [255, 0, 0],
        3..=8 => [0, 255, 0],
        _ => [0, 0, 255],
    });
    tmp.write("src/a.png", &png(&img));
    let convert_one = |t: ConvertTransform, res: u32, height: Option<u32>| {
        let dest = tmp.join(&format!("{t}-{res}-{height:?}.zip"));
        run(&tmp.join("src"), &dest, |o| {
            o.transform = t;
            o.resolution = Some(res);
            o.height = height;
        });
        official(&dest).0.remove(0).1.to_rgb8()
    };
    // center-crop: the centre 6x6 (columns 3-8) is all green; no resize at 6.
    let out = convert_one(ConvertTransform::CenterCrop, 6, None);
    assert!(out.pixels().all(|p| p.0 == [0, 255, 0]), "{out:?}");
    // pad: 12x6 at 12 -> rows 0-2 and 9-11 black, rows 3-8 the image as it was.
    let out = convert_one(ConvertTransform::Pad, 12, None);
    for (x, y, p) in out.enumerate_pixels() {
        let want = if (3..9).contains(&y) {
            img.to_rgb8().get_pixel(x, y - 3).0
        } else {
            [0, 0, 0]
        };
        assert_eq!(p.0, want, "pad at {x},{y}");
    }
    // center-crop-wide 12 x 6: ch = round(12 * 6 / 12) = 6 rows, resized 12x6 -> 12x6 (none),
    // centred on a 12x12 black square: same as pad here.
    assert_eq!(
        convert_one(ConvertTransform::CenterCropWide, 12, Some(6)),
        out
    );
    // center-crop-wide 12 x 4: the band is squeezed to 4 rows at rows 4-7.
    let out = convert_one(ConvertTransform::CenterCropWide, 12, Some(4));
    for (x, y, p) in out.enumerate_pixels() {
        if !(4..8).contains(&y) {
            assert_eq!(p.0, [0, 0, 0], "wide at {x},{y}");
        } else if x == 0 || x == 11 || x == 5 {
            // Away from the colour edges the band keeps its colours.
            assert!(p.0.iter().any(|&v| v > 240), "wide at {x},{y}: {p:?}");
        }
    }
    assert_eq!(out.get_pixel(0, 5).0[0], 255);
    assert_eq!(out.get_pixel(11, 5).0[2], 255);
}

#[test]
fn the_three_read_transforms_on_a_wide_image() {
    let tmp = Tmp::new("read-fit");
    // 8x4: left half white, right half black.
    let img = DynamicImage::ImageLuma8(GrayImage::from_fn(8, 4, |x, _| {
        Luma([if x < 4 { 255 } else { 0 }])
    }));
    tmp.write("f/a.png", &png(&img));
    tmp.write("f/b.png", &png(&img));
    let read = |fit: ResizeMode| {
        let ds = gantry_data::open(&DataConfig {
            kind: DataKind::Folder,
            path: Some(tmp.join("f")),
            resolution: 4,
            channels: Some(1),
            transform: fit,
            ..DataConfig::default()
        })
        .unwrap();
        let px = load(ds.as_ref(), 0).0;
        load(ds.as_ref(), 1);
        let notes = ds.take_notes();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains(&format!("a.png is 8x4, not square: data.transform={fit}")),
            "{notes:?}"
        );
        assert!(ds.take_notes().is_empty());
        px
    };
    // center-crop: the short side is already 4, the centre columns 2-5 are kept.
    let px = read(ResizeMode::CenterCrop);
    for y in 0..4 {
        assert_eq!(&px[y * 4..y * 4 + 4], [1.0, 1.0, -1.0, -1.0], "row {y}");
    }
    // pad: 8x4 -> 4x2 on rows 1-2; rows 0 and 3 black.
    let px = read(ResizeMode::Pad);
    assert!(
        px[..4].iter().chain(&px[12..]).all(|&v| v == -1.0),
        "{px:?}"
    );
    assert!(
        px[4] == 1.0 && px[7] == -1.0 && px[8] == 1.0 && px[11] == -1.0,
        "{px:?}"
    );
    // stretch: 8x4 -> 4x4, every row white on the left and black on the right.
    let px = read(ResizeMode::Stretch);
    for y in 0..4 {
        assert!(px[y * 4] == 1.0 && px[y * 4 + 3] == -1.0, "{px:?}");
    }
}

#[test]
fn a_zip_written_by_python_zipfile_reads_with_its_labels() {
    // Only the standard library's zipfile is needed: $GANTRY_PYTHON, the project virtualenv, or
    // python3 on PATH. Missing Python is a failure, not a skip.
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let python = std::env::var_os("GANTRY_PYTHON")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| venv.exists().then_some(venv))
        .unwrap_or_else(|| PathBuf::from("python3"));
    let tmp = Tmp::new("python");
    let imgs: Vec<DynamicImage> = (0..5u8)
        .map(|i| rgb(8, 8, move |x, y| [i * 50, x as u8 * 30, y as u8 * 30]))
        .collect();
    for (i, img) in imgs.iter().enumerate() {
        tmp.write(&format!("in/{i}.png"), &png(img));
    }
    let script = r#"
import json, sys, zipfile
src, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as z:
    z.writestr("imgs/", "")
    for i in [3, 0, 4, 1, 2]:
        z.write(f"{src}/{i}.png", f"imgs/{i:02d}.png")
    z.writestr("dataset.json", json.dumps({"labels": [[f"imgs/{i:02d}.png", 7 - i] for i in range(5)]}))
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(tmp.join("in"))
        .arg(tmp.join("py.zip"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ds = open(&tmp.join("py.zip"), DataKind::Zip, true, 8, 3);
    assert_eq!((ds.len(), ds.num_classes()), (5, Some(8)));
    for (i, img) in imgs.iter().enumerate() {
        assert_eq!(load(ds.as_ref(), i), (floats(img, 3), 7 - i as i64));
    }
    // ... and converts into stylegan2-ada's layout, labels carried over.
    let s = run(&tmp.join("py.zip"), &tmp.join("out.zip"), |_| {});
    assert_eq!((s.kept, s.num_classes), (5, Some(8)));
    assert_eq!(
        reads_back_exactly(&tmp.join("out.zip"), DataKind::Zip, 8, 3),
        [7, 6, 5, 4, 3]
    );
}

fn convert_err(source: &Path, dest: &Path, f: impl FnOnce(&mut ConvertOptions)) -> String {
    let mut o = ConvertOptions {
        source: source.to_path_buf(),
        dest: dest.to_path_buf(),
        ..ConvertOptions::default()
    };
    f(&mut o);
    let e = convert(&o).unwrap_err().to_string();
    assert!(!e.contains('\n'), "{e}");
    e
}

#[test]
fn refusals_and_errors_of_conversion() {
    let tmp = Tmp::new("refusals");
    let sq = |v: u8| png(&rgb(8, 8, move |_, _| [v, v, v]));
    tmp.write("src/0.png", &sq(10));
    tmp.write("src/1.png", b"\x89PNG\r\n\x1a\nbroken");
    let mut see_through = RgbaImage::from_pixel(8, 8, Rgba([1, 2, 3, 255]));
    see_through.put_pixel(3, 3, Rgba([1, 2, 3, 0]));
    tmp.write("src/2.png", &png(&DynamicImage::ImageRgba8(see_through)));
    tmp.write(
        "src/3.png",
        &png(&DynamicImage::ImageRgba8(RgbaImage::from_pixel(
            8,
            8,
            Rgba([9, 9, 9, 255]),
        ))),
    );
    let src = tmp.join("src");
    let s = run(&src, &tmp.join("a.zip"), |_| {});
    assert_eq!((s.kept, s.seen), (2, 4), "{s}");
    assert_eq!(s.refused[0].source, "1.png");
    assert!(
        matches!(&s.refused[0].reason, Refusal::Unreadable(m) if m.starts_with("cannot decode image")),
        "{:?}",
        s.refused
    );
    assert_eq!(s.refused[1].source, "2.png");
    assert!(matches!(&s.refused[1].reason, Refusal::WrongMode(m) if m.contains("transparent")));
    assert_eq!(
        s.refused_counts(),
        [("unreadable", 1), ("too small", 0), ("wrong mode", 1)]
    );
    assert!(
        s.to_string()
            .starts_with("kept 2 of 4 images (refused: 1 unreadable, 1 wrong mode) -> "),
        "{s}"
    );
    // With channels set, the alpha is dropped and the image kept.
    let s = run(&src, &tmp.join("b.zip"), |o| o.channels = Channels::Rgb);
    assert_eq!(s.kept, 3);
    let s = run(&src, &tmp.join("g.zip"), |o| o.channels = Channels::Grey);
    assert_eq!((s.kept, s.channels), (3, 1));

    // The destination exists: refused unless overwrite; then replaced.
    let e = convert_err(&src, &tmp.join("a.zip"), |_| {});
    assert!(
        e.starts_with("--dest: ") && e.contains("already exists (pass --overwrite"),
        "{e}"
    );
    run(&src, &tmp.join("a.zip"), |o| {
        o.overwrite = true;
        o.max_images = Some(1);
    });
    assert_eq!(official(&tmp.join("a.zip")).0.len(), 1);
    std::fs::create_dir_all(tmp.join("full")).unwrap();
    std::fs::write(tmp.join("full/x"), b"x").unwrap();
    let e = convert_err(&src, &tmp.join("full"), |_| {});
    assert!(e.contains("already exists and is not empty"), "{e}");
    run(&src, &tmp.join("full"), |o| o.overwrite = true);
    assert!(!tmp.join("full/x").exists() && tmp.join("full/00000/img00000001.png").exists());

    // Mixed grey and RGB, sizes that differ, a non-square image without a resolution: errors
    // that say what to set; nothing is left behind.
    tmp.write("mixed/0.png", &sq(1));
    tmp.write(
        "mixed/1.png",
        &png(&DynamicImage::ImageLuma8(GrayImage::new(8, 8))),
    );
    let e = convert_err(&tmp.join("mixed"), &tmp.join("m.zip"), |_| {});
    assert!(
        e.contains("1.png: is grey but 0.png is RGB") && e.contains("--channels"),
        "{e}"
    );
    tmp.write("sizes/0.png", &sq(1));
    tmp.write("sizes/1.png", &png(&rgb(16, 16, |_, _| [0, 0, 0])));
    let e = convert_err(&tmp.join("sizes"), &tmp.join("m.zip"), |_| {});
    assert!(
        e.contains("1.png: is 16x16 but 0.png is 8x8") && e.contains("set a resolution"),
        "{e}"
    );
    tmp.write("wide/0.png", &png(&rgb(16, 8, |_, _| [0, 0, 0])));
    let e = convert_err(&tmp.join("wide"), &tmp.join("m.zip"), |_| {});
    assert!(e.contains("0.png: is 16x8, not square"), "{e}");
    let e = convert_err(&tmp.join("wide"), &tmp.join("m.zip"), |o| {
        o.transform = ConvertTransform::CenterCropWide;
        o.resolution = Some(32);
    });
    assert!(
        e.starts_with("--source: no image of ") && e.contains("0.png: too small: 16x8"),
        "{e}"
    );
    let e = convert_err(&tmp.join("nope"), &tmp.join("m.zip"), |_| {});
    assert!(
        e.starts_with("--source: ") && e.ends_with("nope does not exist"),
        "{e}"
    );
    let e = convert_err(&src, &tmp.join("m.zip"), |o| {
        o.labels = LabelSource::DatasetJson
    });
    assert!(
        e.starts_with("--labels: ") && e.contains("has no dataset.json"),
        "{e}"
    );
    let e = convert_err(&src, &tmp.join("m.zip"), |o| {
        o.labels = LabelSource::Folders
    });
    assert!(
        e.starts_with("--labels: ") && e.contains("is not inside a class sub-folder"),
        "{e}"
    );
    assert_eq!(
        tmp.listing(),
        ["a.zip", "b.zip", "full", "g.zip", "mixed", "sizes", "src", "wide"]
    );
}

/// A zip with `files` (name, bytes), written by the zip crate.
fn zip_bytes(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes) in files {
        w.start_file(*name, zip::write::FileOptions::default())
            .unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[test]
fn hostile_archives_are_one_clear_error() {
    let tmp = Tmp::new("hostile");
    let ok = png(&rgb(4, 4, |_, _| [1, 2, 3]));
    let open_err = |bytes: &[u8], labels: bool| {
        let p = tmp.write("h.zip", bytes);
        let e = gantry_data::open(&DataConfig {
            kind: DataKind::Zip,
            path: Some(p.clone()),
            labels,
            ..DataConfig::default()
        })
        .err()
        .unwrap()
        .to_string();
        let c = convert_err(&p, &tmp.join("out.zip"), |o| {
            o.labels = if labels {
                LabelSource::Auto
            } else {
                LabelSource::None
            }
        });
        assert!(!tmp.join("out.zip").exists());
        assert_eq!(
            c.replace("data.labels", "--labels"),
            e.replace("data.labels", "--labels")
        );
        e
    };
    let e = open_err(&zip_bytes(&[("a.png", &ok), ("../../b.png", &ok)]), false);
    assert!(
        e.contains("h.zip: entry \"../../b.png\" has a '..' component"),
        "{e}"
    );
    let e = open_err(&zip_bytes(&[("/abs/b.png", &ok)]), false);
    assert!(
        e.contains("entry \"/abs/b.png\" is an absolute path"),
        "{e}"
    );
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    w.add_symlink(
        "a.png",
        "../../etc/shadow",
        zip::write::FileOptions::default(),
    )
    .unwrap();
    let e = open_err(&w.finish().unwrap().into_inner(), false);
    assert!(e.contains("entry \"a.png\" is a symbolic link"), "{e}");
    let e = open_err(
        &zip_bytes(&[
            ("a.png", &ok),
            (
                "dataset.json",
                br#"{"labels": [["a.png", 0], ["b.png", 1]]}"#,
            ),
        ]),
        true,
    );
    assert!(
        e.contains("h.zip/dataset.json: labels \"b.png\", which is not a PNG/JPEG image"),
        "{e}"
    );
    let e = open_err(
        &zip_bytes(&[
            ("a.png", &ok),
            ("dataset.json", br#"{"labels": [["a.png", -3]]}"#),
        ]),
        true,
    );
    assert!(
        e.contains("h.zip/dataset.json: label -3 of \"a.png\" is out of range"),
        "{e}"
    );
    let e = open_err(
        &zip_bytes(&[("a.png", &ok), ("dataset.json", b"{\"labels\": [[")]),
        true,
    );
    assert!(
        e.contains("h.zip/dataset.json: not a stylegan2-ada dataset.json"),
        "{e}"
    );

    // A declared size past the per-entry limit (patched into the central directory).
    let mut big = zip_bytes(&[("a.png", &ok)]);
    let cd = big.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
    big[cd + 24..cd + 28].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
    let e = open_err(&big, false);
    assert!(
        e.contains(&format!(
            "entry \"a.png\" declares {} bytes, more than the {}",
            0x7FFF_FFFF,
            gantry_data::MAX_ENTRY_BYTES
        )),
        "{e}"
    );
}
