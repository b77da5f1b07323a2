//! The report pages in a real browser: a short run and a short experiment are trained, their
//! pages written, and each is opened in headless Chromium (Debian's `chromium-headless-shell` or
//! `chromium`; `scripts/setup-chromium.sh` installs it, `GANTRY_CHROMIUM` names another). For
//! each page: a screenshot that is not blank, no console message (the pages carry no script, so
//! any is an error), every picture loaded (a probe script, added to a copy of the page beside it,
//! checks each `<img>` after the load event and reports through the console and the DOM), and
//! the DOM holds the expected pictures and tables. A missing Chromium fails the test, as a
//! missing virtualenv does: CI always has it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

fn chromium() -> PathBuf {
    let mut names: Vec<String> = std::env::var("GANTRY_CHROMIUM").into_iter().collect();
    names.extend(
        [
            "chromium-headless-shell",
            "chromium",
            "chromium-browser",
            "google-chrome",
        ]
        .map(String::from),
    );
    for name in &names {
        let p = Path::new(name);
        if p.is_absolute() && p.exists() {
            return p.to_path_buf();
        }
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            if dir.join(name).is_file() {
                return dir.join(name);
            }
        }
    }
    panic!("no Chromium on PATH: run scripts/setup-chromium.sh (or set GANTRY_CHROMIUM)");
}

/// Headless Chromium on `page` with `args`; returns (stdout, stderr).
fn browse(page: &Path, profile: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(chromium())
        .args([
            "--headless",
            // Root in a container has no user namespace for the sandbox; these are our own files.
            "--no-sandbox",
            "--disable-gpu",
            // Containers' /dev/shm is often 64 MB.
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "chromium failed on {}: {stderr}",
        page.display()
    );
    (String::from_utf8_lossy(&out.stdout).to_string(), stderr)
}

const PROBE: &str = r#"<script>window.addEventListener("load",function(){var bad=[];for(var i=0;i<document.images.length;i++){var im=document.images[i];if(!im.complete||im.naturalWidth===0){bad.push(im.getAttribute("src"));}}if(bad.length){console.error("broken images: "+bad.join(" "));}document.documentElement.setAttribute("data-probe","images="+document.images.length+" broken="+bad.length);});</script>"#;

/// Console lines of a Chromium log (`[..:INFO:CONSOLE:12] "message", source: ..`).
fn console(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .collect()
}

/// Checks one page in the browser and returns its DOM; the screenshot goes to `shot`.
fn check_page(page: &Path, shot: &Path, min_images: usize) -> String {
    let profile = tempfile::tempdir().unwrap();
    let (_, log) = browse(
        page,
        profile.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,1600",
        ],
    );
    assert!(
        console(&log).is_empty(),
        "{}: console: {log}",
        page.display()
    );
    let img = image::open(shot).expect("a PNG screenshot").to_luma8();
    assert_eq!((img.width(), img.height()), (1200, 1600));
    let n = img.len() as f64;
    let mean = img.pixels().map(|p| p.0[0] as f64).sum::<f64>() / n;
    let var = img
        .pixels()
        .map(|p| (p.0[0] as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let white = img.pixels().filter(|p| p.0[0] >= 250).count() as f64 / n;
    assert!(
        var > 200.0 && white < 0.97,
        "{}: a blank screenshot (variance {var:.0}, {:.1}% white)",
        page.display(),
        100.0 * white
    );

    // The probe: the same page (same directory, so the same relative links) plus a script.
    let html = std::fs::read_to_string(page).unwrap();
    assert!(html.contains("</body>"));
    let probe = page.with_file_name("probe.html");
    std::fs::write(&probe, html.replace("</body>", &format!("{PROBE}</body>"))).unwrap();
    let (dom, log) = browse(&probe, profile.path(), &["--dump-dom"]);
    std::fs::remove_file(&probe).unwrap();
    let problems: Vec<&str> = console(&log);
    assert!(problems.is_empty(), "{}: {problems:?}", page.display());
    let tag = "data-probe=\"images=";
    let at = dom
        .find(tag)
        .unwrap_or_else(|| panic!("the probe did not run: {dom}"));
    let rest = &dom[at + tag.len()..];
    let images: usize = rest[..rest.find(' ').unwrap()].parse().unwrap();
    assert!(
        rest.starts_with(&format!("{images} broken=0\"")),
        "{rest:.40}"
    );
    assert!(
        images >= min_images,
        "{images} pictures in {}",
        page.display()
    );
    dom
}

/// Where the screenshots go: `GANTRY_REPORT_SHOTS` (e.g. docs/ to refresh its pictures), else a
/// temporary directory.
fn shots() -> (Option<tempfile::TempDir>, PathBuf) {
    match std::env::var("GANTRY_REPORT_SHOTS") {
        Ok(d) => {
            std::fs::create_dir_all(&d).unwrap();
            (None, PathBuf::from(d))
        }
        Err(_) => {
            let t = tempfile::tempdir().unwrap();
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    }
}

#[test]
fn run_and_experiment_pages_render_in_chromium() {
    let (_keep, shot_dir) = shots();
    let t0 = std::time::Instant::now();

    // A run: losses, plug-in statistics, evaluations every 20 steps, samples.
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let sets: Vec<String> = [
        "train.steps=60",
        "train.batch_size=32",
        "train.log_every=1",
        "train.sample_every=20",
        "train.threads=1",
        "data.size=256",
        "eval.every=20",
        "eval.n=200",
        "adaptivemix.enabled=true",
    ]
    .map(String::from)
    .to_vec();
    let cfg = gantry::RunConfig::resolve(Some("gmm-25"), &sets).unwrap();
    drop(common::train(cfg, &run));
    let index = gantry::report::write(&run).unwrap();
    let trained = t0.elapsed().as_secs_f64();
    let dom = check_page(&index, &shot_dir.join("report-run.png"), 6);
    for needle in [
        "losses.png?v=",
        "adaptivemix.png?v=",
        "eval-modes.png?v=",
        "../samples/step-0000060.png?v=",
        "<td>eval/kl</td>",
        "Finished: step 60 of 60",
        "<th>metric</th>",
    ] {
        assert!(
            dom.contains(needle),
            "{needle} missing from the run page: {dom}"
        );
    }
    assert!(!dom.contains("http-equiv=\"refresh\""));

    // An experiment: two arms x two seeds.
    let out = dir.path().join("exp");
    let exp = gantry::experiment::ExperimentConfig {
        name: "browser".into(),
        base: "gmm-25".into(),
        set: [
            "train.steps=20",
            "train.batch_size=32",
            "train.log_every=2",
            "train.sample_every=10",
            "train.threads=1",
            "data.size=256",
            "eval.every=10",
            "eval.n=200",
        ]
        .map(String::from)
        .to_vec(),
        seeds: vec![0, 1],
        parallel: 1,
        nproc: 1,
        arms: ["baseline", "adaptivemix"]
            .iter()
            .map(|a| gantry::experiment::Arm {
                name: a.to_string(),
                set: if *a == "baseline" {
                    vec![]
                } else {
                    vec!["adaptivemix.enabled=true".into()]
                },
            })
            .collect(),
        task: gantry::experiment::Task::Gan,
        evaluate: None,
    };
    gantry::experiment::run(&exp, &out, &AtomicBool::new(false), None, |_| {}).unwrap();
    let page = out.join("report/report.html");
    let dom = check_page(&page, &shot_dir.join("report-experiment.png"), 5);
    for needle in [
        "<th>arm</th>",
        "<td>baseline</td>",
        "<td>adaptivemix</td>",
        "<h2>Final evaluation</h2>",
        "curve-kl.png?v=",
        "curve-loss_d_adv.png?v=",
        "samples-adaptivemix.png?v=",
        "Finished: all 4 runs done",
    ] {
        assert!(
            dom.contains(needle),
            "{needle} missing from the experiment page: {dom}"
        );
    }
    // Real tables, not markdown in a <pre>.
    assert!(!dom.contains("| arm |"), "{dom}");
    let md = std::fs::read_to_string(out.join("report/report.md")).unwrap();
    assert!(
        md.contains("| arm | hq_share ↑ | kl ↓ | modes ↑ | wall time (s) |"),
        "{md}"
    );
    eprintln!(
        "report_browser: trained in {trained:.1}s, all in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}
