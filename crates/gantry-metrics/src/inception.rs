//! The "FID Inception": TensorFlow's 2015 Inception-v3 graph as ported by pytorch-fid
//! (`fid_inception_v3`), with its module layout and parameter names, so the keys of
//! `pt_inception-2015-12-05-6726825d.pth` load as they are.
//!
//! Where it departs from torchvision's Inception-v3 (as pytorch-fid does):
//! - the pool branches of Mixed_5b-5d (A), 6b-6e (C) and 7b (E, first) are 3x3 average pools
//!   that do not count the zero padding (`count_include_pad=False`), as TensorFlow's do;
//! - Mixed_7c (E, second) pools with a 3x3 *max* pool (stride 1, padding 1);
//! - BatchNorm eps is 0.001 and the fc layer has 1008 outputs.
//!
//! Inference only: each BatchNorm is folded into its convolution at load time
//! (`w * gamma / sqrt(var + eps)`, bias `beta - mean * gamma / sqrt(var + eps)`), which is the
//! same affine map PyTorch applies in eval mode, one pass cheaper. Where the order of operations
//! departs from pytorch-fid's (the average-pool branches, the stem's ReLUs, the CPU layout), the
//! values differ by rounding only: see `avg_pool_branch` and [`FidInception::forward`].

use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::error::{tch_err, MetricsError};
use crate::preprocess::INCEPTION_SIZE;
use crate::torch_file::{self, StateDict};

/// BatchNorm eps of the TensorFlow graph.
const BN_EPS: f64 = 0.001;
/// Images per pass through the stem on the CPU (see [`FidInception::forward`]).
const STEM_BATCH: i64 = 10;
/// pool3 width.
pub const POOL3_DIM: usize = 2048;
/// Classes of the TensorFlow graph's classifier (1000 ImageNet + 8 unused).
pub const LOGITS_DIM: usize = 1008;

/// Conv (no bias) -> BatchNorm -> ReLU, with the BatchNorm folded in.
struct BasicConv {
    weight: Tensor,
    bias: Tensor,
    stride: [i64; 2],
    padding: [i64; 2],
}

impl BasicConv {
    /// The convolution alone (BatchNorm folded in), before the ReLU.
    fn conv(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        x.f_conv2d(
            &self.weight,
            Some(&self.bias),
            self.stride,
            self.padding,
            [1, 1],
            1,
        )
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        // In place: the convolution's output is a fresh tensor.
        self.conv(x)?.f_relu_()
    }

    /// `forward(x)` written into `out`, a channel slice of a block's output: the ReLU's pass
    /// is also the concatenation's copy.
    fn forward_into(&self, x: &Tensor, out: &mut Concat) -> Result<(), tch::TchError> {
        relu_into(&self.conv(x)?, out)
    }
}

/// ReLU of `y` into its slice of `out` (`clamp_min(0)`, which is how ATen computes ReLU).
fn relu_into(y: &Tensor, out: &mut Concat) -> Result<(), tch::TchError> {
    y.f_clamp_min_out(&out.next(y)?, 0.0).map(drop)
}

/// A concatenation filled part by part in order, each part written into its own slice of the
/// output instead of a `cat` copying every part once more: a block's branches (along the
/// channels) or the stem's sub-batches (along the batch).
struct Concat {
    /// [B, C, H, W] of the whole.
    size: [i64; 4],
    dim: usize,
    channels_last: bool,
    /// Allocated at the first part, with its dtype: under autocast that is not float32.
    out: Option<Tensor>,
    offset: i64,
}

impl Concat {
    /// The channels of a block's branches: `like`'s batch, spatial size and memory format.
    fn channels(like: &Tensor, channels: i64) -> Concat {
        let s = like.size();
        Concat {
            size: [s[0], channels, s[2], s[3]],
            dim: 1,
            channels_last: is_channels_last(like),
            out: None,
            offset: 0,
        }
    }

    /// The slice that `part` fills next.
    fn next(&mut self, part: &Tensor) -> Result<Tensor, tch::TchError> {
        let out = match &self.out {
            Some(out) => out,
            None => {
                let [b, c, h, w] = self.size;
                let opts = (part.kind(), part.device());
                let out = if self.channels_last {
                    Tensor::f_empty([b, h, w, c], opts)?.f_permute([0, 3, 1, 2])?
                } else {
                    Tensor::f_empty(self.size, opts)?
                };
                self.out.insert(out)
            }
        };
        let len = part.size()[self.dim];
        let slice = out.f_narrow(self.dim as i64, self.offset, len)?;
        self.offset += len;
        Ok(slice)
    }

    /// The whole, once every part has been written.
    fn finish(self) -> Tensor {
        debug_assert_eq!(self.offset, self.size[self.dim]);
        self.out.expect("a concatenation has parts")
    }
}

/// The same values with channels-last strides (NHWC in memory, still indexed NCHW).
fn channels_last(t: &Tensor) -> Result<Tensor, tch::TchError> {
    t.f_permute([0, 2, 3, 1])?
        .f_contiguous()?
        .f_permute([0, 3, 1, 2])
}

fn is_channels_last(t: &Tensor) -> bool {
    t.dim() == 4 && t.stride()[1] == 1 && t.size()[1] > 1
}

/// Takes tensors out of a state dict with shape checks, or only records the expected shapes.
struct Loader<'a> {
    path: &'a Path,
    weights: Option<StateDict>,
    device: Device,
    expected: Vec<(String, Vec<i64>)>,
}

impl Loader<'_> {
    fn take(&mut self, key: String, shape: Vec<i64>) -> Result<Tensor, MetricsError> {
        self.expected.push((key.clone(), shape.clone()));
        let Some(weights) = self.weights.as_mut() else {
            return Ok(Tensor::zeros(&shape, (Kind::Float, Device::Cpu)));
        };
        let t = weights
            .remove(&key)
            .ok_or_else(|| MetricsError::MissingKey {
                path: self.path.to_path_buf(),
                key: key.clone(),
            })?;
        if t.size() != shape {
            return Err(MetricsError::KeyShape {
                path: self.path.to_path_buf(),
                key,
                found: t.size(),
                expected: shape,
            });
        }
        if !t.is_floating_point() {
            return Err(MetricsError::Weights {
                path: self.path.to_path_buf(),
                reason: format!("{key} is {:?}, not floating point", t.kind()),
            });
        }
        t.f_to_kind(Kind::Float).map_err(tch_err("weights to f32"))
    }

    fn conv(
        &mut self,
        name: &str,
        cin: i64,
        cout: i64,
        kernel: [i64; 2],
        stride: i64,
        padding: [i64; 2],
    ) -> Result<BasicConv, MetricsError> {
        let w = self.take(
            format!("{name}.conv.weight"),
            vec![cout, cin, kernel[0], kernel[1]],
        )?;
        let gamma = self.take(format!("{name}.bn.weight"), vec![cout])?;
        let beta = self.take(format!("{name}.bn.bias"), vec![cout])?;
        let mean = self.take(format!("{name}.bn.running_mean"), vec![cout])?;
        let var = self.take(format!("{name}.bn.running_var"), vec![cout])?;
        let fold = || -> Result<(Tensor, Tensor), tch::TchError> {
            let scale = gamma.f_div(&var.f_add_scalar(BN_EPS)?.f_sqrt()?)?;
            let weight = w.f_mul(&scale.f_view([cout, 1, 1, 1])?)?;
            let bias = beta.f_sub(&mean.f_mul(&scale)?)?;
            // Stored as the activations are (see `FidInception::forward`): the convolution
            // would otherwise convert it on every call.
            let weight = if self.device == Device::Cpu {
                channels_last(&weight)?
            } else {
                weight
            };
            Ok((
                weight.f_to_device(self.device)?,
                bias.f_to_device(self.device)?,
            ))
        };
        let (weight, bias) = fold().map_err(tch_err("folding BatchNorm"))?;
        Ok(BasicConv {
            weight,
            bias,
            stride: [stride, stride],
            padding,
        })
    }

    /// Square kernel with "same"-style padding given explicitly.
    fn sq(
        &mut self,
        name: &str,
        cin: i64,
        cout: i64,
        k: i64,
        stride: i64,
        pad: i64,
    ) -> Result<BasicConv, MetricsError> {
        self.conv(name, cin, cout, [k, k], stride, [pad, pad])
    }
}

/// A chain of units, the last one's output written into `out`.
fn chain_into(convs: &[BasicConv], x: &Tensor, out: &mut Concat) -> Result<(), tch::TchError> {
    let (last, first) = convs.split_last().expect("a branch has units");
    let mut y = x.shallow_clone();
    for c in first {
        y = c.forward(&y)?;
    }
    last.forward_into(&y, out)
}

/// The average-pool branch of Mixed_5b-5d, 6b-6e and 7b: pytorch-fid computes
/// `relu(conv1x1(avg_pool(x)))`; this is `relu(avg_pool(conv1x1(x)))`. Both maps are linear and
/// the pool's weights sum to 1 at every position (padding not counted), so they commute, bias
/// included, and only rounding differs; the pool then runs on the conv's 32-192 channels instead
/// of the block input's 192-1280.
fn avg_pool_branch(conv: &BasicConv, x: &Tensor, out: &mut Concat) -> Result<(), tch::TchError> {
    relu_into(&avg_pool_tf(&conv.conv(x)?)?, out)
}

/// 3x3 stride-1 average pool that ignores the padding (TensorFlow's SAME pooling).
fn avg_pool_tf(x: &Tensor) -> Result<Tensor, tch::TchError> {
    x.f_avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None::<i64>)
}

fn max_pool(x: &Tensor, stride: i64, pad: i64) -> Result<Tensor, tch::TchError> {
    x.f_max_pool2d([3, 3], [stride, stride], [pad, pad], [1, 1], false)
}

/// The 3x3 stride-2 max-pool branch of Mixed_6a and 7a, copied into its slice.
fn max_pool_into(x: &Tensor, out: &mut Concat) -> Result<(), tch::TchError> {
    let pooled = max_pool(x, 2, 0)?;
    out.next(&pooled)?.f_copy_(&pooled)
}

/// Mixed_5b/5c/5d (torchvision `InceptionA`, FID pool).
struct BlockA {
    b1: BasicConv,
    b5: [BasicConv; 2],
    b3: [BasicConv; 3],
    pool: BasicConv,
}

impl BlockA {
    fn new(l: &mut Loader, n: &str, cin: i64, pool: i64) -> Result<Self, MetricsError> {
        Ok(BlockA {
            b1: l.sq(&format!("{n}.branch1x1"), cin, 64, 1, 1, 0)?,
            b5: [
                l.sq(&format!("{n}.branch5x5_1"), cin, 48, 1, 1, 0)?,
                l.sq(&format!("{n}.branch5x5_2"), 48, 64, 5, 1, 2)?,
            ],
            b3: [
                l.sq(&format!("{n}.branch3x3dbl_1"), cin, 64, 1, 1, 0)?,
                l.sq(&format!("{n}.branch3x3dbl_2"), 64, 96, 3, 1, 1)?,
                l.sq(&format!("{n}.branch3x3dbl_3"), 96, 96, 3, 1, 1)?,
            ],
            pool: l.sq(&format!("{n}.branch_pool"), cin, pool, 1, 1, 0)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        let mut out = Concat::channels(x, 64 + 64 + 96 + self.pool.weight.size()[0]);
        self.b1.forward_into(x, &mut out)?;
        chain_into(&self.b5, x, &mut out)?;
        chain_into(&self.b3, x, &mut out)?;
        avg_pool_branch(&self.pool, x, &mut out)?;
        Ok(out.finish())
    }
}

/// Mixed_6a (torchvision `InceptionB`).
struct BlockB {
    b3: BasicConv,
    dbl: [BasicConv; 3],
}

impl BlockB {
    fn new(l: &mut Loader, n: &str, cin: i64) -> Result<Self, MetricsError> {
        Ok(BlockB {
            b3: l.sq(&format!("{n}.branch3x3"), cin, 384, 3, 2, 0)?,
            dbl: [
                l.sq(&format!("{n}.branch3x3dbl_1"), cin, 64, 1, 1, 0)?,
                l.sq(&format!("{n}.branch3x3dbl_2"), 64, 96, 3, 1, 1)?,
                l.sq(&format!("{n}.branch3x3dbl_3"), 96, 96, 3, 2, 0)?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        let b3 = self.b3.conv(x)?;
        let mut out = Concat::channels(&b3, 384 + 96 + x.size()[1]);
        relu_into(&b3, &mut out)?;
        chain_into(&self.dbl, x, &mut out)?;
        max_pool_into(x, &mut out)?;
        Ok(out.finish())
    }
}

/// Mixed_6b-6e (torchvision `InceptionC`, FID pool).
struct BlockC {
    b1: BasicConv,
    b7: [BasicConv; 3],
    dbl: [BasicConv; 5],
    pool: BasicConv,
}

impl BlockC {
    fn new(l: &mut Loader, n: &str, cin: i64, c7: i64) -> Result<Self, MetricsError> {
        let (k17, p17) = ([1, 7], [0, 3]);
        let (k71, p71) = ([7, 1], [3, 0]);
        Ok(BlockC {
            b1: l.sq(&format!("{n}.branch1x1"), cin, 192, 1, 1, 0)?,
            b7: [
                l.sq(&format!("{n}.branch7x7_1"), cin, c7, 1, 1, 0)?,
                l.conv(&format!("{n}.branch7x7_2"), c7, c7, k17, 1, p17)?,
                l.conv(&format!("{n}.branch7x7_3"), c7, 192, k71, 1, p71)?,
            ],
            dbl: [
                l.sq(&format!("{n}.branch7x7dbl_1"), cin, c7, 1, 1, 0)?,
                l.conv(&format!("{n}.branch7x7dbl_2"), c7, c7, k71, 1, p71)?,
                l.conv(&format!("{n}.branch7x7dbl_3"), c7, c7, k17, 1, p17)?,
                l.conv(&format!("{n}.branch7x7dbl_4"), c7, c7, k71, 1, p71)?,
                l.conv(&format!("{n}.branch7x7dbl_5"), c7, 192, k17, 1, p17)?,
            ],
            pool: l.sq(&format!("{n}.branch_pool"), cin, 192, 1, 1, 0)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        let mut out = Concat::channels(x, 4 * 192);
        self.b1.forward_into(x, &mut out)?;
        chain_into(&self.b7, x, &mut out)?;
        chain_into(&self.dbl, x, &mut out)?;
        avg_pool_branch(&self.pool, x, &mut out)?;
        Ok(out.finish())
    }
}

/// Mixed_7a (torchvision `InceptionD`).
struct BlockD {
    b3: [BasicConv; 2],
    b7: [BasicConv; 4],
}

impl BlockD {
    fn new(l: &mut Loader, n: &str, cin: i64) -> Result<Self, MetricsError> {
        Ok(BlockD {
            b3: [
                l.sq(&format!("{n}.branch3x3_1"), cin, 192, 1, 1, 0)?,
                l.sq(&format!("{n}.branch3x3_2"), 192, 320, 3, 2, 0)?,
            ],
            b7: [
                l.sq(&format!("{n}.branch7x7x3_1"), cin, 192, 1, 1, 0)?,
                l.conv(&format!("{n}.branch7x7x3_2"), 192, 192, [1, 7], 1, [0, 3])?,
                l.conv(&format!("{n}.branch7x7x3_3"), 192, 192, [7, 1], 1, [3, 0])?,
                l.sq(&format!("{n}.branch7x7x3_4"), 192, 192, 3, 2, 0)?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        let b3 = self.b3[1].conv(&self.b3[0].forward(x)?)?;
        let mut out = Concat::channels(&b3, 320 + 192 + x.size()[1]);
        relu_into(&b3, &mut out)?;
        chain_into(&self.b7, x, &mut out)?;
        max_pool_into(x, &mut out)?;
        Ok(out.finish())
    }
}

/// Mixed_7b (average pool without padding) and Mixed_7c (max pool): torchvision `InceptionE`.
struct BlockE {
    b1: BasicConv,
    b3_1: BasicConv,
    b3_2: [BasicConv; 2],
    dbl_1: [BasicConv; 2],
    dbl_3: [BasicConv; 2],
    pool: BasicConv,
    max_pool: bool,
}

impl BlockE {
    fn new(l: &mut Loader, n: &str, cin: i64, max_pool: bool) -> Result<Self, MetricsError> {
        Ok(BlockE {
            b1: l.sq(&format!("{n}.branch1x1"), cin, 320, 1, 1, 0)?,
            b3_1: l.sq(&format!("{n}.branch3x3_1"), cin, 384, 1, 1, 0)?,
            b3_2: [
                l.conv(&format!("{n}.branch3x3_2a"), 384, 384, [1, 3], 1, [0, 1])?,
                l.conv(&format!("{n}.branch3x3_2b"), 384, 384, [3, 1], 1, [1, 0])?,
            ],
            dbl_1: [
                l.sq(&format!("{n}.branch3x3dbl_1"), cin, 448, 1, 1, 0)?,
                l.sq(&format!("{n}.branch3x3dbl_2"), 448, 384, 3, 1, 1)?,
            ],
            dbl_3: [
                l.conv(&format!("{n}.branch3x3dbl_3a"), 384, 384, [1, 3], 1, [0, 1])?,
                l.conv(&format!("{n}.branch3x3dbl_3b"), 384, 384, [3, 1], 1, [1, 0])?,
            ],
            pool: l.sq(&format!("{n}.branch_pool"), cin, 192, 1, 1, 0)?,
            max_pool,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        // The inner concatenations (3x3 split into 1x3 and 3x1) are slices of the output too.
        let mut out = Concat::channels(x, 320 + 2 * 384 + 2 * 384 + 192);
        self.b1.forward_into(x, &mut out)?;
        let y = self.b3_1.forward(x)?;
        self.b3_2[0].forward_into(&y, &mut out)?;
        self.b3_2[1].forward_into(&y, &mut out)?;
        let y = self.dbl_1[1].forward(&self.dbl_1[0].forward(x)?)?;
        self.dbl_3[0].forward_into(&y, &mut out)?;
        self.dbl_3[1].forward_into(&y, &mut out)?;
        if self.max_pool {
            self.pool.forward_into(&max_pool(x, 1, 1)?, &mut out)?;
        } else {
            avg_pool_branch(&self.pool, x, &mut out)?;
        }
        Ok(out.finish())
    }
}

/// pytorch-fid's Inception-v3 up to pool3, plus the fc weight for unbiased logits.
pub struct FidInception {
    stem: [BasicConv; 5],
    mixed_5: [BlockA; 3],
    mixed_6a: BlockB,
    mixed_6: [BlockC; 4],
    mixed_7a: BlockD,
    mixed_7: [BlockE; 2],
    /// fc.weight transposed: [2048, 1008].
    fc_t: Tensor,
    device: Device,
    weights_id: String,
}

impl std::fmt::Debug for FidInception {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FidInception")
            .field("device", &self.device)
            .field("weights_id", &self.weights_id)
            .finish()
    }
}

impl FidInception {
    fn build(l: &mut Loader) -> Result<FidInception, MetricsError> {
        let stem = [
            l.sq("Conv2d_1a_3x3", 3, 32, 3, 2, 0)?,
            l.sq("Conv2d_2a_3x3", 32, 32, 3, 1, 0)?,
            l.sq("Conv2d_2b_3x3", 32, 64, 3, 1, 1)?,
            l.sq("Conv2d_3b_1x1", 64, 80, 1, 1, 0)?,
            l.sq("Conv2d_4a_3x3", 80, 192, 3, 1, 0)?,
        ];
        let mixed_5 = [
            BlockA::new(l, "Mixed_5b", 192, 32)?,
            BlockA::new(l, "Mixed_5c", 256, 64)?,
            BlockA::new(l, "Mixed_5d", 288, 64)?,
        ];
        let mixed_6a = BlockB::new(l, "Mixed_6a", 288)?;
        let mixed_6 = [
            BlockC::new(l, "Mixed_6b", 768, 128)?,
            BlockC::new(l, "Mixed_6c", 768, 160)?,
            BlockC::new(l, "Mixed_6d", 768, 160)?,
            BlockC::new(l, "Mixed_6e", 768, 192)?,
        ];
        let mixed_7a = BlockD::new(l, "Mixed_7a", 768)?;
        let mixed_7 = [
            BlockE::new(l, "Mixed_7b", 1280, false)?,
            BlockE::new(l, "Mixed_7c", 2048, true)?,
        ];
        let fc = l.take(
            "fc.weight".into(),
            vec![LOGITS_DIM as i64, POOL3_DIM as i64],
        )?;
        // Unused (IS takes logits without bias) but part of the file: checked all the same.
        let _bias = l.take("fc.bias".into(), vec![LOGITS_DIM as i64])?;
        let fc_t = fc
            .f_tr()
            .and_then(|t| t.f_contiguous())
            .and_then(|t| t.f_to_device(l.device))
            .map_err(tch_err("fc weight"))?;
        Ok(FidInception {
            stem,
            mixed_5,
            mixed_6a,
            mixed_6,
            mixed_7a,
            mixed_7,
            fc_t,
            device: l.device,
            weights_id: String::new(),
        })
    }

    /// Loads pytorch-fid's weights (legacy or zip torch.save, or safetensors) onto `device`.
    /// `num_batches_tracked` and keys the network does not use are ignored; every other key
    /// must be present with its shape.
    pub fn load(path: &Path, device: Device) -> Result<FidInception, MetricsError> {
        let bytes = std::fs::read(path).map_err(|e| MetricsError::Weights {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let weights = torch_file::parse_state_dict(path, &bytes).map_err(|e| match e {
            MetricsError::Format { path, reason } => MetricsError::Weights {
                path,
                reason: format!("{reason} (file is {} bytes)", bytes.len()),
            },
            other => other,
        })?;
        let mut loader = Loader {
            path,
            weights: Some(weights),
            device,
            expected: Vec::new(),
        };
        let _guard = tch::no_grad_guard();
        let mut net = Self::build(&mut loader)?;
        net.weights_id = crate::cache::hash_bytes(&bytes);
        Ok(net)
    }

    /// Every tensor the network reads from a weights file, with its shape, sorted by name
    /// (`num_batches_tracked` excluded).
    pub fn parameter_shapes() -> Vec<(String, Vec<i64>)> {
        let mut loader = Loader {
            path: Path::new(""),
            weights: None,
            device: Device::Cpu,
            expected: Vec::new(),
        };
        let _guard = tch::no_grad_guard();
        // Without weights nothing can fail; an error here would be a bug in `build`.
        let _ = Self::build(&mut loader);
        let mut v = loader.expected;
        v.sort();
        v
    }

    /// First 8 hex digits of the weights file's SHA-256 (for cache keys and reports).
    pub fn weights_id(&self) -> &str {
        &self.weights_id
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Conv2d_1a-4a and both max pools: [B, 3, 299, 299] to [B, 192, 35, 35], ReLU'd into `out`.
    fn stem_into(&self, x: &Tensor, out: &mut Concat) -> Result<(), tch::TchError> {
        let mut x = self.stem[0].forward(x)?;
        x = self.stem[1].forward(&x)?;
        // ReLU and max pool commute exactly: pooling first leaves the ReLU 4x fewer values.
        x = max_pool(&self.stem[2].conv(&x)?, 2, 0)?.f_relu_()?;
        x = self.stem[3].forward(&x)?;
        relu_into(&max_pool(&self.stem[4].conv(&x)?, 2, 0)?, out)
    }

    /// pool3 features [B, 2048] and logits without the fc bias [B, 1008] (float32, on the
    /// network's device) of preprocessed input [B, 3, 299, 299].
    ///
    /// On the CPU (departures from pytorch-fid's layout, not its values; parity tests cover
    /// this path): activations and weights are channels-last, which oneDNN's convolutions
    /// take as they are where NCHW costs a reorder in and out of every convolution (about 2x
    /// here); and the stem, whose activations are the largest (5.5 MB an image after
    /// Conv2d_2b), runs [`STEM_BATCH`] images at a time, which bounds peak memory without
    /// shrinking the batch of the later blocks.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor), MetricsError> {
        let size = x.size();
        if size.len() != 4 || size[1] != 3 || size[2] != INCEPTION_SIZE || size[3] != INCEPTION_SIZE
        {
            return Err(MetricsError::input(
                "Inception input",
                "[B, 3, 299, 299] (preprocess the images first)",
                format!("{size:?}"),
            ));
        }
        if !x.is_floating_point() {
            return Err(MetricsError::input(
                "Inception input",
                "a floating-point tensor",
                format!("{:?}", x.kind()),
            ));
        }
        let _guard = tch::no_grad_guard();
        let b = size[0];
        if b == 0 {
            let empty = |d: usize| Tensor::zeros([0, d as i64], (Kind::Float, self.device));
            return Ok((empty(POOL3_DIM), empty(LOGITS_DIM)));
        }
        let run = || -> Result<(Tensor, Tensor), tch::TchError> {
            let x = x.f_to_device(self.device)?.f_to_kind(Kind::Float)?;
            let cpu = self.device == Device::Cpu;
            let mut stem = Concat {
                size: [b, 192, 35, 35],
                dim: 0,
                channels_last: cpu,
                out: None,
                offset: 0,
            };
            let step = if cpu { STEM_BATCH } else { b.max(1) };
            let mut start = 0;
            while start < b {
                let len = step.min(b - start);
                let mut part = x.f_narrow(0, start, len)?;
                if cpu {
                    part = channels_last(&part)?;
                }
                self.stem_into(&part, &mut stem)?;
                start += len;
            }
            let mut x = stem.finish();
            for b in &self.mixed_5 {
                x = b.forward(&x)?;
            }
            x = self.mixed_6a.forward(&x)?;
            for b in &self.mixed_6 {
                x = b.forward(&x)?;
            }
            x = self.mixed_7a.forward(&x)?;
            for b in &self.mixed_7 {
                x = b.forward(&x)?;
            }
            let pool = x.f_adaptive_avg_pool2d([1, 1])?.f_flatten(1, -1)?;
            let logits = pool.f_matmul(&self.fc_t)?;
            Ok((pool, logits))
        };
        run().map_err(tch_err("Inception forward"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_has_94_conv_units_and_the_fc() {
        let shapes = FidInception::parameter_shapes();
        assert_eq!(shapes.len(), 94 * 5 + 2);
        let get = |k: &str| shapes.iter().find(|(n, _)| n == k).map(|(_, s)| s.clone());
        assert_eq!(get("fc.weight"), Some(vec![1008, 2048]));
        assert_eq!(
            get("Mixed_7c.branch_pool.conv.weight"),
            Some(vec![192, 2048, 1, 1])
        );
        assert_eq!(
            get("Mixed_6e.branch7x7dbl_5.conv.weight"),
            Some(vec![192, 192, 1, 7])
        );
        assert!(shapes.iter().all(|(k, _)| !k.contains("__")));
    }
}
