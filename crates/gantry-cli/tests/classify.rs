//! `gantry classify` end to end on the built-in shapes (8x8, a few steps): train, eval, attack,
//! OOD; exact resume; and bad input as one line with a non-zero exit.

mod common;

use common::{assert_user_error, gantry};

const TINY: &[&str] = &[
    "--data",
    "shapes",
    "--model",
    "small",
    "--set",
    "data.resolution=8",
    "--set",
    "data.limit=96",
    "--set",
    "data.workers=1",
    "--set",
    "train.batch_size=16",
    "--set",
    "train.threads=1",
    "--set",
    "train.schedule=constant",
    "--set",
    "train.lr=0.05",
];

fn train(out: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["classify", "train", "--out", out];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    gantry(&args)
}

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn model_bytes(run: &std::path::Path) -> Vec<u8> {
    let ck = run.join("checkpoints");
    let mut names: Vec<_> = std::fs::read_dir(&ck)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ckpt-"))
        .collect();
    names.sort();
    std::fs::read(ck.join(names.last().unwrap()).join("model.safetensors")).unwrap()
}

#[test]
fn train_eval_attack_ood_and_exact_resume() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    for mode in ["ce", "mixup", "adaptivemix"] {
        let r = dir.path().join(mode);
        let out = ok(&train(
            r.to_str().unwrap(),
            &["--epochs", "1", "--mode", mode],
        ));
        assert!(out.contains("best validation accuracy"), "{out}");
        assert!(r.join("checkpoints/best/meta.json").exists());
    }
    // 2 epochs in one go = 1 epoch, then resumed to 2.
    ok(&train(run_s, &["--epochs", "2", "--mode", "adaptivemix"]));
    let split = dir.path().join("split");
    ok(&train(
        split.to_str().unwrap(),
        &["--epochs", "1", "--mode", "adaptivemix"],
    ));
    ok(&gantry(&[
        "classify",
        "train",
        "--resume",
        split.to_str().unwrap(),
        "--epochs",
        "2",
    ]));
    assert!(
        model_bytes(&run) == model_bytes(&split),
        "resumed run differs"
    );
    let log = std::fs::read_to_string(split.join("metrics.jsonl")).unwrap();
    assert!(log.contains("val/acc"), "{log}");

    let out = ok(&gantry(&["classify", "eval", "--run", run_s]));
    assert!(out.starts_with("test accuracy "), "{out}");
    let out = ok(&gantry(&[
        "classify",
        "attack",
        "--run",
        run_s,
        "--n",
        "32",
        "--attacks",
        "fgsm,pgd-3",
    ]));
    for row in ["(32 test images", "| clean |", "| fgsm |", "| pgd-3 |"] {
        assert!(out.contains(row), "{out}");
    }
    let out = ok(&gantry(&[
        "classify",
        "ood",
        "--run",
        run_s,
        "--ood",
        "noise:uniform",
        "--ood",
        "shapes#0",
        "--n",
        "64",
    ]));
    for row in [
        "| noise:uniform | principal |",
        "| shapes#0 | energy |",
        "| noise:uniform | msp |",
    ] {
        assert!(out.contains(row), "{out}");
    }

    // Bad input.
    assert_user_error(&train(run_s, &["--epochs", "1"]), "already holds a run");
    let fresh = dir.path().join("fresh");
    let fresh_s = fresh.to_str().unwrap();
    assert_user_error(
        &train(fresh_s, &["--classes", "0-40"]),
        "class 3 does not exist",
    );
    assert_user_error(&train(fresh_s, &["--classes", "zero"]), "not a class list");
    assert_user_error(
        &train(
            fresh_s,
            &["--set", "model.backbone=wrn", "--set", "model.depth=15"],
        ),
        "6n + 4",
    );
    assert_user_error(&train(fresh_s, &["--set", "train.lr=-1"]), "train.lr");
    assert_user_error(
        &train(fresh_s, &["--set", "data.val_fraction=1"]),
        "data.val_fraction",
    );
    assert_user_error(&train(fresh_s, &["--set", "data.spec=gmm-8"]), "gmm");
    let mnist = common::repo_root().join("../shared/data/mnist");
    let mnist_ood = format!("mnist:{}#5-9", mnist.display());
    assert_user_error(
        &gantry(&["classify", "ood", "--run", run_s, "--ood", &mnist_ood]),
        "the classifier takes 3x8x8",
    );
    assert_user_error(
        &gantry(&["classify", "ood", "--run", run_s, "--ood", "noise:pink"]),
        "unknown noise 'pink'",
    );
    assert_user_error(
        &gantry(&["classify", "attack", "--run", run_s, "--attacks", "pgd-x"]),
        "pgd-x",
    );
    assert_user_error(
        &gantry(&["classify", "eval", "--run", fresh_s]),
        "classifier not found",
    );
    assert!(!fresh.join("checkpoints").exists());
    let ckpt = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("ckpt-")
        })
        .unwrap();
    assert_user_error(
        &gantry(&["classify", "train", "--resume", ckpt.to_str().unwrap()]),
        "is a checkpoint; give its run directory",
    );
    assert_user_error(
        &gantry(&[
            "classify",
            "train",
            "--resume",
            run_s,
            "--set",
            "train.lr=0.5",
        ]),
        "on resume only train.epochs",
    );
    assert_user_error(
        &gantry(&["classify", "bench", "--model", "small", "--resolution", "4"]),
        "--resolution: must be a power of two >= 8",
    );
}
