//! The c10d bridge across real processes: this test binary starts itself twice as the two ranks
//! of a gloo job (the `child` test does the work when `GANTRY_TEST_CHILD` is set) and checks each
//! collective's result on every rank.

use gantry::device::DeviceSpec;
use gantry::dist::{Comm, JobEnv};
use std::process::Command;
use std::time::{Duration, Instant};
use tch::{Kind, Tensor};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `mode` in `world` processes of this test binary; returns their outputs.
fn spawn(mode: &str, world: usize) -> Vec<std::process::Output> {
    let port = free_port().to_string();
    let children: Vec<_> = (0..world)
        .map(|rank| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "child", "--nocapture", "--test-threads=1"])
                .env("GANTRY_TEST_CHILD", mode)
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

fn join(timeout_s: f64) -> Comm {
    let env = JobEnv::from_env().unwrap().expect("a job environment");
    Comm::join(&env, DeviceSpec::Cpu, timeout_s).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap()
}

/// The child side: does nothing unless started by one of the tests below.
#[test]
fn child() {
    let Ok(mode) = std::env::var("GANTRY_TEST_CHILD") else {
        return;
    };
    match mode.as_str() {
        "collectives" => {
            let c = join(60.0);
            let r = c.rank as f64;
            let t = Tensor::from_slice(&[r + 1.0, 10.0 * r]);
            c.all_reduce_sum(&t).unwrap();
            assert_eq!(values(&t), [3.0, 10.0]);
            let m = Tensor::from_slice(&[r]);
            c.all_reduce_max(&m).unwrap();
            assert_eq!(values(&m), [1.0]);
            let b = Tensor::from_slice(&[r + 5.0; 3]);
            c.broadcast(&b, 1).unwrap();
            assert_eq!(values(&b), [6.0; 3]);
            let g = c
                .all_gather(&Tensor::from_slice(&[r, r]).view([1, 2]))
                .unwrap();
            assert_eq!(values(&g), [0.0, 0.0, 1.0, 1.0]);
            // Bucketed averaging of several tensors, one undefined.
            let ts = [
                Tensor::from_slice(&[r; 4]),
                Tensor::new(),
                Tensor::from_slice(&[2.0 * r + 1.0; 3]).to_kind(Kind::Double),
            ];
            c.average(&ts).unwrap();
            assert_eq!(values(&ts[0]), [0.5; 4]);
            assert_eq!(values(&ts[2]), [2.0; 3]);
            assert!(c.any(c.rank == 1).unwrap());
            assert!(!c.any(false).unwrap());
            // The differentiable sum: each rank's loss sum(y * (rank + 1)) reaches every rank's x,
            // so dL/dx = sum over ranks of (rank + 1) = 3.
            let x = Tensor::from_slice(&[1.0f64, 2.0]).set_requires_grad(true);
            let y = c.sum_differentiable(&x).unwrap();
            assert_eq!(values(&y), [2.0, 4.0]);
            (y * (r + 1.0)).sum(Kind::Double).backward();
            assert_eq!(values(&x.grad()), [3.0, 3.0]);
            let f = c
                .fingerprints(&[Tensor::from_slice(&[1.0f32, 2.0])])
                .unwrap();
            assert_eq!(f.size(), [2, 2]);
            assert!(f.get(0).equal(&f.get(1)));
            c.barrier().unwrap();
        }
        "syncbn" => {
            // Each rank holds half of one batch; synchronised BatchNorm over both must give what
            // plain BatchNorm gives on the whole batch: outputs, running statistics, gradients.
            let c = join(60.0);
            tch::manual_seed(3);
            let opts = (Kind::Double, tch::Device::Cpu);
            let full = Tensor::randn([6, 3, 4, 4], opts) * 2.0 + 1.0;
            let w = Tensor::randn([3], opts);
            let b = Tensor::randn([3], opts);
            let gy = Tensor::randn([6, 3, 4, 4], opts);
            let run = |x: &Tensor, gy: &Tensor, sync: bool| {
                let x = x.copy().set_requires_grad(true);
                let (w, b) = (
                    w.copy().set_requires_grad(true),
                    b.copy().set_requires_grad(true),
                );
                let (rm, rv) = (Tensor::zeros([3], opts), Tensor::ones([3], opts));
                gantry::nn::norm::set_sync(sync.then(|| c.clone()));
                let y = gantry::nn::norm::normalise(&x, Some(&w), Some(&b), &rm, &rv, true);
                gantry::nn::norm::set_sync(None);
                (&y * gy).sum(Kind::Double).backward();
                (y, x.grad(), w.grad(), b.grad(), rm, rv)
            };
            let half = full.narrow(0, 3 * c.rank as i64, 3);
            let gh = gy.narrow(0, 3 * c.rank as i64, 3);
            let (y, gx, gw, gb, rm, rv) = run(&half, &gh, true);
            let (y_full, gx_full, gw_full, gb_full, rm_full, rv_full) = run(&full, &gy, false);
            let close = |a: &Tensor, b: &Tensor, what: &str| {
                let err = (a - b).abs().max().double_value(&[]);
                assert!(err < 1e-10, "{what}: {err}");
            };
            close(&y, &y_full.narrow(0, 3 * c.rank as i64, 3), "y");
            close(&gx, &gx_full.narrow(0, 3 * c.rank as i64, 3), "grad x");
            close(&rm, &rm_full, "running mean");
            close(&rv, &rv_full, "running var");
            // Parameter gradients: each rank has its share; their sum is the whole batch's.
            for (g, full, what) in [(gw, gw_full, "grad w"), (gb, gb_full, "grad b")] {
                c.all_reduce_sum(&g).unwrap();
                close(&g, &full, what);
            }
            // fp16 activations with 2 x 65,536 values per channel: the count and the sums of
            // squares pass fp16's 65,504, so the statistics must accumulate in fp32.
            let big = Tensor::randn([2, 2, 256, 256], opts) * 0.5 + 3.0;
            let (rm, rv) = (
                Tensor::zeros([2], (Kind::Float, tch::Device::Cpu)),
                Tensor::ones([2], (Kind::Float, tch::Device::Cpu)),
            );
            gantry::nn::norm::set_sync(Some(c.clone()));
            let y =
                gantry::nn::norm::normalise(&big.to_kind(Kind::Half), None, None, &rm, &rv, true);
            gantry::nn::norm::set_sync(None);
            assert_eq!(y.kind(), Kind::Half);
            let all = Tensor::cat(&[big.shallow_clone(), big.shallow_clone()], 0);
            let want = (&big - all.mean_dim(&[0i64, 2, 3][..], true, Kind::Double))
                / (all.var_dim(&[0i64, 2, 3][..], false, true) + 1e-5).sqrt();
            let err = (y.to_kind(Kind::Double) - want)
                .abs()
                .max()
                .double_value(&[]);
            assert!(err < 0.02, "fp16 synchronised BatchNorm off by {err}");
            let mean = all.mean_dim(&[0i64, 2, 3][..], false, Kind::Double);
            let err = (rm.to_kind(Kind::Double) - mean * 0.1)
                .abs()
                .max()
                .double_value(&[]);
            assert!(err < 1e-3, "fp16 running mean off by {err}");
        }
        "hangs" => {
            let c = join(2.0);
            if c.rank == 1 {
                std::thread::sleep(std::time::Duration::from_secs(8));
                return;
            }
            let t0 = std::time::Instant::now();
            let e = c
                .all_reduce_sum(&Tensor::from_slice(&[1.0f32]))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("rank 0: all-reduce failed"), "{e}");
            assert!(t0.elapsed().as_secs_f64() < 6.0, "{:?}", t0.elapsed());
            println!("HANGS-OK");
        }
        "eval" => {
            // Split generation: rank 0 receives all n features, in rank order, each share being
            // what its rank computes alone from its own latent stream; the others receive none.
            let c = join(60.0);
            let dir = std::path::PathBuf::from(std::env::var("GANTRY_TEST_DIR").unwrap());
            let clf = dir.join("clf");
            if c.is_main() {
                let mut cfg =
                    gantry::classify::features_preset("shapes", 8, 1, 0, Default::default())
                        .unwrap();
                cfg.data.limit = Some(64);
                cfg.train.batch_size = 16;
                let stop = std::sync::atomic::AtomicBool::new(false);
                gantry::classify::train(
                    &cfg,
                    &clf,
                    gantry::classify::Start::Fresh,
                    &stop,
                    &mut |_| {},
                )
                .unwrap();
            }
            c.barrier().unwrap();
            let ex = gantry::classify::load(&clf, Some(tch::Device::Cpu)).unwrap();
            let vs = tch::nn::VarStore::new(tch::Device::Cpu);
            tch::manual_seed(1);
            let g = gantry::models::build_generator(
                vs.root(),
                &gantry::models::ModelConfig::Dcgan(gantry::models::dcgan::DcganConfig {
                    ngf: 4,
                    ndf: 4,
                    z_dim: 8,
                    ..Default::default()
                }),
                &gantry::models::DataShape::image(3, 8, None),
            )
            .unwrap();
            let n = 7;
            let all = gantry::eval::generator_features_split(
                g.as_ref(),
                None,
                n,
                5,
                tch::Device::Cpu,
                &ex,
                &c,
                |_, _| {},
            )
            .unwrap();
            // Gathered where the metrics are computed, rank 0, and nowhere else.
            let Some(all) = all else {
                assert_ne!(c.rank, 0);
                return;
            };
            assert_eq!(c.rank, 0);
            let pool = all.pool().unwrap();
            assert_eq!(pool.size()[0], n as i64);
            let share = n.div_ceil(2) as i64;
            for rank in 0..2i64 {
                let own = gantry::eval::generator_features_stream(
                    g.as_ref(),
                    None,
                    share as usize,
                    5,
                    rank as u64,
                    tch::Device::Cpu,
                    &ex,
                )
                .unwrap()
                .pool()
                .unwrap();
                let at = share * rank;
                let len = (n as i64 - at).min(share);
                assert!(pool.narrow(0, at, len).equal(&own.narrow(0, 0, len)));
            }
        }
        "attempt" => {
            // One attempt of a torchrun job, on the agent's store: join, then one all-reduce.
            let c = join(20.0);
            let t = Tensor::from_slice(&[c.rank as f32 + 1.0]);
            c.all_reduce_sum(&t).unwrap();
            assert_eq!(values(&t), [3.0]);
            c.barrier().unwrap();
            // Under torchrun: the first attempt fails (rank 1 dies), so the agent starts another.
            let attempt = std::env::var("TORCHELASTIC_RESTART_COUNT").unwrap_or_default();
            if std::env::var_os("GANTRY_TEST_FAIL_FIRST").is_some() && attempt == "0" {
                if c.rank == 1 {
                    std::process::exit(3);
                }
                // Rank 0 waits for the agent to stop it.
                std::thread::sleep(Duration::from_secs(60));
            }
            println!("ATTEMPT-OK");
        }
        "dies" => {
            let c = join(5.0);
            if c.rank == 1 {
                std::process::exit(3);
            }
            let t = Tensor::from_slice(&[1.0f32]);
            let e = c.all_reduce_sum(&t).unwrap_err().to_string();
            assert!(
                e.starts_with("rank 0: all-reduce failed (another rank may have died or hung)"),
                "{e}"
            );
            println!("DIES-OK");
        }
        other => panic!("unknown child mode {other}"),
    }
}

#[test]
fn collectives_agree_across_two_processes() {
    for out in spawn("collectives", 2) {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn synchronised_batch_norm_equals_batch_norm_on_the_whole_batch() {
    for out in spawn("syncbn", 2) {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A rank that hangs makes the other's collective fail at the timeout, with one line.
#[test]
fn a_hung_rank_ends_the_others_collectives_at_the_timeout() {
    let outs = spawn("hangs", 2);
    assert!(
        outs[0].status.success() && String::from_utf8_lossy(&outs[0].stdout).contains("HANGS-OK"),
        "{}",
        String::from_utf8_lossy(&outs[0].stderr)
    );
}

#[test]
fn evaluation_splits_generation_over_the_ranks() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("GANTRY_TEST_DIR", dir.path());
    for out in spawn("eval", 2) {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A rank that dies makes the other's next collective fail with one line, within the timeout.
#[test]
fn a_dead_rank_ends_the_others_collectives() {
    let t0 = std::time::Instant::now();
    let outs = spawn("dies", 2);
    assert_eq!(outs[1].status.code(), Some(3));
    assert!(
        outs[0].status.success() && String::from_utf8_lossy(&outs[0].stdout).contains("DIES-OK"),
        "{}",
        String::from_utf8_lossy(&outs[0].stderr)
    );
    assert!(t0.elapsed().as_secs() < 60, "{:?}", t0.elapsed());
}

/// torchrun's agent keeps its store across a job's attempts (`--max-restarts`): after the first
/// attempt fails (rank 1 dies), the second attempt's ranks, with the next
/// `TORCHELASTIC_RESTART_COUNT`, join on the same live store. With keys shared between attempts
/// they read the first attempt's addresses and fail to connect.
#[test]
fn a_restarted_torchrun_attempt_joins_on_the_agents_live_store() {
    let torchrun =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/torchrun");
    let t0 = Instant::now();
    let out = Command::new(&torchrun)
        .args([
            "--standalone",
            "--nproc-per-node",
            "2",
            "--max-restarts",
            "1",
            "--no-python",
        ])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("GANTRY_TEST_CHILD", "attempt")
        .env("GANTRY_TEST_FAIL_FIRST", "1")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", torchrun.display()));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.matches("ATTEMPT-OK").count(),
        2,
        "{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("exitcode: 3"),
        "the first attempt did not fail: {stderr}"
    );
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
}

/// A job environment for this process, without touching the real environment.
fn job(rank: usize, world: usize, addr: &str, port: u16) -> JobEnv {
    let vars = [
        ("RANK", rank.to_string()),
        ("WORLD_SIZE", world.to_string()),
        ("MASTER_ADDR", addr.to_string()),
        ("MASTER_PORT", port.to_string()),
    ];
    JobEnv::from_vars(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
        .unwrap()
        .unwrap()
}

/// Joins `env` with `timeout_s`; the error's text, and how long it took to come.
fn join_error(env: &JobEnv, timeout_s: f64) -> (String, Duration) {
    let t0 = Instant::now();
    let e = Comm::join(env, DeviceSpec::Cpu, timeout_s)
        .map(|_| ())
        .expect_err("the join should fail")
        .to_string();
    (e, t0.elapsed())
}

#[test]
fn an_unresolvable_master_addr_says_so_at_once() {
    let (e, took) = join_error(&job(1, 2, "no-such-host.invalid", free_port()), 30.0);
    assert!(
        e.starts_with("rank 1: cannot resolve MASTER_ADDR=no-such-host.invalid"),
        "{e}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// Another program holds MASTER_PORT: rank 0 says so at once; a client, which it accepts and
/// never answers, gives up at the timeout.
#[test]
fn a_port_held_by_another_program_is_named() {
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let (e, took) = join_error(&job(0, 2, "127.0.0.1", port), 30.0);
    assert!(
        e.contains(&format!("port {port} (MASTER_PORT) is already in use")),
        "{e}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    let (e, took) = join_error(&job(1, 2, "127.0.0.1", port), 2.0);
    assert!(
        e.contains("did not answer as the job's store within 2 s")
            && e.contains(&format!("MASTER_PORT={port}")),
        "{e}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// Rank 0 started alone names the ranks that did not join, at the timeout.
#[test]
fn ranks_that_do_not_join_are_named() {
    let port = free_port();
    let (e, took) = join_error(&job(0, 3, "127.0.0.1", port), 2.0);
    assert!(
        e.starts_with("rank 0: ranks 1, 2 of 3 did not join within 2 s (are they started?"),
        "{e}"
    );
    assert!(e.contains(&format!("MASTER_PORT={port}")), "{e}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// A rank whose store never comes up (rank 0 not started) says so at the timeout.
#[test]
fn an_unreachable_store_is_named_at_the_timeout() {
    let port = free_port();
    let (e, took) = join_error(&job(1, 2, "127.0.0.1", port), 2.0);
    assert!(
        e.starts_with(&format!(
            "rank 1: cannot reach the job's store at 127.0.0.1:{port} within 2 s (is rank 0 started?"
        )),
        "{e}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}
