//! Progress of the long commands, on stderr, through indicatif.
//!
//! On a terminal: a bar with rate and ETA, redrawn in place. When stderr is not a terminal (a
//! log file, a pipe, a scheduler's capture of the output) the same bar is drawn as plain lines:
//! indicatif renders it into a [`LineTerm`], a draw target that ignores cursor movement and
//! writes a finished line when a phase starts and then at most every [`plain_every`] (10 s,
//! `GANTRY_PROGRESS_EVERY=SECONDS` to change it). indicatif's steady tick redraws the bar twice a
//! second whether or not the work advanced, so a line comes at least that often even while one
//! batch runs long or before the first one ends: never a silent log, never a line per batch.
//! No carriage returns and no hand-made ETA: both modes use indicatif's position, rate and ETA.
//!
//! Lines of their own (estimates, evaluations, per-epoch results, warnings) go through
//! [`Bar::say`]: printed above the bar on a terminal, as plain lines otherwise.

use gantry::train::Event;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle, TermLike};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest a plain progress line waits for the next one: `GANTRY_PROGRESS_EVERY` seconds
/// (a number > 0), else 10 s.
pub fn plain_every() -> Duration {
    std::env::var("GANTRY_PROGRESS_EVERY")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::from_secs(10), Duration::from_secs_f64)
}

/// What a [`LineTerm`] shares with its [`Bar`]: the throttle and the partly drawn line.
#[derive(Debug)]
struct LineState {
    every: Duration,
    /// When the last line was written.
    last: Mutex<Instant>,
    /// Write the next drawn line whatever the throttle says (a phase began).
    force: AtomicBool,
    /// No more lines (the bar is finishing or dropped after an error).
    closed: AtomicBool,
    /// What indicatif has written since its last flush.
    buf: Mutex<String>,
}

/// indicatif's terminal, as plain lines: a draw is collected until indicatif flushes it, then
/// written to stderr as one line, if the throttle allows (cursor movement and clearing are
/// dropped).
#[derive(Debug)]
struct LineTerm(Arc<LineState>);

impl TermLike for LineTerm {
    fn width(&self) -> u16 {
        // Wide enough that indicatif never wraps a line (its padding is trimmed).
        400
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        let mut buf = self.0.buf.lock().expect("not poisoned");
        buf.push_str(s);
        buf.push('\n');
        Ok(())
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.0.buf.lock().expect("not poisoned").push_str(s);
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        let s = &self.0;
        let text = std::mem::take(&mut *s.buf.lock().expect("not poisoned"));
        let text = text.replace('\r', "");
        let text = text.trim();
        if text.is_empty() || s.closed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut last = s.last.lock().expect("not poisoned");
        if s.force.swap(false, Ordering::SeqCst) || last.elapsed() >= s.every {
            *last = Instant::now();
            eprintln!("{text}");
        }
        Ok(())
    }
}

/// `42 s`, `7 min`, `3.5 h`.
pub use gantry::util::human_duration as duration;

/// `0:42`, `12:03`, `1:02:03`.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// Whether indicatif's rate (and so its ETA) means something yet: a phase starts with one jump
/// to its first report, which dominates the estimate for its first second; and until something
/// is done, indicatif's ETA is 0.
fn measured(s: &ProgressState) -> bool {
    s.pos() > 0 && s.elapsed() >= Duration::from_secs(1)
}

/// A bar for one command: a spinner until the first phase ([`Bar::phase`]), then a bar over
/// that phase's units, then the next phase's.
pub struct Bar {
    bar: ProgressBar,
    /// Set when stderr is not a terminal.
    plain: Option<Arc<LineState>>,
    name: String,
    /// The phase under way: what, and its unit.
    phase: Option<(String, String)>,
    /// Since when the phase under way has run: the end of the one before (or the start).
    since: Instant,
}

impl Bar {
    /// A bar for the command `name` (`eval`, `classify train`, ...), showing "starting" until
    /// its first phase.
    pub fn new(name: &str) -> Bar {
        let plain = (!std::io::stderr().is_terminal()).then(|| {
            Arc::new(LineState {
                every: plain_every(),
                // The first line only once a phase starts, or after a whole interval: a
                // command that fails at once on bad input prints nothing but its error.
                last: Mutex::new(Instant::now()),
                force: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                buf: Mutex::new(String::new()),
            })
        });
        let target = match &plain {
            // Every draw reaches the LineTerm, which throttles: no forced line is lost.
            Some(state) => ProgressDrawTarget::term_like(Box::new(LineTerm(state.clone()))),
            None => ProgressDrawTarget::stderr(),
        };
        let mut b = Bar {
            bar: ProgressBar::hidden(),
            plain,
            name: name.to_string(),
            phase: None,
            since: Instant::now(),
        };
        // Styled before it is first drawn.
        b.bar = ProgressBar::with_draw_target(None, target)
            .with_style(b.spinner_style())
            .with_prefix(name.to_string())
            .with_message("starting");
        b.bar.enable_steady_tick(Duration::from_millis(500));
        b
    }

    fn spinner_style(&self) -> ProgressStyle {
        let template = if self.plain.is_some() {
            "gantry: {prefix}: {msg}, {took} so far"
        } else {
            "{spinner} {prefix}: {msg} [{took}]"
        };
        ProgressStyle::with_template(template)
            .expect("valid template")
            .with_key("took", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&clock(s.elapsed()));
            })
    }

    fn bar_style(&self, unit: &str) -> ProgressStyle {
        let template = if self.plain.is_some() {
            "gantry: {prefix}: {pos}/{len} {unit} ({percent}%)  {rate}  elapsed {took}, ETA {left}  {msg}"
        } else {
            "{prefix} {bar:30} {pos}/{len} {unit}  {rate}  [{took} < {left}]  {msg}"
        };
        let (u, r) = (unit.to_string(), unit.to_string());
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> ")
            .with_key(
                "unit",
                move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&u);
                },
            )
            .with_key(
                "rate",
                move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let rate = if measured(s) { s.per_sec() } else { 0.0 };
                    let _ = if rate == 0.0 {
                        write!(w, "? {r}/s")
                    } else if rate >= 10.0 {
                        write!(w, "{rate:.0} {r}/s")
                    } else if rate >= 0.1 {
                        write!(w, "{rate:.2} {r}/s")
                    } else {
                        write!(w, "{:.1} s per {}", 1.0 / rate, r.trim_end_matches('s'))
                    };
                },
            )
            .with_key("took", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&clock(s.elapsed()));
            })
            .with_key("left", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let known = measured(s) && s.per_sec() > 0.0;
                let _ = w.write_str(&if known {
                    clock(s.eta())
                } else {
                    "?".to_string()
                });
            })
    }

    /// Starts a phase of `total` `unit`s (`real images`, `steps`, ...), at `start`: position,
    /// rate, elapsed time and ETA count from here. On a pipe its first line comes at once.
    pub fn phase(&mut self, what: &str, total: u64, start: u64, unit: &str) {
        self.phase = Some((what.to_string(), unit.to_string()));
        self.bar.set_message("");
        self.bar.reset();
        self.bar.set_style(self.bar_style(unit));
        self.bar.set_length(total);
        self.bar.set_position(start);
        // A resumed run's earlier steps are no measure of this process's speed.
        self.bar.reset_eta();
        if let Some(state) = &self.plain {
            state.force.store(true, Ordering::SeqCst);
        }
        // Last: setting the prefix draws at once (a position update may be held back).
        self.bar.set_prefix(if what.is_empty() {
            self.name.clone()
        } else {
            format!("{} {what}", self.name)
        });
    }

    /// Whether the phase under way is `what`.
    pub fn in_phase(&self, what: &str) -> bool {
        self.phase.as_ref().is_some_and(|(w, _)| w == what)
    }

    pub fn set(&self, pos: u64) {
        self.bar.set_position(pos);
    }

    /// The note after the numbers (losses, the attack under way).
    pub fn note(&self, msg: String) {
        self.bar.set_message(msg);
    }

    /// A line of its own: above the bar on a terminal, as it is elsewhere.
    pub fn say(&self, line: impl AsRef<str>) {
        if self.plain.is_some() {
            eprintln!("{}", line.as_ref());
        } else {
            self.bar.println(line.as_ref());
        }
    }

    /// A line saying the phase under way is done: how many, in how long since the phase before
    /// it ended (the library reports a phase after its first batch).
    pub fn phase_done(&mut self) {
        if let Some((what, unit)) = &self.phase {
            let took = self.since.elapsed();
            let n = self.bar.position();
            let what = if what.is_empty() {
                String::new()
            } else {
                format!(" {what}")
            };
            let rate = if took.as_secs_f64() >= 1.0 {
                format!(" ({:.1} {unit}/s)", n as f64 / took.as_secs_f64())
            } else {
                String::new()
            };
            self.say(format!(
                "gantry: {}{what}: {n} {unit} in {}{rate}",
                self.name,
                clock(took)
            ));
        }
        self.since = Instant::now();
        // Until the next phase (or the end): the spinner, and its next plain line a whole
        // interval later, not the finished bar right after this line.
        if let Some(state) = &self.plain {
            *state.last.lock().expect("not poisoned") = Instant::now();
        }
        let after = match &self.phase {
            Some((what, _)) if !what.is_empty() => format!("working (after {what})"),
            _ => "working".to_string(),
        };
        self.phase = None;
        self.bar.set_style(self.spinner_style());
        self.bar.reset_elapsed();
        self.bar.set_prefix(self.name.clone());
        self.bar.set_message(after);
    }

    /// Removes the bar (the command prints its result next).
    pub fn finish(&self) {
        if let Some(state) = &self.plain {
            state.closed.store(true, Ordering::SeqCst);
        }
        self.bar.finish_and_clear();
    }
}

impl Drop for Bar {
    /// An error on the way out: no progress line after it.
    fn drop(&mut self) {
        self.finish();
    }
}

/// The library's progress callback `(what, done, total)` (feature extraction, samples, OOD sets)
/// as phases of `bar`: a new phase whenever `what` changes, counted in `unit`, with a line
/// saying how long it took when it ends.
pub fn counter<'a>(bar: &'a mut Bar, unit: &'a str) -> impl FnMut(&str, usize, usize) + 'a {
    move |what: &str, done: usize, total: usize| {
        if !bar.in_phase(what) {
            // Rate and ETA count from this first report (often after a first batch).
            bar.phase(what, total as u64, done as u64, unit);
        }
        bar.set(done as u64);
        if done >= total {
            bar.phase_done();
        }
    }
}

/// `gantry train`'s progress: step, images/s, ETA and the latest losses; estimates, evaluations
/// and warnings as lines of their own.
pub struct Progress {
    bar: Bar,
}

impl Progress {
    pub fn new() -> Self {
        Progress {
            bar: Bar::new("train"),
        }
    }

    pub fn event(&mut self, ev: Event) {
        let bar = &mut self.bar;
        match ev {
            Event::Started {
                step,
                total,
                run_dir,
                data,
            } => {
                bar.say(format!("gantry: run directory {}", run_dir.display()));
                bar.say(format!("gantry: data {data}"));
                bar.phase("", total, step, "steps");
            }
            Event::Logged { step, stats } => {
                let get = |k: &str| stats.get(k).unwrap_or(f64::NAN);
                bar.set(step);
                bar.note(format!(
                    "{:.0} img/s  D {:.3}  G {:.3}",
                    get("images_per_s"),
                    get("loss/d/adv"),
                    get("loss/g/adv"),
                ));
            }
            Event::Estimate {
                seconds_per_step,
                remaining_steps,
            } => {
                let secs = seconds_per_step * remaining_steps as f64;
                bar.say(format!(
                    "gantry: {seconds_per_step:.2} s/step so far: the remaining {remaining_steps} steps take about {} (training alone)",
                    duration(secs)
                ));
            }
            Event::Evaluated { step, stats } => {
                let line = stats
                    .iter()
                    .filter(|(k, _)| !k.ends_with("_std"))
                    .map(|(k, v)| format!("{}={v:.4}", k.trim_start_matches("eval/")))
                    .collect::<Vec<_>>()
                    .join("  ");
                bar.say(format!("eval step {step}: {line}"));
            }
            Event::Sampled { .. } => {}
            Event::Saved { step, path } => {
                bar.set(step);
                bar.say(format!("saved {}", path.display()));
            }
            Event::Warning(w) => bar.say(format!("gantry: warning: {w}")),
        }
    }

    pub fn finish(&mut self) {
        self.bar.finish();
    }
}
