//! Live reports: `report::watch` follows a run while it trains (pages that reload themselves,
//! always whole), and ends by itself with a last page without the reload once the run has
//! finished; `report::write` works on a run in the middle of training; an experiment's watcher
//! ends at once on a finished experiment.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const REFRESH: &str = "<meta http-equiv=\"refresh\" content=\"1\">";

fn tiny_gmm(steps: u64) -> gantry::RunConfig {
    let sets: Vec<String> = [
        format!("train.steps={steps}"),
        "train.batch_size=32".into(),
        "train.log_every=1".into(),
        "train.sample_every=50".into(),
        "train.threads=1".into(),
        "data.size=256".into(),
    ]
    .to_vec();
    gantry::RunConfig::resolve(Some("gmm-25"), &sets).unwrap()
}

#[test]
fn watch_follows_a_training_run_and_ends_with_a_final_page() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let index = run.join("report/index.html");
    // The trainer takes the run's lock here: the run is live from now on.
    let mut trainer = gantry::train::Trainer::new(tiny_gmm(200).setup(), &run).unwrap();
    let stop = AtomicBool::new(false);
    let trained = AtomicBool::new(false);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| gantry::report::watch(&run, Duration::from_millis(100), &stop));
        let reader = s.spawn(|| {
            let mut pages = Vec::new();
            let mut snapshot = None;
            while !trained.load(Ordering::SeqCst) {
                if let Ok(html) = std::fs::read_to_string(&index) {
                    // Atomic writes: every read is a whole page.
                    assert!(html.ends_with("</html>\n"), "a torn page: {html}");
                    if snapshot.is_none() && html.contains("Training:") {
                        // `write` works on a run that is training (and makes no live page).
                        let p = gantry::report::write(&run).unwrap();
                        snapshot = Some(std::fs::read_to_string(p).unwrap());
                    }
                    pages.push(html);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (pages, snapshot)
        });
        // Train (here: the trainer stays on its thread) once the watcher wrote its first page.
        let t0 = Instant::now();
        while !index.exists() && t0.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = trainer.run(&AtomicBool::new(false), &mut |_| {}).unwrap();
        assert!(matches!(out, gantry::train::Outcome::Finished { .. }));
        // A moment with the final checkpoint written but the lock still held: not finished.
        std::thread::sleep(Duration::from_millis(300));
        drop(trainer);
        trained.store(true, Ordering::SeqCst);
        let (pages, snapshot) = reader.join().unwrap();
        let t0 = Instant::now();
        while !watcher.is_finished() && t0.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !watcher.is_finished() {
            stop.store(true, Ordering::SeqCst);
            panic!("the watcher did not end by itself after the run finished");
        }
        watcher.join().unwrap().unwrap();
        let live: Vec<&String> = pages.iter().filter(|p| p.contains(REFRESH)).collect();
        assert!(
            !live.is_empty(),
            "no live page seen among {} reads",
            pages.len()
        );
        assert!(
            live.iter().all(|p| p.contains("Training: step")),
            "{}",
            live[0]
        );
        let snapshot = snapshot.expect("a write during training");
        assert!(!snapshot.contains("http-equiv=\"refresh\""), "{snapshot}");
        assert!(snapshot.contains("a snapshot"), "{snapshot}");
    });
    let last = std::fs::read_to_string(&index).unwrap();
    assert!(!last.contains("http-equiv=\"refresh\""), "{last}");
    assert!(last.contains("Finished: step 200 of 200"), "{last}");
    assert!(last.contains("losses.png?v="), "{last}");
    assert!(last.contains("../samples/step-0000200.png?v="), "{last}");
    let leftovers: Vec<_> = std::fs::read_dir(run.join("report"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_stopped_watch_leaves_a_page_that_no_longer_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // Interrupted at once: a run that is neither live nor finished (the watcher waits for a
    // resume until told to stop).
    let stop_training = AtomicBool::new(true);
    let mut t = gantry::train::Trainer::new(tiny_gmm(50).setup(), &run).unwrap();
    let out = t.run(&stop_training, &mut |_| {}).unwrap();
    assert!(matches!(out, gantry::train::Outcome::Interrupted { .. }));
    drop(t);
    std::fs::write(
        run.join("metrics.jsonl"),
        "{\"step\":1,\"loss/d/adv\":1.0}\n{\"step\":2,\"loss/d/adv\":0.5}\n",
    )
    .unwrap();
    let stop = AtomicBool::new(false);
    let index = run.join("report/index.html");
    std::thread::scope(|s| {
        let watcher = s.spawn(|| gantry::report::watch(&run, Duration::from_millis(50), &stop));
        let t0 = Instant::now();
        while !index.exists() && t0.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let html = std::fs::read_to_string(&index).unwrap();
        assert!(html.contains(REFRESH), "{html}");
        assert!(html.contains("Not running"), "{html}");
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !watcher.is_finished(),
            "a stopped run is not a finished one"
        );
        stop.store(true, Ordering::SeqCst);
        watcher.join().unwrap().unwrap();
    });
    let html = std::fs::read_to_string(&index).unwrap();
    assert!(!html.contains("http-equiv=\"refresh\""), "{html}");
    // An experiment directory is not a run.
    let exp = dir.path().join("exp");
    std::fs::create_dir(&exp).unwrap();
    std::fs::write(exp.join("experiment.toml"), "").unwrap();
    let e = gantry::report::watch(&exp, Duration::from_millis(50), &stop)
        .unwrap_err()
        .to_string();
    assert!(e.contains("watch_experiment"), "{e}");
}

#[test]
fn an_experiment_watcher_ends_with_a_final_page_once_every_run_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exp");
    let exp = gantry::experiment::ExperimentConfig {
        name: "watched".into(),
        base: "gmm-25".into(),
        set: [
            "train.steps=10",
            "train.batch_size=32",
            "train.threads=1",
            "data.size=256",
        ]
        .map(String::from)
        .to_vec(),
        seeds: vec![0, 1],
        parallel: 1,
        nproc: 1,
        arms: vec![gantry::experiment::Arm {
            name: "baseline".into(),
            set: vec![],
        }],
        task: gantry::experiment::Task::Gan,
        evaluate: None,
    };
    gantry::experiment::run(&exp, &out, &AtomicBool::new(false), None, |_| {}).unwrap();
    let page = out.join("report/report.html");
    std::fs::remove_file(&page).unwrap();
    // Finished: one look, one last write, no stop needed.
    let t0 = Instant::now();
    gantry::experiment::watch_experiment(&out, Duration::from_secs(60), &AtomicBool::new(false))
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(30));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("Finished: all 2 runs done"), "{html}");
    assert!(!html.contains("http-equiv=\"refresh\""), "{html}");
    assert!(html.contains("<td>baseline</td>"), "{html}");
    // Any experiment directory's report, from what it recorded.
    std::fs::remove_file(&page).unwrap();
    let cfg = gantry::experiment::recorded(&out).unwrap();
    gantry::experiment::write_report(&cfg, &out).unwrap();
    assert!(page.exists());
}
