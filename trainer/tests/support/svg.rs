//! Reads back what an SVG plot of the trainer drew, for tests: the texts,
//! the tick labels of each axis, and per colour the markers, lines and
//! error-bar segments. Used by the plot module's unit tests and by the
//! end-to-end tests of the reports.
#![allow(dead_code)]

use std::collections::BTreeMap;

/// Colours of axes, grid and background: not a series.
const NOT_SERIES: [&str; 4] = ["#000000", "#FFFFFF", "#E4E4E4", "none"];

/// What a plot drew.
#[derive(Debug, Default)]
pub struct Drawn {
    /// Every text, in document order.
    pub texts: Vec<String>,
    /// Texts that start at their position (the legend's labels).
    pub legend: Vec<String>,
    /// Tick values of each axis, in drawing order along the axis: the
    /// vertical axes (labels anchored at their end) by their position,
    /// then the horizontal axes (labels centred) of each panel.
    pub axes: Vec<Vec<f64>>,
    /// Markers by colour: circles, and closed outlines (`<polyline>`s that
    /// end where they start).
    pub markers: BTreeMap<String, usize>,
    /// `<line>`s (error-bar segments) by stroke colour.
    pub lines: BTreeMap<String, usize>,
    /// Other `<polyline>`s (series lines) by stroke colour.
    pub polylines: BTreeMap<String, usize>,
}

fn num(node: roxmltree::Node, attr: &str) -> f64 {
    node.attribute(attr)
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Parses `svg` (panics with the parser's message where it is not
/// well-formed XML or not an SVG document).
pub fn read(svg: &str) -> Drawn {
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("not XML: {e}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let mut d = Drawn::default();
    // (anchor x, label x, label y, value) of numeric labels.
    let mut ticks = Vec::new();
    for n in doc.descendants().filter(|n| n.is_element()) {
        let count = |map: &mut BTreeMap<String, usize>, attr: &str| {
            if let Some(c) = n.attribute(attr).filter(|c| !NOT_SERIES.contains(c)) {
                *map.entry(c.to_string()).or_default() += 1;
            }
        };
        match n.tag_name().name() {
            "text" => {
                let t = n.text().unwrap_or("").trim().to_string();
                let anchor = n.attribute("text-anchor").unwrap_or("start");
                if let Ok(v) = t.parse::<f64>() {
                    ticks.push((anchor.to_string(), num(n, "x"), num(n, "y"), v));
                } else if anchor == "start" && !t.is_empty() {
                    d.legend.push(t.clone());
                }
                d.texts.push(t);
            }
            "circle" => count(&mut d.markers, "stroke"),
            "line" => count(&mut d.lines, "stroke"),
            "polyline" => {
                let points: Vec<&str> = n
                    .attribute("points")
                    .unwrap_or("")
                    .split_whitespace()
                    .collect();
                if points.len() >= 4 && points.first() == points.last() {
                    count(&mut d.markers, "stroke")
                } else {
                    count(&mut d.polylines, "stroke")
                }
            }
            _ => {}
        }
    }
    // Vertical axes: one per label x. Horizontal axes: each tick belongs to
    // the panel whose vertical axis is nearest on its left.
    let mut left_edges: Vec<f64> = Vec::new();
    for (a, x, _, _) in &ticks {
        if a == "end" && !left_edges.contains(x) {
            left_edges.push(*x);
        }
    }
    left_edges.sort_by(f64::total_cmp);
    for edge in &left_edges {
        let mut axis: Vec<(f64, f64)> = ticks
            .iter()
            .filter(|(a, x, _, _)| a == "end" && x == edge)
            .map(|(_, _, y, v)| (-y, *v))
            .collect();
        axis.sort_by(|a, b| a.0.total_cmp(&b.0));
        d.axes.push(axis.into_iter().map(|p| p.1).collect());
    }
    for (i, edge) in left_edges.iter().enumerate() {
        let next = left_edges.get(i + 1).copied().unwrap_or(f64::INFINITY);
        let mut axis: Vec<(f64, f64)> = ticks
            .iter()
            .filter(|(a, x, _, _)| a == "middle" && *x > *edge && *x < next)
            .map(|(_, x, _, v)| (*x, *v))
            .collect();
        axis.sort_by(|a, b| a.0.total_cmp(&b.0));
        d.axes.push(axis.into_iter().map(|p| p.1).collect());
    }
    d
}

/// Whether `step` is 1, 2 or 5 times a power of ten.
fn is_round_step(step: f64) -> bool {
    let mag = 10f64.powf(step.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .any(|m| (step / mag - m).abs() < 1e-6)
}

/// Asserts that every axis has at least `min` ticks, evenly spaced by a
/// round step (1, 2 or 5 times a power of ten), each a multiple of it.
pub fn assert_round_ticks(d: &Drawn, min: usize) {
    assert!(!d.axes.is_empty(), "no axes with tick labels");
    for axis in &d.axes {
        assert!(axis.len() >= min, "too few ticks: {axis:?}");
        let step = axis[1] - axis[0];
        assert!(step > 0.0 && is_round_step(step), "step {step}: {axis:?}");
        for w in axis.windows(2) {
            assert!(
                ((w[1] - w[0]) - step).abs() < step * 1e-6,
                "uneven ticks {axis:?}"
            );
        }
        for v in axis {
            let k = v / step;
            assert!(
                (k - k.round()).abs() < 1e-6,
                "tick {v} is not a multiple of {step}"
            );
        }
    }
}
