//! Selection: the exact cut of a group of tensors. Given a removal count,
//! radix selection over the elements' order keys (see [`super::score`])
//! finds the key of the last removed element and how many of the elements
//! with that key go (the documented tie-break: storage order).
//!
//! Each pass streams the group's tensors through the driver of
//! [`crate::stream`] and builds a 65536-bin histogram of one 16-bit digit of the keys, restricted to the
//! elements whose higher digits match the bucket chosen so far. Memory is
//! one histogram per thread plus the stream's window budget.

use std::sync::Mutex;

use super::score::{f16_keys, key16, Key, ABS32};
use super::source::Source;
use super::{removal_count, PruneOptions};
use crate::dtype::FloatType;
use crate::error::Result;
use crate::stream::{Control, Piece};

/// Where a group is cut: every key below `thr` goes, and `ties` of the `eq`
/// keys equal to it (in tie-break order). The default cuts nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Cut {
    pub(crate) thr: u64,
    pub(crate) ties: u64,
    pub(crate) eq: u64,
    /// Whether anything (zeros included) is in the removed set.
    pub(crate) any: bool,
}

impl Cut {
    /// Whether only some of the keys equal to the threshold go, so that the
    /// write pass must count them in order.
    pub(crate) fn partial(&self) -> bool {
        self.ties > 0 && self.ties < self.eq
    }
}

/// A group's cut with the counts it was derived from.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GroupCut {
    pub(crate) cut: Cut,
    pub(crate) candidates: u64,
    pub(crate) target: u64,
}

/// Radix selection of the cut of the group `members` (tensor numbers of
/// `source`).
pub(crate) fn find_cut<S: Source, K: Key>(
    source: &S,
    key: &K,
    members: &[usize],
    options: &PruneOptions,
    hists: &mut [Mutex<Vec<u64>>],
    control: &Control,
) -> Result<GroupCut> {
    let n: u64 = members.iter().map(|&i| source.numel(i) as u64).sum();
    let mut rank = None;
    let mut result = GroupCut {
        candidates: n,
        ..GroupCut::default()
    };
    if !options.of_remaining {
        let k = removal_count(options.sparsity, n);
        result.target = k;
        if k == 0 {
            return Ok(result);
        }
        rank = Some(k);
    }
    let mut prefix = 0u64;
    let mut less = 0u64;
    let mut shift = K::BITS - 16;
    loop {
        let above = if shift + 16 >= 64 {
            0
        } else {
            !0u64 << (shift + 16)
        };
        for h in hists.iter_mut() {
            h.get_mut().expect("not poisoned").fill(0);
        }
        let mut zeros = 0u64;
        let (pre, sh) = (prefix, shift);
        // One histogram per thread: a piece adds to its thread's own.
        let shared: &[Mutex<Vec<u64>>] = hists;
        source.stream(
            control,
            "finding threshold",
            members,
            false,
            |_| Ok(()),
            |p, _, _| {
                let i = members[p.tensor];
                let ty = source.float_type(i).expect("float");
                let bytes = source.bytes(i, &p.elems);
                let slot = rayon::current_thread_index().unwrap_or(0) % shared.len();
                let mut h = shared[slot].lock().expect("not poisoned");
                let h: &mut [u64; 1 << 16] = h.as_mut_slice().try_into().expect("65536 bins");
                if K::F32_MAGNITUDE && ty == FloatType::F32 {
                    return Ok(histogram_f32(bytes, above as u32, pre as u32, sh, h));
                }
                if K::F32_MAGNITUDE && ty.size() == 2 {
                    return Ok(histogram_16(bytes, ty, above as u32, pre as u32, sh, h));
                }
                let mut zc = 0u64;
                key.each(i, p.elems.start, bytes, ty, |_, k| {
                    zc += (k == 0) as u64;
                    if k & above == pre {
                        h[((k >> sh) & 0xffff) as usize] += 1;
                    }
                });
                Ok(zc)
            },
            |_, results| {
                zeros += results.iter().sum::<u64>();
                Ok(())
            },
        )?;
        let mut hists: Vec<&mut Vec<u64>> = hists
            .iter_mut()
            .map(|h| h.get_mut().expect("not poisoned"))
            .collect();
        let (first, rest) = hists.split_first_mut().expect("one thread at least");
        for h in rest.iter() {
            for (a, b) in first.iter_mut().zip(h.iter()) {
                *a += b;
            }
        }
        let r = match rank {
            Some(r) => r,
            None => {
                let z = zeros;
                let k = removal_count(options.sparsity, n - z);
                result.candidates = n - z;
                result.target = k;
                if k == 0 {
                    return Ok(result);
                }
                rank = Some(z + k);
                z + k
            }
        };
        let hist = &*hists[0];
        let mut cum = less;
        let mut b = 0usize;
        while cum + hist[b] < r {
            cum += hist[b];
            b += 1;
        }
        less = cum;
        prefix |= (b as u64) << shift;
        // BF16 keys are 16 bits shifted up: with only BF16 in the group the
        // last digit is 0 for all, so the next pass would count the same
        // elements into bin 0 and choose it.
        let bf16_only = K::F32_MAGNITUDE
            && members
                .iter()
                .all(|&i| source.float_type(i) == Some(FloatType::BF16));
        if shift == 0 || (bf16_only && shift == 16) {
            result.cut = Cut {
                thr: prefix,
                ties: r - less,
                eq: hist[b],
                any: true,
            };
            return Ok(result);
        }
        shift -= 16;
    }
}

/// One histogram pass over F32 data with F32 magnitude keys (the common
/// case): counts digit `shift` of the keys whose bits above it equal
/// `prefix`, and returns the zeros. The first pass (no bits above) needs no
/// test at all.
fn histogram_f32(bytes: &[u8], above: u32, prefix: u32, shift: u32, h: &mut [u64; 1 << 16]) -> u64 {
    let keys = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")) & ABS32);
    histogram_keys(keys, above, prefix, shift, h)
}

/// [`histogram_f32`] for BF16 or F16 data (`ty`): the same F32 magnitude
/// keys, made from the 16-bit words without converting them.
fn histogram_16(
    bytes: &[u8],
    ty: FloatType,
    above: u32,
    prefix: u32,
    shift: u32,
    h: &mut [u64; 1 << 16],
) -> u64 {
    let table = f16_keys();
    let words = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes(c.try_into().expect("2 bytes")));
    if ty == FloatType::BF16 {
        let keys = words.map(|w| key16(w, FloatType::BF16, table));
        histogram_keys(keys, above, prefix, shift, h)
    } else {
        let keys = words.map(|w| key16(w, FloatType::F16, table));
        histogram_keys(keys, above, prefix, shift, h)
    }
}

#[inline(always)]
fn histogram_keys(
    keys: impl Iterator<Item = u32>,
    above: u32,
    prefix: u32,
    shift: u32,
    h: &mut [u64; 1 << 16],
) -> u64 {
    let mut zeros = 0u64;
    if above == 0 {
        for k in keys {
            zeros += (k == 0) as u64;
            h[((k >> shift) & 0xffff) as usize] += 1;
        }
    } else {
        for k in keys {
            zeros += (k == 0) as u64;
            if k & above == prefix {
                h[((k >> shift) & 0xffff) as usize] += 1;
            }
        }
    }
    zeros
}

/// Elements of the piece whose key is `thr`.
pub(crate) fn count_equal<S: Source, K: Key>(source: &S, key: &K, p: &Piece, thr: u64) -> u64 {
    let bytes = source.bytes(p.tensor, &p.elems);
    let mut n = 0u64;
    let ty = source.float_type(p.tensor).expect("float");
    if K::F32_MAGNITUDE && ty.size() == 2 {
        return count_equal_16(bytes, ty, thr as u32);
    }
    key.each(p.tensor, p.elems.start, bytes, ty, |_, k| {
        n += (k == thr) as u64
    });
    n
}

/// [`count_equal`] for BF16 or F16 data with F32 keys, on the 16-bit words.
pub(crate) fn count_equal_16(bytes: &[u8], ty: FloatType, thr: u32) -> u64 {
    #[inline(always)]
    fn plain(bytes: &[u8], ty: FloatType, thr: u32) -> u64 {
        let table = f16_keys();
        let words = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes(c.try_into().expect("2 bytes")));
        if ty == FloatType::BF16 {
            words
                .map(|w| (key16(w, FloatType::BF16, table) == thr) as u64)
                .sum()
        } else {
            words
                .map(|w| (key16(w, FloatType::F16, table) == thr) as u64)
                .sum()
        }
    }
    crate::dtype::avx2_or_plain!(avx2, plain, (bytes: &[u8], ty: FloatType, thr: u32) -> u64);
}
