//! The classification task against PyTorch / numpy / scikit-learn transcriptions
//! (`tests/pyref/classify.py`), in float64: the CE, mixup and AdaptiveMix losses and every
//! gradient, FGSM/PGD adversarial batches from the same random start, the OOD metrics and the
//! principal-direction score.

mod common;

use common::{pyref, rel_err};
use gantry::classify::attack::{Attack, Norm};
use gantry::classify::nets::{Backbone, Head, Net, NetConfig};
use gantry::classify::objective::{self, Mode, ObjectiveConfig};
use gantry::classify::ood;
use gantry::plugins::adaptivemix::Draw;
use tch::{nn, Device, Kind, Tensor};

fn small(head: Head) -> (nn::VarStore, Net) {
    tch::manual_seed(3);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let cfg = NetConfig {
        backbone: Backbone::Small,
        head,
        ..NetConfig::default()
    };
    let net = Net::new(&vs.root(), &cfg, 1, 3);
    vs.double();
    // Running statistics away from (0, 1), so that an attack that ignored them would differ.
    for (k, v) in vs.variables() {
        if k.ends_with("running_mean") {
            tch::no_grad(|| {
                v.shallow_clone()
                    .copy_(&(Tensor::randn(v.size(), (Kind::Double, Device::Cpu)) * 0.1))
            });
        }
        if k.ends_with("running_var") {
            tch::no_grad(|| {
                v.shallow_clone()
                    .copy_(&(Tensor::rand(v.size(), (Kind::Double, Device::Cpu)) + 0.5))
            });
        }
    }
    (vs, net)
}

fn weights(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(k, t)| (format!("w.{k}"), t.detach().copy()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn inputs() -> (Tensor, Tensor) {
    tch::manual_seed(11);
    let x = Tensor::rand([6, 1, 8, 8], (Kind::Double, Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2]);
    (x, y)
}

#[test]
fn losses_and_every_gradient_match_pytorch() {
    let _g = common::rng_lock();
    for head in [Head::Linear, Head::Orthogonal] {
        for mode in [Mode::Ce, Mode::Mixup, Mode::Adaptivemix] {
            let (vs, net) = small(head);
            let (x, y) = inputs();
            let draw = Draw {
                lam: Tensor::from(0.3f64),
                perm: Tensor::from_slice(&[3i64, 0, 5, 1, 2, 4]),
            };
            let noise_t = Tensor::randn([6, 128], (Kind::Double, Device::Cpu));
            let noise = |_: &[i64]| noise_t.shallow_clone();
            let cfg = ObjectiveConfig {
                mode,
                sigma: 0.05,
                weight: 0.7,
                ..ObjectiveConfig::default()
            };
            let out = objective::loss_with(&net, &x, &y, &cfg, &draw, &noise);
            out.loss.backward();
            let mut ins = weights(&vs);
            ins.extend([
                ("case".to_string(), Tensor::from(0i64)),
                ("x".into(), x.shallow_clone()),
                ("y".into(), y.shallow_clone()),
                ("lam".into(), draw.lam.shallow_clone()),
                ("perm".into(), draw.perm.shallow_clone()),
                ("noise".into(), noise_t.shallow_clone()),
                (
                    "head".into(),
                    Tensor::from((head == Head::Orthogonal) as i64),
                ),
                ("mode".into(), Tensor::from(mode as i64)),
                ("sigma".into(), Tensor::from(0.05f64)),
                ("weight".into(), Tensor::from(0.7f64)),
            ]);
            let named: Vec<(&str, Tensor)> = ins
                .iter()
                .map(|(k, t)| (k.as_str(), t.shallow_clone()))
                .collect();
            let r = pyref("classify.py", &named);
            let what = format!("{head:?} {mode:?}");
            let e = rel_err(&out.loss, &r["loss"]);
            assert!(e < 1e-10, "{what}: loss {e}");
            let mut checked = 0;
            for (k, v) in vs.variables() {
                if !v.requires_grad() {
                    continue;
                }
                let want = &r[&format!("grad.{k}")];
                // Absolute floor: a conv bias before BatchNorm has a gradient of rounding noise.
                let diff = (v.grad() - want).abs().max().double_value(&[]);
                let scale = want.abs().max().double_value(&[]);
                assert!(
                    diff <= 1e-12 + 1e-9 * scale,
                    "{what}: grad of {k}: {diff} (scale {scale})"
                );
                checked += 1;
            }
            assert!(checked >= 9, "{what}: only {checked} gradients");
        }
    }
}

#[test]
fn fgsm_and_pgd_match_pytorch_and_stay_in_the_ball() {
    let _g = common::rng_lock();
    let (vs, net) = small(Head::Linear);
    let (x, y) = inputs();
    for norm in [Norm::Linf, Norm::L2] {
        let eps = if norm == Norm::Linf { 8.0 / 255.0 } else { 0.5 };
        for attack in [
            Attack::fgsm(norm, eps),
            Attack::pgd(norm, eps, eps / 4.0, 10),
        ] {
            tch::manual_seed(5);
            let start = attack.random_start(&x).to_kind(Kind::Double);
            let adv = attack.run(&net, &x, &y, Some(&start));
            let mut ins = weights(&vs);
            ins.extend([
                ("case".to_string(), Tensor::from(1i64)),
                ("x".into(), x.shallow_clone()),
                ("y".into(), y.shallow_clone()),
                ("start".into(), start.shallow_clone()),
                ("eps".into(), Tensor::from(attack.eps)),
                ("step".into(), Tensor::from(attack.step)),
                ("steps".into(), Tensor::from(attack.steps as i64)),
                ("norm".into(), Tensor::from((norm == Norm::L2) as i64)),
                (
                    "random_start".into(),
                    Tensor::from(attack.random_start as i64),
                ),
                ("head".into(), Tensor::from(0i64)),
            ]);
            let named: Vec<(&str, Tensor)> = ins
                .iter()
                .map(|(k, t)| (k.as_str(), t.shallow_clone()))
                .collect();
            let r = pyref("classify.py", &named);
            let what = format!("{} {norm:?}", attack.name());
            let diff = (&adv - &r["adv"]).abs().max().double_value(&[]);
            assert!(diff < 1e-9, "{what}: {diff}");
            let delta = &adv - &x;
            let size = match norm {
                Norm::Linf => delta.abs().max().double_value(&[]),
                Norm::L2 => delta
                    .flatten(1, -1)
                    .norm_scalaropt_dim(2, [1i64].as_slice(), false)
                    .max()
                    .double_value(&[]),
            };
            assert!(size <= eps + 1e-12, "{what}: left the ball ({size})");
            assert!(adv.min().double_value(&[]) >= 0.0 && adv.max().double_value(&[]) <= 1.0);
            assert!(size > eps * 0.2, "{what}: barely moved ({size})");
            // The attack hurts: the loss on the adversarial batch is higher.
            let loss = |v: &Tensor| {
                net.forward(v, false)
                    .cross_entropy_for_logits(&y)
                    .double_value(&[])
            };
            assert!(loss(&adv) > loss(&x), "{what}");
        }
    }
}

#[test]
fn ood_metrics_and_the_principal_score_match_sklearn_and_numpy() {
    let _g = common::rng_lock();
    tch::manual_seed(2);
    // Rounded scores: ties inside and across the two sets.
    let pos = (Tensor::randn([300], (Kind::Double, Device::Cpu)) * 2.0 + 1.0).round();
    let neg = (Tensor::randn([200], (Kind::Double, Device::Cpu)) * 2.0).round();
    let feats = Tensor::randn([90, 16], (Kind::Double, Device::Cpu));
    let labels = Tensor::arange(90, (Kind::Int64, Device::Cpu)).remainder(3);
    let test = Tensor::randn([40, 16], (Kind::Double, Device::Cpu));
    let r = pyref(
        "classify.py",
        &[
            ("case", Tensor::from(2i64)),
            ("pos", pos.shallow_clone()),
            ("neg", neg.shallow_clone()),
            ("feats", feats.shallow_clone()),
            ("labels", labels.shallow_clone()),
            ("test", test.shallow_clone()),
        ],
    );
    let v = |t: &Tensor| Vec::<f64>::try_from(t).unwrap();
    let m = gantry_metrics::ood_metrics(&v(&pos), &v(&neg)).unwrap();
    for (name, got) in [
        ("auroc", m.auroc),
        ("fpr95", m.fpr95),
        ("detection_error", m.detection_error),
        ("aupr_in", m.aupr_in),
        ("aupr_out", m.aupr_out),
    ] {
        let want = r[name].double_value(&[]);
        assert!(
            (got - want).abs() < 1e-12,
            "{name}: {got} vs sklearn {want}"
        );
    }
    let dirs = ood::principal_directions(&feats, &labels, 3).unwrap();
    let logits = Tensor::zeros([40, 3], (Kind::Double, Device::Cpu));
    let [principal, _, _] = ood::scores(&test, &logits, &dirs);
    let e = (&principal - &r["principal"]).abs().max().double_value(&[]);
    assert!(e < 1e-10, "principal score: {e}");
}

/// The reference AdaptiveMix classifier always uses the frozen orthogonal head on L2-normalised
/// features: `--mode adaptivemix` gets it unless a head is named; the other modes keep a linear
/// head; the resolved configuration says which ran.
#[test]
fn adaptivemix_defaults_to_the_reference_head() {
    use gantry::classify::ClassifyConfig;
    let head = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        ClassifyConfig::resolve(None, &sets).unwrap().model.head
    };
    assert_eq!(head(&["objective.mode=adaptivemix"]), Head::Orthogonal);
    assert_eq!(
        head(&["objective.mode=adaptivemix", "model.head=linear"]),
        Head::Linear
    );
    assert_eq!(head(&["objective.mode=ce"]), Head::Linear);
    assert_eq!(head(&["objective.mode=mixup"]), Head::Linear);
    let cfg = ClassifyConfig::resolve(None, &["objective.mode=adaptivemix".to_string()]).unwrap();
    assert!(
        gantry::util::TaskConfig::to_toml(&cfg).contains("head = \"orthogonal\""),
        "{}",
        gantry::util::TaskConfig::to_toml(&cfg)
    );
}

/// `[trunk.]X -> X`, `head.weight -> linear.weight`: gantry's `wrn` variables under the names of
/// the reference's state dict.
fn reference_names(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(k, t)| {
            let name = match k.as_str() {
                "head.weight" => "linear.weight".to_string(),
                _ => k.strip_prefix("trunk.").expect("under trunk.").to_string(),
            };
            (name, t.detach().copy())
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// gantry's `wrn` is the AdaptiveMix reference's WRN: its variables load into a transcription of
/// the reference's models.py with `load_state_dict(strict=True)` (every name and shape), and in
/// eval mode the embedding and the orthogonal logits agree in float64. WRN-16-2 covers a
/// projection shortcut at stride 1 and 2 and identity shortcuts.
#[test]
fn wrn_is_the_reference_wide_resnet() {
    let _rng = common::rng_lock();
    tch::manual_seed(5);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let cfg = NetConfig {
        backbone: Backbone::Wrn,
        head: Head::Orthogonal,
        depth: 16,
        widen: 2,
        mean: vec![0.0],
        std: vec![1.0],
    };
    let net = Net::new(&vs.root(), &cfg, 3, 5);
    vs.double();
    // Every BN away from its initial identity, so that a wrongly placed BN shows.
    for (k, v) in vs.variables() {
        let r = Tensor::rand(v.size(), (Kind::Double, Device::Cpu));
        let new = if k.ends_with("running_var")
            || k.ends_with("bn1.weight")
            || k.ends_with("bn2.weight")
        {
            r + 0.5
        } else if k.ends_with("running_mean") || k.ends_with("bn1.bias") || k.ends_with("bn2.bias")
        {
            (r - 0.5) * 0.2
        } else {
            continue;
        };
        tch::no_grad(|| v.shallow_clone().copy_(&new));
    }
    let x = Tensor::rand([4, 3, 32, 32], (Kind::Double, Device::Cpu));
    let mut named = reference_names(&vs);
    named.push(("x".into(), x.shallow_clone()));
    let named: Vec<(&str, Tensor)> = named
        .iter()
        .map(|(k, t)| (k.as_str(), t.shallow_clone()))
        .collect();
    let r = pyref("wrn_ref.py", &named);
    let e = net.embed(&x, false);
    assert!(
        rel_err(&e, &r["embedding"]) < 1e-10,
        "embedding {}",
        rel_err(&e, &r["embedding"])
    );
    let l = net.forward(&x, false);
    assert!(
        rel_err(&l, &r["ortho_logits"]) < 1e-10,
        "logits {}",
        rel_err(&l, &r["ortho_logits"])
    );
    // No BN-ReLU after the last group: the features are signed.
    assert!(r["features"].min().double_value(&[]) < 0.0);
}

/// The reference's init: conv weights N(0, sqrt(2 / (k * k * C_out))), conv biases within
/// PyTorch's default +-1/sqrt(fan_in), BN weight 1 and bias 0; the head and the reference's
/// unused top-level `bn1` are not trained.
#[test]
fn wrn_draws_the_reference_init() {
    let _rng = common::rng_lock();
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = NetConfig {
        backbone: Backbone::Wrn,
        head: Head::Orthogonal,
        depth: 10,
        widen: 4,
        ..NetConfig::default()
    };
    let _net = Net::new(&vs.root(), &cfg, 3, 10);
    let vars = vs.variables();
    let w = &vars["trunk.layer3.0.conv2.weight"];
    assert_eq!(w.size(), [256, 256, 3, 3]);
    let want = (2.0f64 / (9.0 * 256.0)).sqrt();
    let std = w.std(true).double_value(&[]);
    assert!((std / want - 1.0).abs() < 0.01, "std {std}, want {want}");
    assert!(w.mean(None).double_value(&[]).abs() < 3e-4);
    let s = &vars["trunk.layer2.0.shortcut.0.weight"];
    let want = (2.0f64 / 128.0).sqrt();
    let std = s.std(true).double_value(&[]);
    assert!(
        (std / want - 1.0).abs() < 0.05,
        "shortcut std {std}, want {want}"
    );
    let b = &vars["trunk.layer3.0.conv2.bias"];
    let bound = 1.0 / (256.0f64 * 9.0).sqrt();
    assert!(b.abs().max().double_value(&[]) <= bound);
    assert!(b.abs().max().double_value(&[]) > bound * 0.8);
    let bn_w = &vars["trunk.layer2.0.bn2.weight"];
    assert_eq!(bn_w.sum(None).double_value(&[]), bn_w.numel() as f64);
    assert_eq!(
        vars["trunk.layer2.0.bn2.bias"]
            .abs()
            .sum(None)
            .double_value(&[]),
        0.0
    );
    let trainable: Vec<String> = vs
        .trainable_variables()
        .iter()
        .map(|t| {
            vars.iter()
                .find(|(_, v)| v.data_ptr() == t.data_ptr())
                .map(|(k, _)| k.clone())
                .unwrap()
        })
        .collect();
    assert!(trainable
        .iter()
        .all(|k| k != "head.weight" && !k.starts_with("trunk.bn1.")));
    // conv1 (w, b) + 3 blocks x (bn1, conv1, bn2, conv2: 8) + 3 projections x 2.
    assert_eq!(trainable.len(), 2 + 3 * 8 + 3 * 2, "{trainable:?}");
}
