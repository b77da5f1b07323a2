//! Small layer helpers shared by the architectures.

pub mod attention;
pub mod init;
pub mod layers;
pub mod norm;
pub mod spectral;

use tch::Tensor;

extern "C" {
    // csrc/ops.cpp
    fn gantry_leaky_relu(
        x: *const torch_sys::C_tensor,
        slope: f64,
        out: *mut *mut torch_sys::C_tensor,
    ) -> *mut std::ffi::c_char;
}

/// LeakyReLU with a chosen slope: libtorch's native `leaky_relu` (one kernel forward, one
/// backward), reached through csrc/ops.cpp because tch's binding fixes the slope at 0.01.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Tensor {
    let mut out = std::ptr::null_mut();
    // SAFETY: `x` is a live tensor; on success the shim hands over a new at::Tensor that the
    // returned Tensor owns; on failure it returns a malloc'd message and leaves `out` alone.
    unsafe {
        let err = gantry_leaky_relu(x.as_ptr(), slope, &mut out);
        if !err.is_null() {
            let msg = std::ffi::CStr::from_ptr(err)
                .to_string_lossy()
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            libc_free(err as *mut std::ffi::c_void);
            panic!("leaky_relu: {msg}");
        }
        Tensor::from_ptr(out)
    }
}

extern "C" {
    #[link_name = "free"]
    fn libc_free(p: *mut std::ffi::c_void);
}

/// The trainable variables of `vs`, sorted by name: the stable order optimisers keep their state
/// in (gantry's Adam and the classifier's SGD).
pub fn trainable(vs: &tch::nn::VarStore) -> Vec<(String, Tensor)> {
    let mut params: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params
}

/// Builds `N` variable stores on `device` with `build`, their initial values drawn from the CPU
/// generator whatever the device: on a GPU, `build` runs once into CPU stores (the draws) and
/// once into the device's (the modules returned), and the CPU values are copied over by name.
/// A seed then gives the same initial weights on every device (tch's initialisers would draw from
/// the device's own generator, which differs from the CPU's for the same seed). Every random
/// constant of a module must be a variable (`p.add`, `p.var`) for this to hold.
pub fn build_with_cpu_draws<const N: usize, T>(
    device: tch::Device,
    build: impl Fn(&[tch::nn::VarStore; N]) -> crate::error::Result<T>,
) -> crate::error::Result<([tch::nn::VarStore; N], T)> {
    if device == tch::Device::Cpu {
        let vs = std::array::from_fn(|_| tch::nn::VarStore::new(device));
        let built = build(&vs)?;
        return Ok((vs, built));
    }
    build_and_copy_cpu_draws(device, build)
}

/// The GPU branch of [`build_with_cpu_draws`] on any device (on the CPU, for its test: every
/// variable of every architecture and plug-in comes over).
pub fn build_and_copy_cpu_draws<const N: usize, T>(
    device: tch::Device,
    build: impl Fn(&[tch::nn::VarStore; N]) -> crate::error::Result<T>,
) -> crate::error::Result<([tch::nn::VarStore; N], T)> {
    let stores = |d| std::array::from_fn(|_| tch::nn::VarStore::new(d));
    let drawn = stores(tch::Device::Cpu);
    drop(build(&drawn)?);
    let mut vs = stores(device);
    let built = build(&vs)?;
    for (to, from) in vs.iter_mut().zip(&drawn) {
        to.copy(from)?;
    }
    Ok((vs, built))
}

/// `F.pad(x, [left, right, top, bottom], mode='reflect')`. Under deterministic algorithms CUDA's
/// `reflection_pad2d` backward raises (it accumulates with atomics), so it is then built from
/// flipped slices, whose backward is plain copies; the values are the same either way (tested).
pub fn reflection_pad2d(x: &Tensor, [left, right, top, bottom]: [i64; 4]) -> Tensor {
    if !crate::device::deterministic() {
        return x.reflection_pad2d([left, right, top, bottom]);
    }
    let reflect = |x: Tensor, dim: i64, before: i64, after: i64| {
        if before == 0 && after == 0 {
            return x;
        }
        let n = x.size()[dim as usize];
        let mut parts = Vec::with_capacity(3);
        if before > 0 {
            parts.push(x.narrow(dim, 1, before).flip([dim]));
        }
        parts.push(x.shallow_clone());
        if after > 0 {
            parts.push(x.narrow(dim, n - 1 - after, after).flip([dim]));
        }
        Tensor::cat(&parts, dim)
    };
    reflect(reflect(x.shallow_clone(), 3, left, right), 2, top, bottom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_definition_and_its_gradient() {
        let x = Tensor::from_slice(&[-2.0f64, -0.5, 0.0, 1.5]).set_requires_grad(true);
        let y = leaky_relu(&x, 0.2);
        assert_eq!(Vec::<f64>::try_from(&y).unwrap(), [-0.4, -0.1, 0.0, 1.5]);
        y.sum(tch::Kind::Double).backward();
        // PyTorch's leaky_relu backward takes the slope at x == 0 as well.
        assert_eq!(
            Vec::<f64>::try_from(x.grad()).unwrap(),
            [0.2, 0.2, 0.2, 1.0]
        );
        let g = Tensor::run_backward(
            &[leaky_relu(&x, 0.01).sum(tch::Kind::Double)],
            &[&x],
            false,
            false,
        );
        let want = Tensor::run_backward(
            &[x.leaky_relu().sum(tch::Kind::Double)],
            &[&x],
            false,
            false,
        );
        assert!(g[0].equal(&want[0]));
    }
}
