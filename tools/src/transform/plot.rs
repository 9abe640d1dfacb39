//! `plot`: one picture per `DiTAC`/`DiTACLut` node with a constant θ or table: the learned
//! activation (every channel's, when θ is per channel) over [a, b] and beyond, against GELU, with
//! [a, b] shaded. SVG written by hand; PNG through a small anti-aliased rasteriser with a 3×5 font.
//! The curves are evaluated by the library, exactly as the plugin computes them for float tensors.

use super::{is_ditac_node, node_label, node_warps};
use crate::model::variant_str;
use anyhow::Result;
use onnx_protobuf::{GraphProto, NodeProto};
use std::fmt::Write as _;
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
    let table = if node.op_type == "DiTACLut" {
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
        .filter(|n| is_ditac_node(n) && n.op_type != "DiTACGrad")
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

const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (148, 103, 189),
    (255, 127, 14),
    (140, 86, 75),
    (227, 119, 194),
    (23, 190, 207),
    (188, 189, 34),
    (127, 127, 127),
];

struct Frame {
    w: f64,
    h: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Frame {
    fn new(p: &PlotData, w: f64, h: f64) -> Frame {
        let mut y0 = f64::INFINITY;
        let mut y1 = f64::NEG_INFINITY;
        for v in p.curves.iter().flatten().chain(&p.gelu) {
            if v.is_finite() {
                y0 = y0.min(*v as f64);
                y1 = y1.max(*v as f64);
            }
        }
        if y0.partial_cmp(&y1) != Some(std::cmp::Ordering::Less) {
            y0 -= 1.0;
            y1 += 1.0;
        }
        let pad = 0.06 * (y1 - y0);
        Frame {
            w,
            h,
            left: 64.0,
            right: 20.0,
            top: 44.0,
            bottom: 46.0,
            x0: p.xs[0] as f64,
            x1: *p.xs.last().unwrap() as f64,
            y0: y0 - pad,
            y1: y1 + pad,
        }
    }
    fn px(&self, x: f64) -> f64 {
        self.left + (x - self.x0) / (self.x1 - self.x0) * (self.w - self.left - self.right)
    }
    fn py(&self, y: f64) -> f64 {
        self.h
            - self.bottom
            - (y - self.y0) / (self.y1 - self.y0) * (self.h - self.top - self.bottom)
    }
}

/// Round tick positions covering [lo, hi].
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let raw = (hi - lo) / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + 1e-9 * step {
        out.push(if t.abs() < 1e-9 * step { 0.0 } else { t });
        t += step;
    }
    out
}

fn fmt_tick(v: f64) -> String {
    let s = format!("{:.3}", v);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The picture as SVG.
pub fn svg(p: &PlotData) -> String {
    let f = Frame::new(p, 760.0, 500.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" viewBox="0 0 {} {}" font-family="sans-serif" font-size="12">"#,
        f.w, f.h, f.w, f.h
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let (xa, xb) = (f.px(p.a as f64), f.px(p.b as f64));
    let (yt, yb) = (f.top, f.h - f.bottom);
    let _ = writeln!(
        s,
        r##"<rect x="{xa:.1}" y="{yt:.1}" width="{:.1}" height="{:.1}" fill="#4a90d9" fill-opacity="0.10"/>"##,
        xb - xa,
        yb - yt
    );
    for t in ticks(f.x0, f.x1) {
        let x = f.px(t);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{yt:.1}" x2="{x:.1}" y2="{yb:.1}" stroke="#e4e4e4"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            yb + 16.0,
            fmt_tick(t)
        );
    }
    for t in ticks(f.y0, f.y1) {
        let y = f.py(t);
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e4e4e4"/>"##,
            f.left,
            f.w - f.right
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            f.left - 6.0,
            y + 4.0,
            fmt_tick(t)
        );
    }
    if f.y0 < 0.0 && f.y1 > 0.0 {
        let y = f.py(0.0);
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#999"/>"##,
            f.left,
            f.w - f.right
        );
    }
    if f.x0 < 0.0 && f.x1 > 0.0 {
        let x = f.px(0.0);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{yt:.1}" x2="{x:.1}" y2="{yb:.1}" stroke="#999"/>"##
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{:.1}" y="{yt:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#333"/>"##,
        f.left,
        f.w - f.left - f.right,
        yb - yt
    );
    for (v, name) in [(p.a, "a"), (p.b, "b")] {
        let x = f.px(v as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{yt:.1}" x2="{x:.1}" y2="{yb:.1}" stroke="#4a90d9" stroke-dasharray="4 3"/>"##
        );
        let _ = writeln!(
            s,
            r##"<text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#2a6099">{name} = {}</text>"##,
            yt - 4.0,
            fmt_tick(v as f64)
        );
    }
    let line = |ys: &[f32]| -> String {
        let mut pts = String::new();
        for (x, y) in p.xs.iter().zip(ys) {
            if y.is_finite() {
                let _ = write!(pts, "{:.2},{:.2} ", f.px(*x as f64), f.py(*y as f64));
            }
        }
        pts
    };
    let _ = writeln!(
        s,
        r##"<polyline points="{}" fill="none" stroke="#555" stroke-width="1.5" stroke-dasharray="6 4"/>"##,
        line(&p.gelu)
    );
    let many = p.curves.len() > 1;
    for (i, c) in p.curves.iter().enumerate() {
        let (r, g, b) = PALETTE[i % PALETTE.len()];
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="rgb({r},{g},{b})" stroke-width="{}"/>"#,
            line(c),
            if many { 1.3 } else { 2.2 }
        );
    }
    // Legend.
    let mut entries: Vec<(String, String, bool)> = vec![("GELU".into(), "#555".into(), true)];
    let shown = p.curves.len().min(8);
    for i in 0..shown {
        let (r, g, b) = PALETTE[i % PALETTE.len()];
        let name = if many {
            format!("channel {i}")
        } else {
            "DiTAC".to_string()
        };
        entries.push((name, format!("rgb({r},{g},{b})"), false));
    }
    if p.curves.len() > shown {
        entries.push((
            format!("… {} more channels", p.curves.len() - shown),
            "#fff".into(),
            false,
        ));
    }
    let (lx, mut ly) = (f.left + 12.0, f.top + 14.0);
    let _ = writeln!(
        s,
        r##"<rect x="{:.1}" y="{:.1}" width="150" height="{:.1}" fill="white" fill-opacity="0.85" stroke="#ccc"/>"##,
        lx - 6.0,
        ly - 12.0,
        entries.len() as f64 * 16.0 + 6.0
    );
    for (name, color, dashed) in entries {
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"{}/>"#,
            ly - 4.0,
            lx + 22.0,
            ly - 4.0,
            if dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{ly:.1}">{}</text>"#,
            lx + 28.0,
            esc(&name)
        );
        ly += 16.0;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="20" text-anchor="middle" font-size="14">{}</text>"#,
        f.w / 2.0,
        esc(&p.title)
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">x</text>"#,
        (f.left + f.w - f.right) / 2.0,
        f.h - 8.0
    );
    let _ = writeln!(
        s,
        r#"<text x="14" y="{:.1}" text-anchor="middle" transform="rotate(-90 14 {:.1})">y</text>"#,
        (yt + yb) / 2.0,
        (yt + yb) / 2.0
    );
    s.push_str("</svg>\n");
    s
}

/// An RGB raster, with per-line coverage bookkeeping (so that the overlapping stamps of one line
/// do not darken it).
struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
    stamp: Vec<f32>,
    stamp_id: Vec<u32>,
    id: u32,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Canvas {
        Canvas {
            w,
            h,
            px: vec![255; w * h * 3],
            stamp: vec![0.0; w * h],
            stamp_id: vec![0; w * h],
            id: 0,
        }
    }

    fn blend(&mut self, x: i64, y: i64, c: (u8, u8, u8), alpha: f64) {
        if x < 0 || y < 0 || x >= self.w as i64 || y >= self.h as i64 {
            return;
        }
        let i = (y as usize * self.w + x as usize) * 3;
        for (k, v) in [c.0, c.1, c.2].into_iter().enumerate() {
            let old = self.px[i + k] as f64;
            self.px[i + k] = (old + (v as f64 - old) * alpha).round() as u8;
        }
    }

    fn plot(&mut self, x: i64, y: i64, c: (u8, u8, u8), cov: f64) {
        if x < 0 || y < 0 || x >= self.w as i64 || y >= self.h as i64 {
            return;
        }
        let i = y as usize * self.w + x as usize;
        let prev = if self.stamp_id[i] == self.id {
            self.stamp[i] as f64
        } else {
            0.0
        };
        if cov <= prev {
            return;
        }
        let alpha = (cov - prev) / (1.0 - prev).max(1e-9);
        self.stamp[i] = cov as f32;
        self.stamp_id[i] = self.id;
        self.blend(x, y, c, alpha.clamp(0.0, 1.0));
    }

    fn line(
        &mut self,
        a: (f64, f64),
        b: (f64, f64),
        c: (u8, u8, u8),
        wd: f64,
        dash: Option<(f64, f64)>,
    ) {
        self.polyline(&[a, b], c, wd, dash);
    }

    /// A polyline of width `wd`, dashed with (on, off) pixel lengths when given.
    fn polyline(&mut self, pts: &[(f64, f64)], c: (u8, u8, u8), wd: f64, dash: Option<(f64, f64)>) {
        self.id += 1;
        let r = wd / 2.0;
        let mut phase = 0.0;
        for s in pts.windows(2) {
            let (a, b) = (s[0], s[1]);
            let len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
            let steps = (len * 3.0).ceil().max(1.0) as usize;
            for k in 0..=steps {
                let t = k as f64 / steps as f64;
                if let Some((on, off)) = dash {
                    if (phase + t * len) % (on + off) > on {
                        continue;
                    }
                }
                let (x, y) = (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1));
                let (x0, x1) = ((x - r - 1.0).floor() as i64, (x + r + 1.0).ceil() as i64);
                let (y0, y1) = ((y - r - 1.0).floor() as i64, (y + r + 1.0).ceil() as i64);
                for yy in y0..=y1 {
                    for xx in x0..=x1 {
                        let dist =
                            ((xx as f64 + 0.5 - x).powi(2) + (yy as f64 + 0.5 - y).powi(2)).sqrt();
                        let cov = (r + 0.5 - dist).clamp(0.0, 1.0);
                        if cov > 0.0 {
                            self.plot(xx, yy, c, cov);
                        }
                    }
                }
            }
            phase += len;
        }
    }

    fn rect(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, c: (u8, u8, u8), alpha: f64) {
        for y in y0.round() as i64..y1.round() as i64 {
            for x in x0.round() as i64..x1.round() as i64 {
                self.blend(x, y, c, alpha);
            }
        }
    }

    /// Text in the 3×5 font at twice its size; `anchor` 0 = left, 0.5 = centre, 1 = right.
    fn text(&mut self, s: &str, x: f64, y: f64, anchor: f64, c: (u8, u8, u8)) {
        let scale = 2i64;
        let wchar = 4 * scale;
        let total = s.chars().count() as i64 * wchar;
        let mut cx = (x - anchor * total as f64).round() as i64;
        let cy = (y - 5.0 * scale as f64 / 2.0).round() as i64;
        for ch in s.chars() {
            if let Some(rows) = glyph(ch) {
                for (ry, row) in rows.iter().enumerate() {
                    for rx in 0..3i64 {
                        if row & (4 >> rx) != 0 {
                            for dy in 0..scale {
                                for dx in 0..scale {
                                    self.blend(
                                        cx + rx * scale + dx,
                                        cy + ry as i64 * scale + dy,
                                        c,
                                        1.0,
                                    );
                                }
                            }
                        }
                    }
                }
            }
            cx += wchar;
        }
    }
}

/// 3×5 glyphs (bit 2 = left column); letters are drawn upper-case.
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c.to_ascii_uppercase() {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 3, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 2, 2],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [3, 4, 4, 4, 3],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'G' => [3, 4, 5, 5, 3],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'J' => [1, 1, 1, 5, 2],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'O' => [2, 5, 5, 5, 2],
        'P' => [6, 5, 6, 4, 4],
        'Q' => [2, 5, 5, 6, 3],
        'R' => [6, 5, 6, 5, 5],
        'S' => [3, 4, 2, 1, 6],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        'Z' => [7, 1, 2, 4, 7],
        '-' => [0, 0, 7, 0, 0],
        '.' => [0, 0, 0, 0, 2],
        ',' => [0, 0, 0, 2, 4],
        ':' => [0, 2, 0, 2, 0],
        '=' => [0, 7, 0, 7, 0],
        '[' => [6, 4, 4, 4, 6],
        ']' => [3, 1, 1, 1, 3],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        '\'' => [2, 2, 0, 0, 0],
        '_' => [0, 0, 0, 0, 7],
        '/' => [1, 1, 2, 4, 4],
        ' ' => [0; 5],
        _ => return None,
    })
}

/// The picture as PNG (RGB, 8 bit).
pub fn png(p: &PlotData) -> Result<Vec<u8>> {
    let f = Frame::new(p, 760.0, 500.0);
    let mut r = Canvas::new(f.w as usize, f.h as usize);
    let (xa, xb) = (f.px(p.a as f64), f.px(p.b as f64));
    let (yt, yb) = (f.top, f.h - f.bottom);
    let (xl, xr) = (f.left, f.w - f.right);
    r.rect(xa, yt, xb, yb, (74, 144, 217), 0.12);
    let grid = (228, 228, 228);
    for t in ticks(f.x0, f.x1) {
        let x = f.px(t);
        r.line((x, yt), (x, yb), grid, 1.0, None);
        r.text(&fmt_tick(t), x, yb + 12.0, 0.5, (40, 40, 40));
    }
    for t in ticks(f.y0, f.y1) {
        let y = f.py(t);
        r.line((xl, y), (xr, y), grid, 1.0, None);
        r.text(&fmt_tick(t), xl - 6.0, y, 1.0, (40, 40, 40));
    }
    if f.y0 < 0.0 && f.y1 > 0.0 {
        let y = f.py(0.0);
        r.line((xl, y), (xr, y), (150, 150, 150), 1.0, None);
    }
    if f.x0 < 0.0 && f.x1 > 0.0 {
        let x = f.px(0.0);
        r.line((x, yt), (x, yb), (150, 150, 150), 1.0, None);
    }
    for x in [xa, xb] {
        r.line((x, yt), (x, yb), (74, 144, 217), 1.0, Some((4.0, 3.0)));
    }
    r.text(
        &format!("a={}", fmt_tick(p.a as f64)),
        xa,
        yt - 10.0,
        0.5,
        (42, 96, 153),
    );
    r.text(
        &format!("b={}", fmt_tick(p.b as f64)),
        xb,
        yt - 10.0,
        0.5,
        (42, 96, 153),
    );
    let frame = (51, 51, 51);
    r.polyline(
        &[(xl, yt), (xr, yt), (xr, yb), (xl, yb), (xl, yt)],
        frame,
        1.0,
        None,
    );
    let poly = |r: &mut Canvas, ys: &[f32], c: (u8, u8, u8), wd: f64, dash: Option<(f64, f64)>| {
        let pts: Vec<(f64, f64)> =
            p.xs.iter()
                .zip(ys)
                .filter(|(_, y)| y.is_finite())
                .map(|(x, y)| (f.px(*x as f64), f.py(*y as f64).clamp(yt, yb)))
                .collect();
        r.polyline(&pts, c, wd, dash);
    };
    poly(&mut r, &p.gelu, (85, 85, 85), 1.5, Some((6.0, 4.0)));
    let many = p.curves.len() > 1;
    for (i, c) in p.curves.iter().enumerate() {
        poly(
            &mut r,
            c,
            PALETTE[i % PALETTE.len()],
            if many { 1.3 } else { 2.4 },
            None,
        );
    }
    // Legend and title, as in the SVG.
    let shown = p.curves.len().min(8);
    let mut entries: Vec<(String, (u8, u8, u8), bool)> = vec![("GELU".into(), (85, 85, 85), true)];
    for i in 0..shown {
        let name = if many {
            format!("channel {i}")
        } else {
            "DiTAC".into()
        };
        entries.push((name, PALETTE[i % PALETTE.len()], false));
    }
    if p.curves.len() > shown {
        entries.push((
            format!("+{} more", p.curves.len() - shown),
            (255, 255, 255),
            false,
        ));
    }
    let (lx, ly) = (xl + 12.0, yt + 14.0);
    r.rect(
        lx - 6.0,
        ly - 10.0,
        lx + 144.0,
        ly - 4.0 + 16.0 * entries.len() as f64,
        (255, 255, 255),
        0.85,
    );
    for (k, (name, c, dashed)) in entries.iter().enumerate() {
        let y = ly + 16.0 * k as f64;
        r.line(
            (lx, y),
            (lx + 22.0, y),
            *c,
            2.0,
            dashed.then_some((6.0, 4.0)),
        );
        r.text(name, lx + 30.0, y, 0.0, (30, 30, 30));
    }
    r.text(&p.title, f.w / 2.0, 18.0, 0.5, (20, 20, 20));
    encode_png(r.w, r.h, &r.px)
}

/// A PNG file (colour type 2, 8 bit) of an RGB buffer.
pub fn encode_png(w: usize, h: usize, rgb: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut raw = Vec::with_capacity(h * (w * 3 + 1));
    for row in rgb.chunks_exact(w * 3) {
        raw.push(0);
        raw.extend_from_slice(row);
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw)?;
    let idat = z.finish()?;
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let chunk = |out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(kind);
        h.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&h.finalize().to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(w as u32).to_be_bytes());
    ihdr.extend_from_slice(&(h as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    Ok(out)
}
