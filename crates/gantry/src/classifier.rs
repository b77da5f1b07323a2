//! A small image classifier trained by gantry on a labelled data set, whose penultimate features
//! replace Inception's pool3 where Inception is not meaningful (MNIST and other non-natural
//! images). Metrics computed on them are reported as classifier-feature FID/KID/IS, never as FID.
//!
//! Network: three [conv3x3 -> BatchNorm -> ReLU -> max-pool 2] blocks (32, 64, 128 channels),
//! global average pool, a 128-d ReLU feature layer (the features), a linear classifier. One
//! safetensors file holds the weights and the input shape it was trained for (`meta.*`).

use crate::error::{Error, Result};
use gantry_data::{DataConfig, Dataset, Loader, Position};
use gantry_metrics::{FeatureExtractor, Features, MetricsError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::nn::{self, Module, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

pub const FEATURE_DIM: i64 = 128;

struct Net {
    blocks: Vec<(nn::Conv2D, nn::BatchNorm)>,
    feature: nn::Linear,
    out: nn::Linear,
}

impl Net {
    fn new(p: &nn::Path, channels: i64, classes: i64) -> Self {
        let mut blocks = Vec::new();
        let mut c_in = channels;
        for (i, c) in [32, 64, 128].into_iter().enumerate() {
            let bp = p / format!("block{i}");
            let conv = nn::conv2d(
                &bp / "conv",
                c_in,
                c,
                3,
                nn::ConvConfig {
                    padding: 1,
                    ..Default::default()
                },
            );
            blocks.push((conv, nn::batch_norm2d(&bp / "bn", c, Default::default())));
            c_in = c;
        }
        Net {
            blocks,
            feature: nn::linear(p / "feature", c_in, FEATURE_DIM, Default::default()),
            out: nn::linear(p / "out", FEATURE_DIM, classes, Default::default()),
        }
    }

    /// (features [B, 128], logits [B, classes]) of images in [-1, 1].
    fn forward(&self, x: &Tensor, train: bool) -> (Tensor, Tensor) {
        let mut h = x.shallow_clone();
        for (conv, bn) in &self.blocks {
            h = bn
                .forward_t(&conv.forward(&h), train)
                .relu()
                .max_pool2d_default(2);
        }
        let f = self
            .feature
            .forward(&h.mean_dim(&[2i64, 3][..], false, Kind::Float))
            .relu();
        let logits = self.out.forward(&f);
        (f, logits)
    }
}

/// A trained classifier, ready to extract features.
pub struct Classifier {
    _vs: nn::VarStore,
    net: Net,
    pub channels: i64,
    pub resolution: i64,
    pub classes: i64,
    path: PathBuf,
    device: Device,
}

fn batch_tensor(b: &gantry_data::Batch, device: Device) -> (Tensor, Tensor) {
    let shape: Vec<i64> = b.shape.iter().map(|&v| v as i64).collect();
    (
        Tensor::from_slice(&b.images)
            .view(shape.as_slice())
            .to_device(device),
        Tensor::from_slice(&b.labels).to_device(device),
    )
}

/// Accuracy of `net` on a whole data set (inference mode).
fn accuracy(net: &Net, ds: Arc<dyn Dataset>, device: Device) -> Result<f64> {
    let batch = 256.min(ds.len());
    let mut loader = Loader::new(ds.clone(), batch, 0, Position::default(), 2, 2)?;
    let (mut right, mut total) = (0i64, 0i64);
    for _ in 0..loader.batches_per_epoch() {
        let (x, y) = batch_tensor(&loader.next_batch()?, device);
        let (_, logits) = tch::no_grad(|| net.forward(&x, false));
        right += logits
            .argmax(1, false)
            .eq_tensor(&y)
            .sum(Kind::Int64)
            .int64_value(&[]);
        total += y.size()[0];
    }
    Ok(right as f64 / total.max(1) as f64)
}

/// What `gantry classifier train` reports.
#[derive(Debug)]
pub struct TrainReport {
    pub path: PathBuf,
    pub train_samples: usize,
    pub val_samples: usize,
    /// Where the validation images came from (the test split, or a part held out of the data).
    pub val_source: String,
    pub val_accuracy: f64,
    pub epochs: usize,
}

/// Share of a data set without a test split held out for validation.
pub const HELD_OUT: f64 = 0.1;

/// Trains on `data` (labels required), checks accuracy on `val`, writes `out` (safetensors).
/// Data without a test split (a folder) trains on 90% and is validated on the other 10%, drawn
/// with `seed`, never on images it trained on.
pub fn train(
    data: &DataConfig,
    val: &DataConfig,
    out: &Path,
    epochs: usize,
    device: Device,
    seed: u64,
    mut progress: impl FnMut(usize, f64),
) -> Result<TrainReport> {
    let all = gantry_data::open(data)?;
    let classes = all.num_classes().ok_or_else(|| {
        Error::config(
            "--data",
            format!(
                "{} has no labels (for a folder, use class sub-folders and data.labels=true)",
                all.describe()
            ),
        )
    })?;
    let (ds, val_ds, val_source): (Arc<dyn Dataset>, Arc<dyn Dataset>, String) =
        if data.kind.has_test_split() {
            (
                all,
                gantry_data::open(val)?,
                format!("the {} split", val.split),
            )
        } else {
            if all.len() < 2 {
                return Err(Error::config(
                    "--data",
                    format!(
                        "{} has {} image(s): too few to hold any out for validation",
                        all.describe(),
                        all.len()
                    ),
                ));
            }
            let order = gantry_data::epoch_order(all.len(), seed, u64::MAX);
            let held = ((all.len() as f64 * HELD_OUT).ceil() as usize).clamp(1, all.len() - 1);
            let (val_idx, train_idx) = order.split_at(held);
            let source = format!(
                "{held} images held out of the {} (10%, never trained on; it has no test split)",
                all.len()
            );
            (
                Arc::new(gantry_data::Subset::new(
                    all.clone(),
                    train_idx.to_vec(),
                    "training part",
                )),
                Arc::new(gantry_data::Subset::new(
                    all,
                    val_idx.to_vec(),
                    "held-out part",
                )),
                source,
            )
        };
    let [c, h, w] = ds.sample_shape();
    // Three 2x max-pools: images of at least 8x8.
    if h < 8 || w < 8 {
        return Err(Error::config(
            "--data",
            format!(
                "{} holds {c}x{h}x{w} samples; the classifier needs images of at least 8x8",
                ds.describe()
            ),
        ));
    }
    if h != w || val_ds.sample_shape() != [c, h, w] {
        return Err(Error::config(
            "--val",
            "validation data must have the training data's shape",
        ));
    }
    tch::manual_seed(seed as i64);
    let vs = nn::VarStore::new(device);
    let net = Net::new(&vs.root(), c as i64, classes as i64);
    let mut opt = nn::Adam::default().build(&vs, 1e-3)?;
    let batch = 128.min(ds.len());
    let mut loader = Loader::new(
        ds.clone(),
        batch,
        seed,
        Position::default(),
        data.workers,
        data.prefetch,
    )?;
    for epoch in 0..epochs {
        let mut loss_sum = 0.0;
        let n = loader.batches_per_epoch();
        for _ in 0..n {
            let (x, y) = batch_tensor(&loader.next_batch()?, device);
            let (_, logits) = net.forward(&x, true);
            let loss = logits.cross_entropy_for_logits(&y);
            opt.backward_step(&loss);
            loss_sum += loss.double_value(&[]);
        }
        progress(epoch + 1, loss_sum / n.max(1) as f64);
    }
    let val_accuracy = accuracy(&net, val_ds.clone(), device)?;
    let mut tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, v) in [
        ("meta.channels", c as i64),
        ("meta.resolution", h as i64),
        ("meta.classes", classes as i64),
    ] {
        tensors.push((k.to_string(), Tensor::from(v)));
    }
    let cpu: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(k, t)| (k, t.to_device(Device::Cpu)))
        .collect();
    let tmp = out.with_extension("tmp.safetensors");
    Tensor::write_safetensors(&cpu, &tmp).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
    Ok(TrainReport {
        path: out.to_path_buf(),
        train_samples: ds.len(),
        val_samples: val_ds.len(),
        val_source,
        val_accuracy,
        epochs,
    })
}

impl Classifier {
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        if !path.exists() {
            return Err(Error::input(
                path,
                "classifier weights not found (train one with `gantry classifier train`)",
            ));
        }
        let saved: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(path)
            .map_err(|e| {
                Error::checkpoint(
                    path,
                    format!(
                        "not a gantry classifier ({})",
                        e.to_string().lines().next().unwrap_or("")
                    ),
                )
            })?
            .into_iter()
            .collect();
        let meta = |k: &str| {
            saved.get(k).map(|t| t.int64_value(&[])).ok_or_else(|| {
                Error::checkpoint(path, format!("not a gantry classifier (missing {k})"))
            })
        };
        let (channels, resolution, classes) = (
            meta("meta.channels")?,
            meta("meta.resolution")?,
            meta("meta.classes")?,
        );
        let vs = nn::VarStore::new(device);
        let net = Net::new(&vs.root(), channels, classes);
        let weights: std::collections::HashMap<String, Tensor> = saved
            .into_iter()
            .filter(|(k, _)| !k.starts_with("meta."))
            .collect();
        crate::rundir::checkpoint::restore_into(&vs.variables(), &weights, path)?;
        Ok(Classifier {
            _vs: vs,
            net,
            channels,
            resolution,
            classes,
            path: path.to_path_buf(),
            device,
        })
    }

    /// Brings uint8 images of any size and 1 or 3 channels to the network's input.
    fn prepare(&self, images_u8: &Tensor) -> std::result::Result<Tensor, MetricsError> {
        let size = images_u8.size();
        if size.len() != 4 || !(size[1] == 1 || size[1] == 3) {
            return Err(MetricsError::input(
                "classifier images",
                "[B, 1 or 3, H, W] uint8",
                format!("{size:?}"),
            ));
        }
        let x = images_u8.to_device(self.device).to_kind(Kind::Float) / 127.5 - 1.0;
        let x = match (size[1], self.channels) {
            (3, 1) => x.mean_dim(&[1i64][..], true, Kind::Float),
            (1, 3) => x.repeat([1, 3, 1, 1]),
            _ => x,
        };
        Ok(
            if size[2] != self.resolution || size[3] != self.resolution {
                x.upsample_bilinear2d([self.resolution, self.resolution], false, None, None)
            } else {
                x
            },
        )
    }
}

impl FeatureExtractor for Classifier {
    fn id(&self) -> String {
        let hash = std::fs::read(&self.path)
            .map(|b| gantry_metrics::hash_bytes(&b))
            .unwrap_or_default();
        format!("classifier-{hash}")
    }
    fn dim(&self) -> usize {
        FEATURE_DIM as usize
    }
    fn extract(&self, images_u8: &Tensor) -> std::result::Result<Features, MetricsError> {
        let x = self.prepare(images_u8)?;
        let mut pools = Vec::new();
        let mut logits = Vec::new();
        for chunk in x.split(256, 0) {
            let (f, l) = tch::no_grad(|| self.net.forward(&chunk, false));
            pools.push(f.to_device(Device::Cpu));
            logits.push(l.to_device(Device::Cpu));
        }
        Ok(Features {
            pool: Tensor::cat(&pools, 0),
            logits: Some(Tensor::cat(&logits, 0)),
        })
    }
}
