//! The progress line: step, images/s, ETA and the latest losses. Quiet (plain log lines every so
//! often) when stderr is not a terminal.

use gantry::train::Event;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

pub struct Progress {
    bar: Option<ProgressBar>,
    tty: bool,
}

impl Progress {
    pub fn new() -> Self {
        Progress {
            bar: None,
            tty: std::io::stderr().is_terminal(),
        }
    }

    pub fn event(&mut self, ev: Event) {
        match ev {
            Event::Started {
                step,
                total,
                run_dir,
                data,
            } => {
                eprintln!("gantry: run directory {}", run_dir.display());
                eprintln!("gantry: data {data}");
                let bar = ProgressBar::with_draw_target(
                    Some(total),
                    if self.tty {
                        ProgressDrawTarget::stderr()
                    } else {
                        ProgressDrawTarget::hidden()
                    },
                );
                bar.set_style(
                    ProgressStyle::with_template(
                        "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
                    )
                    .expect("valid template"),
                );
                bar.set_position(step);
                bar.reset_eta();
                self.bar = Some(bar);
            }
            Event::Logged { step, stats } => {
                let get = |k: &str| stats.get(k).unwrap_or(f64::NAN);
                let msg = format!(
                    "{:.0} img/s  D {:.3}  G {:.3}",
                    get("images_per_s"),
                    get("loss/d/adv"),
                    get("loss/g/adv"),
                );
                if let Some(bar) = &self.bar {
                    bar.set_position(step);
                    bar.set_message(msg.clone());
                    if !self.tty {
                        eprintln!("step {step}/{}  {msg}", bar.length().unwrap_or(0));
                    }
                }
            }
            Event::Estimate {
                seconds_per_step,
                remaining_steps,
            } => {
                let secs = seconds_per_step * remaining_steps as f64;
                let line = format!(
                    "gantry: {seconds_per_step:.2} s/step so far: the remaining {remaining_steps} steps take about {} (training alone)",
                    duration(secs)
                );
                match &self.bar {
                    Some(bar) if self.tty => bar.println(line),
                    _ => eprintln!("{line}"),
                }
            }
            Event::Evaluated { step, stats } => {
                let line = stats
                    .iter()
                    .filter(|(k, _)| !k.ends_with("_std"))
                    .map(|(k, v)| format!("{}={v:.4}", k.trim_start_matches("eval/")))
                    .collect::<Vec<_>>()
                    .join("  ");
                match &self.bar {
                    Some(bar) if self.tty => bar.println(format!("eval step {step}: {line}")),
                    _ => eprintln!("eval step {step}: {line}"),
                }
            }
            Event::Sampled { .. } => {}
            Event::Saved { step, path } => {
                if let Some(bar) = &self.bar {
                    bar.set_position(step);
                    bar.println(format!("saved {}", path.display()));
                }
            }
            Event::Warning(w) => match &self.bar {
                Some(bar) if self.tty => bar.println(format!("warning: {w}")),
                Some(_) => eprintln!("gantry: warning: {w}"),
                None => eprintln!("gantry: warning: {w}"),
            },
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// `42 s`, `7 min`, `3.5 h`.
fn duration(secs: f64) -> String {
    if secs < 90.0 {
        format!("{secs:.0} s")
    } else if secs < 5400.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

/// A progress callback `(done, total)` for feature extraction: a bar on a terminal, else silent.
pub fn counter() -> impl FnMut(&str, usize, usize) {
    let tty = std::io::stderr().is_terminal();
    let mut bar: Option<(String, ProgressBar)> = None;
    move |what: &str, done: usize, total: usize| {
        if !tty {
            return;
        }
        if bar.as_ref().is_none_or(|(w, _)| w != what) {
            if let Some((_, b)) = bar.take() {
                b.finish_and_clear();
            }
            let b = ProgressBar::new(total as u64);
            b.set_style(
                ProgressStyle::with_template(
                    "{msg:>12} {bar:30} {pos}/{len} [{elapsed_precise} < {eta_precise}]",
                )
                .expect("valid template"),
            );
            b.set_message(what.to_string());
            bar = Some((what.to_string(), b));
        }
        if let Some((_, b)) = &bar {
            b.set_position(done as u64);
            if done >= total {
                b.finish_and_clear();
            }
        }
    }
}
