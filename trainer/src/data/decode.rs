//! Decoding image files to 8-bit RGB, as torchvision's default loader
//! (`PIL.Image.open(f).convert("RGB")`) sees them.
//!
//! JPEG goes through zune-jpeg (pure Rust, SIMD colour conversion and IDCT;
//! measured against `image` and `jpeg-decoder` in BENCHMARKS.md), PNG
//! through the `png` crate. The format is taken from the file's first
//! bytes, not its name, as PIL does. Grey images are replicated to three
//! channels and alpha is dropped, which is what `convert("RGB")` does.

use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

/// A decoded image: `height x width x 3` bytes, RGB, row after row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb {
    /// Pixels, interleaved RGB.
    pub pixels: Vec<u8>,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

/// The image formats the trainer decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// JPEG (JFIF, EXIF, Adobe; baseline and progressive).
    Jpeg,
    /// PNG, any colour type and bit depth.
    Png,
}

/// The format of a file from its first bytes, or `None`.
pub fn sniff(head: &[u8]) -> Option<ImageFormat> {
    if head.starts_with(&[0xff, 0xd8, 0xff]) {
        Some(ImageFormat::Jpeg)
    } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else {
        None
    }
}

/// The largest side accepted, so that a hostile header cannot make a
/// decoder allocate gigabytes.
pub const MAX_SIDE: usize = 1 << 15;

/// Decodes a JPEG or PNG file's bytes to RGB; the error says what is wrong.
pub fn decode_rgb(bytes: &[u8]) -> Result<Rgb, String> {
    let mut out = Rgb {
        pixels: Vec::new(),
        width: 0,
        height: 0,
    };
    decode_rgb_into(bytes, &mut out)?;
    Ok(out)
}

/// [`decode_rgb`] into `out`, reusing its buffer: a worker that decodes
/// image after image then allocates (and page-faults in) nothing per image.
pub fn decode_rgb_into(bytes: &[u8], out: &mut Rgb) -> Result<(), String> {
    match sniff(bytes) {
        Some(ImageFormat::Jpeg) => decode_jpeg(bytes, out),
        Some(ImageFormat::Png) => {
            *out = decode_png(bytes)?;
            Ok(())
        }
        None => Err("is neither a JPEG nor a PNG file".into()),
    }
}

fn decode_jpeg(bytes: &[u8], out: &mut Rgb) -> Result<(), String> {
    // Strict mode turns a truncated or damaged entropy-coded segment into an
    // error, as PIL does (it raises "image file is truncated"), instead of
    // padding the image with grey.
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_strict_mode(true)
        .set_max_width(MAX_SIDE)
        .set_max_height(MAX_SIDE);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    let bad = |e| format!("is not a readable JPEG file: {e:?}");
    decoder.decode_headers().map_err(bad)?;
    let (width, height) = decoder
        .dimensions()
        .ok_or("is not a readable JPEG file: no dimensions")?;
    let size = decoder
        .output_buffer_size()
        .ok_or("is not a readable JPEG file: no output size")?;
    if size != width * height * 3 {
        return Err(format!(
            "is not a readable JPEG file: {size} bytes to decode for {width}x{height} RGB"
        ));
    }
    out.pixels.resize(size, 0);
    decoder.decode_into(&mut out.pixels).map_err(bad)?;
    (out.width, out.height) = (width, height);
    Ok(())
}

fn decode_png(bytes: &[u8]) -> Result<Rgb, String> {
    let bad = |e: png::DecodingError| format!("is not a readable PNG file: {e}");
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(bad)?;
    let (width, height) = {
        let info = reader.info();
        (info.width as usize, info.height as usize)
    };
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(format!(
            "is {width}x{height}, larger than {MAX_SIDE} pixels a side"
        ));
    }
    let size = reader
        .output_buffer_size()
        .ok_or("is not a readable PNG file: image too large")?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(bad)?;
    let channels = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err("is an indexed PNG that did not expand".into()),
    };
    let mut pixels = Vec::with_capacity(width * height * 3);
    for row in buf.chunks_exact(info.line_size).take(height) {
        for px in row[..width * channels].chunks_exact(channels) {
            match channels {
                1 | 2 => pixels.extend_from_slice(&[px[0]; 3]),
                _ => pixels.extend_from_slice(&px[..3]),
            }
        }
    }
    Ok(Rgb {
        pixels,
        width,
        height,
    })
}
