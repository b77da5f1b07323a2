//! Mixed precision and memory format, through the C++ shim (tch 0.24 can neither choose an
//! autocast dtype nor autocast on CPU, and has no memory formats): libtorch's own autocast, on CPU
//! and CUDA, with bf16 or fp16.
//!
//! Under autocast, matmuls and convolutions run in the low precision with the fp32 parameters cast
//! on the fly (gradients reach the parameters in fp32); reductions that autocast keeps in low
//! precision on CPU are the caller's to widen (the losses cast D's logits to fp32). Penalties run
//! in fp32 inside [`fp32`], as stylegan2-ada computes them.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

extern "C" {
    fn gantry_autocast_set(cuda: i32, dtype: i32, prev_enabled: *mut i32, prev_dtype: *mut i32);
    fn gantry_autocast_restore(cuda: i32, entered: i32, prev_enabled: i32, prev_dtype: i32);
    fn gantry_channels_last(
        x: *const torch_sys::C_tensor,
        out: *mut *mut torch_sys::C_tensor,
    ) -> *mut std::ffi::c_char;
    fn gantry_channels_last_(x: *const torch_sys::C_tensor) -> *mut std::ffi::c_char;
    fn gantry_pin_memory(
        x: *const torch_sys::C_tensor,
        out: *mut *mut torch_sys::C_tensor,
    ) -> *mut std::ffi::c_char;
    #[link_name = "free"]
    fn libc_free(p: *mut std::ffi::c_void);
}

/// `train.precision`: what G's and D's forward passes compute in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// float32 throughout (no autocast).
    #[default]
    Fp32,
    /// bfloat16 autocast (CPU and CUDA); fp32's range, so no loss scaling.
    Bf16,
    /// float16 autocast with dynamic loss scaling.
    Fp16,
}

impl Precision {
    /// The values of `train.precision`, `eval.precision` and `--precision`.
    pub const NAMES: &'static [&'static str] = &["fp32", "bf16", "fp16"];

    /// The autocast dtype as c10's ScalarType number (Half 5, BFloat16 15), none for fp32.
    fn scalar_type(self) -> Option<i32> {
        match self {
            Precision::Fp32 => None,
            Precision::Bf16 => Some(15),
            Precision::Fp16 => Some(5),
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Precision::Fp32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
            Precision::Fp16 => Kind::Half,
        }
    }
}

/// Autocast on `device` in `precision` while it lives (a no-op for fp32); restores the previous
/// state when dropped. Thread-local, like libtorch's autocast state.
#[must_use = "autocast ends when the guard is dropped"]
pub struct Autocast {
    cuda: i32,
    entered: bool,
    prev: (i32, i32),
    active: bool,
}

impl Autocast {
    pub fn new(device: Device, precision: Precision) -> Autocast {
        Self::set(device, precision.scalar_type())
    }

    fn set(device: Device, dtype: Option<i32>) -> Autocast {
        let cuda = i32::from(matches!(device, Device::Cuda(_)));
        if dtype.is_none() && !Self::enabled(cuda) {
            // Nothing to turn off (the common fp32 path does not touch libtorch at all).
            return Autocast {
                cuda,
                entered: false,
                prev: (0, 0),
                active: false,
            };
        }
        let (mut enabled, mut kind) = (0, 0);
        // SAFETY: plain calls into libtorch's thread-local autocast state.
        unsafe { gantry_autocast_set(cuda, dtype.unwrap_or(-1), &mut enabled, &mut kind) };
        Autocast {
            cuda,
            entered: dtype.is_some(),
            prev: (enabled, kind),
            active: true,
        }
    }

    fn enabled(cuda: i32) -> bool {
        let (mut enabled, mut kind) = (0, 0);
        // SAFETY: set to "off" and back immediately, to read the state.
        unsafe {
            gantry_autocast_set(cuda, -1, &mut enabled, &mut kind);
            gantry_autocast_restore(cuda, 0, enabled, kind);
        }
        enabled != 0
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        if self.active {
            // SAFETY: restores what `set` recorded.
            unsafe {
                gantry_autocast_restore(
                    self.cuda,
                    i32::from(self.entered),
                    self.prev.0,
                    self.prev.1,
                )
            };
        }
    }
}

/// Runs `f` with autocast off on `device` (penalties, in fp32 whatever the training precision).
pub fn fp32<T>(device: Device, f: impl FnOnce() -> T) -> T {
    let _off = Autocast::set(device, None);
    f()
}

fn check(err: *mut std::ffi::c_char) -> Result<()> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: a strdup'ed message from the shim.
    let msg = unsafe {
        let m = std::ffi::CStr::from_ptr(err).to_string_lossy().into_owned();
        libc_free(err as *mut std::ffi::c_void);
        m
    };
    Err(Error::Torch(msg.lines().next().unwrap_or("").to_string()))
}

/// `x` (4-D) in channels-last memory format.
pub fn channels_last(x: &Tensor) -> Result<Tensor> {
    if x.dim() != 4 {
        return Ok(x.shallow_clone());
    }
    let mut out = std::ptr::null_mut();
    // SAFETY: `x` is live; on success `out` is a new at::Tensor the returned Tensor owns.
    unsafe {
        check(gantry_channels_last(x.as_ptr(), &mut out))?;
        Ok(Tensor::from_ptr(out))
    }
}

/// `host` on `device`: on CUDA copied from pinned memory without blocking (the copy overlaps the
/// kernels already queued; pinned through the shim, see csrc/ops.cpp), elsewhere `host` itself.
pub fn to_device_pinned(host: &Tensor, device: Device) -> Result<Tensor> {
    if !matches!(device, Device::Cuda(_)) {
        return Ok(host.shallow_clone());
    }
    let mut out = std::ptr::null_mut();
    // SAFETY: `host` is live; on success `out` is a new at::Tensor the returned Tensor owns.
    let pinned = unsafe {
        check(gantry_pin_memory(host.as_ptr(), &mut out))?;
        Tensor::from_ptr(out)
    };
    Ok(pinned.to_device_(device, pinned.kind(), true, false))
}

/// Re-lays every 4-D tensor of `params` out as channels-last, in place.
pub fn make_channels_last(params: &[Tensor]) -> Result<()> {
    for p in params {
        // SAFETY: `p` is live; the shim replaces its data, keeping the variable.
        check(unsafe { gantry_channels_last_(p.as_ptr()) })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(x: &Tensor, w: &Tensor) -> Tensor {
        x.conv2d(w, None::<&Tensor>, [1, 1], [1, 1], [1, 1], 1)
    }

    #[test]
    fn autocast_lowers_convolutions_while_the_guard_lives() {
        let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([4, 3, 3, 3], (Kind::Float, Device::Cpu));
        let plain = conv(&x, &w);
        {
            let _bf16 = Autocast::new(Device::Cpu, Precision::Bf16);
            assert_eq!(conv(&x, &w).kind(), Kind::BFloat16);
            // Penalties: autocast off inside, back on after.
            assert_eq!(fp32(Device::Cpu, || conv(&x, &w).kind()), Kind::Float);
            assert_eq!(conv(&x, &w).kind(), Kind::BFloat16);
        }
        {
            let _fp16 = Autocast::new(Device::Cpu, Precision::Fp16);
            assert_eq!(conv(&x, &w).kind(), Kind::Half);
        }
        // Off again, and fp32 "autocast" is bit-identical to no guard at all.
        let _none = Autocast::new(Device::Cpu, Precision::Fp32);
        assert!(conv(&x, &w).equal(&plain));
    }

    #[test]
    fn names_are_the_serde_names() {
        for name in Precision::NAMES {
            let p: Precision = toml::Value::String(name.to_string()).try_into().unwrap();
            assert_eq!(toml::Value::try_from(p).unwrap().as_str(), Some(*name));
        }
    }

    #[test]
    fn channels_last_keeps_values_and_variables() {
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let w = vs.root().randn("w", &[4, 3, 3, 3], 0.0, 1.0);
        let before = w.copy();
        make_channels_last(&[w.shallow_clone()]).unwrap();
        assert!(w.equal(&before));
        assert!(w.requires_grad());
        assert_eq!(w.stride(), [27, 1, 9, 3]);
        let x = channels_last(&Tensor::randn([2, 3, 5, 5], (Kind::Float, Device::Cpu))).unwrap();
        assert_eq!(x.stride(), [75, 1, 15, 3]);
    }
}
