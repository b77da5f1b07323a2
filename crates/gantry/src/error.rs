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
    /// libtorch reported an error (shape mismatch, ...).
    #[error("torch: {0}")]
    Torch(String),
    /// An allocation failed while working: `what` names the work and the settings that sized
    /// it, `detail` the size asked for.
    #[error("out of memory {what}: {detail}")]
    OutOfMemory { what: String, detail: String },
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

/// Sizes in messages: `1.5 GB`, `512.0 MB`, `12 bytes` (decimal units, as `df -H` and disk makers count).
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    for (unit, size) in [
        ("PB", 1e15),
        ("TB", 1e12),
        ("GB", 1e9),
        ("MB", 1e6),
        ("kB", 1e3),
    ] {
        if b >= size {
            return format!("{:.1} {unit}", b / size);
        }
    }
    format!("{bytes} bytes")
}

/// What a libtorch allocation failure says about its size ("512.0 GB"), if `text` is one: the
/// CPU allocator's "can't allocate memory: you tried to allocate N bytes" or CUDA's "out of
/// memory. Tried to allocate 2.00 GiB".
pub fn allocation_failure(text: &str) -> Option<String> {
    if let Some(i) = text.find("you tried to allocate ") {
        let rest = &text[i + "you tried to allocate ".len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(bytes) = digits.parse::<u64>() {
            return Some(format!(
                "libtorch could not allocate {} for one tensor",
                human_bytes(bytes)
            ));
        }
        return Some("libtorch could not allocate a tensor".into());
    }
    if let Some(i) = text.find("Tried to allocate ") {
        let rest = &text[i + "Tried to allocate ".len()..];
        let size: String = rest.split([' ', '(']).take(2).collect::<Vec<_>>().join(" ");
        return Some(format!(
            "the GPU could not allocate {} for one tensor",
            size.trim()
        ));
    }
    (text.contains("can't allocate memory") || text.contains("out of memory"))
        .then(|| "libtorch could not allocate a tensor".into())
}

thread_local! {
    /// Depth of [`catch_alloc`] calls on this thread: their allocation panics print nothing.
    static GUARDED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Runs `f`, turning a libtorch allocation failure, which tch reports by panicking (its
/// infallible functions unwrap), into [`Error::OutOfMemory`] naming `what` ("building the
/// plug-ins (fq.k = [2000000000])"). Other panics go on as panics.
pub fn catch_alloc<T>(what: impl FnOnce() -> String, f: impl FnOnce() -> Result<T>) -> Result<T> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let quiet = GUARDED.with(|g| g.get() > 0)
                && allocation_failure(&panic_text(info.payload())).is_some();
            if !quiet {
                previous(info)
            }
        }));
    });
    GUARDED.with(|g| g.set(g.get() + 1));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(g.get() - 1));
    match result {
        Ok(r) => r,
        Err(payload) => match allocation_failure(&panic_text(payload.as_ref())) {
            Some(detail) => Err(Error::OutOfMemory {
                what: what(),
                detail,
            }),
            None => std::panic::resume_unwind(payload),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_failures_become_one_line_and_other_panics_stay_panics() {
        let e = catch_alloc(
            || "while building the plug-ins (fq.k = [2000000000])".into(),
            || -> Result<()> {
                // Far beyond any machine: libtorch refuses it at once.
                let _t = tch::Tensor::zeros([1 << 50], (tch::Kind::Float, tch::Device::Cpu));
                Ok(())
            },
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("out of memory while building the plug-ins (fq.k = [2000000000]): libtorch could not allocate 4.5 PB"),
            "{text}"
        );
        assert!(!e.is_user_error());
        assert!(!text.contains('\n'));
        let other = std::panic::catch_unwind(|| {
            let _ = catch_alloc(String::new, || -> Result<()> { panic!("a bug") });
        });
        assert!(other.is_err());
        assert_eq!(
            allocation_failure(
                "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)"
            )
            .as_deref(),
            Some("the GPU could not allocate 2.00 GiB for one tensor")
        );
    }
}
