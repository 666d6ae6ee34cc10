//! Plots of one or several runs side by side (`mhc-train plot`): training and
//! validation loss, gradient norm and composite Amax gain against the step,
//! as PNG and SVG.

use super::metrics::{metrics_path, read_records, Record};
use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

/// A run's records and its label in the legends (the run directory's name).
pub struct Run {
    pub label: String,
    pub records: Vec<Record>,
}

impl Run {
    pub fn load(dir: &Path) -> Result<Run> {
        let records = read_records(&metrics_path(dir))?;
        if records.is_empty() {
            bail!("`{}` has no metrics yet", metrics_path(dir).display());
        }
        let label = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        Ok(Run { label, records })
    }
}

/// Write `<out>/<stem>.png` and `<out>/<stem>.svg`; returns their paths.
pub fn plot_runs(runs: &[Run], out: &Path, stem: &str) -> Result<Vec<PathBuf>> {
    static FONT: Once = Once::new();
    // PNG text needs a font; the embedded one keeps the output machine-independent.
    FONT.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create the plot directory `{}`", out.display()))?;
    let size = (1500, 450);
    let png = out.join(format!("{stem}.png"));
    let svg = out.join(format!("{stem}.svg"));
    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        draw(&root, runs)?;
        root.present()
            .map_err(|e| anyhow!("writing `{}`: {e}", png.display()))?;
    }
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        draw(&root, runs)?;
        root.present()
            .map_err(|e| anyhow!("writing `{}`: {e}", svg.display()))?;
    }
    Ok(vec![png, svg])
}

/// Run colours (matplotlib's tab10: distinct, and none too light on white).
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// How a series is drawn: the main one of a panel solid, the secondary one
/// (validation loss, backward gain) dashed with a marker at every point, so
/// the two differ in the plot and in the legend, whatever the colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    Solid,
    DashedWithMarkers,
}

/// One curve: its run (which picks the colour), legend label, line and points.
#[derive(Clone, Debug)]
pub struct Series {
    pub run: usize,
    pub label: String,
    pub line: Line,
    pub points: Vec<(f64, f64)>,
}

/// The colour of run `k` (the k-th run given): runs differ in colour even
/// when their labels look alike.
pub fn run_colour(k: usize) -> RGBColor {
    COLOURS[k % COLOURS.len()]
}

/// The three panels' series: loss (train solid, val dashed), gradient norm,
/// composite Amax gain (forward solid, backward dashed).
pub fn panels(runs: &[Run]) -> [Vec<Series>; 3] {
    let points = |f: &dyn Fn(&Record) -> Option<f64>, r: &Run| -> Vec<(f64, f64)> {
        r.records
            .iter()
            .filter_map(|rec| {
                f(rec)
                    .filter(|v| v.is_finite())
                    .map(|v| (rec.step as f64, v))
            })
            .collect()
    };
    let (mut loss, mut grad, mut amax) = (Vec::new(), Vec::new(), Vec::new());
    for (k, r) in runs.iter().enumerate() {
        let series = |label: String, line: Line, points: Vec<(f64, f64)>| Series {
            run: k,
            label,
            line,
            points,
        };
        loss.push(series(
            format!("{} train", r.label),
            Line::Solid,
            points(&|x| Some(x.loss as f64), r),
        ));
        let val = points(&|x| x.val_loss.map(f64::from), r);
        if !val.is_empty() {
            loss.push(series(
                format!("{} validation", r.label),
                Line::DashedWithMarkers,
                val,
            ));
        }
        grad.push(series(
            r.label.clone(),
            Line::Solid,
            points(&|x| Some(x.grad_norm as f64), r),
        ));
        let fwd = points(&|x| x.amax.as_ref().map(|a| a.composite_forward as f64), r);
        if !fwd.is_empty() {
            amax.push(series(format!("{} forward", r.label), Line::Solid, fwd));
            let bwd = points(&|x| x.amax.as_ref().map(|a| a.composite_backward as f64), r);
            amax.push(series(
                format!("{} backward", r.label),
                Line::DashedWithMarkers,
                bwd,
            ));
        }
    }
    [loss, grad, amax]
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[Run]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let areas = root.split_evenly((1, 3));
    let titles = [
        "loss (nats/byte)",
        "gradient norm",
        "composite Amax gain of H_res",
    ];
    for ((area, title), series) in areas.iter().zip(titles).zip(panels(runs)) {
        panel(area, title, &series)?;
    }
    Ok(())
}

/// Legend rows are at most this tall (12-pixel labels), and the box adds
/// this much around them (margins and the offset from the corner).
const LEGEND_ROW: f64 = 16.0;
const LEGEND_PAD: f64 = 30.0;

/// The top of the y range for data spanning `y0..y1` in a plot `plot_h`
/// pixels tall with a legend of `entries` rows in its upper right corner:
/// high enough that every point lies below the legend's box (at most 60% of
/// the height goes to the legend).
pub fn y_top_clear_of_legend(y0: f64, y1: f64, entries: usize, plot_h: f64) -> f64 {
    let legend = (entries as f64 * LEGEND_ROW + LEGEND_PAD) / plot_h.max(1.0);
    let f = legend.min(0.6);
    y1 + (y1 - y0) * f / (1.0 - f)
}

/// Pixels of a panel that are not the plotting area: two margins, the
/// caption and the x labels (an overestimate, so the legend's headroom is
/// never short).
const PANEL_CHROME: f64 = 2.0 * 12.0 + 35.0 + 40.0;

/// One chart: run k's series in colour k, solid or dashed with markers as
/// [`Line`] says, the legend in the upper right above every curve.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    series: &[Series],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e}");
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    if all.is_empty() {
        let style = TextStyle::from(("sans-serif", 16).into_font()).color(&BLACK);
        area.draw_text(
            &format!("{title}: no data (plain runs have no H_res)"),
            &style,
            (20, 200),
        )
        .map_err(err)?;
        return Ok(());
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &all {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let plot_h = area.dim_in_pixel().1 as f64 - PANEL_CHROME;
    let top = y_top_clear_of_legend(y0, y1, series.len(), plot_h);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(x0..x1, y0..top)
        .map_err(err)?;
    chart.configure_mesh().x_desc("step").draw().map_err(err)?;
    for s in series {
        let style = ShapeStyle::from(run_colour(s.run)).stroke_width(2);
        match s.line {
            Line::Solid => {
                chart
                    .draw_series(LineSeries::new(s.points.iter().copied(), style))
                    .map_err(err)?
                    .label(s.label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
            }
            Line::DashedWithMarkers => {
                chart
                    .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, style.filled())))
                    .map_err(err)?;
                chart
                    .draw_series(DashedLineSeries::new(s.points.iter().copied(), 6, 4, style))
                    .map_err(err)?
                    .label(s.label.clone())
                    .legend(move |(x, y)| {
                        EmptyElement::at((x, y))
                            + PathElement::new(vec![(0, 0), (6, 0)], style)
                            + PathElement::new(vec![(16, 0), (22, 0)], style)
                            + Circle::new((11, 0), 3, style.filled())
                    });
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 12))
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::metrics::AmaxGain;

    #[test]
    fn plots_two_runs_as_png_and_svg() {
        let dir = std::env::temp_dir().join(format!("mhc-plot-{}", std::process::id()));
        let rec = |step: u64, amax: bool| Record {
            step,
            loss: 5.0 / (1.0 + step as f32),
            val_loss: step.is_multiple_of(2).then_some(4.0),
            grad_norm: 1.0,
            lr: 1e-3,
            tokens_per_s: 100.0,
            memory_gb: None,
            amax: amax.then(|| AmaxGain {
                sites_forward: vec![1.0],
                sites_backward: vec![1.0],
                composite_forward: 1.0 + step as f32,
                composite_backward: 1.0,
            }),
        };
        let runs = [
            Run {
                label: "plain".into(),
                records: (0..5).map(|s| rec(s, false)).collect(),
            },
            Run {
                label: "mhc".into(),
                records: (0..5).map(|s| rec(s, true)).collect(),
            },
        ];
        let files = plot_runs(&runs, &dir, "t").unwrap();
        let png = std::fs::read(&files[0]).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let svg = std::fs::read_to_string(&files[1]).unwrap();
        assert!(svg.contains("<svg") && svg.contains("mhc forward"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 22.9: runs are coloured by their place, not their name (two
    /// runs called `plain` and `plain2` differ), and train/validation and
    /// forward/backward differ in line style.
    #[test]
    fn every_series_is_distinguishable() {
        let rec = |step: u64| Record {
            step,
            loss: 5.0,
            val_loss: Some(4.0),
            grad_norm: 1.0,
            lr: 1e-3,
            tokens_per_s: 100.0,
            memory_gb: None,
            amax: Some(AmaxGain {
                sites_forward: vec![1.0],
                sites_backward: vec![1.0],
                composite_forward: 1.0,
                composite_backward: 1.0,
            }),
        };
        let runs = [
            Run {
                label: "plain".into(),
                records: (0..3).map(rec).collect(),
            },
            Run {
                label: "plain2".into(),
                records: (0..3).map(rec).collect(),
            },
        ];
        for series in panels(&runs) {
            // No two series share both colour and line style.
            for (i, a) in series.iter().enumerate() {
                for b in &series[i + 1..] {
                    assert!(
                        run_colour(a.run) != run_colour(b.run) || a.line != b.line,
                        "`{}` and `{}` look alike",
                        a.label,
                        b.label
                    );
                }
            }
        }
        let [loss, _, amax] = panels(&runs);
        assert_eq!(loss[0].line, Line::Solid);
        assert_eq!(loss[1].line, Line::DashedWithMarkers);
        assert_eq!(amax[0].line, Line::Solid);
        assert_eq!(amax[1].line, Line::DashedWithMarkers);
        assert!(run_colour(loss[0].run) != run_colour(loss[2].run));
        // In the drawing too: the second run's colour (tab10 red) is used.
        let dir = std::env::temp_dir().join(format!("mhc-plot-colour-{}", std::process::id()));
        let files = plot_runs(&runs, &dir, "t").unwrap();
        let svg = std::fs::read_to_string(&files[1]).unwrap().to_uppercase();
        assert!(
            svg.contains("#D62728"),
            "the second run is not drawn in its own colour"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 22.9: the legend's box lies above every point.
    #[test]
    fn the_legend_is_clear_of_the_curves() {
        for (entries, plot_h) in [(1, 300.0), (4, 330.0), (6, 330.0), (8, 400.0)] {
            let (y0, y1) = (1.0, 5.0);
            let top = y_top_clear_of_legend(y0, y1, entries, plot_h);
            // The pixel (from the top) of the highest point.
            let highest = (top - y1) / (top - y0) * plot_h;
            let legend_bottom = entries as f64 * LEGEND_ROW + LEGEND_PAD;
            assert!(
                highest >= legend_bottom - 1e-9,
                "{entries} entries: {highest} < {legend_bottom}"
            );
        }
    }
}
