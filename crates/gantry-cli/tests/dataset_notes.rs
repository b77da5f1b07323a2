//! What a data set notices while loading (a first image that is not square, and what
//! `data.transform` does with it) reaches the user from every training loop, as GAN training
//! reports it: one `gantry: warning:` line on stderr and one `"event": "note"` line in
//! metrics.jsonl per note, here for `gantry classify train` and a translation run.

mod common;

use common::gantry;
use std::path::Path;

/// `n` square `side`-pixel RGB images in `dir`, named `x000000.png`, ...
fn squares(dir: &Path, n: usize, side: usize, shade: f32) {
    let px: Vec<f32> = (0..n * 3 * side * side)
        .map(|i| (shade + 0.3 * ((i % 13) as f32 / 13.0 - 0.5)).clamp(-1.0, 1.0))
        .collect();
    gantry::data::image_io::save_images(&px, [n, 3, side, side], dir, "x").unwrap();
}

/// A `w` x `h` RGB image at `path`.
fn wide(path: &Path, w: u32, h: u32) {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 10) as u8, (y * 10) as u8, 99])
    })
    .save(path)
    .unwrap();
}

/// The run succeeded; its stderr has exactly one warning line containing `note`, and its
/// metrics.jsonl exactly one note event whose detail contains it.
fn noted_once(out: &std::process::Output, run: &Path, note: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains(note)).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("gantry: warning: "), "{err}");
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "note")
        .collect();
    assert_eq!(events.len(), 1, "{log}");
    assert!(
        events[0]["detail"].as_str().unwrap().contains(note),
        "{log}"
    );
}

#[test]
fn classify_train_reports_a_non_square_image_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    squares(&data.join("a"), 6, 8, -0.5);
    squares(&data.join("b"), 6, 8, 0.5);
    wide(&data.join("b/wide.png"), 12, 8);
    let run = dir.path().join("run");
    // Flips on: the training part and the validation part are two views of the folder, and
    // both meet wide.png; the note is still reported once.
    let out = gantry(&[
        "classify",
        "train",
        "--data",
        &format!("folder:{}", data.display()),
        "--model",
        "small",
        "--epochs",
        "2",
        "--out",
        run.to_str().unwrap(),
        "--set",
        "data.resolution=8",
        "--set",
        "data.workers=1",
        "--set",
        "data.hflip=true",
        "--set",
        "data.val_fraction=0.5",
        "--set",
        "train.batch_size=4",
        "--set",
        "train.threads=1",
        "--set",
        "train.tensorboard=false",
    ]);
    noted_once(&out, &run, "wide.png is 12x8, not square");
}

#[test]
fn translation_training_reports_a_non_square_image_once() {
    let dir = tempfile::tempdir().unwrap();
    for (part, shade) in [
        ("trainA", -0.6f32),
        ("trainB", 0.6),
        ("testA", -0.5),
        ("testB", 0.5),
    ] {
        squares(&dir.path().join(part), 3, 16, shade);
    }
    wide(&dir.path().join("trainA/wide.png"), 16, 24);
    let cfg = dir.path().join("t.toml");
    std::fs::write(
        &cfg,
        format!(
            "task = \"translate\"\n[data]\npath = {:?}\nresolution = 16\nworkers = 1\n\
             [model]\nch = 2\nn_res = 1\nlight = true\nglobal_layers = 4\nlocal_layers = 3\n\
             [train]\nsteps = 3\nbatch_size = 2\nlog_every = 1\nthreads = 1\ntensorboard = false\n",
            dir.path().display().to_string()
        ),
    )
    .unwrap();
    let run = dir.path().join("run");
    let out = gantry(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    noted_once(&out, &run, "wide.png is 16x24, not square");
}
