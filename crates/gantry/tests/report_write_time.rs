//! How long `report::write` takes on a long run: 5,000 logged steps of a GAN run with both
//! plug-ins (the keys a real run logs: losses, D outputs, gradient norms, AdaptiveMix and FQ
//! statistics, throughput), evaluations every 500 steps, sample pictures. Prints the time (run
//! with `--nocapture` to see it); asserts only that the page is whole.

use std::fmt::Write as _;
use std::time::Instant;

#[test]
fn report_write_on_5000_logged_steps() {
    let dir = tempfile::tempdir().unwrap();
    // GANTRY_REPORT_KEEP=DIR: write the run there, to look at its page.
    let kept = std::env::var("GANTRY_REPORT_KEEP")
        .ok()
        .map(std::path::PathBuf::from);
    let run = kept.as_deref().unwrap_or(dir.path());
    std::fs::create_dir_all(run).unwrap();
    std::fs::write(run.join("config.toml"), "[train]\nsteps = 5000\n").unwrap();
    let keys = [
        "am/cos",
        "am/lambda",
        "am/loss/fake",
        "am/loss/g",
        "am/loss/real",
        "d/fake",
        "d/real",
        "fq/b8/dead",
        "fq/b8/loss_fake",
        "fq/b8/loss_g",
        "fq/b8/loss_real",
        "fq/b8/perplexity",
        "grad/d",
        "grad/g",
        "images_per_s",
        "loss/d/adv",
        "loss/d/plugins",
        "loss/g/adv",
        "loss/g/plugins",
    ];
    let mut log = String::new();
    let mut x = 0x2545f4914f6cdd1du64;
    let mut noise = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    for step in 1..=5000u64 {
        let _ = write!(
            log,
            "{{\"step\":{step},\"kimg\":{},\"wall_s\":{}",
            step * 64,
            step as f64 * 0.05
        );
        for (i, k) in keys.iter().enumerate() {
            let scale = 10f64.powi(i as i32 % 4 - 2);
            let v = scale * (1.0 + 0.5 * noise()) * (1.0 + 1000.0 / (step as f64 + 100.0));
            let _ = write!(log, ",\"{k}\":{v}");
        }
        log.push_str("}\n");
        if step % 500 == 0 {
            let f = 200.0 / (step as f64).sqrt();
            let _ = writeln!(
                log,
                "{{\"step\":{step},\"eval/fid\":{f},\"eval/kid\":{},\"eval/kid_std\":{},\"eval/is\":{},\"eval/is_std\":0.1,\"eval/precision\":{},\"eval/recall\":{}}}",
                f / 1000.0,
                f / 10000.0,
                2.0 + step as f64 / 1000.0,
                0.5 + noise() * 0.2,
                0.3 + noise() * 0.2
            );
            let _ = writeln!(log, "{{\"step\":{step},\"samples/diversity\":{}}}", noise());
        }
    }
    std::fs::write(run.join("metrics.jsonl"), &log).unwrap();
    std::fs::create_dir(run.join("samples")).unwrap();
    let grid = image::RgbImage::from_fn(264, 264, |i, j| {
        image::Rgb([(i % 256) as u8, (j % 256) as u8, 128])
    });
    for step in (500..=5000).step_by(500) {
        grid.save(run.join(format!("samples/step-{step:07}.png")))
            .unwrap();
    }
    let mut times = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        let index = gantry::report::write(run).unwrap();
        times.push(t0.elapsed().as_secs_f64());
        let html = std::fs::read_to_string(index).unwrap();
        assert!(html.ends_with("</html>\n"));
        assert!(html.contains("eval-fid.png?v="));
    }
    let charts = std::fs::read_dir(run.join("report")).unwrap().count() - 1;
    eprintln!(
        "report::write, 5000 logged steps x {} keys, {charts} charts: {:.3} s, {:.3} s, {:.3} s ({} threads available)",
        keys.len() + 2,
        times[0],
        times[1],
        times[2],
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
}
