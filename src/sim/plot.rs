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
fn steps(samples: &[Sample], value: impl Fn(&Sample) -> f64) -> Vec<(f64, f64)> {
    let mut points = Vec::with_capacity(samples.len() * 2);
    for s in samples {
        let t = s.at.as_secs_f64();
        if let Some(&(_, previous)) = points.last() {
            points.push((t, previous));
        }
        points.push((t, value(s)));
    }
    points
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

pub fn draw(outcome: &Outcome, path: &Path, text: bool) -> Result<(), PlotError> {
    let fail = |message: String| PlotError { path: path.display().to_string(), message };
    let samples = &outcome.samples;
    let end = samples.last().map_or(1.0, |s| s.at.as_secs_f64()).max(1.0);
    let total = outcome.total_gpus.max(1) as f64;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let (top, bottom) = root.split_vertically(SIZE.1 / 2);

    let mut gpus = panel(&top, "GPUs over simulated time", "% of GPUs", end, 105.0, text).map_err(fail)?;
    let allocated = steps(samples, |s| s.allocated_gpus as f64 * 100.0 / total);
    let stranded = steps(samples, |s| s.stranded_gpus as f64 * 100.0 / total);
    let series = [("allocated", allocated, BLUE), ("stranded (free, fits no pending pod)", stranded, RED)];
    for (name, points, color) in series {
        let drawn =
            gpus.draw_series(LineSeries::new(points, color.stroke_width(2))).map_err(|e| fail(e.to_string()))?;
        if text {
            drawn.label(name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
    }
    if text {
        gpus.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| fail(e.to_string()))?;
    }

    let longest = samples.iter().map(|s| s.pending_pods).max().unwrap_or(0).max(1) as f64;
    let mut queue = panel(&bottom, "Queue length", "pending pods", end, longest * 1.05, text).map_err(fail)?;
    let pending = steps(samples, |s| s.pending_pods as f64);
    let green = RGBColor(0, 130, 0).stroke_width(2);
    queue.draw_series(LineSeries::new(pending, green)).map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))?;
    Ok(())
}
