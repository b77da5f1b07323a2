//! OOD scores of a classifier; higher = more in-distribution. `principal` is docs/adaptivemix.md's:
//! the negated smallest angle between a sample's feature and each class's principal direction
//! (the first right singular vector of that class's training features as the network gives
//! them, uncentred, as the UoS code the AdaptiveMix paper cites fits it: raw pooled features
//! with a linear head, the L2-normalised ones the orthogonal head sees; a direction's sign is
//! arbitrary, so the angle uses |cos|). `msp` is the maximum softmax
//! probability (Hendrycks & Gimpel 2017), `energy` the negated free energy `logsumexp(logits)`
//! (Liu et al. 2020, T = 1).

use super::nets::l2_normalise;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Score {
    Principal,
    Msp,
    Energy,
}

impl Score {
    pub const ALL: [Score; 3] = [Score::Principal, Score::Msp, Score::Energy];
    pub fn as_str(self) -> &'static str {
        match self {
            Score::Principal => "principal",
            Score::Msp => "msp",
            Score::Energy => "energy",
        }
    }
}

/// The principal direction of every class, `[classes, F]` (f64), from training features and
/// labels.
pub fn principal_directions(features: &Tensor, labels: &Tensor, classes: i64) -> Result<Tensor> {
    let f = features.to_kind(Kind::Double);
    let mut rows = Vec::new();
    for c in 0..classes {
        let idx = labels.eq(c).nonzero().squeeze_dim(1);
        if idx.size()[0] == 0 {
            return Err(Error::config(
                "ood",
                format!("class {c} has no training image to fit its principal direction"),
            ));
        }
        let fc = f.index_select(0, &idx);
        // torch.svd's V (not V^H): its first column is the first right singular vector.
        let (_, _, v) = fc.svd(true, true);
        rows.push(v.select(1, 0));
    }
    Ok(Tensor::stack(&rows, 0))
}

/// Every score of a batch: features `[B, F]`, logits `[B, K]`, directions from
/// [`principal_directions`]. Returns one `[B]` f64 tensor per score, in [`Score::ALL`]'s order.
pub fn scores(features: &Tensor, logits: &Tensor, directions: &Tensor) -> [Tensor; 3] {
    let f = l2_normalise(&features.to_kind(Kind::Double));
    let cos = f
        .matmul(&directions.to_kind(Kind::Double).tr())
        .abs()
        .clamp(0.0, 1.0);
    let min_angle = cos.acos().amin(&[1i64][..], false);
    let logits = logits.to_kind(Kind::Double);
    let msp = logits.softmax(1, Kind::Double).amax(&[1i64][..], false);
    let energy = logits.logsumexp(&[1i64][..], false);
    [-min_angle, msp, energy]
}

/// `noise:gaussian` (N(0.5, 0.25^2) clipped to [0, 1], i.i.d. per pixel) or `noise:uniform`
/// (U(0, 1)): `n` images of `shape` in [0, 1], drawn from a ChaCha8 stream seeded with `seed`
/// (libtorch's global generator is left alone).
pub fn noise(kind: &str, n: i64, shape: [usize; 3], seed: u64) -> Result<Tensor> {
    use rand::{Rng, SeedableRng};
    let [c, h, w] = shape.map(|v| v as i64);
    let count = (n * c * h * w).max(0) as usize;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let values: Vec<f32> = match kind {
        "gaussian" => (0..count)
            .map(|_| {
                (rng.sample::<f32, _>(rand_distr::StandardNormal) * 0.25 + 0.5).clamp(0.0, 1.0)
            })
            .collect(),
        "uniform" => (0..count).map(|_| rng.gen::<f32>()).collect(),
        other => {
            return Err(Error::config(
                "--ood",
                format!("unknown noise '{other}' (noise:gaussian or noise:uniform)"),
            ))
        }
    };
    Ok(Tensor::from_slice(&values).view([n, c, h, w]))
}
