//! The overhead chart of `cargo xtask bench`, written as an SVG file.
//!
//! One group of vertical bars per workload, one bar per mode ("floor", "peer", "sensor") at its
//! median cost ratio to the no-sensor baseline, a whisker from the smallest to the largest
//! per-round ratio, a dashed reference line at 1.0 (= the "none" baseline), an optional short
//! target line over a group, and a legend band above the plot. Bars rise from the bottom of the
//! y range, with the median printed at their foot (clear of whiskers, targets and the 1.0 line).
//! Long workload labels wrap onto two lines; the width grows with the number of groups.
//!
//! Feature set: `plotters` with `default-features = false, features = ["svg_backend"]` only.
//! Without `ttf` or `ab_glyph`, plotters falls back to its built-in "naive" font, which merely
//! estimates text extents; the SVG backend writes labels as `<text font-family="sans-serif">`
//! elements and leaves the glyphs to whatever views the file. So no system font (fontconfig,
//! font-kit) is read and no font file is embedded, while every label is still drawn. The cost is
//! that plotters cannot measure text, so the widths below leave generous room by hand. The
//! dependency tree stays at plotters, plotters-backend, plotters-svg and num-traits.
//! The output depends only on the input (no timestamps, no hash-map order).

use std::path::Path;

use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One bar: the cost ratio of one mode on one workload.
pub struct ChartBar {
    /// Mode name: "floor", "peer" or "sensor" (the "none" baseline is the 1.0 line, not a bar).
    pub mode: &'static str,
    /// Median cost ratio to the no-sensor baseline (1.0 = no cost; 1.15 = 15% slower).
    pub median: f64,
    /// Smallest and largest per-round ratio (drawn as an error bar / whisker).
    pub min: f64,
    pub max: f64,
}

/// One workload: its bars side by side.
pub struct ChartGroup {
    /// Workload label, e.g. "dd 1-byte (host)".
    pub label: String,
    pub bars: Vec<ChartBar>,
    /// The target cost ratio for the sensor, if any (drawn as a short marker/line over the group).
    pub target: Option<f64>,
}

/// Modes in legend order with their fixed colours (peer and sensor: colour-blind-safe Okabe-Ito).
const MODES: [(&str, RGBColor); 3] = [
    ("floor", RGBColor(150, 150, 150)),
    ("peer", RGBColor(230, 159, 0)),
    ("sensor", RGBColor(0, 114, 178)),
];
/// Colour of a mode not in [`MODES`].
const OTHER: RGBColor = RGBColor(86, 180, 233);
const TARGET: RGBColor = RGBColor(180, 0, 90);
/// Longest line of an x label; a longer label is split in two at a space, then cut.
const LINE: usize = 16;

fn colour(mode: &str) -> RGBColor {
    MODES
        .iter()
        .find(|(m, _)| *m == mode)
        .map_or(OTHER, |(_, c)| *c)
}

/// Splits a long label in two at the space nearest its middle; cuts a line that still overflows.
fn label_lines(label: &str) -> Vec<String> {
    let half = label.chars().count() / 2;
    let space = (label.chars().count() > LINE)
        .then(|| label.match_indices(' ').map(|(i, _)| i))
        .into_iter()
        .flatten()
        .min_by_key(|i| label[..*i].chars().count().abs_diff(half));
    let parts = space.map_or(vec![label], |i| vec![&label[..i], &label[i + 1..]]);
    let cut = |p: &str| match p.chars().count() > LINE {
        true => format!("{}…", p.chars().take(LINE - 1).collect::<String>()),
        false => p.to_owned(),
    };
    parts.into_iter().map(cut).collect()
}

/// The y range: a bit below min(0.9, smallest min), a bit above the largest max (or target).
fn y_range(groups: &[ChartGroup]) -> (f64, f64) {
    let bars = groups.iter().flat_map(|g| &g.bars);
    let lows = bars.clone().flat_map(|b| [b.min, b.median]);
    let highs = bars
        .flat_map(|b| [b.max, b.median])
        .chain(groups.iter().filter_map(|g| g.target));
    let lo = lows.filter(|v| v.is_finite()).fold(0.9, f64::min);
    let hi = highs.filter(|v| v.is_finite()).fold(1.1, f64::max);
    let pad = (hi - lo) * 0.06;
    ((lo - pad).max(0.0), hi + pad)
}

/// Writes the SVG to `path`: one group of bars per workload, a horizontal reference line at 1.0,
/// whiskers from min to max, a legend naming the modes, a y axis labelled "cost ratio to no sensor".
pub fn draw(path: &Path, title: &str, groups: &[ChartGroup]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let labels: Vec<_> = groups.iter().map(|g| label_lines(&g.label)).collect();
    let longest = labels.iter().flatten().map(|l| l.chars().count()).max();
    let group_px = (longest.unwrap_or(0) as u32 * 8 + 24).clamp(100, 160);
    let n = groups.len().max(1);
    let size = ((110 + group_px * n as u32).max(720), 560);
    let (lo, hi) = y_range(groups);

    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    let (legend, body) = root.titled(title, ("sans-serif", 24))?.split_vertically(36);

    // Legend band: the modes present, in fixed order, then the target and (last, dashed) 1.0.
    let all_bars = || groups.iter().flat_map(|g| &g.bars);
    let mut entries: Vec<(&str, ShapeStyle)> = Vec::new();
    for m in MODES
        .iter()
        .map(|(m, _)| *m)
        .chain(all_bars().map(|b| b.mode))
    {
        if all_bars().any(|b| b.mode == m) && entries.iter().all(|(e, _)| *e != m) {
            entries.push((m, colour(m).stroke_width(14)));
        }
    }
    if groups.iter().any(|g| g.target.is_some()) {
        entries.push(("sensor target", TARGET.stroke_width(2)));
    }
    entries.push(("1.0 = no sensor", BLACK.stroke_width(1)));
    let (font, mut x) = (("sans-serif", 16).into_font(), 90);
    for (k, (name, style)) in entries.iter().enumerate() {
        let swatch = [(x, 18), (x + 18, 18)];
        match k + 1 == entries.len() {
            true => legend.draw(&DashedPathElement::new(swatch, 4, 3, *style))?,
            false => legend.draw(&PathElement::new(swatch, *style))?,
        }
        legend.draw(&Text::new(*name, (x + 24, 11), font.clone()))?;
        x += 44 + 9 * name.chars().count() as i32;
    }

    let mut chart = ChartBuilder::on(&body)
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..n as f64, lo..hi)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(10)
        .y_label_formatter(&|y| format!("{y:.2}"))
        .y_label_style(("sans-serif", 15))
        .y_desc("cost ratio to no sensor")
        .axis_desc_style(("sans-serif", 17))
        .max_light_lines(0)
        .bold_line_style(BLACK.mix(0.12))
        .draw()?;

    // x labels by hand (plotters' f64 axis puts ticks at round numbers, not group centres).
    let centre_top =
        TextStyle::from(("sans-serif", 16).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, lines) in labels.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, lo));
        for (k, line) in lines.iter().enumerate() {
            let at = (px, py + 8 + 17 * k as i32);
            root.draw(&Text::new(line.as_str(), at, centre_top.clone()))?;
        }
    }
    let value_font =
        TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (i, g) in groups.iter().enumerate() {
        let slot = 0.8 / g.bars.len().max(3) as f64;
        let start = i as f64 + 0.5 - slot * g.bars.len() as f64 / 2.0;
        for (j, b) in g.bars.iter().enumerate() {
            let (l, r) = (start + slot * j as f64, start + slot * (j + 1) as f64);
            let (c, cap) = ((l + r) / 2.0, slot * 0.2);
            let corners = [(l + 0.02, lo), (r - 0.02, b.median)];
            chart.draw_series([Rectangle::new(corners, colour(b.mode).filled())])?;
            let (low, high) = (
                [(c - cap, b.min), (c + cap, b.min)],
                [(c - cap, b.max), (c + cap, b.max)],
            );
            let whisker = [[(c, b.min), (c, b.max)], low, high].map(|p| PathElement::new(p, BLACK));
            chart.draw_series(whisker)?;
            let value = Text::new(format!("{:.2}", b.median), (0, -4), value_font.clone());
            chart.draw_series([EmptyElement::at((c, lo)) + value])?;
        }
        if let Some(t) = g.target {
            let line = [(i as f64 + 0.06, t), (i as f64 + 0.94, t)];
            chart.draw_series([PathElement::new(line, TARGET.stroke_width(2))])?;
        }
    }
    let one = [(0.0, 1.0), (n as f64, 1.0)];
    chart.draw_series([DashedPathElement::new(one, 6, 4, BLACK)])?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(label: &str, modes: &[&'static str], target: Option<f64>) -> ChartGroup {
        let bar = |(k, mode): (usize, &&'static str)| {
            let median = 0.97 + 0.1 * k as f64;
            let (min, max) = (median - 0.02, median + 0.03);
            ChartBar {
                mode,
                median,
                min,
                max,
            }
        };
        let bars = modes.iter().enumerate().map(bar).collect();
        ChartGroup {
            label: label.into(),
            bars,
            target,
        }
    }

    #[test]
    fn chart_svg_has_labels_and_legend() {
        let groups = [
            group("dd 1-byte (host)", &["floor", "peer", "sensor"], Some(1.15)),
            group("exec loop", &["sensor"], None),
        ];
        let path = std::env::temp_dir().join(format!("xtask-chart-{}.svg", std::process::id()));
        draw(&path, "overhead", &groups).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        draw(&path, "overhead", &groups).unwrap();
        let again = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg, again, "output must be deterministic");
        let texts = ["dd 1-byte (host)", "exec loop", "floor", "peer", "sensor"];
        for text in texts.into_iter().chain(["cost ratio to no sensor"]) {
            assert!(svg.lines().any(|l| l.trim() == text), "missing {text:?}");
        }
    }
}
