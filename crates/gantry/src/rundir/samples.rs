//! Sample pictures: an image grid for image data, a scatter plot for 2-D points.

use crate::error::{Error, Result};
use gantry_data::Dataset;
use std::path::Path;
use tch::{Device, Kind, Tensor};

pub fn save(
    x: &Tensor,
    path: &Path,
    data: Option<&dyn Dataset>,
    kind: gantry_data::DataKind,
) -> Result<()> {
    let (values, shape) = host_images(x)?;
    if data.is_some_and(|d| d.sample_shape() == [2, 1, 1]) {
        let modes = match kind {
            gantry_data::DataKind::Gmm8 => gantry_data::gmm::Mixture::ring8().means,
            gantry_data::DataKind::Gmm25 => gantry_data::gmm::Mixture::grid25().means,
            _ => Vec::new(),
        };
        return scatter(&values, &modes, path);
    }
    gantry_data::image_io::save_grid(&values, shape, grid_columns(shape[0]), path)?;
    Ok(())
}

/// A `[N, C, H, W]` batch as host floats and its shape, for `gantry_data::image_io`'s writers.
pub fn host_images(x: &Tensor) -> Result<(Vec<f32>, [usize; 4])> {
    let x = x.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    let size = x.size();
    let shape = [
        size[0] as usize,
        size[1] as usize,
        size[2] as usize,
        size[3] as usize,
    ];
    let values: Vec<f32> =
        Vec::try_from(x.flatten(0, -1)).map_err(|e: tch::TchError| Error::Torch(e.to_string()))?;
    Ok((values, shape))
}

/// Images per row of a grid of `n` (what [`save`] lays out).
pub fn grid_columns(n: usize) -> usize {
    (n as f64).sqrt().ceil().max(1.0) as usize
}

/// Classes for a grid of `n` samples of a conditional generator: one class per row, cycling
/// through `classes`, so a grid shows every class it has room for.
pub fn grid_classes(n: i64, classes: i64, device: Device) -> Tensor {
    let cols = grid_columns(n as usize) as i64;
    (Tensor::arange(n, (Kind::Int64, device)).divide_scalar_mode(cols, "floor")).remainder(classes)
}

/// 2-D points on a 512x512 canvas over [-6, 6]^2, with faint axes and the true modes in red.
fn scatter(xy: &[f32], modes: &[[f64; 2]], path: &Path) -> Result<()> {
    const N: u32 = 512;
    const EXTENT: f32 = 6.0;
    let mut img = image::RgbImage::from_pixel(N, N, image::Rgb([255, 255, 255]));
    for i in 0..N {
        img.put_pixel(N / 2, i, image::Rgb([220, 220, 220]));
        img.put_pixel(i, N / 2, image::Rgb([220, 220, 220]));
    }
    let to_px = |v: f32| ((v + EXTENT) / (2.0 * EXTENT) * N as f32) as i64;
    for m in modes {
        let (cx, cy) = (to_px(m[0] as f32), N as i64 - 1 - to_px(m[1] as f32));
        for d in -6i64..=6 {
            for (x, y) in [(cx + d, cy), (cx, cy + d)] {
                if (0..N as i64).contains(&x) && (0..N as i64).contains(&y) {
                    img.put_pixel(x as u32, y as u32, image::Rgb([220, 40, 40]));
                }
            }
        }
    }
    for p in xy.chunks_exact(2) {
        let (cx, cy) = (to_px(p[0]), N as i64 - 1 - to_px(p[1]));
        for dx in 0..=1 {
            for dy in 0..=1 {
                let (x, y) = (cx + dx, cy + dy);
                if (0..N as i64).contains(&x) && (0..N as i64).contains(&y) {
                    let px = img.get_pixel_mut(x as u32, y as u32);
                    if px.0 != [220, 40, 40] {
                        *px = image::Rgb([30, 90, 200]);
                    }
                }
            }
        }
    }
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| Error::io(path, e))?;
    crate::util::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conditional_grid_shows_one_class_per_row() {
        let c = grid_classes(9, 2, Device::Cpu);
        assert_eq!(
            Vec::<i64>::try_from(c).unwrap(),
            [0, 0, 0, 1, 1, 1, 0, 0, 0]
        );
        let c = grid_classes(5, 10, Device::Cpu); // 3 columns
        assert_eq!(Vec::<i64>::try_from(c).unwrap(), [0, 0, 0, 1, 1]);
    }
}
