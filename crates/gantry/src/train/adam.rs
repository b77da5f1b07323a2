//! Adam (Kingma & Ba), PyTorch's update exactly (no amsgrad; weight decay as torch.optim.Adam's
//! L2 term added to the gradient), owned by gantry because tch's optimizers cannot save their
//! state and exact resume needs it.

use crate::error::{Error, Result};
use std::collections::HashMap;
use tch::{nn, Kind, Tensor};

pub struct Adam {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    step: i64,
    params: Vec<(String, Tensor)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl Adam {
    /// Optimises every trainable variable of `vs` (sorted by name, so the order is stable).
    pub fn new(vs: &nn::VarStore, lr: f64, betas: [f64; 2], eps: f64) -> Self {
        let params = crate::nn::trainable(vs);
        let m = params.iter().map(|(_, p)| p.zeros_like()).collect();
        let v = params.iter().map(|(_, p)| p.zeros_like()).collect();
        Adam {
            lr,
            betas: (betas[0], betas[1]),
            eps,
            weight_decay: 0.0,
            step: 0,
            params,
            m,
            v,
        }
    }

    /// torch.optim.Adam's `weight_decay`: `wd * param` is added to every gradient.
    pub fn with_weight_decay(mut self, wd: f64) -> Self {
        self.weight_decay = wd;
        self
    }

    /// The optimised tensors, in the order [`step`](Self::step) expects their gradients.
    pub fn params(&self) -> Vec<Tensor> {
        self.params.iter().map(|(_, p)| p.shallow_clone()).collect()
    }

    /// Gradients of `loss` for every parameter, as fresh tensors (`autograd.grad`): nothing is
    /// accumulated into `.grad`, so there is no zeroing pass, and only the paths to these
    /// parameters are differentiated (the other network needs no freezing).
    pub fn gradients(&self, loss: &Tensor) -> Vec<Tensor> {
        Tensor::run_backward(&[loss], &self.params(), false, false)
    }

    /// Sum of squared gradients as a scalar tensor (NaN/Inf propagate into it).
    pub fn grad_sq_norm(grads: &[Tensor]) -> Tensor {
        let parts: Vec<Tensor> = grads
            .iter()
            .filter(|g| g.defined())
            .map(|g| g.norm())
            .collect();
        if parts.is_empty() {
            return Tensor::from(0f32);
        }
        // Per-tensor norms are reductions without a full-size temporary.
        Tensor::stack(&parts, 0).square().sum(Kind::Float)
    }

    /// The betas of the next steps (a schedule may move beta2).
    pub fn set_betas(&mut self, betas: [f64; 2]) {
        self.betas = (betas[0], betas[1]);
    }

    /// The learning rate of the next steps (a schedule sets it before every step).
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// One Adam update with `grads` aligned to [`params`](Self::params) (undefined = unused).
    pub fn step(&mut self, grads: &[Tensor]) {
        self.step += 1;
        let (b1, b2) = self.betas;
        let bc1 = 1.0 - b1.powi(self.step as i32);
        let bc2_sqrt = (1.0 - b2.powi(self.step as i32)).sqrt();
        let step_size = self.lr / bc1;
        tch::no_grad(|| {
            for ((((_, p), m), v), g) in self
                .params
                .iter()
                .zip(&mut self.m)
                .zip(&mut self.v)
                .zip(grads)
            {
                if !g.defined() {
                    continue;
                }
                let decayed;
                let g = if self.weight_decay != 0.0 {
                    decayed = g + p * self.weight_decay;
                    &decayed
                } else {
                    g
                };
                // PyTorch's single-tensor Adam, with the scalings folded into in-place ops so
                // the only temporaries are g*g and the denominator.
                let _ = m.lerp_(g, 1.0 - b1);
                let _ = v.lerp_(&g.square(), 1.0 - b2);
                let mut denom = v.sqrt();
                let _ = denom
                    .g_div_scalar_(bc2_sqrt)
                    .g_add_scalar_(self.eps)
                    .g_div_scalar_(-step_size);
                let _ = p.shallow_clone().addcdiv_(m, &denom);
            }
        });
    }

    pub fn steps_taken(&self) -> i64 {
        self.step
    }

    /// State tensors under `prefix.<param>.m|v` and `prefix.step`.
    pub fn state(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = vec![(format!("{prefix}.step"), Tensor::from(self.step))];
        for (((name, _), m), v) in self.params.iter().zip(&self.m).zip(&self.v) {
            out.push((format!("{prefix}.{name}.m"), m.shallow_clone()));
            out.push((format!("{prefix}.{name}.v"), v.shallow_clone()));
        }
        out
    }

    pub fn load_state(
        &mut self,
        state: &HashMap<String, Tensor>,
        prefix: &str,
        file: &std::path::Path,
    ) -> Result<()> {
        let get = |key: &str, like: &Tensor| -> Result<Tensor> {
            let t = state
                .get(key)
                .ok_or_else(|| Error::checkpoint(file, format!("missing {key}")))?;
            if t.size() != like.size() {
                return Err(Error::checkpoint(
                    file,
                    format!("{key} is {:?}, model wants {:?}", t.size(), like.size()),
                ));
            }
            Ok(t.to_device(like.device()).to_kind(like.kind()))
        };
        let step_key = format!("{prefix}.step");
        let step = state
            .get(&step_key)
            .ok_or_else(|| Error::checkpoint(file, format!("missing {step_key}")))?;
        self.step = step.int64_value(&[]);
        tch::no_grad(|| -> Result<()> {
            for (((name, _), m), v) in self.params.iter().zip(&mut self.m).zip(&mut self.v) {
                m.copy_(&get(&format!("{prefix}.{name}.m"), m)?);
                v.copy_(&get(&format!("{prefix}.{name}.v"), v)?);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Reference values from torch.optim.Adam(lr=0.01, betas=(0.5, 0.9), eps=1e-8) on
    /// f_i(x) = sum(x^3 + sin((i+1) x)) from x = [1, -2, 0.3], five steps (PyTorch 2.11).
    #[test]
    fn matches_pytorch_adam() {
        let vs = nn::VarStore::new(Device::Cpu);
        let x = vs
            .root()
            .var_copy("x", &Tensor::from_slice(&[1.0f32, -2.0, 0.3]));
        let mut opt = Adam::new(&vs, 0.01, [0.5, 0.9], 1e-8);
        for i in 0..5 {
            let grads = opt.gradients(
                &(x.pow_tensor_scalar(3) + (&x * (i + 1) as f64).sin()).sum(Kind::Float),
            );
            opt.step(&grads);
        }
        let got: Vec<f32> = Vec::try_from(&x).unwrap();
        let want = [0.965_119_1f32, -2.049_369_3, 0.248_666_72];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
        assert_eq!(opt.steps_taken(), 5);
    }

    /// torch.optim.Adam(lr=0.01, betas=(0.5, 0.9), eps=1e-8, weight_decay=0.1), same problem.
    #[test]
    fn weight_decay_matches_pytorch() {
        let vs = nn::VarStore::new(Device::Cpu);
        let x = vs
            .root()
            .var_copy("x", &Tensor::from_slice(&[1.0f32, -2.0, 0.3]));
        let mut opt = Adam::new(&vs, 0.01, [0.5, 0.9], 1e-8).with_weight_decay(0.1);
        for i in 0..5 {
            let grads = opt.gradients(
                &(x.pow_tensor_scalar(3) + (&x * (i + 1) as f64).sin()).sum(Kind::Float),
            );
            opt.step(&grads);
        }
        let got: Vec<f32> = Vec::try_from(&x).unwrap();
        let want = [0.964_308_8f32, -2.049_348_8, 0.248_683_21];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }
}
