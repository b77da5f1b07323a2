//! Kernel Inception Distance (Bińkowski et al. 2018) with torch-fidelity's protocol: 100 random
//! subsets of 1000 features from each set, polynomial kernel `(x.y / d + 1)^3`, unbiased MMD^2
//! per subset, reported as mean and standard deviation (ddof 0). Slightly negative values are
//! valid (the estimator is unbiased).
//!
//! Subsets are drawn exactly as torch-fidelity draws them: one `np.random.RandomState(seed)`,
//! and per subset `choice(n1, size, replace=False)` then `choice(n2, size, replace=False)`;
//! [`NumpyRandomState`] reproduces those indices bit for bit. torch-fidelity evaluates the
//! kernel in float32; gantry uses f64, so values agree to float32 rounding, not bit for bit.

use tch::{Kind, Tensor};

use crate::error::{feature_shape, features_f64, tch_err, MetricsError};
use crate::numpy_rng::NumpyRandomState;

/// torch-fidelity's defaults (`kid_subsets`, `kid_subset_size`, `kid_degree`, `kid_gamma`,
/// `kid_coef0`, `rng_seed`).
#[derive(Debug, Clone, PartialEq)]
pub struct KidOptions {
    pub subsets: usize,
    pub subset_size: usize,
    pub degree: i32,
    /// Kernel scale; `None` = 1 / feature dimension.
    pub gamma: Option<f64>,
    pub coef0: f64,
    pub seed: u32,
}

impl Default for KidOptions {
    fn default() -> Self {
        KidOptions {
            subsets: 100,
            subset_size: 1000,
            degree: 3,
            gamma: None,
            coef0: 1.0,
            seed: 2020,
        }
    }
}

/// KID mean and standard deviation over subsets.
#[derive(Debug, Clone, PartialEq)]
pub struct Kid {
    pub mean: f64,
    pub std: f64,
    pub subsets: usize,
    pub subset_size: usize,
}

/// Index pairs (into set 1, into set 2) for each subset, as torch-fidelity draws them.
pub type Subsets = Vec<(Vec<i64>, Vec<i64>)>;

fn check_counts(n1: usize, n2: usize, opts: &KidOptions) -> Result<(), MetricsError> {
    if opts.subsets == 0 || opts.subset_size < 2 {
        return Err(MetricsError::input(
            "KID options",
            "subsets >= 1 and subset_size >= 2",
            format!(
                "subsets {} and subset_size {}",
                opts.subsets, opts.subset_size
            ),
        ));
    }
    if n1 < opts.subset_size || n2 < opts.subset_size {
        return Err(MetricsError::TooFewSamples {
            metric: "KID",
            needed: opts.subset_size,
            n1,
            n2,
            hint: " (the KID subset size: lower it or use more samples)",
        });
    }
    Ok(())
}

/// The subset indices torch-fidelity would use for sets of `n1` and `n2` features.
pub fn kid_subsets(n1: usize, n2: usize, opts: &KidOptions) -> Result<Subsets, MetricsError> {
    check_counts(n1, n2, opts)?;
    let mut rng = NumpyRandomState::new(opts.seed);
    let mut draw = |n| {
        rng.choice_without_replacement(n, opts.subset_size)
            .unwrap_or_default()
    };
    Ok((0..opts.subsets).map(|_| (draw(n1), draw(n2))).collect())
}

/// Unbiased MMD^2 of one subset pair with a polynomial kernel.
fn polynomial_mmd2(
    x: &Tensor,
    y: &Tensor,
    gamma: f64,
    opts: &KidOptions,
) -> Result<f64, MetricsError> {
    let m = x.size()[0] as f64;
    let kernel = |a: &Tensor, b: &Tensor| -> Result<Tensor, MetricsError> {
        a.f_matmul(&b.f_tr().map_err(tch_err("KID kernel"))?)
            .and_then(|k| k.f_mul_scalar(gamma))
            .and_then(|k| k.f_add_scalar(opts.coef0))
            .and_then(|k| k.f_pow_tensor_scalar(opts.degree as i64))
            .map_err(tch_err("KID kernel"))
    };
    let off_diag_sum = |k: &Tensor| -> Result<f64, MetricsError> {
        let s = k.f_sum(Kind::Double).map_err(tch_err("KID sum"))?;
        let t = k.f_trace().map_err(tch_err("KID trace"))?;
        Ok(s.double_value(&[]) - t.double_value(&[]))
    };
    let kxx = off_diag_sum(&kernel(x, x)?)?;
    let kyy = off_diag_sum(&kernel(y, y)?)?;
    let kxy = kernel(x, y)?
        .f_sum(Kind::Double)
        .map_err(tch_err("KID sum"))?
        .double_value(&[]);
    Ok((kxx + kyy) / (m * (m - 1.0)) - 2.0 * kxy / (m * m))
}

/// KID with explicit subset indices (what tests use to compare against a NumPy transcription).
pub fn kid_with_subsets(
    features1: &Tensor,
    features2: &Tensor,
    subsets: &[(Vec<i64>, Vec<i64>)],
    opts: &KidOptions,
) -> Result<Kid, MetricsError> {
    let f1 = features_f64(features1, "KID features 1")?;
    let f2 = features_f64(features2, "KID features 2")?;
    let (n1, n2) = (f1.size()[0], f2.size()[0]);
    let d = f1.size()[1];
    if f2.size()[1] != d {
        return Err(MetricsError::input(
            "KID features",
            format!("the same dimension on both sides ({d})"),
            format!("{d} and {}", f2.size()[1]),
        ));
    }
    if subsets.is_empty() {
        return Err(MetricsError::input("KID subsets", "at least one", "none"));
    }
    let gamma = opts.gamma.unwrap_or(1.0 / d as f64);
    let mut mmds = Vec::with_capacity(subsets.len());
    for (i1, i2) in subsets {
        let size = i1.len();
        if size < 2 || i2.len() != size {
            return Err(MetricsError::input(
                "KID subset",
                "two index lists of the same length >= 2",
                format!("lengths {} and {}", i1.len(), i2.len()),
            ));
        }
        if i1.iter().any(|&i| i < 0 || i >= n1) || i2.iter().any(|&i| i < 0 || i >= n2) {
            return Err(MetricsError::input(
                "KID subset",
                format!("indices below {n1} and {n2}"),
                "an index out of range",
            ));
        }
        let x = f1
            .f_index_select(0, &Tensor::from_slice(i1))
            .map_err(tch_err("KID subset"))?;
        let y = f2
            .f_index_select(0, &Tensor::from_slice(i2))
            .map_err(tch_err("KID subset"))?;
        mmds.push(polynomial_mmd2(&x, &y, gamma, opts)?);
    }
    let k = mmds.len() as f64;
    let mean = mmds.iter().sum::<f64>() / k;
    let std = (mmds.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / k).sqrt();
    if !mean.is_finite() {
        return Err(MetricsError::NonFinite {
            metric: "KID",
            detail: "the features contain NaN or very large values".into(),
        });
    }
    Ok(Kid {
        mean,
        std,
        subsets: subsets.len(),
        subset_size: subsets[0].0.len(),
    })
}

/// KID between two feature sets [N, D] with torch-fidelity's protocol; `features1` is its
/// `input1` (subset indices are drawn for it first).
pub fn kernel_inception_distance(
    features1: &Tensor,
    features2: &Tensor,
    opts: &KidOptions,
) -> Result<Kid, MetricsError> {
    let n = |t: &Tensor, what| feature_shape(t, what).map(|[n, _]| n as usize);
    let subsets = kid_subsets(
        n(features1, "KID features 1")?,
        n(features2, "KID features 2")?,
        opts,
    )?;
    kid_with_subsets(features1, features2, &subsets, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_few_samples_names_the_numbers() {
        let e = kid_subsets(999, 5000, &KidOptions::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "KID: needs at least 1000 samples per set, got 999 and 5000 (the KID subset size: \
             lower it or use more samples)"
        );
    }

    #[test]
    fn identical_subsets_give_a_small_unbiased_value() {
        let x = Tensor::from_slice(&[0.0f64, 1.0, 2.0, 3.0, 4.0, 5.0]).view([3, 2]);
        let opts = KidOptions {
            subsets: 1,
            subset_size: 3,
            ..KidOptions::default()
        };
        let idx = vec![(vec![0, 1, 2], vec![0, 1, 2])];
        let k = kid_with_subsets(&x, &x, &idx, &opts).unwrap();
        // MMD^2(X, X) = 2 / m^2 (offdiag / (m - 1) - diag) < 0 for distinct points.
        assert!(k.mean < 0.0 && k.std == 0.0, "{k:?}");
        let bad = vec![(vec![0, 1, 3], vec![0, 1, 2])];
        assert!(kid_with_subsets(&x, &x, &bad, &opts).is_err());
    }
}
