//! Feature extraction as the rest of gantry sees it: a [`FeatureExtractor`] turns uint8 images
//! into per-image features, and a [`FeatureSet`] accumulates them (f64) for the metrics.

use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::error::{tch_err, MetricsError};
use crate::inception::{FidInception, POOL3_DIM};
use crate::preprocess::{check_images, preprocess, to_device, Preprocessing};
use crate::stats::Stats;

/// Per-image features of one batch, on the CPU.
#[derive(Debug)]
pub struct Features {
    /// [B, D] (float32 from the Inception network).
    pub pool: Tensor,
    /// [B, classes] logits without bias, for the Inception Score, when the extractor has them.
    pub logits: Option<Tensor>,
}

/// Anything that maps uint8 images [B, C, H, W] to features.
pub trait FeatureExtractor {
    /// Identifies network, weights and preprocessing, for cache keys and reports.
    fn id(&self) -> String;
    /// Feature width D.
    fn dim(&self) -> usize;
    fn extract(&self, images_u8: &Tensor) -> Result<Features, MetricsError>;
}

/// The FID Inception with one preprocessing mode, run in batches.
#[derive(Debug)]
pub struct InceptionExtractor {
    pub net: FidInception,
    pub mode: Preprocessing,
    /// Images per forward pass (pytorch-fid's default is 50).
    pub batch_size: usize,
}

impl InceptionExtractor {
    pub const DEFAULT_BATCH_SIZE: usize = 50;

    pub fn new(net: FidInception, mode: Preprocessing) -> Self {
        InceptionExtractor {
            net,
            mode,
            batch_size: Self::DEFAULT_BATCH_SIZE,
        }
    }

    /// Loads the weights at `path` onto `device`.
    pub fn load(path: &Path, device: Device, mode: Preprocessing) -> Result<Self, MetricsError> {
        Ok(Self::new(FidInception::load(path, device)?, mode))
    }
}

impl FeatureExtractor for InceptionExtractor {
    fn id(&self) -> String {
        format!("fid-inception-{}-{}", self.net.weights_id(), self.mode.id())
    }

    fn dim(&self) -> usize {
        POOL3_DIM
    }

    fn extract(&self, images_u8: &Tensor) -> Result<Features, MetricsError> {
        let n = images_u8.size().first().copied().unwrap_or(0);
        let step = self.batch_size.max(1) as i64;
        let (mut pools, mut logits) = (Vec::new(), Vec::new());
        let mut start = 0;
        while start < n {
            let len = step.min(n - start);
            let batch = images_u8
                .f_narrow(0, start, len)
                .map_err(tch_err("image batch"))?;
            let batch = to_device(&batch, self.net.device())?;
            let x = preprocess(&batch, self.mode)?;
            let (p, l) = self.net.forward(&x)?;
            pools.push(
                p.f_to_device(Device::Cpu)
                    .map_err(tch_err("features to CPU"))?,
            );
            logits.push(
                l.f_to_device(Device::Cpu)
                    .map_err(tch_err("logits to CPU"))?,
            );
            start += len;
        }
        if pools.is_empty() {
            // Validate the shape even for an empty batch, then return empty features.
            check_images(images_u8)?;
            let empty = |d: usize| Tensor::zeros([0, d as i64], (Kind::Float, Device::Cpu));
            return Ok(Features {
                pool: empty(POOL3_DIM),
                logits: Some(empty(crate::inception::LOGITS_DIM)),
            });
        }
        Ok(Features {
            pool: Tensor::f_cat(&pools, 0).map_err(tch_err("features"))?,
            logits: Some(Tensor::f_cat(&logits, 0).map_err(tch_err("logits"))?),
        })
    }
}

/// Features of a whole image set, in f64 on the CPU: [N, D] pool features and, when every
/// batch had them, [N, classes] logits.
#[derive(Debug, Default)]
pub struct FeatureSet {
    pool: Vec<Tensor>,
    logits: Option<Vec<Tensor>>,
    dim: Option<i64>,
    len: usize,
}

fn f64_cpu(t: &Tensor, what: &'static str) -> Result<Tensor, MetricsError> {
    t.f_to_device(Device::Cpu)
        .and_then(|t| t.f_to_kind(Kind::Double))
        .map_err(tch_err(what))
}

impl FeatureSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// A set from [N, D] features and optional [N, C] logits.
    pub fn from_tensors(pool: &Tensor, logits: Option<&Tensor>) -> Result<Self, MetricsError> {
        let mut s = Self::new();
        s.push(&Features {
            pool: pool.shallow_clone(),
            logits: logits.map(Tensor::shallow_clone),
        })?;
        Ok(s)
    }

    /// Appends one batch; widths and the presence of logits must agree with earlier batches.
    pub fn push(&mut self, f: &Features) -> Result<(), MetricsError> {
        let size = f.pool.size();
        let [b, d] = size[..] else {
            return Err(MetricsError::input(
                "features",
                "[B, D]",
                format!("{size:?}"),
            ));
        };
        if let Some(dim) = self.dim {
            if dim != d {
                return Err(MetricsError::input(
                    "features",
                    format!("width {dim} like the earlier batches"),
                    format!("{size:?}"),
                ));
            }
        }
        if let Some(l) = &f.logits {
            if l.dim() != 2 || l.size()[0] != b {
                return Err(MetricsError::input(
                    "logits",
                    format!("[{b}, classes]"),
                    format!("{:?}", l.size()),
                ));
            }
        }
        let first = self.dim.is_none();
        match (&mut self.logits, &f.logits) {
            (Some(ls), Some(l)) => {
                if let Some(prev) = ls.first() {
                    if prev.size()[1] != l.size()[1] {
                        return Err(MetricsError::input(
                            "logits",
                            format!("{} classes like the earlier batches", prev.size()[1]),
                            format!("{:?}", l.size()),
                        ));
                    }
                }
                ls.push(f64_cpu(l, "logits to f64")?)
            }
            (None, Some(l)) if first => self.logits = Some(vec![f64_cpu(l, "logits to f64")?]),
            (None, None) => {}
            _ => {
                return Err(MetricsError::input(
                    "features",
                    "logits in every batch or in none",
                    "a mix",
                ))
            }
        }
        self.pool.push(f64_cpu(&f.pool, "features to f64")?);
        self.dim = Some(d);
        self.len += b as usize;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Feature width, once a batch has been pushed.
    pub fn dim(&self) -> Option<usize> {
        self.dim.map(|d| d as usize)
    }

    /// [N, D] f64.
    pub fn pool(&self) -> Result<Tensor, MetricsError> {
        if self.pool.is_empty() {
            return Err(MetricsError::input("feature set", "some features", "none"));
        }
        Tensor::f_cat(&self.pool, 0).map_err(tch_err("features"))
    }

    /// [N, classes] f64, if every batch had logits.
    pub fn logits(&self) -> Result<Option<Tensor>, MetricsError> {
        match &self.logits {
            Some(ls) if !ls.is_empty() => Tensor::f_cat(ls, 0).map(Some).map_err(tch_err("logits")),
            _ => Ok(None),
        }
    }

    /// Mean and covariance of the pool features (for FID).
    pub fn stats(&self) -> Result<Stats, MetricsError> {
        Stats::from_features(&self.pool()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_accumulate_and_must_agree() {
        let mut s = FeatureSet::new();
        let f = |b: i64, d: i64, logits: bool| Features {
            pool: Tensor::ones([b, d], (Kind::Float, Device::Cpu)),
            logits: logits.then(|| Tensor::zeros([b, 4], (Kind::Float, Device::Cpu))),
        };
        s.push(&f(2, 3, true)).unwrap();
        s.push(&f(5, 3, true)).unwrap();
        assert_eq!(s.len(), 7);
        assert_eq!(s.pool().unwrap().size(), [7, 3]);
        assert_eq!(s.pool().unwrap().kind(), Kind::Double);
        assert_eq!(s.logits().unwrap().unwrap().size(), [7, 4]);
        assert!(s.push(&f(1, 4, true)).is_err());
        assert!(s.push(&f(1, 3, false)).is_err());
        let st = s.stats().unwrap();
        assert_eq!(st.n, Some(7));
        assert_eq!(st.mu, [1.0, 1.0, 1.0]);
    }
}
