//! Bulk conversions and mask packing for the types other than F32: BF16,
//! F16 and F64 read straight from the mapped bytes, several elements per
//! step.
//!
//! Every routine here returns exactly the bits of the element-by-element
//! path it replaces (the `half` crate's scalar conversions, the generic
//! mask packer): BF16 widens by a shift and narrows with the same
//! round-to-nearest-even and NaN quieting as `half`, F16 uses the CPU's
//! F16C instructions where `half` would (with the same rounding mode), and
//! masks compare the bits with the sign cleared against zero. The tests in
//! `fast_tests.rs` compare each routine with that path on random words,
//! NaN, infinities, subnormals and `-0.0`.

use half::f16;

/// bfloat16 bits to f32, as `bf16::to_f32` does it (a NaN gets its quiet
/// bit set), without a branch so that loops over it vectorize.
#[inline(always)]
pub(crate) fn bf16_to_f32(b: u16) -> f32 {
    let b = b as u32;
    let nan = ((b & 0x7fff) > 0x7f80) as u32;
    f32::from_bits((b | nan << 6) << 16)
}

/// f32 to bfloat16 bits, as `bf16::from_f32` does it (round to nearest,
/// ties to even; a NaN keeps its high bits and gets its quiet bit set),
/// without a branch.
#[inline(always)]
pub(crate) fn f32_to_bf16(v: f32) -> u16 {
    let x = v.to_bits();
    let nan = (x & 0x7fff_ffff) > 0x7f80_0000;
    let up = (x & 0x8000 != 0) & (x & 0x17fff != 0);
    let rounded = (x >> 16) + up as u32;
    let quiet = (x >> 16) | 0x40;
    (if nan { quiet } else { rounded }) as u16
}

#[inline(always)]
fn word16(c: &[u8]) -> u16 {
    u16::from_le_bytes(c.try_into().expect("2 bytes"))
}

/// Runs `$plain` compiled for AVX2 when the CPU has it (so that the
/// compiler's vectorized loops are twice as wide), else as it is.
macro_rules! avx2_or_plain {
    ($avx2:ident, $plain:ident, ($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn $avx2($($arg: $ty),*) $(-> $ret)? {
            $plain($($arg),*)
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is available (checked above).
            return unsafe { $avx2($($arg),*) };
        }
        return $plain($($arg),*);
    };
}
pub(crate) use avx2_or_plain;

/// Decodes BF16 `bytes` into `out` (one slot per element).
pub(crate) fn decode_bf16(bytes: &[u8], out: &mut [f32]) {
    #[inline(always)]
    fn plain(bytes: &[u8], out: &mut [f32]) {
        debug_assert_eq!(bytes.len(), out.len() * 2);
        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *o = bf16_to_f32(word16(c));
        }
    }
    avx2_or_plain!(avx2, plain, (bytes: &[u8], out: &mut [f32]));
}

/// Encodes `values` as BF16 into `out` (exactly their bytes).
pub(crate) fn encode_bf16(values: &[f32], out: &mut [u8]) {
    #[inline(always)]
    fn plain(values: &[f32], out: &mut [u8]) {
        debug_assert_eq!(out.len(), values.len() * 2);
        for (c, &v) in out.chunks_exact_mut(2).zip(values) {
            c.copy_from_slice(&f32_to_bf16(v).to_le_bytes());
        }
    }
    avx2_or_plain!(avx2, plain, (values: &[f32], out: &mut [u8]));
}

/// The incremental mean step of [`super::Accumulator::fold`] over BF16
/// `bytes`, widened as they are read.
pub(crate) fn fold_bf16(acc: &mut [f32], bytes: &[u8], c: f32) {
    #[inline(always)]
    fn plain(acc: &mut [f32], bytes: &[u8], c: f32) {
        debug_assert_eq!(bytes.len(), acc.len() * 2);
        for (m, b) in acc.iter_mut().zip(bytes.chunks_exact(2)) {
            let v = bf16_to_f32(word16(b));
            *m = if v == *m { *m } else { *m + (v - *m) * c };
        }
    }
    avx2_or_plain!(avx2, plain, (acc: &mut [f32], bytes: &[u8], c: f32));
}

/// The incremental mean step over F64 `bytes`, read in place.
pub(crate) fn fold_f64(acc: &mut [f64], bytes: &[u8], c: f64) {
    #[inline(always)]
    fn plain(acc: &mut [f64], bytes: &[u8], c: f64) {
        debug_assert_eq!(bytes.len(), acc.len() * 8);
        for (m, b) in acc.iter_mut().zip(bytes.chunks_exact(8)) {
            let v = f64::from_le_bytes(b.try_into().expect("8 bytes"));
            *m = if v == *m { *m } else { *m + (v - *m) * c };
        }
    }
    avx2_or_plain!(avx2, plain, (acc: &mut [f64], bytes: &[u8], c: f64));
}

/// Whether the CPU converts F16 in hardware, which is when `half` does too.
#[inline]
fn has_f16c() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Decodes F16 `bytes` into `out` (one slot per element), eight at a time
/// with F16C where the CPU has it.
pub(crate) fn decode_f16(bytes: &[u8], out: &mut [f32]) {
    debug_assert_eq!(bytes.len(), out.len() * 2);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        // SAFETY: F16C and AVX are available (checked above).
        done = unsafe { decode_f16_f16c(bytes, out) };
    }
    for (o, c) in out[done..]
        .iter_mut()
        .zip(bytes[2 * done..].chunks_exact(2))
    {
        *o = f16::from_bits(word16(c)).to_f32();
    }
}

/// Encodes `values` as F16 into `out` (exactly their bytes), eight at a
/// time with F16C where the CPU has it.
pub(crate) fn encode_f16(values: &[f32], out: &mut [u8]) {
    debug_assert_eq!(out.len(), values.len() * 2);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        // SAFETY: F16C and AVX are available (checked above).
        done = unsafe { encode_f16_f16c(values, out) };
    }
    for (c, &v) in out[2 * done..].chunks_exact_mut(2).zip(&values[done..]) {
        c.copy_from_slice(&f16::from_f32(v).to_le_bytes());
    }
}

/// The whole groups of eight of [`decode_f16`]; returns how many elements
/// it decoded.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn decode_f16_f16c(bytes: &[u8], out: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let whole = out.len() / 8 * 8;
    for (o, c) in out[..whole].chunks_exact_mut(8).zip(bytes.chunks_exact(16)) {
        // SAFETY: `c` holds 16 readable bytes and `o` 8 writable floats;
        // loadu and storeu have no alignment requirement.
        unsafe {
            let h = _mm_loadu_si128(c.as_ptr().cast());
            _mm256_storeu_ps(o.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
    }
    whole
}

/// The whole groups of eight of [`encode_f16`], rounded to nearest even
/// as `half` rounds; returns how many elements it encoded.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn encode_f16_f16c(values: &[f32], out: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    let whole = values.len() / 8 * 8;
    for (c, v) in out
        .chunks_exact_mut(16)
        .zip(values[..whole].chunks_exact(8))
    {
        // SAFETY: `v` holds 8 readable floats and `c` 16 writable bytes;
        // loadu and storeu have no alignment requirement.
        unsafe {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(v.as_ptr()));
            _mm_storeu_si128(c.as_mut_ptr().cast(), h);
        }
    }
    whole
}

/// Packs the masks of whole groups of 32 16-bit elements (BF16 or F16:
/// zero exactly when the bits without the sign are) into 4 bytes each, with
/// AVX2. Returns the elements packed (a multiple of 32) and the non-zero
/// count among them; `None` without AVX2.
pub(crate) fn pack_mask16(bytes: &[u8], out: &mut [u8]) -> Option<(usize, u64)> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available (checked above).
        return Some(unsafe { pack_mask16_avx2(bytes, out) });
    }
    let _ = (bytes, out);
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
unsafe fn pack_mask16_avx2(bytes: &[u8], out: &mut [u8]) -> (usize, u64) {
    use std::arch::x86_64::*;
    let zero = _mm256_setzero_si256();
    let mut nonzero = 0u64;
    let mut groups = 0;
    for (group, dst) in bytes.chunks_exact(64).zip(out.chunks_exact_mut(4)) {
        // SAFETY: `group` holds 64 readable bytes; loadu has no alignment
        // requirement.
        let (a, b) = unsafe {
            (
                _mm256_loadu_si256(group.as_ptr().cast()),
                _mm256_loadu_si256(group.as_ptr().add(32).cast()),
            )
        };
        // Dropping the sign bit leaves zero exactly for +0 and -0.
        let za = _mm256_cmpeq_epi16(_mm256_slli_epi16::<1>(a), zero);
        let zb = _mm256_cmpeq_epi16(_mm256_slli_epi16::<1>(b), zero);
        // Saturating packs keep 0 and -1; they interleave the 128-bit
        // halves (a0 b0 a1 b1), which the permutation puts back in order.
        let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi16(za, zb));
        let bits = !(_mm256_movemask_epi8(packed) as u32);
        nonzero += bits.count_ones() as u64;
        dst.copy_from_slice(&bits.to_le_bytes());
        groups += 1;
    }
    (groups * 32, nonzero)
}

/// Packs the masks of whole groups of 8 F64 elements into one byte each,
/// with AVX2. Returns the elements packed and the non-zero count among
/// them; `None` without AVX2.
pub(crate) fn pack_mask64(bytes: &[u8], out: &mut [u8]) -> Option<(usize, u64)> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available (checked above).
        return Some(unsafe { pack_mask64_avx2(bytes, out) });
    }
    let _ = (bytes, out);
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
unsafe fn pack_mask64_avx2(bytes: &[u8], out: &mut [u8]) -> (usize, u64) {
    use std::arch::x86_64::*;
    let zero = _mm256_setzero_si256();
    let mut nonzero = 0u64;
    let mut groups = 0;
    for (group, dst) in bytes.chunks_exact(64).zip(out.iter_mut()) {
        // SAFETY: `group` holds 64 readable bytes; loadu has no alignment
        // requirement.
        let (a, b) = unsafe {
            (
                _mm256_loadu_si256(group.as_ptr().cast()),
                _mm256_loadu_si256(group.as_ptr().add(32).cast()),
            )
        };
        let za = _mm256_cmpeq_epi64(_mm256_slli_epi64::<1>(a), zero);
        let zb = _mm256_cmpeq_epi64(_mm256_slli_epi64::<1>(b), zero);
        let lo = _mm256_movemask_pd(_mm256_castsi256_pd(za)) as u8;
        let hi = _mm256_movemask_pd(_mm256_castsi256_pd(zb)) as u8;
        let byte = !(lo | hi << 4);
        nonzero += byte.count_ones() as u64;
        *dst = byte;
        groups += 1;
    }
    (groups * 8, nonzero)
}
