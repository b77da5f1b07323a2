//! Fréchet Inception Distance (Heusel et al. 2017) between two [`Stats`], in f64.
//!
//! `FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2))`. pytorch-fid takes
//! `scipy.linalg.sqrtm(S1 S2)` (a Schur method on a non-symmetric product); gantry uses the
//! identity `tr sqrt(S1 S2) = tr sqrt(A S2 A)` with `A = S1^(1/2)`, so both steps are symmetric
//! eigendecompositions (faer), which are stable and never complex. Eigenvalues are clamped at 0
//! (they are only negative by rounding). If the result is not finite, 1e-6 is added to both
//! diagonals inside the square root and it is retried, exactly where pytorch-fid does (its trace
//! terms keep the original matrices).

use faer::{Mat, Side};

use crate::error::MetricsError;
use crate::stats::{MetricsWarning, Stats};

/// pytorch-fid's `eps` for the singular-product retry.
pub const FID_EPS: f64 = 1e-6;

/// An FID value and what to report with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fid {
    pub value: f64,
    /// Sample counts of the two statistics, when known (every report should state N).
    pub n1: Option<usize>,
    pub n2: Option<usize>,
    /// Few samples, eps retry.
    pub warnings: Vec<MetricsWarning>,
}

fn check(a: &Stats, b: &Stats) -> Result<usize, MetricsError> {
    let d = a.dim();
    if b.dim() != d {
        return Err(MetricsError::input(
            "FID statistics",
            format!("the same dimension on both sides ({d})"),
            format!("{} and {}", d, b.dim()),
        ));
    }
    for (name, s) in [("first", a), ("second", b)] {
        if s.sigma.len() != d * d {
            return Err(MetricsError::input(
                format!("FID {name} sigma"),
                format!("{d} x {d} values"),
                format!("{} values", s.sigma.len()),
            ));
        }
        if !s.mu.iter().chain(&s.sigma).all(|v| v.is_finite()) {
            return Err(MetricsError::NonFinite {
                metric: "FID input",
                detail: format!("the {name} statistics contain NaN or infinity"),
            });
        }
    }
    Ok(d)
}

fn mat(d: usize, v: &[f64], eps: f64) -> Mat<f64> {
    // Symmetrise: stored covariances are symmetric only up to rounding.
    Mat::from_fn(d, d, |i, j| {
        0.5 * (v[i * d + j] + v[j * d + i]) + if i == j { eps } else { 0.0 }
    })
}

/// `tr(sqrt(S1 S2))` through two symmetric eigendecompositions.
fn trace_sqrt_product(s1: &Mat<f64>, s2: &Mat<f64>) -> f64 {
    let e = s1.selfadjoint_eigendecomposition(Side::Lower);
    let w = e.s().column_vector();
    let u = e.u();
    let d = s1.nrows();
    let us = Mat::from_fn(d, d, |i, j| u.read(i, j) * w.read(j).max(0.0).sqrt());
    let a = &us * u.transpose();
    let m = &a * s2 * &a;
    if !finite_mats(&m) {
        return f64::NAN;
    }
    let m = Mat::from_fn(d, d, |i, j| 0.5 * (m.read(i, j) + m.read(j, i)));
    m.selfadjoint_eigenvalues(Side::Lower)
        .into_iter()
        .map(|l| l.max(0.0).sqrt())
        .sum()
}

fn finite_mats(s: &Mat<f64>) -> bool {
    (0..s.nrows()).all(|i| (0..s.ncols()).all(|j| s.read(i, j).is_finite()))
}

/// FID as pytorch-fid's first attempt computes it when `eps == 0`, and as its retry computes
/// it when `eps > 0` (eps added to both diagonals inside the square root only).
pub fn frechet_distance_eps(a: &Stats, b: &Stats, eps: f64) -> Result<f64, MetricsError> {
    let d = check(a, b)?;
    Ok(distance_with(a, b, d, eps, &trace_sqrt_product))
}

fn distance_with(
    a: &Stats,
    b: &Stats,
    d: usize,
    eps: f64,
    trace_sqrt: &dyn Fn(&Mat<f64>, &Mat<f64>) -> f64,
) -> f64 {
    let diff: f64 = a.mu.iter().zip(&b.mu).map(|(x, y)| (x - y) * (x - y)).sum();
    let tr = |s: &[f64]| (0..d).map(|i| s[i * d + i]).sum::<f64>();
    let (s1, s2) = (mat(d, &a.sigma, eps), mat(d, &b.sigma, eps));
    // Overflowing statistics would make faer iterate on infinities; report them as non-finite.
    let t = if finite_mats(&s1) && finite_mats(&s2) {
        trace_sqrt(&s1, &s2)
    } else {
        f64::NAN
    };
    diff + tr(&a.sigma) + tr(&b.sigma) - 2.0 * t
}

/// FID between two statistics, with pytorch-fid's eps retry and the few-samples warning.
pub fn frechet_distance(a: &Stats, b: &Stats) -> Result<Fid, MetricsError> {
    fid_with(a, b, &trace_sqrt_product)
}

fn fid_with(
    a: &Stats,
    b: &Stats,
    trace_sqrt: &dyn Fn(&Mat<f64>, &Mat<f64>) -> f64,
) -> Result<Fid, MetricsError> {
    let d = check(a, b)?;
    let mut warnings: Vec<MetricsWarning> =
        [a, b].iter().filter_map(|s| s.sample_warning()).collect();
    warnings.dedup();
    let mut value = distance_with(a, b, d, 0.0, trace_sqrt);
    if !value.is_finite() {
        warnings.push(MetricsWarning::EpsRetry { eps: FID_EPS });
        value = distance_with(a, b, d, FID_EPS, trace_sqrt);
    }
    if !value.is_finite() {
        return Err(MetricsError::NonFinite {
            metric: "FID",
            detail: format!("{d}-d statistics, even after adding {FID_EPS:e} to the diagonals"),
        });
    }
    Ok(Fid {
        value,
        n1: a.n,
        n2: b.n,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn stats(mu: Vec<f64>, sigma: Vec<f64>, n: Option<usize>) -> Stats {
        Stats { mu, sigma, n }
    }

    #[test]
    fn diagonal_gaussians_have_a_closed_form() {
        // d = 2, S1 = diag(1, 4), S2 = diag(9, 16): sum (sqrt(a) - sqrt(b))^2 = 4 + 4 = 8.
        let a = stats(vec![0.0, 0.0], vec![1.0, 0.0, 0.0, 4.0], Some(10));
        let b = stats(vec![1.0, 2.0], vec![9.0, 0.0, 0.0, 16.0], Some(10));
        let f = frechet_distance(&a, &b).unwrap();
        assert!((f.value - (5.0 + 8.0)).abs() < 1e-12, "{}", f.value);
        assert!(f.warnings.is_empty());
        assert_eq!((f.n1, f.n2), (Some(10), Some(10)));
        let same = frechet_distance(&a, &a).unwrap().value;
        assert!(same.abs() < 1e-12, "{same}");
    }

    #[test]
    fn non_finite_trace_retries_with_eps_on_the_sqrt_term_only() {
        let a = stats(vec![0.0], vec![1.0], None);
        let b = stats(vec![0.0], vec![4.0], None);
        let calls = Cell::new(0);
        let fake = |s1: &Mat<f64>, s2: &Mat<f64>| {
            calls.set(calls.get() + 1);
            if calls.get() == 1 {
                f64::NAN
            } else {
                (s1.read(0, 0) * s2.read(0, 0)).sqrt()
            }
        };
        let f = fid_with(&a, &b, &fake).unwrap();
        let want = 1.0 + 4.0 - 2.0 * ((1.0 + FID_EPS) * (4.0 + FID_EPS)).sqrt();
        assert_eq!(calls.get(), 2);
        assert!((f.value - want).abs() < 1e-15, "{} vs {want}", f.value);
        assert_eq!(f.warnings, [MetricsWarning::EpsRetry { eps: FID_EPS }]);
    }

    #[test]
    fn overflow_is_an_error_after_the_retry() {
        let a = stats(vec![0.0], vec![1e300], None);
        let b = stats(vec![0.0], vec![1e300], None);
        let e = frechet_distance(&a, &b).unwrap_err().to_string();
        assert!(e.contains("FID is not finite"), "{e}");
    }

    #[test]
    fn mismatched_or_nan_inputs_are_errors() {
        let a = stats(vec![0.0], vec![1.0], None);
        let b = stats(vec![0.0, 0.0], vec![1.0, 0.0, 0.0, 1.0], None);
        assert!(frechet_distance(&a, &b).is_err());
        let c = stats(vec![f64::NAN], vec![1.0], None);
        assert!(frechet_distance(&a, &c)
            .unwrap_err()
            .to_string()
            .contains("NaN"));
    }
}
