//! TensorBoard event files, read back with TensorBoard's own reader (`tests/pyref/
//! tensorboard_read.py`, EventAccumulator): every scalar of metrics.jsonl at its step with its
//! value, the sample grids, the configuration; after a resume neither duplicated nor lost steps;
//! a 2-process job's rank 0 alone writes; classify and translate runs too; the off switch.

mod common;

use common::gantry;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What TensorBoard sees in a run directory.
fn tensorboard(run: &Path) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var_os("GANTRY_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    let out = std::process::Command::new(python)
        .arg(root.join("tests/pyref/tensorboard_read.py"))
        .arg(run)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every numeric value of every metrics.jsonl line is a TensorBoard scalar at that step, once,
/// with that value (as f32); TensorBoard has nothing else.
fn scalars_match_the_log(run: &Path, tb: &Value) {
    let mut want: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
    for row in gantry::rundir::log::read(&run.join("metrics.jsonl")).unwrap() {
        if row.get("event").is_some() {
            continue;
        }
        let step = row["step"].as_u64().unwrap();
        for (k, v) in row.as_object().unwrap() {
            if k == "step" {
                continue;
            }
            if let Some(v) = v.as_f64() {
                want.entry(k.clone()).or_default().push((step, v));
            }
        }
    }
    let got = tb["scalars"].as_object().unwrap();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{}: tags",
        run.display()
    );
    for (tag, series) in &want {
        let seen: Vec<(u64, f64)> = got[tag]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
            .collect();
        assert_eq!(seen.len(), series.len(), "{tag}: {seen:?} vs {series:?}");
        for ((s1, v1), (s2, v2)) in seen.iter().zip(series) {
            assert_eq!(s1, s2, "{tag}");
            // TensorBoard keeps f32; both sides pass through JSON text.
            assert!(
                (*v1 as f32 == *v2 as f32) || (v1.is_nan() && v2.is_nan()),
                "{tag} at {s1}: {v1} vs {v2}"
            );
        }
    }
}

const GAN: &[&str] = &[
    "--set",
    "data.size=64",
    "--set",
    "data.resolution=8",
    "--set",
    "model.ngf=4",
    "--set",
    "model.ndf=4",
    "--set",
    "model.z_dim=8",
    "--set",
    "train.batch_size=8",
    "--set",
    "train.threads=1",
    "--set",
    "data.workers=1",
    "--set",
    "train.log_every=1",
    "--set",
    "train.grid=4",
    "--set",
    "train.sample_every=2",
    "--set",
    "train.checkpoint_every=2",
];

#[test]
fn gan_runs_resumed_runs_and_two_process_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut args = vec![
        "train",
        "--out",
        run.to_str().unwrap(),
        "--set",
        "train.steps=4",
    ];
    args.extend_from_slice(GAN);
    ok(&gantry(&args));
    let tb = tensorboard(&run);
    scalars_match_the_log(&run, &tb);
    let images: Vec<u64> = tb["images"]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[0].as_u64().unwrap())
        .collect();
    assert_eq!(images, [2, 4]);
    assert_eq!(tb["images"]["samples"][0][1].as_u64(), Some(2 * 8 + 6)); // 2x2 grid of 8x8
    let config = tb["texts"]["config"][0][1].as_str().unwrap();
    assert!(
        config.contains("[train]") && config.contains("steps = 4"),
        "{config}"
    );

    // A crash after step 4 was logged but before its checkpoint: the resume continues from
    // step 2 and TensorBoard shows steps 1..6 once each.
    let ckpts = gantry::rundir::checkpoint::list(&run);
    std::fs::remove_dir_all(ckpts.last().unwrap()).unwrap();
    ok(&gantry(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--set",
        "train.steps=6",
    ]));
    let tb = tensorboard(&run);
    assert_eq!(tb["files"].as_u64(), Some(1));
    scalars_match_the_log(&run, &tb);
    let steps: Vec<u64> = tb["scalars"]["loss/d/adv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[0].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6]);

    // Two processes: rank 0 writes one event file; the off switch writes none.
    if gantry::dist::has_backend(false) {
        let two = dir.path().join("two");
        let mut args = vec![
            "train",
            "--nproc",
            "2",
            "--out",
            two.to_str().unwrap(),
            "--set",
            "train.steps=2",
        ];
        args.extend_from_slice(GAN);
        ok(&gantry(&args));
        let tb = tensorboard(&two);
        assert_eq!(tb["files"].as_u64(), Some(1));
        scalars_match_the_log(&two, &tb);
    }
    let off = dir.path().join("off");
    let mut args = vec![
        "train",
        "--out",
        off.to_str().unwrap(),
        "--set",
        "train.steps=2",
        "--set",
        "train.tensorboard=false",
    ];
    args.extend_from_slice(GAN);
    ok(&gantry(&args));
    assert!(gantry::rundir::tensorboard::event_files(&off).is_empty());
}

#[test]
fn classify_and_translate_runs() {
    let dir = tempfile::tempdir().unwrap();
    let clf = dir.path().join("clf");
    ok(&gantry(&[
        "classify",
        "train",
        "--out",
        clf.to_str().unwrap(),
        "--epochs",
        "1",
        "--data",
        "shapes",
        "--model",
        "small",
        "--set",
        "data.resolution=8",
        "--set",
        "data.limit=96",
        "--set",
        "train.batch_size=16",
        "--set",
        "train.threads=1",
        "--set",
        "train.log_every=1",
        "--set",
        "data.workers=1",
    ]));
    let tb = tensorboard(&clf);
    scalars_match_the_log(&clf, &tb);
    assert!(tb["texts"]["config"]
        .as_array()
        .is_some_and(|c| c.len() == 1));

    let tr = dir.path().join("tr");
    ok(&gantry(&[
        "train",
        "--config",
        "ugatit-light-64",
        "--out",
        tr.to_str().unwrap(),
        "--set",
        "train.steps=2",
        "--set",
        "train.log_every=1",
        "--set",
        "train.sample_every=1",
        "--set",
        "data.resolution=16",
        "--set",
        "model.ch=2",
        "--set",
        "model.n_res=1",
        "--set",
        "model.global_layers=4",
        "--set",
        "model.local_layers=3",
        "--set",
        "train.threads=1",
        "--set",
        "data.workers=1",
        "--set",
        "eval.every=0",
    ]));
    let tb = tensorboard(&tr);
    scalars_match_the_log(&tr, &tb);
    assert_eq!(tb["images"]["samples"].as_array().map(Vec::len), Some(2));
}
