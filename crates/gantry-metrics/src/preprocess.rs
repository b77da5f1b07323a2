//! From uint8 images to the Inception input: [B, 3, 299, 299] float32 in [-1, 1].
//!
//! Preprocessing is the main reason two tools disagree on FID, so each mode reproduces one
//! tool's pipeline op for op (tests compare against the tools themselves):
//! - [`Preprocessing::PytorchFid`]: `x / 255`, `interpolate(bilinear, align_corners=False)`
//!   (half-pixel centres, no antialiasing), `2x - 1`;
//! - [`Preprocessing::Tf`]: torch-fidelity's TF1 bilinear (source = dst * in/out, no half-pixel
//!   offset, clamped at the edge), `(x - 128) / 128`; the same f32 ops in the same order as
//!   `interpolate_bilinear_2d_like_tensorflow1x(..., method='slow')`, so it is bit-exact;
//! - [`Preprocessing::Clean`]: clean-fid's PIL bicubic (a = -0.5) with antialiasing, per
//!   channel in float mode, clipped to [0, 255], `(x - 128) / 128`. PIL's separable filter is
//!   applied as two f64 matrix products (horizontal, then vertical) with the intermediate
//!   rounded to f32 as PIL's float image stores it.

use std::fmt;

use tch::{Device, Kind, Tensor};

use crate::error::{tch_err, MetricsError};

/// The Inception input side.
pub const INCEPTION_SIZE: i64 = 299;

/// Whose preprocessing to reproduce (`pytorch-fid`, `tf`, `clean` in configs and flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preprocessing {
    /// pytorch-fid (the default for FID).
    #[default]
    PytorchFid,
    /// torch-fidelity (TensorFlow 1 resize).
    Tf,
    /// clean-fid (PIL bicubic, antialiased).
    Clean,
}

impl Preprocessing {
    /// The names of configs and flags (the serde names).
    pub const NAMES: [&'static str; 3] = ["pytorch-fid", "tf", "clean"];

    /// Stable name for reports and cache keys.
    pub fn id(&self) -> &'static str {
        match self {
            Preprocessing::PytorchFid => "pytorch-fid",
            Preprocessing::Tf => "tf",
            Preprocessing::Clean => "clean",
        }
    }

    /// Parses [`Preprocessing::id`].
    pub fn from_id(s: &str) -> Option<Self> {
        [Self::PytorchFid, Self::Tf, Self::Clean]
            .into_iter()
            .find(|m| m.id() == s)
    }
}

impl fmt::Display for Preprocessing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// Generated images in [-1, 1] to uint8 exactly as saving a PNG would: `floor(x * 127.5 + 128)`,
/// clamped to [0, 255]. That is what torchvision's `save_image` (`x * 255 + 0.5`, truncated, on
/// `(x + 1) / 2`) and stylegan2-ada's image export (`x * 127.5 + 128`, truncated) write, and it
/// inverts the loaders' `v / 127.5 - 1` exactly. (Some write-ups say `round`; the
/// tools themselves truncate, so gantry does too; `docs/metrics.md`.)
pub fn quantize(x: &Tensor) -> Tensor {
    (x.to_kind(Kind::Float) * 127.5 + 128.0)
        .floor()
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8)
}

/// Checks [B, C, H, W] uint8 with C in {1, 3}.
pub(crate) fn check_images(images: &Tensor) -> Result<(), MetricsError> {
    let size = images.size();
    let ok_rank = size.len() == 4 && matches!(size[1], 1 | 3) && size[2] > 0 && size[3] > 0;
    if !ok_rank {
        return Err(MetricsError::input(
            "images",
            "[B, 1 or 3, H, W]",
            format!("{size:?}"),
        ));
    }
    let kind = images.f_kind().map_err(tch_err("images"))?;
    if kind != Kind::Uint8 {
        return Err(MetricsError::input(
            "images",
            "uint8 (quantize generated images first)",
            format!("{kind:?}"),
        ));
    }
    Ok(())
}

/// [`check_images`], then grey is repeated to three channels.
fn rgb_u8(images: &Tensor) -> Result<Tensor, MetricsError> {
    check_images(images)?;
    let size = images.size();
    if size[1] == 1 {
        images
            .f_expand([size[0], 3, size[2], size[3]], false)
            .map_err(tch_err("grey to RGB"))
    } else {
        Ok(images.shallow_clone())
    }
}

/// Preprocesses uint8 images [B, C, H, W] for the FID Inception network, on their device.
pub fn preprocess(images: &Tensor, mode: Preprocessing) -> Result<Tensor, MetricsError> {
    let x = rgb_u8(images)?
        .f_to_kind(Kind::Float)
        .map_err(tch_err("images to float"))?;
    let out = match mode {
        Preprocessing::PytorchFid => x
            .f_div_scalar(255.0)
            .and_then(|x| {
                x.f_upsample_bilinear2d(
                    [INCEPTION_SIZE, INCEPTION_SIZE],
                    false,
                    None::<f64>,
                    None::<f64>,
                )
            })
            // In place: the resize's output is fresh, and these are the 299x299 passes.
            .and_then(|mut x| x.f_mul_scalar_(2.0))
            .and_then(|mut x| x.f_sub_scalar_(1.0))
            .map_err(tch_err("pytorch-fid preprocessing"))?,
        Preprocessing::Tf => resize_tf1_bilinear(&x, INCEPTION_SIZE, INCEPTION_SIZE)?
            .f_sub_scalar(128.0)
            .and_then(|x| x.f_div_scalar(128.0))
            .map_err(tch_err("tf preprocessing"))?,
        Preprocessing::Clean => resize_pil_bicubic(&x, INCEPTION_SIZE, INCEPTION_SIZE)?
            .f_clamp(0.0, 255.0)
            .and_then(|x| x.f_sub_scalar(128.0))
            .and_then(|x| x.f_div_scalar(128.0))
            .map_err(tch_err("clean preprocessing"))?,
    };
    Ok(out)
}

/// The size of a resize's [B, C, H, W] input, checked along with the output size.
fn resize_input_size(x: &Tensor, out_h: i64, out_w: i64) -> Result<Vec<i64>, MetricsError> {
    let size = x.size();
    if size.len() != 4 || out_h < 1 || out_w < 1 {
        return Err(MetricsError::input(
            "resize input",
            "[B, C, H, W] and a positive size",
            format!("{size:?} to {out_h}x{out_w}"),
        ));
    }
    Ok(size)
}

/// TensorFlow 1.x `resize_bilinear(align_corners=False)` on [B, C, H, W] float32, written as
/// torch-fidelity writes it: f32 grid `arange * (in / out as f32)`, truncation to the low
/// index, high index clamped to the edge, then two lerps across x and one across y.
pub fn resize_tf1_bilinear(x: &Tensor, out_h: i64, out_w: i64) -> Result<Tensor, MetricsError> {
    let size = resize_input_size(x, out_h, out_w)?;
    let dev = x.device();
    let axis = |in_size: i64, out_size: i64| -> Result<(Tensor, Tensor, Tensor), tch::TchError> {
        // Python computes in/out in double, then `torch.tensor(scale, dtype=float32)`.
        let scale = Tensor::from((in_size as f64 / out_size as f64) as f32).f_to_device(dev)?;
        let grid = Tensor::f_arange(out_size, (Kind::Float, dev))?.f_mul(&scale)?;
        let lo = grid.f_to_kind(Kind::Int64)?;
        let hi = lo.f_add_scalar(1)?.f_clamp_max(in_size - 1)?;
        let frac = grid.f_sub(&lo.f_to_kind(Kind::Float)?)?;
        Ok((lo, hi, frac))
    };
    let run = || -> Result<Tensor, tch::TchError> {
        let (ylo, yhi, dy) = axis(size[2], out_h)?;
        let (xlo, xhi, dx) = axis(size[3], out_w)?;
        let rows_lo = x.f_index_select(2, &ylo)?;
        let rows_hi = x.f_index_select(2, &yhi)?;
        let in00 = rows_lo.f_index_select(3, &xlo)?;
        let in01 = rows_lo.f_index_select(3, &xhi)?;
        let in10 = rows_hi.f_index_select(3, &xlo)?;
        let in11 = rows_hi.f_index_select(3, &xhi)?;
        let dx = dx.f_view([1, 1, 1, out_w])?;
        let dy = dy.f_view([1, 1, out_h, 1])?;
        let in0 = in00.f_add(&in01.f_sub(&in00)?.f_mul(&dx)?)?;
        let in1 = in10.f_add(&in11.f_sub(&in10)?.f_mul(&dx)?)?;
        in0.f_add(&in1.f_sub(&in0)?.f_mul(&dy)?)
    };
    run().map_err(tch_err("tf1 bilinear resize"))
}

/// PIL's bicubic kernel (a = -0.5).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// PIL's `precompute_coeffs` for one axis as a dense [out, in] matrix (row-major): the filter
/// is stretched by the downscale factor (antialiasing) and each row normalised to sum 1.
pub fn pil_bicubic_weights(in_size: usize, out_size: usize) -> Vec<f64> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let mut w = vec![0.0; out_size * in_size];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) cast truncates toward zero, as `as i64` does.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let taps = &mut w[xx * in_size + xmin..xx * in_size + xmax.max(xmin)];
        for (i, k) in taps.iter_mut().enumerate() {
            *k = bicubic(((xmin + i) as f64 - center + 0.5) * ss);
        }
        let total: f64 = taps.iter().sum();
        if total != 0.0 {
            taps.iter_mut().for_each(|k| *k /= total);
        }
    }
    w
}

/// PIL `Image.resize(BICUBIC)` of each channel of [B, C, H, W] float32 (mode 'F').
pub fn resize_pil_bicubic(x: &Tensor, out_h: i64, out_w: i64) -> Result<Tensor, MetricsError> {
    let size = resize_input_size(x, out_h, out_w)?;
    let (h, w) = (size[2], size[3]);
    let dev = x.device();
    let weights = |n_in: i64, n_out: i64| -> Result<Tensor, tch::TchError> {
        let v = pil_bicubic_weights(n_in as usize, n_out as usize);
        Tensor::from_slice(&v)
            .f_view([n_out, n_in])?
            .f_to_device(dev)
    };
    let run = || -> Result<Tensor, tch::TchError> {
        let mut y = x.f_to_kind(Kind::Float)?;
        // PIL skips a pass whose size is unchanged (its weights would be the identity anyway).
        if w != out_w {
            let wh = weights(w, out_w)?;
            y = y
                .f_to_kind(Kind::Double)?
                .f_matmul(&wh.f_tr()?)?
                .f_to_kind(Kind::Float)?;
        }
        if h != out_h {
            let wv = weights(h, out_h)?;
            y = wv
                .f_matmul(&y.f_to_kind(Kind::Double)?)?
                .f_to_kind(Kind::Float)?;
        }
        Ok(y)
    };
    run().map_err(tch_err("PIL bicubic resize"))
}

/// The device images end up on: the network's.
pub(crate) fn to_device(x: &Tensor, device: Device) -> Result<Tensor, MetricsError> {
    x.f_to_device(device).map_err(tch_err("images to device"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_serde_names_and_the_ids() {
        for name in Preprocessing::NAMES {
            let m = Preprocessing::from_id(name).unwrap();
            let via_serde: Preprocessing =
                serde::Deserialize::deserialize(serde::de::value::StrDeserializer::<
                    serde::de::value::Error,
                >::new(name))
                .unwrap();
            assert_eq!(m, via_serde);
        }
    }

    #[test]
    fn quantize_matches_png_saving() {
        // Reference: torchvision.utils.save_image's conversion on the same values.
        let x = Tensor::from_slice(&[
            -1.0f32, -0.999, -0.5, 0.0, 0.001, 0.5, 0.996, 1.0, 1.5, -2.0,
        ]);
        let q = Vec::<u8>::try_from(quantize(&x)).unwrap();
        assert_eq!(q, [0, 0, 64, 128, 128, 191, 254, 255, 255, 0]);
        // Stored pixels survive the loaders' v / 127.5 - 1 and back.
        let v = Tensor::arange(256, (Kind::Float, tch::Device::Cpu));
        let back = quantize(&(&v / 127.5 - 1.0)).to_kind(Kind::Float);
        assert!(back.equal(&v));
    }

    #[test]
    fn pil_weights_rows_sum_to_one_and_identity_at_scale_one() {
        for (i, o) in [(32, 299), (512, 299), (7, 3), (5, 5)] {
            let w = pil_bicubic_weights(i, o);
            for r in w.chunks(i) {
                assert!((r.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            }
        }
        let w = pil_bicubic_weights(4, 4);
        for r in 0..4 {
            for c in 0..4 {
                assert_eq!(w[r * 4 + c], if r == c { 1.0 } else { 0.0 });
            }
        }
    }

    #[test]
    fn tf1_resize_samples_without_half_pixel_offset() {
        // 1x4 -> 1x2: src = dst * 2, so columns 0 and 2 are taken exactly.
        let x = Tensor::from_slice(&[10.0f32, 20.0, 30.0, 40.0]).view([1, 1, 1, 4]);
        let y = resize_tf1_bilinear(&x, 1, 2).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(y.flatten(0, -1)).unwrap(),
            [10.0, 30.0]
        );
        // Upsampling 1x2 -> 1x4: src = 0, .5, 1 (clamped high), 1.5 -> clamped edge.
        let x = Tensor::from_slice(&[0.0f32, 8.0]).view([1, 1, 1, 2]);
        let y = resize_tf1_bilinear(&x, 1, 4).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(y.flatten(0, -1)).unwrap(),
            [0.0, 4.0, 8.0, 8.0]
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        let f = Tensor::zeros([1, 3, 8, 8], (Kind::Float, Device::Cpu));
        let e = preprocess(&f, Preprocessing::PytorchFid).unwrap_err();
        assert!(e.to_string().contains("uint8"), "{e}");
        let u = Tensor::zeros([1, 2, 8, 8], (Kind::Uint8, Device::Cpu));
        assert!(preprocess(&u, Preprocessing::Tf).is_err());
        let g = Tensor::zeros([2, 1, 8, 8], (Kind::Uint8, Device::Cpu));
        assert_eq!(
            preprocess(&g, Preprocessing::Clean).unwrap().size(),
            [2, 3, 299, 299]
        );
        assert_eq!(Preprocessing::from_id("tf"), Some(Preprocessing::Tf));
    }
}
