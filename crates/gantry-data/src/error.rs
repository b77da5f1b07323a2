//! The crate's single error type.
//!
//! Every variant names the configuration key or file involved and renders as ONE line, because
//! these messages end up in CLI output and run logs where a multi-line error is hard to read.
//! The type is `Clone` (messages are stored as strings) so that a loader can hand the same
//! worker failure to every later `next_batch` call.

use std::fmt::Display;
use std::path::{Path, PathBuf};

/// Errors raised while configuring, opening, loading or writing data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// A configuration key (e.g. `data.path`, `batch_size`) has an unusable value.
    #[error("{key}: {msg}")]
    Config { key: String, msg: String },
    /// A file or directory could not be read or written.
    #[error("{}: {msg}", path.display())]
    Io { path: PathBuf, msg: String },
    /// A file was read but its contents do not match the expected format (bad magic, truncated).
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },
    /// An image file could not be decoded.
    #[error("{}: cannot decode image: {msg}", path.display())]
    Decode { path: PathBuf, msg: String },
    /// A loader worker thread failed outside of a dataset read (it panicked or vanished).
    #[error("data loader worker {worker}: {msg}")]
    Worker { worker: usize, msg: String },
}

/// `path`'s metadata, or the one-line error every source gives for a missing path.
pub(crate) fn existing(path: &std::path::Path) -> Result<std::fs::Metadata, DataError> {
    std::fs::metadata(path)
        .map_err(|_| DataError::config("data.path", format!("{} does not exist", path.display())))
}

impl DataError {
    /// A bad value for configuration `key`.
    pub fn config(key: impl Into<String>, msg: impl Display) -> Self {
        DataError::Config {
            key: key.into(),
            msg: one_line(msg),
        }
    }

    /// An I/O failure on `path`.
    pub fn io(path: &Path, err: impl Display) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            msg: one_line(err),
        }
    }

    /// Malformed contents of `path`.
    pub fn format(path: &Path, msg: impl Display) -> Self {
        DataError::Format {
            path: path.to_path_buf(),
            msg: one_line(msg),
        }
    }

    /// An undecodable image at `path`.
    pub fn decode(path: &Path, err: impl Display) -> Self {
        DataError::Decode {
            path: path.to_path_buf(),
            msg: one_line(err),
        }
    }

    /// A failure of loader worker `worker`.
    pub fn worker(worker: usize, msg: impl Display) -> Self {
        DataError::Worker {
            worker,
            msg: one_line(msg),
        }
    }
}

/// Collapses a message onto one line: upstream errors (image, io) occasionally carry newlines.
fn one_line(msg: impl Display) -> String {
    let s = msg.to_string();
    s.split(['\n', '\r'])
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_and_names_the_key_or_path() {
        let e = DataError::config("data.path", "/data/cats does not exist");
        assert_eq!(e.to_string(), "data.path: /data/cats does not exist");

        let e = DataError::decode(Path::new("/x/a.png"), "bad\nchunk\r\n crc");
        assert_eq!(
            e.to_string(),
            "/x/a.png: cannot decode image: bad; chunk; crc"
        );

        let e = DataError::worker(2, "panicked: boom\n");
        assert_eq!(e.to_string(), "data loader worker 2: panicked: boom");
        assert!(!e.to_string().contains('\n'));
    }
}
