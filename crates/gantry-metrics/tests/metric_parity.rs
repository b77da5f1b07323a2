//! FID, KID, IS and precision/recall against pytorch-fid and torch-fidelity on random features
//! (tests/pyref/metrics_stats.py), and pytorch-fid's statistics files in both directions.

mod common;

use common::{assert_rel, json, npy, pyref, TempDir};
use gantry_metrics::{
    frechet_distance, frechet_distance_eps, inception_score, kernel_inception_distance,
    kid_subsets, kid_with_subsets, precision_recall, FeatureSet, KidOptions, MetricsError,
    MetricsWarning, Stats, FID_EPS, IS_SEED, IS_SPLITS, PR_NEIGHBOURS,
};

fn stats(dir: &TempDir, name: &str) -> Stats {
    Stats::from_features(&npy(dir.join(&format!("fid_{name}.npy")))).unwrap()
}

#[test]
fn fid_matches_pytorch_fid() {
    let dir = TempDir::new("fid");
    pyref("metrics_stats.py", &["fid", dir.arg()]);
    let r = json(dir.join("fid.json"));
    let want = |k: &str| r[k].as_f64().unwrap();

    let f = frechet_distance(&stats(&dir, "a"), &stats(&dir, "b")).unwrap();
    assert_rel("FID a-b", f.value, want("ab"), 1e-3);
    assert!(f.warnings.is_empty(), "{:?}", f.warnings);
    assert_eq!((f.n1, f.n2), (Some(700), Some(600)));

    let f = frechet_distance(&stats(&dir, "wide1"), &stats(&dir, "wide2")).unwrap();
    assert_rel("FID 256-d from 300 samples", f.value, want("wide"), 1e-3);

    // N < dim: singular covariances; the value still agrees and the warning is raised.
    let (s1, s2) = (stats(&dir, "small1"), stats(&dir, "small2"));
    let f = frechet_distance(&s1, &s2).unwrap();
    assert_rel("FID N < dim", f.value, want("small"), 1e-3);
    assert_eq!(
        f.warnings,
        [
            MetricsWarning::FewSamples { n: 40, dim: 64 },
            MetricsWarning::FewSamples { n: 50, dim: 64 }
        ]
    );
    assert!(f.warnings[0].to_string().contains("40 samples of 64-d"));

    // pytorch-fid's eps retry (forced in the reference) is what frechet_distance_eps computes.
    let retry = frechet_distance_eps(&s1, &s2, FID_EPS).unwrap();
    assert_rel("FID eps retry", retry, want("retry"), 1e-6);
    assert!(
        (retry - f.value).abs() > 1e-3,
        "the retry must change the value"
    );

    let a = stats(&dir, "a");
    let same = frechet_distance(&a, &a).unwrap().value;
    assert!(
        same.abs() < 1e-6,
        "identical sets: {same} (pytorch-fid: {})",
        want("identical")
    );
}

#[test]
fn kid_matches_torch_fidelity_on_its_own_subsets() {
    let dir = TempDir::new("kid");
    pyref("metrics_stats.py", &["kid", dir.arg()]);
    let r = json(dir.join("kid.json"));
    let (f1, f2) = (npy(dir.join("kid_f1.npy")), npy(dir.join("kid_f2.npy")));
    let opts = KidOptions::default();

    // The subsets are NumPy's RandomState(2020) draws, index for index.
    let subsets = kid_subsets(1100, 1050, &opts).unwrap();
    let idx1 = Vec::<i64>::try_from(npy(dir.join("kid_idx1.npy")).flatten(0, -1)).unwrap();
    let idx2 = Vec::<i64>::try_from(npy(dir.join("kid_idx2.npy")).flatten(0, -1)).unwrap();
    assert_eq!(subsets.len(), 100);
    assert_eq!(
        subsets.iter().flat_map(|s| s.0.clone()).collect::<Vec<_>>(),
        idx1
    );
    assert_eq!(
        subsets.iter().flat_map(|s| s.1.clone()).collect::<Vec<_>>(),
        idx2
    );

    // Same subsets: the float64 transcription of torch-fidelity's formula, tightly.
    let k = kid_with_subsets(&f1, &f2, &subsets, &opts).unwrap();
    assert_rel(
        "KID mean vs f64 formula",
        k.mean,
        r["f64_mean"].as_f64().unwrap(),
        1e-9,
    );
    assert_rel(
        "KID std vs f64 formula",
        k.std,
        r["f64_std"].as_f64().unwrap(),
        1e-6,
    );
    // End to end against torch-fidelity itself (it works in float32).
    let k = kernel_inception_distance(&f1, &f2, &opts).unwrap();
    assert_rel(
        "KID mean vs torch-fidelity",
        k.mean,
        r["tf_mean"].as_f64().unwrap(),
        1e-3,
    );
    assert_rel(
        "KID std vs torch-fidelity",
        k.std,
        r["tf_std"].as_f64().unwrap(),
        1e-3,
    );
    assert_eq!((k.subsets, k.subset_size), (100, 1000));

    // Too few samples: a clear error naming the numbers.
    let e = kernel_inception_distance(&f1.narrow(0, 0, 999), &f2, &opts).unwrap_err();
    assert!(matches!(e, MetricsError::TooFewSamples { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("1000") && msg.contains("999") && msg.contains("1050"),
        "{msg}"
    );
}

#[test]
fn inception_score_matches_torch_fidelity() {
    let dir = TempDir::new("is");
    pyref("metrics_stats.py", &["is", dir.arg()]);
    let r = json(dir.join("is.json"));
    for name in ["a", "b"] {
        let logits = npy(dir.join(&format!("is_{name}.npy")));
        let s = inception_score(&logits, IS_SPLITS, Some(IS_SEED)).unwrap();
        assert_rel(
            &format!("IS mean {name}"),
            s.mean,
            r[name][0].as_f64().unwrap(),
            1e-6,
        );
        assert_rel(
            &format!("IS std {name}"),
            s.std,
            r[name][1].as_f64().unwrap(),
            1e-4,
        );
        // Without the shuffle the split contents change, and so does the std.
        let plain = inception_score(&logits, IS_SPLITS, None).unwrap();
        assert!((plain.std - s.std).abs() > 1e-6);
    }
}

#[test]
fn precision_recall_matches_torch_fidelity() {
    let dir = TempDir::new("pr");
    pyref("metrics_stats.py", &["pr", dir.arg()]);
    let r = json(dir.join("pr.json"));
    let real = npy(dir.join("pr_real.npy"));
    let fake = npy(dir.join("pr_fake.npy"));
    let pr = precision_recall(&real, &fake, PR_NEIGHBOURS).unwrap();
    for (col, want) in [("f64", &r["f64"]), ("f32", &r["f32"])] {
        assert_rel(
            &format!("precision {col}"),
            pr.precision,
            want[0].as_f64().unwrap(),
            1e-3,
        );
        assert_rel(
            &format!("recall {col}"),
            pr.recall,
            want[1].as_f64().unwrap(),
            1e-3,
        );
    }
    let f = 2.0 * pr.precision * pr.recall / (pr.precision + pr.recall);
    assert_rel("f-score", pr.f_score, f, 1e-12);
}

#[test]
fn statistics_files_are_compatible_with_numpy() {
    let dir = TempDir::new("npz");
    pyref("metrics_stats.py", &["npz-write", dir.arg()]);
    let x = npy(dir.join("npz_features.npy"));
    let ours = FeatureSet::from_tensors(&x, None).unwrap().stats().unwrap();

    // pytorch-fid's np.savez_compressed file, and a float32 / Fortran-ordered variant.
    let theirs = Stats::load_npz(&dir.join("pfid_stats.npz")).unwrap();
    assert_eq!(theirs.n, None);
    for (a, b) in ours
        .mu
        .iter()
        .zip(&theirs.mu)
        .chain(ours.sigma.iter().zip(&theirs.sigma))
    {
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} vs {b}");
    }
    let f32s = Stats::load_npz(&dir.join("pfid_stats_f32_fortran.npz")).unwrap();
    for (a, b) in f32s.sigma.iter().zip(&theirs.sigma) {
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
    }

    // gantry's file, read back by NumPy as pytorch-fid reads it.
    let path = dir.join("gantry_stats.npz");
    ours.save_npz(&path).unwrap();
    let out = pyref("metrics_stats.py", &["npz-read", path.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["dtype"], serde_json::json!(["float64", "float64"]));
    assert_eq!(v["n"], serde_json::json!(80));
    let bits = |k: &str| -> Vec<u64> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    };
    assert_eq!(
        bits("mu_bits"),
        ours.mu.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(
        bits("sigma_bits"),
        ours.sigma.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(v["shape"], serde_json::json!([[16], [16, 16]]));
    assert_eq!(Stats::load_npz(&path).unwrap(), ours);

    // A corrupt statistics file is an error naming it.
    let bad = dir.join("bad.npz");
    std::fs::write(&bad, b"PK\x03\x04garbage").unwrap();
    let e = Stats::load_npz(&bad).unwrap_err();
    assert!(e.to_string().starts_with(bad.to_str().unwrap()), "{e}");
}
