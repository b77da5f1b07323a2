//! The WGAN gradient penalty and R1 (values and their second-order gradients) against PyTorch on
//! the same tiny discriminator, weights and inputs, in float64.

mod common;

use gantry::loss::penalty;
use gantry::models::dcgan::{DNorm, DcganConfig, DcganDiscriminator};
use gantry::models::{DataShape, Discriminator};
use tch::{nn, Device, Kind, Tensor};

#[test]
fn gp_and_r1_match_pytorch() {
    tch::manual_seed(3);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let shape = DataShape::image(3, 8, None);
    let cfg = DcganConfig {
        ndf: 2,
        d_norm: DNorm::None,
        ..Default::default()
    };
    let d = DcganDiscriminator::new(vs.root(), &cfg, &shape);
    vs.double();
    let opts = (Kind::Double, Device::Cpu);
    let real = Tensor::randn([4, 3, 8, 8], opts);
    let fake = Tensor::randn([4, 3, 8, 8], opts);
    let eps = Tensor::rand([4, 1, 1, 1], opts);
    let vars = vs.variables();
    let (w0, w1) = (&vars["b8.conv.weight"], &vars["b4.conv.weight"]);
    let want = common::pyref(
        "penalty.py",
        &[
            ("b8.conv.weight", w0.shallow_clone()),
            ("b4.conv.weight", w1.shallow_clone()),
            ("real", real.shallow_clone()),
            ("fake", fake.shallow_clone()),
            ("eps", eps.shallow_clone()),
        ],
    );
    let critic = |x: &Tensor| d.forward(x, None, true);

    let gp = penalty::gradient_penalty_at(critic, &real, &fake, &eps);
    let grads = Tensor::run_backward(&[&gp], &[w0, w1], false, false);
    assert!(common::rel_err(&gp, &want["gp"]) < 1e-10);
    assert!(
        common::rel_err(&grads[0], &want["gp_w0"]) < 1e-10,
        "{}",
        common::rel_err(&grads[0], &want["gp_w0"])
    );
    assert!(common::rel_err(&grads[1], &want["gp_w1"]) < 1e-10);

    let xr = real.shallow_clone().set_requires_grad(true);
    let r1 = penalty::r1(&critic(&xr), &xr);
    let grads = Tensor::run_backward(&[&r1], &[w0, w1], false, false);
    assert!(common::rel_err(&r1, &want["r1"]) < 1e-10);
    assert!(common::rel_err(&grads[0], &want["r1_w0"]) < 1e-10);
    assert!(common::rel_err(&grads[1], &want["r1_w1"]) < 1e-10);
}
