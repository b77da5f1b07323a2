//! Foreign weights in: fixtures made with the official code (tests/fixtures/interop/*/README.md
//! says how), whose outputs gantry must reproduce to 1e-4 in float32.

mod common;

use gantry::interop;
use gantry::models::stylegan2::layers::NoiseMode;
use gantry::models::stylegan2::{StyleGan2Discriminator, StyleGan2Generator};
use gantry::models::{Discriminator, ModelConfig};
use std::collections::HashMap;
use std::path::PathBuf;
use tch::{nn, Device, Kind, Tensor};

fn fixture(rel: &str) -> PathBuf {
    common::repo_root().join("tests/fixtures/interop").join(rel)
}

fn npz(rel: &str) -> HashMap<String, Tensor> {
    Tensor::read_npz(fixture(rel)).unwrap().into_iter().collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

/// Class indices from the fixtures' one-hot `c`.
fn labels(out: &HashMap<String, Tensor>) -> Option<Tensor> {
    out.get("c").map(|c| c.argmax(1, false))
}

/// Every stylegan2-ada pickle: G_ema, G (with and without truncation) and D reproduce the
/// official networks' outputs. Where the official network ran layers in fp16, the fixture also
/// holds its fp32 outputs (`*_fp32`, `force_fp32=True`), which are what gantry computes.
#[test]
fn stylegan2_ada_pickles_reproduce_the_official_outputs() {
    for name in ["sg2ada-uncond", "sg2ada-cond", "adaptivemix"] {
        let imported = interop::import(&fixture(&format!("sg2/{name}.pkl"))).unwrap();
        let ModelConfig::StyleGan2(cfg) = &imported.model else {
            panic!("{name}: {}", imported.model.arch_name())
        };
        let out = npz(&format!("sg2/{name}.npz"));
        let pick = |k: &str| {
            out.get(&format!("{k}_fp32"))
                .or_else(|| out.get(k))
                .unwrap_or_else(|| panic!("{name}: {k}"))
                .shallow_clone()
        };
        let z = &out["z"];
        let c = labels(&out);
        for (store, key, psi) in [
            ("g_ema", "img_ema", 1.0),
            ("g_ema", "img_ema_trunc", 0.5),
            ("g", "img_g", 1.0),
        ] {
            let vs = nn::VarStore::new(Device::Cpu);
            let g = StyleGan2Generator::new(vs.root(), cfg, &imported.shape);
            interop::load_into(&vs.variables(), imported.store(store).unwrap(), &fixture(name))
                .unwrap();
            let x = tch::no_grad(|| g.forward_truncated(z, c.as_ref(), psi, None, NoiseMode::Const));
            let d = max_diff(&x, &pick(key));
            assert!(d <= 1e-4, "{name} {key}: max |diff| {d}");
            if store == "g_ema" && psi == 1.0 {
                let ws = tch::no_grad(|| g.ws(z, c.as_ref(), false));
                let d = max_diff(&ws, &out["ws"]);
                assert!(d <= 1e-4, "{name} ws: max |diff| {d}");
            }
        }
        let vs = nn::VarStore::new(Device::Cpu);
        let d = StyleGan2Discriminator::new(vs.root(), cfg, &imported.shape);
        interop::load_into(&vs.variables(), imported.store("d").unwrap(), &fixture(name)).unwrap();
        let logits = tch::no_grad(|| d.forward(&out["x_real"], c.as_ref(), false));
        let diff = max_diff(&logits.reshape([-1, 1]), &pick("d_logits").to_kind(Kind::Float));
        assert!(diff <= 1e-4, "{name} D: max |diff| {diff}");
    }
}

/// The embedded source of a persistent class is never run: a pickle whose source would create
/// a marker file loads (its data is an ordinary network) and the marker never appears; a pickle
/// whose G is a call of `exec` is refused by name.
#[test]
fn hostile_pickles_run_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    std::env::set_var("GANTRY_MARKER", &marker);
    let imported = interop::import(&fixture("sg2/hostile-persistent.pkl"));
    assert!(imported.is_ok(), "{:?}", imported.err());
    let e = interop::import(&fixture("sg2/hostile-reduce.pkl"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("G is a call of builtins.exec") && e.contains("nothing in the file was run"),
        "{e}"
    );
    assert!(!marker.exists());
}
