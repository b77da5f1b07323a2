//! Gaussian statistics of a feature set (mean, unbiased covariance) and pytorch-fid's `.npz`
//! format for them, so users can reuse precomputed dataset statistics in both directions.

use std::fmt;
use std::path::Path;

use tch::{Kind, Tensor};

use crate::error::{feature_shape, tch_err, MetricsError};
use crate::npz;

/// mu and Sigma of pool3 features, f64, as pytorch-fid computes them (`np.mean`, `np.cov`).
#[derive(Clone, PartialEq)]
pub struct Stats {
    /// Feature mean, `dim` values.
    pub mu: Vec<f64>,
    /// Unbiased (N - 1) covariance, row-major `dim x dim`.
    pub sigma: Vec<f64>,
    /// Sample count, when known (pytorch-fid's files do not record it; gantry's do, as `n`).
    pub n: Option<usize>,
}

impl fmt::Debug for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stats")
            .field("dim", &self.dim())
            .field("n", &self.n)
            .finish()
    }
}

/// Something a caller should report next to a metric.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricsWarning {
    /// Fewer samples than dimensions + 1: the covariance is singular and FID is biased upwards
    /// (pytorch-fid warns below 2048 for pool3). Report N with the number.
    FewSamples { n: usize, dim: usize },
    /// sqrt(S1 S2) was not finite; 1e-6 was added to both diagonals, as pytorch-fid does.
    EpsRetry { eps: f64 },
}

impl fmt::Display for MetricsWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsWarning::FewSamples { n, dim } => write!(
                f,
                "FID from {n} samples of {dim}-d features: the covariance is singular below \
                 {} samples, so the value is biased and not comparable to 50k-sample FID",
                dim + 1
            ),
            MetricsWarning::EpsRetry { eps } => write!(
                f,
                "FID: the covariance product is singular; added {eps:e} to both diagonals"
            ),
        }
    }
}

impl Stats {
    pub fn dim(&self) -> usize {
        self.mu.len()
    }

    /// Statistics of `features` [N, D] (any float kind; computed in f64). Needs N >= 2.
    pub fn from_features(features: &Tensor) -> Result<Stats, MetricsError> {
        let [n, d] = feature_shape(features, "features")?;
        if n < 2 {
            return Err(MetricsError::input(
                "FID statistics",
                "at least 2 samples (the covariance needs two)",
                format!("{n}"),
            ));
        }
        let x = features
            .f_to_kind(Kind::Double)
            .and_then(|x| x.f_to_device(tch::Device::Cpu))
            .map_err(tch_err("features to f64"))?;
        let mu = x
            .f_mean_dim(0, false, Kind::Double)
            .map_err(tch_err("feature mean"))?;
        let xc = x.f_sub(&mu).map_err(tch_err("centring features"))?;
        let sigma = xc
            .f_tr()
            .and_then(|t| t.f_matmul(&xc))
            .and_then(|c| c.f_div_scalar((n - 1) as f64))
            .map_err(tch_err("feature covariance"))?;
        let mu = Vec::<f64>::try_from(&mu).map_err(tch_err("feature mean"))?;
        let sigma = Vec::<f64>::try_from(sigma.flatten(0, -1)).map_err(tch_err("covariance"))?;
        debug_assert_eq!(sigma.len(), (d * d) as usize);
        Ok(Stats {
            mu,
            sigma,
            n: Some(n as usize),
        })
    }

    /// The warning to print with an FID computed from these statistics, if any.
    pub fn sample_warning(&self) -> Option<MetricsWarning> {
        match self.n {
            Some(n) if n <= self.dim() => Some(MetricsWarning::FewSamples { n, dim: self.dim() }),
            _ => None,
        }
    }

    /// Reads pytorch-fid's `.npz` (`mu`, `sigma`; float32 or float64; also `np.savez_compressed`).
    pub fn load_npz(path: &Path) -> Result<Stats, MetricsError> {
        let arrays = npz::read_npz(path)?;
        let get = |k: &str| {
            arrays
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, a)| a)
                .ok_or_else(|| MetricsError::format(path, format!("no '{k}' array in statistics")))
        };
        let (mu, sigma) = (get("mu")?, get("sigma")?);
        let d = mu.size().first().copied().unwrap_or(0);
        if mu.dim() != 1 || sigma.size() != [d, d] {
            return Err(MetricsError::format(
                path,
                format!(
                    "mu is {:?} and sigma {:?}; expected [D] and [D, D]",
                    mu.size(),
                    sigma.size()
                ),
            ));
        }
        let to_vec = |t: &Tensor| {
            t.f_flatten(0, -1)
                .and_then(|t| Vec::<f64>::try_from(&t))
                .map_err(|e| MetricsError::format(path, format!("statistics: {e}")))
        };
        let n = match arrays.iter().find(|(k, _)| k == "n") {
            Some((_, a)) if a.numel() == 1 && !a.is_floating_point() => a
                .f_reshape([-1])
                .and_then(|t| t.f_int64_value(&[0]))
                .ok()
                .and_then(|v| usize::try_from(v).ok()),
            _ => None,
        };
        Ok(Stats {
            mu: to_vec(mu)?,
            sigma: to_vec(sigma)?,
            n,
        })
    }

    /// Writes `mu`, `sigma` (float64, as pytorch-fid) and, when known, `n` (int64), atomically.
    /// pytorch-fid ignores the extra `n`.
    pub fn save_npz(&self, path: &Path) -> Result<(), MetricsError> {
        let d = self.dim();
        if self.sigma.len() != d * d {
            return Err(MetricsError::input(
                "Stats::sigma",
                format!("{} values ({d} x {d})", d * d),
                format!("{} values", self.sigma.len()),
            ));
        }
        let mu = Tensor::from_slice(&self.mu);
        let sigma = Tensor::from_slice(&self.sigma).view([d as i64, d as i64]);
        let n = self.n.map(|n| Tensor::from(n as i64));
        let mut arrays = vec![("mu", &mu), ("sigma", &sigma)];
        if let Some(n) = &n {
            arrays.push(("n", n));
        }
        npz::write_npz(path, &arrays)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_unbiased_covariance() {
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 6.0, 5.0, 4.0]).view([3, 2]);
        let s = Stats::from_features(&x).unwrap();
        assert_eq!(s.mu, [3.0, 4.0]);
        // columns (1,3,5) and (2,6,4): var 4, 4; cov ((-2)(-2) + 0 + 2*0)/2 = 2.
        assert_eq!(s.sigma, [4.0, 2.0, 2.0, 4.0]);
        assert_eq!(s.n, Some(3));
        assert_eq!(s.sample_warning(), None);
        let few = Stats { n: Some(2), ..s };
        assert_eq!(
            few.sample_warning(),
            Some(MetricsWarning::FewSamples { n: 2, dim: 2 })
        );
    }

    #[test]
    fn rejects_bad_feature_shapes() {
        let e = Stats::from_features(&Tensor::zeros([4], (Kind::Float, tch::Device::Cpu)));
        assert!(e.unwrap_err().to_string().contains("[N, D]"));
        let e = Stats::from_features(&Tensor::zeros([1, 4], (Kind::Float, tch::Device::Cpu)));
        let e = e.unwrap_err().to_string();
        assert!(
            e.contains("at least 2 samples") && e.ends_with("got 1"),
            "{e}"
        );
    }
}
