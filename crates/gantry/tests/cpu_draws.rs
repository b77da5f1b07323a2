//! Initial weights come from the CPU generator on every device: on a GPU the networks are built
//! twice (drawn on the CPU, built on the device) and the drawn values copied over by name. Run
//! here on the CPU, that copy path must give exactly the weights of a plain build from the same
//! seed, for every architecture and plug-in (random constants such as StyleGAN2's noise, spectral
//! norm's u and v and FQ's dictionary included): a value that did not come over would be the
//! second build's, drawn later from the generator, and differ.

use gantry::config::RunConfig;
use gantry::models::{build_discriminator, build_generator, DataShape};
use gantry::nn::{build_and_copy_cpu_draws, build_with_cpu_draws};
use gantry::plugins::build_stack;
use tch::{nn, Device};

fn build(cfg: &RunConfig, vs: &[nn::VarStore; 3]) -> gantry::Result<()> {
    let shape = DataShape::image(3, 32, cfg.model.arch().conditional().then_some(4));
    let d = build_discriminator(vs[1].root(), &cfg.model, &shape)?;
    build_generator(vs[0].root(), &cfg.model, &shape)?;
    build_stack(
        &vs[2].root(),
        &cfg.plugins(),
        d.as_ref(),
        &shape,
        &cfg.model.arch().default_fq_layers(32),
    )?;
    Ok(())
}

#[test]
fn the_copy_path_gives_the_plain_builds_weights_for_every_architecture() {
    for preset in [
        "dcgan-cifar",
        "sngan-cifar",
        "biggan-cifar",
        "r3gan-small",
        "stylegan2-32-small",
    ] {
        let sets: Vec<String> = [
            "fq.enabled=true",
            "adaptivemix.enabled=true",
            "data.resolution=32",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let cfg = RunConfig::resolve(Some(preset), &sets).unwrap();
        tch::manual_seed(7);
        let (plain, ()) = build_with_cpu_draws(Device::Cpu, |vs| build(&cfg, vs)).unwrap();
        tch::manual_seed(7);
        let (copied, ()) = build_and_copy_cpu_draws(Device::Cpu, |vs| build(&cfg, vs)).unwrap();
        let mut n = 0;
        for (a, b) in plain.iter().zip(&copied) {
            let (a, b) = (a.variables(), b.variables());
            assert_eq!(a.len(), b.len(), "{preset}");
            for (k, v) in &a {
                assert!(v.equal(&b[k]), "{preset}: {k} differs");
                n += 1;
            }
        }
        assert!(n > 10, "{preset}: {n} variables");
    }
}
