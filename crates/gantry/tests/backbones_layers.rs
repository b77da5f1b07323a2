//! The ResNet backbones' layer helpers against PyTorch with the same weights and buffers, in
//! float64 (`tests/pyref/backbone_layers.py`): spectral normalisation against
//! `torch.nn.utils.spectral_norm` (outputs, the stored u and v over two training forwards and an
//! eval forward, gradients), BigGAN's conditional BatchNorm (`layers.ccbn`) and its self-attention
//! block (`layers.Attention`), both with SN.

mod common;

use gantry::nn::attention::SelfAttention;
use gantry::nn::init::InitScheme;
use gantry::nn::layers::{Conv2d, Embedding, LayerOpts, Linear};
use gantry::nn::norm::ConditionalBatchNorm;
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

/// Compares the gradients of `loss` with the reference's `grad.<name>` for each named tensor.
fn close_grads(want: &HashMap<String, Tensor>, loss: &Tensor, named: &[(String, &Tensor)]) {
    let tensors: Vec<&Tensor> = named.iter().map(|(_, t)| *t).collect();
    let grads = Tensor::run_backward(&[loss], &tensors, false, false);
    for ((name, _), g) in named.iter().zip(&grads) {
        close(want, &format!("grad.{name}"), g);
    }
}

/// The trainable variables of `vars` under `prefix`, by name.
fn trainable<'a>(vars: &'a HashMap<String, Tensor>, prefix: &str) -> Vec<(String, &'a Tensor)> {
    let mut out: Vec<(String, &Tensor)> = vars
        .iter()
        .filter(|(k, v)| k.starts_with(prefix) && v.requires_grad())
        .map(|(k, v)| (k.clone(), v))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn spectral_norm_conditional_bn_and_attention_match_pytorch() {
    let _rng = common::rng_lock();
    tch::manual_seed(11);
    let opts = (Kind::Double, Device::Cpu);
    let init = InitScheme::Normal.layer(false);
    let sn = LayerOpts {
        init: InitScheme::Glorot.layer(true),
        bias: true,
        sn: true,
    };

    // Spectral norm on the three layer kinds.
    let mut vs = nn::VarStore::new(Device::Cpu);
    let conv = Conv2d::new(vs.root() / "conv", 3, 5, 3, sn);
    let lin = Linear::new(vs.root() / "lin", 6, 4, sn);
    let emb = Embedding::new(vs.root() / "emb", 5, 4, sn);
    vs.double();
    let x_conv = Tensor::randn([2, 3, 6, 6], opts).set_requires_grad(true);
    let x_lin = Tensor::randn([3, 6], opts).set_requires_grad(true);
    let labels = Tensor::from_slice(&[4i64, 0, 2, 4]);
    let gys = [
        ("conv.gy", Tensor::randn([2, 5, 6, 6], opts)),
        ("lin.gy", Tensor::randn([3, 4], opts)),
        ("emb.gy", Tensor::randn([4, 4], opts)),
    ];

    // Conditional BatchNorm and attention (with a non-zero gamma so that every weight gets a
    // gradient).
    let mut vs2 = nn::VarStore::new(Device::Cpu);
    let cbn = ConditionalBatchNorm::new(vs2.root() / "cbn", 4, 3, init, true);
    let attn = SelfAttention::new(vs2.root() / "attn", 16, init, true);
    vs2.double();
    tch::no_grad(|| {
        let vars = vs2.variables();
        let _ = vars["attn.gamma"].shallow_clone().fill_(0.7);
        // Running statistics away from 0/1, so the EMA update is visible.
        vars["cbn.running_mean"]
            .shallow_clone()
            .copy_(&Tensor::randn([4], opts));
        vars["cbn.running_var"]
            .shallow_clone()
            .copy_(&(Tensor::rand([4], opts) + 0.5));
    });
    let cbn_x = Tensor::randn([5, 4, 3, 3], opts).set_requires_grad(true);
    let cbn_c = Tensor::randn([5, 3], opts).set_requires_grad(true);
    let attn_x = Tensor::randn([2, 16, 4, 4], opts).set_requires_grad(true);
    let cbn_gy = Tensor::randn([5, 4, 3, 3], opts);
    let attn_gy = Tensor::randn([2, 16, 4, 4], opts);

    let mut inputs: Vec<(String, Tensor)> = Vec::new();
    for store in [&vs, &vs2] {
        inputs.extend(
            store
                .variables()
                .into_iter()
                .map(|(k, v)| (k, v.detach().copy())),
        );
    }
    inputs.extend(gys.iter().map(|(k, v)| (k.to_string(), v.shallow_clone())));
    for (k, v) in [
        ("x_conv", &x_conv),
        ("x_lin", &x_lin),
        ("labels", &labels),
        ("cbn.x", &cbn_x),
        ("cbn.cond", &cbn_c),
        ("cbn.gy", &cbn_gy),
        ("attn.x", &attn_x),
        ("attn.gy", &attn_gy),
    ] {
        inputs.push((k.to_string(), v.detach().copy()));
    }
    let named: Vec<(&str, Tensor)> = inputs
        .iter()
        .map(|(k, v)| (k.as_str(), v.shallow_clone()))
        .collect();
    let want = common::pyref("backbone_layers.py", &named);

    let vars = vs.variables();
    type Layer<'a> = Box<dyn Fn(bool) -> Tensor + 'a>;
    let layers: [(&str, Layer, Option<&Tensor>); 3] = [
        (
            "conv",
            Box::new(|t| conv.forward_t(&x_conv, t)),
            Some(&x_conv),
        ),
        ("lin", Box::new(|t| lin.forward_t(&x_lin, t)), Some(&x_lin)),
        ("emb", Box::new(|t| emb.forward_t(&labels, t)), None),
    ];
    for (key, f, x) in layers {
        let u = &vars[&format!("{key}.weight_u")];
        let v = &vars[&format!("{key}.weight_v")];
        let y1 = f(true);
        close(&want, &format!("{key}.y1"), &y1);
        close(&want, &format!("{key}.u1"), u);
        close(&want, &format!("{key}.v1"), v);
        let gy = &gys
            .iter()
            .find(|(k, _)| *k == format!("{key}.gy"))
            .unwrap()
            .1;
        let mut named = trainable(&vars, &format!("{key}."));
        named.extend(x.map(|x| (format!("{key}.x"), x)));
        close_grads(&want, &(&y1 * gy).sum(Kind::Double), &named);
        close(&want, &format!("{key}.y2"), &f(true));
        close(&want, &format!("{key}.u2"), u);
        close(&want, &format!("{key}.v2"), v);
        let u2 = u.copy();
        close(&want, &format!("{key}.y3"), &f(false));
        assert!(u.equal(&u2), "{key}: eval mode changed u");
    }

    let vars2 = vs2.variables();
    let h = cbn.forward_t(&cbn_x, &cbn_c, true);
    close(&want, "cbn.y1", &h);
    close(&want, "cbn.running_mean", &vars2["cbn.running_mean"]);
    close(&want, "cbn.running_var", &vars2["cbn.running_var"]);
    close(&want, "cbn.gain.u1", &vars2["cbn.gain.weight_u"]);
    let mut named = trainable(&vars2, "cbn.");
    named.extend([
        ("cbn.x".to_string(), &cbn_x),
        ("cbn.cond".to_string(), &cbn_c),
    ]);
    close_grads(&want, &(&h * &cbn_gy).sum(Kind::Double), &named);
    close(&want, "cbn.y2", &cbn.forward_t(&cbn_x, &cbn_c, false));

    let h = attn.forward_t(&attn_x, true);
    close(&want, "attn.y1", &h);
    let mut named = trainable(&vars2, "attn.");
    assert_eq!(named.len(), 5, "theta, phi, g, o and gamma");
    named.push(("attn.x".to_string(), &attn_x));
    close_grads(&want, &(&h * &attn_gy).sum(Kind::Double), &named);
}
