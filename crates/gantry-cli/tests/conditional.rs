//! Class conditioning through `gantry sample --class K`: every conditional generator (BigGAN,
//! conditional StyleGAN2 and R3GAN, trained here or imported) draws with it, and a BigGAN trained
//! on the built-in shapes really draws class K, as a classifier trained on the shapes judges it
//! (fixtures from tests/fixtures/conditional/make.sh). Also: a labelled stylegan2-ada zip written
//! by `gantry dataset` from non-square images trains a conditional generator.

mod common;

use common::{assert_user_error, gantry, repo_root};
use std::path::{Path, PathBuf};
use std::process::Output;

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `gantry sample --checkpoint CKPT --seeds SEEDS --trunc 0.7 --class K` into a directory:
/// the images as `[C, H, W]` floats in [0, 1], in seed order.
fn sample_class(ckpt: &Path, seeds: &str, class: i64, out: &Path) -> Vec<(Vec<f32>, [i64; 3])> {
    ok(&gantry(&[
        "sample",
        "--checkpoint",
        s(ckpt),
        "--seeds",
        seeds,
        "--trunc",
        "0.7",
        "--class",
        &class.to_string(),
        "--out",
        s(out),
    ]));
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            let img = image::open(f).unwrap();
            let (w, h) = (img.width() as usize, img.height() as usize);
            let (c, raw) = match img.color().channel_count() {
                1 => (1, img.to_luma8().into_raw()),
                _ => (3, img.to_rgb8().into_raw()),
            };
            let mut chw = vec![0f32; c * h * w];
            for (p, px) in raw.chunks_exact(c).enumerate() {
                for (ch, v) in px.iter().enumerate() {
                    chw[ch * h * w + p] = f32::from(*v) / 255.0;
                }
            }
            (chw, [c as i64, h as i64, w as i64])
        })
        .collect()
}

#[test]
fn class_k_samples_are_classified_as_class_k() {
    let fixtures = repo_root().join("tests/fixtures/conditional");
    let generator = fixtures.join("biggan-shapes16");
    let clf = gantry::classify::load(
        &fixtures.join("classifier-shapes16"),
        Some(tch::Device::Cpu),
    )
    .unwrap();
    assert_eq!((clf.classes, clf.shape), (3, [3, 16, 16]));
    // The judge itself: right on real shapes (0 circle, 1 square, 2 triangle).
    let (acc, n) = gantry::classify::evaluate(&clf, None, 300).unwrap();
    assert!(acc > 0.95, "classifier accuracy {acc} on {n} real shapes");

    let dir = tempfile::tempdir().unwrap();
    let seeds = "0-29";
    let mut per_class = Vec::new();
    for k in 0..3i64 {
        let images = sample_class(&generator, seeds, k, &dir.path().join(k.to_string()));
        assert_eq!(images.len(), 30);
        let flat: Vec<f32> = images.iter().flat_map(|(x, _)| x.clone()).collect();
        let [c, h, w] = images[0].1;
        let x = tch::Tensor::from_slice(&flat).view([30, c, h, w]);
        let predicted = tch::no_grad(|| clf.net.forward(&x, false)).argmax(1, false);
        let mut votes = [0usize; 3];
        for p in Vec::<i64>::try_from(predicted).unwrap() {
            votes[p as usize] += 1;
        }
        eprintln!("--class {k}: votes (circle, square, triangle) {votes:?}");
        per_class.push((flat, votes));
    }
    let shapes = gantry::data::SHAPE_CLASSES;
    for (k, (_, votes)) in per_class.iter().enumerate() {
        let majority = (0..3).max_by_key(|&j| votes[j]).unwrap();
        // Chance is 10 of 30; the fixture scores about 29.
        assert!(
            majority == k && votes[k] >= 20,
            "--class {k} ({}): the classifier's votes (circle, square, triangle) are {votes:?}",
            shapes[k]
        );
    }
    // The same seeds, another class: other images (the label reaches the generator).
    assert_ne!(per_class[0].0, per_class[2].0);
}

/// Trains `preset` with `sets` for 2 steps at 16x16 on the labelled shapes into `run`.
fn train_tiny(run: &Path, preset: &str, sets: &[&str]) {
    let mut args = vec!["train", "--config", preset, "--out", s(run)];
    for kv in [
        "data.kind=shapes",
        "data.labels=true",
        "data.resolution=16",
        "data.size=32",
        "data.workers=1",
        "train.steps=2",
        "train.batch_size=4",
        "train.threads=1",
        "train.tensorboard=false",
    ]
    .iter()
    .chain(sets)
    {
        args.extend(["--set", kv]);
    }
    let err = ok(&gantry(&args));
    assert!(err.contains("trained 2 steps"), "{err}");
}

/// `--seeds 0-7 --trunc 0.7 --class 2` writes a grid; the same seeds differ between classes 0
/// and 2; class 3 of a 3-class generator is refused in one line.
fn samples_by_class(ckpt: &Path, tmp: &Path, name: &str) {
    let grid = tmp.join(format!("{name}.png"));
    let args = |class: &str, out: &Path| {
        ok(&gantry(&[
            "sample",
            "--checkpoint",
            s(ckpt),
            "--seeds",
            "0-7",
            "--trunc",
            "0.7",
            "--class",
            class,
            "--out",
            s(out),
        ]))
    };
    args("2", &grid);
    assert!(image::open(&grid).is_ok(), "{name}: no grid");
    let two = sample_class(ckpt, "0-7", 2, &tmp.join(format!("{name}-2")));
    let zero = sample_class(ckpt, "0-7", 0, &tmp.join(format!("{name}-0")));
    assert_eq!((two.len(), zero.len()), (8, 8), "{name}");
    for (i, (a, b)) in two.iter().zip(&zero).enumerate() {
        assert_ne!(
            a.0, b.0,
            "{name}: seed {i} draws the same image for classes 2 and 0"
        );
    }
    let out = gantry(&[
        "sample",
        "--checkpoint",
        s(ckpt),
        "--seeds",
        "0-7",
        "--class",
        "3",
        "--out",
        s(&tmp.join(format!("{name}-3.png"))),
    ]);
    assert_user_error(&out, "--class: 3 is not a class of this generator (0 to 2)");
}

#[test]
fn sample_class_works_for_every_conditional_generator() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path();
    // Trained here (2 steps): BigGAN, conditional StyleGAN2, conditional R3GAN.
    for (name, preset, sets) in [
        (
            "biggan",
            "biggan-cifar",
            &["model.ngf=8", "model.ndf=8"][..],
        ),
        (
            "stylegan2",
            "stylegan2-32-small",
            &[
                "model.conditional=true",
                "model.channel_base=256",
                "model.channel_max=32",
            ][..],
        ),
        ("r3gan", "r3gan-small", &["model.conditional=true"][..]),
    ] {
        let run = tmp.join(name);
        train_tiny(&run, preset, sets);
        samples_by_class(&run, tmp, name);
    }
    // Imported from the official code's network pickles and BigGAN-PyTorch weights (3 classes).
    let interop = repo_root().join("tests/fixtures/interop");
    for (name, file) in [
        ("sg2ada-pkl", "sg2/sg2ada-cond.pkl"),
        ("r3gan-pkl", "sg2/r3gan-cond.pkl"),
        ("biggan-pth", "biggan/fq_c10"),
    ] {
        samples_by_class(&interop.join(file), tmp, name);
    }
    // An unconditional generator refuses a class.
    let out = gantry(&[
        "sample",
        "--checkpoint",
        s(&interop.join("sg2/sg2ada-uncond.pkl")),
        "--seeds",
        "0-7",
        "--class",
        "2",
        "--out",
        s(&tmp.join("uncond.png")),
    ]);
    assert_user_error(&out, "--class: this generator is not class-conditional");
}

#[test]
fn a_labelled_zip_from_gantry_dataset_trains_a_conditional_generator() {
    // Non-square images with dataset.json labels (3 classes), the fixture whose zip
    // stylegan2-ada's own loader reads (crates/gantry-data/tests/dataset_tool.rs).
    let src = repo_root().join("crates/gantry-data/tests/fixtures/dataset_tool/src");
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("shapes.zip");
    let out = gantry(&[
        "dataset",
        "--source",
        s(&src),
        "--dest",
        s(&zip),
        "--resolution",
        "16",
        "--transform",
        "center-crop",
    ]);
    let err = ok(&out);
    assert!(err.contains("kept 5 of 5 images"), "{err}");
    let run = dir.path().join("run");
    let mut args = vec!["train", "--config", "biggan-cifar", "--out", s(&run)];
    let path = format!("data.path={}", s(&zip));
    for kv in [
        "data.kind=zip",
        &path,
        "data.labels=true",
        "data.resolution=16",
        "data.workers=1",
        "model.ngf=8",
        "model.ndf=8",
        "train.steps=3",
        "train.batch_size=4",
        "train.threads=1",
        "train.tensorboard=false",
    ] {
        args.extend(["--set", kv]);
    }
    let err = ok(&gantry(&args));
    assert!(err.contains("trained 3 steps"), "{err}");
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("kind = \"zip\""), "{config}");
    // The generator has the zip's three classes.
    samples_by_class(&run, dir.path(), "zip");
}
