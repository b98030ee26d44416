//! `report.html`: one self-contained page (inline SVG charts drawn with plotters' SVG
//! backend, inline CSS, no scripts, no external resources).

use std::fmt::Write as _;

use plotters::prelude::*;

use crate::error::{EvalError, Result};
use crate::report::{RunReport, SummaryRow};

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

fn chart_err(chart: &str) -> impl Fn(String) -> EvalError + '_ {
    move |message| EvalError::Chart {
        chart: chart.to_string(),
        message,
    }
}

/// A label for a rotated x axis: plotters centres rotated labels on their tick, so the first
/// half of a long one ran up out of the label area and was cut off; as many no-break spaces in
/// front put the text itself below the tick.
fn rotated_label(s: &str) -> String {
    let pad: String = std::iter::repeat_n('\u{a0}', s.chars().count() + 1).collect();
    format!("{pad}{s}")
}

/// A vertical bar chart of `values` (one bar per label).
pub fn bar_chart(title: &str, labels: &[String], values: &[f64], y_desc: &str) -> Result<String> {
    let err = chart_err(title);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let lo = finite.iter().copied().fold(0.0f64, f64::min);
        let hi = finite.iter().copied().fold(1e-9f64, f64::max) * 1.08;
        let n = labels.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(110)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..n as f64, lo..hi)
            .map_err(|e| err(e.to_string()))?;
        let labels_owned = labels.to_vec();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor();
                if (x - i - 0.5).abs() < 1e-6 && i >= 0.0 {
                    labels_owned
                        .get(i as usize)
                        .map_or_else(String::new, |l| rotated_label(l))
                } else {
                    String::new()
                }
            })
            .x_label_style(
                ("sans-serif", 12)
                    .into_font()
                    .transform(FontTransform::Rotate90),
            )
            .y_desc(y_desc)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(
                values
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(i, &v)| {
                        let c = PALETTE[i % PALETTE.len()];
                        Rectangle::new([(i as f64 + 0.15, 0.0), (i as f64 + 0.85, v)], c.filled())
                    }),
            )
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

/// A line chart: one series per name over the x positions `0..x_labels.len()`.
pub fn line_chart(
    title: &str,
    x_labels: &[String],
    series: &[(String, Vec<f64>)],
    y_desc: &str,
) -> Result<String> {
    let err = chart_err(title);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let all: Vec<f64> = series
            .iter()
            .flat_map(|s| s.1.iter().copied())
            .filter(|v| v.is_finite())
            .collect();
        let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() && hi > lo {
            (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        } else if lo.is_finite() {
            (lo - 1.0, lo + 1.0)
        } else {
            (0.0, 1.0)
        };
        let n = x_labels.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(110)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), lo..hi)
            .map_err(|e| err(e.to_string()))?;
        let labels_owned = x_labels.to_vec();
        chart
            .configure_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| {
                let r = x.round();
                if (x - r).abs() < 1e-6 && r >= 0.0 {
                    labels_owned
                        .get(r as usize)
                        .map_or_else(String::new, |l| rotated_label(l))
                } else {
                    String::new()
                }
            })
            .x_label_style(
                ("sans-serif", 11)
                    .into_font()
                    .transform(FontTransform::Rotate90),
            )
            .y_desc(y_desc)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        for (k, (name, ys)) in series.iter().enumerate() {
            let c = PALETTE[k % PALETTE.len()];
            let pts: Vec<(f64, f64)> = ys
                .iter()
                .enumerate()
                .filter(|(_, y)| y.is_finite())
                .map(|(i, &y)| (i as f64, y))
                .collect();
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}\
table{border-collapse:collapse;font-size:13px;margin:12px 0}\
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
td:first-child,th:first-child{text-align:left}\
.fail{color:#b00;font-weight:bold}.pass{color:#070;font-weight:bold}\
svg{display:block;margin:12px 0}";

/// A self-contained HTML page with the reports' style.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n{body}</body></html>\n",
        escape(title)
    )
}

fn rows_table(rows: &[SummaryRow]) -> String {
    let text = crate::report::format_markdown(rows);
    let mut out = String::from("<table>\n");
    for (i, line) in text.lines().enumerate() {
        if i == 1 {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
        let tag = if i == 0 { "th" } else { "td" };
        out.push_str("<tr>");
        for c in cells {
            let c = c.trim();
            let class = if c.starts_with("FAIL") {
                " class=\"fail\""
            } else if c == "pass" {
                " class=\"pass\""
            } else {
                ""
            };
            let _ = write!(out, "<{tag}{class}>{}</{tag}>", escape(c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

fn layer_sqnr_series(r: &RunReport) -> (Vec<String>, Vec<f64>, Vec<f64>) {
    let layers: Vec<_> = r.layers.iter().filter(|l| l.quantized).collect();
    let names = layers.iter().map(|l| l.name.clone()).collect();
    let prop = layers
        .iter()
        .map(|l| l.propagated.output.map_or(f64::NAN, |s| s.sqnr_db.0))
        .collect();
    let iso = layers
        .iter()
        .map(|l| l.isolated_output.map_or(f64::NAN, |s| s.sqnr_db.0))
        .collect();
    (names, prop, iso)
}

/// The page of one run.
pub fn run_html(r: &RunReport) -> Result<String> {
    let mut body = String::new();
    let _ = writeln!(
        body,
        "<h1>lowbit: {} on {}</h1>",
        escape(&r.config),
        escape(&r.model)
    );
    let row = r.summary_row("");
    let fp = match &r.embedding {
        Some(e) => SummaryRow::fp32_embedding(&r.model, r.fp32.samples, &e.fp32),
        None => SummaryRow::fp32(&r.model, &r.fp32),
    };
    body.push_str(&rows_table(&[fp, row]));
    if r.compliance.passed {
        body.push_str(
            "<p class=\"pass\">Compliance: every checked value is on the format's grid.</p>\n",
        );
    } else {
        let _ = writeln!(
            body,
            "<p class=\"fail\">COMPLIANCE VIOLATIONS: {} off-grid values, {} bad scales in {}</p>",
            r.compliance.totals.off_grid,
            r.compliance.totals.bad_scales,
            escape(&r.compliance.layers_with_violations.join(", "))
        );
    }
    match &r.embedding {
        Some(e) => {
            let labels: Vec<String> = ["WordSim ρ", "SimLex ρ", "Lee r"]
                .iter()
                .flat_map(|t| [format!("{t} fp32"), format!("{t} {}", r.config)])
                .collect();
            let (f, q) = (&e.fp32, &e.quantized);
            body.push_str(&bar_chart(
                "Task correlations, FP32 and quantized",
                &labels,
                &[
                    f.wordsim353_spearman,
                    q.wordsim353_spearman,
                    f.simlex999_spearman,
                    q.simlex999_spearman,
                    f.lee_pearson,
                    q.lee_pearson,
                ],
                "correlation",
            )?);
        }
        None => body.push_str(&bar_chart(
            "Top-1 accuracy (%)",
            &["fp32".to_string(), r.config.clone()],
            &[100.0 * r.fp32.top1, 100.0 * r.quantized.top1],
            "top-1 %",
        )?),
    }
    let (names, prop, iso) = layer_sqnr_series(r);
    if !names.is_empty() {
        body.push_str(&line_chart(
            "Per-layer output SQNR (dB)",
            &names,
            &[
                ("propagated".to_string(), prop),
                ("isolated".to_string(), iso),
            ],
            "SQNR dB",
        )?);
    }
    if let Some(sens) = &r.sensitivity {
        let labels: Vec<String> = sens.iter().map(|s| s.layer.clone()).collect();
        let vals: Vec<f64> = sens.iter().map(|s| 100.0 * s.top1_drop).collect();
        body.push_str(&bar_chart(
            "Sensitivity: top-1 lost with only this layer quantized (points)",
            &labels,
            &vals,
            "top-1 drop",
        )?);
    }
    let _ = writeln!(
        body,
        "<h2>Layers</h2><pre>{}</pre>",
        escape(&crate::report::format_comparison(r))
    );
    Ok(page(&format!("lowbit {} {}", r.model, r.config), &body))
}

/// The page of a sweep: the table, accuracy per config, per-layer SQNR per config, and the
/// sensitivity rankings of the runs that have one.
pub fn sweep_html(rows: &[SummaryRow], reports: &[RunReport]) -> Result<String> {
    let mut body = String::from("<h1>lowbit sweep</h1>\n");
    body.push_str(&rows_table(rows));
    let bad: Vec<&RunReport> = reports.iter().filter(|r| !r.compliance.passed).collect();
    if bad.is_empty() {
        body.push_str("<p class=\"pass\">Compliance: every run passed.</p>\n");
    } else {
        for r in bad {
            let _ = writeln!(
                body,
                "<p class=\"fail\">COMPLIANCE VIOLATIONS in {} / {}: {} values</p>",
                escape(&r.model),
                escape(&r.config),
                r.compliance.totals.violations()
            );
        }
    }
    let labels: Vec<String> = rows
        .iter()
        .map(|r| format!("{}/{}", r.model, r.config))
        .collect();
    if rows.iter().all(|r| r.embedding.is_some()) {
        let vals: Vec<f64> = rows
            .iter()
            .map(|r| r.embedding.map_or(f64::NAN, |e| e.wordsim353_spearman))
            .collect();
        body.push_str(&bar_chart(
            "WordSim-353 Spearman ρ per config",
            &labels,
            &vals,
            "ρ",
        )?);
    } else {
        let vals: Vec<f64> = rows.iter().map(|r| 100.0 * r.top1).collect();
        body.push_str(&bar_chart(
            "Top-1 accuracy per config (%)",
            &labels,
            &vals,
            "top-1 %",
        )?);
    }
    let mut models: Vec<&str> = reports.iter().map(|r| r.model.as_str()).collect();
    models.dedup();
    for m in models {
        let runs: Vec<&RunReport> = reports.iter().filter(|r| r.model == m).collect();
        let Some(first) = runs.first() else { continue };
        let names: Vec<String> = first.layers.iter().map(|l| l.name.clone()).collect();
        let series: Vec<(String, Vec<f64>)> = runs
            .iter()
            .map(|r| {
                let ys = names
                    .iter()
                    .map(|n| {
                        r.layers
                            .iter()
                            .find(|l| &l.name == n && l.quantized)
                            .and_then(|l| l.propagated.output)
                            .map_or(f64::NAN, |s| s.sqnr_db.0)
                    })
                    .collect();
                (r.config.clone(), ys)
            })
            .collect();
        body.push_str(&line_chart(
            &format!("{m}: per-layer output SQNR per config (dB)"),
            &names,
            &series,
            "SQNR dB",
        )?);
        for r in &runs {
            if let Some(sens) = &r.sensitivity {
                let labels: Vec<String> = sens.iter().map(|s| s.layer.clone()).collect();
                let vals: Vec<f64> = sens.iter().map(|s| 100.0 * s.top1_drop).collect();
                body.push_str(&bar_chart(
                    &format!(
                        "{m} / {}: sensitivity (top-1 points lost, one layer at a time)",
                        r.config
                    ),
                    &labels,
                    &vals,
                    "top-1 drop",
                )?);
            }
        }
    }
    Ok(page("lowbit sweep", &body))
}
