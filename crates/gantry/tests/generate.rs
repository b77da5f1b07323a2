//! `gantry sample`'s controls on a StyleGAN2 imported from the official code's fixture: seeds
//! draw NumPy's latents, psi = 0 gives the average image, interpolation ends at the seeds'
//! images, style mixing with every layer taken is the column seed's image.

mod common;

use gantry::generate::{self, Controls};
use gantry::models::stylegan2::layers::NoiseMode;
use gantry::models::stylegan2::ops::ModConvForm;
use gantry::models::Generator;
use tch::{nn, Device, Tensor};

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn fixture_generator() -> (nn::VarStore, Box<dyn Generator>) {
    let file = common::repo_root().join("tests/fixtures/interop/sg2/sg2ada-uncond.pkl");
    let imported = gantry::interop::import(&file).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let g = gantry::models::build_generator(vs.root(), &imported.model, &imported.shape).unwrap();
    gantry::interop::load_into(&vs.variables(), imported.store("g_ema").unwrap(), &file).unwrap();
    (vs, g)
}

#[test]
fn seeds_draw_numpys_latents() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("z.npy");
    let script = "import sys, numpy as np\n\
        np.save(sys.argv[1], np.stack([np.random.RandomState(s).randn(16) for s in [0, 7, 123456]]).astype(np.float32))";
    let status = std::process::Command::new(common::python())
        .args(["-c", script])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let numpy = Tensor::read_npy(&out).unwrap();
    let z = generate::seed_latents(&[0, 7, 123_456], 16);
    assert_eq!(max_diff(&z, &numpy), 0.0);
}

#[test]
fn truncation_interpolation_and_style_mixing() {
    let (_vs, g) = fixture_generator();
    let sg = g.as_stylegan2().unwrap();
    let c = Controls {
        psi: 0.0,
        noise: NoiseMode::Const,
    };
    let z = generate::seed_latents(&[0, 1, 2], g.z_dim());
    let x = generate::images(g.as_ref(), &z, None, &c, Device::Cpu);
    let avg = sg.w_avg().reshape([1, 1, -1]).repeat([1, sg.num_ws(), 1]);
    let mean_image = tch::no_grad(|| sg.synthesis(&avg, NoiseMode::Const, ModConvForm::Grouped));
    for i in 0..3 {
        assert!(
            max_diff(&x.get(i), &mean_image.get(0)) < 1e-5,
            "psi 0, sample {i}"
        );
    }

    let c = Controls {
        psi: 1.0,
        noise: NoiseMode::Const,
    };
    let own = generate::images(g.as_ref(), &z, None, &c, Device::Cpu);
    let frames = generate::walk(g.as_ref(), &[0, 1, 2], 4, true, None, &c, Device::Cpu).unwrap();
    assert_eq!(frames.size()[0], 3 + 4);
    for (frame, seed) in [(0, 0), (3, 1), (6, 2)] {
        assert!(
            max_diff(&frames.get(frame), &own.get(seed)) < 1e-4,
            "frame {frame}"
        );
    }

    let all = 0..sg.num_ws();
    let grid = generate::style_mix(g.as_ref(), &[0, 1], &[2], all, &c, Device::Cpu).unwrap();
    // [blank, col 2 | row 0, mix(0, 2) | row 1, mix(1, 2)]
    assert_eq!(grid.size()[0], 6);
    assert!(max_diff(&grid.get(1), &own.get(2)) < 1e-4);
    assert!(max_diff(&grid.get(2), &own.get(0)) < 1e-4);
    assert!(
        max_diff(&grid.get(3), &own.get(2)) < 1e-4,
        "every layer from the column"
    );
    let coarse = generate::style_mix(g.as_ref(), &[0], &[2], 0..2, &c, Device::Cpu).unwrap();
    assert!(
        max_diff(&coarse.get(3), &own.get(2)) > 1e-3
            && max_diff(&coarse.get(3), &own.get(0)) > 1e-3
    );
}
