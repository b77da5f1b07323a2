//! Spectral normalisation (Miyato, Kataoka, Koyama, Yoshida, "Spectral Normalization for
//! Generative Adversarial Networks", ICLR 2018), exactly as `torch.nn.utils.spectral_norm`:
//!
//! - the weight is viewed as a matrix `W` of `[rows = dim 0, rest]`;
//! - `u` (`rows`) and `v` (`rest`) start as normalised N(0, 1) draws and are buffers of the
//!   VarStore (`<layer>.weight_u`, `<layer>.weight_v`): saved in checkpoints, never optimised,
//!   copied (not averaged) into the EMA generator;
//! - in training mode each forward runs one power iteration under `no_grad`,
//!   `v = normalize(W^T u)`, `u = normalize(W v)` with `normalize(x) = x / max(|x|, 1e-12)`, and
//!   stores both; in eval mode the stored vectors are used as they are;
//! - the layer uses `W / sigma` with `sigma = u . (W v)`: gradients flow through `W` in both
//!   places, while `u` and `v` are constants (clones, as torch makes them).
//!
//! Departures: none from torch. BigGAN-PyTorch's own SN differs in two ways that gantry does
//! not copy: it keeps only `u` and runs a (non-storing) power iteration in eval mode too.

use tch::{nn, Kind, Tensor};

/// torch's default `eps` of `spectral_norm`.
pub const EPS: f64 = 1e-12;

/// The power-iteration state of one spectrally normalised weight.
#[derive(Debug)]
pub struct SpectralNorm {
    u: Tensor,
    v: Tensor,
}

fn normalize(x: &Tensor) -> Tensor {
    x / x.norm().clamp_min(EPS)
}

impl SpectralNorm {
    /// Registers `weight_u` and `weight_v` under `p` (the layer's path) for `weight`, drawing
    /// them from libtorch's generator like torch does at `spectral_norm(module)` time.
    pub fn new(p: &nn::Path, weight: &Tensor) -> Self {
        let rows = weight.size()[0];
        let cols = weight.numel() as i64 / rows;
        let opts = (Kind::Float, weight.device());
        let u = tch::no_grad(|| normalize(&Tensor::randn([rows], opts)));
        let v = tch::no_grad(|| normalize(&Tensor::randn([cols], opts)));
        SpectralNorm {
            u: p.add("weight_u", u, false),
            v: p.add("weight_v", v, false),
        }
    }

    /// The stored left singular vector estimate (`weight_u`).
    pub fn u(&self) -> &Tensor {
        &self.u
    }

    /// The stored right singular vector estimate (`weight_v`).
    pub fn v(&self) -> &Tensor {
        &self.v
    }

    /// `weight / sigma(weight)`, after one power iteration when `train`.
    pub fn normalise(&self, weight: &Tensor, train: bool) -> Tensor {
        let w_mat = weight.reshape([weight.size()[0], -1]);
        if train {
            tch::no_grad(|| {
                let w = w_mat.detach();
                let v = normalize(&w.tr().mv(&self.u));
                self.v.shallow_clone().copy_(&v);
                let u = normalize(&w.mv(&v));
                self.u.shallow_clone().copy_(&u);
            });
        }
        // Clones: later iterations overwrite the buffers in place while this graph may still
        // need the values it was built with.
        let u = self.u.detach().copy();
        let v = self.v.detach().copy();
        let sigma = u.dot(&w_mat.mv(&v));
        weight / sigma
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn power_iteration_converges_to_the_largest_singular_value() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = Tensor::randn([6, 4, 3, 3], (Kind::Float, Device::Cpu));
        let sn = SpectralNorm::new(&vs.root(), &w);
        for _ in 0..200 {
            let _ = sn.normalise(&w, true);
        }
        let m = w.view([6, -1]).to_kind(Kind::Double);
        let top = m
            .matmul(&m.tr())
            .linalg_eigvalsh("L")
            .max()
            .double_value(&[])
            .sqrt();
        let wn = sn.normalise(&w, false);
        let sigma = (w.abs().max() / wn.abs().max()).double_value(&[]);
        assert!((sigma - top).abs() / top < 1e-4, "{sigma} vs {top}");
        let keys: Vec<String> = vs.variables().into_keys().collect();
        assert!(keys.contains(&"weight_u".to_string()) && keys.contains(&"weight_v".to_string()));
        assert!(vs.trainable_variables().is_empty());
    }

    #[test]
    fn eval_mode_leaves_the_vectors_alone() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = Tensor::randn([3, 5], (Kind::Float, Device::Cpu));
        let sn = SpectralNorm::new(&vs.root(), &w);
        let u0 = sn.u().copy();
        let _ = sn.normalise(&w, false);
        assert!(sn.u().equal(&u0));
        let _ = sn.normalise(&w, true);
        assert!(!sn.u().equal(&u0));
    }
}
