//! The image pipeline shared by every image source: channel conversion, resize to the square
//! output (shorter side and centre crop by default; `data.transform` = pad or stretch), optional
//! horizontal flip, and scaling of u8 pixels to [-1, 1].
//!
//! Keeping it in one place guarantees that MNIST, CIFAR, folders and shapes are all normalised
//! identically, which the quantisation in `image_io::to_u8` relies on to round-trip exactly.

use image::imageops::{self, FilterType};
use image::{DynamicImage, ImageBuffer, Pixel};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::{DataError, ResizeMode};

/// Maps a u8 pixel to [-1, 1]: 0 -> -1, 255 -> 1 (inverse of `image_io::to_u8`).
#[inline]
pub(crate) fn from_u8(v: u8) -> f32 {
    f32::from(v) / 127.5 - 1.0
}

/// Output geometry and augmentation of an image source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Transform {
    /// Output side length.
    pub res: u32,
    /// Output channels (1 or 3).
    pub channels: usize,
    /// Draw a left-right mirror with probability 1/2.
    pub hflip: bool,
    /// How a non-square image becomes square.
    pub fit: ResizeMode,
}

impl Transform {
    /// Number of floats one sample occupies.
    pub fn numel(&self) -> usize {
        self.channels * (self.res as usize) * (self.res as usize)
    }

    /// `[C, H, W]` of the output.
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.res as usize, self.res as usize]
    }

    /// Converts, resizes, crops, maybe flips `img` and writes it to `out` as CHW floats in [-1, 1].
    pub fn apply(
        &self,
        img: DynamicImage,
        out: &mut [f32],
        rng: &mut ChaCha8Rng,
    ) -> Result<(), DataError> {
        check_len(out, self.numel(), self.shape())?;
        // The flip is drawn even when the image is symmetric so that the stream use is uniform.
        let flip = self.hflip && rng.gen::<bool>();
        match self.channels {
            1 => self.write(&img.into_luma8(), out, flip),
            _ => self.write(&img.into_rgb8(), out, flip),
        }
        Ok(())
    }

    fn write<P>(&self, img: &ImageBuffer<P, Vec<u8>>, out: &mut [f32], flip: bool)
    where
        P: Pixel<Subpixel = u8> + 'static,
    {
        let res = self.res;
        let (w, h) = img.dimensions();
        let resized;
        let src = if (w, h) == (res, res) {
            img
        } else {
            let (nw, nh) = match self.fit {
                // Shorter side to `res`, keeping the aspect ratio; the longer side is cropped.
                ResizeMode::CenterCrop if w <= h => (res, scaled(h, res, w).max(res)),
                ResizeMode::CenterCrop => (scaled(w, res, h).max(res), res),
                // Longer side to `res`, keeping the aspect ratio; the rest is black.
                ResizeMode::Pad if w >= h => (res, scaled(h, res, w).clamp(1, res)),
                ResizeMode::Pad => (scaled(w, res, h).clamp(1, res), res),
                ResizeMode::Stretch => (res, res),
            };
            resized = imageops::resize(img, nw, nh, FilterType::Triangle);
            &resized
        };
        // Output pixel (x, y) reads source pixel (x + ox, y + oy): ox, oy >= 0 crop the centre
        // of a larger image, < 0 centre a smaller one on black.
        let (sw, sh) = src.dimensions();
        let ox = (i64::from(sw) - i64::from(res)).div_euclid(2);
        let oy = (i64::from(sh) - i64::from(res)).div_euclid(2);
        let plane = (res * res) as usize;
        let c = P::CHANNEL_COUNT as usize;
        if sw < res || sh < res {
            out.fill(-1.0);
        }
        for y in 0..res {
            let sy = i64::from(y) + oy;
            if sy < 0 || sy >= i64::from(sh) {
                continue;
            }
            for x in 0..res {
                let sx = i64::from(if flip { res - 1 - x } else { x }) + ox;
                if sx < 0 || sx >= i64::from(sw) {
                    continue;
                }
                let px = src.get_pixel(sx as u32, sy as u32).channels();
                let o = (y * res + x) as usize;
                for (ch, v) in px.iter().take(c).enumerate() {
                    out[ch * plane + o] = from_u8(*v);
                }
            }
        }
    }
}

/// `len * res / other`, rounded (the side of length `len` when the side `other` becomes `res`).
fn scaled(len: u32, res: u32, other: u32) -> u32 {
    let v = (u64::from(len) * u64::from(res) + u64::from(other) / 2) / u64::from(other);
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Rejects an output buffer of the wrong size before anything is written to it.
pub(crate) fn check_len(out: &[f32], want: usize, shape: [usize; 3]) -> Result<(), DataError> {
    if out.len() != want {
        return Err(DataError::config(
            "load_into",
            format!(
                "output buffer holds {} floats but a {}x{}x{} sample needs {want}",
                out.len(),
                shape[0],
                shape[1],
                shape[2]
            ),
        ));
    }
    Ok(())
}

/// Rejects a sample index outside the dataset.
pub(crate) fn check_index(index: usize, len: usize, what: &str) -> Result<(), DataError> {
    if index >= len {
        return Err(DataError::config(
            "load_into",
            format!("sample index {index} is out of range for {what} ({len} samples)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb, RgbImage};
    use rand::SeedableRng;

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(0)
    }

    #[test]
    fn from_u8_spans_minus_one_to_one() {
        assert_eq!(from_u8(0), -1.0);
        assert_eq!(from_u8(255), 1.0);
        assert!((from_u8(128) - 0.003_921_6).abs() < 1e-6);
    }

    #[test]
    fn same_size_rgb_is_written_planar() {
        let mut img = RgbImage::new(4, 4);
        img.put_pixel(1, 0, Rgb([255, 0, 10]));
        let t = Transform {
            res: 4,
            channels: 3,
            hflip: false,
            fit: ResizeMode::CenterCrop,
        };
        let mut out = vec![9.0; t.numel()];
        t.apply(DynamicImage::ImageRgb8(img), &mut out, &mut rng())
            .unwrap();
        assert_eq!(out[1], 1.0); // R plane, (y0, x1)
        assert_eq!(out[16 + 1], -1.0); // G plane
        assert_eq!(out[32 + 1], from_u8(10)); // B plane
        assert_eq!(out[0], -1.0);
    }

    #[test]
    fn wide_image_is_resized_on_its_short_side_and_centre_cropped() {
        // 16x4: left quarter white, the rest black; res 4 -> resized to 16x4 (no change of the
        // short side) and the centre 4 columns (6..10) are kept, which are all black.
        let img = GrayImage::from_fn(16, 4, |x, _| Luma([if x < 4 { 255 } else { 0 }]));
        let t = Transform {
            res: 4,
            channels: 1,
            hflip: false,
            fit: ResizeMode::CenterCrop,
        };
        let mut out = vec![0.0; 16];
        t.apply(DynamicImage::ImageLuma8(img), &mut out, &mut rng())
            .unwrap();
        assert!(out.iter().all(|&v| v == -1.0), "{out:?}");

        // 8x16 tall, downscaled by 2 to 4x8, centre rows 2..6 of the result kept.
        let img = GrayImage::from_fn(8, 16, |_, y| Luma([if y < 8 { 255 } else { 0 }]));
        let mut out = vec![0.0; 16];
        t.apply(DynamicImage::ImageLuma8(img), &mut out, &mut rng())
            .unwrap();
        assert!(out[..4].iter().all(|&v| v > 0.9), "{out:?}");
        assert!(out[12..].iter().all(|&v| v < -0.9), "{out:?}");
    }

    #[test]
    fn grey_to_rgb_repeats_and_rgb_to_grey_converts() {
        let img = GrayImage::from_pixel(4, 4, Luma([200]));
        let t = Transform {
            res: 4,
            channels: 3,
            hflip: false,
            fit: ResizeMode::CenterCrop,
        };
        let mut out = vec![0.0; 48];
        t.apply(DynamicImage::ImageLuma8(img), &mut out, &mut rng())
            .unwrap();
        assert!(out.iter().all(|&v| v == from_u8(200)));

        let img = RgbImage::from_pixel(4, 4, Rgb([255, 255, 255]));
        let t = Transform { channels: 1, ..t };
        let mut out = vec![0.0; 16];
        t.apply(DynamicImage::ImageRgb8(img), &mut out, &mut rng())
            .unwrap();
        assert!(out.iter().all(|&v| v == 1.0));
    }

    #[test]
    fn hflip_mirrors_about_half_the_time() {
        let img = GrayImage::from_fn(4, 4, |x, _| Luma([if x == 0 { 255 } else { 0 }]));
        let t = Transform {
            res: 4,
            channels: 1,
            hflip: true,
            fit: ResizeMode::CenterCrop,
        };
        let mut flipped = 0;
        let mut r = rng();
        for _ in 0..200 {
            let mut out = vec![0.0; 16];
            t.apply(DynamicImage::ImageLuma8(img.clone()), &mut out, &mut r)
                .unwrap();
            if out[3] == 1.0 {
                assert_eq!(out[0], -1.0);
                flipped += 1;
            } else {
                assert_eq!(out[0], 1.0);
            }
        }
        assert!((60..140).contains(&flipped), "{flipped}");
    }

    #[test]
    fn wrong_buffer_length_is_an_error() {
        let t = Transform {
            res: 4,
            channels: 3,
            hflip: false,
            fit: ResizeMode::CenterCrop,
        };
        let mut out = vec![0.0; 47];
        let e = t
            .apply(DynamicImage::new_rgb8(4, 4), &mut out, &mut rng())
            .unwrap_err();
        assert!(e.to_string().contains("47"), "{e}");
    }
}
