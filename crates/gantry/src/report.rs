//! `gantry report RUN_DIR`: plots of losses, metrics and throughput over steps (PNG), and an HTML
//! page with the configuration, the latest sample grid, the plots, events and the best metrics.
//! Fonts are embedded (DejaVu Sans), so this needs no system font libraries.

use crate::error::{Error, Result};
use crate::eval::Metric;
use crate::rundir::log;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

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

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// One line chart of the given series (those present), written as PNG.
pub fn plot(path: &Path, title: &str, series: &Series, keys: &[&str]) -> Result<bool> {
    let present: Vec<(&str, &Vec<(f64, f64)>)> = keys
        .iter()
        .filter_map(|k| series.get(*k).filter(|v| !v.is_empty()).map(|v| (*k, v)))
        .collect();
    if present.is_empty() {
        return Ok(false);
    }
    register_fonts();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (_, pts) in &present {
        for &(x, y) in pts.iter() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, (720, 400)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .label_style(("sans-serif", 13))
            .draw()?;
        for (i, (name, pts)) in present.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| Error::io(path, e))?;
    Ok(true)
}

pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Writes `RUN_DIR/report/` and returns the path of its `index.html`.
pub fn write(run_dir: &Path) -> Result<PathBuf> {
    let metrics = run_dir.join("metrics.jsonl");
    let config = run_dir.join("config.toml");
    if !metrics.exists() || !config.exists() {
        return Err(Error::input(
            run_dir,
            "is not a gantry run directory (no metrics.jsonl / config.toml)",
        ));
    }
    let rows = log::read(&metrics)?;
    let series = read_series(&rows);
    let out = run_dir.join("report");
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;

    let mut figures = Vec::new();
    let loss_keys: Vec<&str> = series
        .keys()
        .filter(|k| k.starts_with("loss/"))
        .map(String::as_str)
        .collect();
    let metric_keys: Vec<&str> = series
        .keys()
        .filter(|k| k.starts_with("eval/"))
        .map(String::as_str)
        .collect();
    let plugin_keys: Vec<&str> = series
        .keys()
        .filter(|k| k.starts_with("am/") || (k.starts_with("fq/") && k.ends_with("perplexity")))
        .map(String::as_str)
        .collect();
    // Classification runs (`gantry classify train`).
    let clf_loss_keys: Vec<&str> = ["train/loss", "train/ce", "train/l_am", "val/loss"]
        .into_iter()
        .filter(|k| series.contains_key(*k))
        .collect();
    let charts: [(&str, &str, Vec<&str>); 8] = [
        ("classifier-losses.png", "Classifier losses", clf_loss_keys),
        ("accuracy.png", "Accuracy", vec!["val/acc", "train/acc"]),
        ("lr.png", "Learning rate", vec!["train/lr"]),
        ("losses.png", "Losses", loss_keys),
        (
            "scores.png",
            "D scores (mean logits)",
            vec!["d/real", "d/fake"],
        ),
        ("metrics.png", "Evaluation metrics", metric_keys),
        ("plugins.png", "Plug-in diagnostics", plugin_keys),
        (
            "throughput.png",
            "Throughput (images/s)",
            vec!["images_per_s"],
        ),
    ];
    for (file, title, keys) in charts {
        if plot(&out.join(file), title, &series, &keys)? {
            figures.push((file, title));
        }
    }

    let cfg_text = std::fs::read_to_string(&config).map_err(|e| Error::io(&config, e))?;
    let mut samples: Vec<PathBuf> = std::fs::read_dir(run_dir.join("samples"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    samples.sort();
    let latest = samples
        .last()
        .and_then(|p| p.file_name())
        .map(|f| format!("../samples/{}", f.to_string_lossy()));

    let mut best = String::new();
    for (k, pts) in &series {
        // Spreads (`kid_std`) have no better direction and no best.
        let Some(metric) = k.strip_prefix("eval/").and_then(Metric::of_key) else {
            continue;
        };
        let pick = pts
            .iter()
            .copied()
            .reduce(|a, b| if metric.better(b.1, a.1) { b } else { a });
        if let Some((step, v)) = pick {
            best.push_str(&format!(
                "<tr><td>{k}</td><td>{v:.4}</td><td>{step}</td></tr>\n"
            ));
        }
    }
    let last_step = series
        .values()
        .flat_map(|v| v.iter().map(|p| p.0))
        .fold(0.0, f64::max);
    let events: Vec<String> = rows
        .iter()
        .filter(|r| r.get("event").is_some())
        .map(|r| {
            format!(
                "<li>step {}: {} {}</li>",
                r["step"],
                html_escape(r["event"].as_str().unwrap_or("")),
                html_escape(r.get("detail").and_then(|d| d.as_str()).unwrap_or(""))
            )
        })
        .collect();

    let mut html = String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>gantry report</title>\n<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow:auto}td,th{padding:2px 10px}</style></head><body>\n");
    html.push_str(&format!(
        "<h1>{}</h1>\n<p>{} logged rows, last step {last_step}.</p>\n",
        html_escape(&run_dir.display().to_string()),
        rows.len()
    ));
    if !best.is_empty() {
        html.push_str(&format!("<h2>Best metrics</h2><table><tr><th>metric</th><th>value</th><th>step</th></tr>\n{best}</table>\n"));
    }
    if let Some(s) = latest {
        html.push_str(&format!(
            "<h2>Latest samples</h2><img src=\"{s}\" alt=\"latest sample grid\">\n"
        ));
    }
    for (file, title) in &figures {
        html.push_str(&format!(
            "<h2>{title}</h2><img src=\"{file}\" alt=\"{title}\">\n"
        ));
    }
    if !events.is_empty() {
        html.push_str(&format!("<h2>Events</h2><ul>{}</ul>\n", events.join("")));
    }
    html.push_str(&format!(
        "<h2>Configuration</h2><pre>{}</pre>\n</body></html>\n",
        html_escape(&cfg_text)
    ));
    let index = out.join("index.html");
    crate::util::write_atomic(&index, html.as_bytes())?;
    Ok(index)
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
    }
}
