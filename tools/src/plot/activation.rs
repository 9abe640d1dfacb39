//! `ditac plot`: one picture per `DiTAC`/`DiTACLut` node with a constant θ or table: the learned
//! activation (every channel's, when θ is per channel) over [a, b] and beyond, against GELU, with
//! [a, b] shaded. The curves are evaluated by the library, exactly as the plugin computes them for
//! float tensors; the same drawing goes to SVG ([`svg()`]) and PNG ([`png()`]).

use super::raster::Raster;
use super::{drawing, encode_png, ensure_font, FONT};
use crate::model::variant_str;
use crate::onnx::{DITAC, DITAC_GRAD, DITAC_LUT};
use crate::transform::{is_ditac_node, node_label, node_warps};
use anyhow::Result;
use onnx_protobuf::{GraphProto, NodeProto};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// The sampled curves of one node.
#[derive(Debug, Clone)]
pub struct PlotData {
    pub node: String,
    pub title: String,
    pub a: f32,
    pub b: f32,
    pub xs: Vec<f32>,
    /// One curve per row of θ (or table).
    pub curves: Vec<Vec<f32>>,
    pub gelu: Vec<f32>,
}

/// Samples the activation of `node`; `None` when its θ/table is not a constant.
pub fn node_plot(
    g: &GraphProto,
    node: &NodeProto,
    dir: &Path,
    points: usize,
) -> Result<Option<PlotData>> {
    let Some(w) = node_warps(g, node, dir, None)? else {
        return Ok(None);
    };
    let (a, b) = (w.attrs.a, w.attrs.b);
    let margin = 0.4 * (b - a) as f64 + 0.5;
    let (lo, hi) = (a as f64 - margin, b as f64 + margin);
    let points = points.max(16);
    let xs: Vec<f32> = (0..points)
        .map(|i| (lo + (hi - lo) * i as f64 / (points - 1) as f64) as f32)
        .collect();
    let curves = w
        .warps
        .rows()
        .iter()
        .map(|act| {
            let mut y = vec![0.0f32; xs.len()];
            act.forward(&xs, &mut y);
            y
        })
        .collect();
    let gelu = xs
        .iter()
        .map(|&x| {
            let x = x as f64;
            (x * 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))) as f32
        })
        .collect();
    let label = node_label(node);
    let table = if node.op_type == DITAC_LUT {
        format!(
            "table of {} nodes",
            w.warps.row(0).table_values().map_or(0, |t| t.len())
        )
    } else if w.attrs.lut_size == 0 {
        format!("tess {}, exact", w.attrs.tess)
    } else {
        format!("tess {}, lut {}", w.attrs.tess, w.attrs.lut_size)
    };
    let title = format!(
        "{} '{}': {}, variant {}{}, [a, b] = [{}, {}]",
        node.op_type,
        label,
        table,
        variant_str(w.attrs.variant),
        if w.warps.per_channel() {
            format!(", {} channels", w.warps.rows().len())
        } else {
            String::new()
        },
        a,
        b
    );
    Ok(Some(PlotData {
        node: label,
        title,
        a,
        b,
        xs,
        curves,
        gelu,
    }))
}

/// The plots of every ai.ditac node with a constant θ/table (others are listed in the second vector).
pub fn model_plots(
    g: &GraphProto,
    dir: &Path,
    points: usize,
) -> Result<(Vec<PlotData>, Vec<String>)> {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for n in g
        .node
        .iter()
        .filter(|n| is_ditac_node(n) && n.op_type != DITAC_GRAD)
    {
        match node_plot(g, n, dir, points)? {
            Some(p) => out.push(p),
            None => skipped.push(node_label(n)),
        }
    }
    Ok((out, skipped))
}

/// A file name for a node's picture (characters other than letters, digits, '-', '_' and '.' become '_').
pub fn file_stem(node: &str) -> String {
    let s: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("node{s}")
    } else {
        s
    }
}

/// The size of a picture in pixels (SVG user units).
pub const SIZE: (u32, u32) = (760, 500);

/// Curve colours (matplotlib's "tab10"), one per channel.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
    RGBColor(127, 127, 127),
];
const GELU_GREY: RGBColor = RGBColor(85, 85, 85);
const INTERVAL_BLUE: RGBColor = RGBColor(74, 144, 217);
const LABEL_BLUE: RGBColor = RGBColor(42, 96, 153);
const GRID_GREY: RGBColor = RGBColor(228, 228, 228);
/// Channels named in the legend; the others are counted in one line.
const LEGEND_CHANNELS: usize = 8;

/// The picture as SVG.
pub fn svg(p: &PlotData) -> Result<String> {
    ensure_font()?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        draw(&root, p)?;
        root.present().map_err(drawing("the plot"))?;
    }
    Ok(out)
}

/// The picture as PNG (8-bit RGB).
pub fn png(p: &PlotData) -> Result<Vec<u8>> {
    ensure_font()?;
    let (w, h) = SIZE;
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = Raster::new(&mut rgb, SIZE)?.into_drawing_area();
        draw(&root, p)?;
        root.present().map_err(drawing("the plot"))?;
    }
    encode_png(w, h, &rgb)
}

/// The y range: every finite value, padded by 6 % on both sides.
fn y_range(p: &PlotData) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in p.curves.iter().flatten().chain(&p.gelu) {
        if v.is_finite() {
            lo = lo.min(*v as f64);
            hi = hi.max(*v as f64);
        }
    }
    if lo.partial_cmp(&hi) != Some(std::cmp::Ordering::Less) {
        lo -= 1.0;
        hi += 1.0;
    }
    let pad = 0.06 * (hi - lo);
    (lo - pad, hi + pad)
}

/// A tick or bound label: at most three decimals, no trailing zeros, no "-0".
fn fmt_tick(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, p: &PlotData) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = drawing::<DB::ErrorType>;
    root.fill(&WHITE).map_err(err("the plot"))?;
    let (x0, x1) = (
        p.xs[0] as f64,
        *p.xs.last().expect("at least 16 samples") as f64,
    );
    let (y0, y1) = y_range(p);
    let (a, b) = (p.a as f64, p.b as f64);
    // The title is drawn apart from the chart: the labels of a and b go between the two.
    let (width, _) = root.dim_in_pixel();
    root.draw(&Text::new(
        p.title.as_str(),
        (width as i32 / 2, 10),
        (FONT, 15)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Top)),
    ))
    .map_err(err("the title"))?;
    let mut chart = ChartBuilder::on(root)
        .margin(14)
        .margin_top(50)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err("the axes"))?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .bold_line_style(GRID_GREY)
        .axis_style(RGBColor(51, 51, 51))
        .label_style((FONT, 13))
        .x_label_formatter(&|v| fmt_tick(*v))
        .y_label_formatter(&|v| fmt_tick(*v))
        .x_desc("x")
        .y_desc("y")
        .draw()
        .map_err(err("the axes"))?;
    // [a, b]: shaded, bounded by dashed lines with their values on top.
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(a, y0), (b, y1)],
            INTERVAL_BLUE.mix(0.12).filled(),
        )))
        .map_err(err("[a, b]"))?;
    for (v, name) in [(a, "a"), (b, "b")] {
        chart
            .draw_series(DashedLineSeries::new(
                [(v, y0), (v, y1)],
                4,
                3,
                INTERVAL_BLUE.into(),
            ))
            .map_err(err("[a, b]"))?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{name} = {}", fmt_tick(v)),
                (v, y1),
                (FONT, 13)
                    .into_font()
                    .color(&LABEL_BLUE)
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )))
            .map_err(err("[a, b]"))?;
    }
    let axis = RGBColor(150, 150, 150);
    if y0 < 0.0 && y1 > 0.0 {
        chart
            .draw_series(LineSeries::new([(x0, 0.0), (x1, 0.0)], axis))
            .map_err(err("the axes"))?;
    }
    if x0 < 0.0 && x1 > 0.0 {
        chart
            .draw_series(LineSeries::new([(0.0, y0), (0.0, y1)], axis))
            .map_err(err("the axes"))?;
    }
    // Non-finite values are left out of the lines.
    let points = |ys: &[f32]| -> Vec<(f64, f64)> {
        p.xs.iter()
            .zip(ys)
            .filter(|(_, y)| y.is_finite())
            .map(|(x, y)| (*x as f64, *y as f64))
            .collect()
    };
    chart
        .draw_series(DashedLineSeries::new(
            points(&p.gelu),
            6,
            4,
            GELU_GREY.stroke_width(2),
        ))
        .map_err(err("GELU"))?
        .label("GELU")
        .legend(|(x, y)| {
            EmptyElement::at((x, y))
                + PathElement::new([(0, 0), (8, 0)], GELU_GREY.stroke_width(2))
                + PathElement::new([(12, 0), (20, 0)], GELU_GREY.stroke_width(2))
        });
    let many = p.curves.len() > 1;
    for (i, ys) in p.curves.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let series = chart
            .draw_series(LineSeries::new(
                points(ys),
                color.stroke_width(if many { 1 } else { 2 }),
            ))
            .map_err(err("the activation"))?;
        if i < LEGEND_CHANNELS {
            series
                .label(if many {
                    format!("channel {i}")
                } else {
                    DITAC.to_string()
                })
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
    }
    if p.curves.len() > LEGEND_CHANNELS {
        chart
            .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())
            .map_err(err("the legend"))?
            .label(format!(
                "… {} more channels",
                p.curves.len() - LEGEND_CHANNELS
            ))
            .legend(|(x, y)| PathElement::new([(x, y)], WHITE));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(204, 204, 204))
        .draw()
        .map_err(err("the legend"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(channels: usize) -> PlotData {
        let xs: Vec<f32> = (0..200).map(|i| -4.0 + 8.0 * i as f32 / 199.0).collect();
        let curves = (0..channels)
            .map(|c| {
                xs.iter()
                    .map(|x| 0.5 + x.max(0.0) * (1.2 + c as f32 / 10.0))
                    .collect()
            })
            .collect();
        PlotData {
            node: "act".into(),
            title: "DiTAC 'act' <test>".into(),
            a: -3.0,
            b: 3.0,
            gelu: xs.iter().map(|x| x.max(0.0)).collect(),
            xs,
            curves,
        }
    }

    #[test]
    fn png_is_the_picture_with_curves_and_text() {
        let bytes = png(&data(1)).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut rgb = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut rgb).unwrap();
        assert_eq!((info.width, info.height), SIZE);
        assert_eq!(info.color_type, png::ColorType::Rgb);
        let count = |c: RGBColor| {
            rgb.chunks_exact(3)
                .filter(|p| (p[0], p[1], p[2]) == (c.0, c.1, c.2))
                .count()
        };
        // The activation (a 2-pixel line across the width), GELU's dashes, and dark title text.
        assert!(count(PALETTE[0]) > 500, "{}", count(PALETTE[0]));
        assert!(count(GELU_GREY) > 100, "{}", count(GELU_GREY));
        let title_ink = rgb[..3 * SIZE.0 as usize * 30]
            .chunks_exact(3)
            .filter(|p| p.iter().all(|&v| v < 128))
            .count();
        assert!(title_ink > 100, "{title_ink}");
    }

    #[test]
    fn svg_names_channels_and_escapes_the_title() {
        let s = svg(&data(10)).unwrap();
        assert!(s.contains("DiTAC &apos;act&apos; &lt;test&gt;"), "{s}");
        assert!(s.contains("a = -3") && s.contains("b = 3") && s.contains("GELU"));
        assert!(s.contains("channel 7") && !s.contains("channel 8"));
        assert!(s.contains("… 2 more channels"));
    }
}
