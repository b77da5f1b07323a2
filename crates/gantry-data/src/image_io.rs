//! Writing generated images: sample grids and one-PNG-per-image folders.
//!
//! Files are written atomically (`<path>.tmp`, fsync, rename) so a crash or Ctrl-C during a
//! long run never leaves a truncated PNG where a viewer or the metrics code expects a valid one.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};

use crate::DataError;

/// Quantises a value in [-1, 1] to a byte: `clamp(floor(x * 127.5 + 128), 0, 255)`.
///
/// This is torchvision's `save_image` rule (`(x+1)/2 * 255 + 0.5`, clamped, truncated), i.e.
/// (x+1)*127.5 rounded half-up. It is the exact inverse of the loader's `v / 127.5 - 1`, so
/// real images survive a save/load round trip bit for bit. NaN maps to 0.
#[inline]
pub fn to_u8(x: f32) -> u8 {
    // `as u8` saturates and maps NaN to 0, which is the clamp we want.
    (x * 127.5 + 128.0).floor() as u8
}

/// Pixels of padding between and around grid cells (black), as torchvision's `make_grid`.
pub const GRID_PADDING: usize = 2;

/// Checks that `images` holds `shape` and that the channel count can be written as PNG.
fn check(images: &[f32], shape: [usize; 4], what: &Path) -> Result<(), DataError> {
    let [b, c, h, w] = shape;
    let want = b
        .checked_mul(c)
        .and_then(|v| v.checked_mul(h))
        .and_then(|v| v.checked_mul(w));
    if want != Some(images.len()) {
        return Err(DataError::format(
            what,
            format!(
                "{} values do not match the shape {b}x{c}x{h}x{w}",
                images.len()
            ),
        ));
    }
    if c != 1 && c != 3 {
        return Err(DataError::format(
            what,
            format!("cannot write {c}-channel images as PNG (need 1 or 3)"),
        ));
    }
    if b == 0 || h == 0 || w == 0 {
        return Err(DataError::format(
            what,
            format!("nothing to write (shape {b}x{c}x{h}x{w})"),
        ));
    }
    Ok(())
}

/// Writes the batch as a grid PNG with `nrow` images per row (torchvision's convention),
/// 2 pixels of black padding, grey when the images have one channel.
pub fn save_grid(
    images: &[f32],
    shape: [usize; 4],
    nrow: usize,
    path: &Path,
) -> Result<(), DataError> {
    check(images, shape, path)?;
    if nrow == 0 {
        return Err(DataError::format(
            path,
            "grid needs at least one image per row (nrow = 0)",
        ));
    }
    let [b, c, h, w] = shape;
    let cols = nrow.min(b);
    let rows = b.div_ceil(cols);
    let p = GRID_PADDING;
    let (gw, gh) = (cols * (w + p) + p, rows * (h + p) + p);
    let mut buf = vec![0u8; gw * gh * c];
    let plane = h * w;
    for (i, img) in images.chunks_exact(c * plane).enumerate() {
        let (x0, y0) = (p + (i % cols) * (w + p), p + (i / cols) * (h + p));
        for y in 0..h {
            for x in 0..w {
                let o = ((y0 + y) * gw + x0 + x) * c;
                for ch in 0..c {
                    buf[o + ch] = to_u8(img[ch * plane + y * w + x]);
                }
            }
        }
    }
    write_png(path, &buf, gw, gh, c)
}

/// Writes the batch as an animated GIF, one frame per image, `centis` hundredths of a second
/// each, looping (grey images as grey RGB frames). Written to a temporary file and renamed.
pub fn save_gif(
    images: &[f32],
    shape: [usize; 4],
    centis: u16,
    path: &Path,
) -> Result<(), DataError> {
    use image::codecs::gif::{GifEncoder, Repeat};
    check(images, shape, path)?;
    let [b, c, h, w] = shape;
    let (wu, hu) = match (u32::try_from(w), u32::try_from(h)) {
        (Ok(a), Ok(b)) if a <= 65_535 && b <= 65_535 => (a, b),
        _ => {
            return Err(DataError::format(
                path,
                format!("frames of {w}x{h} are too large for GIF"),
            ))
        }
    };
    let plane = h * w;
    let tmp = path.with_extension("gif.tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    let mut enc = GifEncoder::new_with_speed(std::io::BufWriter::new(file), 10);
    enc.set_repeat(Repeat::Infinite)
        .map_err(|e| DataError::format(&tmp, e.to_string()))?;
    for img in images.chunks_exact(c * plane).take(b) {
        let mut rgba = vec![255u8; plane * 4];
        for (o, px) in rgba.chunks_exact_mut(4).enumerate() {
            for ch in 0..3 {
                px[ch] = to_u8(img[ch.min(c - 1) * plane + o]);
            }
        }
        let buf = image::RgbaImage::from_raw(wu, hu, rgba).expect("the buffer is w*h*4");
        let frame = image::Frame::from_parts(
            buf,
            0,
            0,
            image::Delay::from_numer_denom_ms(u32::from(centis) * 10, 1),
        );
        enc.encode_frame(frame)
            .map_err(|e| DataError::format(&tmp, e.to_string()))?;
    }
    drop(enc);
    std::fs::rename(&tmp, path).map_err(|e| DataError::io(path, e))
}

/// Writes one image `[C, H, W]` (values in [-1, 1]) to `path` as PNG.
pub fn save_image(image: &[f32], shape: [usize; 3], path: &Path) -> Result<(), DataError> {
    let [c, h, w] = shape;
    check(image, [1, c, h, w], path)?;
    let plane = h * w;
    let mut buf = vec![0u8; plane * c];
    for (o, px) in buf.chunks_exact_mut(c).enumerate() {
        for (ch, v) in px.iter_mut().enumerate() {
            *v = to_u8(image[ch * plane + o]);
        }
    }
    write_png(path, &buf, w, h, c)
}

/// Writes each image of the batch to `dir/<prefix><index, 6 digits>.png`, creating `dir`.
/// Returns the paths in batch order.
pub fn save_images(
    images: &[f32],
    shape: [usize; 4],
    dir: &Path,
    prefix: &str,
) -> Result<Vec<PathBuf>, DataError> {
    save_images_from(images, shape, dir, prefix, 0)
}

/// [`save_images`] numbering the files from `first` (one batch of a longer stream).
pub fn save_images_from(
    images: &[f32],
    shape: [usize; 4],
    dir: &Path,
    prefix: &str,
    first: usize,
) -> Result<Vec<PathBuf>, DataError> {
    check(images, shape, dir)?;
    fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let [_, c, h, w] = shape;
    let plane = h * w;
    let mut buf = vec![0u8; plane * c];
    let mut paths = Vec::with_capacity(shape[0]);
    for (i, img) in images.chunks_exact(c * plane).enumerate() {
        for (o, px) in buf.chunks_exact_mut(c).enumerate() {
            for (ch, v) in px.iter_mut().enumerate() {
                *v = to_u8(img[ch * plane + o]);
            }
        }
        let path = dir.join(format!("{prefix}{:06}.png", first + i));
        write_png(&path, &buf, w, h, c)?;
        paths.push(path);
    }
    Ok(paths)
}

/// Encodes interleaved 8-bit pixels as PNG at `path`, atomically.
fn write_png(path: &Path, pixels: &[u8], w: usize, h: usize, c: usize) -> Result<(), DataError> {
    let (wu, hu) = match (u32::try_from(w), u32::try_from(h)) {
        (Ok(a), Ok(b)) => (a, b),
        _ => {
            return Err(DataError::format(
                path,
                format!("image of {w}x{h} is too large for PNG"),
            ))
        }
    };
    let color = if c == 1 {
        ExtendedColorType::L8
    } else {
        ExtendedColorType::Rgb8
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
    }
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
        let mut out = BufWriter::new(file);
        PngEncoder::new(&mut out)
            .write_image(pixels, wu, hu, color)
            .map_err(|e| DataError::io(&tmp, e))?;
        out.flush().map_err(|e| DataError::io(&tmp, e))?;
        let file = out
            .into_inner()
            .map_err(|e| DataError::io(&tmp, e.error()))?;
        file.sync_all().map_err(|e| DataError::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| DataError::io(path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn to_u8_inverts_the_loader_scaling_and_clamps() {
        for v in 0..=255u8 {
            assert_eq!(to_u8(f32::from(v) / 127.5 - 1.0), v);
        }
        assert_eq!(to_u8(-1.0), 0);
        assert_eq!(to_u8(1.0), 255);
        assert_eq!(to_u8(0.0), 128);
        assert_eq!(to_u8(-7.0), 0);
        assert_eq!(to_u8(3.0), 255);
        assert_eq!(to_u8(f32::NAN), 0);
    }

    #[test]
    fn grid_round_trips_through_png() {
        let dir = TempDir::new("grid");
        // 5 RGB images of 3x4 (HxW): image i has R = pixel value ramp, G = i-dependent, B = -1.
        let (b, c, h, w) = (5, 3, 3, 4);
        let mut images = vec![0f32; b * c * h * w];
        for i in 0..b {
            for y in 0..h {
                for x in 0..w {
                    let base = i * c * h * w + y * w + x;
                    images[base] = (y * w + x) as f32 / 127.5 - 1.0;
                    images[base + h * w] = (i * 40) as f32 / 127.5 - 1.0;
                    images[base + 2 * h * w] = -1.0;
                }
            }
        }
        let path = dir.path().join("sub/grid.png");
        save_grid(&images, [b, c, h, w], 2, &path).unwrap();
        assert!(!dir.path().join("sub/grid.png.tmp").exists());
        let img = image::open(&path).unwrap().into_rgb8();
        // 2 columns, 3 rows: width 2*(4+2)+2, height 3*(3+2)+2.
        assert_eq!(img.dimensions(), (14, 17));
        for i in 0..b {
            let (x0, y0) = (2 + (i % 2) * 6, 2 + (i / 2) * 5);
            for y in 0..h {
                for x in 0..w {
                    let px = img.get_pixel((x0 + x) as u32, (y0 + y) as u32).0;
                    assert_eq!(
                        px,
                        [(y * w + x) as u8, (i * 40) as u8, 0],
                        "image {i} at {x},{y}"
                    );
                }
            }
        }
        assert_eq!(img.get_pixel(0, 0).0, [0, 0, 0]);
        // The unused 6th cell stays padding-black.
        assert_eq!(img.get_pixel(9, 13).0, [0, 0, 0]);
    }

    #[test]
    fn one_channel_grids_are_grey_and_bad_shapes_are_errors() {
        let dir = TempDir::new("grid-grey");
        let images: Vec<f32> = (0..8).map(|i| i as f32 / 4.0 - 1.0).collect();
        let path = dir.path().join("g.png");
        save_grid(&images, [2, 1, 2, 2], 8, &path).unwrap();
        let img = image::open(&path).unwrap();
        assert_eq!(img.color(), image::ColorType::L8);
        let g = img.into_luma8();
        assert_eq!(g.dimensions(), (2 * 4 + 2, 6));
        assert_eq!(g.get_pixel(2, 2).0, [to_u8(-1.0)]);
        assert_eq!(g.get_pixel(7, 3).0, [to_u8(0.75)]);

        let e = save_grid(&images, [2, 1, 2, 3], 2, &path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("do not match the shape 2x1x2x3"), "{e}");
        let e = save_grid(&images, [2, 2, 2, 1], 2, &path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2-channel"), "{e}");
        assert!(save_grid(&images, [2, 1, 2, 2], 0, &path).is_err());
    }

    #[test]
    fn save_images_writes_one_png_each() {
        let dir = TempDir::new("save-images");
        let images: Vec<f32> = (0..3 * 3 * 2 * 2)
            .map(|i| (i % 5) as f32 / 2.0 - 1.0)
            .collect();
        let out = dir.path().join("samples");
        let paths = save_images(&images, [3, 3, 2, 2], &out, "fake_").unwrap();
        assert_eq!(paths.len(), 3);
        assert_eq!(paths[2], out.join("fake_000002.png"));
        let img = image::open(&paths[1]).unwrap().into_rgb8();
        assert_eq!(img.dimensions(), (2, 2));
        // Image 1, pixel (x=1, y=0): R = images[12 + 1], G = images[12 + 4 + 1], B = images[12 + 8 + 1].
        assert_eq!(
            img.get_pixel(1, 0).0,
            [to_u8(images[13]), to_u8(images[17]), to_u8(images[21])]
        );
        let leftovers: Vec<_> = fs::read_dir(&out)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
