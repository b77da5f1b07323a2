//! Lanczos resizing of 8-bit images with the arithmetic of PIL's `Image.resize(size, LANCZOS)`,
//! which stylegan2-ada's `dataset_tool.py` uses, so that `gantry dataset` writes the same pixels.
//!
//! The algorithm (Pillow's `Resample.c`): a separable filter, `a = 3`, widened by the scale when
//! shrinking (antialiasing); per output pixel the weights are computed in f64, normalised to sum
//! to one and rounded to 22-bit fixed point; the horizontal pass runs first and rounds to 8 bits,
//! then the vertical pass. Only the rows the vertical pass reads are filtered horizontally.
//!
//! Checked against Pillow 13.0 on random sizes, grey and RGB: bit for bit whenever Pillow runs
//! the horizontal pass first, which is always for a square resized to a square (dataset_tool's
//! `center-crop`) and in every Pillow up to 12. Pillow 13 runs the vertical pass first for some
//! non-uniform scalings (e.g. 36x64 -> 16x16); there the two differ by 1-2 levels in a few pixels.

/// Fixed-point bits of the weights: 32 - 8 (pixel) - 2 (headroom for negative lobes).
const BITS: u32 = 22;

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos3(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// For each output pixel along one axis: the first input pixel and the fixed-point weights.
struct Taps {
    first: Vec<usize>,
    count: Vec<usize>,
    stride: usize,
    weights: Vec<i32>,
}

fn taps(in_size: usize, out_size: usize) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = 3.0 * filter_scale;
    let stride = support.ceil() as usize * 2 + 1;
    let mut t = Taps {
        first: Vec::with_capacity(out_size),
        count: Vec::with_capacity(out_size),
        stride,
        weights: vec![0; out_size * stride],
    };
    let mut w = vec![0f64; stride];
    let ss = 1.0 / filter_scale;
    for o in 0..out_size {
        let center = (o as f64 + 0.5) * scale;
        // C's (int) truncates toward zero, as `as` does.
        let lo = ((center - support + 0.5) as i64).max(0) as usize;
        let hi = ((center + support + 0.5) as i64)
            .min(in_size as i64)
            .max(lo as i64) as usize;
        let n = (hi - lo).min(stride);
        let mut sum = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(n) {
            *wx = lanczos3(((x + lo) as f64 - center + 0.5) * ss);
            sum += *wx;
        }
        let row = &mut t.weights[o * stride..o * stride + n];
        for (k, wx) in row.iter_mut().zip(&w) {
            let v = if sum != 0.0 { wx / sum } else { *wx };
            let f = v * f64::from(1u32 << BITS);
            *k = if v < 0.0 {
                (f - 0.5) as i32
            } else {
                (f + 0.5) as i32
            };
        }
        t.first.push(lo);
        t.count.push(n);
    }
    t
}

#[inline]
fn clip8(v: i32) -> u8 {
    (v >> BITS).clamp(0, 255) as u8
}

/// `src` (`w` x `h`, `c` interleaved 8-bit channels) resized to `nw` x `nh`.
pub(crate) fn lanczos(src: &[u8], w: usize, h: usize, c: usize, nw: usize, nh: usize) -> Vec<u8> {
    debug_assert_eq!(src.len(), w * h * c);
    if (w, h) == (nw, nh) || nw == 0 || nh == 0 {
        return if (w, h) == (nw, nh) {
            src.to_vec()
        } else {
            Vec::new()
        };
    }
    let vert = taps(h, nh);
    // Rows of the source the vertical pass reads.
    let (row0, row1) = (vert.first[0], vert.first[nh - 1] + vert.count[nh - 1]);
    let (mid, mid_w, mid_row0) = if nw != w {
        let hor = taps(w, nw);
        let rows = &src[row0 * w * c..row1 * w * c];
        let out = match c {
            1 => horizontal::<1>(rows, w, nw, &hor),
            3 => horizontal::<3>(rows, w, nw, &hor),
            4 => horizontal::<4>(rows, w, nw, &hor),
            _ => horizontal_any(rows, w, nw, c, &hor),
        };
        (std::borrow::Cow::Owned(out), nw, row0)
    } else {
        (std::borrow::Cow::Borrowed(src), w, 0)
    };
    if nh == h {
        // Only the horizontal pass (every row was filtered: row0 = 0, row1 = h).
        return mid.into_owned();
    }
    // Vertical pass, a whole output row at a time (the source rows are read contiguously).
    let stride = mid_w * c;
    let mut out = vec![0u8; nh * stride];
    let mut acc = vec![0i32; stride];
    for o in 0..nh {
        let k = &vert.weights[o * vert.stride..o * vert.stride + vert.count[o]];
        let first = vert.first[o] - mid_row0;
        acc.fill(1 << (BITS - 1));
        for (i, &kw) in k.iter().enumerate() {
            let row = &mid[(first + i) * stride..(first + i + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += i32::from(p) * kw;
            }
        }
        for (d, &a) in out[o * stride..(o + 1) * stride].iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
    out
}

/// The horizontal pass over `rows` (each `w` pixels of `C` channels) to `nw` pixels.
fn horizontal<const C: usize>(rows: &[u8], w: usize, nw: usize, t: &Taps) -> Vec<u8> {
    let n_rows = rows.len() / (w * C);
    let mut out = vec![0u8; n_rows * nw * C];
    for (line, dst) in rows.chunks_exact(w * C).zip(out.chunks_exact_mut(nw * C)) {
        for (o, px_out) in dst.chunks_exact_mut(C).enumerate() {
            let k = &t.weights[o * t.stride..o * t.stride + t.count[o]];
            let start = t.first[o] * C;
            let span = &line[start..start + k.len() * C];
            let mut acc = [1i32 << (BITS - 1); C];
            for (px, &kw) in span.chunks_exact(C).zip(k) {
                for ch in 0..C {
                    acc[ch] += i32::from(px[ch]) * kw;
                }
            }
            for ch in 0..C {
                px_out[ch] = clip8(acc[ch]);
            }
        }
    }
    out
}

fn horizontal_any(rows: &[u8], w: usize, nw: usize, c: usize, t: &Taps) -> Vec<u8> {
    let n_rows = rows.len() / (w * c);
    let mut out = vec![0u8; n_rows * nw * c];
    for (line, dst) in rows.chunks_exact(w * c).zip(out.chunks_exact_mut(nw * c)) {
        for (o, px_out) in dst.chunks_exact_mut(c).enumerate() {
            let k = &t.weights[o * t.stride..o * t.stride + t.count[o]];
            for (ch, d) in px_out.iter_mut().enumerate() {
                let mut a = 1i32 << (BITS - 1);
                for (i, &kw) in k.iter().enumerate() {
                    a += i32::from(line[(t.first[o] + i) * c + ch]) * kw;
                }
                *d = clip8(a);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_and_flat_images_are_unchanged() {
        let src: Vec<u8> = (0..6 * 4 * 3).map(|i| (i * 7) as u8).collect();
        assert_eq!(lanczos(&src, 6, 4, 3, 6, 4), src);
        let flat = vec![200u8; 30 * 20];
        assert!(lanczos(&flat, 30, 20, 1, 7, 11).iter().all(|&v| v == 200));
        assert!(lanczos(&flat, 30, 20, 1, 64, 3).iter().all(|&v| v == 200));
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(100, 7), (7, 100), (33, 32), (5, 1)] {
            let t = taps(i, o);
            for x in 0..o {
                let s: i32 = t.weights[x * t.stride..x * t.stride + t.count[x]]
                    .iter()
                    .sum();
                assert!(
                    (s - (1 << BITS)).abs() <= t.count[x] as i32,
                    "{i}->{o} at {x}: {s}"
                );
            }
        }
    }
}
