//! Pictures: the learned activations of a model's `ai.ditac` nodes ([`activation`], `ditac plot`) and
//! the training loss curve ([`loss`], `ditac train`), drawn with `plotters` as SVG and as PNG.
//!
//! Text is set in DejaVu Sans, embedded in the binary by the `dejavu` crate and handed to plotters'
//! `ab_glyph` font backend: pictures come out the same on every machine, with no system font,
//! fontconfig or FreeType needed (plotters' `ttf` backend would look fonts up on the system). PNGs are
//! drawn on plotters' bitmap backend through [`raster`], which sets their text itself (plotters
//! 0.3.7 misplaces `ab_glyph` glyphs) and are encoded by the `png` crate.

pub mod activation;
pub mod loss;
pub mod raster;

use anyhow::{anyhow, Context, Result};
use plotters::style::{register_font, FontStyle};
use std::sync::OnceLock;

/// The font family every picture's text uses (registered by [`ensure_font`]).
pub const FONT: &str = "sans-serif";

/// Registers the embedded DejaVu Sans as [`FONT`] with plotters, once per process: plotters cannot
/// measure or draw text before.
pub fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!("the embedded DejaVu Sans font could not be loaded"))
    }
}

/// Encodes an 8-bit RGB buffer (`width`·`height`·3 bytes, rows top to bottom) as a PNG file.
pub fn encode_png(width: u32, height: u32, rgb: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().context("encoding PNG")?;
    writer.write_image_data(rgb).context("encoding PNG")?;
    writer.finish().context("encoding PNG")?;
    Ok(out)
}

/// A plotters drawing error as an `anyhow` error saying what was being drawn.
pub(crate) fn drawing<E: std::error::Error + Send + Sync>(
    what: &'static str,
) -> impl FnOnce(plotters::drawing::DrawingAreaErrorKind<E>) -> anyhow::Error {
    move |e| anyhow!("drawing {what}: {e}")
}
