//! The ResNet-backbone presets in training: `sngan-cifar`, `wgangp-resnet-cifar` and
//! `biggan-cifar` each run a couple of steps on CPU at a tiny width and resolution (built-in shapes,
//! which carry 3 class labels for BigGAN), without plug-ins, with each of AdaptiveMix, FQ,
//! DiffAugment and ADA, and with all four; every logged value stays finite. BigGAN with all four
//! resumes bit for bit (SN vectors, EMA, DiffAugment and ADA draws, ADA's p and its half-filled
//! window included). Then each preset's checkpoint keys
//! (no `__`, SN vectors saved but not optimised) and its parameter counts at full size.

mod common;

use gantry::models::{build_discriminator, build_generator, DataShape};
use gantry::rundir::checkpoint;
use gantry::RunConfig;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use tch::{nn, Device};

const PRESETS: [&str; 3] = ["sngan-cifar", "wgangp-resnet-cifar", "biggan-cifar"];

/// A preset shrunk to 8x8 shapes and width 4 (`common::tiny_sets`); FQ on every D block.
fn tiny(preset: &str, extra: &[&str]) -> RunConfig {
    let mut sets = vec!["data.kind=shapes", "fq.layers=[]", "fq.k=8"];
    sets.extend_from_slice(extra);
    RunConfig::resolve(Some(preset), &common::tiny_sets(&sets))
        .unwrap_or_else(|e| panic!("{preset}: {e}"))
}

#[test]
fn every_preset_trains_with_and_without_each_plugin() {
    let _rng = common::rng_lock();
    let plugins: [&[&str]; 6] = [
        &[],
        &["adaptivemix.enabled=true"],
        &["fq.enabled=true"],
        &["diffaugment.enabled=true"],
        &["ada.enabled=true", "ada.p=0.5"],
        &[
            "adaptivemix.enabled=true",
            "fq.enabled=true",
            "diffaugment.enabled=true",
            "ada.enabled=true",
            "ada.p=0.5",
        ],
    ];
    for preset in PRESETS {
        for p in plugins {
            let mut sets = vec!["train.steps=2"];
            sets.extend_from_slice(p);
            let dir = tempfile::tempdir().unwrap();
            common::train(tiny(preset, &sets), dir.path());
            let rows = common::log_rows(dir.path());
            assert_eq!(
                rows.iter()
                    .filter(|r| r.get("loss/d/adv").is_some())
                    .count(),
                2,
                "{preset} {p:?}"
            );
            // The plug-ins did run: their statistics are logged.
            for (flag, stat) in [
                ("adaptivemix.enabled=true", "am/"),
                ("fq.enabled=true", "fq/"),
                ("ada.enabled=true", "ada/"),
            ] {
                let logged = rows
                    .iter()
                    .any(|r| r.as_object().unwrap().keys().any(|k| k.starts_with(stat)));
                assert_eq!(logged, p.contains(&flag), "{preset} {p:?}: {stat}");
            }
            for row in rows {
                for (k, v) in row.as_object().unwrap() {
                    let v = v
                        .as_f64()
                        .unwrap_or_else(|| panic!("{preset} {p:?}: {k} is {v}"));
                    assert!(v.is_finite(), "{preset} {p:?}: {k} = {v}");
                }
            }
        }
    }
}

#[test]
fn resume_is_bit_for_bit_with_sn_buffers_and_all_plugins() {
    let _rng = common::rng_lock();
    // ADA adjusts p every 3 D steps, so the resume at step 2 falls inside a window.
    let plugins = [
        "adaptivemix.enabled=true",
        "fq.enabled=true",
        "diffaugment.enabled=true",
        "ada.enabled=true",
        "ada.p=0.2",
        "ada.kimg=0.1",
        "ada.interval=3",
        "ada.target=-1",
    ];
    let with_steps = |n: &str| tiny("biggan-cifar", &[&plugins[..], &[n][..]].concat());
    let straight = common::train(
        with_steps("train.steps=4"),
        tempfile::tempdir().unwrap().path(),
    );
    let dir = tempfile::tempdir().unwrap();
    drop(common::train(with_steps("train.steps=2"), dir.path()));
    let mut resumed = gantry::run::resume(dir.path(), Some(with_steps("train.steps=4"))).unwrap();
    resumed.run(&AtomicBool::new(false), &mut |_| {}).unwrap();
    let (a, b) = (straight.snapshot(), resumed.snapshot());
    assert_eq!(a.len(), b.len());
    assert!(a.iter().any(|(k, _)| k.ends_with("weight_u")));
    // p moved (target -1: any real scored above -1 on average raises it) and was carried over.
    let p = a.iter().find(|(k, _)| k == "plugins/ada.p").unwrap();
    assert!((p.1.double_value(&[0]) - 0.2).abs() > 0.1, "{}", p.1);
    for ((ka, ta), (kb, tb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert!(ta.equal(tb), "{ka} differs");
    }
}

#[test]
fn checkpoint_keys_are_named_by_role_and_resolution() {
    let _rng = common::rng_lock();
    for preset in PRESETS {
        let dir = tempfile::tempdir().unwrap();
        common::train(
            tiny(preset, &["train.steps=1", "fq.enabled=true"]),
            dir.path(),
        );
        let ckpt = checkpoint::latest(dir.path()).unwrap();
        let keys = |store: &str| -> BTreeSet<String> {
            checkpoint::read_store(&ckpt, store)
                .unwrap()
                .into_keys()
                .collect()
        };
        let (g, d, ema, plugins, adam) = (
            keys("g"),
            keys("d"),
            keys("g_ema"),
            keys("plugins"),
            keys("adam"),
        );
        for k in g.iter().chain(&d).chain(&ema).chain(&plugins).chain(&adam) {
            assert!(!k.contains("__"), "{preset}: {k}");
        }
        assert_eq!(g, ema, "{preset}: the EMA copy has G's keys");
        // 8x8: G b4.fc -> b8; D b8 (optimised) -> b4a, b4b.
        for k in [
            "b4.fc.weight",
            "b8.conv0.weight",
            "b8.conv1.bias",
            "b8.skip.weight",
            "out.bn.running_var",
            "out.conv.weight",
        ] {
            assert!(g.contains(k), "{preset}: G lacks {k}: {g:?}");
        }
        for k in [
            "b8.conv0.weight",
            "b8.skip.weight",
            "b4a.conv1.weight",
            "b4b.conv0.bias",
            "out.weight",
        ] {
            assert!(d.contains(k), "{preset}: D lacks {k}: {d:?}");
        }
        assert!(!d.contains("b4a.skip.weight"));
        let biggan = preset == "biggan-cifar";
        assert_eq!(
            d.contains("b4a.conv0.weight_u"),
            preset != "wgangp-resnet-cifar",
            "{preset}: SN in D"
        );
        assert_eq!(g.contains("b8.conv0.weight_u"), biggan, "{preset}: SN in G");
        assert_eq!(
            g.contains("b8.bn0.gain.weight"),
            biggan,
            "{preset}: conditional BN"
        );
        // The FQ-GAN CIFAR script's G: per-block class tables, no shared embedding.
        assert!(!g.contains("shared.weight"), "{preset}: shared embedding");
        assert_eq!(d.contains("embed.weight"), biggan, "{preset}: projection");
        // FQ's default layers: every D block for BigGAN (FQ-GAN's CIFAR runs), the middle one else.
        let codebooks: Vec<&String> = plugins
            .iter()
            .filter(|k| k.ends_with(".codebook"))
            .collect();
        let want: &[&str] = if biggan {
            &["fq.b4a.codebook", "fq.b4b.codebook", "fq.b8.codebook"]
        } else {
            &["fq.b4a.codebook"]
        };
        assert_eq!(codebooks, want, "{preset}");
        // Buffers are checkpointed but never optimised.
        assert!(
            adam.iter().all(|k| !k.contains("weight_u")
                && !k.contains("weight_v")
                && !k.contains("running_")),
            "{preset}: {adam:?}"
        );
        assert!(adam.contains("g.b4.fc.weight.m") && adam.contains("d.out.weight.v"));
    }
}

/// Parameters (trainable tensors) of G and D of a preset at full size on CIFAR-10 (32x32, 10 classes).
fn parameter_counts(preset: &str) -> (i64, i64) {
    let cfg = RunConfig::resolve(Some(preset), &[]).unwrap();
    let shape = DataShape::image(3, 32, Some(10));
    let count = |vs: &nn::VarStore| {
        vs.trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum::<i64>()
    };
    let (g_vs, d_vs) = (
        nn::VarStore::new(Device::Cpu),
        nn::VarStore::new(Device::Cpu),
    );
    let _g = build_generator(g_vs.root(), &cfg.model, &shape).unwrap();
    let _d = build_discriminator(d_vs.root(), &cfg.model, &shape).unwrap();
    (count(&g_vs), count(&d_vs))
}

#[test]
fn full_size_parameter_counts_match_the_papers_and_the_pytorch_twins() {
    // SNGAN CIFAR: 4.3M / 1.0M as reported (e.g. Mimicry); exact counts equal benches/backbone_step.py.
    assert_eq!(parameter_counts("sngan-cifar"), (4_276_739, 1_053_825));
    assert_eq!(
        parameter_counts("wgangp-resnet-cifar"),
        (1_204_483, 1_053_825)
    );
    // BigGAN without the shared embedding (FQ-GAN's CIFAR script): 4.3M, as BigGAN-PyTorch's C10.
    assert_eq!(parameter_counts("biggan-cifar"), (4_304_387, 4_207_361));
}
