//! Device selection (`cpu`, `cuda`, `cuda:N`), thread count and seeding.
//!
//! Randomness: every random draw of a training step is seeded from (run seed, step, purpose), so a
//! step's randomness is a pure function of its position in the run. That is what makes resume exact
//! without having to serialise libtorch's generator state.

use crate::error::{Error, Result};
use tch::Device;

/// Parses `cpu`, `cuda` or `cuda:N` and checks that the device exists.
pub fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim();
    let device = match spec {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        s if s.starts_with("cuda:") => {
            let n: usize = s[5..].parse().map_err(|_| Error::Device {
                device: s.to_string(),
                msg: "expected cpu, cuda or cuda:N".into(),
            })?;
            Device::Cuda(n)
        }
        other => {
            return Err(Error::Device {
                device: other.to_string(),
                msg: "expected cpu, cuda or cuda:N".into(),
            })
        }
    };
    if let Device::Cuda(n) = device {
        let count = tch::Cuda::device_count() as usize;
        if count == 0 {
            return Err(Error::Device {
                device: spec.to_string(),
                msg: "no CUDA GPU is visible to libtorch (use --device cpu)".into(),
            });
        }
        if n >= count {
            return Err(Error::Device {
                device: spec.to_string(),
                msg: format!("only {count} CUDA device(s) are visible"),
            });
        }
    }
    Ok(device)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_and_rejects_garbage() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("tpu")
            .unwrap_err()
            .to_string()
            .contains("expected cpu"));
        assert!(parse_device("cuda:x").is_err());
        if tch::Cuda::device_count() == 0 {
            let e = parse_device("cuda").unwrap_err().to_string();
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
