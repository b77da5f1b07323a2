//! The `resnet` and `biggan` networks against PyTorch transcriptions of their reference code
//! (`tests/pyref/backbone_nets.py`) with the same weights and buffers, in float64: G's sample in
//! training and eval mode, every block's output in D (its taps) and D's score, the gradients of
//! every parameter (and of D's input), and the BatchNorm statistics and SN vectors each pass leaves.
//! Tiny widths; every block kind (G up-block, D optimised / down / plain block, attention,
//! conditional BN, hierarchical z, projection head) and both poolings are covered.

mod common;

use gantry::models::biggan::BigGanConfig;
use gantry::models::resnet::{Pool, ResnetConfig};
use gantry::models::{build_discriminator, build_generator, DataShape, ModelConfig};
use gantry::nn::init::InitScheme;
use std::collections::HashMap;
use tch::{nn, Device, Kind, Tensor};

const TOL: f64 = 1e-10;

fn close(want: &HashMap<String, Tensor>, name: &str, got: &Tensor) {
    let w = want
        .get(name)
        .unwrap_or_else(|| panic!("reference lacks {name}"));
    let err = common::rel_err(got, w);
    assert!(err < TOL, "{name}: relative error {err}");
}

fn sorted(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Gradients of `loss` for the trainable variables of `vars` (prefixed) and `extra`, compared
/// with `grad.<name>`; then the buffers with `after.<name>`.
fn check_store(
    want: &HashMap<String, Tensor>,
    prefix: &str,
    vars: &[(String, Tensor)],
    loss: &Tensor,
    extra: &[(&str, &Tensor)],
) {
    let params: Vec<&(String, Tensor)> = vars.iter().filter(|(_, v)| v.requires_grad()).collect();
    let mut tensors: Vec<&Tensor> = params.iter().map(|(_, v)| v).collect();
    tensors.extend(extra.iter().map(|(_, t)| *t));
    let grads = Tensor::run_backward(&[loss], &tensors, false, false);
    let names = params
        .iter()
        .map(|(k, _)| format!("{prefix}.{k}"))
        .chain(extra.iter().map(|(k, _)| k.to_string()));
    for (name, g) in names.zip(&grads) {
        close(want, &format!("grad.{name}"), g);
    }
    for (k, v) in vars.iter().filter(|(_, v)| !v.requires_grad()) {
        close(want, &format!("after.{prefix}.{k}"), v);
    }
}

fn compare(cfg: ModelConfig, resolution: i64, classes: Option<i64>) {
    let (biggan, pool) = match &cfg {
        ModelConfig::BigGan(b) => (Some(b), b.pool),
        ModelConfig::Resnet(r) => (None, r.pool),
        other => panic!("not a ResNet backbone: {}", other.arch_name()),
    };
    let rng = common::rng_lock();
    tch::manual_seed(5);
    let shape = DataShape {
        channels: 3,
        resolution,
        numel: 3 * resolution * resolution,
        num_classes: classes,
    };
    let mut g_vs = nn::VarStore::new(Device::Cpu);
    let mut d_vs = nn::VarStore::new(Device::Cpu);
    let g = build_generator(g_vs.root(), &cfg, &shape).unwrap();
    let d = build_discriminator(d_vs.root(), &cfg, &shape).unwrap();
    g_vs.double();
    d_vs.double();
    tch::no_grad(|| {
        // Attention starts as the identity (gamma = 0); open it so its weights get gradients.
        for (k, v) in g_vs.variables().into_iter().chain(d_vs.variables()) {
            if k.ends_with(".gamma") {
                let _ = v.shallow_clone().fill_(0.5);
            }
        }
    });
    let b = 4;
    let opts = (Kind::Double, Device::Cpu);
    let z = Tensor::randn([b, g.z_dim()], opts);
    let x = Tensor::randn([b, 3, resolution, resolution], opts);
    let gx = Tensor::randn([b, 3, resolution, resolution], opts);
    let gd = Tensor::randn([b], opts);
    let labels = classes.map(|n| Tensor::randint(n, [b], (Kind::Int64, Device::Cpu)));

    let mut inputs: Vec<(String, Tensor)> = Vec::new();
    for (prefix, vs) in [("g", &g_vs), ("d", &d_vs)] {
        inputs.extend(
            sorted(vs)
                .into_iter()
                .map(|(k, v)| (format!("{prefix}.{k}"), v.detach().copy())),
        );
    }
    let flag = |b: bool| Tensor::from(b as i64);
    inputs.extend([
        ("z".to_string(), z.shallow_clone()),
        ("x".to_string(), x.shallow_clone()),
        ("gx".to_string(), gx.shallow_clone()),
        ("gd".to_string(), gd.shallow_clone()),
        ("cfg.biggan".to_string(), flag(biggan.is_some())),
        (
            "cfg.shared".to_string(),
            flag(biggan.is_some_and(|b| b.shared_embedding)),
        ),
        ("cfg.hier".to_string(), flag(biggan.is_some_and(|b| b.hier))),
        (
            "cfg.attention".to_string(),
            Tensor::from(biggan.map_or(0, |b| b.attention)),
        ),
        ("cfg.mean_pool".to_string(), flag(pool == Pool::Mean)),
    ]);
    if let Some(l) = &labels {
        inputs.push(("labels".to_string(), l.shallow_clone()));
    }
    // Nothing below draws random numbers: let other tests run while the reference does.
    drop(rng);
    let named: Vec<(&str, Tensor)> = inputs
        .iter()
        .map(|(k, v)| (k.as_str(), v.shallow_clone()))
        .collect();
    let want = common::pyref("backbone_nets.py", &named);

    let fake = g.forward(&z, labels.as_ref(), true);
    close(&want, "g.x", &fake);
    check_store(
        &want,
        "g",
        &sorted(&g_vs),
        &(&fake * &gx).sum(Kind::Double),
        &[],
    );
    close(&want, "g.x_eval", &g.forward(&z, labels.as_ref(), false));

    let x = x.set_requires_grad(true);
    let mut taps = Vec::new();
    let f = d.embed_tapped(&x, true, &mut |name, h| {
        taps.push((name.to_string(), h.shallow_clone()));
        h
    });
    let logits = d.head(&f, labels.as_ref(), true);
    close(&want, "d.logits", &logits);
    assert_eq!(
        taps.iter().map(|t| t.0.clone()).collect::<Vec<_>>(),
        d.taps()
    );
    for (name, h) in &taps {
        close(&want, &format!("d.tap.{name}"), h);
    }
    check_store(
        &want,
        "d",
        &sorted(&d_vs),
        &(&logits * &gd).sum(Kind::Double),
        &[("d.input", &x)],
    );
}

#[test]
fn resnet_with_sn_and_sum_pooling_matches_pytorch() {
    // 32x32: optimised, down and two plain D blocks; three G up-blocks.
    let cfg = ModelConfig::Resnet(ResnetConfig {
        ngf: 4,
        ndf: 4,
        z_dim: 8,
        g_sn: true,
        d_sn: true,
        ..Default::default()
    });
    compare(cfg, 32, None);
}

#[test]
fn resnet_without_sn_and_with_mean_pooling_matches_pytorch() {
    let cfg = ModelConfig::Resnet(ResnetConfig {
        ngf: 4,
        ndf: 5,
        z_dim: 6,
        g_sn: false,
        d_sn: false,
        pool: Pool::Mean,
        ..Default::default()
    });
    compare(cfg, 16, None);
}

#[test]
fn biggan_with_attention_and_hierarchical_z_matches_pytorch() {
    let cfg = ModelConfig::BigGan(BigGanConfig {
        ngf: 8,
        ndf: 8,
        z_dim: 12,
        g_sn: true,
        d_sn: true,
        hier: true,
        attention: 8,
        init: InitScheme::Orthogonal,
        ..Default::default()
    });
    compare(cfg, 16, Some(3));
}

#[test]
fn biggan_cifar_layout_with_shared_embedding_matches_pytorch() {
    let cfg = ModelConfig::BigGan(BigGanConfig {
        ngf: 4,
        ndf: 4,
        z_dim: 6,
        shared_dim: 5,
        g_sn: true,
        d_sn: true,
        init: InitScheme::Normal,
        ..Default::default()
    });
    compare(cfg, 32, Some(10));
}

/// issue 13: the FQ-GAN CIFAR script's G has no shared embedding: per-block class tables.
#[test]
fn biggan_without_the_shared_embedding_matches_pytorch() {
    let cfg = ModelConfig::BigGan(BigGanConfig {
        ngf: 4,
        ndf: 4,
        z_dim: 6,
        shared_embedding: false,
        g_sn: true,
        d_sn: true,
        init: InitScheme::Normal,
        ..Default::default()
    });
    compare(cfg, 16, Some(5));
}
