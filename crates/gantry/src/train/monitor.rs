//! Watching D overfit (ADA, Karras et al. 2020, Fig. 1b): every `train.monitor_every` steps, D's
//! mean raw output on a fixed batch of training reals, of real images never trained on
//! (`data.holdout`, else the test split), and of fakes from fixed latents; the sign heuristic
//! r_t = E[sign D(x_train)]; and the gap train-real minus held-out-real, which opens as D
//! memorises its training images. Logged as `overfit/*` on rank 0.
//!
//! Departures from how ADA measures r_t: D runs in inference mode (BatchNorm on its running
//! statistics, no power iteration), on clean images, without plug-ins (FQ's quantisation, ADA's
//! augmentation), and under no_grad: the monitor has no effect on training, and every phase
//! reseeds the random streams it uses, so a run is the same with and without it.

use crate::error::Result;
use crate::models::{Discriminator, Generator};
use crate::stats::Stats;
use gantry_data::Dataset;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// Images per fixed batch (fewer when a set is smaller).
pub const MONITOR_IMAGES: usize = 128;

/// Tags the monitor's draws apart from every other use of the seed.
const STREAM: u64 = 0x4f56_4552_4649_5431; // "OVERFIT1"

/// Images and labels on the training device.
struct Batch {
    x: Tensor,
    labels: Option<Tensor>,
}

pub struct Monitor {
    train: Batch,
    held: Option<Batch>,
    z: Tensor,
    /// Per forward pass (bounded memory).
    chunk: i64,
}

/// `n` images of `ds`, drawn with `rng` (the first `n` of a shuffled order), with their labels
/// when `labelled`.
fn draw(
    ds: &dyn Dataset,
    n: usize,
    rng: &mut ChaCha8Rng,
    labelled: bool,
    device: Device,
) -> Result<Batch> {
    let mut order: Vec<usize> = (0..ds.len()).collect();
    rand::seq::SliceRandom::shuffle(order.as_mut_slice(), rng);
    order.truncate(n);
    let [c, h, w] = ds.sample_shape();
    let per = c * h * w;
    let mut pixels = vec![0f32; order.len() * per];
    let mut labels = Vec::with_capacity(order.len());
    // No augmentation: the images as stored.
    let mut aug = ChaCha8Rng::seed_from_u64(0);
    for (k, &i) in order.iter().enumerate() {
        labels.push(ds.load_into(i, &mut pixels[k * per..(k + 1) * per], &mut aug)?);
    }
    let x = Tensor::from_slice(&pixels)
        .view([order.len() as i64, c as i64, h as i64, w as i64])
        .to(device);
    let labels = labelled.then(|| Tensor::from_slice(&labels).to(device));
    Ok(Batch { x, labels })
}

impl Monitor {
    /// Fixed batches drawn with `seed` from the training set and the held-out one; fakes from
    /// fixed latents with the training batch's classes.
    pub fn new(
        train: &dyn Dataset,
        held: Option<&dyn Dataset>,
        z_dim: i64,
        conditional: bool,
        seed: u64,
        chunk: usize,
        device: Device,
    ) -> Result<Monitor> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ STREAM);
        let n = MONITOR_IMAGES.min(train.len());
        let train_batch = draw(train, n, &mut rng, conditional, device)?;
        let held = match held {
            Some(h) if !h.is_empty() => Some(draw(
                h,
                MONITOR_IMAGES.min(h.len()),
                &mut rng,
                conditional,
                device,
            )?),
            _ => None,
        };
        // Latents from the same stream: torch's generator is left as training expects it.
        let normals: Vec<f32> = (0..n as i64 * z_dim)
            .map(|_| rng.sample(rand_distr::StandardNormal))
            .collect();
        let z = Tensor::from_slice(&normals)
            .view([n as i64, z_dim])
            .to(device);
        Ok(Monitor {
            train: train_batch,
            held,
            z,
            chunk: chunk.max(1) as i64,
        })
    }

    /// D's raw outputs on a batch, as one flat fp32 tensor.
    fn scores(&self, d: &dyn Discriminator, x: &Tensor, labels: Option<&Tensor>) -> Tensor {
        let n = x.size()[0];
        let parts: Vec<Tensor> = (0..n)
            .step_by(self.chunk as usize)
            .map(|at| {
                let len = self.chunk.min(n - at);
                let l = labels.map(|l| l.narrow(0, at, len));
                d.forward(&x.narrow(0, at, len), l.as_ref(), false)
                    .to_kind(Kind::Float)
                    .reshape([-1])
            })
            .collect();
        Tensor::cat(&parts, 0)
    }

    /// `overfit/d_train`, `overfit/d_holdout`, `overfit/d_fake` (mean raw outputs),
    /// `overfit/rt` (mean sign on training reals) and `overfit/gap` (train minus held-out).
    pub fn measure(&self, g: &dyn Generator, d: &dyn Discriminator) -> Stats {
        tch::no_grad(|| {
            let train = self.scores(d, &self.train.x, self.train.labels.as_ref());
            let n = self.z.size()[0];
            let fakes: Vec<Tensor> = (0..n)
                .step_by(self.chunk as usize)
                .map(|at| {
                    let len = self.chunk.min(n - at);
                    let l = self.train.labels.as_ref().map(|l| l.narrow(0, at, len));
                    g.forward(&self.z.narrow(0, at, len), l.as_ref(), false)
                })
                .collect();
            let fake = self.scores(d, &Tensor::cat(&fakes, 0), self.train.labels.as_ref());
            let mut names = vec!["overfit/d_train", "overfit/rt", "overfit/d_fake"];
            let mut values = vec![train.mean(Kind::Float), train.sign().mean(Kind::Float)];
            values.push(fake.mean(Kind::Float));
            if let Some(h) = &self.held {
                let held = self.scores(d, &h.x, h.labels.as_ref()).mean(Kind::Float);
                names.extend(["overfit/d_holdout", "overfit/gap"]);
                values.push(held.shallow_clone());
                values.push(&values[0] - held);
            }
            let mut stats = Stats::default();
            // One host read for all of them.
            stats.set_stacked(names, &crate::stats::stack_scalars(&values));
            stats
        })
    }
}
