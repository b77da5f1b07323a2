//! Every `gantry ...` command in the fenced `sh` blocks of README.md and docs/*.md works as
//! written. Each is classified:
//! - run: finishes in seconds on a CPU; it runs exactly as written in a fresh directory that holds
//!   what it names (`runs/cats`, `photos/`, ...: tiny runs and folders made here first, and
//!   `../shared/data` as beside the repository), and must exit 0;
//! - dry run: a training (minutes to days, GPUs, data sets not here); it runs as written plus
//!   `--dry-run`, which resolves and checks the whole configuration, and must exit 0;
//! - parse: needs data, weights or time not here (`fid`, `eval`, published pickles,
//!   experiments); clap must accept its arguments (`Cli::try_parse_from`), and an experiment's
//!   file must load.
//!
//! Every command also goes through clap. Commands known to fail as written are listed in
//! [`KNOWN`] with the error they give today and why; the test fails when one of them changes (fixed:
//! take it off the list). Run with `--nocapture` for the table of commands, plans and times.

mod common;

use clap::Parser;
use common::repo_root;
use gantry_cli::Cli;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One command as documented.
#[derive(Clone, Debug)]
struct DocCommand {
    /// `README.md:37`.
    place: String,
    /// The words after `gantry`, variables expanded, quotes removed.
    args: Vec<String>,
}

impl DocCommand {
    fn text(&self) -> String {
        format!("gantry {}", self.args.join(" "))
    }
}

/// Splits a shell line into words: quotes group and are removed, `$NAME` / `${NAME}` expand
/// from `vars` (not inside single quotes), `#` starting a word begins a comment.
fn shell_words(line: &str, vars: &[(String, String)]) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '#') if !in_word => break,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (q, '$') if q != Some('\'') => {
                let braced = chars.peek() == Some(&'{');
                if braced {
                    chars.next();
                }
                let mut name = String::new();
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_alphanumeric() || n == '_' {
                        name.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if braced {
                    chars.next();
                }
                let value = vars
                    .iter()
                    .rev()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| panic!("${name} is not set in the block: {line}"));
                word.push_str(&value);
                in_word = true;
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// `[--direction b2a] [--details]`: the documented options as optional groups. The command
/// without any of them, and with all of them.
fn variants(words: &[String]) -> Vec<Vec<String>> {
    if !words.iter().any(|w| w.starts_with('[')) {
        return vec![words.to_vec()];
    }
    let (mut bare, mut full) = (Vec::new(), Vec::new());
    let mut optional = false;
    for w in words {
        let mut w = w.as_str();
        let opens = w.starts_with('[');
        if opens {
            optional = true;
            w = &w[1..];
        }
        let closes = w.ends_with(']');
        if closes {
            w = &w[..w.len() - 1];
        }
        if !optional {
            bare.push(w.to_string());
        }
        full.push(w.to_string());
        if closes {
            optional = false;
        }
    }
    vec![bare, full]
}

/// The `gantry` commands of the fenced shell blocks of one markdown file.
fn commands_in(path: &Path, name: &str) -> Vec<DocCommand> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    let mut shell = None::<bool>;
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut pending = String::new();
    let mut start = 0;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(lang) = trimmed.strip_prefix("```") {
            shell = match shell {
                Some(_) => None,
                None => Some(matches!(lang.trim(), "sh" | "bash" | "shell" | "console")),
            };
            vars.clear();
            continue;
        }
        if shell != Some(true) {
            continue;
        }
        if pending.is_empty() {
            start = i + 1;
        }
        // A trailing backslash continues the command on the next line.
        match line.trim_end().strip_suffix('\\') {
            Some(part) => {
                pending.push_str(part);
                pending.push(' ');
                continue;
            }
            None => pending.push_str(line),
        }
        let logical = std::mem::take(&mut pending);
        let words = shell_words(&logical, &vars);
        if let [assignment] = words.as_slice() {
            if let Some((k, v)) = assignment.split_once('=') {
                if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    vars.push((k.to_string(), v.to_string()));
                    continue;
                }
            }
        }
        let Some(at) = words
            .iter()
            .position(|w| w == "gantry" || w.ends_with("/gantry"))
        else {
            continue;
        };
        for args in variants(&words[at + 1..]) {
            out.push(DocCommand {
                place: format!("{name}:{start}"),
                args,
            });
        }
    }
    out
}

/// README.md, then docs/*.md in name order.
fn doc_commands() -> Vec<DocCommand> {
    let root = repo_root();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
        .iter()
        .flat_map(|f| {
            let name = f.strip_prefix(&root).unwrap().display().to_string();
            commands_in(f, &name)
        })
        .collect()
}

/// Commands documented outside code blocks, checked like the others.
fn inline_commands() -> Vec<DocCommand> {
    vec![DocCommand {
        place: "docs/metrics.md:32 (inline)".into(),
        args: "fid shapes mnist@test:../shared/data/mnist --n 500 --weights W --precision bf16"
            .split_whitespace()
            .map(String::from)
            .collect(),
    }]
}

/// Commands that fail as written today: (command, a piece of its error, why).
const KNOWN: &[(&str, &str, &str)] = &[];

/// How a command is checked.
#[derive(Debug, PartialEq)]
enum Plan {
    Run,
    DryRun,
    Parse(&'static str),
    Known(&'static str, &'static str),
}

/// Commands that finish in seconds on a CPU once what they name exists.
const RUN: &[&str] = &[
    "gantry presets",
    "gantry train --resume runs/cats",
    "gantry sample --checkpoint runs/cats --n 64 --out grid.png",
    "gantry sample --checkpoint runs/cats --n 1000 --out samples/",
    "gantry sample --checkpoint runs/biggan --class 3 --out cats.png",
    "gantry export --checkpoint runs/cats --out export/",
    "gantry export --checkpoint runs/ffhq --out export/",
    "gantry export --checkpoint runs/mnist-dcgan --out export/ --format gantry",
    "gantry report runs/cats",
    "gantry bench --set train.threads=2",
    "gantry classify attack --run runs/clf",
    "gantry classify ood --run runs/clf --ood mnist:../shared/data/mnist#5-9 --ood noise:uniform",
    "gantry classify eval --run runs/clf-am",
    "gantry classify attack --run runs/clf-am",
    "gantry classify ood --run runs/clf-am --ood mnist:../shared/data/mnist#5-9 --ood noise:gaussian --ood noise:uniform",
    "gantry classify train --resume runs/clf-am",
    "gantry classify train --dry-run --set model.head=orthogonal",
    "gantry translate --checkpoint runs/00000-ugatit-light-64 --in photos/ --out anime/",
    "gantry translate --checkpoint runs/00000-ugatit-light-64 --in photos/ --out anime/ --direction b2a --details",
];

fn plan(c: &DocCommand) -> Plan {
    let text = c.text();
    if let Some((_, error, why)) = KNOWN.iter().find(|(k, _, _)| *k == text) {
        return Plan::Known(error, why);
    }
    if RUN.contains(&text.as_str()) {
        return Plan::Run;
    }
    let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["train", rest @ ..] if rest.contains(&"--init") => {
            Plan::Parse("fine-tunes a published network pickle (not here)")
        }
        ["train", ..] | ["classify", "train", ..] => Plan::DryRun,
        ["experiment", ..] => Plan::Parse("arms x seeds of trainings; its file is loaded"),
        ["fid" | "eval", ..] => Plan::Parse("needs a data set and the FID Inception weights"),
        ["classifier", "train", ..] => Plan::Parse("trains on MNIST for minutes"),
        ["sample" | "translate", ..] => Plan::Parse("needs published weights (not here)"),
        _ => Plan::Parse("not classified: clap's check only"),
    }
}

/// Small runs and folders the commands name, made once and linked into each command's
/// directory.
struct Fixtures {
    dir: PathBuf,
    made: Vec<String>,
}

fn gantry_in(cwd: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .current_dir(cwd)
        .env("GANTRY_CACHE", cwd.join(".cache"))
        .output()
        .expect("run gantry")
}

fn must(out: std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "making {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A folder of `n` small RGB images, `sub`-folders of `classes` classes when given.
fn images(dir: &Path, n: usize, side: usize, classes: usize) {
    for class in 0..classes.max(1) {
        let d = if classes > 0 {
            dir.join(format!("c{class}"))
        } else {
            dir.to_path_buf()
        };
        let shade = class as f32 / classes.max(1) as f32 - 0.5;
        let px: Vec<f32> = (0..n * 3 * side * side)
            .map(|i| (shade + 0.4 * ((i % 17) as f32 / 17.0 - 0.5)).clamp(-1.0, 1.0))
            .collect();
        gantry::data::image_io::save_images(&px, [n, 3, side, side], &d, "x").unwrap();
    }
}

impl Fixtures {
    fn new(dir: PathBuf) -> Fixtures {
        Fixtures {
            dir,
            made: Vec::new(),
        }
    }

    fn mnist() -> PathBuf {
        let m = repo_root().join("../shared/data/mnist");
        assert!(
            m.exists(),
            "{} is missing (the documented commands use it)",
            m.display()
        );
        m.canonicalize().unwrap()
    }

    /// The fixture `name` (`runs/cats`, ...), made on first use; its path.
    fn get(&mut self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        if self.made.iter().any(|m| m == name) {
            return path;
        }
        let p = path.to_str().unwrap().to_string();
        let base = self.dir.clone();
        let tiny = |arch: &[&str]| {
            let mut args = vec![
                "train",
                "--out",
                &p,
                "--set",
                "data.resolution=8",
                "--set",
                "train.batch_size=4",
                "--set",
                "train.steps=1",
                "--set",
                "train.threads=1",
                "--set",
                "train.grid=4",
            ];
            args.extend_from_slice(arch);
            must(gantry_in(&base, &args), name);
        };
        match name {
            // Any run: a tiny StyleGAN2 (which `export`'s default reference format takes).
            "runs/cats" | "runs/ffhq" => tiny(&[
                "--set",
                "data.size=16",
                "--set",
                "model.arch=stylegan2",
                "--set",
                "model.channel_base=64",
                "--set",
                "model.channel_max=8",
                "--set",
                "model.z_dim=8",
                "--set",
                "model.w_dim=8",
                "--set",
                "model.mapping_layers=1",
            ]),
            "runs/mnist-dcgan" => tiny(&[
                "--set",
                "data.size=16",
                "--set",
                "model.ngf=4",
                "--set",
                "model.ndf=4",
                "--set",
                "model.z_dim=8",
            ]),
            // Class-conditional, with a class 3.
            "runs/biggan" => {
                let labelled = self.dir.join("labelled");
                images(&labelled, 2, 8, 4);
                let data = format!("data.path={}", labelled.display());
                tiny(&[
                    "--set",
                    "model.arch=biggan",
                    "--set",
                    "model.ngf=4",
                    "--set",
                    "model.ndf=4",
                    "--set",
                    "model.z_dim=8",
                    "--set",
                    "data.kind=folder",
                    "--set",
                    &data,
                    "--set",
                    "data.labels=true",
                ]);
            }
            // Digits 0-4, as documented, with a small network at 8x8 for one epoch.
            "runs/clf" | "runs/clf-am" => {
                let data = format!("mnist:{}", Self::mnist().display());
                must(
                    gantry_in(
                        &base,
                        &[
                            "classify",
                            "train",
                            "--data",
                            &data,
                            "--classes",
                            "0-4",
                            "--model",
                            "small",
                            "--epochs",
                            "1",
                            "--out",
                            &p,
                            "--set",
                            "data.resolution=8",
                            "--set",
                            "train.threads=1",
                        ],
                    ),
                    name,
                );
            }
            "runs/00000-ugatit-light-64" => {
                let layout = self.dir.join("ugatit-data");
                for part in ["trainA", "trainB", "testA", "testB"] {
                    images(&layout.join(part), 4, 16, 0);
                }
                let cfg = self.dir.join("ugatit.toml");
                std::fs::write(
                    &cfg,
                    format!(
                        "task = \"translate\"\n[data]\npath = {:?}\nresolution = 16\nworkers = 1\n\
                         [model]\nch = 2\nn_res = 1\nlight = true\nglobal_layers = 4\nlocal_layers = 3\n\
                         [train]\nsteps = 1\nbatch_size = 2\nthreads = 1\n",
                        layout.display().to_string()
                    ),
                )
                .unwrap();
                must(
                    gantry_in(
                        &base,
                        &["train", "--config", cfg.to_str().unwrap(), "--out", &p],
                    ),
                    name,
                );
            }
            "photos" => images(&path, 3, 20, 0),
            "my_images" => images(&path, 3, 64, 0),
            "my.toml" => std::fs::write(&path, "[train]\nsteps = 100\n").unwrap(),
            other => panic!("no fixture for {other}: add one to Fixtures::get"),
        }
        self.made.push(name.to_string());
        path
    }

    /// A fresh directory for `c`: `work/` (where it runs) holding links to what it names, and
    /// `shared/data` beside it as beside the repository.
    fn workdir(&mut self, c: &DocCommand, index: usize) -> PathBuf {
        let top = self.dir.join(format!("cmd-{index:02}"));
        let work = top.join("work");
        std::fs::create_dir_all(work.join("runs")).unwrap();
        std::fs::create_dir_all(top.join("shared")).unwrap();
        let data = repo_root().join("../shared/data");
        if data.exists() {
            std::os::unix::fs::symlink(data.canonicalize().unwrap(), top.join("shared/data"))
                .unwrap();
        }
        for w in &c.args {
            let w = w.trim_end_matches('/');
            let named = (w.starts_with("runs/") && w.matches('/').count() == 1)
                || ["photos", "my.toml"].contains(&w);
            if !named {
                continue;
            }
            let name = w;
            let from = self.get(name);
            std::os::unix::fs::symlink(from, work.join(name)).unwrap();
        }
        work
    }
}

#[test]
fn every_documented_command_runs_or_parses_as_written() {
    let mut commands = doc_commands();
    assert!(
        commands.len() >= 40,
        "only {} commands found: is the extraction broken?",
        commands.len()
    );
    commands.extend(inline_commands());
    let tmp = tempfile::tempdir().unwrap();
    let mut fixtures = Fixtures::new(tmp.path().to_path_buf());
    let mut failures = Vec::new();
    let mut table = Vec::new();
    let mut unused_known: Vec<&str> = KNOWN.iter().map(|k| k.0).collect();
    let mut unused_run: Vec<&str> = RUN.to_vec();
    for (i, c) in commands.iter().enumerate() {
        let text = c.text();
        unused_known.retain(|k| *k != text);
        unused_run.retain(|k| *k != text);
        // Every command: clap takes it.
        if let Err(e) =
            Cli::try_parse_from(std::iter::once("gantry").chain(c.args.iter().map(String::as_str)))
        {
            failures.push(format!(
                "{}: `{text}`: clap refuses it: {}",
                c.place,
                gantry_cli::error_line(&e)
            ));
            continue;
        }
        let plan = plan(c);
        let started = Instant::now();
        let outcome = match &plan {
            Plan::Parse(_) => {
                if c.args[0] == "experiment" {
                    let file = c
                        .args
                        .iter()
                        .skip_while(|a| *a != "--config")
                        .nth(1)
                        .unwrap();
                    let sets: Vec<String> = c
                        .args
                        .windows(2)
                        .filter(|w| w[0] == "--set")
                        .map(|w| match w[1].split_once('=') {
                            // A folder of the user's, relative to where they run it: here.
                            Some((k, "my_images/")) => {
                                format!("{k}={}", fixtures.get("my_images").display())
                            }
                            _ => w[1].clone(),
                        })
                        .collect();
                    // As documented, with GANTRY_FID_WEIGHTS set (a file; its contents are only
                    // read when FID is computed).
                    let weights = tmp.path().join("pt_inception-2015-12-05-6726825d.pth");
                    std::fs::write(&weights, b"").unwrap();
                    std::env::set_var("GANTRY_FID_WEIGHTS", &weights);
                    let loaded = gantry::experiment::ExperimentConfig::from_file(
                        &repo_root().join(file),
                        &sets,
                    );
                    std::env::remove_var("GANTRY_FID_WEIGHTS");
                    match loaded {
                        Ok(_) => Ok(()),
                        Err(e) => Err(format!("its experiment file does not load: {e}")),
                    }
                } else {
                    Ok(())
                }
            }
            Plan::Run | Plan::DryRun | Plan::Known(..) => {
                let work = fixtures.workdir(c, i);
                let mut args: Vec<&str> = c.args.iter().map(String::as_str).collect();
                if plan == Plan::DryRun && !args.contains(&"--dry-run") {
                    args.push("--dry-run");
                }
                let out = gantry_in(&work, &args);
                let err = String::from_utf8_lossy(&out.stderr).to_string();
                match &plan {
                    Plan::Known(error, _) if out.status.success() || !err.contains(error) => {
                        Err(format!(
                            "is listed in KNOWN as failing with {error:?}, and now {}: update KNOWN",
                            if out.status.success() {
                                "succeeds".to_string()
                            } else {
                                format!("fails with: {}", err.trim())
                            }
                        ))
                    }
                    Plan::Known(..) => Ok(()),
                    _ if out.status.success() => Ok(()),
                    _ => Err(format!(
                        "exit {:?} as written{}: {}",
                        out.status.code(),
                        if plan == Plan::DryRun { " plus --dry-run" } else { "" },
                        err.trim()
                    )),
                }
            }
        };
        let took = started.elapsed();
        if plan == Plan::Run && took > Duration::from_secs(60) {
            failures.push(format!(
                "{}: `{text}` took {took:.1?}: too long to run as written here; check it with --dry-run or clap instead",
                c.place
            ));
        }
        if let Err(why) = &outcome {
            failures.push(format!("{}: `{text}` {why}", c.place));
        }
        table.push(format!(
            "{:<34} {:<8} {:>6.1}s {} `{text}`{}",
            c.place,
            match plan {
                Plan::Run => "run",
                Plan::DryRun => "dry-run",
                Plan::Parse(_) => "parse",
                Plan::Known(..) => "KNOWN",
            },
            took.as_secs_f64(),
            if outcome.is_ok() { "ok  " } else { "FAIL" },
            match plan {
                Plan::Parse(why) => format!("  ({why})"),
                Plan::Known(_, why) => format!("  ({why})"),
                _ => String::new(),
            }
        ));
    }
    println!("{}", table.join("\n"));
    for k in unused_known {
        failures.push(format!("KNOWN lists `{k}`, which no document has any more"));
    }
    for r in unused_run {
        failures.push(format!("RUN lists `{r}`, which no document has any more"));
    }
    assert!(
        failures.is_empty(),
        "{} documented command(s) do not work as written:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn extraction_follows_the_shell() {
    let vars = vec![("D".to_string(), "../data".to_string())];
    assert_eq!(
        shell_words(
            r#"gantry classify ood --ood "mnist:$D#5-9" --ood noise:uniform   # a comment"#,
            &vars
        ),
        [
            "gantry",
            "classify",
            "ood",
            "--ood",
            "mnist:../data#5-9",
            "--ood",
            "noise:uniform"
        ]
    );
    assert_eq!(
        shell_words("a 'b $D' ${D}/x", &vars),
        ["a", "b $D", "../data/x"]
    );
    let words: Vec<String> = [
        "translate",
        "--in",
        "p/",
        "[--direction",
        "b2a]",
        "[--details]",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(
        variants(&words),
        [
            vec!["translate", "--in", "p/"],
            vec!["translate", "--in", "p/", "--direction", "b2a", "--details"]
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("x.md");
    std::fs::write(
        &md,
        "text `gantry nope`\n```sh\nD=/d\ngantry train --set data.path=$D \\\n  --set a=1  # c\n\
         torchrun --x 1 \\\n    --no-python gantry bench\nscripts/x.sh\n```\n```python\ngantry = 1\n```\n",
    )
    .unwrap();
    let found: Vec<(String, String)> = commands_in(&md, "x.md")
        .into_iter()
        .map(|c| (c.place.clone(), c.text()))
        .collect();
    assert_eq!(
        found,
        [
            (
                "x.md:4".into(),
                "gantry train --set data.path=/d --set a=1".into()
            ),
            ("x.md:6".into(), "gantry bench".into())
        ]
    );
}
