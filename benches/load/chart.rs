//! load.png: the figures as four bar panels (throughput, steady latency, peak RSS, CPU per
//! event). A bar is green when it meets its target, red when it misses it, grey when it has
//! none (the ceiling, p50, max); a target is the black line across its bar.
//!
//! Drawn with plotters' bitmap backend. Its text needs a TrueType font, loaded at run time
//! (LOAD_FONT, else DejaVu Sans or Liberation Sans where Debian installs them); with none the
//! chart is skipped and the run says so, the figures themselves are unaffected.

use std::error::Error;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{num, Figure, Figures, Target};

const FONTS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// One bar: two label lines under it, its value, its target if any.
struct Bar {
    label: (String, String),
    value: f64,
    target: Option<Target>,
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Registers the first font found as "sans-serif" (once per process).
fn load_font() -> Result<(), Box<dyn Error>> {
    static LOADED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let result = LOADED.get_or_init(|| {
        let candidates = std::env::var("LOAD_FONT")
            .into_iter()
            .chain(FONTS.iter().map(|s| s.to_string()));
        let bytes = candidates.filter_map(|p| std::fs::read(p).ok()).next();
        let bytes =
            bytes.ok_or("no TrueType font found (set LOAD_FONT, or install fonts-dejavu-core)")?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| "the font does not load".to_string())
    });
    result.clone().map_err(Into::into)
}

/// The bars of the figures `pick` selects, labelled by `label`.
fn bars(
    figures: &Figures,
    pick: impl Fn(&Figure) -> bool,
    label: impl Fn(&Figure) -> (String, String),
) -> Vec<Bar> {
    figures
        .0
        .iter()
        .filter(|f| pick(f) && f.value.is_finite())
        .map(|f| Bar {
            label: label(f),
            value: f.value,
            target: f.target,
        })
        .collect()
}

/// Draws the four panels into `path`.
pub fn draw(figures: &Figures, path: &Path, title: &str) -> Result<(), Box<dyn Error>> {
    load_font()?;
    let section_mode = |f: &Figure| (f.section.to_string(), f.mode.to_string());
    let panels = [
        (
            "Throughput (events/s)",
            bars(
                figures,
                |f| f.unit == "events/s",
                |f| {
                    (
                        format!("{} {}", f.section, f.mode),
                        f.metric.replace(" (ceiling)", ""),
                    )
                },
            ),
        ),
        (
            "Steady commit-to-subscriber latency (ms)",
            bars(
                figures,
                |f| f.unit == "ms",
                |f| (f.mode.into(), f.metric.replace("latency ", "")),
            ),
        ),
        (
            "Sluice peak RSS (MiB)",
            bars(figures, |f| f.metric == "sluice peak RSS", section_mode),
        ),
        (
            "Sluice CPU per event (µs)",
            bars(figures, |f| f.metric == "sluice CPU", section_mode),
        ),
    ];
    let root = BitMapBackend::new(path, (1280, 860)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    for (area, (caption, bars)) in root.split_evenly((2, 2)).iter().zip(&panels) {
        panel(area, caption, bars)?;
    }
    root.present()?;
    Ok(())
}

fn target_value(t: Target) -> f64 {
    match t {
        Target::AtLeast(v) | Target::AtMost(v) | Target::Below(v) => v,
    }
}

fn panel(area: &Area, caption: &str, bars: &[Bar]) -> Result<(), Box<dyn Error>> {
    let top = bars
        .iter()
        .flat_map(|b| [b.value, b.target.map_or(0.0, target_value)])
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(38)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..bars.len().max(1) as f64, 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(6)
        .y_label_formatter(&|v| num(*v))
        .label_style(("sans-serif", 12))
        .draw()?;
    let small =
        TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (i, bar) in bars.iter().enumerate() {
        let x = i as f64;
        let color = match bar.target.map(|t| t.met(bar.value)) {
            Some(true) => RGBColor(46, 160, 67),
            Some(false) => RGBColor(214, 39, 40),
            None => RGBColor(150, 150, 150),
        };
        chart.draw_series(std::iter::once(Rectangle::new(
            [(x + 0.2, 0.0), (x + 0.8, bar.value)],
            color.filled(),
        )))?;
        if let Some(t) = bar.target {
            let y = target_value(t);
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x + 0.1, y), (x + 0.9, y)],
                BLACK.stroke_width(2),
            )))?;
        }
        chart.draw_series(std::iter::once(Text::new(
            num(bar.value),
            (x + 0.5, bar.value),
            small.clone(),
        )))?;
        label(area, chart.backend_coord(&(x + 0.5, 0.0)), &bar.label)?;
    }
    Ok(())
}

/// Two lines of label under a bar whose foot is at `foot` (backend pixels).
fn label(
    area: &Area,
    foot: (i32, i32),
    (first, second): &(String, String),
) -> Result<(), Box<dyn Error>> {
    let style =
        TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    let (bx, by) = area.get_base_pixel();
    area.draw_text(first, &style, (foot.0 - bx, foot.1 - by + 6))?;
    area.draw_text(second, &style, (foot.0 - bx, foot.1 - by + 20))?;
    Ok(())
}
