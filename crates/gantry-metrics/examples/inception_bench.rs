//! Inception feature-extraction throughput of gantry, the half of the benchmark that
//! tests/pyref/metrics_bench.py runs against pytorch-fid (which starts this binary).
//!
//! Usage: inception_bench WEIGHTS SIZE N THREADS [BATCH]
//! Prints one JSON line: images/s over N random uint8 SIZE x SIZE images after one untimed
//! warm-up batch, and the process's peak RSS (VmHWM).

use std::time::Instant;

use gantry_metrics::{FeatureExtractor, InceptionExtractor, Preprocessing};
use tch::{Device, Kind, Tensor};

fn vm_hwm_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        return Err("usage: inception_bench WEIGHTS SIZE N THREADS [BATCH]".into());
    }
    let weights = std::path::PathBuf::from(&args[1]);
    let size: i64 = args[2].parse()?;
    let n: i64 = args[3].parse()?;
    let threads: i32 = args[4].parse()?;
    let batch: usize = args.get(5).map(|b| b.parse()).transpose()?.unwrap_or(50);
    tch::set_num_threads(threads);
    tch::manual_seed(0);

    let mut ex = InceptionExtractor::load(&weights, Device::Cpu, Preprocessing::PytorchFid)?;
    ex.batch_size = batch;
    let images = Tensor::randint(256, [n, 3, size, size], (Kind::Uint8, Device::Cpu));
    let warm = images.narrow(0, 0, (batch as i64).min(n));
    ex.extract(&warm)?;

    let t = Instant::now();
    let f = ex.extract(&images)?;
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(f.pool.size(), [n, 2048]);
    println!(
        "{{\"tool\": \"gantry\", \"size\": {size}, \"n\": {n}, \"threads\": {}, \
         \"images_per_s\": {:.3}, \"seconds\": {secs:.3}, \"vm_hwm_kib\": {}}}",
        tch::get_num_threads(),
        n as f64 / secs,
        vm_hwm_kib().unwrap_or(0)
    );
    Ok(())
}
