//! Device selection (`cpu`, `cuda`, `cuda:N`), thread count and seeding.
//!
//! Randomness: every random draw of a training step is seeded from (run seed, step, purpose), so a
//! step's randomness is a pure function of its position in the run. That is what makes resume exact
//! without having to serialise libtorch's generator state.

use crate::error::{Error, Result};
use serde_with::{DeserializeFromStr, SerializeDisplay};
use std::fmt;
use std::str::FromStr;
use tch::Device;

/// Where a run computes: `cpu`, `cuda` (the first GPU) or `cuda:N`. Parsing checks the spelling
/// only; [`DeviceSpec::open`] checks that the device exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, SerializeDisplay, DeserializeFromStr)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("unknown device {s:?} (valid: cpu, cuda, cuda:N)");
        match s.trim() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            t => t
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(bad),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// The libtorch device, after checking that it exists.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => {
                let count = tch::Cuda::device_count() as usize;
                let fail = |msg: String| {
                    Err(Error::Device {
                        device: self.to_string(),
                        msg,
                    })
                };
                if count == 0 {
                    fail("no CUDA GPU is visible to libtorch (use --device cpu)".into())
                } else if n >= count {
                    fail(format!("only {count} CUDA device(s) are visible"))
                } else {
                    Ok(Device::Cuda(n))
                }
            }
        }
    }
}

/// Sets libtorch's intra-op thread count; 0 means all cores.
pub fn set_threads(threads: usize) {
    let n = if threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        threads
    };
    tch::set_num_threads(n as i32);
}

/// What a seed is used for; each purpose gets an independent stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Purpose {
    Init = 1,
    DStep = 2,
    GStep = 3,
    FixedLatents = 4,
    Sample = 5,
    Plugin = 6,
    Eval = 7,
    Classify = 8,
    Attack = 9,
    Translate = 10,
}

/// SplitMix64-style mixing of (seed, step, purpose, sub) into one 63-bit seed.
pub fn derive_seed(seed: u64, step: u64, purpose: Purpose, sub: u64) -> i64 {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    for v in [step, purpose as u64, sub] {
        x = x
            .wrapping_add(v.wrapping_mul(0xBF58_476D_1CE4_E5B9))
            .wrapping_add(0x94D0_49BB_1331_11EB);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
    }
    (x >> 1) as i64
}

/// Seeds libtorch's global generators (CPU and CUDA) for one purpose of one step.
pub fn seed_torch(seed: u64, step: u64, purpose: Purpose, sub: u64) {
    tch::manual_seed(derive_seed(seed, step, purpose, sub));
}

extern "C" {
    // csrc/ops.cpp
    fn gantry_cuda_flags(tf32: i32, cudnn_benchmark: i32, deterministic: i32);
}

static DETERMINISTIC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// libtorch's numerics switches, one setting for every command: TF32 in CUDA matmuls and cuDNN
/// convolutions, cuDNN's autotuner, and deterministic algorithms (ATen's and cuDNN's; ops with no
/// deterministic CUDA kernel then raise, so gantry routes the ones it uses through
/// [`deterministic`] alternatives). TF32 and the autotuner only act on CUDA; the deterministic
/// switch is also read on the CPU, where it selects the same alternatives (so they are tested).
pub fn set_numerics(tf32: bool, cudnn_benchmark: bool, deterministic: bool) {
    DETERMINISTIC.store(deterministic, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: global flags of libtorch's context and one environment variable, set before work.
    unsafe {
        gantry_cuda_flags(
            i32::from(tf32),
            i32::from(cudnn_benchmark),
            i32::from(deterministic),
        )
    }
}

/// Whether deterministic algorithms were asked for ([`set_numerics`]).
pub fn deterministic() -> bool {
    DETERMINISTIC.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_and_rejects_garbage() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        assert_eq!(DeviceSpec::Cuda(3).to_string(), "cuda:3");
        for bad in ["tpu", "cuda:x", "cuda:", "CPU0"] {
            let e = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(e.contains("valid: cpu, cuda, cuda:N"), "{e}");
        }
        assert_eq!(DeviceSpec::Cpu.open().unwrap(), Device::Cpu);
        if tch::Cuda::device_count() == 0 {
            let e = DeviceSpec::Cuda(0).open().unwrap_err().to_string();
            assert!(e.contains("no CUDA GPU"), "{e}");
        }
    }

    #[test]
    fn derived_seeds_differ_by_every_input() {
        let a = derive_seed(1, 2, Purpose::DStep, 0);
        assert_eq!(a, derive_seed(1, 2, Purpose::DStep, 0));
        assert_ne!(a, derive_seed(2, 2, Purpose::DStep, 0));
        assert_ne!(a, derive_seed(1, 3, Purpose::DStep, 0));
        assert_ne!(a, derive_seed(1, 2, Purpose::GStep, 0));
        assert_ne!(a, derive_seed(1, 2, Purpose::DStep, 1));
        assert!(a >= 0);
    }
}
