//! The report's charts: one panel per quantity family, drawn by rules a reader can rely on.
//!
//! - **y-axis**: logarithmic when no value is negative and the positive values span more than
//!   two decades (max / min > 100), with a tick at every decade (every 2nd, 3rd, .. decade when
//!   there are more than 8) and zeros drawn on the bottom edge; linear otherwise (any negative
//!   value, or a narrow range), with 1-2-2.5-5 ticks. No symlog: a family that crosses zero is
//!   linear.
//! - **x-axis**: steps, integer ticks (1-2-5 steps, never "500.0"), the range from 0 (or the
//!   first step when it is negative) to the last step, and a right margin wide enough that the
//!   last tick's label is never clipped.
//! - **styles**: series `i` of a panel gets colour `i % 10` (the Tableau 10 palette), dash
//!   pattern `i % 4` (solid, dashed, dotted, dash-dot) and marker `(i / 10) % 5` (none, circle,
//!   triangle, square, diamond): no two of the first 20 series share a colour and dash pair, and
//!   no two of the first 100 share a style.
//! - **dense series** (more than [`SMOOTH_ABOVE`] points) are drawn twice, as TensorBoard does:
//!   faint as logged, and styled as a centred moving average over 2% of the points; sparse ones
//!   (at most [`MARK_ALL_BELOW`] points, e.g. evaluations) get a marker at every point.
//! - **bands** (experiments: min to max over seeds) are shaded in the series' colour.
//! - **legend** below the data area, in as many columns as fit.

use crate::error::{Error, Result};
use plotters::coord::ranged1d::{
    KeyPointHint, KeyPointWeight, NoDefaultFormatting, Ranged, ValueFormatter,
};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::ops::Range;
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

/// Series with more points than this are smoothed (and drawn faint as logged underneath).
pub const SMOOTH_ABOVE: usize = 300;
/// Series with at most this many points get a marker at every point.
pub const MARK_ALL_BELOW: usize = 30;

/// Tableau 10.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dash {
    Solid,
    Dashed,
    Dotted,
    DashDot,
}

impl Dash {
    /// On/off lengths in pixels (empty: solid).
    fn pattern(self) -> &'static [f64] {
        match self {
            Dash::Solid => &[],
            Dash::Dashed => &[9.0, 5.0],
            Dash::Dotted => &[2.0, 4.0],
            Dash::DashDot => &[10.0, 4.0, 2.0, 4.0],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Marker {
    None,
    Circle,
    Triangle,
    Square,
    Diamond,
}

const DASHES: [Dash; 4] = [Dash::Solid, Dash::Dashed, Dash::Dotted, Dash::DashDot];
const MARKERS: [Marker; 5] = [
    Marker::None,
    Marker::Circle,
    Marker::Triangle,
    Marker::Square,
    Marker::Diamond,
];

/// How series `i` of a panel is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Style {
    /// Index into [`PALETTE`].
    pub color: usize,
    pub dash: Dash,
    pub marker: Marker,
}

pub fn style(i: usize) -> Style {
    Style {
        color: i % PALETTE.len(),
        dash: DASHES[i % DASHES.len()],
        marker: MARKERS[(i / PALETTE.len()) % MARKERS.len()],
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Linear,
    Log,
}

/// The y scale for a panel's values (see the module's rules).
pub fn choose_scale(values: &[f64]) -> Scale {
    let finite = || values.iter().copied().filter(|v| v.is_finite());
    if finite().any(|v| v < 0.0) {
        return Scale::Linear;
    }
    let (lo, hi) = finite()
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if hi > 0.0 && lo > 0.0 && hi / lo > 100.0 {
        Scale::Log
    } else {
        Scale::Linear
    }
}

/// A 1-2-2.5-5 step near `span / target` (1-2-5 and at least 1 where `integer`).
fn nice_step(span: f64, target: f64, integer: bool) -> f64 {
    let raw = (span / target).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 2.5 && !integer {
        2.5
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    let step = nice * mag;
    if integer {
        step.round().max(1.0)
    } else {
        step
    }
}

/// One axis: its range, scale and ticks (what the mesh labels), drawn as a plotters coordinate.
#[derive(Clone, Debug)]
pub struct Axis {
    pub lo: f64,
    pub hi: f64,
    pub scale: Scale,
    /// Labelled ticks.
    pub ticks: Vec<f64>,
    /// Unlabelled grid lines (log axes: 2..9 x each decade, when few decades).
    pub minor: Vec<f64>,
    /// Labels as integers (steps).
    pub integer: bool,
    /// Decimals of linear labels.
    decimals: usize,
}

impl Axis {
    /// The step axis over `[lo, hi]`: integer ticks.
    pub fn steps(lo: f64, hi: f64) -> Axis {
        let (lo, hi) = if hi > lo { (lo, hi) } else { (lo, lo + 1.0) };
        let step = nice_step(hi - lo, 7.0, true);
        let mut ticks = Vec::new();
        let mut t = (lo / step).ceil() * step;
        while t <= hi + step * 1e-9 {
            ticks.push(t);
            t += step;
        }
        Axis {
            lo,
            hi,
            scale: Scale::Linear,
            ticks,
            minor: Vec::new(),
            integer: true,
            decimals: 0,
        }
    }

    /// A value axis covering `values` (and the scale [`choose_scale`] picks for them).
    pub fn values(values: &[f64]) -> Axis {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        match choose_scale(&finite) {
            Scale::Log => {
                let pos = finite.iter().copied().filter(|v| *v > 0.0);
                let (mn, mx) = pos.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
                let k0 = mn.log10().floor() as i32;
                let k1 = (mx.log10().ceil() as i32).max(k0 + 1);
                let stride = ((k1 - k0) as usize).div_ceil(8).max(1);
                let ticks = (k0..=k1)
                    .filter(|k| ((k - k0) as usize).is_multiple_of(stride))
                    .map(|k| 10f64.powi(k))
                    .collect();
                let minor = if k1 - k0 <= 5 {
                    (k0..k1)
                        .flat_map(|k| (2..10).map(move |m| m as f64 * 10f64.powi(k)))
                        .collect()
                } else {
                    Vec::new()
                };
                Axis {
                    lo: 10f64.powi(k0),
                    hi: 10f64.powi(k1),
                    scale: Scale::Log,
                    ticks,
                    minor,
                    integer: false,
                    decimals: 0,
                }
            }
            Scale::Linear => {
                let (mut lo, mut hi) = finite
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                if finite.is_empty() {
                    (lo, hi) = (0.0, 1.0);
                }
                if hi - lo <= hi.abs().max(lo.abs()) * 1e-9 {
                    let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
                    (lo, hi) = (lo - d, hi + d);
                }
                let pad = (hi - lo) * 0.05;
                let (lo, hi) = (lo - pad, hi + pad);
                let step = nice_step(hi - lo, 5.0, false);
                let mut ticks = Vec::new();
                let first = (lo / step).ceil() as i64;
                let last = (hi / step).floor() as i64;
                for k in first..=last {
                    ticks.push(k as f64 * step);
                }
                let mut decimals = (-step.log10()).ceil().max(0.0) as usize;
                // 0.25, 2.5: one digit more than the step's magnitude.
                let units = step * 10f64.powi(decimals as i32);
                if (units - units.round()).abs() > 1e-6 {
                    decimals += 1;
                }
                Axis {
                    lo,
                    hi,
                    scale: Scale::Linear,
                    ticks,
                    minor: Vec::new(),
                    integer: false,
                    decimals,
                }
            }
        }
    }

    /// Where `v` lies on the axis, 0 at `lo` and 1 at `hi` (log axes clamp what is below `lo`,
    /// zeros included, to 0).
    pub fn frac(&self, v: f64) -> f64 {
        match self.scale {
            Scale::Linear => (v - self.lo) / (self.hi - self.lo),
            Scale::Log => {
                let v = v.max(self.lo);
                (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
            }
        }
    }

    /// A tick's label.
    pub fn label(&self, v: f64) -> String {
        if self.integer {
            return format!("{}", v.round() as i64);
        }
        match self.scale {
            Scale::Log => {
                let k = v.log10().round() as i32;
                if (-4..=4).contains(&k) {
                    format!("{:.*}", (-k).max(0) as usize, v)
                } else {
                    format!("1e{k}")
                }
            }
            Scale::Linear => {
                let big = self.lo.abs().max(self.hi.abs());
                // No "-0.00" from rounding.
                let v = if v.abs() < (self.hi - self.lo) * 1e-9 {
                    0.0
                } else {
                    v
                };
                if big >= 1e6 || self.decimals > 5 {
                    if v == 0.0 {
                        return "0".into();
                    }
                    let s = format!("{v:.2e}");
                    // 1.50e-5 -> 1.5e-5
                    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
                    let m = m.trim_end_matches('0').trim_end_matches('.');
                    format!("{m}e{e}")
                } else {
                    format!("{:.*}", self.decimals, v)
                }
            }
        }
    }
}

impl Ranged for Axis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let f = self.frac(*value);
        limit.0 + (f * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        match hint.weight() {
            KeyPointWeight::Bold => self.ticks.clone(),
            KeyPointWeight::Any => self.minor.clone(),
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for Axis {
    fn format_ext(&self, value: &f64) -> String {
        self.label(*value)
    }
}

/// One series of a panel: points (step, value) and, optionally, a band (step, low, high).
#[derive(Clone, Debug, Default)]
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub band: Vec<(f64, f64, f64)>,
}

/// One chart.
#[derive(Clone, Debug, Default)]
pub struct Panel {
    pub title: String,
    pub lines: Vec<Line>,
    /// The step range (default: 0, or the first step if negative, to the last step).
    pub x_range: Option<(f64, f64)>,
    /// What the shaded bands are: the legend's last entry, beside a shaded swatch.
    pub note: Option<String>,
    /// Pixel width (default [`WIDTH`]).
    pub width: Option<u32>,
}

/// Centred moving average over `w` points (shrinking at the ends).
pub fn moving_average(points: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    let n = points.len();
    let half = w / 2;
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0.0);
    for p in points {
        prefix.push(prefix.last().copied().unwrap_or(0.0) + p.1);
    }
    (0..n)
        .map(|i| {
            let a = i.saturating_sub(half);
            let b = (i + half + 1).min(n);
            (points[i].0, (prefix[b] - prefix[a]) / (b - a) as f64)
        })
        .collect()
}

/// The drawn version of a dense series (the module's rule), or `None` for a sparse one.
pub fn smoothed(points: &[(f64, f64)]) -> Option<Vec<(f64, f64)>> {
    (points.len() > SMOOTH_ABOVE).then(|| moving_average(points, (points.len() / 50) | 1))
}

/// Mean over runs at every step any of them logged, with the min-max band over the runs that
/// reached that step (empty when only one run contributes anywhere). Dense runs are smoothed
/// first, so the band shows the spread of the trends rather than step noise.
pub fn mean_band(name: &str, runs: &[&[(f64, f64)]]) -> Line {
    let mut at: std::collections::BTreeMap<i64, (f64, Vec<f64>)> = Default::default();
    for run in runs {
        let drawn = smoothed(run);
        for &(x, y) in drawn.as_deref().unwrap_or(run) {
            // Steps are integers; the key keeps them in order.
            at.entry((x * 1000.0).round() as i64)
                .or_insert((x, Vec::new()))
                .1
                .push(y);
        }
    }
    let multi = at.values().any(|(_, v)| v.len() > 1);
    let mut line = Line {
        name: name.to_string(),
        ..Default::default()
    };
    for (x, v) in at.values() {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        line.points.push((*x, mean));
        if multi {
            let lo = v.iter().copied().fold(f64::MAX, f64::min);
            let hi = v.iter().copied().fold(f64::MIN, f64::max);
            line.band.push((*x, lo, hi));
        }
    }
    line
}

/// Default pixel width of a chart (the legend adds rows below its 380 pixels).
pub const WIDTH: u32 = 900;
/// Width of the half-width charts (evaluations, beside each other).
pub const SMALL_WIDTH: u32 = 560;
const PLOT_HEIGHT: u32 = 380;
const LEGEND_ROW: u32 = 20;
const LEGEND_SAMPLE: u32 = 34;
const FONT: &str = "sans-serif";

/// Legend layout: (columns, rows, column width).
fn legend_layout(names: &[&str], width: u32) -> (usize, usize, u32) {
    let font: FontDesc = (FONT, 14).into_font();
    let widest = names
        .iter()
        .map(|n| {
            font.box_size(n)
                .map(|(w, _)| w)
                .unwrap_or(8 * n.len() as u32)
        })
        .max()
        .unwrap_or(0);
    let col = LEGEND_SAMPLE + 10 + widest + 22;
    let cols = (width.saturating_sub(80) / col).max(1) as usize;
    let cols = cols.min(names.len().max(1));
    (cols, names.len().div_ceil(cols), col)
}

/// Splits a polyline (pixels) into the "on" pieces of a dash pattern.
fn dashes(points: &[(i32, i32)], pattern: &[f64]) -> Vec<Vec<(i32, i32)>> {
    if pattern.is_empty() || points.len() < 2 {
        return vec![points.to_vec()];
    }
    let mut out = Vec::new();
    let mut current: Vec<(i32, i32)> = vec![points[0]];
    let (mut idx, mut left) = (0usize, pattern[0]);
    let f = |p: (i32, i32)| (p.0 as f64, p.1 as f64);
    for w in points.windows(2) {
        let (mut a, b) = (f(w[0]), f(w[1]));
        loop {
            let d = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
            if d <= left {
                left -= d;
                if idx % 2 == 0 {
                    current.push(w[1]);
                }
                break;
            }
            let t = left / d;
            let p = (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
            let pi = (p.0.round() as i32, p.1.round() as i32);
            if idx % 2 == 0 {
                current.push(pi);
                out.push(std::mem::take(&mut current));
            } else {
                current = vec![pi];
            }
            a = p;
            idx = (idx + 1) % pattern.len();
            left = pattern[idx];
        }
    }
    if idx % 2 == 0 && current.len() > 1 {
        out.push(current);
    }
    out
}

/// A polyline in pixels.
type Pixels = Vec<(i32, i32)>;
type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn draw_marker(area: &Area, at: (i32, i32), marker: Marker, color: RGBColor) -> DrawResult {
    let s = color.filled();
    let (x, y) = at;
    match marker {
        Marker::None => {}
        Marker::Circle => area.draw(&Circle::new(at, 4, s))?,
        Marker::Square => area.draw(&Rectangle::new([(x - 4, y - 4), (x + 4, y + 4)], s))?,
        Marker::Triangle => area.draw(&Polygon::new(
            vec![(x, y - 5), (x - 5, y + 4), (x + 5, y + 4)],
            s,
        ))?,
        Marker::Diamond => area.draw(&Polygon::new(
            vec![(x, y - 5), (x + 5, y), (x, y + 5), (x - 5, y)],
            s,
        ))?,
    }
    Ok(())
}

fn draw_styled(area: &Area, px: &[(i32, i32)], st: Style, width: u32) -> DrawResult {
    let color = PALETTE[st.color];
    for piece in dashes(px, st.dash.pattern()) {
        if piece.len() > 1 {
            area.draw(&PathElement::new(piece, color.stroke_width(width)))?;
        }
    }
    Ok(())
}

impl Panel {
    /// Every value the y-axis must cover (points and bands).
    fn values(&self) -> Vec<f64> {
        let mut v = Vec::new();
        for l in &self.lines {
            v.extend(l.points.iter().map(|p| p.1));
            for b in &l.band {
                v.extend([b.1, b.2]);
            }
        }
        v
    }

    /// The y-axis this panel gets.
    pub fn y_axis(&self) -> Axis {
        Axis::values(&self.values())
    }

    /// The step axis this panel gets.
    pub fn x_axis(&self) -> Axis {
        let (lo, hi) = self.x_range.unwrap_or_else(|| {
            let xs = self.lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
            let (a, b) = xs.fold((0.0f64, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
            (a, b.max(a + 1.0))
        });
        Axis::steps(lo, hi)
    }

    /// The panel as PNG bytes, or `None` when it has no points.
    pub fn render(&self) -> Result<Option<Vec<u8>>> {
        let lines: Vec<(usize, &Line)> = self
            .lines
            .iter()
            .filter(|l| !l.points.is_empty())
            .enumerate()
            .collect();
        if lines.is_empty() {
            return Ok(None);
        }
        register_fonts();
        let mut names: Vec<&str> = lines.iter().map(|(_, l)| l.name.as_str()).collect();
        if let Some(note) = &self.note {
            names.push(note);
        }
        let width = self.width.unwrap_or(WIDTH);
        let (cols, rows, col_w) = legend_layout(&names, width);
        let height = PLOT_HEIGHT + rows as u32 * LEGEND_ROW + 16;
        let mut buf = vec![255u8; (width * height * 3) as usize];
        let (xa, ya) = (self.x_axis(), self.y_axis());
        let draw = |buf: &mut [u8]| -> DrawResult {
            let root = BitMapBackend::with_buffer(buf, (width, height)).into_drawing_area();
            root.fill(&WHITE)?;
            let (top, legend) = root.split_vertically(PLOT_HEIGHT);
            let mut caption = self.title.clone();
            if ya.scale == Scale::Log {
                caption.push_str("  (log scale)");
            }
            let mut builder = ChartBuilder::on(&top);
            builder
                .caption(&caption, (FONT, 20))
                .margin_top(8)
                .margin_left(10)
                // Half the widest step label fits beside the last tick.
                .margin_right(36)
                .x_label_area_size(40)
                .y_label_area_size(70);
            let mut chart = builder.build_cartesian_2d(xa.clone(), ya.clone())?;
            let (xf, yf) = (|v: &f64| xa.label(*v), |v: &f64| ya.label(*v));
            chart
                .configure_mesh()
                .x_desc("step")
                .x_label_formatter(&xf)
                .y_label_formatter(&yf)
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 13))
                .bold_line_style(RGBColor(0, 0, 0).mix(0.15))
                .light_line_style(RGBColor(0, 0, 0).mix(0.05))
                .draw()?;
            let px = |x: f64, y: f64| chart.backend_coord(&(x, y));
            // Bands, then faint raw lines, then the styled lines, then markers.
            for &(i, l) in &lines {
                if l.band.len() > 1 {
                    let color = PALETTE[style(i).color];
                    let mut poly: Vec<(i32, i32)> = l.band.iter().map(|b| px(b.0, b.2)).collect();
                    poly.extend(l.band.iter().rev().map(|b| px(b.0, b.1)));
                    root.draw(&Polygon::new(poly, color.mix(0.16).filled()))?;
                }
            }
            // (series index, pixels, points logged)
            let mut drawn: Vec<(usize, Pixels, usize)> = Vec::new();
            for &(i, l) in &lines {
                let color = PALETTE[style(i).color];
                let raw: Vec<(i32, i32)> = l.points.iter().map(|p| px(p.0, p.1)).collect();
                let line = match smoothed(&l.points) {
                    Some(s) => {
                        root.draw(&PathElement::new(raw, color.mix(0.18).stroke_width(1)))?;
                        s.iter().map(|p| px(p.0, p.1)).collect()
                    }
                    None => raw,
                };
                drawn.push((i, line, l.points.len()));
            }
            for (i, line, _) in &drawn {
                draw_styled(&root, line, style(*i), 2)?;
            }
            for (i, line, n) in &drawn {
                let st = style(*i);
                let color = PALETTE[st.color];
                if *n <= MARK_ALL_BELOW {
                    let m = if st.marker == Marker::None {
                        Marker::Circle
                    } else {
                        st.marker
                    };
                    for &p in line {
                        draw_marker(&root, p, m, color)?;
                    }
                } else if st.marker != Marker::None {
                    // Eight markers along the line, staggered per series.
                    for k in 0..8 {
                        let f = (k as f64 + 0.25 + 0.5 * ((i % 4) as f64 / 4.0)) / 8.0;
                        let j = ((line.len() - 1) as f64 * f).round() as usize;
                        draw_marker(&root, line[j], st.marker, color)?;
                    }
                }
            }
            // The legend: a sample of each style, then the name.
            for (k, &(i, l)) in lines.iter().enumerate() {
                let (c, r) = (k % cols, k / cols);
                let x0 = 70 + c as i32 * col_w as i32;
                let y0 = 8 + r as i32 * LEGEND_ROW as i32 + LEGEND_ROW as i32 / 2;
                let st = style(i);
                let color = PALETTE[st.color];
                let sample = [(x0, y0), (x0 + LEGEND_SAMPLE as i32, y0)];
                for piece in dashes(&sample, st.dash.pattern()) {
                    if piece.len() > 1 {
                        legend.draw(&PathElement::new(piece, color.stroke_width(2)))?;
                    }
                }
                let m = match (st.marker, l.points.len() <= MARK_ALL_BELOW) {
                    (Marker::None, true) => Marker::Circle,
                    (m, _) => m,
                };
                draw_marker(&legend, (x0 + LEGEND_SAMPLE as i32 / 2, y0), m, color)?;
                legend.draw(&Text::new(
                    l.name.clone(),
                    (x0 + LEGEND_SAMPLE as i32 + 8, y0),
                    (FONT, 14)
                        .into_font()
                        .into_text_style(&legend)
                        .pos(Pos::new(HPos::Left, VPos::Center)),
                ))?;
            }
            if let Some(note) = &self.note {
                let k = lines.len();
                let (c, r) = (k % cols, k / cols);
                let x0 = 70 + c as i32 * col_w as i32;
                let y0 = 8 + r as i32 * LEGEND_ROW as i32 + LEGEND_ROW as i32 / 2;
                legend.draw(&Rectangle::new(
                    [(x0, y0 - 6), (x0 + LEGEND_SAMPLE as i32, y0 + 6)],
                    RGBColor(0, 0, 0).mix(0.16).filled(),
                ))?;
                legend.draw(&Text::new(
                    note.clone(),
                    (x0 + LEGEND_SAMPLE as i32 + 8, y0),
                    (FONT, 14)
                        .into_font()
                        .into_text_style(&legend)
                        .pos(Pos::new(HPos::Left, VPos::Center)),
                ))?;
            }
            root.present()?;
            Ok(())
        };
        draw(&mut buf).map_err(|e| Error::io(&self.title, e.to_string()))?;
        let img =
            image::RgbImage::from_raw(width, height, buf).expect("buffer of the chart's size");
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new_with_quality(
            &mut png,
            image::codecs::png::CompressionType::Default,
            image::codecs::png::FilterType::Sub,
        )
        .write_image(img.as_raw(), width, height, image::ExtendedColorType::Rgb8)
        .map_err(|e| Error::io(&self.title, e.to_string()))?;
        Ok(Some(png))
    }
}

use image::ImageEncoder as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_four_decade_family_is_logarithmic_and_a_narrow_one_linear() {
        let wide: Vec<f64> = (0..50)
            .map(|i| 10f64.powf(-2.0 + 4.0 * i as f64 / 49.0))
            .collect();
        assert_eq!(choose_scale(&wide), Scale::Log);
        let a = Axis::values(&wide);
        assert_eq!(a.scale, Scale::Log);
        assert_eq!(a.ticks, vec![0.01, 0.1, 1.0, 10.0, 100.0]);
        let labels: Vec<String> = a.ticks.iter().map(|t| a.label(*t)).collect();
        assert_eq!(labels, ["0.01", "0.1", "1", "10", "100"]);
        // Zeros do not stop a log axis (they sit on its floor); a negative value does.
        let mut with_zero = wide.clone();
        with_zero.push(0.0);
        assert_eq!(choose_scale(&with_zero), Scale::Log);
        assert_eq!(Axis::values(&with_zero).frac(0.0), 0.0);
        with_zero.push(-0.1);
        assert_eq!(choose_scale(&with_zero), Scale::Linear);
        // Two decades exactly, and a narrow range: linear.
        assert_eq!(choose_scale(&[0.01, 1.0]), Scale::Linear);
        let narrow = [0.52, 0.61, 0.7, 0.88];
        assert_eq!(choose_scale(&narrow), Scale::Linear);
        let a = Axis::values(&narrow);
        assert!(a.lo <= 0.52 && a.hi >= 0.88);
        assert!(a.ticks.len() >= 3, "{:?}", a.ticks);
        let labels: Vec<String> = a.ticks.iter().map(|t| a.label(*t)).collect();
        assert!(labels.iter().all(|l| l.len() <= 5), "{labels:?}");
        let a = Axis::values(&[0.0, 1.0]);
        let labels: Vec<String> = a.ticks.iter().map(|t| a.label(*t)).collect();
        assert_eq!(labels, ["0.00", "0.25", "0.50", "0.75", "1.00"]);
        let a = Axis::values(&[-3.0, 2.0]);
        assert!(
            a.ticks.iter().all(|t| !a.label(*t).starts_with("-0")),
            "{:?}",
            a.ticks
        );
        // Many decades: at most 9 labelled ticks.
        let a = Axis::values(&[1e-8, 1e9]);
        assert!(a.ticks.len() <= 9, "{:?}", a.ticks);
        assert_eq!(a.label(1e-8), "1e-8");
    }

    #[test]
    fn step_ticks_are_integers_and_cover_the_last_step() {
        for (lo, hi) in [
            (0.0, 5000.0),
            (0.0, 30.0),
            (0.0, 7.0),
            (0.0, 1.0),
            (100.0, 123456.0),
        ] {
            let a = Axis::steps(lo, hi);
            assert!(!a.ticks.is_empty());
            for t in &a.ticks {
                let l = a.label(*t);
                assert!(!l.contains('.'), "{l}");
                assert_eq!(l.parse::<f64>().unwrap(), *t);
                assert!(*t >= lo && *t <= hi);
            }
            assert!(a.ticks.len() <= 9, "{:?}", a.ticks);
        }
        let a = Axis::steps(0.0, 5000.0);
        assert_eq!(a.ticks.last(), Some(&5000.0));
        assert_eq!(a.label(500.0), "500");
    }

    #[test]
    fn fifteen_series_get_fifteen_distinct_styles() {
        let styles: Vec<Style> = (0..15).map(style).collect();
        for (i, a) in styles.iter().enumerate() {
            for b in &styles[i + 1..] {
                assert_ne!((a.color, a.dash), (b.color, b.dash), "{a:?} {b:?}");
            }
        }
        let all: std::collections::HashSet<Style> = (0..100).map(style).collect();
        assert_eq!(all.len(), 100);
        // And a 15-series panel renders, with its legend below.
        let panel = Panel {
            title: "U-GAT-IT losses".into(),
            lines: (0..15)
                .map(|i| Line {
                    name: format!("loss/d/part_{i}"),
                    points: (0..500)
                        .map(|s| (s as f64, (i + 1) as f64 * (1.0 + (s as f64).sin())))
                        .collect(),
                    band: vec![],
                })
                .collect(),
            ..Default::default()
        };
        let png = panel.render().unwrap().unwrap();
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!(img.width(), WIDTH);
        assert!(img.height() > PLOT_HEIGHT + 2 * LEGEND_ROW);
    }

    #[test]
    fn mean_band_is_min_to_max_over_runs() {
        let a = [(0.0, 1.0), (10.0, 3.0)];
        let b = [(0.0, 3.0), (10.0, 5.0), (20.0, 9.0)];
        let l = mean_band("arm", &[&a, &b]);
        assert_eq!(l.points, vec![(0.0, 2.0), (10.0, 4.0), (20.0, 9.0)]);
        assert_eq!(
            l.band,
            vec![(0.0, 1.0, 3.0), (10.0, 3.0, 5.0), (20.0, 9.0, 9.0)]
        );
        assert!(mean_band("one", &[&a]).band.is_empty());
    }

    #[test]
    fn dash_patterns_split_a_line() {
        let line = [(0, 0), (100, 0)];
        assert_eq!(dashes(&line, &[]).len(), 1);
        let d = dashes(&line, Dash::Dashed.pattern());
        assert!(d.len() >= 7, "{d:?}");
        assert!(d.iter().all(|p| p.len() >= 2));
    }
}
