//! Scoring: the criterion seam of pruning. A criterion turns every element
//! into an order key; selection removes the elements with the smallest keys
//! (ties in storage order). Zeros always get key 0, so they count as removed
//! first whatever the criterion.
//!
//! - Magnitude: the key is the bit pattern of `|w|`, which for IEEE floats
//!   with the sign cleared orders like the magnitude. F32, F16 and BF16
//!   convert exactly to F32, so their keys are F32 bit patterns
//!   ([`Key32`]; a BF16 key is the 16 bits shifted up, an F16 key comes
//!   from a table of the 32768 magnitudes, [`f16_keys`], so 16-bit data is
//!   never converted); a selection holding an F64 tensor uses F64 bit
//!   patterns ([`Key64`]).
//! - Random: the key of a non-zero element is a hash of the seed, the
//!   tensor's name and the element's index ([`RandomKey`]), so the choice
//!   is a uniformly random subset that depends on the seed alone, not on
//!   storage order, windows or threads.
//! - Wanda: the score of an element is `|w| * norm`, where `norm` is the
//!   L2 norm of the activations of the element's input channel, given as
//!   score data ([`WandaKey`]; see [`super::scores`]). The key is the f64
//!   bit pattern of the score plus one for a non-zero element, so a non-zero
//!   weight whose score is 0 (a dead input channel) still ranks above every
//!   zero.

use half::{bf16, f16};
use serde::{Deserialize, Serialize};

use crate::dtype::{Accumulator, FloatType};

/// How elements are ranked for removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Criterion {
    /// Smallest `|w|` first (NaN counts as larger than any number).
    #[default]
    Magnitude,
    /// A seeded uniformly random order of the non-zero elements.
    Random {
        /// The seed.
        seed: u64,
    },
    /// Smallest `|w| * ||x||` first (Wanda): the weight's magnitude times
    /// the L2 norm of its input channel's activations, which the caller
    /// supplies as score data, one vector per pruned tensor.
    Wanda,
}

impl Criterion {
    /// The forms [`FromStr`](std::str::FromStr) parses and
    /// [`Display`](std::fmt::Display) prints, one per variant.
    pub const FORMS: [&'static str; 3] = ["magnitude", "random:SEED", "wanda"];
}

impl std::str::FromStr for Criterion {
    type Err = crate::error::Error;

    /// Parses `magnitude`, `wanda` or `random:SEED`.
    fn from_str(s: &str) -> crate::error::Result<Criterion> {
        match s.trim() {
            "magnitude" => Ok(Criterion::Magnitude),
            "wanda" => Ok(Criterion::Wanda),
            other => other
                .strip_prefix("random:")
                .and_then(|seed| seed.parse().ok())
                .map(|seed| Criterion::Random { seed })
                .ok_or_else(|| crate::error::Error::UnknownName {
                    what: "criterion",
                    given: s.to_string(),
                    valid: {
                        let (last, rest) = Criterion::FORMS.split_last().expect("forms");
                        format!("{} or {last}", rest.join(", "))
                    },
                }),
        }
    }
}

impl std::fmt::Display for Criterion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Criterion::Magnitude => f.write_str("magnitude"),
            Criterion::Random { seed } => write!(f, "random:{seed}"),
            Criterion::Wanda => f.write_str("wanda"),
        }
    }
}

/// Order keys of the elements of a tensor piece.
pub(crate) trait Key: Sync {
    /// Width of the keys in bits (the radix selection's passes).
    const BITS: u32;
    /// Whether keys are F32 magnitude bit patterns, so that the vectorized
    /// F32 loops apply.
    const F32_MAGNITUDE: bool;
    /// Calls `f(index, key)` for each element of `bytes`, which hold the
    /// elements from `start` on of tensor number `tensor`.
    fn each(
        &self,
        tensor: usize,
        start: usize,
        bytes: &[u8],
        ty: FloatType,
        f: impl FnMut(usize, u64),
    );
    /// The largest magnitude removed, for a cut at `key` (magnitude keys
    /// only).
    fn threshold(&self, key: u64) -> Option<f64>;
}

/// F32 bit patterns of magnitudes (for F32, F16 and BF16).
pub(crate) struct Key32;
/// F64 bit patterns of magnitudes (for selections that hold an F64 tensor).
pub(crate) struct Key64;

/// Random keys: 31-bit hashes of (seed, tensor name, index), never 0.
pub(crate) struct RandomKey {
    /// Per tensor (indexed like the source): the hash of seed and name.
    tensor_seeds: Vec<u64>,
}

pub(crate) const ABS32: u32 = 0x7fff_ffff;
const ABS64: u64 = 0x7fff_ffff_ffff_ffff;

#[inline]
fn each_chunk<const N: usize>(bytes: &[u8], mut f: impl FnMut(usize, [u8; N])) {
    for (i, c) in bytes.chunks_exact(N).enumerate() {
        f(i, c.try_into().expect("chunks_exact yields N bytes"));
    }
}

impl Key for Key32 {
    const BITS: u32 = 32;
    const F32_MAGNITUDE: bool = true;
    #[inline]
    fn each(&self, _: usize, _: usize, bytes: &[u8], ty: FloatType, mut f: impl FnMut(usize, u64)) {
        match ty {
            FloatType::F32 => {
                each_chunk::<4>(bytes, |i, b| f(i, (u32::from_le_bytes(b) & ABS32) as u64))
            }
            FloatType::BF16 => each_chunk::<2>(bytes, |i, b| {
                f(i, (((u16::from_le_bytes(b) as u32) << 16) & ABS32) as u64)
            }),
            FloatType::F16 => {
                let table = f16_keys();
                each_chunk::<2>(bytes, |i, b| {
                    f(i, table[(u16::from_le_bytes(b) & 0x7fff) as usize] as u64)
                })
            }
            FloatType::F64 => unreachable!("selections with F64 tensors use 64-bit keys"),
        }
    }
    fn threshold(&self, key: u64) -> Option<f64> {
        Some(f32::from_bits(key as u32) as f64)
    }
}

impl Key for Key64 {
    const BITS: u32 = 64;
    const F32_MAGNITUDE: bool = false;
    #[inline]
    fn each(&self, _: usize, _: usize, bytes: &[u8], ty: FloatType, mut f: impl FnMut(usize, u64)) {
        match ty {
            FloatType::F64 => each_chunk::<8>(bytes, |i, b| f(i, u64::from_le_bytes(b) & ABS64)),
            FloatType::F32 => each_chunk::<4>(bytes, |i, b| {
                f(i, (f32::from_le_bytes(b) as f64).to_bits() & ABS64)
            }),
            FloatType::BF16 => each_chunk::<2>(bytes, |i, b| {
                f(i, bf16::from_le_bytes(b).to_f64().to_bits() & ABS64)
            }),
            FloatType::F16 => each_chunk::<2>(bytes, |i, b| {
                f(i, f16::from_le_bytes(b).to_f64().to_bits() & ABS64)
            }),
        }
    }
    fn threshold(&self, key: u64) -> Option<f64> {
        Some(f64::from_bits(key))
    }
}

/// The F32 magnitude key of every F16 magnitude (the bits without the
/// sign), computed once: the key of a 16-bit word `w` is
/// `f16_keys()[w & 0x7fff]`, so that loops over F16 data need no
/// conversion.
pub(crate) fn f16_keys() -> &'static [u32; 1 << 15] {
    static KEYS: std::sync::OnceLock<Box<[u32; 1 << 15]>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = Box::new([0u32; 1 << 15]);
        for (w, k) in keys.iter_mut().enumerate() {
            *k = f16::from_bits(w as u16).to_f32().to_bits() & ABS32;
        }
        keys
    })
}

/// The F32 magnitude key of the 16-bit word `w` of type `ty` (BF16 or
/// F16), as [`Key32`] computes it; `f16` is [`f16_keys`].
#[inline(always)]
pub(crate) fn key16(w: u16, ty: FloatType, f16: &[u32; 1 << 15]) -> u32 {
    if ty == FloatType::BF16 {
        ((w & 0x7fff) as u32) << 16
    } else {
        f16[(w & 0x7fff) as usize]
    }
}

/// SplitMix64's finaliser: a bijective 64-bit mix.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl RandomKey {
    /// Keys for tensors called `names` (in the source's order) under `seed`.
    pub(crate) fn new<'a>(seed: u64, names: impl IntoIterator<Item = &'a str>) -> RandomKey {
        let tensor_seeds = names
            .into_iter()
            .map(|name| {
                // FNV-1a of the name, then mixed with the seed.
                let mut h = 0xcbf2_9ce4_8422_2325u64;
                for b in name.bytes() {
                    h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
                }
                mix(h ^ mix(seed))
            })
            .collect();
        RandomKey { tensor_seeds }
    }
}

impl Key for RandomKey {
    const BITS: u32 = 32;
    const F32_MAGNITUDE: bool = false;
    #[inline]
    fn each(
        &self,
        tensor: usize,
        start: usize,
        bytes: &[u8],
        ty: FloatType,
        mut f: impl FnMut(usize, u64),
    ) {
        let base = self.tensor_seeds[tensor];
        crate::dtype::for_each_nonzero(bytes, ty, |i, nonzero| {
            let key = if nonzero {
                // The top 31 bits, or 1 where they are all zero: never 0.
                (mix(base.wrapping_add((start + i) as u64)) >> 33).max(1)
            } else {
                0
            };
            f(i, key)
        });
    }
    fn threshold(&self, _: u64) -> Option<f64> {
        None
    }
}

/// Per-input-channel norms of one tensor, and where its channels lie: the
/// channel of element `e` is `(e / inner) % norms.len()`.
#[derive(Debug, Clone)]
pub(crate) struct ChannelNorms {
    pub(crate) norms: Vec<f64>,
    pub(crate) inner: usize,
}

/// Wanda keys: per tensor (indexed like the source), the norms of its
/// input channels (`None` for tensors that are not pruned).
pub(crate) struct WandaKey {
    pub(crate) tensors: Vec<Option<ChannelNorms>>,
}

impl Key for WandaKey {
    const BITS: u32 = 64;
    const F32_MAGNITUDE: bool = false;
    fn each(
        &self,
        tensor: usize,
        start: usize,
        bytes: &[u8],
        ty: FloatType,
        mut f: impl FnMut(usize, u64),
    ) {
        let c = self.tensors[tensor]
            .as_ref()
            .expect("score data for every pruned tensor");
        let mut values = [0f64; 1024];
        let size = ty.size();
        for (b, block) in bytes.chunks(size * values.len()).enumerate() {
            let n = block.len() / size;
            f64::decode_into(block, ty, &mut values[..n]);
            for (j, &v) in values[..n].iter().enumerate() {
                let i = b * values.len() + j;
                let key = if v == 0.0 {
                    0
                } else {
                    let norm = c.norms[((start + i) / c.inner) % c.norms.len()];
                    ((v.abs() * norm).to_bits() & ABS64) + 1
                };
                f(i, key)
            }
        }
    }
    fn threshold(&self, _: u64) -> Option<f64> {
        None
    }
}

/// `|w|` of element `j` of `bytes`, in f64.
pub(crate) fn magnitude_at(bytes: &[u8], ty: FloatType, j: usize) -> f64 {
    let size = ty.size();
    let mut v = [0f64];
    f64::decode_into(&bytes[j * size..(j + 1) * size], ty, &mut v);
    v[0].abs()
}
