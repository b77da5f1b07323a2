//! `gantry train` with a translation configuration (U-GAT-IT), then `gantry translate` on a
//! folder: outputs named as the inputs, `--details` rows, refusal to overwrite, bad input as one
//! line. The presets list and `--dry-run` know the translation presets.

mod common;

use common::{assert_user_error, gantry};
use std::path::Path;

fn layout(dir: &Path) {
    for (part, shade) in [
        ("trainA", -0.6f32),
        ("trainB", 0.6),
        ("testA", -0.5),
        ("testB", 0.5),
    ] {
        let imgs: Vec<f32> = (0..4 * 3 * 16 * 16)
            .map(|i| shade + 0.3 * ((i % 29) as f32 / 29.0 - 0.5))
            .collect();
        gantry::data::image_io::save_images(&imgs, [4, 3, 16, 16], &dir.join(part), "x").unwrap();
    }
}

#[test]
fn trains_from_a_file_and_translates_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    layout(dir.path());
    let cfg = dir.path().join("t.toml");
    std::fs::write(
        &cfg,
        format!(
            "task = \"translate\"\n[data]\npath = {:?}\nresolution = 16\nworkers = 1\n\
             [model]\nch = 2\nn_res = 1\nlight = true\nglobal_layers = 4\nlocal_layers = 3\n\
             [train]\nsteps = 2\nbatch_size = 2\nlog_every = 1\nthreads = 1\n",
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
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("trained 2 steps"), "{err}");
    assert!(run.join("samples/0000002.png").exists());

    // With KID on a classifier's features (trained on the two test folders as two classes):
    // evaluated at the end, logged, and the best checkpoint kept.
    let labelled = dir.path().join("labelled");
    std::fs::create_dir(&labelled).unwrap();
    for part in ["testA", "testB", "trainA", "trainB"] {
        let to = labelled.join(&part[part.len() - 1..]);
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(dir.path().join(part)).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(
                &f,
                to.join(format!(
                    "{part}-{}",
                    f.file_name().unwrap().to_string_lossy()
                )),
            )
            .unwrap();
        }
    }
    let clf = dir.path().join("clf");
    let o = gantry(&[
        "classifier",
        "train",
        "--data",
        &format!("folder:{}", labelled.display()),
        "--resolution",
        "16",
        "--epochs",
        "1",
        "--out",
        clf.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run_eval = dir.path().join("run-eval");
    let out = gantry(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run_eval.to_str().unwrap(),
        "--set",
        &format!("eval.features=classifier:{}", clf.display()),
        "--set",
        "eval.holdout=0.4",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("KID x 100: A->B"),
        "{err}"
    );
    let log = std::fs::read_to_string(run_eval.join("metrics.jsonl")).unwrap();
    assert!(
        log.contains("eval/kid_a2b") && log.contains("eval/kid_b2a") && log.contains("\"wall_s\""),
        "{log}"
    );
    // The best checkpoint is chosen on images held out of trainA/trainB; the test split gives
    // the final numbers only.
    let rows = gantry::rundir::log::read(&run_eval.join("metrics.jsonl")).unwrap();
    let last = |k: &str| rows.iter().rev().find_map(|r| r.get(k)?.as_f64()).unwrap();
    let best: serde_json::Value = serde_json::from_slice(
        &std::fs::read(run_eval.join("checkpoints/best/best.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(best["value"].as_f64().unwrap(), last("eval/kid"), "{log}");
    assert_ne!(last("eval/kid"), last("eval/test_kid"), "{log}");
    // Too few images to hold out for KID: refused before training.
    assert_user_error(
        &gantry(&[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            dir.path().join("run-few").to_str().unwrap(),
            "--set",
            &format!("eval.features=classifier:{}", clf.display()),
        ]),
        "eval.holdout: holds out 1 image(s) of domain A (training)",
    );
    // A missing classifier is refused before training starts.
    assert_user_error(
        &gantry(&[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            dir.path().join("run-x").to_str().unwrap(),
            "--set",
            "eval.features=classifier:/no/such/run",
        ]),
        "classifier not found",
    );

    let dest = dir.path().join("out");
    let test_a = dir.path().join("testA");
    let t = |extra: &[&str]| {
        let mut args = vec![
            "translate",
            "--checkpoint",
            run.to_str().unwrap(),
            "--in",
            test_a.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        gantry(&args)
    };
    let o = t(&["--out", dest.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for i in 0..4 {
        let img = image::open(dest.join(format!("x{i:06}.png"))).unwrap();
        assert_eq!((img.width(), img.height()), (16, 16));
    }
    // Again: refused without --force; with --details, four panels side by side, B->A.
    assert_user_error(&t(&["--out", dest.to_str().unwrap()]), "pass --force");
    let o = t(&[
        "--out",
        dest.to_str().unwrap(),
        "--force",
        "--details",
        "--direction",
        "b2a",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(image::open(dest.join("x000000.png")).unwrap().width(), 64);
    // Bad input: a missing folder, a GAN run, a checkpoint that does not exist.
    let missing = dir.path().join("nope");
    assert_user_error(
        &gantry(&[
            "translate",
            "--checkpoint",
            run.to_str().unwrap(),
            "--in",
            missing.to_str().unwrap(),
            "--out",
            dest.to_str().unwrap(),
        ]),
        "nope",
    );
}

#[test]
fn presets_and_dry_run_know_translation() {
    let out = gantry(&["presets"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for p in ["ugatit-light-64", "ugatit-light-64-fq", "ugatit-256"] {
        assert!(text.contains(p), "{text}");
    }
    let out = gantry(&["train", "--config", "ugatit-light-64-fq", "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("task = \"translate\"") && text.contains("128,\n"),
        "{text}"
    );
    assert_user_error(
        &gantry(&["train", "--config", "ugatit-256", "--dry-run"]),
        "data.a: required",
    );
    assert_user_error(
        &gantry(&[
            "train",
            "--config",
            "ugatit-light-64",
            "--set",
            "fq.enabled=true",
            "--set",
            "fq.layers=[\"b64\"]",
            "--dry-run",
        ]),
        "fq.layers",
    );
}
