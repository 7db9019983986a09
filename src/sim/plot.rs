//! A PNG of the run: GPUs allocated and stranded (top) and the queue's
//! length (bottom) over simulated time.
//!
//! Text needs a TrueType font, read at run time (no system font library is
//! linked): `--plot-font`, else DejaVu Sans where Debian's and Fedora's
//! packages put it. Without one the plot is drawn without text.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use thiserror::Error;

use super::driver::{Outcome, Sample};

#[derive(Debug, Error)]
#[error("drawing {path}: {message}")]
pub struct PlotError {
    pub path: String,
    pub message: String,
}

const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

const FAMILY: &str = "sans-serif";
const SIZE: (u32, u32) = (1200, 800);

/// Registers a font for the plots' text, once per process. Returns whether text can be drawn.
pub fn load_font(explicit: Option<&Path>) -> bool {
    static LOADED: OnceLock<bool> = OnceLock::new();
    *LOADED.get_or_init(|| {
        let candidates: Vec<PathBuf> = match explicit {
            Some(path) => vec![path.to_path_buf()],
            None => FONT_PATHS.iter().map(PathBuf::from).collect(),
        };
        let Some(bytes) = candidates.iter().find_map(|p| std::fs::read(p).ok()) else {
            return false;
        };
        // The registry keeps fonts for the life of the process.
        register_font(FAMILY, FontStyle::Normal, Vec::leak(bytes)).is_ok()
    })
}

/// Points of a step function: each sample's value holds until the next.
pub fn steps<S>(samples: &[S], at: impl Fn(&S) -> f64, value: impl Fn(&S) -> f64) -> Vec<(f64, f64)> {
    let mut points = Vec::with_capacity(samples.len() * 2);
    for s in samples {
        let t = at(s);
        if let Some(&(_, previous)) = points.last() {
            points.push((t, previous));
        }
        points.push((t, value(s)));
    }
    points
}

/// One line of a panel.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
}

/// One chart of a timeline: its lines over `0..end` seconds and `0..y_max`,
/// and vertical marks (a moment something happened, in a colour).
pub struct Panel {
    pub title: String,
    pub y_desc: String,
    pub y_max: f64,
    pub series: Vec<Series>,
    pub marks: Vec<(f64, RGBColor)>,
}

/// A chart on `area` over `0..end` seconds and `0..y_max`, its axes and grid drawn.
fn panel<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    title: &str,
    y_desc: &str,
    end: f64,
    y_max: f64,
    text: bool,
) -> Result<ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>, String> {
    let label_area = if text { 50 } else { 5 };
    let mut builder = ChartBuilder::on(area);
    builder.margin(12).x_label_area_size(label_area).y_label_area_size(label_area + 10);
    if text {
        builder.caption(title, (FAMILY, 22));
    }
    let mut chart = builder.build_cartesian_2d(0.0..end, 0.0..y_max).map_err(|e| e.to_string())?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("time (s)").y_desc(y_desc);
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| e.to_string())?;
    Ok(chart)
}

/// Draws `panels` one above the other into a PNG at `path`.
pub fn draw_panels(panels: &[Panel], end: f64, path: &Path, text: bool) -> Result<(), PlotError> {
    let fail = |message: String| PlotError { path: path.display().to_string(), message };
    let height = SIZE.1 / 2 * panels.len().max(1) as u32;
    let root = BitMapBackend::new(path, (SIZE.0, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    for (area, p) in root.split_evenly((panels.len().max(1), 1)).iter().zip(panels) {
        let mut chart = panel(area, &p.title, &p.y_desc, end.max(1.0), p.y_max.max(1.0), text).map_err(fail)?;
        for &(t, color) in &p.marks {
            let mark = LineSeries::new([(t, 0.0), (t, p.y_max)], color.mix(0.5).stroke_width(1));
            chart.draw_series(mark).map_err(|e| fail(e.to_string()))?;
        }
        for series in &p.series {
            let color = series.color;
            let drawn = chart
                .draw_series(LineSeries::new(series.points.iter().copied(), color.stroke_width(2)))
                .map_err(|e| fail(e.to_string()))?;
            if text {
                drawn
                    .label(series.name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            }
        }
        if text && p.series.len() > 1 {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerRight)
                .draw()
                .map_err(|e| fail(e.to_string()))?;
        }
    }
    root.present().map_err(|e| fail(e.to_string()))?;
    Ok(())
}

pub fn draw(outcome: &Outcome, path: &Path, text: bool) -> Result<(), PlotError> {
    let samples = &outcome.samples;
    let end = samples.last().map_or(1.0, |s| s.at.as_secs_f64()).max(1.0);
    let total = outcome.total_gpus.max(1) as f64;
    let at = |s: &Sample| s.at.as_secs_f64();
    let gpus = Panel {
        title: "GPUs over simulated time".into(),
        y_desc: "% of GPUs".into(),
        y_max: 105.0,
        series: vec![
            Series {
                name: "allocated".into(),
                points: steps(samples, at, |s| s.allocated_gpus as f64 * 100.0 / total),
                color: BLUE,
            },
            Series {
                name: "stranded (free, fits no pending pod)".into(),
                points: steps(samples, at, |s| s.stranded_gpus as f64 * 100.0 / total),
                color: RED,
            },
        ],
        marks: Vec::new(),
    };
    let longest = samples.iter().map(|s| s.pending_pods).max().unwrap_or(0).max(1) as f64;
    let queue = Panel {
        title: "Queue length".into(),
        y_desc: "pending pods".into(),
        y_max: longest * 1.05,
        series: vec![Series {
            name: "pending".into(),
            points: steps(samples, at, |s| s.pending_pods as f64),
            color: RGBColor(0, 130, 0),
        }],
        marks: Vec::new(),
    };
    draw_panels(&[gpus, queue], end, path, text)
}
