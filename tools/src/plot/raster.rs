//! The PNG drawing surface: plotters' bitmap backend, with its text set here by `ab_glyph`.
//! Plotters 0.3.7 places each glyph of its `ab_glyph` text at the pen position without the glyph's
//! left side bearing, so narrow letters ("i", "l", "t") sit visibly left of where they belong
//! ("Di TAC"). Text is measured and drawn here with the bearing; every other drawing call goes to
//! the bitmap backend unchanged.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use plotters::backend::BitMapBackend;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind,
};

/// A bitmap backend whose text is DejaVu Sans, placed glyph by glyph with its bearings and kerning.
pub struct Raster<'a> {
    bitmap: BitMapBackend<'a>,
    font: FontRef<'static>,
}

impl<'a> Raster<'a> {
    /// Draws into `rgb` (`width`·`height`·3 bytes).
    pub fn new(rgb: &'a mut [u8], size: (u32, u32)) -> anyhow::Result<Raster<'a>> {
        let font = FontRef::try_from_slice(dejavu::sans::regular())
            .map_err(|e| anyhow::anyhow!("the embedded DejaVu Sans font: {e}"))?;
        Ok(Raster {
            bitmap: BitMapBackend::with_buffer(rgb, size),
            font,
        })
    }

    /// Calls `pixel(x, y, coverage)` for the text's pixels, the top left corner of its line box at
    /// (0, 0); returns the box's width and height.
    fn set_text(&self, text: &str, px: f64, mut pixel: impl FnMut(i32, i32, f32)) -> (i32, i32) {
        let font = self.font.as_scaled(PxScale::from(px as f32));
        let mut pen = 0.0f32;
        let mut previous = None;
        for c in text.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = previous {
                pen += font.kern(p, id);
            }
            let glyph =
                id.with_scale_and_position(font.scale(), ab_glyph::point(pen, font.ascent()));
            if let Some(outline) = self.font.outline_glyph(glyph) {
                let bounds = outline.px_bounds();
                let (left, top) = (bounds.min.x as i32, bounds.min.y as i32);
                outline.draw(|x, y, coverage| pixel(left + x as i32, top + y as i32, coverage));
            }
            pen += font.h_advance(id);
            previous = Some(id);
        }
        (
            pen.ceil() as i32,
            (font.ascent() - font.descent()).ceil() as i32,
        )
    }
}

impl DrawingBackend for Raster<'_> {
    type ErrorType = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.bitmap.get_size()
    }
    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.bitmap.ensure_prepared()
    }
    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.bitmap.present()
    }
    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.bitmap.draw_pixel(point, color)
    }
    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.bitmap.draw_line(from, to, style)
    }
    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.bitmap.draw_rect(upper_left, bottom_right, style, fill)
    }
    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.bitmap.draw_path(path, style)
    }
    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.bitmap.draw_circle(center, radius, style, fill)
    }
    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vertices: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.bitmap.fill_polygon(vertices, style)
    }
    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.bitmap.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let (w, h) = self.set_text(text, style.size(), |_, _, _| {});
        Ok((w as u32, h as u32))
    }

    /// As plotters' default `draw_text` (anchor, then rotation), with the text set by `Raster::set_text`.
    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let mut pixels = Vec::new();
        let (width, height) = self.set_text(text, style.size(), |x, y, coverage| {
            pixels.push((x, y, coverage))
        });
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let rotation = style.transform();
        let (w, h) = self.get_size();
        for (x, y, coverage) in pixels {
            let (x, y) = rotation.transform(x + dx, y + dy);
            let (x, y) = (pos.0 + x, pos.1 + y);
            if x >= 0 && x < w as i32 && y >= 0 && y < h as i32 {
                let alpha = color.alpha * coverage.clamp(0.0, 1.0) as f64;
                self.bitmap
                    .draw_pixel((x, y), BackendColor { alpha, ..color })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leftmost and rightmost inked columns of `text` at 40 px, and its line box width.
    fn extent(text: &str) -> (i32, i32, i32) {
        let mut rgb = vec![0u8; 3];
        let raster = Raster::new(&mut rgb, (1, 1)).unwrap();
        let (mut lo, mut hi) = (i32::MAX, i32::MIN);
        let (width, _) = raster.set_text(text, 40.0, |x, _, coverage| {
            if coverage > 0.5 {
                lo = lo.min(x);
                hi = hi.max(x);
            }
        });
        (lo, hi, width)
    }

    #[test]
    fn glyphs_keep_their_side_bearings() {
        // "i" and "l" are drawn inside their advance, clear of both ends, as in every text renderer.
        for text in ["i", "l"] {
            let (lo, hi, width) = extent(text);
            assert!(
                lo >= 2 && hi <= width - 2,
                "{text}: ink {lo}..={hi}, box {width}"
            );
        }
        // The second of two glyphs is the first moved by one advance.
        let (lo_i, hi_i, width_i) = extent("i");
        let (lo_ii, hi_ii, _) = extent("ii");
        assert_eq!(lo_ii, lo_i);
        assert!(
            (hi_ii - hi_i - width_i).abs() <= 1,
            "{hi_ii} {hi_i} {width_i}"
        );
    }
}
