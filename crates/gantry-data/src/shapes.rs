//! The built-in default dataset: one anti-aliased coloured circle, square or triangle per image.
//!
//! It needs no files, so `gantry train` works out of the box, and it is easy enough for a small
//! DCGAN to learn in a few thousand steps while still showing mode collapse (a generator that
//! only draws one shape or one colour is obvious in a sample grid). Every sample is a pure
//! function of (split, index), so every run and every machine sees the same dataset.

use image::{DynamicImage, RgbImage};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::rng::{domain, keyed};
use crate::transform::{check_index, Transform};
use crate::{DataError, Dataset};

/// Shape classes, in label order.
pub const CLASSES: [&str; 3] = ["circle", "square", "triangle"];

/// Supersampling grid per pixel edge (4x4 = 16 samples) for anti-aliased edges.
const AA: u32 = 4;

/// Procedurally drawn shapes.
pub struct Shapes {
    len: usize,
    split_key: u64,
    split: String,
    transform: Transform,
}

impl Shapes {
    /// `len` samples of `split` ("test" draws a stream disjoint from "train").
    pub(crate) fn new(len: usize, split: &str, transform: Transform) -> Shapes {
        Shapes {
            len,
            split_key: u64::from(split == "test"),
            split: split.to_string(),
            transform,
        }
    }

    /// Draws sample `index` as an RGB image at the output resolution; returns it and its class.
    fn render(&self, index: usize) -> (RgbImage, usize) {
        let res = self.transform.res;
        let mut rng = keyed(0, domain::SHAPES, self.split_key, index as u64);
        let class = rng.gen_range(0..CLASSES.len());
        let bg = if rng.gen_bool(0.5) {
            [0.0; 3]
        } else {
            hsv(rng.gen(), rng.gen_range(0.3..0.8), rng.gen_range(0.1..0.3))
        };
        let fg = hsv(rng.gen(), rng.gen_range(0.6..1.0), rng.gen_range(0.75..1.0));
        let s = res as f64;
        let r = rng.gen_range(0.18..0.36) * s;
        // Keep the whole shape inside the frame (the triangle reaches 1.2 r above its centre).
        let margin = 1.2 * r + 0.5;
        let cx = rng.gen_range(margin..=(s - margin).max(margin));
        let cy = rng.gen_range(margin..=(s - margin).max(margin));
        let shape = Shape::new(class, cx, cy, r);

        let inv = 1.0 / f64::from(AA * AA);
        let img = RgbImage::from_fn(res, res, |x, y| {
            let mut hits = 0u32;
            for sy in 0..AA {
                for sx in 0..AA {
                    let px = f64::from(x) + (f64::from(sx) + 0.5) / f64::from(AA);
                    let py = f64::from(y) + (f64::from(sy) + 0.5) / f64::from(AA);
                    hits += u32::from(shape.contains(px, py));
                }
            }
            let a = f64::from(hits) * inv;
            let mix = |c: usize| ((bg[c] * (1.0 - a) + fg[c] * a) * 255.0).round() as u8;
            image::Rgb([mix(0), mix(1), mix(2)])
        });
        (img, class)
    }
}

/// A shape in pixel coordinates (y grows downwards).
enum Shape {
    Circle { cx: f64, cy: f64, r2: f64 },
    Square { cx: f64, cy: f64, half: f64 },
    Triangle { v: [[f64; 2]; 3] },
}

impl Shape {
    fn new(class: usize, cx: f64, cy: f64, r: f64) -> Shape {
        match class {
            0 => Shape::Circle { cx, cy, r2: r * r },
            // Half-side 0.886 r gives the square the circle's area, so classes differ in form only.
            1 => Shape::Square {
                cx,
                cy,
                half: 0.886 * r,
            },
            _ => {
                // Upright equilateral triangle with circumradius 1.2 r.
                let big = 1.2 * r;
                let dx = big * 3f64.sqrt() / 2.0;
                Shape::Triangle {
                    v: [
                        [cx, cy - big],
                        [cx + dx, cy + big / 2.0],
                        [cx - dx, cy + big / 2.0],
                    ],
                }
            }
        }
    }

    fn contains(&self, x: f64, y: f64) -> bool {
        match *self {
            Shape::Circle { cx, cy, r2 } => (x - cx).powi(2) + (y - cy).powi(2) <= r2,
            Shape::Square { cx, cy, half } => (x - cx).abs() <= half && (y - cy).abs() <= half,
            Shape::Triangle { v } => {
                let edge = |a: [f64; 2], b: [f64; 2]| {
                    (b[0] - a[0]) * (y - a[1]) - (b[1] - a[1]) * (x - a[0])
                };
                let (e0, e1, e2) = (edge(v[0], v[1]), edge(v[1], v[2]), edge(v[2], v[0]));
                (e0 >= 0.0 && e1 >= 0.0 && e2 >= 0.0) || (e0 <= 0.0 && e1 <= 0.0 && e2 <= 0.0)
            }
        }
    }
}

/// HSV (all in [0, 1]) to linear RGB in [0, 1].
fn hsv(h: f64, s: f64, v: f64) -> [f64; 3] {
    let h6 = (h.fract() * 6.0).min(5.999_999);
    let i = h6.floor();
    let f = h6 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match i as u32 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

impl Dataset for Shapes {
    fn len(&self) -> usize {
        self.len
    }

    fn sample_shape(&self) -> [usize; 3] {
        self.transform.shape()
    }

    fn num_classes(&self) -> Option<usize> {
        Some(CLASSES.len())
    }

    fn describe(&self) -> String {
        let [c, h, w] = self.sample_shape();
        format!(
            "shapes {} ({} images, {c}x{h}x{w}, {} classes: {}; procedural)",
            self.split,
            self.len,
            CLASSES.len(),
            CLASSES.join("/")
        )
    }

    fn load_into(
        &self,
        index: usize,
        out: &mut [f32],
        rng: &mut ChaCha8Rng,
    ) -> Result<i64, DataError> {
        check_index(index, self.len, "the shapes dataset")?;
        let (img, class) = self.render(index);
        self.transform
            .apply(DynamicImage::ImageRgb8(img), out, rng)?;
        Ok(class as i64)
    }

    /// The class is the first draw of the image's own generator (see `render`).
    fn label(&self, index: usize) -> Option<i64> {
        (index < self.len).then(|| {
            let mut rng = keyed(0, domain::SHAPES, self.split_key, index as u64);
            rng.gen_range(0..CLASSES.len()) as i64
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn label_without_rendering_is_the_rendered_label() {
        let ds = shapes(8, 3);
        let mut out = vec![0f32; 3 * 8 * 8];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for i in 0..ds.len() {
            assert_eq!(
                ds.label(i),
                Some(ds.load_into(i, &mut out, &mut rng).unwrap())
            );
        }
        assert_eq!(ds.label(ds.len()), None);
    }

    fn shapes(res: u32, channels: usize) -> Shapes {
        Shapes::new(
            64,
            "train",
            Transform {
                res,
                channels,
                hflip: false,
                fit: crate::ResizeMode::CenterCrop,
            },
        )
    }

    fn load(ds: &Shapes, i: usize) -> (Vec<f32>, i64) {
        crate::testutil::load_sample(ds, i, 7).unwrap()
    }

    #[test]
    fn samples_have_the_right_shape_range_and_labels() {
        let ds = shapes(32, 3);
        assert_eq!(ds.sample_shape(), [3, 32, 32]);
        assert_eq!(ds.num_classes(), Some(3));
        let mut seen = [0; 3];
        for i in 0..ds.len() {
            let (out, label) = load(&ds, i);
            assert_eq!(out.len(), 3 * 32 * 32);
            assert!(out.iter().all(|v| (-1.0..=1.0).contains(v)));
            seen[label as usize] += 1;
            // A shape was actually drawn: some pixels are much brighter than the (background)
            // corner in their brightest channel, which is how the colours are chosen.
            let peak = |p: usize| out[p].max(out[1024 + p]).max(out[2048 + p]);
            let bright = (0..1024).filter(|&p| peak(p) > peak(0) + 0.8).count();
            assert!(bright > 20, "sample {i} has no visible shape");
        }
        assert!(seen.iter().all(|&n| n > 5), "{seen:?}");
        assert!(ds
            .describe()
            .starts_with("shapes train (64 images, 3x32x32"));
    }

    #[test]
    fn samples_depend_on_index_and_split_only() {
        let ds = shapes(16, 3);
        assert_eq!(load(&ds, 5), load(&ds, 5));
        assert_eq!(load(&shapes(16, 3), 5), load(&ds, 5));
        assert_ne!(load(&ds, 5).0, load(&ds, 6).0);
        let test = Shapes::new(64, "test", ds.transform);
        assert_ne!(load(&test, 5).0, load(&ds, 5).0);
    }

    #[test]
    fn grey_output_and_larger_resolutions_work() {
        let ds = shapes(64, 1);
        let (out, _) = load(&ds, 3);
        assert_eq!(out.len(), 64 * 64);
        assert!(out.iter().all(|v| (-1.0..=1.0).contains(v)));
    }

    #[test]
    fn shape_membership_is_geometrically_right() {
        let c = Shape::new(0, 10.0, 10.0, 5.0);
        assert!(c.contains(10.0, 14.9) && !c.contains(14.0, 14.0));
        let s = Shape::new(1, 10.0, 10.0, 5.0);
        assert!(s.contains(14.0, 14.0) && !s.contains(15.0, 10.0));
        let t = Shape::new(2, 10.0, 10.0, 5.0);
        assert!(t.contains(10.0, 5.0) && t.contains(10.0, 12.0));
        assert!(!t.contains(4.0, 5.0) && !t.contains(10.0, 13.5));
    }

    #[test]
    fn out_of_range_index_is_an_error() {
        let ds = shapes(8, 3);
        let mut out = vec![0.0; ds.transform.numel()];
        let e = ds
            .load_into(64, &mut out, &mut ChaCha8Rng::seed_from_u64(0))
            .unwrap_err();
        assert!(e.to_string().contains("64"), "{e}");
    }
}
