//! The WGAN gradient penalty, R1, and R3GAN's relativistic loss with R1 + R2 (values and their
//! second-order gradients) against PyTorch on the same tiny discriminator, weights and inputs,
//! in float64.

mod common;

use gantry::loss::{penalty, Adversarial};
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

    // R3GAN: relativistic pairing + gamma/2 (R1 + R2), as objective::d_phase composes them.
    let gamma = 0.7;
    let xr = real.shallow_clone().set_requires_grad(true);
    let xf = fake.shallow_clone().set_requires_grad(true);
    let (lr, lf) = (critic(&xr), critic(&xf));
    let d_rel = Adversarial::Relativistic.d_loss(&lr, &lf)
        + (penalty::r1(&lr, &xr) + penalty::r1(&lf, &xf)) * (gamma / 2.0);
    let grads = Tensor::run_backward(&[&d_rel], &[w0, w1], false, false);
    assert!(common::rel_err(&d_rel, &want["d_rel"]) < 1e-10);
    assert!(common::rel_err(&grads[0], &want["d_rel_w0"]) < 1e-10);
    assert!(common::rel_err(&grads[1], &want["d_rel_w1"]) < 1e-10);
    let g_rel = Adversarial::Relativistic.g_loss(&lf, Some(&lr));
    assert!(common::rel_err(&g_rel, &want["g_rel"]) < 1e-10);
}
