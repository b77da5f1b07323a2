//! How many times a training step reads a tensor's value to the host. On a GPU each read waits
//! for the queue to drain, so the loops read only through `gantry::util::read_*`, which count;
//! these tests pin the count of a step that does not log, so that reads cannot creep back.
//! (The counter is per thread; each test trains on its own.)

mod common;

use gantry::util::host_reads;
use gantry::RunConfig;
use tch::{Device, Kind, Tensor};

/// Reads made by `steps` calls of `step`, after `warmup` calls.
fn reads_over(warmup: usize, steps: usize, mut step: impl FnMut()) -> u64 {
    for _ in 0..warmup {
        step();
    }
    let before = host_reads();
    for _ in 0..steps {
        step();
    }
    host_reads() - before
}

fn gan_reads(cfg: RunConfig, warmup: usize, steps: usize) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let mut t = gantry::train::Trainer::new(cfg.setup(), dir.path()).unwrap();
    reads_over(warmup, steps, || {
        t.train_step().unwrap();
    })
}

/// DCGAN, fp32: the D phase's and the G phase's finiteness checks, one each.
#[test]
fn a_dcgan_step_reads_twice() {
    let _rng = common::rng_lock();
    let cfg = RunConfig::resolve(None, &common::tiny_sets(&["train.log_every=1000"])).unwrap();
    assert_eq!(gan_reads(cfg, 1, 4), 4 * 2);
}

/// DCGAN, fp16: the same two reads (loss and gradients of a phase checked in one read).
#[test]
fn an_fp16_dcgan_step_reads_twice() {
    let _rng = common::rng_lock();
    let sets = common::tiny_sets(&["train.log_every=1000", "train.precision=fp16"]);
    let cfg = RunConfig::resolve(None, &sets).unwrap();
    assert_eq!(gan_reads(cfg, 1, 4), 4 * 2);
}

/// StyleGAN2 + ADA over ADA's 4-step interval: per step the two checks and ADA's padding
/// margins for each batch it augments (the real and fake batches of D's phase, the fakes of G's:
/// the pad size depends on the drawn transforms, as in stylegan2-ada), plus one read of the
/// window's sums per interval when p adjusts. p itself stays on the host.
#[test]
fn a_stylegan2_ada_step_reads_its_checks_and_adas_margins() {
    let _rng = common::rng_lock();
    let sets = common::tiny_run_sets(&[
        "data.resolution=32",
        "model.channel_base=128",
        "model.channel_max=16",
        "model.z_dim=16",
        "model.w_dim=16",
        "ada.enabled=true",
        "ada.p=0.5",
        "ada.interval=4",
        "train.log_every=1000",
    ]);
    let cfg = RunConfig::resolve(Some("stylegan2-32-small"), &sets).unwrap();
    assert_eq!(gan_reads(cfg, 4, 8), 8 * (2 + 3) + 2);
}

/// U-GAT-IT: one finiteness check per phase; statistics only when asked for.
#[test]
fn a_ugatit_iteration_reads_twice() {
    let _rng = common::rng_lock();
    let sets: Vec<String> = [
        "data.a=shapes#0",
        "data.b=shapes#1",
        "data.resolution=16",
        "model.ch=2",
        "model.n_res=1",
        "model.light=true",
        "model.global_layers=4",
        "model.local_layers=3",
        "train.batch_size=2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cfg = gantry::translate::TranslateConfig::resolve(None, &sets).unwrap();
    let mut tr = gantry::translate::train::Translator::new(&cfg, 3, Device::Cpu).unwrap();
    let x = || Tensor::rand([2, 3, 16, 16], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let (a, b) = (x(), x());
    let mut i = 0;
    let reads = reads_over(1, 3, || {
        tr.step(i, &a, &b).unwrap();
        i += 1;
    });
    assert_eq!(reads, 3 * 2);
    let parts = tr.step(i, &a, &b).unwrap();
    let before = host_reads();
    let stats = tr.stats(&parts);
    assert_eq!(
        host_reads() - before,
        1,
        "a logging step reads its statistics at once"
    );
    assert!(stats.get("loss/d").is_some_and(f64::is_finite));
}

/// The classifier: one finiteness check per step; a logging step adds one read of its
/// statistics. Measured between two logging steps 3 steps apart, inside the first epoch.
#[test]
fn a_classifier_step_reads_once() {
    let _rng = common::rng_lock();
    let sets: Vec<String> = [
        "model.backbone=small",
        "data.resolution=8",
        "data.limit=400",
        "train.batch_size=16",
        "train.log_every=3",
        "train.epochs=1",
        "train.threads=1",
        "data.workers=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cfg = gantry::classify::ClassifyConfig::resolve(None, &sets).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut marks = Vec::new();
    gantry::classify::train(
        &cfg,
        &dir.path().join("run"),
        gantry::classify::Start::Fresh,
        &std::sync::atomic::AtomicBool::new(false),
        &mut |p| {
            if p.val_acc.is_none() {
                marks.push(host_reads());
            }
        },
    )
    .unwrap();
    assert!(marks.len() >= 3, "{marks:?}");
    for w in marks.windows(2) {
        assert_eq!(w[1] - w[0], 3 + 1, "{marks:?}");
    }
}
