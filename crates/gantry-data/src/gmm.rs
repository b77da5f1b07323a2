//! 2-D Gaussian mixtures used to measure mode collapse, and the standard quality metrics for them.
//!
//! The two benchmarks follow the mode-collapse literature (Unrolled GAN, Metz et al. 2017;
//! VEEGAN, Srivastava et al. 2017; PacGAN, Lin et al. 2018): 8 modes on a ring of radius 2
//! with std 0.02, and 25 modes on the grid {-4,-2,0,2,4}^2 with std 0.05. Samples are raw
//! coordinates (sample shape `[2, 1, 1]`), not images scaled to [-1, 1].

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::rng::{domain, keyed};
use crate::transform::check_index;
use crate::{DataError, Dataset};

/// An isotropic Gaussian mixture with equal weights.
#[derive(Clone, Debug, PartialEq)]
pub struct Mixture {
    /// Mode centres.
    pub means: Vec<[f64; 2]>,
    /// Standard deviation of every mode, per coordinate.
    pub std: f64,
}

impl Mixture {
    /// 8 modes evenly spaced on the circle of radius 2, std 0.02.
    pub fn ring8() -> Mixture {
        let means = (0..8)
            .map(|i| {
                let a = std::f64::consts::TAU * f64::from(i) / 8.0;
                [2.0 * a.cos(), 2.0 * a.sin()]
            })
            .collect();
        Mixture { means, std: 0.02 }
    }

    /// 25 modes on the grid {-4,-2,0,2,4}^2 (row-major, x fastest), std 0.05.
    pub fn grid25() -> Mixture {
        let mut means = Vec::with_capacity(25);
        for y in [-4.0, -2.0, 0.0, 2.0, 4.0] {
            for x in [-4.0, -2.0, 0.0, 2.0, 4.0] {
                means.push([x, y]);
            }
        }
        Mixture { means, std: 0.05 }
    }

    /// Draws one point and the index of the mode it came from.
    pub fn sample(&self, rng: &mut impl Rng) -> ([f64; 2], usize) {
        let mode = rng.gen_range(0..self.means.len());
        let m = self.means[mode];
        let dx: f64 = rng.sample(StandardNormal);
        let dy: f64 = rng.sample(StandardNormal);
        ([m[0] + self.std * dx, m[1] + self.std * dy], mode)
    }

    /// Index of the mode nearest to `p` and its Euclidean distance.
    pub fn nearest(&self, p: [f64; 2]) -> (usize, f64) {
        let mut best = (0, f64::INFINITY);
        for (i, m) in self.means.iter().enumerate() {
            let d = (p[0] - m[0]).hypot(p[1] - m[1]);
            if d < best.1 {
                best = (i, d);
            }
        }
        best
    }
}

/// Mode-collapse metrics of a set of generated points.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GmmQuality {
    /// Modes that received at least one high-quality sample.
    pub modes_covered: usize,
    /// Fraction of samples within 3 std of their nearest mode.
    pub high_quality_share: f64,
    /// KL(histogram of high-quality samples over modes || uniform), in nats; 0 is perfect balance.
    pub kl_mode_histogram: f64,
    /// High-quality samples per mode (same order as `Mixture::means`).
    pub mode_counts: Vec<usize>,
}

/// Scores generated points against the mixture they were meant to reproduce.
///
/// Rules, as in PacGAN's synthetic-data experiments (Lin et al. 2018), which adopt VEEGAN's:
/// a sample is *high quality* if it lies within three standard deviations of its nearest
/// mode's mean; a mode is *covered* if at least one high-quality sample is assigned to it
/// (the reference implementation, fjxmlzn/PacGAN `MetricLogger`, counts modes with a nonzero
/// count and also uses a strict `< 3 std`). The divergence is the reverse KL of the
/// high-quality mode histogram against the uniform target, KL(p || u) = ln K - H(p). With no
/// high-quality sample the histogram is undefined; we report ln K, the worst value any
/// histogram can reach, to stay finite (and JSON-serialisable).
pub fn evaluate(mix: &Mixture, samples: &[[f64; 2]]) -> GmmQuality {
    let k = mix.means.len();
    let mut counts = vec![0usize; k];
    for &p in samples {
        let (mode, dist) = mix.nearest(p);
        if dist < 3.0 * mix.std {
            counts[mode] += 1;
        }
    }
    let hq: usize = counts.iter().sum();
    let kl = if hq == 0 {
        (k as f64).ln()
    } else {
        counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / hq as f64;
                p * (p * k as f64).ln()
            })
            .sum::<f64>()
            .max(0.0)
    };
    GmmQuality {
        modes_covered: counts.iter().filter(|&&c| c > 0).count(),
        high_quality_share: if samples.is_empty() {
            0.0
        } else {
            hq as f64 / samples.len() as f64
        },
        kl_mode_histogram: kl,
        mode_counts: counts,
    }
}

/// A Gaussian mixture as a dataset: sample `i` is a pure function of (split, i).
pub struct GmmData {
    name: &'static str,
    mix: Mixture,
    len: usize,
    split_key: u64,
    split: String,
}

impl GmmData {
    pub(crate) fn new(name: &'static str, mix: Mixture, len: usize, split: &str) -> GmmData {
        GmmData {
            name,
            mix,
            len,
            split_key: u64::from(split == "test"),
            split: split.to_string(),
        }
    }

    /// The mixture the points are drawn from.
    pub fn mixture(&self) -> &Mixture {
        &self.mix
    }
}

impl Dataset for GmmData {
    fn len(&self) -> usize {
        self.len
    }

    fn sample_shape(&self) -> [usize; 3] {
        [2, 1, 1]
    }

    fn num_classes(&self) -> Option<usize> {
        Some(self.mix.means.len())
    }

    fn describe(&self) -> String {
        format!(
            "{} {} ({} points, 2x1x1, {} modes, std {})",
            self.name,
            self.split,
            self.len,
            self.mix.means.len(),
            self.mix.std
        )
    }

    /// Writes the raw (x, y) coordinates; `rng` is unused because points have no augmentation.
    fn load_into(
        &self,
        index: usize,
        out: &mut [f32],
        _rng: &mut ChaCha8Rng,
    ) -> Result<i64, DataError> {
        check_index(index, self.len, self.name)?;
        crate::transform::check_len(out, 2, [2, 1, 1])?;
        let mut rng = keyed(0, domain::GMM, self.split_key, index as u64);
        let (p, mode) = self.mix.sample(&mut rng);
        out[0] = p[0] as f32;
        out[1] = p[1] as f32;
        Ok(mode as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn mixtures_have_the_literature_geometry() {
        let ring = Mixture::ring8();
        assert_eq!((ring.means.len(), ring.std), (8, 0.02));
        for m in &ring.means {
            assert!((m[0].hypot(m[1]) - 2.0).abs() < 1e-12);
        }
        let grid = Mixture::grid25();
        assert_eq!((grid.means.len(), grid.std), (25, 0.05));
        assert_eq!(grid.means[0], [-4.0, -4.0]);
        assert_eq!(grid.means[24], [4.0, 4.0]);
        assert_eq!(grid.means[12], [0.0, 0.0]);
    }

    #[test]
    fn perfect_samples_cover_everything_with_zero_kl() {
        let mix = Mixture::grid25();
        let samples: Vec<_> = (0..100).map(|i| mix.means[i % 25]).collect();
        let q = evaluate(&mix, &samples);
        assert_eq!(q.modes_covered, 25);
        assert_eq!(q.high_quality_share, 1.0);
        assert!(q.kl_mode_histogram.abs() < 1e-12);
        assert!(q.mode_counts.iter().all(|&c| c == 4));
    }

    #[test]
    fn collapsed_samples_cover_one_mode_with_maximal_kl() {
        let mix = Mixture::ring8();
        let m = mix.means[3];
        let samples = vec![[m[0] + 0.01, m[1] - 0.01]; 50];
        let q = evaluate(&mix, &samples);
        assert_eq!(q.modes_covered, 1);
        assert_eq!(q.high_quality_share, 1.0);
        assert!((q.kl_mode_histogram - 8f64.ln()).abs() < 1e-12);
        assert_eq!(q.mode_counts[3], 50);
    }

    #[test]
    fn off_mode_samples_are_low_quality() {
        let mix = Mixture::ring8();
        // Two modes hit exactly, and two points just outside 3 std (0.06) of mode 0.
        let m0 = mix.means[0];
        let samples = vec![
            mix.means[0],
            mix.means[4],
            [m0[0] + 0.061, m0[1]],
            [0.0, 0.0],
        ];
        let q = evaluate(&mix, &samples);
        assert_eq!(q.modes_covered, 2);
        assert_eq!(q.high_quality_share, 0.5);
        assert!((q.kl_mode_histogram - (8f64.ln() - 2f64.ln())).abs() < 1e-12);
        let inside = evaluate(&mix, &[[m0[0] + 0.059, m0[1]]]);
        assert_eq!(inside.modes_covered, 1);

        let none = evaluate(&mix, &[[0.0, 0.0]]);
        assert_eq!((none.modes_covered, none.high_quality_share), (0, 0.0));
        assert!((none.kl_mode_histogram - 8f64.ln()).abs() < 1e-12);
        assert_eq!(evaluate(&mix, &[]).high_quality_share, 0.0);
    }

    #[test]
    fn true_samples_score_well_and_dataset_is_deterministic() {
        let ds = GmmData::new("gmm-25", Mixture::grid25(), 5000, "train");
        assert_eq!(ds.sample_shape(), [2, 1, 1]);
        assert_eq!(ds.num_classes(), Some(25));
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut pts = Vec::new();
        for i in 0..ds.len() {
            let mut out = [0.0f32; 2];
            let label = ds.load_into(i, &mut out, &mut rng).unwrap();
            let p = [f64::from(out[0]), f64::from(out[1])];
            let (nearest, _) = ds.mixture().nearest(p);
            assert_eq!(nearest as i64, label);
            pts.push(p);
        }
        let q = evaluate(ds.mixture(), &pts);
        assert_eq!(q.modes_covered, 25);
        // 3 std in 2-D holds 1 - exp(-4.5) = 98.9% of the mass.
        assert!(q.high_quality_share > 0.98, "{q:?}");
        assert!(q.kl_mode_histogram < 0.01, "{q:?}");

        let mut a = [0.0f32; 2];
        let mut b = [0.0f32; 2];
        ds.load_into(17, &mut a, &mut rng).unwrap();
        ds.load_into(17, &mut b, &mut ChaCha8Rng::seed_from_u64(99))
            .unwrap();
        assert_eq!(a, b);
        let test = GmmData::new("gmm-25", Mixture::grid25(), 5000, "test");
        test.load_into(17, &mut b, &mut rng).unwrap();
        assert_ne!(a, b);
        assert!(ds.describe().starts_with("gmm-25 train (5000 points"));
    }
}
