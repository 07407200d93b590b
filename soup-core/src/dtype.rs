//! Element types: which take part in arithmetic, how to decode them into an
//! accumulator and encode results back.
//!
//! Decoding never reinterprets the mapped bytes in place: safetensors does not
//! promise aligned data, so values are read with `from_le_bytes` (which the
//! compiler turns into plain loads) into a scratch buffer.

use half::{bf16, f16};
pub use safetensors::Dtype;

use crate::error::{Error, Result};

/// The floating-point types that soup-core averages, prunes and masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloatType {
    /// IEEE binary64; accumulated in f64.
    F64,
    /// IEEE binary32; accumulated in f32.
    F32,
    /// IEEE binary16; accumulated in f32.
    F16,
    /// bfloat16; accumulated in f32.
    BF16,
}

impl FloatType {
    /// The float type of `dtype`, or `None` for integer, bool and the exotic
    /// float formats (F8, F6, F4), which are carried but never computed on.
    pub fn of(dtype: Dtype) -> Option<FloatType> {
        match dtype {
            Dtype::F64 => Some(FloatType::F64),
            Dtype::F32 => Some(FloatType::F32),
            Dtype::F16 => Some(FloatType::F16),
            Dtype::BF16 => Some(FloatType::BF16),
            _ => None,
        }
    }

    /// The safetensors dtype.
    pub fn dtype(self) -> Dtype {
        match self {
            FloatType::F64 => Dtype::F64,
            FloatType::F32 => Dtype::F32,
            FloatType::F16 => Dtype::F16,
            FloatType::BF16 => Dtype::BF16,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            FloatType::F64 => 8,
            FloatType::F32 => 4,
            FloatType::F16 | FloatType::BF16 => 2,
        }
    }
}

/// Bits per element of `dtype`.
pub fn bits(dtype: Dtype) -> usize {
    dtype.bitsize()
}

/// The name safetensors uses for `dtype` (`F32`, `BF16`, `I64`...).
pub fn name(dtype: Dtype) -> String {
    format!("{dtype:?}")
}

/// Parses a dtype name as written in safetensors headers (case-insensitive).
pub fn parse(name: &str) -> Result<Dtype> {
    serde_json::from_value(serde_json::Value::String(name.to_ascii_uppercase()))
        .map_err(|_| Error::invalid(format!("unknown dtype `{name}`")))
}

/// The accumulator of a float tensor: f32, or f64 for F64 inputs.
pub trait Accumulator:
    Copy
    + Default
    + PartialEq
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + Send
    + Sync
    + 'static
{
    /// Zero.
    const ZERO: Self;
    /// Converts an f64 coefficient (weights).
    fn from_f64(v: f64) -> Self;
    /// Widens to f64 (statistics, references).
    fn to_f64(self) -> f64;
    /// Appends the little-endian bytes of `values` in `dtype` to `out`.
    fn encode(values: &[Self], dtype: FloatType, out: &mut Vec<u8>);
    /// Decodes `bytes` of type `dtype` into `out` (cleared first).
    fn decode(bytes: &[u8], dtype: FloatType, out: &mut Vec<Self>);
}

fn decode_with<T, const N: usize>(bytes: &[u8], out: &mut Vec<T>, f: impl Fn([u8; N]) -> T) {
    out.clear();
    out.extend(
        bytes
            .chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunks_exact yields N bytes"))),
    );
}

impl Accumulator for f32 {
    const ZERO: Self = 0.0;
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn encode(values: &[Self], dtype: FloatType, out: &mut Vec<u8>) {
        match dtype {
            FloatType::F32 => out.extend(values.iter().flat_map(|v| v.to_le_bytes())),
            FloatType::F64 => out.extend(values.iter().flat_map(|&v| (v as f64).to_le_bytes())),
            FloatType::F16 => {
                out.extend(values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()))
            }
            FloatType::BF16 => {
                out.extend(values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()))
            }
        }
    }
    fn decode(bytes: &[u8], dtype: FloatType, out: &mut Vec<Self>) {
        match dtype {
            FloatType::F32 => decode_with(bytes, out, f32::from_le_bytes),
            FloatType::F64 => decode_with(bytes, out, |b: [u8; 8]| f64::from_le_bytes(b) as f32),
            FloatType::F16 => decode_with(bytes, out, |b: [u8; 2]| f16::from_le_bytes(b).to_f32()),
            FloatType::BF16 => {
                decode_with(bytes, out, |b: [u8; 2]| bf16::from_le_bytes(b).to_f32())
            }
        }
    }
}

impl Accumulator for f64 {
    const ZERO: Self = 0.0;
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn encode(values: &[Self], dtype: FloatType, out: &mut Vec<u8>) {
        match dtype {
            FloatType::F64 => out.extend(values.iter().flat_map(|v| v.to_le_bytes())),
            FloatType::F32 => out.extend(values.iter().flat_map(|&v| (v as f32).to_le_bytes())),
            FloatType::F16 => {
                out.extend(values.iter().flat_map(|&v| f16::from_f64(v).to_le_bytes()))
            }
            FloatType::BF16 => {
                out.extend(values.iter().flat_map(|&v| bf16::from_f64(v).to_le_bytes()))
            }
        }
    }
    fn decode(bytes: &[u8], dtype: FloatType, out: &mut Vec<Self>) {
        match dtype {
            FloatType::F64 => decode_with(bytes, out, f64::from_le_bytes),
            FloatType::F32 => decode_with(bytes, out, |b: [u8; 4]| f32::from_le_bytes(b) as f64),
            FloatType::F16 => decode_with(bytes, out, |b: [u8; 2]| f16::from_le_bytes(b).to_f64()),
            FloatType::BF16 => {
                decode_with(bytes, out, |b: [u8; 2]| bf16::from_le_bytes(b).to_f64())
            }
        }
    }
}

/// Whether the element starting at `bytes` is non-zero, for a float type
/// (`-0.0` is zero). Works on the bit pattern: clearing the sign bit leaves
/// zero only for +0.0 and -0.0.
#[inline]
pub fn nonzero_bits(bytes: &[u8], dtype: FloatType) -> bool {
    match dtype {
        FloatType::F64 => u64::from_le_bytes(bytes[..8].try_into().unwrap()) << 1 != 0,
        FloatType::F32 => u32::from_le_bytes(bytes[..4].try_into().unwrap()) << 1 != 0,
        FloatType::F16 | FloatType::BF16 => {
            u16::from_le_bytes(bytes[..2].try_into().unwrap()) << 1 != 0
        }
    }
}

/// Calls `f(i, nonzero)` for every element of `bytes` (of type `dtype`).
#[inline]
pub fn for_each_nonzero(bytes: &[u8], dtype: FloatType, mut f: impl FnMut(usize, bool)) {
    match dtype {
        FloatType::F64 => bytes
            .chunks_exact(8)
            .enumerate()
            .for_each(|(i, c)| f(i, u64::from_le_bytes(c.try_into().unwrap()) << 1 != 0)),
        FloatType::F32 => bytes
            .chunks_exact(4)
            .enumerate()
            .for_each(|(i, c)| f(i, u32::from_le_bytes(c.try_into().unwrap()) << 1 != 0)),
        FloatType::F16 | FloatType::BF16 => bytes
            .chunks_exact(2)
            .enumerate()
            .for_each(|(i, c)| f(i, u16::from_le_bytes(c.try_into().unwrap()) << 1 != 0)),
    }
}

/// Packs the mask (`w != 0`) of `bytes` into bits, least significant bit
/// first: element `i` is bit `i % 8` of byte `i / 8`. Appends to `out` and
/// returns the number of non-zero elements. `bytes` should hold a multiple of
/// 8 elements except at the end of a tensor, where the last byte is padded
/// with zero bits (the layout of numpy's `packbits(..., bitorder="little")`).
pub fn pack_mask(bytes: &[u8], dtype: FloatType, out: &mut Vec<u8>) -> u64 {
    let size = dtype.size();
    let mut nonzero = 0u64;
    for group in bytes.chunks(size * 8) {
        let mut byte = 0u8;
        for (bit, elem) in group.chunks_exact(size).enumerate() {
            let nz = nonzero_bits(elem, dtype);
            byte |= (nz as u8) << bit;
        }
        nonzero += byte.count_ones() as u64;
        out.push(byte);
    }
    nonzero
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_zero_is_zero_in_every_float_type() {
        assert!(!nonzero_bits(&(-0.0f64).to_le_bytes(), FloatType::F64));
        assert!(!nonzero_bits(&(-0.0f32).to_le_bytes(), FloatType::F32));
        assert!(!nonzero_bits(&f16::NEG_ZERO.to_le_bytes(), FloatType::F16));
        assert!(!nonzero_bits(
            &bf16::NEG_ZERO.to_le_bytes(),
            FloatType::BF16
        ));
        assert!(nonzero_bits(
            &f32::MIN_POSITIVE.to_le_bytes(),
            FloatType::F32
        ));
        assert!(nonzero_bits(&f32::NAN.to_le_bytes(), FloatType::F32));
        assert!(nonzero_bits(
            &f16::from_f32(-1e-7).to_le_bytes(),
            FloatType::F16
        ));
    }

    #[test]
    fn pack_mask_is_little_bit_order() {
        let vals: Vec<f32> = vec![1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, -3.0, -0.0];
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = Vec::new();
        let nz = pack_mask(&bytes, FloatType::F32, &mut out);
        assert_eq!(out, vec![0b0000_1001, 0b0000_0001]);
        assert_eq!(nz, 3);
    }

    #[test]
    fn decode_encode_round_trip_in_each_type() {
        let vals = [0.5f32, -1.25, 3.0, 0.0];
        for t in [
            FloatType::F32,
            FloatType::F64,
            FloatType::F16,
            FloatType::BF16,
        ] {
            let mut bytes = Vec::new();
            f32::encode(&vals, t, &mut bytes);
            assert_eq!(bytes.len(), vals.len() * t.size());
            let mut back = Vec::new();
            f32::decode(&bytes, t, &mut back);
            assert_eq!(back, vals, "{t:?}");
        }
    }

    #[test]
    fn dtype_names_parse() {
        assert_eq!(parse("bf16").unwrap(), Dtype::BF16);
        assert_eq!(parse("F32").unwrap(), Dtype::F32);
        assert!(parse("F33").is_err());
    }
}
