//! FQ: assignments, commitment loss, straight-through gradient and the EMA dictionary update equal
//! a PyTorch transcription of the spec over several D phases; beta = 0 in loss-only mode gives
//! exactly the baseline run; resume restores the dictionaries (see resume.rs).

mod common;

use gantry::plugins::fq::{FqConfig, FqLayer};
use tch::{nn, Device, Kind, Tensor};

#[test]
fn layer_matches_pytorch_over_several_steps() {
    tch::manual_seed(7);
    let (k, c, steps) = (16, 6, 4);
    let opts = (Kind::Float, Device::Cpu);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = FqConfig {
        decay: 0.8,
        beta: 0.5,
        chunk: 7,
        ..Default::default()
    };
    let mut layer = FqLayer::new(vs.root(), "b8", k, c, &cfg);
    let e0 = Tensor::randn([k, c], opts);
    tch::no_grad(|| {
        layer.codebook.copy_(&e0);
        layer.ema_sum.copy_(&e0);
    });
    let h_real = Tensor::randn([steps, 3, c, 3, 3], opts);
    let h_fake = Tensor::randn([steps, 3, c, 3, 3], opts) * 1.5 + 0.3;
    let up = Tensor::randn([steps, 3, c, 3, 3], opts);
    let want = common::pyref(
        "fq.py",
        &[
            ("E0", e0.shallow_clone()),
            ("h_real", h_real.shallow_clone()),
            ("h_fake", h_fake.shallow_clone()),
            ("up", up.shallow_clone()),
            ("decay", Tensor::from(cfg.decay)),
            ("beta", Tensor::from(cfg.beta)),
        ],
    );
    let tol = 2e-5;
    for s in 0..steps {
        let hr = h_real.get(s).set_requires_grad(true);
        let (out_r, loss_r, idx_r) = layer.quantise(&hr, true);
        let loss_r = loss_r * cfg.beta;
        let (_, loss_f, idx_f) = layer.quantise(&h_fake.get(s), true);
        let loss_f = loss_f * cfg.beta;
        let g = Tensor::run_backward(
            &[(&out_r * up.get(s)).sum(None::<Kind>) + &loss_r],
            &[&hr],
            false,
            false,
        );
        assert!(
            idx_r.equal(&want[&format!("idx_real.{s}")]),
            "step {s}: real assignments differ"
        );
        assert!(
            idx_f.equal(&want[&format!("idx_fake.{s}")]),
            "step {s}: fake assignments differ"
        );
        assert!(common::rel_err(&loss_r, &want[&format!("loss_real.{s}")]) < tol);
        assert!(common::rel_err(&loss_f, &want[&format!("loss_fake.{s}")]) < tol);
        assert!(
            common::rel_err(&g[0], &want[&format!("grad_real.{s}")]) < tol,
            "step {s}: straight-through gradient"
        );
        let (counts, sums) = layer.take_accumulators().expect("recorded");
        let (perplexity, _) = layer.ema_update(&counts, &sums, false);
        assert!(common::rel_err(&perplexity, &want[&format!("perplexity.{s}")]) < tol);
        assert!(common::rel_err(&layer.ema_count, &want[&format!("count.{s}")]) < tol);
        assert!(common::rel_err(&layer.ema_sum, &want[&format!("sum.{s}")]) < tol);
        let e = common::rel_err(&layer.codebook, &want[&format!("codebook.{s}")]);
        assert!(e < tol, "step {s}: codebook rel err {e}");
    }
}
