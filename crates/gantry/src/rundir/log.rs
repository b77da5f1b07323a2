//! `metrics.jsonl`: one JSON object per logged step (`step`, losses, `images_per_s`, `wall_s`, ...)
//! and one per event (`{"step": .., "event": "non-finite", "detail": ..}`). On resume, lines past
//! the checkpoint's step are dropped so the log reads as one uninterrupted run, except the
//! [`HISTORY`] events: a divergence and the rollback that answered it are part of the run's story.

use super::tensorboard::EventWriter;
use crate::error::{Error, Result};
use crate::stats::Stats;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// Events kept whatever their step when the log is reopened at an earlier step.
pub const HISTORY: &[&str] = &["non-finite", "rollback"];

pub struct MetricsLog {
    path: PathBuf,
    /// `None`: a log that writes nothing (the other ranks of a data-parallel job).
    file: Option<File>,
    tensorboard: Option<EventWriter>,
}

impl MetricsLog {
    /// Opens `path` for appending after `resume_step` (0: a new run), and with `tensorboard`
    /// an event file beside it.
    pub fn open(path: &Path, resume_step: u64, tensorboard: bool) -> Result<Self> {
        if path.exists() {
            let kept: Vec<String> =
                BufReader::new(File::open(path).map_err(|e| Error::io(path, e))?)
                    .lines()
                    .map_while(|l| l.ok())
                    .filter(|l| {
                        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
                            return false;
                        };
                        let history = v
                            .get("event")
                            .and_then(|e| e.as_str())
                            .is_some_and(|e| HISTORY.contains(&e));
                        history
                            || v.get("step")
                                .and_then(|s| s.as_u64())
                                .is_some_and(|s| s <= resume_step)
                    })
                    .collect();
            let mut text = kept.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            crate::util::write_atomic(path, text.as_bytes())?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let tensorboard = match tensorboard {
            true => Some(EventWriter::open(
                path.parent().unwrap_or(Path::new(".")),
                resume_step,
            )?),
            false => None,
        };
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file: Some(file),
            tensorboard,
        })
    }

    /// A log that writes nothing.
    pub fn disabled() -> Self {
        MetricsLog {
            path: PathBuf::new(),
            file: None,
            tensorboard: None,
        }
    }

    fn append(&mut self, value: serde_json::Value) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let mut line = value.to_string();
        line.push('\n');
        file.write_all(line.as_bytes())
            .map_err(|e| Error::io(&self.path, e))
    }

    pub fn write(&mut self, step: u64, stats: &Stats) -> Result<()> {
        let mut obj = serde_json::Map::new();
        obj.insert("step".into(), step.into());
        for (k, v) in stats.iter() {
            let v = serde_json::Number::from_f64(*v)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null);
            obj.insert(k.clone(), v);
        }
        self.append(serde_json::Value::Object(obj))?;
        if let Some(tb) = self.tensorboard.as_mut() {
            tb.scalars(step, stats.iter().map(|(k, v)| (k.as_str(), *v)))?;
        }
        Ok(())
    }

    pub fn event(&mut self, step: u64, event: &str, detail: &str) -> Result<()> {
        self.append(serde_json::json!({"step": step, "event": event, "detail": detail}))?;
        if let Some(tb) = self.tensorboard.as_mut() {
            tb.text(step, &format!("events/{event}"), detail)?;
        }
        Ok(())
    }

    /// An image already written as a PNG file (a sample grid), for TensorBoard only.
    pub fn image(&mut self, step: u64, tag: &str, png: &Path) -> Result<()> {
        if let Some(tb) = self.tensorboard.as_mut() {
            let bytes = std::fs::read(png).map_err(|e| Error::io(png, e))?;
            tb.png(step, tag, &bytes)?;
        }
        Ok(())
    }

    /// Text for TensorBoard only (the resolved configuration, as a fenced block).
    pub fn text(&mut self, step: u64, tag: &str, text: &str) -> Result<()> {
        if let Some(tb) = self.tensorboard.as_mut() {
            tb.text(step, tag, text)?;
        }
        Ok(())
    }
}

/// Reads every object of a metrics.jsonl (for reports and tests). A last line cut short (a
/// process killed while writing it) is left out; any other line that is not a JSON object means
/// the file is not a gantry log, and is an error naming it.
pub fn read(path: &Path) -> Result<Vec<serde_json::Value>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let torn_tail = !bytes.is_empty() && !bytes.ends_with(b"\n");
    let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<serde_json::Value>(line) {
            Ok(v) if v.is_object() => out.push(v),
            _ if torn_tail && i == lines.len() - 1 => {}
            _ => {
                return Err(Error::input(
                    path,
                    format!(
                        "line {} is not a JSON object: not a gantry metrics log, or a damaged one",
                        i + 1
                    ),
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_left_out_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(&path, "{\"step\": 1}\n{\"step\": 2}\n{\"st").unwrap();
        assert_eq!(read(&path).unwrap().len(), 2);
        std::fs::write(&path, b"\x8f\x01zz\n{\"step\": 2}\n").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.ends_with("metrics.jsonl: line 1 is not a JSON object: not a gantry metrics log, or a damaged one"), "{e}");
        std::fs::write(&path, "{\"step\": 1}\n[1, 2]\n").unwrap();
        assert!(read(&path).is_err());
    }
}
