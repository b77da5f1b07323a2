//! `MetricsError`: every failure names the file, key or numbers involved, on one line.

use std::path::{Path, PathBuf};

/// The file users must pass for FID numbers that compare with papers.
pub const FID_WEIGHTS_FILE: &str = "pt_inception-2015-12-05-6726825d.pth";
/// Its size in bytes, so a truncated download is recognisable.
pub const FID_WEIGHTS_BYTES: u64 = 95_628_359;

/// Errors of gantry-metrics. Display is a single line (libtorch messages are cut to their first
/// line) so the CLI can print `gantry: error: {err}`.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The Inception weights file is missing, unreadable or not a weights file.
    #[error(
        "{}: {reason} (FID needs {FID_WEIGHTS_FILE}, 95,628,359 bytes; pass its path or set GANTRY_FID_WEIGHTS)",
        path.display()
    )]
    Weights { path: PathBuf, reason: String },
    /// A key the network needs is absent from the weights file.
    #[error(
        "{}: missing key {key} (expected {FID_WEIGHTS_FILE}, 95,628,359 bytes)",
        path.display()
    )]
    MissingKey { path: PathBuf, key: String },
    /// A key has the wrong shape.
    #[error("{}: {key} is {found:?}, FID Inception wants {expected:?}", path.display())]
    KeyShape {
        path: PathBuf,
        key: String,
        found: Vec<i64>,
        expected: Vec<i64>,
    },
    /// A torch.save / safetensors / npz file is malformed (truncated, corrupt, unsupported).
    #[error("{}: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    /// No weights path was given (no flag, no `GANTRY_FID_WEIGHTS`).
    #[error(
        "no FID Inception weights given: pass the path of {FID_WEIGHTS_FILE} (95,628,359 bytes) \
         or set GANTRY_FID_WEIGHTS; gantry does not download it"
    )]
    NoWeights,
    /// An I/O failure on a named file. (The cause is in the message, not chained, so that
    /// `{err:#}` prints it once.)
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// A tensor argument has the wrong rank, shape or dtype.
    #[error("{what}: expected {expected}, got {found}")]
    Input {
        what: String,
        expected: String,
        found: String,
    },
    /// Fewer samples than a metric's protocol needs.
    #[error("{metric}: needs at least {needed} samples per set, got {n1} and {n2}{hint}")]
    TooFewSamples {
        metric: &'static str,
        needed: usize,
        n1: usize,
        n2: usize,
        hint: &'static str,
    },
    /// A metric came out NaN or infinite.
    #[error("{metric} is not finite ({detail})")]
    NonFinite {
        metric: &'static str,
        detail: String,
    },
    /// An error raised by libtorch while running an op.
    #[error("{context}: {message}")]
    Torch { context: String, message: String },
}

impl MetricsError {
    pub(crate) fn torch(context: impl Into<String>, err: tch::TchError) -> Self {
        MetricsError::Torch {
            context: context.into(),
            message: first_line(&err.to_string()),
        }
    }

    pub(crate) fn format(path: &Path, reason: impl Into<String>) -> Self {
        MetricsError::Format {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        MetricsError::Io {
            path: path.to_path_buf(),
            cause: source,
        }
    }

    pub fn input(
        what: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        MetricsError::Input {
            what: what.into(),
            expected: expected.into(),
            found: found.into(),
        }
    }
}

/// libtorch errors carry a C++ backtrace; keep the message only.
fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("unknown libtorch error")
        .to_string()
}

/// `.map_err(tch_err("context"))` for tch's fallible ops.
pub(crate) fn tch_err(context: &'static str) -> impl Fn(tch::TchError) -> MetricsError {
    move |e| MetricsError::torch(context, e)
}

/// `[N, D]` of a feature matrix, or the input error every metric gives for another shape.
pub(crate) fn feature_shape(x: &tch::Tensor, what: &str) -> Result<[i64; 2], MetricsError> {
    match x.size()[..] {
        [n, d] => Ok([n, d]),
        _ => Err(MetricsError::input(
            what,
            "a [N, D] tensor",
            format!("{:?}", x.size()),
        )),
    }
}

/// A feature matrix in f64, the precision every metric computes in.
pub(crate) fn features_f64(x: &tch::Tensor, what: &str) -> Result<tch::Tensor, MetricsError> {
    feature_shape(x, what)?;
    x.f_to_kind(tch::Kind::Double)
        .map_err(tch_err("features to f64"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_and_names_the_numbers() {
        let e = MetricsError::KeyShape {
            path: PathBuf::from("w.pth"),
            key: "fc.weight".into(),
            found: vec![10, 2048],
            expected: vec![1008, 2048],
        };
        assert_eq!(
            e.to_string(),
            "w.pth: fc.weight is [10, 2048], FID Inception wants [1008, 2048]"
        );
        let e = MetricsError::Weights {
            path: PathBuf::from("/x/y.pth"),
            reason: "no such file".into(),
        };
        let s = e.to_string();
        assert!(
            s.contains(FID_WEIGHTS_FILE) && s.contains("95,628,359"),
            "{s}"
        );
        assert!(!s.contains('\n'));
    }

    #[test]
    fn torch_messages_are_cut_to_one_line() {
        assert_eq!(first_line("\n  boom here\nframe 1\nframe 2"), "boom here");
        assert_eq!(first_line(""), "unknown libtorch error");
    }
}
