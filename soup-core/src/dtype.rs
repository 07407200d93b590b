//! Element types: which take part in arithmetic, how to decode them into an
//! accumulator and encode results back.
//!
//! Decoding never reinterprets the mapped bytes in place: safetensors does not
//! promise aligned data, so values are read with `from_le_bytes` (which the
//! compiler turns into plain loads) into a scratch buffer.
//!
//! Every float type has a bulk path (the private `fast` module): F32 and
//! F64 are folded and masked straight from their bytes, BF16 widens by a
//! shift, F16 converts eight at a time with F16C where the CPU has it, and
//! masks of 16- and 64-bit words are packed with AVX2. Each gives the same
//! bits as converting element by element with the `half` crate.

use half::{bf16, f16};
pub use safetensors::Dtype;

use crate::error::{Error, Result};

mod fast;
pub(crate) use fast::avx2_or_plain;
#[cfg(test)]
mod fast_tests;

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

impl std::str::FromStr for FloatType {
    type Err = Error;

    /// Parses a float dtype name (`F32`, `bf16`; any case); an error, which
    /// lists the float types, for other dtypes.
    fn from_str(name: &str) -> Result<FloatType> {
        let unknown = || Error::UnknownName {
            what: "float type",
            given: name.to_string(),
            valid: {
                let names: Vec<String> = FloatType::ALL
                    .iter()
                    .map(|t| self::name(t.dtype()))
                    .collect();
                let (last, rest) = names.split_last().expect("float types");
                format!("{} or {last}", rest.join(", "))
            },
        };
        parse(name).ok().and_then(FloatType::of).ok_or_else(unknown)
    }
}

impl FloatType {
    /// Every float type.
    pub const ALL: [FloatType; 4] = [
        FloatType::F64,
        FloatType::F32,
        FloatType::F16,
        FloatType::BF16,
    ];

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
    /// Decodes `bytes` of type `dtype` into `out`, which holds exactly one
    /// slot per element.
    fn decode_into(bytes: &[u8], dtype: FloatType, out: &mut [Self]);
    /// Encodes `values` in `dtype` into `out`, which holds exactly their
    /// bytes.
    fn encode_into(values: &[Self], dtype: FloatType, out: &mut [u8]);
    /// One step of the incremental mean: `m += (x - m) * c`, except that a
    /// value equal to the mean leaves it as it is, so identical inputs come
    /// back bit for bit (`-0.0` stays `-0.0`, an infinity stays infinite).
    fn fold(acc: &mut [Self], x: &[Self], c: Self) {
        for (m, &v) in acc.iter_mut().zip(x) {
            *m = if v == *m { *m } else { *m + (v - *m) * c };
        }
    }
    /// [`Accumulator::fold`] of the values encoded in `bytes` (type
    /// `dtype`), using `x` (one slot per element) as scratch where they
    /// must be decoded first.
    fn fold_encoded(acc: &mut [Self], bytes: &[u8], dtype: FloatType, c: Self, x: &mut [Self]) {
        Self::decode_into(bytes, dtype, x);
        Self::fold(acc, x, c);
    }
}

fn decode_into_with<T, const N: usize>(bytes: &[u8], out: &mut [T], f: impl Fn([u8; N]) -> T) {
    debug_assert_eq!(bytes.len(), out.len() * N);
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(N)) {
        *o = f(c.try_into().expect("chunks_exact yields N bytes"));
    }
}

fn encode_into_with<T: Copy, const N: usize>(
    values: &[T],
    out: &mut [u8],
    f: impl Fn(T) -> [u8; N],
) {
    debug_assert_eq!(out.len(), values.len() * N);
    for (c, &v) in out.chunks_exact_mut(N).zip(values) {
        c.copy_from_slice(&f(v));
    }
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
    fn decode_into(bytes: &[u8], dtype: FloatType, out: &mut [Self]) {
        match dtype {
            FloatType::F32 => decode_into_with(bytes, out, f32::from_le_bytes),
            FloatType::F64 => {
                decode_into_with(bytes, out, |b: [u8; 8]| f64::from_le_bytes(b) as f32)
            }
            FloatType::F16 => fast::decode_f16(bytes, out),
            FloatType::BF16 => fast::decode_bf16(bytes, out),
        }
    }
    fn encode_into(values: &[Self], dtype: FloatType, out: &mut [u8]) {
        match dtype {
            FloatType::F32 => encode_into_with(values, out, f32::to_le_bytes),
            FloatType::F64 => encode_into_with(values, out, |v| (v as f64).to_le_bytes()),
            FloatType::F16 => fast::encode_f16(values, out),
            FloatType::BF16 => fast::encode_bf16(values, out),
        }
    }
    /// F32 and BF16 values are folded straight from their bytes: no copy,
    /// and a loop without branches that the compiler vectorises. F16 is
    /// converted in bulk first.
    fn fold_encoded(acc: &mut [f32], bytes: &[u8], dtype: FloatType, c: f32, x: &mut [f32]) {
        match dtype {
            FloatType::F32 => {}
            FloatType::BF16 => return fast::fold_bf16(acc, bytes, c),
            FloatType::F16 | FloatType::F64 => {
                Self::decode_into(bytes, dtype, x);
                return Self::fold(acc, x, c);
            }
        }
        debug_assert_eq!(bytes.len(), acc.len() * 4);
        for (m, b) in acc.iter_mut().zip(bytes.chunks_exact(4)) {
            let v = f32::from_le_bytes(b.try_into().expect("4 bytes"));
            *m = if v == *m { *m } else { *m + (v - *m) * c };
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
    fn decode_into(bytes: &[u8], dtype: FloatType, out: &mut [Self]) {
        match dtype {
            FloatType::F64 => decode_into_with(bytes, out, f64::from_le_bytes),
            FloatType::F32 => {
                decode_into_with(bytes, out, |b: [u8; 4]| f32::from_le_bytes(b) as f64)
            }
            FloatType::F16 => {
                decode_into_with(bytes, out, |b: [u8; 2]| f16::from_le_bytes(b).to_f64())
            }
            FloatType::BF16 => {
                decode_into_with(bytes, out, |b: [u8; 2]| bf16::from_le_bytes(b).to_f64())
            }
        }
    }
    fn encode_into(values: &[Self], dtype: FloatType, out: &mut [u8]) {
        match dtype {
            FloatType::F64 => encode_into_with(values, out, f64::to_le_bytes),
            FloatType::F32 => encode_into_with(values, out, |v| (v as f32).to_le_bytes()),
            FloatType::F16 => encode_into_with(values, out, |v| f16::from_f64(v).to_le_bytes()),
            FloatType::BF16 => encode_into_with(values, out, |v| bf16::from_f64(v).to_le_bytes()),
        }
    }
    /// F64 values are folded straight from their bytes, like F32 ones into
    /// an f32 accumulator.
    fn fold_encoded(acc: &mut [f64], bytes: &[u8], dtype: FloatType, c: f64, x: &mut [f64]) {
        if dtype == FloatType::F64 {
            return fast::fold_f64(acc, bytes, c);
        }
        Self::decode_into(bytes, dtype, x);
        Self::fold(acc, x, c);
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
    let start = out.len();
    out.resize(start + (bytes.len() / dtype.size()).div_ceil(8), 0);
    pack_mask_into(bytes, dtype, &mut out[start..])
}

/// [`pack_mask`] into a slice of exactly `elements.div_ceil(8)` bytes.
pub fn pack_mask_into(bytes: &[u8], dtype: FloatType, out: &mut [u8]) -> u64 {
    let size = dtype.size();
    let whole = bytes.len() / (size * 8);
    let (head, tail) = bytes.split_at(whole * size * 8);
    let (out_head, out_tail) = out.split_at_mut(whole);
    // Whole groups of 32 (16-bit) or 8 (F64) elements with AVX2 first.
    let (done, done_nonzero) = match dtype {
        FloatType::F16 | FloatType::BF16 => fast::pack_mask16(head, out_head),
        FloatType::F64 => fast::pack_mask64(head, out_head),
        FloatType::F32 => None,
    }
    .unwrap_or((0, 0));
    let (head, out_head) = (&head[done * size..], &mut out_head[done / 8..]);
    let mut nonzero = done_nonzero
        + match dtype {
            FloatType::F32 => pack_whole_bytes::<4>(head, out_head, |c| {
                u32::from_le_bytes(c.try_into().expect("4 bytes")) << 1
            }),
            FloatType::F64 => pack_whole_bytes::<8>(head, out_head, |c| {
                (u64::from_le_bytes(c.try_into().expect("8 bytes")) << 1 != 0) as u32
            }),
            FloatType::F16 | FloatType::BF16 => pack_whole_bytes::<2>(head, out_head, |c| {
                (u16::from_le_bytes(c.try_into().expect("2 bytes")) << 1) as u32
            }),
        };
    if let Some(last) = out_tail.first_mut() {
        let mut byte = 0u8;
        for (bit, elem) in tail.chunks_exact(size).enumerate() {
            byte |= (nonzero_bits(elem, dtype) as u8) << bit;
        }
        nonzero += byte.count_ones() as u64;
        *last = byte;
    }
    nonzero
}

/// Packs groups of 8 elements of `N` bytes into one byte each; `key` maps
/// an element to a value that is zero exactly when the element is (±0).
#[inline(always)]
fn pack_whole_bytes<const N: usize>(
    bytes: &[u8],
    out: &mut [u8],
    key: impl Fn(&[u8]) -> u32,
) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if N == 4 && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available (checked above).
        return unsafe { pack_f32_avx2(bytes, out) };
    }
    let mut nonzero = 0u64;
    for (group, dst) in bytes.chunks_exact(8 * N).zip(out.iter_mut()) {
        let mut byte = 0u8;
        for (bit, elem) in group.chunks_exact(N).enumerate() {
            byte |= ((key(elem) != 0) as u8) << bit;
        }
        nonzero += byte.count_ones() as u64;
        *dst = byte;
    }
    nonzero
}

/// The F32 mask packer: 8 elements per step (one compare and one
/// `movemask` give one byte of the mask).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
unsafe fn pack_f32_avx2(bytes: &[u8], out: &mut [u8]) -> u64 {
    use std::arch::x86_64::*;
    let zero = _mm256_setzero_si256();
    let mut nonzero = 0u64;
    for (group, dst) in bytes.chunks_exact(32).zip(out.iter_mut()) {
        // SAFETY: `group` holds 32 readable bytes; loadu has no alignment
        // requirement.
        let v = unsafe { _mm256_loadu_si256(group.as_ptr().cast()) };
        // Dropping the sign bit leaves zero exactly for +0.0 and -0.0.
        let is_zero = _mm256_cmpeq_epi32(_mm256_slli_epi32::<1>(v), zero);
        let byte = !(_mm256_movemask_ps(_mm256_castsi256_ps(is_zero)) as u8);
        nonzero += byte.count_ones() as u64;
        *dst = byte;
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
    fn fast_and_plain_mask_packing_agree() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for ty in [
            FloatType::F32,
            FloatType::F64,
            FloatType::F16,
            FloatType::BF16,
        ] {
            for n in [0usize, 1, 7, 8, 9, 63, 64, 65, 200] {
                let mut bytes = Vec::new();
                for _ in 0..n * ty.size() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Mostly zero bytes, so that many elements are ±0.
                    bytes.push(if x % 3 == 0 { (x >> 8) as u8 & 0x81 } else { 0 });
                }
                let mut fast = Vec::new();
                let nz = pack_mask(&bytes, ty, &mut fast);
                let mut plain = vec![0u8; n.div_ceil(8)];
                let mut count = 0;
                for_each_nonzero(&bytes, ty, |i, v| {
                    plain[i / 8] |= (v as u8) << (i % 8);
                    count += v as u64;
                });
                assert_eq!((fast, nz), (plain, count), "{ty:?} x {n}");
            }
        }
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
