//! Stateless StyleGAN2 operations, with the semantics of stylegan2-ada-pytorch's reference
//! implementations (`torch_utils/ops/upfirdn2d.py` with `impl='ref'`, `conv2d_resample.py`,
//! `bias_act.py` with `impl='ref'`, and `modulated_conv2d` / `MinibatchStdLayer` in
//! `training/networks.py`). They are written with plain libtorch ops, so every one of them has
//! gradients of any order (R1 and path-length regularisation differentiate through them twice).
//!
//! Conventions follow the reference: padding lists are `[x0, x1, y0, y1]`; `flip_weight = true`
//! means correlation (what `conv2d` computes), `false` a true convolution. The FIR filter is always
//! the 2-D outer product of the taps, normalised to sum 1 (`setup_filter` of a 4-tap filter, which
//! the reference does not make separable).

use tch::{Device, Kind, Tensor};

/// The resampling filter of the paper (a binomial [1, 3, 3, 1] low-pass).
pub const BLUR_TAPS: [f64; 4] = [1.0, 3.0, 3.0, 1.0];

/// Activation applied by [`bias_act`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Linear,
    /// LeakyReLU with slope 0.2.
    Lrelu,
}

impl Act {
    /// The reference's `def_gain`: sqrt(2) for lrelu keeps the signal's second moment (He et al.).
    pub fn default_gain(self) -> f64 {
        match self {
            Act::Linear => 1.0,
            Act::Lrelu => std::f64::consts::SQRT_2,
        }
    }
}

/// `setup_filter(taps)`: the outer product of `taps` with itself, normalised to sum 1, `[n, n]`.
pub fn setup_filter(taps: &[f64], device: Device) -> Tensor {
    let t = Tensor::from_slice(taps)
        .to_kind(Kind::Float)
        .to_device(device);
    let f = t.outer(&t);
    let sum = f.sum(Kind::Float);
    f / sum
}

/// `upfirdn2d(x, f, up, down, padding, gain)` as the reference implementation computes it: insert
/// `up - 1` zeros after each pixel, pad (or crop, for negative values) by `pad = [x0, x1, y0, y1]`,
/// convolve every channel with `f * gain` (true convolution), keep every `down`-th pixel.
pub fn upfirdn2d(x: &Tensor, f: &Tensor, up: i64, down: i64, pad: [i64; 4], gain: f64) -> Tensor {
    let c = x.size()[1];
    let x = upsample_and_pad(x, up, pad);
    // `f * gain^(ndim/2)` with a 2-D filter is `f * gain`; flipping turns conv2d's correlation
    // into the convolution the reference asks for (a no-op for the symmetric blur filter).
    let (fh, fw) = (f.size()[0], f.size()[1]);
    let k = (f.flip([0, 1]) * gain)
        .to_kind(x.kind())
        .reshape([1, 1, fh, fw])
        .repeat([c, 1, 1, 1]);
    let x = x.conv2d(&k, None::<Tensor>, [1, 1], [0, 0], [1, 1], c);
    keep_every(x, down)
}

/// `upfirdn2d` with a separable filter: `f` is 1-D (`setup_filter` keeps filters of 8 or more
/// taps separable), applied along W then along H, each pass with `gain^(1/2)`. `flip_filter =
/// true` correlates instead of convolving (the two differ for asymmetric filters such as ADA's
/// wavelet). The same values as the reference's zero insertion, padding, filtering and
/// subsampling, computed axis by axis without multiplying the inserted zeros (a transposed
/// convolution) or the dropped outputs (a strided convolution).
pub fn upfirdn2d_separable(
    x: &Tensor,
    f: &Tensor,
    up: i64,
    down: i64,
    pad: [i64; 4],
    flip_filter: bool,
    gain: f64,
) -> Tensor {
    // The correlation kernel the reference ends up applying.
    let g = if flip_filter {
        f.shallow_clone()
    } else {
        f.flip([0])
    };
    let g = (g * gain.sqrt()).to_kind(x.kind());
    let [px0, px1, py0, py1] = pad;
    let x = upfirdn_axis(x, &g, 3, up, down, (px0, px1));
    upfirdn_axis(&x, &g, 2, up, down, (py0, py1))
}

/// One axis (`dim` 3 = W, 2 = H) of [`upfirdn2d_separable`] with correlation kernel `g`.
fn upfirdn_axis(x: &Tensor, g: &Tensor, dim: i64, up: i64, down: i64, pad: (i64, i64)) -> Tensor {
    let c = x.size()[1];
    let len = x.size()[dim as usize];
    let k = g.size()[0];
    let (p0, p1) = pad;
    let kernel = |t: &Tensor| {
        let shape = if dim == 3 { [1, 1, 1, k] } else { [1, 1, k, 1] };
        t.reshape(shape).repeat([c, 1, 1, 1])
    };
    let stride = |s: i64| if dim == 3 { [1, s] } else { [s, 1] };
    let out_len = len * up + p0 + p1 - k + 1;
    if up > 1 && p0 < k && p1 <= k - up && out_len > 0 {
        // y[n] = sum_i x[i] g[up i + p0 - n] = t[n + k - 1 - p0] with t the transposed
        // convolution of x with flip(g) at stride `up`.
        let t = x.conv_transpose2d(
            &kernel(&g.flip([0])),
            None::<Tensor>,
            stride(up),
            [0, 0],
            [0, 0],
            c,
            [1, 1],
        );
        let y = t.narrow(dim, k - 1 - p0, out_len);
        return if down > 1 {
            y.slice(dim, 0, None, down)
        } else {
            y
        };
    }
    let mut y = x.shallow_clone();
    if up > 1 {
        let s = y.size();
        y = if dim == 3 {
            y.unsqueeze(-1)
                .constant_pad_nd([0, up - 1])
                .reshape([s[0], s[1], s[2], s[3] * up])
        } else {
            y.unsqueeze(3)
                .constant_pad_nd([0, 0, 0, up - 1])
                .reshape([s[0], s[1], s[2] * up, s[3]])
        };
    }
    if p0 > 0 || p1 > 0 {
        let (a, b) = (p0.max(0), p1.max(0));
        y = if dim == 3 {
            y.constant_pad_nd([a, b])
        } else {
            y.constant_pad_nd([0, 0, a, b])
        };
    }
    if p0 < 0 || p1 < 0 {
        let n = y.size()[dim as usize];
        let (a, b) = ((-p0).max(0), (-p1).max(0));
        y = y.narrow(dim, a, n - a - b);
    }
    y.conv2d(&kernel(g), None::<Tensor>, stride(down), [0, 0], [1, 1], c)
}

/// The first two steps of `upfirdn2d`: zeros inserted after each pixel, then pad or crop.
fn upsample_and_pad(x: &Tensor, up: i64, pad: [i64; 4]) -> Tensor {
    let (b, c, h, w) = x.size4().expect("upfirdn2d wants [N, C, H, W]");
    let mut x = x.shallow_clone();
    if up > 1 {
        x = x
            .reshape([b, c, h, 1, w, 1])
            .constant_pad_nd([0, up - 1, 0, 0, 0, up - 1])
            .reshape([b, c, h * up, w * up]);
    }
    let [px0, px1, py0, py1] = pad;
    if pad.iter().any(|&p| p > 0) {
        x = x.constant_pad_nd([px0.max(0), px1.max(0), py0.max(0), py1.max(0)]);
    }
    if pad.iter().any(|&p| p < 0) {
        let (hh, ww) = (x.size()[2], x.size()[3]);
        let (y0, y1) = ((-py0).max(0), (-py1).max(0));
        let (x0, x1) = ((-px0).max(0), (-px1).max(0));
        x = x.narrow(2, y0, hh - y0 - y1).narrow(3, x0, ww - x0 - x1);
    }
    x
}

fn keep_every(x: Tensor, down: i64) -> Tensor {
    if down > 1 {
        x.slice(2, 0, None, down).slice(3, 0, None, down)
    } else {
        x
    }
}

/// `upsample2d(x, f)`: 2x upsampling with the filter (padding so the output is exactly 2H x 2W).
pub fn upsample2d(x: &Tensor, f: &Tensor) -> Tensor {
    let fw = f.size()[1];
    let (p0, p1) = ((fw + 1) / 2, (fw - 2) / 2);
    upfirdn2d(x, f, 2, 1, [p0, p1, p0, p1], 4.0)
}

/// `downsample2d(x, f)`: 2x downsampling with the filter (output exactly H/2 x W/2).
pub fn downsample2d(x: &Tensor, f: &Tensor) -> Tensor {
    let fw = f.size()[1];
    let (p0, p1) = ((fw - 1) / 2, (fw - 2) / 2);
    upfirdn2d(x, f, 1, 2, [p0, p1, p0, p1], 1.0)
}

fn conv(
    x: &Tensor,
    w: &Tensor,
    stride: i64,
    padding: [i64; 2],
    groups: i64,
    flip_weight: bool,
) -> Tensor {
    let w = if flip_weight {
        w.shallow_clone()
    } else {
        w.flip([2, 3])
    };
    x.conv2d(
        &w,
        None::<Tensor>,
        [stride, stride],
        padding,
        [1, 1],
        groups,
    )
}

/// `conv2d_resample`: a 2-D convolution with optional 2x up- or downsampling through the FIR
/// filter `f`, padded once at the start (`padding` is relative to the upsampled image). Takes the
/// reference's fast paths: filter-then-strided-conv for downsampling, transposed strided conv then
/// filter for upsampling, conv-then-filter / filter-then-conv for 1x1 kernels. `w` is
/// `[O, I / groups, kh, kw]`. (The argument list mirrors the reference's.)
#[allow(clippy::too_many_arguments)]
pub fn conv2d_resample(
    x: &Tensor,
    w: &Tensor,
    f: &Tensor,
    up: i64,
    down: i64,
    padding: i64,
    groups: i64,
    flip_weight: bool,
) -> Tensor {
    let ws = w.size();
    let (out_ch, in_per_group, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    let (fh, fw) = (f.size()[0], f.size()[1]);
    let (mut px0, mut px1, mut py0, mut py1) = (padding, padding, padding, padding);
    if up > 1 {
        px0 += (fw + up - 1) / 2;
        px1 += (fw - up) / 2;
        py0 += (fh + up - 1) / 2;
        py1 += (fh - up) / 2;
    }
    if down > 1 {
        px0 += (fw - down + 1) / 2;
        px1 += (fw - down) / 2;
        py0 += (fh - down + 1) / 2;
        py1 += (fh - down) / 2;
    }
    let gain = (up * up) as f64;
    if kw == 1 && kh == 1 && down > 1 && up == 1 {
        let x = upfirdn2d(x, f, 1, down, [px0, px1, py0, py1], 1.0);
        return conv(&x, w, 1, [0, 0], groups, flip_weight);
    }
    if kw == 1 && kh == 1 && up > 1 && down == 1 {
        let x = conv(x, w, 1, [0, 0], groups, flip_weight);
        return upfirdn2d(&x, f, up, 1, [px0, px1, py0, py1], gain);
    }
    if down > 1 && up == 1 {
        let x = upfirdn2d(x, f, 1, 1, [px0, px1, py0, py1], 1.0);
        return conv(&x, w, down, [0, 0], groups, flip_weight);
    }
    if up > 1 {
        // A transposed strided convolution does the zero insertion and the convolution in one op;
        // its weight layout is [I, O / groups, kh, kw] per group.
        let wt = if groups == 1 {
            w.transpose(0, 1)
        } else {
            w.reshape([groups, out_ch / groups, in_per_group, kh, kw])
                .transpose(1, 2)
                .reshape([groups * in_per_group, out_ch / groups, kh, kw])
        };
        px0 -= kw - 1;
        px1 -= kw - up;
        py0 -= kh - 1;
        py1 -= kh - up;
        let pxt = (-px0).min(-px1).max(0);
        let pyt = (-py0).min(-py1).max(0);
        // conv_transpose2d is the adjoint of a correlation, i.e. a convolution: flip when a
        // correlation was asked for.
        let wt = if flip_weight { wt.flip([2, 3]) } else { wt };
        let x = x.conv_transpose2d(
            &wt,
            None::<Tensor>,
            [up, up],
            [pyt, pxt],
            [0, 0],
            groups,
            [1, 1],
        );
        let x = upfirdn2d(
            &x,
            f,
            1,
            1,
            [px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt],
            gain,
        );
        return if down > 1 {
            upfirdn2d(&x, f, 1, down, [0, 0, 0, 0], 1.0)
        } else {
            x
        };
    }
    if px0 == px1 && py0 == py1 && px0 >= 0 && py0 >= 0 {
        return conv(x, w, 1, [py0, px0], groups, flip_weight);
    }
    // The general case (asymmetric padding without resampling): pad or crop, then convolve.
    let x = upfirdn2d(
        x,
        &f.ones_like().narrow(0, 0, 1).narrow(1, 0, 1),
        1,
        1,
        [px0, px1, py0, py1],
        1.0,
    );
    conv(&x, w, 1, [0, 0], groups, flip_weight)
}

/// `bias_act` (reference implementation): add `b` along dim 1, apply `act`, multiply by `gain`.
pub fn bias_act(x: &Tensor, b: Option<&Tensor>, act: Act, gain: f64) -> Tensor {
    let mut x = match b {
        Some(b) => {
            let mut shape = vec![1i64; x.dim()];
            shape[1] = -1;
            x + b.reshape(shape.as_slice())
        }
        None => x.shallow_clone(),
    };
    if act == Act::Lrelu {
        x = crate::nn::leaky_relu(&x, 0.2);
    }
    if gain != 1.0 {
        x *= gain;
    }
    x
}

/// `normalize_2nd_moment`: scales each row to unit mean square (the mapping network's input).
pub fn normalize_2nd_moment(x: &Tensor) -> Tensor {
    x * (x.square().mean_dim(1, true, None::<Kind>) + 1e-8).rsqrt()
}

/// How [`modulated_conv2d`] executes. Both forms compute the same function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModConvForm {
    /// One grouped convolution with per-sample weights `w * s` (demodulated). The reference uses
    /// it for inference.
    Grouped,
    /// Scale the activations by the styles, convolve with the shared weight, scale the output by
    /// the demodulation coefficients. The reference uses it for training (one large convolution
    /// instead of `N` small ones is faster for batched training).
    ScaleActivations,
}

/// `modulated_conv2d` (Karras et al. 2020, eqs. 1-3): the weight `[O, I, k, k]` is modulated by
/// per-sample `styles` `[N, I]` and, with `demodulate`, normalised so every output feature map has
/// unit expected variance. `up = 2` upsamples through the filter first (then the weight acts as a
/// true convolution, as in the reference); `padding` is relative to the upsampled image. `noise`
/// (broadcastable to the output) is added after demodulation.
#[allow(clippy::too_many_arguments)]
pub fn modulated_conv2d(
    x: &Tensor,
    weight: &Tensor,
    styles: &Tensor,
    noise: Option<&Tensor>,
    up: i64,
    padding: i64,
    f: &Tensor,
    demodulate: bool,
    form: ModConvForm,
) -> Tensor {
    let n = x.size()[0];
    let ws = weight.size();
    let (in_ch, kh, kw) = (ws[1], ws[2], ws[3]);
    let flip_weight = up == 1;
    // fp16 (as the reference): scale weight and styles to at most 1 before they multiply, or
    // their squares' sums overflow; demodulation divides the scale out again, so the result is
    // unchanged.
    let (weight, styles) = if x.kind() == Kind::Half && demodulate {
        let inf_norm = |t: &Tensor, dims: &[i64]| t.abs().amax(dims, true);
        let w = weight * (1.0 / ((in_ch * kh * kw) as f64).sqrt()) / inf_norm(weight, &[1, 2, 3]);
        (w, styles / inf_norm(styles, &[1]))
    } else {
        (weight.shallow_clone(), styles.shallow_clone())
    };
    let (weight, styles) = (&weight, &styles);
    let modulated = weight.unsqueeze(0) * styles.reshape([n, 1, -1, 1, 1]); // [N, O, I, k, k]
    let dcoefs = demodulate.then(|| {
        (modulated
            .square()
            .sum_dim_intlist(&[2i64, 3, 4][..], false, None::<Kind>)
            + 1e-8)
            .rsqrt()
    }); // [N, O]
    match form {
        ModConvForm::Grouped => {
            let w = match &dcoefs {
                Some(d) => modulated * d.reshape([n, -1, 1, 1, 1]),
                None => modulated,
            };
            let xs = x.size();
            let x = x.reshape([1, -1, xs[2], xs[3]]);
            let w = w.reshape([-1, in_ch, kh, kw]);
            let y = conv2d_resample(&x, &w, f, up, 1, padding, n, flip_weight);
            let ys = y.size();
            let y = y.reshape([n, -1, ys[2], ys[3]]);
            match noise {
                Some(z) => y + z,
                None => y,
            }
        }
        ModConvForm::ScaleActivations => {
            let x = x * styles.reshape([n, -1, 1, 1]);
            let y = conv2d_resample(&x, weight, f, up, 1, padding, 1, flip_weight);
            let y = match &dcoefs {
                Some(d) => y * d.reshape([n, -1, 1, 1]),
                None => y,
            };
            match noise {
                Some(z) => y + z,
                None => y,
            }
        }
    }
}

/// The reference's `conv_clamp` for fp16 activations: clamped to +-256 times the layer's gain
/// (stylegan2-ada clamps whenever it trains in mixed precision); other dtypes pass unchanged.
pub fn fp16_clamp(y: Tensor, gain: f64) -> Tensor {
    if y.kind() == Kind::Half {
        y.clamp(-CONV_CLAMP * gain, CONV_CLAMP * gain)
    } else {
        y
    }
}

/// stylegan2-ada's `conv_clamp` of its mixed-precision configurations.
pub const CONV_CLAMP: f64 = 256.0;

/// Minibatch standard deviation (Karras et al. 2018, as in StyleGAN2): split the batch into groups
/// of `group_size`, and the channels into `num_channels` parts; append to every sample the mean
/// (over its part's channels and pixels) of the standard deviation across its group, as
/// `num_channels` constant feature maps.
///
/// Departure: the reference asserts that the batch divides into groups of `min(group_size, N)`;
/// here the group is the largest divisor of `N` not above that, so odd-sized batches (evaluation,
/// a last partial batch) still work. For the usual batch sizes nothing changes.
pub fn minibatch_std(x: &Tensor, group_size: i64, num_channels: i64) -> Tensor {
    let (n, c, h, w) = x.size4().expect("minibatch_std wants [N, C, H, W]");
    let g = (1..=group_size.min(n).max(1))
        .rev()
        .find(|g| n % g == 0)
        .unwrap_or(1);
    let f = num_channels;
    let y = x.reshape([g, -1, f, c / f, h, w]);
    let y = &y - y.mean_dim(0, false, None::<Kind>);
    let y = y.square().mean_dim(0, false, None::<Kind>);
    let y = (y + 1e-8).sqrt();
    let y = y.mean_dim(&[2i64, 3, 4][..], false, None::<Kind>);
    let y = y.reshape([-1, f, 1, 1]).repeat([g, 1, h, w]);
    Tensor::cat(&[x.shallow_clone(), y], 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> (Kind, Device) {
        (Kind::Double, Device::Cpu)
    }

    #[test]
    fn filter_is_normalised_outer_product() {
        let f = setup_filter(&BLUR_TAPS, Device::Cpu);
        assert_eq!(f.size(), [4, 4]);
        assert!((f.sum(Kind::Float).double_value(&[]) - 1.0).abs() < 1e-6);
        assert!((f.double_value(&[1, 2]) - 9.0 / 64.0).abs() < 1e-7);
    }

    #[test]
    fn resampling_keeps_constants_and_shapes() {
        let f = setup_filter(&BLUR_TAPS, Device::Cpu);
        let x = Tensor::ones([2, 3, 8, 8], opts());
        let up = upsample2d(&x, &f);
        let down = downsample2d(&x, &f);
        assert_eq!(up.size(), [2, 3, 16, 16]);
        assert_eq!(down.size(), [2, 3, 4, 4]);
        // Away from the zero-padded border a constant stays that constant.
        assert!((up.double_value(&[0, 0, 8, 8]) - 1.0).abs() < 1e-12);
        assert!((down.double_value(&[1, 2, 2, 1]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn both_modconv_forms_agree_up_and_down() {
        tch::manual_seed(0);
        let f = setup_filter(&BLUR_TAPS, Device::Cpu);
        let x = Tensor::randn([3, 4, 8, 8], opts());
        let w = Tensor::randn([5, 4, 3, 3], opts());
        let s = Tensor::randn([3, 4], opts());
        for (up, demod) in [(1, true), (2, true), (1, false)] {
            let a = modulated_conv2d(&x, &w, &s, None, up, 1, &f, demod, ModConvForm::Grouped);
            let b = modulated_conv2d(
                &x,
                &w,
                &s,
                None,
                up,
                1,
                &f,
                demod,
                ModConvForm::ScaleActivations,
            );
            assert_eq!(a.size(), [3, 5, 8 * up, 8 * up]);
            let err = (&a - &b).abs().max().double_value(&[]);
            assert!(err < 1e-10, "up={up} demod={demod}: {err}");
        }
    }

    /// fp16 tensors with large styles: the modulated weights' squares would overflow fp16
    /// (300^2 * 36 terms), so the reference pre-normalises weight and styles; the result then
    /// matches fp32's to fp16 precision, in both forms. fp16 activations are clamped at 256.
    #[test]
    fn fp16_modulated_convolution_prenormalises_and_clamps() {
        let f = setup_filter(&BLUR_TAPS, Device::Cpu);
        let d = (Kind::Double, Device::Cpu);
        let x = Tensor::arange(2 * 4 * 8 * 8, d).sin().reshape([2, 4, 8, 8]);
        let w = (Tensor::arange(5 * 4 * 3 * 3, d) * 0.3)
            .cos()
            .reshape([5, 4, 3, 3]);
        let s = (Tensor::arange(8, d) * 1.7).sin().reshape([2, 4]) * 300.0;
        for form in [ModConvForm::Grouped, ModConvForm::ScaleActivations] {
            let want = modulated_conv2d(&x, &w, &s, None, 1, 1, &f, true, form);
            let half = |t: &Tensor| t.to_kind(Kind::Half);
            let got = modulated_conv2d(&half(&x), &half(&w), &half(&s), None, 1, 1, &f, true, form)
                .to_kind(Kind::Double);
            let err = (&got - &want).abs().max().double_value(&[]);
            let scale = want.abs().max().double_value(&[]);
            assert!(
                err < 0.01 * scale,
                "{form:?}: fp16 off by {err} (scale {scale})"
            );
        }
        let big = Tensor::from_slice(&[-1000.0f32, -10.0, 300.0]);
        assert_eq!(
            Vec::<f32>::try_from(fp16_clamp(big.to_kind(Kind::Half), 1.0).to_kind(Kind::Float))
                .unwrap(),
            [-256.0, -10.0, 256.0]
        );
        assert!(
            fp16_clamp(big.shallow_clone(), 1.0).equal(&big),
            "fp32 is not clamped"
        );
    }

    #[test]
    fn demodulated_outputs_have_unit_weight_norm() {
        // With demodulation, scaling a sample's styles does not change its output. Inputs without
        // the global generator, which other tests draw from in parallel.
        let f = setup_filter(&BLUR_TAPS, Device::Cpu);
        let x = Tensor::arange(2 * 3 * 6 * 6, opts())
            .sin()
            .reshape([2, 3, 6, 6]);
        let w = (Tensor::arange(4 * 3 * 3 * 3, opts()) * 0.7)
            .cos()
            .reshape([4, 3, 3, 3]);
        let s = Tensor::arange(6, opts()).reshape([2, 3]) * 0.3 + 0.5;
        let a = modulated_conv2d(&x, &w, &s, None, 1, 1, &f, true, ModConvForm::Grouped);
        let b = modulated_conv2d(
            &x,
            &w,
            &(&s * 7.0),
            None,
            1,
            1,
            &f,
            true,
            ModConvForm::Grouped,
        );
        assert!((&a - &b).abs().max().double_value(&[]) < 1e-9);
    }

    #[test]
    fn minibatch_std_appends_group_statistics() {
        let x = Tensor::arange(8 * 2 * 2 * 2, opts()).reshape([8, 2, 2, 2]);
        let y = minibatch_std(&x, 4, 1);
        assert_eq!(y.size(), [8, 3, 2, 2]);
        // Samples i and i + 2 (+4, +6) form a group (groups are strided, as in the reference).
        assert_eq!(y.double_value(&[0, 2, 0, 0]), y.double_value(&[2, 2, 1, 1]));
        // A batch of 6 falls back to groups of 3.
        assert_eq!(minibatch_std(&x.narrow(0, 0, 6), 4, 1).size(), [6, 3, 2, 2]);
    }

    /// The separable form equals the 2-D reference form with the outer-product filter, on the
    /// fast paths (transposed and strided convolutions) and the general one (crops, odd pads).
    #[test]
    fn separable_upfirdn_equals_the_two_dimensional_one() {
        let opts = (Kind::Double, Device::Cpu);
        let x = Tensor::randn([2, 3, 7, 9], opts);
        let taps = Tensor::from_slice(&[0.1, -0.3, 0.8, 0.5, 0.2, -0.05]).to_kind(Kind::Double);
        let f2 = taps.outer(&taps);
        for (up, down, pad) in [
            (2, 1, [3, 2, 3, 2]),
            (2, 1, [5, 4, 1, 4]),
            (2, 1, [-1, 2, 0, 0]),
            (1, 2, [2, 2, -1, 3]),
            (2, 2, [2, 1, 2, 1]),
            (3, 1, [1, 5, 2, 2]),
        ] {
            for flip in [false, true] {
                let two_d = if flip {
                    f2.flip([0, 1])
                } else {
                    f2.shallow_clone()
                };
                let want = upfirdn2d(&x, &two_d, up, down, pad, 2.0);
                let got = upfirdn2d_separable(&x, &taps, up, down, pad, flip, 2.0);
                assert_eq!(got.size(), want.size(), "{up} {down} {pad:?}");
                let err = (&got - &want).abs().max().double_value(&[]);
                assert!(err < 1e-12, "{up} {down} {pad:?} {flip}: {err}");
            }
        }
    }
}
