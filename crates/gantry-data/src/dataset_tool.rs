//! Converting images into stylegan2-ada's data set layout (`gantry dataset`), as NVlabs'
//! `dataset_tool.py` does: PNG files `00000/img00000000.png`, `00000/img00000001.png`, ...
//! (1000 to a folder) and a `dataset.json` of `{"labels": [["00000/img00000000.png", 3], ...]}`
//! or `{"labels": null}`, in an uncompressed (stored) `.zip` or in a folder. Gantry reads both
//! (`data.kind = zip` / `folder`), and so does stylegan2-ada's `train.py`.
//!
//! The source is a folder (walked recursively, PNG/JPEG) or a zip of images. Each image is
//! decoded, fitted to a square per [`ConvertTransform`] with the fixed-point Lanczos filter of
//! `PIL.Image.LANCZOS`, which dataset_tool uses (the same pixels, bit for bit, for square crops;
//! see `resample.rs`), and stored as an uncompressed PNG (PIL's `compress_level=0`, which
//! decodes fastest), grey or RGB as the source is. The work runs on all cores, written in
//! source order; the output goes to a temporary name beside `dest` and is renamed into place
//! when complete, so an interrupted conversion never leaves a half-written data set at `dest`.
//!
//! Where it departs from dataset_tool.py, deliberately:
//! - kept images are numbered without gaps (dataset_tool numbers by input index, leaving a gap
//!   where `center-crop-wide` drops an image), and `max_images` counts kept images;
//! - labels can also come from class sub-folders ([`LabelSource::Folders`]); a source
//!   `dataset.json` that misses an image or names a missing one is an error, not `labels: null`;
//! - unreadable images, and images too small for `center-crop-wide`, are refused and counted in
//!   the summary instead of stopping the conversion (or being dropped without a word);
//! - `center-crop` works on grey images too; `pad` (letterbox) is new; the output side needs no
//!   power of two (gantry resizes to `data.resolution`; the summary notes when train.py would
//!   refuse it).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{BufWriter, Cursor, Write};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Condvar, Mutex};

use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use image::imageops;
use image::{DynamicImage, ExtendedColorType, ImageBuffer, ImageEncoder, Pixel};
use serde::{Deserialize, Serialize};

use crate::archive::{Archive, Limits};
use crate::labels::{LabelMode, Labels};
use crate::DataError;

/// How images become square (`--transform`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConvertTransform {
    /// Keep each image as it is; with a resolution, resize it to resolution x resolution
    /// (a non-square image is stretched, as dataset_tool.py does without `--transform`).
    #[default]
    None,
    /// Crop the centre square (side = the shorter side), then resize to the resolution.
    CenterCrop,
    /// dataset_tool.py's `center-crop-wide` for wide images (LSUN): keep the centre
    /// `round(resolution * h / w)` rows of the source (dataset_tool's definition: a row count
    /// computed at the output scale, applied to the source), resize that band to
    /// resolution x `height`, and centre it on a black square; images narrower than the
    /// resolution or whose band would be under `height` rows are refused as too small.
    CenterCropWide,
    /// Letterbox: resize the longer side to the resolution (keeping the aspect ratio) and
    /// centre the image on a black square.
    Pad,
}

impl ConvertTransform {
    pub const NAMES: &'static [&'static str] = &["none", "center-crop", "center-crop-wide", "pad"];

    pub fn as_str(self) -> &'static str {
        match self {
            ConvertTransform::None => "none",
            ConvertTransform::CenterCrop => "center-crop",
            ConvertTransform::CenterCropWide => "center-crop-wide",
            ConvertTransform::Pad => "pad",
        }
    }
}

/// Where the labels come from (`--labels`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LabelSource {
    /// The source's `dataset.json` when it has one (with labels), else none (dataset_tool.py).
    #[default]
    Auto,
    /// None: the output's `dataset.json` says `"labels": null`.
    None,
    /// First-level sub-folders, sorted by name -> 0..K-1 (torchvision's `ImageFolder`).
    Folders,
    /// The source's `dataset.json`, which must exist and hold labels.
    DatasetJson,
}

impl LabelSource {
    pub const NAMES: &'static [&'static str] = &["auto", "none", "folders", "dataset-json"];

    pub fn as_str(self) -> &'static str {
        match self {
            LabelSource::Auto => "auto",
            LabelSource::None => "none",
            LabelSource::Folders => "folders",
            LabelSource::DatasetJson => "dataset-json",
        }
    }

    fn mode(self) -> LabelMode {
        match self {
            LabelSource::Auto => LabelMode::JsonOrNone,
            LabelSource::None => LabelMode::None,
            LabelSource::Folders => LabelMode::Folders,
            LabelSource::DatasetJson => LabelMode::Json,
        }
    }
}

/// The colour mode of the output (`--channels`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Channels {
    /// As the source: all grey or all RGB (a source that mixes them is an error, and an image
    /// with transparent pixels is refused); an opaque alpha channel is dropped.
    #[default]
    Keep,
    /// Convert every image to grey (1 channel); alpha is dropped.
    Grey,
    /// Convert every image to RGB (3 channels); alpha is dropped.
    Rgb,
}

impl Channels {
    pub const NAMES: &'static [&'static str] = &["keep", "grey", "rgb"];

    pub fn as_str(self) -> &'static str {
        match self {
            Channels::Keep => "keep",
            Channels::Grey => "grey",
            Channels::Rgb => "rgb",
        }
    }
}

macro_rules! from_str_names {
    ($t:ty, $key:literal, [$($v:expr),*]) => {
        impl FromStr for $t {
            type Err = DataError;
            fn from_str(s: &str) -> Result<Self, DataError> {
                let wanted = s.trim();
                [$($v),*]
                    .into_iter()
                    .find(|v: &$t| v.as_str() == wanted)
                    .ok_or_else(|| {
                        DataError::config(
                            $key,
                            format!("unknown value '{s}' (valid: {})", <$t>::NAMES.join(", ")),
                        )
                    })
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

from_str_names!(
    ConvertTransform,
    "--transform",
    [
        ConvertTransform::None,
        ConvertTransform::CenterCrop,
        ConvertTransform::CenterCropWide,
        ConvertTransform::Pad
    ]
);
from_str_names!(
    LabelSource,
    "--labels",
    [
        LabelSource::Auto,
        LabelSource::None,
        LabelSource::Folders,
        LabelSource::DatasetJson
    ]
);
from_str_names!(
    Channels,
    "--channels",
    [Channels::Keep, Channels::Grey, Channels::Rgb]
);

/// What to convert and how (`gantry dataset --source ... --dest ...`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConvertOptions {
    /// A folder of PNG/JPEG images (recursive) or a zip of them.
    pub source: PathBuf,
    /// `*.zip` (stored, as dataset_tool.py writes) or a folder (same layout).
    pub dest: PathBuf,
    /// Output side in pixels. Unset: images keep their size, which must then be square and the
    /// same for all (after the transform). Required by `center-crop-wide`.
    pub resolution: Option<u32>,
    /// How images become square.
    pub transform: ConvertTransform,
    /// `center-crop-wide` only: the band's height in pixels (default resolution / 2).
    pub height: Option<u32>,
    /// Where labels come from.
    pub labels: LabelSource,
    /// Stop after this many kept images.
    pub max_images: Option<usize>,
    /// Grey, RGB, or as the source.
    pub channels: Channels,
    /// Replace an existing `dest` (a zip, or a non-empty folder) instead of refusing.
    pub overwrite: bool,
    /// Worker threads; 0 = one per core.
    pub threads: usize,
}

/// Why an image was left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It could not be read or decoded (the decoder's message).
    Unreadable(String),
    /// `center-crop-wide`: narrower than the resolution, or its band too low (source size).
    TooSmall { width: u32, height: u32 },
    /// Its colour mode does not fit (transparent pixels with `channels = keep`).
    WrongMode(String),
}

impl Refusal {
    /// "unreadable", "too small" or "wrong mode".
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Unreadable(_) => "unreadable",
            Refusal::TooSmall { .. } => "too small",
            Refusal::WrongMode(_) => "wrong mode",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unreadable(msg) => write!(f, "unreadable: {msg}"),
            Refusal::TooSmall { width, height } => {
                write!(f, "too small: {width}x{height} for center-crop-wide")
            }
            Refusal::WrongMode(msg) => write!(f, "wrong mode: {msg}"),
        }
    }
}

/// One image left out: its name in the source (relative, `/`-separated) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub source: String,
    pub reason: Refusal,
}

/// What [`convert`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvertSummary {
    /// Where it was written.
    pub dest: PathBuf,
    /// Source images looked at (at most all of them; fewer when `max_images` stopped early).
    pub seen: usize,
    /// Images written.
    pub kept: usize,
    /// Images left out, in source order.
    pub refused: Vec<Refused>,
    /// Side of every written image.
    pub resolution: u32,
    /// 1 (grey) or 3 (RGB).
    pub channels: u32,
    /// `Some(k)`: labelled with classes `0..k`.
    pub num_classes: Option<usize>,
    /// Class names in label order (sub-folder labels).
    pub class_names: Option<Vec<String>>,
    /// Bytes written (the zip, or the folder's files).
    pub bytes: u64,
    /// Things worth a line of output (stretched images, skipped files, a side train.py refuses).
    pub notes: Vec<String>,
}

impl ConvertSummary {
    /// How many images were refused for each reason kind ("unreadable", "too small", "wrong mode").
    pub fn refused_counts(&self) -> [(&'static str, usize); 3] {
        let n = |k: &str| self.refused.iter().filter(|r| r.reason.kind() == k).count();
        [
            ("unreadable", n("unreadable")),
            ("too small", n("too small")),
            ("wrong mode", n("wrong mode")),
        ]
    }
}

impl fmt::Display for ConvertSummary {
    /// One line: "kept 998 of 1000 images (refused: 1 unreadable, 1 too small) -> out.zip
    /// (64x64 RGB, 10 classes, 12.3 MB)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kept {} of {} images", self.kept, self.seen)?;
        let counts: Vec<String> = self
            .refused_counts()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        if !counts.is_empty() {
            write!(f, " (refused: {})", counts.join(", "))?;
        }
        let r = self.resolution;
        let mode = if self.channels == 1 { "grey" } else { "RGB" };
        write!(f, " -> {} ({r}x{r} {mode}", self.dest.display())?;
        match self.num_classes {
            Some(k) => write!(f, ", {k} classes")?,
            None => write!(f, ", unlabelled")?,
        }
        write!(f, ", {:.1} MB)", self.bytes as f64 / 1e6)
    }
}

/// Converts `opts.source` into `opts.dest`; see the module documentation.
pub fn convert(opts: &ConvertOptions) -> Result<ConvertSummary, DataError> {
    convert_with_progress(opts, &mut |_, _| {})
}

/// [`convert`], calling `progress(images looked at, images in the source)` as it goes.
pub fn convert_with_progress(
    opts: &ConvertOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ConvertSummary, DataError> {
    let plan = Plan::new(opts)?;
    let source = Source::open(&opts.source, opts.labels.mode())?;
    let mut sink = Sink::create(&opts.dest, opts.overwrite)?;
    let result = run(&plan, &source, &mut sink, opts, progress);
    match result {
        Ok(mut summary) => {
            summary.bytes = sink.commit()?;
            Ok(summary)
        }
        Err(e) => {
            sink.abandon();
            Err(e)
        }
    }
}

/// The checked geometry of a conversion.
#[derive(Clone, Copy, Debug)]
struct Plan {
    resolution: Option<u32>,
    transform: ConvertTransform,
    band: u32,
    channels: Channels,
}

impl Plan {
    fn new(o: &ConvertOptions) -> Result<Plan, DataError> {
        if o.source.as_os_str().is_empty() || o.dest.as_os_str().is_empty() {
            return Err(DataError::config(
                if o.source.as_os_str().is_empty() {
                    "--source"
                } else {
                    "--dest"
                },
                "is empty",
            ));
        }
        if let Some(r) = o.resolution {
            if !(1..=1 << 14).contains(&r) {
                return Err(DataError::config(
                    "--resolution",
                    format!("{r} is not a side between 1 and 16384 pixels"),
                ));
            }
        }
        if o.max_images == Some(0) {
            return Err(DataError::config("--max-images", "0 leaves no images"));
        }
        if o.height.is_some() && o.transform != ConvertTransform::CenterCropWide {
            return Err(DataError::config(
                "--height",
                "is for --transform=center-crop-wide only",
            ));
        }
        let mut band = 0;
        if o.transform == ConvertTransform::CenterCropWide {
            let Some(r) = o.resolution else {
                return Err(DataError::config(
                    "--resolution",
                    "is required by --transform=center-crop-wide (the output width)",
                ));
            };
            band = o.height.unwrap_or((r / 2).max(1));
            if !(1..=r).contains(&band) {
                return Err(DataError::config(
                    "--height",
                    format!("{band} is not between 1 and the resolution {r}"),
                ));
            }
        }
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        };
        if same(&o.source, &o.dest) {
            return Err(DataError::config(
                "--dest",
                format!("{} is the source itself", o.dest.display()),
            ));
        }
        Ok(Plan {
            resolution: o.resolution,
            transform: o.transform,
            band,
            channels: o.channels,
        })
    }
}

/// The source's images, in order, and their labels.
struct Source {
    root: PathBuf,
    items: Items,
    names: Vec<String>,
    labels: Labels,
    notes: Vec<String>,
}

enum Items {
    Files(Vec<PathBuf>),
    Zip(Archive, Vec<usize>),
}

/// `--source`/`--labels` for the keys that listing errors name for data sets.
fn rekey(e: DataError) -> DataError {
    match e {
        DataError::Config { key, msg } => DataError::Config {
            key: match key.as_str() {
                "data.path" => "--source".into(),
                "data.labels" => "--labels".into(),
                _ => key,
            },
            msg: msg.replace("data.labels=false", "--labels=none"),
        },
        other => other,
    }
}

impl Source {
    fn open(path: &Path, mode: LabelMode) -> Result<Source, DataError> {
        let meta = fs::metadata(path).map_err(|_| {
            DataError::config("--source", format!("{} does not exist", path.display()))
        })?;
        let mut notes = Vec::new();
        if meta.is_dir() {
            let (files, names, labels) = crate::folder::index(path, mode).map_err(rekey)?;
            let (n, first) = crate::folder::other_files(path);
            if let Some(first) = first {
                notes.push(format!(
                    "skipped {n} file(s) that are not PNG/JPEG (e.g. {})",
                    first.display()
                ));
            }
            Ok(Source {
                root: path.to_path_buf(),
                items: Items::Files(files),
                names,
                labels,
                notes,
            })
        } else {
            let (archive, images, labels) =
                crate::zipped::index(path, mode, Limits::default()).map_err(rekey)?;
            let names = images
                .iter()
                .map(|&i| archive.entries()[i].name.clone())
                .collect();
            let others: Vec<&str> = archive
                .entries()
                .iter()
                .map(|e| e.name.as_str())
                .filter(|n| {
                    !n.ends_with('/')
                        && *n != crate::labels::DATASET_JSON
                        && !crate::decode::is_image_entry(n)
                        && !n.split('/').any(|c| c.starts_with('.') || c == "__MACOSX")
                })
                .collect();
            if let Some(first) = others.first() {
                notes.push(format!(
                    "skipped {} entr(ies) that are not PNG/JPEG (e.g. {first})",
                    others.len()
                ));
            }
            Ok(Source {
                root: path.to_path_buf(),
                items: Items::Zip(archive, images),
                names,
                labels,
                notes,
            })
        }
    }

    fn len(&self) -> usize {
        self.names.len()
    }

    /// The bytes of image `i` and the path that names it in messages.
    fn read(&self, i: usize) -> (PathBuf, Result<Vec<u8>, DataError>) {
        match &self.items {
            Items::Files(files) => (
                files[i].clone(),
                fs::read(&files[i]).map_err(|e| DataError::io(&files[i], e)),
            ),
            Items::Zip(archive, images) => {
                let entry = &archive.entries()[images[i]];
                (archive.entry_path(entry), archive.read(entry))
            }
        }
    }
}

/// What became of one image on a worker thread.
enum Outcome {
    Kept {
        png: Vec<u8>,
        side: (u32, u32),
        grey: bool,
        stretched: bool,
    },
    Refused(Refusal),
}

fn run(
    plan: &Plan,
    source: &Source,
    sink: &mut Sink,
    opts: &ConvertOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ConvertSummary, DataError> {
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.threads
    };
    let total = source.len();
    let mut acc = Accept {
        source,
        sink,
        max: opts.max_images.unwrap_or(usize::MAX),
        summary: ConvertSummary {
            dest: opts.dest.clone(),
            seen: 0,
            kept: 0,
            refused: Vec::new(),
            resolution: 0,
            channels: 0,
            num_classes: source.labels.num_classes,
            class_names: source.labels.class_names.clone(),
            bytes: 0,
            notes: source.notes.clone(),
        },
        side: None,
        grey: None,
        labels: Vec::new(),
        stretched: 0,
    };
    in_order(plan, source, threads, &mut |i, outcome| {
        let more = acc.accept(i, outcome)?;
        if !more || (i + 1) % 256 == 0 || i + 1 == total {
            progress(acc.summary.seen, total);
        }
        Ok(more)
    })?;
    let Accept {
        mut summary,
        side,
        grey,
        labels,
        stretched,
        sink,
        ..
    } = acc;
    if summary.kept == 0 {
        let why: Vec<String> = summary
            .refused
            .iter()
            .take(3)
            .map(|r| format!("{}: {}", r.source, r.reason))
            .collect();
        return Err(DataError::config(
            "--source",
            format!(
                "no image of {} could be converted ({})",
                source.root.display(),
                why.join("; ")
            ),
        ));
    }
    let (s, _) = side.expect("an image was kept, so its side is known");
    summary.resolution = s;
    summary.channels = if grey.is_some_and(|(g, _)| g) { 1 } else { 3 };
    if stretched > 0 {
        summary.notes.push(format!(
            "{stretched} image(s) were not square and were stretched to {s}x{s} (transform none, \
             as dataset_tool.py does); --transform center-crop or pad keeps their aspect"
        ));
    }
    if !s.is_power_of_two() {
        summary.notes.push(format!(
            "{s}x{s} is not a power of two: stylegan2-ada's train.py refuses it (gantry resizes \
             to data.resolution when it reads the data)"
        ));
    }
    sink.add(
        "dataset.json",
        dataset_json(&labels, source.labels.from.is_some()).as_bytes(),
    )?;
    Ok(summary)
}

/// The in-order stage: checks each outcome against the ones before and writes kept images.
struct Accept<'a> {
    source: &'a Source,
    sink: &'a mut Sink,
    max: usize,
    summary: ConvertSummary,
    /// The side of the first kept image, and its name.
    side: Option<(u32, String)>,
    /// Whether the first kept image is grey, and its name.
    grey: Option<(bool, String)>,
    labels: Vec<u32>,
    stretched: usize,
}

impl Accept<'_> {
    /// Takes the outcome of image `i`; `Ok(false)` once `max` images are kept.
    fn accept(&mut self, i: usize, outcome: Result<Outcome, DataError>) -> Result<bool, DataError> {
        let name = &self.source.names[i];
        let at = || self.source.root.join(name);
        self.summary.seen += 1;
        let (png, (w, h), is_grey, was_stretched) = match outcome? {
            Outcome::Refused(reason) => {
                self.summary.refused.push(Refused {
                    source: name.clone(),
                    reason,
                });
                return Ok(true);
            }
            Outcome::Kept {
                png,
                side,
                grey,
                stretched,
            } => (png, side, grey, stretched),
        };
        if w != h {
            return Err(DataError::format(
                &at(),
                format!(
                    "is {w}x{h}, not square; set a resolution (it is then stretched, as \
                     dataset_tool.py does) or a transform (center-crop, pad)"
                ),
            ));
        }
        match &self.side {
            None => self.side = Some((w, name.clone())),
            Some((s, first)) if *s != w => {
                return Err(DataError::format(
                    &at(),
                    format!(
                        "is {w}x{w} but {first} is {s}x{s}: images differ in size; set a \
                         resolution to resize them all"
                    ),
                ))
            }
            Some(_) => {}
        }
        match &self.grey {
            None => self.grey = Some((is_grey, name.clone())),
            Some((g, first)) if *g != is_grey => {
                let mode = |g: bool| if g { "grey" } else { "RGB" };
                return Err(DataError::format(
                    &at(),
                    format!(
                        "is {} but {first} is {}: the source mixes grey and RGB images; set \
                         channels (--channels rgb or grey) to convert them all",
                        mode(is_grey),
                        mode(*g)
                    ),
                ));
            }
            Some(_) => {}
        }
        let k = self.summary.kept;
        self.sink
            .add(&format!("{:05}/img{k:08}.png", k / 1000), &png)?;
        self.labels.push(self.source.labels.per_image[i]);
        self.stretched += usize::from(was_stretched);
        self.summary.kept += 1;
        Ok(self.summary.kept < self.max)
    }
}

/// Processes every image of `source` on `threads` threads and hands the outcomes to `sink` in
/// source order, until it returns `Ok(false)` or an error. Workers stay at most `window` images
/// ahead of `sink`, which bounds the encoded images held in memory.
fn in_order(
    plan: &Plan,
    source: &Source,
    threads: usize,
    sink: &mut dyn FnMut(usize, Result<Outcome, DataError>) -> Result<bool, DataError>,
) -> Result<(), DataError> {
    let total = source.len();
    let threads = threads.clamp(1, total.max(1));
    // About 256 MiB of encoded images in flight (a 1024x1024 RGB PNG is 3 MiB), 2 to 64 per thread.
    let side = u64::from(plan.resolution.unwrap_or(512));
    let per_image = (side * side * 3).max(1);
    let window =
        ((256u64 << 20) / per_image).clamp(2 * threads as u64, 64 * threads as u64) as usize;
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // How many outcomes `sink` has taken; workers wait on it when they are a window ahead.
    let gate = (Mutex::new(0usize), Condvar::new());
    let (tx, rx) = mpsc::channel::<(usize, Result<Outcome, DataError>)>();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, stop, gate) = (&next, &stop, &gate);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                {
                    let Ok(mut done) = gate.0.lock() else { return };
                    while i >= *done + window && !stop.load(Ordering::Relaxed) {
                        let Ok(d) = gate.1.wait(done) else { return };
                        done = d;
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let outcome =
                    std::panic::catch_unwind(AssertUnwindSafe(|| process(plan, source, i)))
                        .unwrap_or_else(|_| {
                            Err(DataError::format(
                                &source.root.join(&source.names[i]),
                                "converting it panicked (a gantry bug)",
                            ))
                        });
                if tx.send((i, outcome)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        let mut pending: BTreeMap<usize, Result<Outcome, DataError>> = BTreeMap::new();
        let mut want = 0;
        let result = (|| {
            while want < total {
                let Ok((i, outcome)) = rx.recv() else {
                    break;
                };
                pending.insert(i, outcome);
                let before = want;
                while let Some(outcome) = pending.remove(&want) {
                    let more = sink(want, outcome)?;
                    want += 1;
                    if !more {
                        return Ok(());
                    }
                }
                if want != before {
                    if let Ok(mut done) = gate.0.lock() {
                        *done = want;
                    }
                    gate.1.notify_all();
                }
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        let _guard = gate.0.lock();
        gate.1.notify_all();
        drop(_guard);
        // Dropping the receiver makes a worker that is still sending give up.
        drop(rx);
        result
    })
}

/// `dataset.json` as dataset_tool.py writes it (`json.dumps`): `{"labels": [["n", 3], ...]}`.
fn dataset_json(labels: &[u32], labelled: bool) -> String {
    if !labelled {
        return "{\"labels\": null}".into();
    }
    let mut s = String::with_capacity(32 * labels.len() + 16);
    s.push_str("{\"labels\": [");
    for (k, l) in labels.iter().enumerate() {
        if k > 0 {
            s.push_str(", ");
        }
        s.push_str(&format!("[\"{:05}/img{k:08}.png\", {l}]", k / 1000));
    }
    s.push_str("]}");
    s
}

/// Reads, decodes, fits and encodes image `i`.
fn process(plan: &Plan, source: &Source, i: usize) -> Result<Outcome, DataError> {
    let (path, bytes) = source.read(i);
    let img = match bytes.and_then(|b| crate::decode::decode(&b, &path)) {
        Ok(img) => img,
        Err(e) => return Ok(Outcome::Refused(Refusal::Unreadable(unprefixed(&e, &path)))),
    };
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return Ok(Outcome::Refused(Refusal::Unreadable(
            "has no pixels".into(),
        )));
    }
    let grey = match plan.channels {
        Channels::Grey => true,
        Channels::Rgb => false,
        Channels::Keep => {
            if has_transparency(&img) {
                return Ok(Outcome::Refused(Refusal::WrongMode(
                    "has transparent pixels; set channels (--channels rgb or grey) to drop the alpha"
                        .into(),
                )));
            }
            !img.color().has_color()
        }
    };
    let stretched = plan.transform == ConvertTransform::None
        && plan.resolution.is_some_and(|r| (w, h) != (r, r))
        && w != h;
    let png = if grey {
        fit(img.into_luma8(), plan).map(|b| encode(&b, ExtendedColorType::L8))
    } else {
        fit(img.into_rgb8(), plan).map(|b| encode(&b, ExtendedColorType::Rgb8))
    };
    match png {
        Ok((png, side)) => Ok(Outcome::Kept {
            png: png?,
            side,
            grey,
            stretched,
        }),
        Err(()) => Ok(Outcome::Refused(Refusal::TooSmall {
            width: w,
            height: h,
        })),
    }
}

/// The message of `e` without the leading "<path>: " (the summary names the image itself).
fn unprefixed(e: &DataError, path: &Path) -> String {
    let msg = e.to_string();
    let prefix = format!("{}: ", path.display());
    msg.strip_prefix(&prefix)
        .map_or(msg.clone(), str::to_string)
}

/// Whether `img` has an alpha channel with a pixel that is not fully opaque.
fn has_transparency(img: &DynamicImage) -> bool {
    match img {
        DynamicImage::ImageLumaA8(b) => b.pixels().any(|p| p.0[1] != u8::MAX),
        DynamicImage::ImageRgba8(b) => b.pixels().any(|p| p.0[3] != u8::MAX),
        DynamicImage::ImageLumaA16(b) => b.pixels().any(|p| p.0[1] != u16::MAX),
        DynamicImage::ImageRgba16(b) => b.pixels().any(|p| p.0[3] != u16::MAX),
        DynamicImage::ImageRgba32F(b) => b.pixels().any(|p| p.0[3] < 1.0),
        _ => false,
    }
}

/// `img` fitted to the plan's square; `Err(())`: too small for `center-crop-wide`.
fn fit<P>(img: ImageBuffer<P, Vec<u8>>, plan: &Plan) -> Result<ImageBuffer<P, Vec<u8>>, ()>
where
    P: Pixel<Subpixel = u8> + 'static,
{
    let (w, h) = img.dimensions();
    let resize = |img: &ImageBuffer<P, Vec<u8>>, nw: u32, nh: u32| {
        let (iw, ih) = img.dimensions();
        if (iw, ih) == (nw, nh) {
            return img.clone();
        }
        let c = usize::from(P::CHANNEL_COUNT);
        let raw = crate::resample::lanczos(
            img.as_raw(),
            iw as usize,
            ih as usize,
            c,
            nw as usize,
            nh as usize,
        );
        ImageBuffer::from_raw(nw, nh, raw).expect("lanczos returns nw * nh pixels")
    };
    Ok(match plan.transform {
        ConvertTransform::None => match plan.resolution {
            Some(r) if (w, h) != (r, r) => resize(&img, r, r),
            _ => img,
        },
        ConvertTransform::CenterCrop => {
            let c = w.min(h);
            let cropped = imageops::crop_imm(&img, (w - c) / 2, (h - c) / 2, c, c).to_image();
            match plan.resolution {
                Some(r) => resize(&cropped, r, r),
                None => cropped,
            }
        }
        ConvertTransform::CenterCropWide => {
            let r = plan
                .resolution
                .expect("Plan::new requires a resolution here");
            let band = plan.band;
            // dataset_tool.py: ch = int(np.round(width * h / w)) (round half to even).
            let ch = round_half_even(u64::from(r) * u64::from(h), u64::from(w));
            if w < r || ch < u64::from(band) {
                return Err(());
            }
            let ch = ch as u32; // <= h, as w >= r
            let rows = imageops::crop_imm(&img, 0, (h - ch) / 2, w, ch).to_image();
            let scaled = resize(&rows, r, band);
            let mut canvas = ImageBuffer::<P, Vec<u8>>::new(r, r);
            imageops::replace(&mut canvas, &scaled, 0, i64::from((r - band) / 2));
            canvas
        }
        ConvertTransform::Pad => {
            let long = w.max(h);
            let side = plan.resolution.unwrap_or(long);
            let short = |s: u32| {
                ((u64::from(s) * u64::from(side) + u64::from(long) / 2) / u64::from(long))
                    .clamp(1, u64::from(side)) as u32
            };
            let (nw, nh) = if w >= h {
                (side, short(h))
            } else {
                (short(w), side)
            };
            let scaled = resize(&img, nw, nh);
            if (nw, nh) == (side, side) {
                scaled
            } else {
                let mut canvas = ImageBuffer::<P, Vec<u8>>::new(side, side);
                imageops::replace(
                    &mut canvas,
                    &scaled,
                    i64::from((side - nw) / 2),
                    i64::from((side - nh) / 2),
                );
                canvas
            }
        }
    })
}

/// `num / den` rounded half to even (numpy's `np.round`).
fn round_half_even(num: u64, den: u64) -> u64 {
    let (q, r) = (num / den, num % den);
    match (2 * r).cmp(&den) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q & 1),
    }
}

/// An uncompressed PNG of `img` (PIL's `compress_level=0`), and its size.
fn encode<P>(
    img: &ImageBuffer<P, Vec<u8>>,
    color: ExtendedColorType,
) -> (Result<Vec<u8>, DataError>, (u32, u32))
where
    P: Pixel<Subpixel = u8>,
{
    let (w, h) = img.dimensions();
    let mut buf = Cursor::new(Vec::with_capacity(img.as_raw().len() + 1024));
    let r =
        PngEncoder::new_with_quality(&mut buf, CompressionType::Uncompressed, PngFilter::NoFilter)
            .write_image(img.as_raw(), w, h, color)
            .map(|()| buf.into_inner())
            .map_err(|e| DataError::format(Path::new("png"), e));
    (r, (w, h))
}

/// The output being written: a temporary zip or folder beside `dest`, renamed into place by
/// [`Sink::commit`] and removed by [`Sink::abandon`] (or when dropped uncommitted).
struct Sink {
    dest: PathBuf,
    tmp: PathBuf,
    overwrite: bool,
    kind: SinkKind,
    bytes: u64,
    done: bool,
}

enum SinkKind {
    Zip(Option<Box<zip::ZipWriter<BufWriter<File>>>>),
    Dir,
}

impl Sink {
    fn create(dest: &Path, overwrite: bool) -> Result<Sink, DataError> {
        let is_zip = dest
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("zip"));
        let exists = match fs::symlink_metadata(dest) {
            Ok(m) if is_zip && m.is_dir() => {
                return Err(DataError::config(
                    "--dest",
                    format!("{} is a directory, not a zip file", dest.display()),
                ))
            }
            Ok(m) if !is_zip && !m.is_dir() => {
                return Err(DataError::config(
                    "--dest",
                    format!("{} exists and is not a folder", dest.display()),
                ))
            }
            Ok(m) if m.is_dir() => fs::read_dir(dest)
                .map_err(|e| DataError::io(dest, e))?
                .next()
                .is_some(),
            Ok(_) => true,
            Err(_) => false,
        };
        if exists && !overwrite {
            return Err(DataError::config(
                "--dest",
                format!(
                    "{} already exists{} (pass --overwrite to replace it)",
                    dest.display(),
                    if is_zip { "" } else { " and is not empty" }
                ),
            ));
        }
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
        let file_name = dest
            .file_name()
            .ok_or_else(|| {
                DataError::config("--dest", format!("{} names no file", dest.display()))
            })?
            .to_string_lossy()
            .into_owned();
        let tmp = parent.join(format!(".{file_name}.{}.tmp", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let _ = fs::remove_file(&tmp);
        let kind = if is_zip {
            let f = File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
            SinkKind::Zip(Some(Box::new(zip::ZipWriter::new(
                BufWriter::with_capacity(1 << 20, f),
            ))))
        } else {
            fs::create_dir(&tmp).map_err(|e| DataError::io(&tmp, e))?;
            SinkKind::Dir
        };
        Ok(Sink {
            dest: dest.to_path_buf(),
            tmp,
            overwrite,
            kind,
            bytes: 0,
            done: false,
        })
    }

    fn add(&mut self, name: &str, bytes: &[u8]) -> Result<(), DataError> {
        match &mut self.kind {
            SinkKind::Zip(Some(w)) => {
                let opts = zip::write::FileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored)
                    .large_file(bytes.len() as u64 >= u64::from(u32::MAX));
                w.start_file(name, opts)
                    .and_then(|()| w.write_all(bytes).map_err(Into::into))
                    .map_err(|e| DataError::io(&self.tmp, e))?;
            }
            SinkKind::Zip(None) => unreachable!("entries are only added before commit"),
            SinkKind::Dir => {
                let p = self.tmp.join(name);
                if let Some(parent) = p.parent() {
                    fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
                }
                fs::write(&p, bytes).map_err(|e| DataError::io(&p, e))?;
                self.bytes += bytes.len() as u64;
            }
        }
        Ok(())
    }

    /// Finishes the output and renames it to `dest`; returns its size in bytes.
    fn commit(mut self) -> Result<u64, DataError> {
        let result = self.finish();
        if result.is_err() {
            self.abandon();
        }
        result
    }

    fn finish(&mut self) -> Result<u64, DataError> {
        let tmp = self.tmp.clone();
        if let SinkKind::Zip(w) = &mut self.kind {
            let mut w = w.take().expect("the zip writer is only taken here");
            let file = w
                .finish()
                .map_err(|e| DataError::io(&tmp, e))?
                .into_inner()
                .map_err(|e| DataError::io(&tmp, e.error()))?;
            file.sync_all().map_err(|e| DataError::io(&tmp, e))?;
            self.bytes = file.metadata().map_err(|e| DataError::io(&tmp, e))?.len();
            fs::rename(&tmp, &self.dest).map_err(|e| DataError::io(&self.dest, e))?;
        } else {
            // rename(2) replaces an empty directory; a full one is moved aside first.
            let aside = self.tmp.with_extension("old");
            let moved = self.overwrite
                && fs::read_dir(&self.dest).is_ok_and(|mut d| d.next().is_some())
                && fs::rename(&self.dest, &aside).is_ok();
            fs::rename(&tmp, &self.dest).map_err(|e| DataError::io(&self.dest, e))?;
            if moved {
                let _ = fs::remove_dir_all(&aside);
            }
        }
        self.done = true;
        Ok(self.bytes)
    }

    fn abandon(&mut self) {
        if !self.done {
            self.kind = SinkKind::Dir;
            let _ = fs::remove_file(&self.tmp);
            let _ = fs::remove_dir_all(&self.tmp);
            self.done = true;
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.abandon();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_half_even_matches_numpy() {
        assert_eq!(round_half_even(5, 2), 2); // 2.5 -> 2
        assert_eq!(round_half_even(7, 2), 4); // 3.5 -> 4
        assert_eq!(round_half_even(64, 10), 6); // 6.4
        assert_eq!(round_half_even(66, 10), 7);
    }

    #[test]
    fn dataset_json_is_written_as_python_json_dumps() {
        assert_eq!(dataset_json(&[], false), "{\"labels\": null}");
        assert_eq!(
            dataset_json(&[3, 0], true),
            "{\"labels\": [[\"00000/img00000000.png\", 3], [\"00000/img00000001.png\", 0]]}"
        );
    }

    #[test]
    fn names_parse_and_bad_options_are_refused() {
        assert_eq!(
            "center-crop-wide".parse::<ConvertTransform>().unwrap(),
            ConvertTransform::CenterCropWide
        );
        assert_eq!(
            "dataset-json".parse::<LabelSource>().unwrap(),
            LabelSource::DatasetJson
        );
        assert_eq!("grey".parse::<Channels>().unwrap(), Channels::Grey);
        let e = "crop".parse::<ConvertTransform>().unwrap_err().to_string();
        assert_eq!(
            e,
            "--transform: unknown value 'crop' (valid: none, center-crop, center-crop-wide, pad)"
        );
        let o = |f: fn(&mut ConvertOptions)| {
            let mut o = ConvertOptions {
                source: "a".into(),
                dest: "b.zip".into(),
                ..ConvertOptions::default()
            };
            f(&mut o);
            Plan::new(&o)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(o(|o| o.transform = ConvertTransform::CenterCropWide)
            .starts_with("--resolution: is required"));
        assert!(o(|o| o.height = Some(3)).starts_with("--height: is for"));
        assert!(o(|o| {
            o.transform = ConvertTransform::CenterCropWide;
            o.resolution = Some(8);
            o.height = Some(9);
        })
        .starts_with("--height: 9"));
        assert!(o(|o| o.resolution = Some(0)).starts_with("--resolution: 0"));
        assert!(o(|o| o.max_images = Some(0)).starts_with("--max-images"));
        assert!(o(|o| o.dest = "a".into()).contains("is the source itself"));
        assert_eq!(o(|_| {}), "");
    }
}
