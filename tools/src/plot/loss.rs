//! The training loss curve (`MODEL.loss.svg` beside what `ditac train` writes): every step's loss and
//! an exponential moving average, on a log scale when every loss is positive.

use super::{drawing, ensure_font, FONT};
use anyhow::Result;
use plotters::prelude::*;

/// The size of the picture in SVG user units.
pub const SIZE: (u32, u32) = (720, 420);
/// At most this many points per line: longer runs are drawn with every k-th step (the SVG stays small).
const MAX_POINTS: usize = 1500;
const RAW_BLUE: RGBColor = RGBColor(158, 202, 225);
const EMA_BLUE: RGBColor = RGBColor(8, 81, 156);

/// The loss curve of `losses` (one per step, step 1 first) as SVG, titled "training loss: `title`".
pub fn loss_svg(losses: &[f32], title: &str) -> Result<String> {
    ensure_font()?;
    let log = !losses.is_empty() && losses.iter().all(|&v| v > 0.0);
    // The average is taken over the plotted values (log10 of the losses on a log scale).
    let to_plot = |v: f32| if log { (v as f64).log10() } else { v as f64 };
    let vals: Vec<f64> = losses.iter().map(|&v| to_plot(v)).collect();
    let mut ema = Vec::with_capacity(vals.len());
    let mut e = vals.first().copied().unwrap_or(0.0);
    let alpha = 2.0 / (1.0 + (vals.len() as f64 / 50.0).max(1.0));
    for &v in &vals {
        e += alpha * (v - e);
        ema.push(e);
    }
    let finite = vals.iter().copied().filter(|v| v.is_finite());
    let (mut lo, mut hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        lo = if lo.is_finite() { lo - 0.5 } else { -0.5 };
        hi = lo + 1.0;
    }
    let steps = losses.len().max(2);
    let stride = (losses.len() / MAX_POINTS).max(1);
    let line = |vs: &[f64]| -> Vec<(f64, f64)> {
        vs.iter()
            .enumerate()
            .step_by(stride)
            .filter(|(_, v)| v.is_finite())
            .map(|(i, v)| ((i + 1) as f64, *v))
            .collect()
    };
    // On a log scale the axis holds log10 of the loss and its labels show the loss itself.
    let y_label = |v: &f64| significant(if log { 10f64.powf(*v) } else { *v });
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        let err = drawing::<<SVGBackend<'_> as DrawingBackend>::ErrorType>;
        root.fill(&WHITE).map_err(err("the loss curve"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("training loss: {title}"), (FONT, 15))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(76)
            .build_cartesian_2d(1.0..steps as f64, lo..hi)
            .map_err(err("the axes"))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .label_style((FONT, 12))
            .x_desc("step")
            .y_desc(if log { "loss (log scale)" } else { "loss" })
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&y_label)
            .draw()
            .map_err(err("the axes"))?;
        chart
            .draw_series(LineSeries::new(line(&vals), RAW_BLUE))
            .map_err(err("the losses"))?;
        chart
            .draw_series(LineSeries::new(line(&ema), EMA_BLUE.stroke_width(2)))
            .map_err(err("the average"))?;
        root.present().map_err(err("the loss curve"))?;
    }
    Ok(out)
}

/// `v` with three significant digits (scientific notation when very small or large).
fn significant(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let magnitude = v.abs().log10().floor();
    if !(-3.0..5.0).contains(&magnitude) {
        return format!("{v:.2e}");
    }
    let decimals = (2.0 - magnitude).max(0.0) as usize;
    format!("{v:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_losses_are_drawn_on_a_log_scale() {
        let losses: Vec<f32> = (0..3000)
            .map(|i| 2.0 * (-(i as f32) / 500.0).exp())
            .collect();
        let s = loss_svg(&losses, "mlp <mse>").unwrap();
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("training loss: mlp &lt;mse&gt;"), "{s}");
        assert!(s.contains("loss (log scale)") && s.contains("step"));
        // The raw losses and their average; 3000 steps are drawn with every second one.
        let lines: Vec<&str> = s.lines().filter(|l| l.contains("<polyline")).collect();
        let points = |l: &str| {
            l.split("points=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .split_whitespace()
                .count()
        };
        assert!(lines
            .iter()
            .any(|l| l.contains("#9ECAE1") && points(l) == 1500));
        assert!(lines
            .iter()
            .any(|l| l.contains("#08519C") && points(l) == 1500));
    }

    #[test]
    fn labels_have_three_significant_digits() {
        let labels: Vec<String> = [0.0, 0.63096, 1.1220, 141.25, 2.5e-5, -0.5, 1.0e6]
            .into_iter()
            .map(significant)
            .collect();
        assert_eq!(
            labels,
            ["0", "0.631", "1.12", "141", "2.50e-5", "-0.500", "1.00e6"]
        );
    }

    #[test]
    fn other_losses_on_a_linear_scale_and_non_finite_ones_left_out() {
        let s = loss_svg(&[0.5, -0.25, f32::NAN, 0.0], "t").unwrap();
        assert!(s.contains(">loss<") || s.contains(">\nloss\n<"), "{s}");
        assert!(!s.contains("log scale") && !s.contains("NaN"));
        let s = loss_svg(&[1.0], "one step").unwrap();
        assert!(s.contains("<polyline"));
    }
}
