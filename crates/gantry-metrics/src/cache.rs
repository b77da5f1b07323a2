//! A small on-disk feature cache keyed by a caller-given string (which should include the
//! extractor id, the data set and N), and the weights hash that goes into such keys.
//!
//! Entries are `.npz` archives (`pool`, optional `logits`, f64) written to a temporary file and
//! renamed, so an interrupted run never leaves a truncated entry behind.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::MetricsError;
use crate::features::{FeatureSet, Features};
use crate::npz;

/// First 8 hex digits of the SHA-256 of `bytes`.
pub fn hash_bytes(bytes: &[u8]) -> String {
    hex8(&Sha256::digest(bytes))
}

fn hex8(d: &[u8]) -> String {
    d.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// First 8 hex digits of the SHA-256 of a weights file, for cache keys: features cached with
/// one set of weights are never reused with another.
pub fn weights_hash(path: &Path) -> Result<String, MetricsError> {
    let mut f = std::fs::File::open(path).map_err(|e| MetricsError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| MetricsError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex8(&h.finalize()))
}

/// A directory of cached feature sets.
#[derive(Debug, Clone)]
pub struct FeatureCache {
    dir: PathBuf,
}

impl FeatureCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FeatureCache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file for `key`: its safe characters (readable) plus a hash of the whole key (unique).
    pub fn path_for(&self, key: &str) -> PathBuf {
        let readable: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .take(100)
            .collect();
        self.dir
            .join(format!("{readable}-{}.npz", hash_bytes(key.as_bytes())))
    }

    /// The cached set for `key`, or `None` if there is none. A corrupt entry is an error.
    pub fn load(&self, key: &str) -> Result<Option<FeatureSet>, MetricsError> {
        let path = self.path_for(key);
        if !path.exists() {
            return Ok(None);
        }
        let arrays = npz::read_npz(&path)?;
        let find = |k: &str| arrays.iter().find(|(n, _)| n == k).map(|(_, t)| t);
        let pool = find("pool")
            .ok_or_else(|| MetricsError::format(&path, "no 'pool' array in the cache entry"))?;
        let logits = find("logits");
        let set = FeatureSet::from_tensors(pool, logits)
            .map_err(|e| MetricsError::format(&path, format!("cache entry: {e}")))?;
        Ok(Some(set))
    }

    /// Stores `set` under `key` atomically; returns the file written.
    pub fn store(&self, key: &str, set: &FeatureSet) -> Result<PathBuf, MetricsError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| MetricsError::io(&self.dir, e))?;
        let path = self.path_for(key);
        let pool = set.pool()?;
        let logits = set.logits()?;
        let mut arrays = vec![("pool", &pool)];
        if let Some(l) = &logits {
            arrays.push(("logits", l));
        }
        npz::write_npz(&path, &arrays)?;
        Ok(path)
    }

    /// The cached set for `key`, or `compute()` stored under `key`.
    pub fn get_or_compute(
        &self,
        key: &str,
        compute: impl FnOnce() -> Result<FeatureSet, MetricsError>,
    ) -> Result<FeatureSet, MetricsError> {
        if let Some(s) = self.load(key)? {
            return Ok(s);
        }
        let s = compute()?;
        self.store(key, &s)?;
        Ok(s)
    }
}

/// Lets callers build a cache entry from a single batch.
impl TryFrom<Features> for FeatureSet {
    type Error = MetricsError;
    fn try_from(f: Features) -> Result<Self, MetricsError> {
        let mut s = FeatureSet::new();
        s.push(&f)?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_short_sha256_prefixes() {
        // sha256("abc") = ba7816bf...
        assert_eq!(hash_bytes(b"abc"), "ba7816bf");
    }

    #[test]
    fn keys_map_to_distinct_readable_file_names() {
        let c = FeatureCache::new("/tmp/x");
        let a = c.path_for("cifar10/train n=50000");
        let b = c.path_for("cifar10/train n=50001");
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("cifar10_train_n_50000-") && name.ends_with(".npz"),
            "{name}"
        );
        assert_ne!(c.path_for("a/b"), c.path_for("a_b"));
    }
}
