//! Progress when stderr is not a terminal (a log file, a pipe): plain lines, no carriage returns
//! or terminal codes, a line when each phase starts and one when it ends, counts that only go
//! up; the results on stdout untouched.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn gantry_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run gantry");
    assert!(
        out.status.success(),
        "gantry {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A labelled folder: `classes` sub-folders of `n` 8x8 images each.
fn labelled(dir: &Path, classes: usize, n: usize) {
    for c in 0..classes {
        let px: Vec<f32> = (0..n * 3 * 8 * 8)
            .map(|i| (c as f32 - 0.5) * 0.8 + 0.2 * ((i % 13) as f32 / 13.0 - 0.5))
            .collect();
        gantry::data::image_io::save_images(&px, [n, 3, 8, 8], &dir.join(format!("c{c}")), "x")
            .unwrap();
    }
}

/// The plain progress lines of `phase` (`eval generated`): (done, total) of each, in order.
fn counts(stderr: &str, phase: &str) -> Vec<(u64, u64)> {
    let head = format!("gantry: {phase}: ");
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix(&head))
        .filter_map(|rest| {
            let (done, rest) = rest.split_once('/')?;
            let total = rest.split_whitespace().next()?;
            Some((done.parse().ok()?, total.parse().ok()?))
        })
        .collect()
}

fn assert_plain(stderr: &str) {
    assert!(
        !stderr.contains('\r') && !stderr.contains('\u{1b}'),
        "terminal codes on a pipe: {stderr:?}"
    );
}

#[test]
fn eval_fid_sample_and_train_on_a_pipe_write_plain_progress_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let fast = [("GANTRY_PROGRESS_EVERY", "0.05")];

    let run = d.join("run");
    let out = gantry_env(
        &[
            "train",
            "--out",
            &s(&run),
            "--set",
            "data.size=64",
            "--set",
            "data.resolution=8",
            "--set",
            "model.ngf=4",
            "--set",
            "model.ndf=4",
            "--set",
            "train.batch_size=8",
            "--set",
            "train.threads=1",
            "--set",
            "train.steps=3",
        ],
        &fast,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_plain(&err);
    let train = counts(&err, "train");
    assert_eq!(train.first(), Some(&(0, 3)), "{err}");

    let folder = d.join("labelled");
    labelled(&folder, 2, 8);
    let clf = d.join("clf");
    gantry_env(
        &[
            "classifier",
            "train",
            "--data",
            &format!("folder:{}", folder.display()),
            "--resolution",
            "8",
            "--epochs",
            "1",
            "--out",
            &s(&clf),
        ],
        &fast,
    );
    let features = format!("classifier:{}", clf.display());
    let cache = d.join("cache");
    let env = [
        ("GANTRY_PROGRESS_EVERY", "0.05"),
        ("GANTRY_CACHE", cache.to_str().unwrap()),
    ];
    let out = gantry_env(
        &[
            "eval",
            "--checkpoint",
            &s(&run),
            "--features",
            &features,
            "--data",
            "shapes",
            "--metrics",
            "fid",
            "--n",
            "5000",
            "--real-n",
            "3000",
        ],
        &env,
    );
    let (stdout, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_plain(&err);
    assert!(
        stdout.starts_with("classifier_fid") && !stdout.contains("gantry:"),
        "{stdout}"
    );
    for (phase, total) in [("eval real", 3000), ("eval generated", 5000)] {
        let c = counts(&err, phase);
        assert!(!c.is_empty(), "no line for {phase}: {err}");
        assert!(c.iter().all(|&(_, t)| t == total), "{err}");
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0), "{err}");
        assert!(
            err.contains(&format!("gantry: {phase}: {total} images in ")),
            "no end line for {phase}: {err}"
        );
    }
    assert_eq!(counts(&err, "eval generated")[0], (0, 5000), "{err}");

    let out = gantry_env(
        &[
            "fid",
            &s(&folder.join("c0")),
            &s(&folder.join("c1")),
            "--features",
            &features,
        ],
        &fast,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_plain(&err);
    for side in ["c0", "c1"] {
        let phase = format!("fid {}", folder.join(side).display());
        assert!(
            err.contains(&format!("gantry: {phase}: 8 images in ")),
            "{err}"
        );
    }

    let samples = d.join("samples");
    let out = gantry_env(
        &[
            "sample",
            "--checkpoint",
            &s(&run),
            "--n",
            "600",
            "--out",
            &s(&samples),
        ],
        &fast,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_plain(&err);
    assert_eq!(counts(&err, "sample").first(), Some(&(0, 600)), "{err}");
    assert!(err.contains("gantry: sample: 600 images in "), "{err}");
    // A grid is one batch: no progress at all.
    let out = gantry_env(
        &[
            "sample",
            "--checkpoint",
            &s(&run),
            "--out",
            &s(&d.join("grid.png")),
        ],
        &fast,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("gantry: wrote {}", d.join("grid.png").display())
    );
}
