//! What `gantry sample` draws, with stylegan2-ada-pytorch's conventions (`generate.py`,
//! `style_mixing.py`): seeds (`0-63,100`) whose latent is `np.random.RandomState(seed).randn(z_dim)`,
//! so a seed gives the same latent in both tools; the truncation trick; class conditioning;
//! noise modes; interpolation between seeds (linear or spherical, in z, or in w for StyleGAN2);
//! and StyleGAN2's style-mixing grid.

use crate::error::{Error, Result};
use crate::models::stylegan2::layers::NoiseMode;
use crate::models::Generator;
use gantry_metrics::NumpyRandomState;
use tch::{Device, Kind, Tensor};

/// The most seeds one call draws (a grid holds at most [`crate::run::MAX_GRID`] images).
pub const MAX_SEEDS: usize = 100_000;

/// `0-63,100,7`: ranges (inclusive) and single seeds, in order, repeats kept.
pub fn parse_seeds(spec: &str) -> Result<Vec<u32>> {
    let bad = |msg: String| Error::config("--seeds", msg);
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| bad(format!("{s:?} is not a seed (0 to 4294967295)")))
        };
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(part)?, num(part)?),
        };
        if lo > hi {
            return Err(bad(format!("{part}: the range runs backwards")));
        }
        if (hi - lo) as usize + out.len() >= MAX_SEEDS {
            return Err(bad(format!("more than {MAX_SEEDS} seeds")));
        }
        out.extend(lo..=hi);
    }
    if out.is_empty() {
        return Err(bad("no seeds (e.g. 0-63 or 1,5,9)".into()));
    }
    Ok(out)
}

/// One latent per seed: `np.random.RandomState(seed).randn(z_dim)`, as float32 rows.
pub fn seed_latents(seeds: &[u32], z_dim: i64) -> Tensor {
    let mut values = Vec::with_capacity(seeds.len() * z_dim as usize);
    for &s in seeds {
        values.extend(
            NumpyRandomState::new(s)
                .randn(z_dim as usize)
                .into_iter()
                .map(|v| v as f32),
        );
    }
    Tensor::from_slice(&values).view([seeds.len() as i64, z_dim])
}

/// `steps` points from `a` to `b` (both `[D]`), ends included: linear, or spherical (slerp, as
/// for Gaussian latents, whose norm concentrates).
pub fn interpolate(a: &Tensor, b: &Tensor, steps: i64, spherical: bool) -> Tensor {
    let t = Tensor::linspace(0.0, 1.0, steps, (Kind::Float, a.device())).unsqueeze(1);
    let (a, b) = (a.unsqueeze(0), b.unsqueeze(0));
    if !spherical {
        return &a + (&b - &a) * &t;
    }
    let (na, nb) = (a.norm(), b.norm());
    let cos = ((&a / &na) * (&b / &nb)).sum(Kind::Float).clamp(-1.0, 1.0);
    let omega = cos.acos();
    let so = omega.sin();
    if so.double_value(&[]).abs() < 1e-6 {
        return &a + (&b - &a) * &t;
    }
    let wa = ((t.ones_like() - &t) * &omega).sin() / &so;
    let wb = (&t * &omega).sin() / &so;
    wa * a + wb * b
}

/// How `gantry sample` draws.
#[derive(Clone, Debug)]
pub struct Controls {
    /// Truncation psi (1 = none).
    pub psi: f64,
    pub noise: NoiseMode,
}

/// Images for latents `z` (`[N, z_dim]`, on the CPU) through `g` on `device`.
pub fn images(
    g: &dyn Generator,
    z: &Tensor,
    labels: Option<&Tensor>,
    c: &Controls,
    device: Device,
) -> Tensor {
    tch::no_grad(|| {
        g.generate(&z.to(device), labels, c.psi, c.noise)
            .to_device(Device::Cpu)
    })
}

/// Frames of a walk through `seeds` (`steps` per pair, the last frame the last seed): in w for
/// StyleGAN2 (truncated as asked), in z for the others.
pub fn walk(
    g: &dyn Generator,
    seeds: &[u32],
    steps: i64,
    spherical: bool,
    labels: Option<&Tensor>,
    c: &Controls,
    device: Device,
) -> Result<Tensor> {
    if seeds.len() < 2 || steps < 2 {
        return Err(Error::config(
            "--interpolate",
            "needs at least two seeds and two steps",
        ));
    }
    let z = seed_latents(seeds, g.z_dim()).to(device);
    let label = labels.map(|l| l.narrow(0, 0, 1));
    let sg = g.as_stylegan2();
    let last = seeds.len() as i64 - 1;
    tch::no_grad(|| {
        // StyleGAN2 walks in w (the space it is built to be smooth in), truncated there.
        let points = match sg {
            Some(sg) => {
                let lab = label.as_ref().map(|l| l.expand([z.size()[0]], false));
                let ws = sg.ws(&z, lab.as_ref(), false).select(1, 0);
                let avg = sg.w_avg().to_kind(ws.kind()).unsqueeze(0);
                &avg + (&ws - &avg) * c.psi
            }
            None => z.shallow_clone(),
        };
        // One segment at a time, so memory stays at one segment's frames.
        let frames: Vec<Tensor> = (0..last)
            .map(|i| {
                let path = interpolate(&points.get(i), &points.get(i + 1), steps, spherical);
                // A segment's last frame is the next segment's first.
                let path = if i + 1 < last {
                    path.narrow(0, 0, steps - 1)
                } else {
                    path
                };
                let x = match sg {
                    Some(sg) => sg.synthesis(
                        &path.unsqueeze(1).repeat([1, sg.num_ws(), 1]),
                        c.noise,
                        crate::models::stylegan2::ops::ModConvForm::Grouped,
                    ),
                    None => {
                        let lab = label.as_ref().map(|l| l.expand([path.size()[0]], false));
                        g.generate(&path, lab.as_ref(), c.psi, c.noise)
                    }
                };
                x.to_device(Device::Cpu)
            })
            .collect();
        Ok(Tensor::cat(&frames, 0))
    })
}

/// StyleGAN2's style-mixing figure (`style_mixing.py`): a grid whose first row holds the column
/// seeds' images, first column the row seeds', and cell (r, c) the row seed's w with the layers
/// `cols` (e.g. `0..7`, coarse styles) taken from the column seed. Returns the images in grid
/// order, `(rows + 1) x (cols + 1)` with a blank corner.
pub fn style_mix(
    g: &dyn Generator,
    rows: &[u32],
    cols: &[u32],
    layers: std::ops::Range<i64>,
    c: &Controls,
    device: Device,
) -> Result<Tensor> {
    let sg = g.as_stylegan2().ok_or_else(|| {
        Error::config(
            "--style-mix",
            "style mixing needs a StyleGAN2 generator (model.arch = stylegan2)",
        )
    })?;
    if layers.start < 0 || layers.end > sg.num_ws() || layers.is_empty() {
        return Err(Error::config(
            "--style-layers",
            format!("must lie within 0-{} for this generator", sg.num_ws() - 1),
        ));
    }
    let seeds: Vec<u32> = rows.iter().chain(cols).copied().collect();
    let z = seed_latents(&seeds, g.z_dim()).to(device);
    tch::no_grad(|| {
        let ws = sg.ws(&z, None, false);
        let avg = sg.w_avg().to_kind(ws.kind()).reshape([1, 1, -1]);
        let ws = &avg + (&ws - &avg) * c.psi;
        let render = |w: &Tensor| {
            sg.synthesis(
                w,
                c.noise,
                crate::models::stylegan2::ops::ModConvForm::Grouped,
            )
            .to_device(Device::Cpu)
        };
        let single = render(&ws);
        let (nr, nc) = (rows.len() as i64, cols.len() as i64);
        let blank = single.get(0).ones_like().unsqueeze(0);
        let mut cells = vec![blank];
        for j in 0..nc {
            cells.push(single.get(nr + j).unsqueeze(0));
        }
        for i in 0..nr {
            cells.push(single.get(i).unsqueeze(0));
            let mut w = ws.get(i).unsqueeze(0).repeat([nc, 1, 1]);
            let from = ws
                .narrow(0, nr, nc)
                .narrow(1, layers.start, layers.end - layers.start);
            w = w.slice_scatter(&from, 1, Some(layers.start), Some(layers.end), 1);
            cells.push(render(&w));
        }
        Ok(Tensor::cat(&cells, 0))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_as_stylegan2_ada_writes_them() {
        assert_eq!(parse_seeds("0-3,10").unwrap(), [0, 1, 2, 3, 10]);
        assert_eq!(parse_seeds(" 7 ").unwrap(), [7]);
        for bad in ["", "3-1", "x", "-1", "0-200000"] {
            assert!(parse_seeds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slerp_keeps_the_ends_and_the_norm_of_orthogonal_unit_vectors() {
        let a = Tensor::from_slice(&[1.0f32, 0.0]);
        let b = Tensor::from_slice(&[0.0f32, 1.0]);
        let p = interpolate(&a, &b, 5, true);
        assert!((p.get(0) - &a).abs().max().double_value(&[]) < 1e-6);
        assert!((p.get(4) - &b).abs().max().double_value(&[]) < 1e-6);
        let norms = p.norm_scalaropt_dim(2, [1], false);
        assert!((norms - 1.0).abs().max().double_value(&[]) < 1e-5);
        let l = interpolate(&a, &b, 3, false);
        assert!(
            (l.get(1) - Tensor::from_slice(&[0.5f32, 0.5]))
                .abs()
                .max()
                .double_value(&[])
                < 1e-7
        );
    }
}
