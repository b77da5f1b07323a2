//! The bad-input catalogue: every case runs the release binary with one bad input and expects a
//! non-zero exit (2 for bad input, 1 for a failed run), exactly one error line naming the
//! problem, no panic or backtrace, and nothing an earlier run wrote modified (checkpoints,
//! samples, logs, reports and sample folders are fingerprinted before and compared after).

mod common;

use common::gantry;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

const TINY: &[&str] = &[
    "--set",
    "data.size=64",
    "--set",
    "data.resolution=8",
    "--set",
    "model.ngf=4",
    "--set",
    "model.ndf=4",
    "--set",
    "model.z_dim=8",
    "--set",
    "train.batch_size=8",
    "--set",
    "train.threads=1",
    "--set",
    "train.log_every=1",
    "--set",
    "train.grid=4",
    "--set",
    "train.checkpoint_every=2",
    "--set",
    "train.keep_checkpoints=5",
];

/// Every file under `dir` with its size and content hash.
fn fingerprint(dir: &Path) -> BTreeMap<PathBuf, (u64, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == ".gantry.lock") {
                // A run's lock file names its latest holder: not work.
                continue;
            } else if let Ok(bytes) = std::fs::read(&p) {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut h);
                out.insert(p, (bytes.len() as u64, h.finish()));
            }
        }
    }
    out
}

/// One case: `args` (and environment variables), the expected exit code and a piece of the
/// one error line.
struct Case {
    args: Vec<String>,
    env: Vec<(String, String)>,
    code: i32,
    needle: String,
}

fn case(args: &[&str], code: i32, needle: &str) -> Case {
    case_env(&[], args, code, needle)
}

fn case_env(env: &[(&str, &str)], args: &[&str], code: i32, needle: &str) -> Case {
    Case {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        code,
        needle: needle.to_string(),
    }
}

/// A run directory whose one checkpoint says it belongs to another task (`arch`).
fn foreign_run(dir: &Path, arch: &str) -> String {
    let ck = dir.join("checkpoints/ckpt-0000001");
    std::fs::create_dir_all(&ck).unwrap();
    let meta = serde_json::json!({
        "format_version": 2, "gantry_version": "0.1.0", "step": 1, "images_seen": 8,
        "loader": {"epoch": 0, "index": 8}, "wall_seconds": 1.0, "seed_offset": 0,
        "world_size": 1, "arch": arch, "config": "[data]\nclasses = \"0-4\"\n",
    });
    std::fs::write(ck.join("meta.json"), meta.to_string()).unwrap();
    dir.to_string_lossy().to_string()
}

/// A TCP port nobody listens on (bound, then let go).
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port().to_string()
}

fn check(c: &Case, out: &Output) -> Result<(), String> {
    let err = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    if code != Some(c.code) {
        return Err(format!("exit {code:?}, wanted {}: {err}", c.code));
    }
    if err.contains("panicked") || err.contains("backtrace") || err.contains("RUST_BACKTRACE") {
        return Err(format!("a panic: {err}"));
    }
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    if errors.len() != 1 {
        return Err(format!("{} error lines: {err}", errors.len()));
    }
    let last = err.trim_end().lines().last().unwrap_or_default();
    if !last.starts_with("gantry: error: ") || !last.contains(&c.needle) {
        return Err(format!("wanted {:?} in the last line: {err}", c.needle));
    }
    if last.len() > 400 {
        return Err(format!("a {}-character line: {last}", last.len()));
    }
    Ok(())
}

#[test]
fn every_bad_input_is_one_line_a_nonzero_exit_and_leaves_earlier_work_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |name: &str| d.join(name).to_string_lossy().to_string();
    // Earlier work: a run with checkpoints, samples, a report; a sample folder and grid.
    let run = p("run");
    let mut args = vec!["train", "--out", &run, "--set", "train.steps=4"];
    args.extend_from_slice(TINY);
    let out = gantry(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(gantry(&["report", &run]).status.success());
    let samples = p("samples");
    assert!(gantry(&[
        "sample",
        "--checkpoint",
        &run,
        "--n",
        "3",
        "--out",
        &samples
    ])
    .status
    .success());
    let grid = p("grid.png");
    assert!(
        gantry(&["sample", "--checkpoint", &run, "--n", "4", "--out", &grid])
            .status
            .success()
    );

    // Hostile and broken files.
    let write = |name: &str, bytes: &[u8]| {
        let path = d.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_string_lossy().to_string()
    };
    let html = write("weights.pth", b"<html>404</html>");
    let empty = write("empty.pth", b"");
    let pickle_exec = write(
        "exec.pth",
        b"\x80\x02cos\nsystem\nq\x00X\x05\x00\x00\x00touchq\x01\x85q\x02Rq\x03.",
    );
    let bad_toml = write("bad.toml", b"[train\nsteps = 1");
    let wrong_type = write("wrong.toml", b"[train]\nsteps = \"many\"\n");
    let unknown_section = write("section.toml", b"[trian]\nsteps = 1\n");
    let unknown_preset = write("preset.toml", b"preset = \"nope\"\n");
    let not_utf8 = write("latin.toml", b"[train]\n# \xff\xfe\nsteps = 1\n");
    let folder = d.join("folder");
    std::fs::create_dir(&folder).unwrap();
    for i in 0..8 {
        std::fs::write(folder.join(format!("{i}.png")), b"not a png").unwrap();
    }
    let folder = folder.to_string_lossy().to_string();
    let empty_dir = d.join("empty-dir");
    std::fs::create_dir(&empty_dir).unwrap();
    let empty_dir = empty_dir.to_string_lossy().to_string();
    let one_image = d.join("one-image");
    std::fs::create_dir(&one_image).unwrap();
    image::RgbImage::new(8, 8)
        .save(one_image.join("a.png"))
        .unwrap();
    let one_image = one_image.to_string_lossy().to_string();
    let exp_dup = write(
        "dup.toml",
        b"name = \"x\"\nbase = \"shapes\"\nseeds = [0, 0]\n[[arm]]\nname = \"a\"\n",
    );
    let exp_noarm = write(
        "noarm.toml",
        b"name = \"x\"\nbase = \"shapes\"\nseeds = [0]\n",
    );
    let exp_bad_arm = write(
        "badarm.toml",
        b"name = \"x\"\nbase = \"shapes\"\nseeds = [0]\n[[arm]]\nname = \"a/b\"\n",
    );
    let exp_bad_set = write(
        "badset.toml",
        b"name = \"x\"\nbase = \"shapes\"\nseeds = [0]\n[[arm]]\nname = \"a\"\n[[arm]]\nname = \"b\"\nset = [\"fq.enabled=true\", \"fq.k=0\"]\n",
    );
    let ckpt2 = format!("{run}/checkpoints/ckpt-0000002");
    let nope = p("no-such-thing");
    let classifier_run = foreign_run(&d.join("classifier-run"), "classify/small");
    let translation_run = foreign_run(&d.join("translation-run"), "translate/ugatit");
    // A JPEG cut to a third among whole ones; a link to nothing among images.
    let cut = d.join("cut-jpeg");
    std::fs::create_dir(&cut).unwrap();
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_fn(128, 128, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 2) as u8, ((x * y) % 251) as u8])
    })
    .write_to(&mut jpeg, image::ImageFormat::Jpeg)
    .unwrap();
    let jpeg = jpeg.into_inner();
    for i in 0..8 {
        std::fs::write(cut.join(format!("{i}.jpg")), &jpeg).unwrap();
    }
    std::fs::write(cut.join("0.jpg"), &jpeg[..jpeg.len() / 3]).unwrap();
    let cut = cut.to_string_lossy().to_string();
    let linked = d.join("dangling");
    std::fs::create_dir(&linked).unwrap();
    for i in 0..8 {
        std::fs::write(linked.join(format!("{i}.jpg")), &jpeg).unwrap();
    }
    std::os::unix::fs::symlink(d.join("gone.jpg"), linked.join("9.jpg")).unwrap();
    let linked = linked.to_string_lossy().to_string();
    let garbage_run = d.join("garbage-run");
    std::fs::create_dir(&garbage_run).unwrap();
    std::fs::write(garbage_run.join("config.toml"), b"").unwrap();
    std::fs::write(
        garbage_run.join("metrics.jsonl"),
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let garbage_run = garbage_run.to_string_lossy().to_string();
    let port = closed_port();
    let folder_case = |out: &str, path: &str, needle: &str| {
        case(
            &[
                "train",
                "--out",
                &p(out),
                "--set",
                "data.kind=folder",
                "--set",
                &format!("data.path={path}"),
                "--set",
                "data.resolution=8",
                "--set",
                "train.batch_size=4",
                "--set",
                "train.steps=2",
            ],
            2,
            needle,
        )
    };

    // Foreign weights (tests/fixtures/interop, made with the official code) and broken copies.
    let fixture = |rel: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/interop")
            .join(rel)
            .to_string_lossy()
            .to_string()
    };
    let sg2 = fixture("sg2/sg2ada-uncond.pkl");
    let sg2_bytes = std::fs::read(&sg2).unwrap();
    let cut_pickle = write("cut.pkl", &sg2_bytes[..sg2_bytes.len() / 3]);
    // A safetensors header promising 1000 floats over 8 bytes of data.
    let lying = {
        let header = br#"{"w":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}"#;
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header);
        b.extend_from_slice(&[0u8; 8]);
        write("lying.safetensors", &b)
    };
    let ugatit_pt = fixture("ugatit/light/ugatit_params.pt");
    let mut cases = vec![
        case(
            &[
                "sample",
                "--checkpoint",
                &fixture("sg2/hostile-reduce.pkl"),
                "--out",
                &p("h.png"),
            ],
            2,
            "G is a call of builtins.exec, not a network (refused; nothing in the file was run)",
        ),
        case(
            &["sample", "--checkpoint", &pickle_exec, "--out", &p("h.png")],
            2,
            "not a network pickle: the top level is a call of os.system",
        ),
        case(
            &["sample", "--checkpoint", &html, "--out", &p("h.png")],
            2,
            "is neither a network pickle nor a torch.save / safetensors file",
        ),
        case(
            &["sample", "--checkpoint", &cut_pickle, "--out", &p("h.png")],
            2,
            "truncated pickle",
        ),
        case(
            &["sample", "--checkpoint", &lying, "--out", &p("h.png")],
            2,
            "corrupt safetensors file",
        ),
        case(
            &["sample", "--checkpoint", &ugatit_pt, "--out", &p("h.png")],
            2,
            "is a U-GAT-IT translation model (gantry translate --checkpoint takes it)",
        ),
        case(&["eval", "--checkpoint", &sg2, "--n", "8"], 2, "--data: "),
        case(
            &[
                "translate",
                "--checkpoint",
                &sg2,
                "--in",
                &one_image,
                "--out",
                &p("t"),
            ],
            2,
            "is a network pickle (a GAN), not a UGATIT-pytorch checkpoint",
        ),
        case(
            &[
                "train",
                "--init",
                &sg2,
                "--out",
                &p("init-32"),
                "--set",
                "train.steps=1",
            ],
            2,
            "--init: ",
        ),
        case(
            &["train", "--init", &sg2, "--resume", &run],
            2,
            "--init: cannot be combined with --resume",
        ),
        case(
            &[
                "train",
                "--init",
                &sg2,
                "--set",
                "model.z_dim=3",
                "--dry-run",
            ],
            2,
            "model.z_dim=3: the architecture comes from --init",
        ),
        case(
            &["export", "--checkpoint", &run, "--out", &p("exp")],
            2,
            "dcgan has no official PyTorch implementation",
        ),
        case(
            &[
                "export",
                "--checkpoint",
                &classifier_run,
                "--out",
                &p("exp"),
            ],
            2,
            "is a classifier run",
        ),
    ];
    cases.extend(vec![
        // train: configuration (the gate runs before any work, --dry-run included)
        case(&["train", "--config", "nope"], 2, "unknown preset \"nope\""),
        case(
            &["train", "--config", "adaptivemix-wrn-cifar"],
            2,
            "is a classifier preset: gantry classify train --config adaptivemix-wrn-cifar",
        ),
        case(&["train", "--config", &bad_toml], 2, "bad TOML (line 1)"),
        case(&["train", "--config", &wrong_type], 2, "train.steps"),
        case(
            &["train", "--config", &unknown_section],
            2,
            "trian: unknown key",
        ),
        case(
            &["train", "--config", &unknown_preset],
            2,
            "preset: unknown preset",
        ),
        case(&["train", "--config", &not_utf8], 2, "latin.toml"),
        case(&["train", "--config", &nope], 2, "does not exist"),
        case(
            &["train", "--dry-run", "--set", "fq.kk=3"],
            2,
            "fq.kk: unknown key",
        ),
        case(
            &["train", "--dry-run", "--set", "train.steps=-1"],
            2,
            "train.steps",
        ),
        case(
            &["train", "--dry-run", "--set", "train.steps=0"],
            2,
            "train.steps: must be at least 1",
        ),
        case(
            &["train", "--dry-run", "--set", "train.batch_size=0"],
            2,
            "train.batch_size",
        ),
        case(
            &["train", "--dry-run", "--set", "train.g_lr=inf"],
            2,
            "train.g_lr",
        ),
        case(
            &["train", "--dry-run", "--set", "train.d_lr=-0.1"],
            2,
            "train.d_lr",
        ),
        case(
            &["train", "--dry-run", "--set", "train.g_betas=[0.5, 1.0]"],
            2,
            "train.g_betas",
        ),
        case(
            &["train", "--dry-run", "--set", "train.ema.decay=1.5"],
            2,
            "train.ema.decay",
        ),
        case(
            &["train", "--dry-run", "--set", "train.device=tpu"],
            2,
            "train.device",
        ),
        case(
            &["train", "--dry-run", "--set", "train.on_nan=retry"],
            2,
            "train.on_nan",
        ),
        case(
            &["train", "--dry-run", "--set", "train.precision=fp8"],
            2,
            "train.precision",
        ),
        case(
            &["train", "--dry-run", "--set", "train.loss_scale=0"],
            2,
            "train.loss_scale",
        ),
        case(
            &[
                "train",
                "--dry-run",
                "--set",
                "train.collective_timeout_s=0",
            ],
            2,
            "train.collective_timeout_s",
        ),
        case(
            &["train", "--dry-run", "--set", "data.resolution=48"],
            2,
            "data.resolution",
        ),
        case(
            &["train", "--dry-run", "--set", "data.channels=2"],
            2,
            "data.channels",
        ),
        case(
            &["train", "--dry-run", "--set", "data.kind=folder"],
            2,
            "data.path: required",
        ),
        case(
            &["train", "--dry-run", "--set", "data.kind=svhn"],
            2,
            "data.kind",
        ),
        case(
            &["train", "--dry-run", "--set", "data.split=val"],
            2,
            "data.split",
        ),
        case(
            &["train", "--dry-run", "--set", "data.workers=0"],
            2,
            "data.workers",
        ),
        case(
            &["train", "--dry-run", "--set", "model.arch=vit"],
            2,
            "model.arch: unknown architecture",
        ),
        case(
            &["train", "--dry-run", "--set", "model.arch=mlp"],
            2,
            "model.arch: mlp does not fit",
        ),
        case(
            &["train", "--dry-run", "--set", "model.channel_base=8"],
            2,
            "model.channel_base: unknown key",
        ),
        case(
            &["train", "--dry-run", "--set", "model.d_norm=group"],
            2,
            "model.d_norm",
        ),
        case(
            &["train", "--dry-run", "--set", "model.ngf=0"],
            2,
            "model.ngf: must be positive",
        ),
        case(
            &[
                "train",
                "--dry-run",
                "--config",
                "biggan-cifar",
                "--set",
                "data.path=/x",
                "--set",
                "model.attention=32",
            ],
            2,
            "model.attention",
        ),
        case(
            &[
                "train",
                "--dry-run",
                "--config",
                "biggan-cifar",
                "--set",
                "data.path=/x",
                "--set",
                "model.hier=true",
            ],
            2,
            "model.hier: needs model.shared_embedding",
        ),
        case(
            &[
                "train",
                "--dry-run",
                "--config",
                "stylegan2-32-small",
                "--set",
                "model.style_mixing=2",
            ],
            2,
            "model.style_mixing",
        ),
        case(
            &["train", "--dry-run", "--set", "loss.kind=wasserstein"],
            2,
            "loss.kind",
        ),
        case(
            &["train", "--dry-run", "--set", "loss.gp.enabled=true"],
            2,
            "loss.gp.enabled",
        ),
        case(
            &["train", "--dry-run", "--set", "loss.pl.weight=2"],
            2,
            "loss.pl.weight",
        ),
        case(
            &["train", "--dry-run", "--set", "loss.r1.every=0"],
            2,
            "loss.r1.every",
        ),
        case(
            &[
                "train",
                "--dry-run",
                "--set",
                "fq.enabled=true",
                "--set",
                "fq.layers=[\"b64\"]",
            ],
            2,
            "fq.layers",
        ),
        case(
            &[
                "train",
                "--dry-run",
                "--set",
                "fq.enabled=true",
                "--set",
                "fq.k=[8, 8]",
            ],
            2,
            "fq.k: 2 values for 1 layers",
        ),
        case(
            &[
                "train",
                "--dry-run",
                "--set",
                "fq.enabled=true",
                "--set",
                "fq.decay=1.0",
            ],
            2,
            "fq.decay",
        ),
        case(
            &[
                "train",
                "--dry-run",
                "--set",
                "adaptivemix.enabled=true",
                "--set",
                "adaptivemix.alpha=0",
            ],
            2,
            "adaptivemix.alpha",
        ),
        case(
            &["train", "--dry-run", "--set", "diffaugment.policy=colour"],
            2,
            "diffaugment.policy",
        ),
        case(
            &[
                "train",
                "--dry-run",
                "--set",
                "eval.every=10",
                "--set",
                "eval.best=is",
            ],
            2,
            "eval.best",
        ),
        case(
            &[
                "train",
                "--dry-run",
                "--set",
                "eval.every=10",
                "--set",
                "eval.metrics=[]",
            ],
            2,
            "eval.metrics: is empty",
        ),
        case(
            &["train", "--dry-run", "--set", "eval.features=bogus"],
            2,
            "valid: inception, classifier:PATH",
        ),
        case(
            &[
                "train",
                "--dry-run",
                "--set",
                "eval.every=10",
                "--set",
                "eval.reference=minst:/x",
            ],
            2,
            "eval.reference",
        ),
        case(
            &["train", "--dry-run", "--set", "noequals"],
            2,
            "expected --set key=value",
        ),
        case(&["train", "--device", "gpu"], 2, "valid: cpu, cuda, cuda:N"),
        case(&["train", "--nproc", "0"], 2, "--nproc"),
        case(
            &["train", "--nproc", "3", "--set", "train.batch_size=64"],
            2,
            "train.batch_size: 64 does not split evenly over 3",
        ),
        // train: data and files
        case(
            &[
                "train",
                "--out",
                &p("a"),
                "--set",
                "data.kind=folder",
                "--set",
                &format!("data.path={nope}"),
            ],
            2,
            "no-such-thing",
        ),
        case(
            &[
                "train",
                "--out",
                &p("b"),
                "--set",
                "data.kind=folder",
                "--set",
                &format!("data.path={empty_dir}"),
            ],
            2,
            "empty-dir",
        ),
        case(
            &[
                "train",
                "--out",
                &p("c"),
                "--set",
                "data.kind=folder",
                "--set",
                &format!("data.path={folder}"),
                "--set",
                "data.resolution=8",
                "--set",
                "train.batch_size=4",
            ],
            2,
            "cannot decode image",
        ),
        case(
            &["train", "--out", &p("d"), "--set", "data.size=4"],
            2,
            "train.batch_size: 64 is larger than the data set",
        ),
        case(
            &[
                "train",
                "--out",
                &p("e"),
                "--set",
                "model.arch=biggan",
                "--set",
                "data.kind=folder",
                "--set",
                &format!("data.path={one_image}"),
                "--set",
                "data.resolution=8",
                "--set",
                "train.batch_size=1",
            ],
            2,
            "biggan is class-conditional",
        ),
        case(&["train", "--out", &run], 2, "already holds a run"),
        case(
            &["train", "--out", "/proc/gantry-run"],
            2,
            "/proc/gantry-run",
        ),
        case(&["train", "--resume", &nope], 2, "does not exist"),
        case(
            &["train", "--resume", d.to_str().unwrap()],
            2,
            "is not a gantry run directory",
        ),
        case(
            &["train", "--resume", &run, "--set", "model.ndf=8"],
            2,
            "model.ndf: differs from the run being resumed",
        ),
        case(
            &["train", "--resume", &run, "--config", "shapes"],
            2,
            "--config: cannot be combined with --resume",
        ),
        case(
            &["train", "--resume", &ckpt2, "--set", "train.g_lr=0.1"],
            2,
            "train.g_lr: differs",
        ),
        // sample
        case(
            &["sample", "--checkpoint", &nope, "--out", &p("s.png")],
            2,
            "does not exist",
        ),
        case(
            &[
                "sample",
                "--checkpoint",
                &run,
                "--n",
                "0",
                "--out",
                &p("s.png"),
            ],
            2,
            "--n: must be at least 1",
        ),
        case(
            &[
                "sample",
                "--checkpoint",
                &run,
                "--n",
                "100000",
                "--out",
                &p("big.png"),
            ],
            2,
            "do not fit one grid",
        ),
        case(
            &[
                "sample",
                "--checkpoint",
                &run,
                "--n",
                "100000000000000",
                "--out",
                &p("many"),
            ],
            2,
            "GB free",
        ),
        case(
            &[
                "sample",
                "--checkpoint",
                &run,
                "--n",
                "3",
                "--out",
                &samples,
            ],
            2,
            "already holds samples",
        ),
        case(
            &["sample", "--checkpoint", &run, "--n", "4", "--out", &grid],
            2,
            "already exists; pass --force",
        ),
        case(
            &[
                "sample",
                "--checkpoint",
                &run,
                "--device",
                "cuda:x",
                "--out",
                &p("s2.png"),
            ],
            2,
            "valid: cpu, cuda, cuda:N",
        ),
        // fid
        case(
            &["fid", &samples, &samples, "--weights", &html],
            2,
            "weights.pth",
        ),
        case(
            &["fid", &samples, &samples, "--weights", &empty],
            2,
            "empty.pth",
        ),
        case(
            &["fid", &samples, &samples, "--weights", &pickle_exec],
            2,
            "exec.pth",
        ),
        case(
            &["fid", &samples, &samples, "--weights", &nope],
            2,
            "pt_inception-2015-12-05-6726825d.pth",
        ),
        case(
            &["fid", &samples, &samples, "--features", "bogus"],
            2,
            "valid: inception, classifier:PATH",
        ),
        case(
            &["fid", &samples, &samples, "--mode", "tf1"],
            2,
            "valid: pytorch-fid, tf, clean",
        ),
        case(
            &["fid", &samples, &samples, "--precision", "fp8"],
            2,
            "valid: fp32, bf16, fp16",
        ),
        case(
            &[
                "fid",
                &samples,
                &samples,
                "--features",
                &format!("classifier:{nope}"),
            ],
            2,
            "classifier not found",
        ),
        // A missing side is named before any network loads.
        case(
            &["fid", &nope, &samples, "--weights", &nope],
            2,
            "no-such-thing: does not exist (an image folder",
        ),
        case(
            &[
                "fid",
                &empty_dir,
                &samples,
                "--features",
                &format!("classifier:{html}"),
            ],
            2,
            "weights.pth",
        ),
        case(&["fid", "minst:/x", &samples], 2, "unknown kind 'minst'"),
        case(&["fid", &p("stats.npz"), &samples], 2, "stats.npz"),
        // eval
        case(
            &["eval", "--checkpoint", &run, "--n", "0"],
            2,
            "--n: must be at least 1",
        ),
        case(
            &["eval", "--checkpoint", &run, "--metrics", "fid,fidd"],
            2,
            "valid: fid, kid, is, pr, gmm",
        ),
        case(&["eval", "--checkpoint", &nope], 2, "does not exist"),
        case(
            &[
                "eval",
                "--checkpoint",
                &run,
                "--metrics",
                "gmm",
                "--n",
                "10",
            ],
            2,
            "--metrics: gmm is for 2-D point data",
        ),
        // classifier
        case(
            &[
                "classifier",
                "train",
                "--data",
                &nope,
                "--out",
                &p("c.safetensors"),
            ],
            2,
            "no-such-thing",
        ),
        case(
            &[
                "classifier",
                "train",
                "--data",
                "gmm-25",
                "--out",
                &p("c.safetensors"),
            ],
            2,
            "2-D points, not images",
        ),
        case(
            &[
                "classifier",
                "train",
                "--data",
                &format!("folder:{one_image}"),
                "--out",
                &p("c.safetensors"),
            ],
            2,
            "not inside a class sub-folder",
        ),
        case(
            &[
                "classifier",
                "train",
                "--data",
                "shapes",
                "--epochs",
                "0",
                "--out",
                &p("c.safetensors"),
            ],
            2,
            "train.epochs",
        ),
        // experiment
        case(&["experiment", "--config", &nope], 2, "no-such-thing"),
        case(
            &["experiment", "--config", &exp_dup],
            2,
            "seeds: [0, 0] repeats a seed",
        ),
        case(&["experiment", "--config", &exp_noarm], 2, "arm"),
        case(
            &["experiment", "--config", &exp_bad_arm],
            2,
            "arm names must be unique",
        ),
        case(
            &["experiment", "--config", &exp_bad_set],
            2,
            "fq.k: must be at least 1 (arm b)",
        ),
        case(
            &["experiment", "--config", &bad_toml],
            2,
            "bad.toml: bad TOML (line 1)",
        ),
        // report, bench, misc
        case(&["report", &nope], 2, "is not a gantry run directory"),
        case(
            &["report", d.to_str().unwrap()],
            2,
            "is not a gantry run directory",
        ),
        case(&["bench", "--steps", "0"], 2, "--steps: must be at least 1"),
        case(
            &["bench", "--set", "train.batch_size=0"],
            2,
            "train.batch_size",
        ),
        case(&["bench", "--config", "nope"], 2, "unknown preset"),
        case(&["frobnicate"], 2, "unrecognized subcommand"),
        case(&["train", "--no-such-flag"], 2, "--no-such-flag"),
        // Sizes no machine holds: refused by the gate, or one line when an allocation fails.
        case(
            &["train", "--dry-run", "--set", "data.resolution=65536"],
            2,
            "data.resolution: 65536x65536 makes one batch of 64 images",
        ),
        case(
            &[
                "train",
                "--out",
                &p("fq-huge"),
                "--set",
                "fq.enabled=true",
                "--set",
                "fq.k=[2000000000]",
            ],
            1,
            "out of memory while building the plug-ins (fq.chunk = 8192, fq.k = [2000000000]",
        ),
        case_env(
            &[("GANTRY_MEMORY_LIMIT", "20000000")],
            &["train", "--out", &p("wide"), "--set", "model.ngf=256"],
            2,
            "model: the networks and plug-ins hold",
        ),
        // c10d's own logging stays off the terminal: one line when rank 0 is not there.
        case_env(
            &[
                ("RANK", "1"),
                ("WORLD_SIZE", "2"),
                ("MASTER_ADDR", "127.0.0.1"),
                ("MASTER_PORT", &port),
            ],
            &[
                "train",
                "--out",
                &p("lonely"),
                "--set",
                "train.collective_timeout_s=2",
            ],
            1,
            "rank 1",
        ),
        case(
            &[
                "sample",
                "--checkpoint",
                &run,
                "--class",
                "1",
                "--out",
                &p("k.png"),
            ],
            2,
            "--class: this generator is not class-conditional",
        ),
        // Messages that name what is wrong.
        case(
            &["sample", "--n", "4"],
            2,
            "--checkpoint <CHECKPOINT>, --out <OUT>",
        ),
        case(&["classify", "ood", "--run", &run], 2, "--ood <OOD>"),
        case(
            &[
                "sample",
                "--checkpoint",
                &classifier_run,
                "--out",
                &p("c.png"),
            ],
            2,
            "is a classifier run, not a GAN (gantry classify",
        ),
        case(
            &["train", "--resume", &classifier_run],
            2,
            "is a classifier run, not a GAN",
        ),
        case(
            &["eval", "--checkpoint", &translation_run],
            2,
            "is a translation run, not a GAN (gantry translate",
        ),
        case(
            &["train", "--device", "cuda", "--nproc", "2"],
            2,
            "no CUDA GPU is visible",
        ),
        // A resume asking for fewer steps than were done changes nothing.
        case(
            &["train", "--resume", &run, "--set", "train.steps=2"],
            2,
            "train.steps: 2 is below the 4 steps",
        ),
        // Bad input that used to pass without a word.
        case(
            &["train", "--nproc", "0", "--dry-run"],
            2,
            "--nproc: must be at least 1",
        ),
        case(
            &["train", "--nproc", "100000", "--dry-run"],
            2,
            "--nproc: 100000 is more than this machine takes",
        ),
        case_env(
            &[("WORLD_SIZE", "0"), ("RANK", "0")],
            &["train", "--out", &p("world0"), "--set", "train.steps=1"],
            2,
            "WORLD_SIZE: 0 is not a number of processes",
        ),
        case(
            &["classify", "attack", "--run", &run, "--batch", "0"],
            2,
            "--batch: must be at least 1",
        ),
        folder_case("cut", &cut, "0.jpg: cannot decode image: truncated JPEG"),
        folder_case("dangling", &linked, "9.jpg is a broken symbolic link"),
        case(&["report", &garbage_run], 2, "line 1 is not a JSON object"),
    ]);
    assert!(cases.len() >= 60, "{} cases", cases.len());

    let before = fingerprint(d);
    let mut failures = Vec::new();
    for c in &cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(&c.args)
            .envs(c.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run gantry");
        if let Err(why) = check(c, &out) {
            failures.push(format!("gantry {}: {why}", c.args.join(" ")));
        }
    }
    // Nothing earlier work wrote changed (files the cases created themselves are new, not
    // modified).
    let after = fingerprint(d);
    for (path, print) in &before {
        match after.get(path) {
            Some(p) if p == print => {}
            Some(_) => failures.push(format!("{} was modified", path.display())),
            None => failures.push(format!("{} disappeared", path.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// A finished tiny run of `steps` steps in `dir`.
fn tiny_run(dir: &Path, steps: u32) {
    let out = dir.to_string_lossy().to_string();
    let steps = format!("train.steps={steps}");
    let mut args = vec!["train", "--out", &out, "--set", &steps];
    args.extend_from_slice(TINY);
    let o = gantry(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn two_trainings_into_one_directory_never_both_run() {
    let dir = tempfile::tempdir().unwrap();
    for attempt in 0..20 {
        let run = dir.path().join(format!("run-{attempt}"));
        let out = run.to_string_lossy().to_string();
        let start = || {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"));
            cmd.args(["train", "--out", &out, "--set", "train.steps=100000"])
                .args(TINY)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        };
        let (a, b) = (start(), start());
        // The refused one ends by itself; the other trains until told to stop.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut children = [Some(a), Some(b)];
        let refused = loop {
            let done = children
                .iter_mut()
                .position(|c| c.as_mut().is_some_and(|c| c.try_wait().unwrap().is_some()));
            if let Some(i) = done {
                break children[i].take().unwrap().wait_with_output().unwrap();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "attempt {attempt}: neither ended"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let err = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(2), "attempt {attempt}: {err}");
        assert!(
            err.contains("is in use by another gantry process (pid "),
            "attempt {attempt}: {err}"
        );
        let running = children.iter_mut().find_map(Option::take).unwrap();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(running.id() as i32, libc::SIGINT) };
        let o = running.wait_with_output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(130),
            "attempt {attempt}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // One run's files, consistent: its configuration is its checkpoints'.
        let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
        let ckpts: Vec<_> = std::fs::read_dir(run.join("checkpoints"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("ckpt-"))
            .collect();
        assert!(!ckpts.is_empty(), "attempt {attempt}");
        for c in ckpts {
            let meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(c.path().join("meta.json")).unwrap())
                    .unwrap();
            assert_eq!(
                meta["config"].as_str().unwrap(),
                config,
                "attempt {attempt}"
            );
        }
    }
}

#[test]
fn a_one_image_folder_with_batch_one_trains_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("one");
    std::fs::create_dir(&images).unwrap();
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 30, 30]))
        .save(images.join("a.png"))
        .unwrap();
    let run = dir.path().join("run");
    let data = format!("data.path={}", images.display());
    let mut args = vec![
        "train",
        "--out",
        run.to_str().unwrap(),
        "--set",
        "data.kind=folder",
        "--set",
        &data,
        "--set",
        "train.steps=5",
    ];
    args.extend_from_slice(TINY);
    args.extend_from_slice(&[
        "--set",
        "train.batch_size=1",
        "--set",
        "train.checkpoint_every=2",
    ]);
    let o = gantry(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        run.join("checkpoints/ckpt-0000005/meta.json").exists(),
        "{err}"
    );
}

#[test]
fn resumes_that_do_nothing_or_die_leave_the_run_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    tiny_run(&run, 4);
    let before = fingerprint(&run);
    // Nothing to do: said, and nothing written.
    let o = gantry(&["train", "--resume", run.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("has already trained 4 steps"), "{err}");
    assert_eq!(fingerprint(&run), before);
    // A resume killed by a file-size limit at its first write (as on a full disk) leaves the
    // run's configuration and checkpoints as they were.
    let o = std::process::Command::new("bash")
        .args([
            "-c",
            "ulimit -f 1; exec \"$0\" train --resume \"$1\" --set train.steps=8",
        ])
        .arg(env!("CARGO_BIN_EXE_gantry"))
        .arg(&run)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let after = fingerprint(&run);
    for (path, print) in &before {
        assert_eq!(after.get(path), Some(print), "{} changed", path.display());
    }
}

#[test]
fn half_deleted_checkpoints_are_skipped_with_a_word_and_cleaned_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    tiny_run(&run, 4);
    let ckpts = run.join("checkpoints");
    // What a kill during an old prune, and during a save, could leave.
    for name in ["ckpt-0000001", "ckpt-0000009"] {
        std::fs::create_dir(ckpts.join(name)).unwrap();
        std::fs::write(ckpts.join(name).join("g.safetensors"), b"half").unwrap();
    }
    std::fs::create_dir(ckpts.join(".trash-ckpt-0000000")).unwrap();
    let grid = dir.path().join("grid.png");
    let o = gantry(&[
        "sample",
        "--checkpoint",
        run.to_str().unwrap(),
        "--n",
        "4",
        "--out",
        grid.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("ckpt-0000009 has no meta.json (a save or deletion was cut short) and was skipped; using")
            && err.contains("ckpt-0000004"),
        "{err}"
    );
    let o = gantry(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--set",
        "train.steps=6",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for name in ["ckpt-0000001", "ckpt-0000009", ".trash-ckpt-0000000"] {
        assert!(!ckpts.join(name).exists(), "{name} is still there");
    }
    assert!(ckpts.join("ckpt-0000006/meta.json").exists());
}
