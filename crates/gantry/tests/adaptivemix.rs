//! AdaptiveMix: the 2-pass implementation equals the reference code's 3-pass form, and its loss
//! and gradients equal a PyTorch transcription of the spec (same weights, inputs, lambda,
//! permutation and noise), in float64.

mod common;

use gantry::models::dcgan::{DcganConfig, DcganDiscriminator};
use gantry::models::{DataShape, Discriminator};
use gantry::plugins::adaptivemix::{mix, mix_three_pass, AdaptiveMixConfig, Distance, Draw};
use gantry::plugins::Pass;
use tch::{nn, Device, Kind, Tensor};

const OPTS: (Kind, Device) = (Kind::Double, Device::Cpu);

fn tiny_d() -> (nn::VarStore, DcganDiscriminator) {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let shape = DataShape::image(3, 16, None);
    let d = DcganDiscriminator::new(
        vs.root(),
        &DcganConfig {
            ndf: 2,
            ..Default::default()
        },
        &shape,
    );
    vs.double();
    // Non-trivial BatchNorm affine parameters, so they matter in the comparison.
    tch::no_grad(|| {
        for (k, v) in vs.variables() {
            if k.contains(".bn.") && (k.ends_with("weight") || k.ends_with("bias")) {
                v.shallow_clone()
                    .copy_(&(Tensor::randn(v.size(), OPTS) * 0.3 + 1.0));
            }
        }
    });
    (vs, d)
}

#[test]
fn two_passes_equal_three_passes() {
    tch::manual_seed(11);
    let (_vs, d) = tiny_d();
    let x = Tensor::randn([6, 3, 16, 16], OPTS);
    let noise = Tensor::randn([6, 4, 4, 4], OPTS);
    for per_sample in [false, true] {
        let draw = Draw::sample(6, 1.0, per_sample, Device::Cpu);
        let cfg = AdaptiveMixConfig {
            per_sample_lambda: per_sample,
            ..Default::default()
        };
        let mut embed = |v: &Tensor, _: Pass| d.embed(v, true);
        let head = |f: &Tensor| d.head(f, None, true);
        let nf = |_: &[i64]| noise.shallow_clone();
        let two = mix(&mut embed, &head, &x, &draw, &nf, &cfg);
        let three = mix_three_pass(&mut embed, &head, &x, &draw, &nf, &cfg);
        assert!(common::rel_err(&two.logits, &three.logits) < 1e-12);
        assert!(common::rel_err(&two.l_am, &three.l_am) < 1e-12);
    }
}

fn check_against_pytorch(per_sample: bool, distance: Distance, code: i64) {
    tch::manual_seed(5 + code);
    let (vs, d) = tiny_d();
    let b = 6;
    let x = Tensor::randn([b, 3, 16, 16], OPTS).set_requires_grad(true);
    let mut draw = Draw::sample(b, 0.7, per_sample, Device::Cpu);
    draw.lam = draw.lam.to_kind(Kind::Double);
    let noise = Tensor::randn([b, 4, 4, 4], OPTS);
    let cfg = AdaptiveMixConfig {
        enabled: true,
        sigma: 0.05,
        weight: 0.7,
        distance,
        per_sample_lambda: per_sample,
        ..Default::default()
    };

    let mut inputs: Vec<(&str, Tensor)> = Vec::new();
    let vars = vs.variables();
    let names = [
        "b16.conv.weight",
        "b8.conv.weight",
        "b8.bn.weight",
        "b8.bn.bias",
        "b4.conv.weight",
    ];
    for n in names {
        inputs.push((n, vars[n].shallow_clone()));
    }
    inputs.extend([
        ("x", x.detach()),
        ("lam", draw.lam.shallow_clone()),
        ("perm", draw.perm.shallow_clone()),
        ("noise", noise.shallow_clone()),
        ("sigma", Tensor::from(cfg.sigma)),
        ("weight", Tensor::from(cfg.weight)),
        ("dist", Tensor::from(code)),
    ]);
    let want = common::pyref("adaptivemix.py", &inputs);

    let mut embed = |v: &Tensor, _: Pass| d.embed(v, true);
    let head = |f: &Tensor| d.head(f, None, true);
    let out = mix(
        &mut embed,
        &head,
        &x,
        &draw,
        &|_| noise.shallow_clone(),
        &cfg,
    );
    let loss = out.logits.neg().softplus().mean(None::<Kind>) + &out.l_am * cfg.weight;
    let mut wrt: Vec<Tensor> = names.iter().map(|n| vars[*n].shallow_clone()).collect();
    wrt.push(x.shallow_clone());
    let grads = Tensor::run_backward(&[&loss], &wrt, false, false);

    let tol = 1e-9;
    assert!(common::rel_err(&out.logits, &want["logits"]) < tol);
    assert!(common::rel_err(&out.l_am, &want["l_am"]) < tol);
    assert!(common::rel_err(&loss, &want["loss"]) < tol);
    for (n, g) in names.iter().zip(&grads) {
        let e = common::rel_err(g, &want[&format!("grad.{n}")]);
        assert!(e < tol, "grad of {n}: rel err {e}");
    }
    assert!(common::rel_err(&grads[names.len()], &want["grad.x"]) < tol);
}

#[test]
fn matches_pytorch_cosine_scalar_lambda() {
    check_against_pytorch(false, Distance::Cosine, 0);
}

#[test]
fn matches_pytorch_mse_per_sample_lambda() {
    check_against_pytorch(true, Distance::Mse, 1);
}

#[test]
fn matches_pytorch_l2() {
    check_against_pytorch(false, Distance::L2, 2);
}
