//! Out-of-distribution detection metrics on score vectors where higher means "more
//! in-distribution" (in-distribution = the positive class), matching scikit-learn:
//! AUROC = `roc_auc_score`, AUPR-In = `average_precision_score` with in-distribution positive,
//! AUPR-Out = the same with OOD positive and negated scores; FPR95 = the false-positive rate at the
//! first ROC point (`roc_curve`, `drop_intermediate=False`) whose TPR reaches 0.95; detection
//! error = `min over ROC points of 0.5 (1 - TPR) + 0.5 FPR`.

use crate::MetricsError;

/// Every OOD metric of one score on one pair of sets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OodMetrics {
    pub auroc: f64,
    pub fpr95: f64,
    pub detection_error: f64,
    pub aupr_in: f64,
    pub aupr_out: f64,
}

/// (true positives, false positives) counted down the scores, one entry per distinct threshold
/// (ties enter together, as scikit-learn's curves group them).
fn counts(pos: &[f64], neg: &[f64]) -> Vec<(f64, f64)> {
    let mut all: Vec<(f64, bool)> = pos
        .iter()
        .map(|&s| (s, true))
        .chain(neg.iter().map(|&s| (s, false)))
        .collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp, mut out) = (0.0, 0.0, Vec::new());
    for (i, (s, is_pos)) in all.iter().enumerate() {
        if *is_pos {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        if i + 1 == all.len() || all[i + 1].0 != *s {
            out.push((tp, fp));
        }
    }
    out
}

/// ROC points (fpr, tpr) from (0, 0), like `roc_curve` without dropping intermediate points.
fn roc(pos: &[f64], neg: &[f64]) -> Vec<(f64, f64)> {
    let (np, nn) = (pos.len() as f64, neg.len() as f64);
    std::iter::once((0.0, 0.0))
        .chain(
            counts(pos, neg)
                .into_iter()
                .map(|(tp, fp)| (fp / nn, tp / np)),
        )
        .collect()
}

/// `average_precision_score`: sum over thresholds of (R_n - R_{n-1}) P_n.
fn average_precision(pos: &[f64], neg: &[f64]) -> f64 {
    let np = pos.len() as f64;
    let (mut prev_recall, mut ap) = (0.0, 0.0);
    for (tp, fp) in counts(pos, neg) {
        let recall = tp / np;
        ap += (recall - prev_recall) * tp / (tp + fp);
        prev_recall = recall;
    }
    ap
}

/// The metrics of scores `in_dist` (positives) against `ood` (negatives).
pub fn ood_metrics(in_dist: &[f64], ood: &[f64]) -> Result<OodMetrics, MetricsError> {
    if in_dist.is_empty() || ood.is_empty() {
        return Err(MetricsError::input(
            "OOD scores",
            "at least one in-distribution and one OOD score",
            format!("{} and {}", in_dist.len(), ood.len()),
        ));
    }
    if let Some(bad) = in_dist.iter().chain(ood).find(|s| !s.is_finite()) {
        return Err(MetricsError::input(
            "OOD scores",
            "finite scores",
            format!("{bad}"),
        ));
    }
    let points = roc(in_dist, ood);
    let auroc = points
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
        .sum();
    let fpr95 = points
        .iter()
        .find(|(_, tpr)| *tpr >= 0.95)
        .map(|p| p.0)
        .unwrap_or(1.0);
    let detection_error = points
        .iter()
        .map(|(fpr, tpr)| 0.5 * (1.0 - tpr) + 0.5 * fpr)
        .fold(f64::INFINITY, f64::min);
    let neg = |v: &[f64]| v.iter().map(|s| -s).collect::<Vec<f64>>();
    Ok(OodMetrics {
        auroc,
        fpr95,
        detection_error,
        aupr_in: average_precision(in_dist, ood),
        aupr_out: average_precision(&neg(ood), &neg(in_dist)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_and_reversed_scores() {
        let m = ood_metrics(&[3.0, 4.0, 5.0], &[0.0, 1.0, 2.0]).unwrap();
        assert_eq!((m.auroc, m.fpr95, m.detection_error), (1.0, 0.0, 0.0));
        assert_eq!((m.aupr_in, m.aupr_out), (1.0, 1.0));
        let m = ood_metrics(&[0.0, 1.0], &[3.0, 4.0]).unwrap();
        assert_eq!((m.auroc, m.fpr95, m.detection_error), (0.0, 1.0, 0.5));
    }

    #[test]
    fn ties_count_half() {
        let m = ood_metrics(&[1.0], &[1.0]).unwrap();
        assert_eq!(m.auroc, 0.5);
        assert!(ood_metrics(&[], &[1.0]).is_err());
        assert!(ood_metrics(&[f64::NAN], &[1.0]).is_err());
    }
}
