use super::*;

#[path = "../../tests/support/svg.rs"]
mod svg;

fn hex(i: usize) -> String {
    let c = look(i).color;
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

/// Two panels with awkward numbers: a mean with error bars in both, a
/// plain series in the first only.
fn figure() -> Figure {
    let soup = |ys: &[(f64, f64, f64)]| {
        Series::new(
            "soup & co <1>",
            ys.iter()
                .map(|&(x, y, s)| Point::with_std(x, y, s))
                .collect(),
        )
    };
    Figure {
        title: "cnn on data".into(),
        panels: vec![
            Panel {
                title: "test accuracy".into(),
                x: Axis::percent("sparsity (%)"),
                y: Axis::percent("accuracy (%)"),
                series: vec![
                    soup(&[(53.6, 88.89, 0.1), (78.4, 88.47, 0.2), (90.0, 87.22, 0.3)]),
                    Series::new(
                        "IMP",
                        vec![
                            Point::new(53.6, 88.5),
                            Point::new(78.4, 88.05),
                            Point::new(90.0, 87.64),
                        ],
                    ),
                ],
            },
            Panel {
                title: "under corruptions".into(),
                x: Axis::percent("sparsity (%)"),
                y: Axis::percent("accuracy (%)"),
                series: vec![soup(&[(53.6, 65.55, 0.7), (90.0, 62.57, 0.0)])],
            },
        ],
    }
}

#[test]
fn svg_has_labels_markers_and_error_bars_of_every_series() {
    let svg = figure().svg().unwrap();
    let d = svg::read(&svg);
    // One legend entry per label, though the soup is in both panels; the
    // label is escaped in the SVG and reads back as given.
    assert_eq!(d.legend, ["soup & co <1>", "IMP"]);
    assert!(d.texts.iter().any(|t| t == "cnn on data"));
    assert!(d.texts.iter().any(|t| t == "under corruptions"));
    // A marker per point and one in the legend, in the label's colour in
    // every panel.
    assert_eq!(d.markers[&hex(0)], 3 + 2 + 1);
    assert_eq!(d.markers[&hex(1)], 3 + 1);
    // An error bar (three segments) per point with a positive std: none
    // for std 0 or plain points.
    assert_eq!(d.lines[&hex(0)], 3 * (3 + 1));
    assert!(!d.lines.contains_key(&hex(1)));
    // A line per panel and one in the legend.
    assert_eq!(d.polylines[&hex(0)], 3);
    assert_eq!(d.polylines[&hex(1)], 2);
}

#[test]
fn ticks_are_round_numbers() {
    let d = svg::read(&figure().svg().unwrap());
    assert_eq!(d.axes.len(), 4, "{:?}", d.axes);
    svg::assert_round_ticks(&d, 3);
    // Small and large spans, negative values, a single point.
    for (lo, hi) in [(0.0012, 0.0047), (-3.3, 7.1), (0.0, 3.0), (1234.0, 98765.0)] {
        let single = Figure {
            title: String::new(),
            panels: vec![Panel {
                title: String::new(),
                x: Axis::new("x"),
                y: Axis::new("y"),
                series: vec![Series::new(
                    "s",
                    vec![Point::new(lo, hi), Point::new(hi, lo), Point::new(lo, lo)],
                )],
            }],
        };
        svg::assert_round_ticks(&svg::read(&single.svg().unwrap()), 3);
    }
}

#[test]
fn equal_values_and_bounds_keep_the_axis_readable() {
    // Every model at 100% accuracy: the axis is padded around the value,
    // ticks above 100% have no label.
    let flat = Figure {
        title: String::new(),
        panels: vec![Panel {
            title: String::new(),
            x: Axis::new("epoch"),
            y: Axis::percent("accuracy (%)"),
            series: vec![Series::new(
                "a",
                vec![Point::new(1.0, 100.0), Point::new(2.0, 100.0)],
            )],
        }],
    };
    let d = svg::read(&flat.svg().unwrap());
    svg::assert_round_ticks(&d, 3);
    let y = &d.axes[0];
    assert!(y.contains(&100.0) && y.iter().all(|v| *v <= 100.0), "{y:?}");
}

#[test]
fn points_that_are_not_finite_are_left_out_and_empty_figures_draw() {
    let f = Figure {
        title: "t".into(),
        panels: vec![Panel {
            title: "p".into(),
            x: Axis::new("x"),
            y: Axis::new("y"),
            series: vec![Series::new(
                "a",
                vec![
                    Point::new(1.0, f64::NAN),
                    Point::with_std(2.0, 3.0, f64::INFINITY),
                    Point::new(3.0, 4.0),
                ],
            )],
        }],
    };
    let d = svg::read(&f.svg().unwrap());
    assert_eq!(d.markers[&hex(0)], 2 + 1);
    assert!(d.lines.is_empty());
    let empty = Figure {
        title: "nothing yet".into(),
        panels: Vec::new(),
    };
    assert!(svg::read(&empty.svg().unwrap()).legend.is_empty());
}

#[test]
fn tick_labels_and_names() {
    assert_eq!(tick_label(0.1 + 0.2), "0.3");
    assert_eq!(tick_label(-0.0), "0");
    assert_eq!(tick_label(87.5), "87.5");
    assert_eq!(tick(100.2, Some((0.0, 100.0))), "");
    assert_eq!(tick(100.0, Some((0.0, 100.0))), "100");
    assert_eq!(last_component("/tmp/data/tiny"), "tiny");
    assert_eq!(last_component("fashion-mnist"), "fashion-mnist");
}

#[test]
fn a_long_title_is_set_smaller_to_fit_the_figure() {
    let short = figure().svg().unwrap();
    let mut long = figure();
    long.title = "cnn on fashion-mnist, 3 candidates per phase, uniform soup; mean ± std over 3 \
                  repeats; a title much longer than the figure is wide"
        .into();
    let long_svg = long.svg().unwrap();
    // The font size of the text element holding the title.
    let size = |svg: &str, title: &str| -> f64 {
        let at = svg.find(title).expect("the title is drawn");
        let open = svg[..at].rfind("<text").unwrap();
        let attr = &svg[open..at];
        let v = attr.split("font-size=\"").nth(1).unwrap();
        v[..v.find('"').unwrap()].parse().unwrap()
    };
    let (s, l) = (
        size(&short, "cnn on data"),
        size(&long_svg, "a title much longer"),
    );
    assert!(l < s, "long title {l}px, short {s}px");
    // Roughly within the figure: characters x 0.55 em.
    let width: f64 = {
        let v = long_svg.split("width=\"").nth(1).unwrap();
        v[..v.find('"').unwrap()].parse().unwrap()
    };
    assert!(
        long.title.chars().count() as f64 * 0.55 * l <= width,
        "{l}px in {width}px"
    );
}
