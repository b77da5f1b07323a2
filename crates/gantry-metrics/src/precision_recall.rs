//! Improved precision and recall (Kynkäänniemi et al. 2019), as torch-fidelity computes it:
//! each set's manifold is the union of balls around its features with radius = distance to the
//! k-th nearest other feature (k = 3; `kthvalue(k + 1)` because the nearest is the point
//! itself). Precision = share of fakes inside some real ball; recall = share of reals inside
//! some fake ball; `<=` at the boundary. Distances are f64 and computed in row blocks so memory
//! stays bounded for 50k x 50k.

use tch::{Kind, Tensor};

use crate::error::{features_f64, tch_err, MetricsError};

/// Precision, recall and their harmonic mean (torch-fidelity's `f_score`).
#[derive(Debug, Clone, PartialEq)]
pub struct PrecisionRecall {
    pub precision: f64,
    pub recall: f64,
    pub f_score: f64,
}

/// Kynkäänniemi et al.'s neighbourhood size.
pub const PR_NEIGHBOURS: usize = 3;
/// Rows per distance block: 1024 x 50k f64 is 400 MB.
const BLOCK: i64 = 1024;

/// Distance from each row of `x` to its k-th nearest other row.
fn radii(x: &Tensor, k: usize) -> Result<Tensor, MetricsError> {
    let n = x.size()[0];
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let len = BLOCK.min(n - start);
        let rows = x.f_narrow(0, start, len).map_err(tch_err("PR block"))?;
        let d = Tensor::f_cdist(&rows, x, 2.0, None::<i64>).map_err(tch_err("PR distances"))?;
        let (kth, _) = d
            .f_kthvalue(k as i64 + 1, 1, false)
            .map_err(tch_err("PR k-th neighbour"))?;
        out.push(kth);
        start += len;
    }
    Tensor::f_cat(&out, 0).map_err(tch_err("PR radii"))
}

/// Share of `query` rows within the radius of some `manifold` row.
fn coverage(query: &Tensor, manifold: &Tensor, radii: &Tensor) -> Result<f64, MetricsError> {
    let n = query.size()[0];
    let mut inside = 0i64;
    let mut start = 0;
    while start < n {
        let len = BLOCK.min(n - start);
        let rows = query.f_narrow(0, start, len).map_err(tch_err("PR block"))?;
        let d =
            Tensor::f_cdist(&rows, manifold, 2.0, None::<i64>).map_err(tch_err("PR distances"))?;
        let hit = d
            .f_le_tensor(&radii.f_unsqueeze(0).map_err(tch_err("PR radii"))?)
            .and_then(|m| m.f_any_dim(1, false))
            .and_then(|m| m.f_sum(Kind::Int64))
            .map_err(tch_err("PR membership"))?;
        inside += hit.int64_value(&[]);
        start += len;
    }
    Ok(inside as f64 / n as f64)
}

/// Precision and recall of `fake` against `real` (both [N, D]) with `k` neighbours.
pub fn precision_recall(
    real: &Tensor,
    fake: &Tensor,
    k: usize,
) -> Result<PrecisionRecall, MetricsError> {
    let real = features_f64(real, "PR real features")?;
    let fake = features_f64(fake, "PR fake features")?;
    if real.size()[1] != fake.size()[1] {
        return Err(MetricsError::input(
            "PR features",
            format!("the same dimension on both sides ({})", real.size()[1]),
            format!("{} and {}", real.size()[1], fake.size()[1]),
        ));
    }
    let (nr, nf) = (real.size()[0] as usize, fake.size()[0] as usize);
    if k == 0 || nr <= k || nf <= k {
        return Err(MetricsError::TooFewSamples {
            metric: "precision/recall",
            needed: k + 1,
            n1: nr,
            n2: nf,
            hint: " (k + 1 for the k-th neighbour)",
        });
    }
    let real_radii = radii(&real, k)?;
    let fake_radii = radii(&fake, k)?;
    let precision = coverage(&fake, &real, &real_radii)?;
    let recall = coverage(&real, &fake, &fake_radii)?;
    let f_score = 2.0 * precision * recall / (precision + recall).max(1e-5);
    Ok(PrecisionRecall {
        precision,
        recall,
        f_score,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disjoint_clusters_have_zero_precision_and_recall() {
        let a = Tensor::from_slice(&[0.0f64, 0.1, 0.2, 0.3, 0.4]).view([5, 1]);
        let b = a.shallow_clone() + 100.0;
        let pr = precision_recall(&a, &b, 3).unwrap();
        assert_eq!((pr.precision, pr.recall, pr.f_score), (0.0, 0.0, 0.0));
        let pr = precision_recall(&a, &a, 3).unwrap();
        assert_eq!((pr.precision, pr.recall), (1.0, 1.0));
    }

    #[test]
    fn radius_is_the_kth_other_neighbour() {
        let x = Tensor::from_slice(&[0.0f64, 1.0, 3.0, 6.0, 10.0]).view([5, 1]);
        let r = Vec::<f64>::try_from(radii(&x, 3).unwrap()).unwrap();
        assert_eq!(r, [6.0, 5.0, 3.0, 5.0, 9.0]);
        assert!(precision_recall(&x, &x, 5).is_err());
    }
}
