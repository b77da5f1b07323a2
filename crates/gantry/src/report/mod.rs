//! `gantry report RUN_DIR`: an HTML page (`RUN_DIR/report/index.html`) with the run's status,
//! the best evaluations, the latest sample grid, one chart per quantity family (PNG; the rules
//! are in [`plot`]), the events and the configuration. Fonts are embedded (DejaVu Sans), so this
//! needs no system font libraries.
//!
//! [`write`] works on a finished run and on one still training (it reads what the trainer wrote
//! so far; a last log line cut short is left out). [`watch`] keeps the page current while a run
//! trains: it rewrites it whenever the metrics log, the samples, the checkpoints or the
//! configuration changed, with a `<meta http-equiv="refresh">` so an open browser reloads it,
//! and ends with a last write without it once the run has finished (see [`RunState`]) or `stop`
//! is set. Every file is written atomically (temporary file, then rename): a browser never reads
//! half a page or half a chart. An experiment directory's page is `gantry::experiment`'s
//! (`write_report`, `watch_experiment`): this module sits below it.

pub mod live;
pub mod page;
pub mod plot;

use crate::error::{Error, Result};
use crate::eval::Metric;
use crate::rundir::{checkpoint, log};
use plot::{Line, Panel};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Series of a run's metrics.jsonl: name -> (step, value).
pub type Series = BTreeMap<String, Vec<(f64, f64)>>;

pub fn read_series(rows: &[serde_json::Value]) -> Series {
    let mut out: Series = BTreeMap::new();
    for row in rows {
        let Some(obj) = row.as_object() else { continue };
        if obj.contains_key("event") {
            continue;
        }
        let Some(step) = obj.get("step").and_then(|s| s.as_f64()) else {
            continue;
        };
        for (k, v) in obj {
            if let Some(v) = v.as_f64().filter(|v| v.is_finite()) {
                if k != "step" {
                    out.entry(k.clone()).or_default().push((step, v));
                }
            }
        }
    }
    out
}

pub fn html_escape(s: &str) -> String {
    page::escape(s)
}

/// A run's sample pictures (`samples/*.png`), oldest first (their names carry the step).
pub fn sample_pictures(run_dir: &Path) -> Vec<PathBuf> {
    let mut pngs: Vec<PathBuf> = std::fs::read_dir(run_dir.join("samples"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    pngs.sort();
    pngs
}

/// The size a sample grid is shown at: small grids enlarged by a whole factor to at least 256
/// pixels wide, pixels kept sharp.
pub fn shown_size(png: &Path) -> (u32, u32) {
    let (w, h) = image::image_dimensions(png).unwrap_or((256, 256));
    let k = 256u32.div_ceil(w.max(1)).max(1);
    (w * k, h * k)
}

/// Whether a higher value of the logged evaluation `key` is better (`None`: no direction, e.g.
/// a spread `*_std`).
pub fn higher_is_better(key: &str) -> Option<bool> {
    if key.ends_with("_std") {
        return None;
    }
    key.strip_prefix("eval/")
        .and_then(Metric::of_key)
        .map(|m| m.higher_is_better())
        .or_else(|| crate::classify::higher_is_better(key))
        .or_else(|| crate::translate::higher_is_better(key))
}

/// The chart a logged key belongs to: (order, file stem, title); `None` for keys not drawn
/// (counters such as `wall_s` and `kimg`, and evaluations, which get a chart each).
pub fn family(key: &str) -> Option<(u8, String, String)> {
    let seg: Vec<&str> = key.split('/').collect();
    let f = |o: u8, file: &str, title: &str| Some((o, file.to_string(), title.to_string()));
    match key {
        "step" | "wall_s" | "kimg" | "epoch" => return None,
        "train/loss" | "train/ce" | "train/l_am" | "val/loss" => return f(0, "losses", "Losses"),
        "train/acc" | "val/acc" => return f(6, "accuracy", "Accuracy"),
        "lr" | "train/lr" => return f(7, "lr", "Learning rate"),
        "train/lambda" | "train/am_cos" => return f(3, "adaptivemix", "AdaptiveMix (am/*)"),
        "images_per_s" => return f(8, "throughput", "Throughput (images/s)"),
        _ => {}
    }
    if seg[0] == "eval" {
        return None;
    }
    if seg[0] == "loss" {
        return f(0, "losses", "Losses");
    }
    // Plug-in statistics, also under a critic's prefix (U-GAT-IT: `ga/fq/...`).
    if seg.iter().any(|s| *s == "am" || *s == "adaptivemix") {
        return f(3, "adaptivemix", "AdaptiveMix (am/*)");
    }
    if seg.contains(&"fq") {
        return f(4, "fq", "Feature quantization (fq/*)");
    }
    if seg.contains(&"ada") {
        return f(5, "ada", "ADA (ada/*)");
    }
    match seg[0] {
        "d" => f(1, "scores", "D outputs (mean logits)"),
        // Held-out vs training reals (train.monitor_every): the gap opens as D memorises.
        "overfit" => f(
            1,
            "overfit",
            "D overfitting: outputs on training, held-out and fake images (overfit/*)",
        ),
        "grad" => f(2, "grad-norms", "Gradient norms"),
        "samples" => f(9, "samples", "Sample diversity"),
        other => {
            let stem: String = other
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            f(10, &format!("other-{stem}"), &format!("{other}/*"))
        }
    }
}

/// A chart to write: its file name and panel.
pub struct Chart {
    pub file: String,
    pub panel: Panel,
    /// Drawn half width, beside another (evaluations).
    pub small: bool,
}

/// The charts of one run's series: one per [`family`], then one per evaluation (its `_std`, if
/// logged, as a ±1 std band), all over the same steps `x_range`.
pub fn run_charts(series: &Series, x_range: (f64, f64)) -> Vec<Chart> {
    let mut families: BTreeMap<(u8, String), (String, Vec<Line>)> = BTreeMap::new();
    for (k, pts) in series {
        if let Some((order, file, title)) = family(k) {
            families
                .entry((order, file))
                .or_insert_with(|| (title, Vec::new()))
                .1
                .push(Line {
                    name: k.clone(),
                    points: pts.clone(),
                    band: Vec::new(),
                });
        }
    }
    let mut charts: Vec<Chart> = families
        .into_iter()
        .map(|((_, file), (title, lines))| Chart {
            file: format!("{file}.png"),
            panel: Panel {
                title,
                lines,
                x_range: Some(x_range),
                note: None,
                width: None,
            },
            small: false,
        })
        .collect();
    for (k, pts) in series {
        let Some(m) = k.strip_prefix("eval/") else {
            continue;
        };
        if m.ends_with("_std") && series.contains_key(&k[..k.len() - 4]) {
            continue;
        }
        let mut line = Line {
            name: k.clone(),
            points: pts.clone(),
            band: Vec::new(),
        };
        let mut note = None;
        if let Some(sd) = series.get(&format!("{k}_std")) {
            let sd: BTreeMap<i64, f64> = sd.iter().map(|p| (p.0 as i64, p.1)).collect();
            line.band = pts
                .iter()
                .filter_map(|p| sd.get(&(p.0 as i64)).map(|s| (p.0, p.1 - s, p.1 + s)))
                .collect();
            note = Some(format!("shaded: ± {m}_std"));
        }
        let title = match higher_is_better(k) {
            Some(true) => format!("{k} (higher is better)"),
            Some(false) => format!("{k} (lower is better)"),
            None => k.clone(),
        };
        charts.push(Chart {
            file: format!("eval-{}.png", m.replace(['/', ' '], "_")),
            panel: Panel {
                title,
                lines: vec![line],
                x_range: Some(x_range),
                note,
                width: Some(plot::SMALL_WIDTH),
            },
            small: true,
        });
    }
    charts
}

/// Renders `charts` into `dir` (atomically) and returns the HTML of their figures.
pub fn write_charts(dir: &Path, charts: &[Chart]) -> Result<String> {
    let (mut wide, mut small) = (String::new(), String::new());
    for c in charts {
        let Some(png) = c.panel.render()? else {
            continue;
        };
        let path = dir.join(&c.file);
        crate::util::write_atomic(&path, &png)?;
        let html = format!(
            "<figure><img src=\"{}?v={}\" alt=\"{}\" width=\"{}\"></figure>\n",
            page::escape(&c.file),
            page::version(&png),
            page::escape(&c.panel.title),
            c.panel.width.unwrap_or(plot::WIDTH)
        );
        if c.small {
            small.push_str(&html);
        } else {
            wide.push_str(&html);
        }
    }
    if !small.is_empty() {
        let _ = write!(wide, "<div class=\"grid\">\n{small}</div>\n");
    }
    Ok(wide)
}

/// Where a run stands, read from its directory.
#[derive(Clone, Debug, PartialEq)]
pub struct RunState {
    /// A process holds the run's lock (it is training, or about to).
    pub live: bool,
    /// `train.steps` of its `config.toml` (`None` for runs counted in epochs, or before the
    /// configuration is written).
    pub total: Option<u64>,
    /// The step of its latest complete checkpoint.
    pub checkpoint: Option<u64>,
    /// No process holds the lock and the latest checkpoint is the final one (step >= `total`;
    /// where the total is unknown, any checkpoint). The trainer saves the final checkpoint
    /// before its last samples and evaluation, so the lock, released when the process ends, is
    /// what says those are written too.
    pub finished: bool,
}

pub fn run_state(run_dir: &Path) -> RunState {
    let live = live::locked(run_dir);
    let total = std::fs::read_to_string(run_dir.join("config.toml"))
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("train")?.get("steps")?.as_integer())
        .map(|s| s.max(0) as u64);
    let checkpoint = checkpoint::latest(run_dir)
        .and_then(|c| checkpoint::read_meta(&c).ok())
        .map(|m| m.step);
    let finished = !live
        && match (checkpoint, total) {
            (Some(c), Some(t)) => c >= t,
            (c, None) => c.is_some(),
            (None, Some(_)) => false,
        };
    RunState {
        live,
        total,
        checkpoint,
        finished,
    }
}

/// Writes `RUN_DIR/report/` and returns the path of its `index.html`.
pub fn write(run_dir: &Path) -> Result<PathBuf> {
    write_page(run_dir, None)
}

fn not_a_run(run_dir: &Path) -> Error {
    if run_dir.join("experiment.toml").exists() {
        return Error::input(
            run_dir,
            "is an experiment directory: its report is the experiment's (`gantry experiment --report-only`; gantry::experiment::write_report with experiment::recorded, or watch_experiment)",
        );
    }
    Error::input(
        run_dir,
        "is not a gantry run directory (no metrics.jsonl / config.toml)",
    )
}

/// The status line: live, finished or stopped, and whether the page updates itself.
fn status_html(state: &RunState, last_step: u64, refresh: Option<u64>) -> String {
    let of = |s: u64| match state.total {
        Some(t) if t > 0 => format!("step {s} of {t} ({:.0}%)", 100.0 * s as f64 / t as f64),
        _ => format!("step {s}"),
    };
    let when = page::utc_now();
    let (class, text) = if state.finished {
        (
            "finished",
            format!("Finished: {}. Written {when}.", of(last_step)),
        )
    } else if state.live {
        let upd = match refresh {
            Some(s) => format!("this page reloads every {s} s while the run trains"),
            None => "a snapshot: `gantry report --watch` keeps it current".into(),
        };
        (
            "live",
            format!("Training: {}, as of {when}; {upd}.", of(last_step)),
        )
    } else {
        let ck = state.checkpoint.map_or("no checkpoint".into(), |c| {
            format!("last checkpoint at step {c}")
        });
        (
            "stopped",
            format!(
                "Not running: no process holds the run; {}, {ck}. Written {when}.",
                of(last_step)
            ),
        )
    };
    format!(
        "<p class=\"status {class}\" id=\"status\">{}</p>\n",
        page::md_inline(&text)
    )
}

/// A URL suffix that changes with a file (size, modification time).
fn file_version(path: &Path) -> String {
    let mut h = live::hasher();
    live::fingerprint(path, &mut h);
    use std::hash::Hasher;
    format!("{:08x}", h.finish() as u32)
}

fn write_page(run_dir: &Path, refresh: Option<u64>) -> Result<PathBuf> {
    let metrics = run_dir.join("metrics.jsonl");
    let config = run_dir.join("config.toml");
    // A run still starting has its log before its configuration (written with the first
    // checkpoint).
    if !metrics.exists() || (!config.exists() && !live::locked(run_dir)) {
        return Err(not_a_run(run_dir));
    }
    let state = run_state(run_dir);
    let rows = log::read(&metrics)?;
    let series = read_series(&rows);
    let out = run_dir.join("report");
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let last_step = rows
        .iter()
        .filter(|r| r.get("event").is_none())
        .filter_map(|r| r.get("step").and_then(|s| s.as_u64()))
        .max()
        .unwrap_or(0);
    let x_hi = (last_step as f64).max(state.total.filter(|_| state.live).unwrap_or(0) as f64);
    let charts = run_charts(&series, (0.0, x_hi.max(1.0)));
    let figures = write_charts(&out, &charts)?;

    let name = run_dir
        .canonicalize()
        .unwrap_or_else(|_| run_dir.to_path_buf());
    let mut body = format!(
        "<h1>Run <code>{}</code></h1>\n<p class=\"path\">{}</p>\n{}",
        page::escape(&name.file_name().unwrap_or_default().to_string_lossy()),
        page::escape(&name.display().to_string()),
        status_html(&state, last_step, refresh)
    );
    body.push_str("<nav><a href=\"#summary\">summary</a><a href=\"#samples\">samples</a><a href=\"#charts\">charts</a><a href=\"#events\">events</a><a href=\"#configuration\">configuration</a></nav>\n");

    // Summary and best evaluations, beside the latest samples.
    let mut kv: Vec<Vec<String>> = vec![vec!["quantity".into(), "value".into()]];
    kv.push(vec![
        "last logged step".into(),
        match state.total {
            Some(t) => format!("{last_step} of {t}"),
            None => last_step.to_string(),
        },
    ]);
    if let Some(c) = state.checkpoint {
        kv.push(vec!["latest checkpoint (step)".into(), c.to_string()]);
    }
    if let Some(w) = series.get("wall_s").and_then(|v| v.last()) {
        kv.push(vec!["training time".into(), hms(w.1)]);
    }
    if let Some(v) = series.get("images_per_s").and_then(|v| v.last()) {
        kv.push(vec!["images/s (last)".into(), format!("{:.1}", v.1)]);
    }
    kv.push(vec!["logged rows".into(), rows.len().to_string()]);
    let _ = write!(
        body,
        "<div class=\"row\"><div>\n<h2 id=\"summary\">Summary</h2>\n{}",
        page::table(&kv)
    );
    let mut best = vec![vec!["metric".to_string(), "best".into(), "step".into()]];
    for (k, pts) in &series {
        let Some(higher) = k.strip_prefix("eval/").and_then(|_| higher_is_better(k)) else {
            continue;
        };
        let pick = pts.iter().copied().reduce(|a, b| {
            if (b.1 > a.1) == higher && b.1 != a.1 {
                b
            } else {
                a
            }
        });
        if let Some((step, v)) = pick {
            best.push(vec![
                k.clone(),
                format!("{v:.4}"),
                format!("{}", step as i64),
            ]);
        }
    }
    if best.len() > 1 {
        let _ = write!(
            body,
            "<h2 id=\"best\">Best evaluations</h2>\n{}",
            page::table(&best)
        );
    }
    let samples = sample_pictures(run_dir);
    body.push_str("</div><div>\n<h2 id=\"samples\">Latest samples</h2>\n");
    match samples.last() {
        Some(p) => {
            let file = p.file_name().unwrap_or_default().to_string_lossy();
            let step = file
                .trim_end_matches(".png")
                .rsplit('-')
                .next()
                .and_then(|s| s.parse::<u64>().ok());
            let (w, h) = shown_size(p);
            let src = format!("../samples/{}", page::escape(&file));
            let _ = writeln!(
                body,
                "<figure><a href=\"{src}\"><img class=\"samples\" src=\"{src}?v={}\" alt=\"latest sample grid\" width=\"{}\" height=\"{}\"></a><figcaption>{}{}, the last of {} sample pictures</figcaption></figure>",
                file_version(p),
                w,
                h,
                page::escape(&file),
                step.map_or(String::new(), |s| format!(" (step {s})")),
                samples.len()
            );
        }
        None => body.push_str("<p>No sample pictures yet.</p>\n"),
    }
    body.push_str("</div></div>\n");

    let _ = write!(body, "<h2 id=\"charts\">Charts</h2>\n<p>One chart per family of logged quantities. A y-axis is logarithmic where its values are positive and span more than two decades; dense series are drawn faint as logged, with their moving average over 2% of the points on top.</p>\n{figures}");

    // Events.
    let mut events = vec![vec!["step".to_string(), "event".into(), "detail".into()]];
    for r in rows.iter().filter(|r| r.get("event").is_some()) {
        events.push(vec![
            r.get("step").map(|s| s.to_string()).unwrap_or_default(),
            r["event"].as_str().unwrap_or("").to_string(),
            r.get("detail")
                .and_then(|d| d.as_str())
                .unwrap_or("")
                .to_string(),
        ]);
    }
    body.push_str("<h2 id=\"events\">Events</h2>\n");
    if events.len() > 1 {
        body.push_str(&page::table(&events));
    } else {
        body.push_str("<p>None (no divergence, rollback or warning).</p>\n");
    }
    let cfg_text = std::fs::read_to_string(&config)
        .unwrap_or_else(|_| "(not written yet: it comes with the first checkpoint)".into());
    let _ = write!(
        body,
        "<h2 id=\"configuration\">Configuration</h2>\n<pre>{}</pre>\n",
        page::escape(&cfg_text)
    );
    let title = format!(
        "gantry report: {}",
        name.file_name().unwrap_or_default().to_string_lossy()
    );
    let html = page::page(&title, refresh, &body);
    let index = out.join("index.html");
    crate::util::write_atomic(&index, html.as_bytes())?;
    Ok(index)
}

/// Seconds as `1h 02m 03s` / `2m 03s` / `3.2s`.
fn hms(s: f64) -> String {
    let t = s.round() as u64;
    if t >= 3600 {
        format!("{}h {:02}m {:02}s", t / 3600, t / 60 % 60, t % 60)
    } else if t >= 60 {
        format!("{}m {:02}s", t / 60, t % 60)
    } else {
        format!("{s:.1}s")
    }
}

/// Keeps `RUN_DIR/report/index.html` current while the run trains: looks every `every`, rewrites
/// the page when the metrics log, the samples, the checkpoints, the configuration or the run's
/// liveness changed (the page then reloads itself after `every`, rounded up to whole seconds),
/// and returns after a last write without the reload once the run has finished
/// ([`RunState::finished`]) or `stop` is set. A run that stopped without finishing (killed,
/// interrupted, failed) keeps the watcher waiting for a resume, until `stop`. The directory must
/// exist; until its metrics log appears the watcher waits.
pub fn watch(run_dir: &Path, every: Duration, stop: &AtomicBool) -> Result<()> {
    if !run_dir.is_dir() {
        return Err(Error::input(run_dir, "does not exist"));
    }
    if run_dir.join("experiment.toml").exists() {
        return Err(not_a_run(run_dir));
    }
    live::watch_loop(
        every,
        stop,
        || {
            use std::hash::{Hash, Hasher};
            let mut h = live::hasher();
            for f in ["metrics.jsonl", "config.toml", "samples", "checkpoints"] {
                live::fingerprint(&run_dir.join(f), &mut h);
            }
            let state = run_state(run_dir);
            state.live.hash(&mut h);
            Ok(live::Look {
                signature: h.finish(),
                finished: state.finished,
            })
        },
        |refresh| {
            if !run_dir.join("metrics.jsonl").exists() {
                // Not started yet; the last write of a run that never logged has nothing to show.
                return match refresh {
                    Some(_) => Ok(()),
                    None if stop.load(std::sync::atomic::Ordering::SeqCst) => Ok(()),
                    None => Err(not_a_run(run_dir)),
                };
            }
            write_page(run_dir, refresh).map(|_| ())
        },
    )
}

/// One line chart of the given series (those present), written as PNG (the experiment report's
/// older interface; [`plot::Panel`] is the general one).
pub fn plot(path: &Path, title: &str, series: &Series, keys: &[&str]) -> Result<bool> {
    let panel = Panel {
        title: title.to_string(),
        lines: keys
            .iter()
            .filter_map(|k| {
                series.get(*k).filter(|v| !v.is_empty()).map(|v| Line {
                    name: k.to_string(),
                    points: v.clone(),
                    band: Vec::new(),
                })
            })
            .collect(),
        ..Default::default()
    };
    match panel.render()? {
        Some(png) => {
            crate::util::write_atomic(path, &png)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// issue 13: the best of each metric follows its direction (modes and hq_share up, kl down,
    /// classifier IS up), and spreads (`is_std`) have no best.
    #[test]
    fn best_metrics_follow_each_metrics_direction() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), "").unwrap();
        let rows = [
            r#"{"step":10,"eval/modes":20,"eval/hq_share":0.5,"eval/kl":0.3,"eval/classifier_is":2.0,"eval/classifier_is_std":0.1}"#,
            r#"{"step":20,"eval/modes":25,"eval/hq_share":0.9,"eval/kl":0.1,"eval/classifier_is":3.0,"eval/classifier_is_std":0.5}"#,
            r#"{"step":30,"eval/modes":22,"eval/hq_share":0.7,"eval/kl":0.2,"eval/classifier_is":2.5,"eval/classifier_is_std":0.2}"#,
        ];
        std::fs::write(dir.path().join("metrics.jsonl"), rows.join("\n") + "\n").unwrap();
        let html = std::fs::read_to_string(write(dir.path()).unwrap()).unwrap();
        for (k, v) in [
            ("eval/modes", "25.0000"),
            ("eval/hq_share", "0.9000"),
            ("eval/kl", "0.1000"),
            ("eval/classifier_is", "3.0000"),
        ] {
            let row = format!("<tr><td>{k}</td><td>{v}</td><td>20</td></tr>");
            assert!(html.contains(&row), "{row} missing from {html}");
        }
        assert!(!html.contains("<td>eval/classifier_is_std</td>"), "{html}");
        // classifier_is_std is the band of classifier_is, not a chart of its own.
        assert!(dir.path().join("report/eval-classifier_is.png").exists());
        assert!(!dir
            .path()
            .join("report/eval-classifier_is_std.png")
            .exists());
        assert!(!html.contains("http-equiv=\"refresh\""));
    }

    #[test]
    fn families_group_the_logged_keys() {
        let fam = |k: &str| family(k).map(|f| f.1);
        assert_eq!(fam("loss/d/adv").as_deref(), Some("losses"));
        assert_eq!(fam("loss/g/cam").as_deref(), Some("losses"));
        assert_eq!(fam("am/loss/real").as_deref(), Some("adaptivemix"));
        assert_eq!(fam("ga/fq/0/perplexity").as_deref(), Some("fq"));
        assert_eq!(fam("fq/b8/dead").as_deref(), Some("fq"));
        assert_eq!(fam("ada/p").as_deref(), Some("ada"));
        assert_eq!(fam("lb/ada/signs").as_deref(), Some("ada"));
        assert_eq!(fam("d/real").as_deref(), Some("scores"));
        assert_eq!(fam("overfit/gap").as_deref(), Some("overfit"));
        assert_eq!(
            fam("checkpoint/save_s").as_deref(),
            Some("other-checkpoint")
        );
        assert_eq!(fam("eval/fid"), None);
        assert_eq!(fam("wall_s"), None);
    }

    #[test]
    fn a_finished_run_needs_its_final_checkpoint_and_a_free_lock() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), "[train]\nsteps = 20\n").unwrap();
        let s = run_state(dir.path());
        assert_eq!(
            (s.live, s.total, s.checkpoint, s.finished),
            (false, Some(20), None, false)
        );
        let lock = crate::rundir::lock::RunLock::acquire(dir.path()).unwrap();
        assert!(run_state(dir.path()).live);
        drop(lock);
    }
}
