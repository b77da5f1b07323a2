//! TensorBoard event files (`events.out.tfevents.*`) in a run directory, written beside
//! `metrics.jsonl` by [`super::log::MetricsLog`]: every logged scalar under its `metrics.jsonl`
//! name, sample grids as images, the resolved configuration and the log's events as text.
//! `tensorboard --logdir runs/` then shows runs side by side.
//!
//! The format is TensorFlow's record file of `Event` protocol buffers: per record a little-endian
//! `u64` length, the masked CRC-32C of those 8 bytes, the message, the masked CRC-32C of the
//! message. The messages are declared here with `prost` (the fields of tensorflow's
//! `event.proto` / `summary.proto` that gantry writes), the checksums come from `crc32c`.
//!
//! On resume the log continues as one uninterrupted run, like `metrics.jsonl`: the existing event
//! files are rewritten into one, keeping only the events at or before the checkpoint's step, so
//! TensorBoard sees neither duplicated nor orphaned steps.

use crate::error::{Error, Result};
use prost::Message;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// `tensorflow.Event`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    pub what: Option<What>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<Value>,
}

/// `tensorflow.Summary.Value`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Value {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
    #[prost(oneof = "Kind", tags = "2, 4, 8")]
    pub kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    #[prost(float, tag = "2")]
    SimpleValue(f32),
    #[prost(message, tag = "4")]
    Image(Image),
    #[prost(message, tag = "8")]
    Tensor(TensorProto),
}

/// `tensorflow.Summary.Image`: an encoded PNG.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Image {
    #[prost(int32, tag = "1")]
    pub height: i32,
    #[prost(int32, tag = "2")]
    pub width: i32,
    #[prost(int32, tag = "3")]
    pub colorspace: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub encoded_image_string: Vec<u8>,
}

/// `tensorflow.SummaryMetadata` (the plugin a tensor summary belongs to).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginData {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
}

/// `tensorflow.TensorProto`, as far as a scalar string tensor (the text plugin) needs.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    /// `DT_STRING` = 7.
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShape>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// `tensorflow.TensorShapeProto` (empty: a scalar).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShape {}

const DT_STRING: i32 = 7;
/// The file name's prefix TensorBoard looks for.
pub const PREFIX: &str = "events.out.tfevents.";

fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn record(msg: &[u8]) -> Vec<u8> {
    let len = (msg.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(msg.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(msg);
    out.extend_from_slice(&masked_crc(msg).to_le_bytes());
    out
}

/// The events of one file, in order; reading stops at the first torn or corrupt record (a
/// process killed mid-write), as TensorBoard's own reader does.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    let mut pos = 0usize;
    while let Some(head) = bytes.get(pos..pos + 12) {
        let len_bytes: [u8; 8] = head[..8].try_into().expect("8 bytes");
        let crc = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        if crc != masked_crc(&len_bytes) {
            break;
        }
        let Ok(len) = usize::try_from(u64::from_le_bytes(len_bytes)) else {
            break;
        };
        let Some(body) = pos
            .checked_add(12)
            .and_then(|s| s.checked_add(len).map(|e| (s, e)))
            .and_then(|(s, e)| Some((bytes.get(s..e)?, e)))
        else {
            break;
        };
        let (msg, end) = body;
        let Some(tail) = bytes.get(end..end + 4) else {
            break;
        };
        if u32::from_le_bytes(tail.try_into().expect("4 bytes")) != masked_crc(msg) {
            break;
        }
        match Event::decode(msg) {
            Ok(e) => out.push(e),
            Err(_) => break,
        }
        pos = end + 4;
    }
    Ok(out)
}

/// The event files of a directory, oldest first.
pub fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(PREFIX))
        })
        .collect();
    files.sort();
    files
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(0);
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    if ok && !name.is_empty() && !name.contains('/') {
        name
    } else {
        "localhost".into()
    }
}

/// Appends events to one `events.out.tfevents.*` file of a run directory.
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// A new event file in `dir`. Events of earlier files (an interrupted run's) are carried
    /// into it when their step is at most `resume_step`, and the earlier files removed.
    pub fn open(dir: &Path, resume_step: u64) -> Result<Self> {
        let earlier = event_files(dir);
        let mut kept = Vec::new();
        for f in &earlier {
            kept.extend(
                read_events(f)?
                    .into_iter()
                    .filter(|e| !matches!(e.what, Some(What::FileVersion(_))))
                    .filter(|e| u64::try_from(e.step).is_ok_and(|s| s <= resume_step)),
            );
        }
        // Seconds, then the same hostname.pid suffix TensorFlow uses; a counter keeps two files
        // of one second apart.
        let stem = format!(
            "{PREFIX}{}.{}.{}",
            now() as u64,
            hostname(),
            std::process::id()
        );
        let path = (0..)
            .map(|i| dir.join(format!("{stem}.{i}")))
            .find(|p| !p.exists())
            .expect("an unused name");
        let tmp = path.with_extension("writing");
        let mut out = Vec::new();
        let version = Event {
            wall_time: now(),
            step: 0,
            what: Some(What::FileVersion("brain.Event:2".into())),
        };
        out.extend(record(&version.encode_to_vec()));
        for e in &kept {
            out.extend(record(&e.encode_to_vec()));
        }
        std::fs::write(&tmp, &out).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        for f in earlier {
            std::fs::remove_file(&f).map_err(|e| Error::io(&f, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(EventWriter {
            path,
            file: BufWriter::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, step: u64, values: Vec<Value>) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let e = Event {
            wall_time: now(),
            step: step as i64,
            what: Some(What::Summary(Summary { value: values })),
        };
        self.file
            .write_all(&record(&e.encode_to_vec()))
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Scalars at `step` (non-finite values are written as they are: TensorBoard shows them).
    pub fn scalars<'a>(
        &mut self,
        step: u64,
        values: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> Result<()> {
        let values = values
            .into_iter()
            .map(|(tag, v)| Value {
                tag: tag.to_string(),
                metadata: None,
                kind: Some(Kind::SimpleValue(v as f32)),
            })
            .collect();
        self.write(step, values)
    }

    /// An image from an encoded PNG (its size read from the header).
    pub fn png(&mut self, step: u64, tag: &str, png: &[u8]) -> Result<()> {
        let (width, height) = png_size(png).unwrap_or((0, 0));
        let image = Image {
            height: height as i32,
            width: width as i32,
            colorspace: 3,
            encoded_image_string: png.to_vec(),
        };
        self.write(
            step,
            vec![Value {
                tag: tag.to_string(),
                metadata: None,
                kind: Some(Kind::Image(image)),
            }],
        )
    }

    /// Text (markdown in TensorBoard's text tab).
    pub fn text(&mut self, step: u64, tag: &str, text: &str) -> Result<()> {
        let value = Value {
            tag: tag.to_string(),
            metadata: Some(SummaryMetadata {
                plugin_data: Some(PluginData {
                    plugin_name: "text".into(),
                }),
            }),
            kind: Some(Kind::Tensor(TensorProto {
                dtype: DT_STRING,
                tensor_shape: Some(TensorShape {}),
                string_val: vec![text.as_bytes().to_vec()],
            })),
        };
        self.write(step, vec![value])
    }
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.get(..8)? != b"\x89PNG\r\n\x1a\n" || png.get(12..16)? != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(png.get(16..20)?.try_into().ok()?);
    let h = u32::from_be_bytes(png.get(20..24)?.try_into().ok()?);
    Some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The masked CRC of TensorFlow's record format (`tensorflow/core/lib/hash/crc32c.h`:
    /// `Mask(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8`), on the CRC-32C check value.
    #[test]
    fn records_are_framed_as_tensorflow_frames_them() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc(b"123456789"), 0xc78a_b0e5);
        assert_eq!(masked_crc(b""), 0xa282_ead8);
        let r = record(b"abc");
        assert_eq!(r.len(), 8 + 4 + 3 + 4);
        assert_eq!(&r[..8], &3u64.to_le_bytes());
        assert_eq!(
            u32::from_le_bytes(r[8..12].try_into().unwrap()),
            masked_crc(&r[..8])
        );
        assert_eq!(&r[12..15], b"abc");
        assert_eq!(
            u32::from_le_bytes(r[15..].try_into().unwrap()),
            masked_crc(b"abc")
        );
    }

    #[test]
    fn resuming_keeps_the_events_up_to_the_checkpoint_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::open(dir.path(), 0).unwrap();
        for step in 1..=5 {
            w.scalars(step, [("loss", step as f64)]).unwrap();
        }
        let first = w.path().to_path_buf();
        drop(w);
        // A record cut short by a kill.
        let mut bytes = std::fs::read(&first).unwrap();
        bytes.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&first, bytes).unwrap();
        let w = EventWriter::open(dir.path(), 3).unwrap();
        let files = event_files(dir.path());
        assert_eq!(files, [w.path().to_path_buf()]);
        let steps: Vec<i64> = read_events(w.path())
            .unwrap()
            .iter()
            .filter(|e| matches!(e.what, Some(What::Summary(_))))
            .map(|e| e.step)
            .collect();
        assert_eq!(steps, [1, 2, 3]);
    }
}
