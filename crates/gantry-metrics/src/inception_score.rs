//! Inception Score (Salimans et al. 2016) with torch-fidelity's protocol: the logits without
//! the fc bias are shuffled with `np.random.RandomState(seed).permutation(N)` (reproduced bit
//! for bit by [`NumpyRandomState`]), cast to f64, softmaxed over 1008 classes and cut into
//! `splits` consecutive chunks `[i N / splits, (i + 1) N / splits)`; each chunk scores
//! `exp(mean KL(p(y|x) || p(y)))`; the report is the mean and standard deviation (ddof 0).

use tch::{Kind, Tensor};

use crate::error::{tch_err, MetricsError};
use crate::numpy_rng::NumpyRandomState;

/// Mean and standard deviation of the per-split scores.
#[derive(Debug, Clone, PartialEq)]
pub struct InceptionScore {
    pub mean: f64,
    pub std: f64,
    pub splits: usize,
}

/// torch-fidelity's defaults: 10 splits, shuffled with seed 2020.
pub const IS_SPLITS: usize = 10;
pub const IS_SEED: u32 = 2020;

/// IS of `logits` [N, C] (unbiased logits); `shuffle_seed = None` keeps the given order.
pub fn inception_score(
    logits: &Tensor,
    splits: usize,
    shuffle_seed: Option<u32>,
) -> Result<InceptionScore, MetricsError> {
    let [n, _c] = logits.size()[..] else {
        return Err(MetricsError::input(
            "IS logits",
            "a [N, classes] tensor",
            format!("{:?}", logits.size()),
        ));
    };
    let n = n as usize;
    if splits == 0 || n < splits {
        return Err(MetricsError::TooFewSamples {
            metric: "Inception Score",
            needed: splits.max(1),
            n1: n,
            n2: n,
            hint: " (one per split)",
        });
    }
    let mut x = logits
        .f_to_device(tch::Device::Cpu)
        .map_err(tch_err("IS logits"))?;
    if let Some(seed) = shuffle_seed {
        let perm = NumpyRandomState::new(seed).permutation(n);
        x = x
            .f_index_select(0, &Tensor::from_slice(&perm))
            .map_err(tch_err("IS shuffle"))?;
    }
    let x = x.f_to_kind(Kind::Double).map_err(tch_err("IS logits"))?;
    let p = x
        .f_softmax(1, Kind::Double)
        .map_err(tch_err("IS softmax"))?;
    let log_p = x
        .f_log_softmax(1, Kind::Double)
        .map_err(tch_err("IS log-softmax"))?;
    let mut scores = Vec::with_capacity(splits);
    for i in 0..splits {
        let (a, b) = ((i * n / splits) as i64, ((i + 1) * n / splits) as i64);
        let pc = p.f_narrow(0, a, b - a).map_err(tch_err("IS split"))?;
        let lc = log_p.f_narrow(0, a, b - a).map_err(tch_err("IS split"))?;
        let score = pc
            .f_mean_dim(0, true, Kind::Double)
            .and_then(|q| q.f_log())
            .and_then(|lq| lc.f_sub(&lq))
            .and_then(|d| pc.f_mul(&d))
            .and_then(|kl| kl.f_sum_dim_intlist(1, false, Kind::Double))
            .and_then(|kl| kl.f_mean(Kind::Double))
            .map_err(tch_err("IS KL"))?
            .double_value(&[])
            .exp();
        scores.push(score);
    }
    let k = scores.len() as f64;
    let mean = scores.iter().sum::<f64>() / k;
    let std = (scores.iter().map(|s| (s - mean) * (s - mean)).sum::<f64>() / k).sqrt();
    if !mean.is_finite() {
        return Err(MetricsError::NonFinite {
            metric: "Inception Score",
            detail: "the logits contain NaN or infinity".into(),
        });
    }
    Ok(InceptionScore { mean, std, splits })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confident_uniform_predictions_score_the_class_count() {
        // One-hot-ish logits spread evenly over 4 classes: IS -> 4 per split.
        let mut v = vec![0.0f32; 8 * 4];
        for i in 0..8 {
            v[i * 4 + i % 4] = 60.0;
        }
        let logits = Tensor::from_slice(&v).view([8, 4]);
        let s = inception_score(&logits, 2, None).unwrap();
        assert!((s.mean - 4.0).abs() < 1e-9 && s.std < 1e-9, "{s:?}");
        // Identical predictions score 1.
        let same = Tensor::ones([6, 5], (Kind::Float, tch::Device::Cpu));
        let s = inception_score(&same, 3, Some(IS_SEED)).unwrap();
        assert!((s.mean - 1.0).abs() < 1e-12, "{s:?}");
    }

    #[test]
    fn fewer_samples_than_splits_is_an_error() {
        let logits = Tensor::zeros([3, 5], (Kind::Float, tch::Device::Cpu));
        let e = inception_score(&logits, 10, None).unwrap_err().to_string();
        assert!(
            e.contains("needs at least 10") && e.contains("got 3"),
            "{e}"
        );
    }
}
