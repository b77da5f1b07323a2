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
        Progress { bar: None, tty: std::io::stderr().is_terminal() }
    }

    pub fn event(&mut self, ev: Event) {
        match ev {
            Event::Started { step, total, run_dir, data } => {
                eprintln!("gantry: run directory {}", run_dir.display());
                eprintln!("gantry: data {data}");
                let bar = ProgressBar::with_draw_target(Some(total), if self.tty { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() });
                bar.set_style(
                    ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]")
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
            Event::Sampled { .. } => {}
            Event::Saved { step, path } => {
                if let Some(bar) = &self.bar {
                    bar.set_position(step);
                    bar.println(format!("saved {}", path.display()));
                }
            }
            Event::Warning(w) => match &self.bar {
                Some(bar) => bar.println(format!("warning: {w}")),
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
