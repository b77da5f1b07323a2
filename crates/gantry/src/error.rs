//! `gantry::Error`: every variant carries the context a user needs to fix the problem, and its
//! `Display` is a single line (the CLI prints it as `gantry: error: ...`).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration key has a bad value, or the key does not exist.
    #[error("{key}: {msg}")]
    Config { key: String, msg: String },
    /// A data set could not be opened or read.
    #[error(transparent)]
    Data(#[from] gantry_data::DataError),
    /// A checkpoint is missing, truncated, or belongs to another model.
    #[error("{}: {msg}", path.display())]
    Checkpoint { path: PathBuf, msg: String },
    /// A file or directory the user named is missing, unreadable or not what it should be (bad
    /// input: exit code 2).
    #[error("{}: {msg}", path.display())]
    Input { path: PathBuf, msg: String },
    /// Reading or writing failed while working (a full disk, a vanished directory): a failed
    /// run (exit code 1), not bad input.
    #[error("{}: {msg}", path.display())]
    Io { path: PathBuf, msg: String },
    /// The requested device is not available.
    #[error("device {device}: {msg}")]
    Device { device: String, msg: String },
    /// A collective of a data-parallel job failed (a rank died, hung past the timeout, or could
    /// not join): a failed run.
    #[error("rank {rank}: {msg}")]
    Dist { rank: usize, msg: String },
    /// A loss or gradient became NaN or infinite.
    #[error("non-finite {what} at step {step}")]
    NonFinite { step: u64, what: String },
    /// The run was interrupted (Ctrl-C / SIGTERM) after saving a checkpoint.
    #[error("interrupted at step {step}; resume with: gantry train --resume {}", run_dir.display())]
    Interrupted { step: u64, run_dir: PathBuf },
    /// A metric could not be computed (missing weights, too few samples, ...).
    #[error("{0}")]
    Metrics(String),
    /// libtorch reported an error (shape mismatch, out of memory, ...).
    #[error("torch: {0}")]
    Torch(String),
}

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        // libtorch messages carry a C++ backtrace after the first line; keep the first line.
        let text = e.to_string();
        Error::Torch(text.lines().next().unwrap_or("").to_string())
    }
}

impl Error {
    pub fn config(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            msg: msg.into(),
        }
    }
    pub fn io(path: impl Into<PathBuf>, err: impl std::fmt::Display) -> Self {
        Error::Io {
            path: path.into(),
            msg: err.to_string(),
        }
    }
    pub fn input(path: impl Into<PathBuf>, err: impl std::fmt::Display) -> Self {
        Error::Input {
            path: path.into(),
            msg: err.to_string(),
        }
    }
    pub fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            msg: msg.into(),
        }
    }
    /// Bad input from the user (exit code 2) rather than a failed run (exit code 1).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::Config { .. }
                | Error::Data(_)
                | Error::Device { .. }
                | Error::Checkpoint { .. }
                | Error::Input { .. }
                | Error::Metrics(_)
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
