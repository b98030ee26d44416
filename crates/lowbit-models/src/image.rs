//! Photos in, network inputs out: decoding (PNG, JPEG) to 8-bit RGB, torchvision's
//! `Resize(n)` + `CenterCrop(n)` evaluation transforms, and normalisation to a CHW `f32`
//! tensor.
//!
//! ```no_run
//! use candle_core::Device;
//! use lowbit_models::image::{Normalization, Preprocess, center_crop, load_rgb, resize_shorter};
//!
//! // The usual ImageNet evaluation transform, step by step ...
//! let img = load_rgb("cat.jpg")?;
//! let img = center_crop(&resize_shorter(&img, 256)?, 224, 224)?;
//! let x = lowbit_models::image::to_tensor(&img, &Normalization::IMAGENET, &Device::Cpu)?;
//! assert_eq!(x.dims(), &[3, 224, 224]);
//! // ... or in one call.
//! let y = Preprocess::imagenet().load("cat.jpg", &Device::Cpu)?;
//! # Ok::<(), lowbit_models::ModelError>(())
//! ```
//!
//! ## How close to torchvision this is
//!
//! * **Resampling** is a port of Pillow's `ImagingResample` for 8-bit images with its bilinear
//!   filter (what torchvision's `Resize` calls on PIL images, `InterpolationMode.BILINEAR`):
//!   the filter support is scaled by the reduction factor (that is the antialiasing), the
//!   coefficients are rounded to 22-bit fixed point, the horizontal pass runs first and its
//!   result is rounded and clipped to 8 bits before the vertical pass. On PNG photos the
//!   result is **bit-identical** to Pillow 13 (checked against a golden fixture in
//!   `tests/efficientnet.rs`). The `image` crate's own `FilterType::Triangle` is the same
//!   filter shape but works in floating point, vertical pass first, without the intermediate
//!   rounding; resizing `chelsea.png` to 384×256 with it differs from Pillow by one level on
//!   18% of the values (mean |diff| 0.18; `image_crate_triangle_differs_from_pil` in
//!   `tests/efficientnet.rs`), which is why it is not used.
//! * **Decoding**: PNG decoding is exact. JPEG decoding (the `image` crate's `zune-jpeg`) may
//!   differ from libjpeg-turbo's (which Pillow uses) by a level on some pixels: IDCT and
//!   chroma upsampling are not specified bit-exactly by the JPEG standard. On `rocket.jpg`
//!   after resize and crop: at most 1 level on 256 sampled values, mean |diff| 0.012.
//! * **Colour**: grey, grey+alpha, RGBA and palette images become RGB as Pillow's
//!   `convert("RGB")` does (alpha is dropped, not composited). 16-bit PNGs are reduced to
//!   8 bits by the `image` crate (rounding `v/257`), Pillow truncates (`v >> 8`) — they may
//!   differ by one level. EXIF orientation is ignored by both.
//! * **Sizes**: `resize_shorter(n)` gives the shorter side `n` and the longer
//!   `floor(n · long / short)`; `center_crop` places the crop at
//!   `round((size − crop) / 2)` rounding halves to even (Python's `round`), and pads with
//!   zeros where the crop is larger than the image — all as torchvision 0.20 does.
//! * **Normalisation** is computed in `f32` in torchvision's order (`v / 255`, then
//!   `(x − mean) / std`), so it is bit-identical to `ToTensor()` + `Normalize(mean, std)`.

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::error::{ModelError, Result};

/// An 8-bit RGB image, pixels row-major and interleaved (`[r, g, b, r, g, b, …]`), as Pillow's
/// `"RGB"` mode holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width · height · 3` bytes, row by row.
    pub pixels: Vec<u8>,
}

impl RgbImage {
    /// An image from its pixels; the length must be `width · height · 3`.
    pub fn new(width: u32, height: u32, pixels: Vec<u8>) -> Result<RgbImage> {
        let want = (width as usize)
            .checked_mul(height as usize)
            .and_then(|n| n.checked_mul(3));
        if want != Some(pixels.len()) {
            return Err(ModelError::Invalid(format!(
                "an RGB image of {width}×{height} needs {} bytes, got {}",
                want.map_or_else(|| "too many".to_string(), |n| n.to_string()),
                pixels.len()
            )));
        }
        Ok(RgbImage {
            width,
            height,
            pixels,
        })
    }

    /// The pixel at (`x`, `y`), if inside the image.
    pub fn get(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        Some([self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]])
    }
}

/// Decodes the PNG or JPEG file `path` (the format is read from its first bytes, not its
/// name) into RGB. Errors name the file: [`ModelError::MissingFile`] when it is not there,
/// [`ModelError::Image`] when it cannot be decoded.
pub fn load_rgb(path: impl AsRef<Path>) -> Result<RgbImage> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e, "a PNG or JPEG file"))?;
    decode_rgb(&bytes, path)
}

/// Decodes PNG or JPEG `bytes` into RGB; `name` is the file name errors carry.
pub fn decode_rgb(bytes: &[u8], name: &Path) -> Result<RgbImage> {
    let err = |message: String| ModelError::Image {
        path: name.to_path_buf(),
        message,
    };
    let reader = ::image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?;
    if reader.format().is_none() {
        return Err(err("not a PNG or JPEG file".into()));
    }
    let img = reader.decode().map_err(|e| err(e.to_string()))?;
    let rgb = img.to_rgb8();
    let (width, height) = rgb.dimensions();
    if width == 0 || height == 0 {
        return Err(err(format!("empty image ({width}×{height})")));
    }
    RgbImage::new(width, height, rgb.into_raw())
}

/// The size torchvision's `Resize(shorter)` gives a `width × height` image: the shorter side
/// becomes `shorter`, the longer `floor(shorter · long / short)`.
pub fn shorter_side_size(width: u32, height: u32, shorter: u32) -> (u32, u32) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = (f64::from(shorter) * f64::from(long) / f64::from(short.max(1))).floor() as u32;
    if width <= height {
        (shorter, new_long)
    } else {
        (new_long, shorter)
    }
}

/// torchvision's `Resize(shorter)` with bilinear interpolation on a PIL image: the shorter
/// side becomes `shorter` ([`shorter_side_size`]), resampled with [`resize`].
pub fn resize_shorter(img: &RgbImage, shorter: u32) -> Result<RgbImage> {
    let (w, h) = shorter_side_size(img.width, img.height, shorter);
    resize(img, w, h)
}

/// Pillow's `Image.resize((width, height), Image.BILINEAR)`, bit for bit: a triangle filter
/// whose support grows with the reduction factor (antialiasing), 22-bit fixed-point
/// coefficients, horizontal pass first with 8-bit rounding in between.
pub fn resize(img: &RgbImage, width: u32, height: u32) -> Result<RgbImage> {
    if width == 0 || height == 0 {
        return Err(ModelError::Invalid(format!(
            "cannot resize to {width}×{height}"
        )));
    }
    let mut cur = img.clone();
    if width != cur.width {
        let c = Coeffs::new(cur.width, width);
        cur = resample_horizontal(&cur, &c);
    }
    if height != cur.height {
        let c = Coeffs::new(cur.height, height);
        cur = resample_vertical(&cur, &c);
    }
    Ok(cur)
}

/// Pillow's fixed-point precision for 8-bit images (`PRECISION_BITS = 32 − 8 − 2`).
const PRECISION_BITS: u32 = 22;

/// Resampling coefficients of one axis (Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`).
struct Coeffs {
    /// Per output index: first input index and number of taps.
    bounds: Vec<(usize, usize)>,
    /// Taps per output index (row stride of `k`).
    ksize: usize,
    /// Fixed-point weights, `ksize` per output index.
    k: Vec<i32>,
}

/// Pillow's bilinear filter (support 1).
fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

impl Coeffs {
    fn new(in_size: u32, out_size: u32) -> Coeffs {
        let in_size_f = f64::from(in_size);
        let scale = in_size_f / f64::from(out_size);
        let filterscale = scale.max(1.0);
        let support = filterscale; // bilinear support 1.0 × filterscale
        let ksize = support.ceil() as usize * 2 + 1;
        let ss = 1.0 / filterscale;
        let mut bounds = Vec::with_capacity(out_size as usize);
        let mut k = vec![0i32; out_size as usize * ksize];
        let mut w = vec![0f64; ksize];
        for xx in 0..out_size as usize {
            let center = (xx as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero, as `as i64` does.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size)) - xmin;
            let (xmin, n) = (xmin as usize, xmax.max(0) as usize);
            let mut ww = 0.0;
            for (x, wx) in w.iter_mut().enumerate().take(n) {
                *wx = bilinear(((x + xmin) as f64 - center + 0.5) * ss);
                ww += *wx;
            }
            for (x, wx) in w.iter().enumerate().take(n) {
                let v = if ww != 0.0 { wx / ww } else { *wx };
                let f = v * f64::from(1u32 << PRECISION_BITS);
                k[xx * ksize + x] = if v < 0.0 {
                    (-0.5 + f) as i32
                } else {
                    (0.5 + f) as i32
                };
            }
            bounds.push((xmin, n));
        }
        Coeffs { bounds, ksize, k }
    }
}

/// Pillow's `clip8`: the fixed-point sum back to 0..=255.
fn clip8(v: i64) -> u8 {
    if v >= 1i64 << (PRECISION_BITS + 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

fn resample_horizontal(img: &RgbImage, c: &Coeffs) -> RgbImage {
    let (iw, h) = (img.width as usize, img.height as usize);
    let ow = c.bounds.len();
    let mut out = vec![0u8; ow * h * 3];
    for y in 0..h {
        let row = &img.pixels[y * iw * 3..(y + 1) * iw * 3];
        for (xx, &(xmin, n)) in c.bounds.iter().enumerate() {
            let k = &c.k[xx * c.ksize..xx * c.ksize + n];
            let mut ss = [1i64 << (PRECISION_BITS - 1); 3];
            for (x, &kx) in k.iter().enumerate() {
                let p = (x + xmin) * 3;
                for ch in 0..3 {
                    ss[ch] += i64::from(row[p + ch]) * i64::from(kx);
                }
            }
            let o = (y * ow + xx) * 3;
            for ch in 0..3 {
                out[o + ch] = clip8(ss[ch]);
            }
        }
    }
    RgbImage {
        width: ow as u32,
        height: img.height,
        pixels: out,
    }
}

fn resample_vertical(img: &RgbImage, c: &Coeffs) -> RgbImage {
    let w = img.width as usize;
    let oh = c.bounds.len();
    let mut out = vec![0u8; w * oh * 3];
    let mut ss = vec![0i64; w * 3];
    for (yy, &(ymin, n)) in c.bounds.iter().enumerate() {
        let k = &c.k[yy * c.ksize..yy * c.ksize + n];
        ss.fill(1i64 << (PRECISION_BITS - 1));
        for (y, &ky) in k.iter().enumerate() {
            let row = &img.pixels[(y + ymin) * w * 3..(y + ymin + 1) * w * 3];
            for (s, &p) in ss.iter_mut().zip(row) {
                *s += i64::from(p) * i64::from(ky);
            }
        }
        for (o, &s) in out[yy * w * 3..(yy + 1) * w * 3].iter_mut().zip(&ss) {
            *o = clip8(s);
        }
    }
    RgbImage {
        width: img.width,
        height: oh as u32,
        pixels: out,
    }
}

/// Python's `round(d / 2)` for an integer `d` (halves to even), as torchvision's crop offsets.
fn half_round_even(d: i64) -> i64 {
    let q = d.div_euclid(2);
    if d.rem_euclid(2) == 0 || q % 2 == 0 {
        q
    } else {
        q + 1
    }
}

/// The `(left, top)` offset of torchvision's `CenterCrop((height, width))` in an image of
/// `img_w × img_h` that is at least as large as the crop: `round((size − crop) / 2)`, halves
/// to even.
pub fn center_crop_offset(img_w: u32, img_h: u32, width: u32, height: u32) -> (u32, u32) {
    let l = half_round_even(i64::from(img_w) - i64::from(width)).max(0);
    let t = half_round_even(i64::from(img_h) - i64::from(height)).max(0);
    (l as u32, t as u32)
}

/// torchvision's `CenterCrop((height, width))`: the crop at [`center_crop_offset`]; where the
/// crop is larger than the image, the image is first padded with black (`(crop − size) / 2`
/// on the left/top, the rest on the right/bottom), as torchvision does.
pub fn center_crop(img: &RgbImage, width: u32, height: u32) -> Result<RgbImage> {
    if width == 0 || height == 0 {
        return Err(ModelError::Invalid(format!(
            "cannot crop to {width}×{height}"
        )));
    }
    let (iw, ih) = (i64::from(img.width), i64::from(img.height));
    let (cw, ch) = (i64::from(width), i64::from(height));
    // Padding (torchvision pads before cropping when the crop is larger).
    let pad_l = if cw > iw { (cw - iw) / 2 } else { 0 };
    let pad_t = if ch > ih { (ch - ih) / 2 } else { 0 };
    let (pw, ph) = (iw.max(cw), ih.max(ch));
    let left = half_round_even(pw - cw) - pad_l;
    let top = half_round_even(ph - ch) - pad_t;
    let mut out = vec![0u8; width as usize * height as usize * 3];
    for y in 0..ch {
        let sy = y + top;
        if sy < 0 || sy >= ih {
            continue;
        }
        for x in 0..cw {
            let sx = x + left;
            if sx < 0 || sx >= iw {
                continue;
            }
            let s = ((sy * iw + sx) * 3) as usize;
            let d = ((y * cw + x) * 3) as usize;
            out[d..d + 3].copy_from_slice(&img.pixels[s..s + 3]);
        }
    }
    RgbImage::new(width, height, out)
}

/// How 0..=255 pixel values become network inputs: `(v / divisor − mean[c]) / std[c]` in
/// `f32`, in that order (torchvision's `ToTensor()` then `Normalize(mean, std)` when
/// `divisor` is 255).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalization {
    /// What the 0..=255 value is divided by first (255 for torchvision's `ToTensor`, 1 for
    /// networks that take raw pixel values).
    pub divisor: f32,
    /// Per-channel mean (R, G, B), in the units after the division.
    pub mean: [f32; 3],
    /// Per-channel standard deviation (R, G, B).
    pub std: [f32; 3],
}

impl Normalization {
    /// torchvision's ImageNet normalisation: `v / 255`, mean (0.485, 0.456, 0.406), std
    /// (0.229, 0.224, 0.225).
    pub const IMAGENET: Normalization = Normalization {
        divisor: 255.0,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };

    /// EfficientNet-Lite's: `(v − 127) / 128` on 0..=255 values (`MEAN_RGB = 127`,
    /// `STDDEV_RGB = 128` in the TensorFlow lite builder), so inputs lie in [−0.992, 1].
    pub const EFFICIENTNET_LITE: Normalization = Normalization {
        divisor: 1.0,
        mean: [127.0; 3],
        std: [128.0; 3],
    };

    /// The normalised value of `v` in channel `c` (0, 1, 2).
    pub fn apply(&self, c: usize, v: u8) -> f32 {
        (f32::from(v) / self.divisor - self.mean[c]) / self.std[c]
    }
}

/// The image as normalised `f32` values in CHW order (`[3, height, width]` flattened).
pub fn to_chw(img: &RgbImage, norm: &Normalization) -> Vec<f32> {
    let n = img.width as usize * img.height as usize;
    let mut out = vec![0f32; 3 * n];
    for (i, px) in img.pixels.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * n + i] = norm.apply(c, px[c]);
        }
    }
    out
}

/// The image as a normalised `[3, height, width]` `f32` tensor on `device`.
pub fn to_tensor(img: &RgbImage, norm: &Normalization, device: &Device) -> Result<Tensor> {
    let (w, h) = (img.width as usize, img.height as usize);
    Ok(Tensor::from_vec(to_chw(img, norm), (3, h, w), device)?)
}

/// An evaluation transform: resize the shorter side to `resize`, center-crop
/// `crop × crop`, normalise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preprocess {
    /// Shorter side after resizing (torchvision `Resize(resize)`); `None` skips the resize.
    pub resize: Option<u32>,
    /// Side of the square center crop (torchvision `CenterCrop(crop)`).
    pub crop: u32,
    /// The normalisation.
    pub normalization: Normalization,
}

impl Preprocess {
    /// `Resize(256)`, `CenterCrop(224)`, ImageNet mean/std: torchvision's ImageNet
    /// evaluation transform (ResNet, ViT, …).
    pub fn imagenet() -> Preprocess {
        Preprocess {
            resize: Some(256),
            crop: 224,
            normalization: Normalization::IMAGENET,
        }
    }

    /// `Resize(256)`, `CenterCrop(224)`, `(v − 127) / 128`: EfficientNet-Lite0's input.
    pub fn efficientnet_lite() -> Preprocess {
        Preprocess {
            resize: Some(256),
            crop: 224,
            normalization: Normalization::EFFICIENTNET_LITE,
        }
    }

    /// The resized and cropped 8-bit image (before normalisation).
    pub fn crop_image(&self, img: &RgbImage) -> Result<RgbImage> {
        let resized;
        let img = match self.resize {
            Some(n) => {
                resized = resize_shorter(img, n)?;
                &resized
            }
            None => img,
        };
        center_crop(img, self.crop, self.crop)
    }

    /// The transform of `img` as CHW `f32` values (`3 · crop · crop`).
    pub fn apply(&self, img: &RgbImage) -> Result<Vec<f32>> {
        Ok(to_chw(&self.crop_image(img)?, &self.normalization))
    }

    /// Decodes `path` and transforms it into a `[3, crop, crop]` tensor on `device`.
    pub fn load(&self, path: impl AsRef<Path>, device: &Device) -> Result<Tensor> {
        let img = self.crop_image(&load_rgb(path)?)?;
        to_tensor(&img, &self.normalization, device)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        let mut p = Vec::new();
        for y in 0..h {
            for x in 0..w {
                p.extend_from_slice(&[
                    (x * 7 % 256) as u8,
                    (y * 5 % 256) as u8,
                    ((x + y) % 256) as u8,
                ]);
            }
        }
        RgbImage::new(w, h, p).unwrap()
    }

    #[test]
    fn torchvision_sizes_and_offsets() {
        assert_eq!(shorter_side_size(451, 300, 256), (384, 256));
        assert_eq!(shorter_side_size(300, 451, 256), (256, 384));
        assert_eq!(shorter_side_size(500, 500, 256), (256, 256));
        // 256·741/500 = 379.39 → 379
        assert_eq!(shorter_side_size(741, 500, 256), (379, 256));
        // (379 − 224) / 2 = 77.5 → 78 (even); (341 − 224) / 2 = 58.5 → 58
        assert_eq!(center_crop_offset(379, 256, 224, 224), (78, 16));
        assert_eq!(center_crop_offset(341, 256, 224, 224), (58, 16));
    }

    #[test]
    fn resize_to_same_size_is_identity_and_upscale_interpolates() {
        let img = gradient(9, 5);
        assert_eq!(resize(&img, 9, 5).unwrap(), img);
        // 2 → 4 pixels: PIL bilinear gives 0, 64, 191, 255 for [0, 255] (weights ¾/¼).
        let two = RgbImage::new(2, 1, vec![0, 0, 0, 255, 255, 255]).unwrap();
        let four = resize(&two, 4, 1).unwrap();
        let r: Vec<u8> = four.pixels.chunks(3).map(|p| p[0]).collect();
        assert_eq!(r, vec![0, 64, 191, 255]);
    }

    #[test]
    fn center_crop_pads_like_torchvision() {
        let img = RgbImage::new(1, 1, vec![9, 9, 9]).unwrap();
        let c = center_crop(&img, 3, 2).unwrap();
        // pad left (3−1)/2 = 1, top (2−1)/2 = 0: the pixel lands at (1, 0).
        assert_eq!(c.get(1, 0), Some([9, 9, 9]));
        assert_eq!(c.get(0, 0), Some([0, 0, 0]));
        assert_eq!(c.get(1, 1), Some([0, 0, 0]));
    }

    #[test]
    fn normalisations() {
        assert_eq!(Normalization::EFFICIENTNET_LITE.apply(0, 255), 1.0);
        assert_eq!(Normalization::EFFICIENTNET_LITE.apply(1, 127), 0.0);
        assert_eq!(Normalization::EFFICIENTNET_LITE.apply(2, 0), -127.0 / 128.0);
        let v = Normalization::IMAGENET.apply(0, 255);
        assert_eq!(v, (1.0f32 - 0.485) / 0.229);
    }

    #[test]
    fn bad_bytes_name_the_file() {
        let e = decode_rgb(b"not an image", Path::new("x/broken.jpg")).unwrap_err();
        assert!(e.to_string().contains("x/broken.jpg"), "{e}");
        assert!(RgbImage::new(2, 2, vec![0; 11]).is_err());
    }
}
