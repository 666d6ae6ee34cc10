//! Plots of one or several runs side by side (`mhc-train plot`): training and
//! validation loss, gradient norm and composite Amax gain against the step,
//! as PNG and SVG.

use super::metrics::{metrics_path, read_records, Record};
use anyhow::{anyhow, bail, Result};
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
    std::fs::create_dir_all(out)?;
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

type Series = Vec<(String, Vec<(f64, f64)>, bool)>;

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[Run]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let panels = root.split_evenly((1, 3));
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
    let mut loss: Series = Vec::new();
    let mut grad: Series = Vec::new();
    let mut amax: Series = Vec::new();
    for r in runs {
        loss.push((
            format!("{} train", r.label),
            points(&|x| Some(x.loss as f64), r),
            false,
        ));
        let val = points(&|x| x.val_loss.map(f64::from), r);
        if !val.is_empty() {
            loss.push((format!("{} val", r.label), val, true));
        }
        grad.push((
            r.label.clone(),
            points(&|x| Some(x.grad_norm as f64), r),
            false,
        ));
        let fwd = points(&|x| x.amax.as_ref().map(|a| a.composite_forward as f64), r);
        if !fwd.is_empty() {
            amax.push((format!("{} fwd", r.label), fwd, false));
            let bwd = points(&|x| x.amax.as_ref().map(|a| a.composite_backward as f64), r);
            amax.push((format!("{} bwd", r.label), bwd, true));
        }
    }
    panel(&panels[0], "loss (nats/byte)", &loss, runs)?;
    panel(&panels[1], "gradient norm", &grad, runs)?;
    panel(&panels[2], "composite Amax gain of H_res", &amax, runs)?;
    Ok(())
}

/// One chart; run k's series share colour k, dashed lines are the secondary
/// series (validation loss, backward gain).
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    series: &Series,
    runs: &[Run],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e}");
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.1.iter().copied()).collect();
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
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
        .map_err(err)?;
    chart.configure_mesh().x_desc("step").draw().map_err(err)?;
    for (name, pts, secondary) in series {
        let k = runs
            .iter()
            .position(|r| name.starts_with(&r.label))
            .unwrap_or(0);
        let colour = COLOURS[k % COLOURS.len()];
        let style = ShapeStyle::from(colour).stroke_width(2);
        let drawn = if *secondary {
            // Sparse series (validation every few steps) also get markers, so a
            // single point still shows.
            if pts.len() <= 60 {
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, style.filled())))
                    .map_err(err)?;
            }
            chart
                .draw_series(DashedLineSeries::new(pts.iter().copied(), 6, 4, style))
                .map_err(err)?
        } else {
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), style))
                .map_err(err)?
        };
        drawn
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
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
        assert!(svg.contains("<svg") && svg.contains("mhc fwd"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
