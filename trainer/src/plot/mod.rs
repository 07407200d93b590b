//! Line plots as SVG, for every report of the trainer.
//!
//! A report says what to draw with plain data: a [`Figure`] is a title and
//! panels side by side; a [`Panel`] has a title, two [`Axis`] labels and
//! [`Series`] of [`Point`]s, each point optionally the mean of repeats with
//! its standard deviation, drawn as an error bar (mean ± std).
//! [`Figure::svg`] draws it with the `plotters` crate's SVG back end in one
//! style for all reports: axes padded around the data with round ticks
//! (steps of 1, 2 or 5 times a power of ten), one colour and marker shape per series
//! label across all panels, and one legend to the right of the panels, so it
//! never covers data.
//!
//! Text is measured with plotters' built-in estimate and drawn by the SVG
//! viewer's sans-serif font, so drawing needs no font files and no system
//! font library.

use std::fmt;
use std::ops::Range;

use plotters::coord::Shift;
use plotters::element::{Drawable, PointCollection};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{BackendCoord, DrawingErrorKind};

#[cfg(test)]
mod tests;

/// One point of a series: `y` at `x`, and where `y` is the mean of
/// repeats, its standard deviation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Position on the horizontal axis.
    pub x: f64,
    /// Value (the mean, with `std`).
    pub y: f64,
    /// Standard deviation of `y`, drawn as an error bar from `y - std` to
    /// `y + std`.
    pub std: Option<f64>,
}

impl Point {
    /// A point without error bar.
    pub fn new(x: f64, y: f64) -> Point {
        Point { x, y, std: None }
    }

    /// A mean with its standard deviation.
    pub fn with_std(x: f64, y: f64, std: f64) -> Point {
        Point {
            x,
            y,
            std: Some(std),
        }
    }

    fn is_finite(&self) -> bool {
        self.x.is_finite() && self.y.is_finite()
    }

    /// The error bar's half length, when there is one to draw.
    fn bar(&self) -> Option<f64> {
        self.std.filter(|s| s.is_finite() && *s > 0.0)
    }
}

/// A line with markers, named in the legend.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend's name for it; series of the same label in several panels
    /// share colour and marker.
    pub label: String,
    /// Its points, joined in this order. Points with a coordinate that is
    /// not finite are left out.
    pub points: Vec<Point>,
}

impl Series {
    /// A series named `label`.
    pub fn new(label: impl Into<String>, points: Vec<Point>) -> Series {
        Series {
            label: label.into(),
            points,
        }
    }
}

/// One axis of a panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// What the axis shows, with its unit.
    pub label: String,
    /// The range of meaningful values (0 to 100 for a percentage): the
    /// padding around the data may reach past it, but ticks there have no
    /// label.
    pub bounds: Option<(f64, f64)>,
}

impl Axis {
    /// An axis without bounds.
    pub fn new(label: impl Into<String>) -> Axis {
        Axis {
            label: label.into(),
            bounds: None,
        }
    }

    /// An axis of percentages: ticks are labelled from 0 to 100 only.
    pub fn percent(label: impl Into<String>) -> Axis {
        Axis {
            label: label.into(),
            bounds: Some((0.0, 100.0)),
        }
    }
}

/// One plot of a figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Its title, above it.
    pub title: String,
    /// The horizontal axis.
    pub x: Axis,
    /// The vertical axis.
    pub y: Axis,
    /// The lines, drawn in this order.
    pub series: Vec<Series>,
}

/// Panels side by side under one title, with one legend.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// The title above all panels.
    pub title: String,
    /// The panels, left to right.
    pub panels: Vec<Panel>,
}

/// The last component of a path (`/data/tiny` gives `tiny`), for titles:
/// a data set may be named by its folder.
pub fn last_component(path: &str) -> &str {
    std::path::Path::new(path)
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or(path)
}

/// Drawing failed (plotters reported an error).
#[derive(Debug, Clone, PartialEq)]
pub struct PlotError(String);

impl fmt::Display for PlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot draw the plot: {}", self.0)
    }
}

impl std::error::Error for PlotError {}

/// Width and height of one panel, in pixels.
const PANEL: (u32, u32) = (470, 400);
/// Height of the figure's title strip.
const TITLE_H: u32 = 40;
/// Ticks per axis, at most.
const MAX_TICKS: usize = 8;
/// Font sizes as plotters counts them (the SVG gets the size / 1.24).
const TITLE_FONT: f64 = 21.0;
const CAPTION_FONT: f64 = 18.0;
const DESC_FONT: f64 = 16.0;
const TICK_FONT: f64 = 15.0;
/// Marker radius and error-bar cap half width, in pixels.
const MARK: i32 = 4;
/// Pixels between series side by side where a panel has error bars.
const DODGE: i32 = 5;

/// The colours of series, in legend order (matplotlib's "tab10").
const PALETTE: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// Marker shapes, in legend order after the palette's colours.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Circle,
    Square,
    TriangleUp,
    Diamond,
    TriangleDown,
    TriangleLeft,
    TriangleRight,
}

const SHAPES: [Shape; 7] = [
    Shape::Circle,
    Shape::Square,
    Shape::TriangleUp,
    Shape::Diamond,
    Shape::TriangleDown,
    Shape::TriangleLeft,
    Shape::TriangleRight,
];

/// How the series of one label look.
#[derive(Debug, Clone, Copy)]
struct Look {
    color: RGBColor,
    shape: Shape,
}

fn look(index: usize) -> Look {
    Look {
        color: PALETTE[index % PALETTE.len()],
        shape: SHAPES[index % SHAPES.len()],
    }
}

impl Figure {
    /// The legend: every series label once, in order of first appearance.
    pub fn labels(&self) -> Vec<&str> {
        let mut labels: Vec<&str> = Vec::new();
        for s in self.panels.iter().flat_map(|p| &p.series) {
            if !labels.contains(&s.label.as_str()) {
                labels.push(&s.label);
            }
        }
        labels
    }

    /// The figure as an SVG document.
    pub fn svg(&self) -> Result<String, PlotError> {
        let labels = self.labels();
        let legend_w = legend_width(&labels);
        let n = self.panels.len().max(1) as u32;
        let size = (PANEL.0 * n + legend_w, TITLE_H + PANEL.1);
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
            self.draw(&root, &labels, legend_w)
                .map_err(|e| PlotError(e.to_string()))?;
            root.present().map_err(|e| PlotError(e.to_string()))?;
        }
        Ok(out)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        labels: &[&str],
        legend_w: u32,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let (title, body) = root.split_vertically(TITLE_H);
        let (w, _) = title.dim_in_pixel();
        title.draw_text(
            &self.title,
            &font(title_font(&self.title, w)).pos(Pos::new(HPos::Center, VPos::Center)),
            (w as i32 / 2, TITLE_H as i32 / 2 + 4),
        )?;
        let (w, _) = body.dim_in_pixel();
        let (plots, legend) = body.split_horizontally(w - legend_w);
        let looks = |label: &str| look(labels.iter().position(|l| *l == label).unwrap_or(0));
        let areas = plots.split_evenly((1, self.panels.len().max(1)));
        for (panel, area) in self.panels.iter().zip(&areas) {
            draw_panel(area, panel, &looks)?;
        }
        draw_legend(&legend, labels)
    }
}

/// The title's font size: [`TITLE_FONT`], or smaller so that a long
/// title fits `width` pixels (about 0.55 em per character of a sans-serif
/// font, with a margin), but never below 9.
fn title_font(title: &str, width: u32) -> f64 {
    let chars = title.chars().count().max(1) as f64;
    let fits = (width as f64 - 20.0) * 1.24 / (0.55 * chars);
    TITLE_FONT.min(fits).max(9.0)
}

fn font(size: f64) -> TextStyle<'static> {
    TextStyle::from(("sans-serif", size).into_font()).color(&BLACK)
}

/// The legend's width: room for the longest label (plotters' estimate of
/// text width is rough, so generously).
fn legend_width(labels: &[&str]) -> u32 {
    let chars = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    (60 + 8 * chars as u32).max(110)
}

/// A number as a tick label shows it: without float noise
/// (`0.30000000000000004` prints as `0.3`) and `0` never as `-0`.
pub fn tick_label(v: f64) -> String {
    let r = (v * 1e9).round() / 1e9;
    if r == 0.0 {
        "0".into()
    } else {
        format!("{r}")
    }
}

/// The label of the tick at `v` on an axis with `bounds`: none outside.
fn tick(v: f64, bounds: Option<(f64, f64)>) -> String {
    match bounds {
        Some((min, max)) if v < min - 1e-9 || v > max + 1e-9 => String::new(),
        _ => tick_label(v),
    }
}

/// The axis range for data from `lo` to `hi`: padded by a fraction of the
/// span on both sides (by a fixed amount where all values are equal), the
/// padding halved where it would reach past `bounds`. plotters places at
/// most [`MAX_TICKS`] ticks inside it, at multiples of 1, 2 or 5 times a
/// power of ten.
fn axis_range(lo: f64, hi: f64, bounds: Option<(f64, f64)>) -> Range<f64> {
    if !(lo.is_finite() && hi.is_finite()) || lo > hi {
        return 0.0..1.0;
    }
    let pad = if hi > lo {
        (hi - lo) * 0.06
    } else {
        (hi.abs() * 0.005).max(0.5)
    };
    let (mut a, mut b) = (lo - pad, hi + pad);
    if let Some((min, max)) = bounds {
        let edge = 0.03 * (b - a);
        if lo >= min {
            a = a.max(min - edge);
        }
        if hi <= max {
            b = b.min(max + edge);
        }
    }
    a..b
}

/// The data range of a panel: x over the points, y over the error bars too.
fn extent(panel: &Panel) -> ((f64, f64), (f64, f64)) {
    let mut x = (f64::INFINITY, f64::NEG_INFINITY);
    let mut y = x;
    for p in panel
        .series
        .iter()
        .flat_map(|s| &s.points)
        .filter(|p| p.is_finite())
    {
        let e = p.bar().unwrap_or(0.0);
        x = (x.0.min(p.x), x.1.max(p.x));
        y = (y.0.min(p.y - e), y.1.max(p.y + e));
    }
    (x, y)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    looks: &dyn Fn(&str) -> Look,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let ((x0, x1), (y0, y1)) = extent(panel);
    let xr = axis_range(x0, x1, panel.x.bounds);
    let yr = axis_range(y0, y1, panel.y.bounds);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, font(CAPTION_FONT))
        .margin_top(6)
        .margin_left(8)
        .margin_right(22)
        .margin_bottom(8)
        .x_label_area_size(46)
        .y_label_area_size(64)
        .build_cartesian_2d(xr, yr)?;
    let x_tick = |v: &f64| tick(*v, panel.x.bounds);
    let y_tick = |v: &f64| tick(*v, panel.y.bounds);
    chart
        .configure_mesh()
        .x_labels(MAX_TICKS)
        .y_labels(MAX_TICKS)
        .x_label_formatter(&x_tick)
        .y_label_formatter(&y_tick)
        .x_desc(panel.x.label.as_str())
        .y_desc(panel.y.label.as_str())
        .label_style(font(TICK_FONT))
        .axis_desc_style(font(DESC_FONT))
        .bold_line_style(RGBColor(0xe4, 0xe4, 0xe4))
        .light_line_style(TRANSPARENT)
        .draw()?;
    // Where a panel has error bars, each series is drawn a few pixels to
    // the side of the next, so that bars at the same x stay apart.
    let bars = panel
        .series
        .iter()
        .flat_map(|s| &s.points)
        .any(|p| p.bar().is_some());
    let n = panel.series.len() as i32;
    for (i, s) in panel.series.iter().enumerate() {
        let look = looks(&s.label);
        let dx = if bars {
            DODGE * (2 * i as i32 - (n - 1)) / 2
        } else {
            0
        };
        let points: Vec<&Point> = s.points.iter().filter(|p| p.is_finite()).collect();
        chart.plotting_area().draw(&Line {
            points: points.iter().map(|p| (p.x, p.y)).collect(),
            dx,
            color: look.color,
        })?;
        chart.draw_series(points.iter().filter_map(|p| {
            p.bar().map(|e| ErrorLines {
                points: [(p.x, p.y - e), (p.x, p.y + e)],
                dx,
                color: look.color,
            })
        }))?;
        for p in &points {
            chart.plotting_area().draw(&Marker {
                at: (p.x, p.y),
                dx,
                look,
            })?;
        }
    }
    Ok(())
}

/// A series' line through its points, `dx` pixels to the side.
struct Line {
    points: Vec<(f64, f64)>,
    dx: i32,
    color: RGBColor,
}

impl<'a> PointCollection<'a, (f64, f64)> for &'a Line {
    type Point = &'a (f64, f64);
    type IntoIter = &'a [(f64, f64)];
    fn point_iter(self) -> Self::IntoIter {
        &self.points
    }
}

impl<DB: DrawingBackend> Drawable<DB> for Line {
    fn draw<I: Iterator<Item = BackendCoord>>(
        &self,
        pos: I,
        backend: &mut DB,
        _: (u32, u32),
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        let path = pos.map(|(x, y)| (x + self.dx, y));
        backend.draw_path(path, &self.color.stroke_width(2))
    }
}

/// An error bar: a vertical line from `points[0]` to `points[1]` with a
/// short cap at each end, drawn as three `<line>`s in the series' colour.
struct ErrorLines {
    points: [(f64, f64); 2],
    dx: i32,
    color: RGBColor,
}

impl<'a> PointCollection<'a, (f64, f64)> for &'a ErrorLines {
    type Point = &'a (f64, f64);
    type IntoIter = &'a [(f64, f64)];
    fn point_iter(self) -> Self::IntoIter {
        &self.points
    }
}

impl<DB: DrawingBackend> Drawable<DB> for ErrorLines {
    fn draw<I: Iterator<Item = BackendCoord>>(
        &self,
        mut pos: I,
        backend: &mut DB,
        _: (u32, u32),
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        let (Some((x, lo)), Some((_, hi))) = (pos.next(), pos.next()) else {
            return Ok(());
        };
        let (x, lo, hi) = (x + self.dx, (x + self.dx, lo), (x + self.dx, hi));
        let style = self.color.stroke_width(2);
        backend.draw_line(lo, hi, &style)?;
        for (_, y) in [lo, hi] {
            backend.draw_line((x - MARK - 1, y), (x + MARK + 1, y), &style)?;
        }
        Ok(())
    }
}

/// A hollow marker of a series' shape and colour, centred on one point:
/// markers of series that coincide stay visible one inside the other.
struct Marker<C> {
    at: C,
    /// Pixels to the side.
    dx: i32,
    look: Look,
}

impl<'a, C> PointCollection<'a, C> for &'a Marker<C> {
    type Point = &'a C;
    type IntoIter = std::iter::Once<&'a C>;
    fn point_iter(self) -> Self::IntoIter {
        std::iter::once(&self.at)
    }
}

impl<C, DB: DrawingBackend> Drawable<DB> for Marker<C> {
    fn draw<I: Iterator<Item = BackendCoord>>(
        &self,
        mut pos: I,
        backend: &mut DB,
        _: (u32, u32),
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        let Some((x, y)) = pos.next() else {
            return Ok(());
        };
        let x = x + self.dx;
        let style = self.look.color.stroke_width(2);
        // Sizes differ by shape, so that markers of coinciding points of
        // two series do not hide each other.
        let corners: Vec<BackendCoord> = match self.look.shape {
            Shape::Circle => return backend.draw_circle((x, y), MARK as u32 + 1, &style, false),
            Shape::Square => vec![(-3, -3), (3, -3), (3, 3), (-3, 3)],
            Shape::TriangleUp => vec![(0, -6), (5, 4), (-5, 4)],
            Shape::Diamond => vec![(0, -6), (5, 0), (0, 6), (-5, 0)],
            Shape::TriangleDown => vec![(0, 6), (5, -4), (-5, -4)],
            Shape::TriangleLeft => vec![(-6, 0), (4, -5), (4, 5)],
            Shape::TriangleRight => vec![(6, 0), (-4, -5), (-4, 5)],
        };
        // A closed outline: back to the first corner.
        let first = corners[0];
        let outline = corners.into_iter().chain([first]);
        backend.draw_path(outline.map(|(dx, dy)| (x + dx, y + dy)), &style)
    }
}

/// The legend: a short line with the marker, and the label, per series.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    labels: &[&str],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let top = 40;
    for (i, label) in labels.iter().enumerate() {
        let y = top + 24 * i as i32;
        let look = look(i);
        area.draw(&PathElement::new(
            vec![(6, y), (38, y)],
            look.color.stroke_width(2),
        ))?;
        area.draw(&Marker {
            at: (22, y),
            dx: 0,
            look,
        })?;
        area.draw_text(
            label,
            &font(TICK_FONT).pos(Pos::new(HPos::Left, VPos::Center)),
            (46, y),
        )?;
    }
    Ok(())
}
