//! A PNG of the run: GPUs allocated and stranded (top) and the queue's
//! length (bottom) over simulated time.
//!
//! Text needs a TrueType font, read at run time (no system font library is
//! linked): `--plot-font`, else DejaVu Sans where Debian's and Fedora's
//! packages put it. Without one the plot is drawn without text.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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

pub fn draw(outcome: &Outcome, path: &Path, text: bool) -> Result<(), PlotError> {
    let fail = |e: &dyn std::fmt::Display| PlotError { path: path.display().to_string(), message: e.to_string() };
    let samples = &outcome.samples;
    let end = samples.last().map_or(1.0, |s| s.at.as_secs_f64()).max(1.0);
    let total = outcome.total_gpus.max(1) as f64;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let (top, bottom) = root.split_vertically(SIZE.1 / 2);
    let label_area = if text { 50 } else { 5 };

    let mut gpus = ChartBuilder::on(&top);
    gpus.margin(12).x_label_area_size(label_area).y_label_area_size(label_area + 10);
    if text {
        gpus.caption("GPUs over simulated time", (FAMILY, 22));
    }
    let mut gpus = gpus.build_cartesian_2d(0.0..end, 0.0..105.0).map_err(|e| fail(&e))?;
    let mut mesh = gpus.configure_mesh();
    if text {
        mesh.x_desc("time (s)").y_desc("% of GPUs");
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| fail(&e))?;
    let allocated = steps(samples, |s| s.allocated_gpus as f64 * 100.0 / total);
    let stranded = steps(samples, |s| s.stranded_gpus as f64 * 100.0 / total);
    let series = [("allocated", allocated, BLUE), ("stranded (free, fits no pending pod)", stranded, RED)];
    for (name, points, color) in series {
        let drawn = gpus.draw_series(LineSeries::new(points, color.stroke_width(2))).map_err(|e| fail(&e))?;
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
            .map_err(|e| fail(&e))?;
    }

    let longest = samples.iter().map(|s| s.pending_pods).max().unwrap_or(0).max(1) as f64;
    let mut queue = ChartBuilder::on(&bottom);
    queue.margin(12).x_label_area_size(label_area).y_label_area_size(label_area + 10);
    if text {
        queue.caption("Queue length", (FAMILY, 22));
    }
    let mut queue = queue.build_cartesian_2d(0.0..end, 0.0..longest * 1.05).map_err(|e| fail(&e))?;
    let mut mesh = queue.configure_mesh();
    if text {
        mesh.x_desc("time (s)").y_desc("pending pods");
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| fail(&e))?;
    let pending = steps(samples, |s| s.pending_pods as f64);
    queue.draw_series(LineSeries::new(pending, RGBColor(0, 130, 0).stroke_width(2))).map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}
