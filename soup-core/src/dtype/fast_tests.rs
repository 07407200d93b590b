//! The bulk paths of `fast.rs` against the element-by-element ones they
//! replace (the `half` crate's scalar conversions, the mean step of
//! [`Accumulator::fold`], the mask of [`for_each_nonzero`]), bit for bit.

use half::{bf16, f16};

use super::*;

/// xorshift64: reproducible random words.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// 16-bit words: every special class of both BF16 and F16 (±0, ±inf,
/// quiet and signalling NaNs, subnormals, the largest finite values),
/// then random words, mostly of ordinary magnitude. `n` in all.
fn words16(n: usize, seed: u64) -> Vec<u16> {
    let mut w: Vec<u16> = vec![
        0x0000, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0xffc1, 0x7f81, 0xff81, 0x7fff, 0x0001, 0x8001,
        0x007f, 0x7f7f, 0xff7f, 0x7c00, 0xfc00, 0x7e00, 0x7c01, 0xfdff, 0x03ff, 0x83ff, 0x7bff,
        0x0400, 0x3c00, 0xbc00,
    ];
    let mut rng = Rng(seed);
    while w.len() < n {
        let r = rng.next();
        w.push(match r % 4 {
            0 => 0,
            1 => (r >> 16) as u16,
            _ => (0x3000 + (r >> 20) % 0x1800) as u16 | (r >> 8) as u16 & 0x8000,
        });
    }
    w.truncate(n);
    w
}

fn bytes16(words: &[u16]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// f32 values: specials (NaNs with payloads, infinities, subnormals, ±0,
/// values halfway between two BF16 or F16 values, values that overflow
/// F16), then random bit patterns and random values of weight size.
fn floats(n: usize, seed: u64) -> Vec<f32> {
    let mut v: Vec<f32> = [
        0x0000_0000u32,
        0x8000_0000,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000,
        0x7f80_0001,
        0xffbf_ffff,
        0x7fff_ffff,
        0x0000_0001,
        0x807f_ffff,
        0x3f80_8000,
        0x3f81_8000,
        0x3f80_8001,
        0x7f7f_ffff,
        0x477f_f000,
        0x477f_e000,
        0x3380_0000,
        0x3300_0001,
        0x3880_1000,
    ]
    .iter()
    .map(|&b| f32::from_bits(b))
    .collect();
    let mut rng = Rng(seed);
    while v.len() < n {
        let r = rng.next();
        v.push(match r % 3 {
            0 => f32::from_bits((r >> 32) as u32),
            1 => ((r >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32 * 0.1,
            _ => -0.0,
        });
    }
    v.truncate(n);
    v
}

const LENGTHS: [usize; 9] = [0, 1, 7, 8, 9, 31, 33, 257, 4099];

#[test]
fn bulk_bf16_and_f16_decoding_matches_half_bit_for_bit() {
    for n in LENGTHS {
        let words = words16(n.max(25), n as u64 + 1);
        let bytes = bytes16(&words[..n]);
        let mut fast = vec![0f32; n];
        let mut fast16 = vec![0f32; n];
        f32::decode_into(&bytes, FloatType::BF16, &mut fast);
        f32::decode_into(&bytes, FloatType::F16, &mut fast16);
        for (i, &w) in words[..n].iter().enumerate() {
            assert_eq!(
                fast[i].to_bits(),
                bf16::from_bits(w).to_f32().to_bits(),
                "{w:#06x}"
            );
            assert_eq!(
                fast16[i].to_bits(),
                f16::from_bits(w).to_f32().to_bits(),
                "{w:#06x}"
            );
        }
    }
}

#[test]
fn bulk_bf16_and_f16_encoding_matches_half_bit_for_bit() {
    for n in LENGTHS {
        let values = floats(n.max(19), n as u64 + 7);
        let values = &values[..n];
        let mut fast = vec![0u8; 2 * n];
        let mut fast16 = vec![0u8; 2 * n];
        f32::encode_into(values, FloatType::BF16, &mut fast);
        f32::encode_into(values, FloatType::F16, &mut fast16);
        for (i, &v) in values.iter().enumerate() {
            let b = u16::from_le_bytes([fast[2 * i], fast[2 * i + 1]]);
            let h = u16::from_le_bytes([fast16[2 * i], fast16[2 * i + 1]]);
            assert_eq!(b, bf16::from_f32(v).to_bits(), "{:#010x}", v.to_bits());
            assert_eq!(h, f16::from_f32(v).to_bits(), "{:#010x}", v.to_bits());
        }
    }
}

/// The mean step as it was: decode element by element with `half`, then
/// [`Accumulator::fold`].
fn fold_reference<A: Accumulator>(acc: &mut [A], bytes: &[u8], ty: FloatType, c: A) {
    let mut x = Vec::new();
    A::decode(bytes, ty, &mut x);
    let mut old = vec![A::ZERO; acc.len()];
    decode_reference(bytes, ty, &mut old);
    assert!(x.len() == old.len());
    A::fold(acc, &old, c);
}

fn decode_reference<A: Accumulator>(bytes: &[u8], ty: FloatType, out: &mut [A]) {
    let size = ty.size();
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(size)) {
        let v = match ty {
            FloatType::BF16 => bf16::from_le_bytes([c[0], c[1]]).to_f64(),
            FloatType::F16 => f16::from_le_bytes([c[0], c[1]]).to_f64(),
            FloatType::F32 => f32::from_le_bytes(c.try_into().unwrap()) as f64,
            FloatType::F64 => f64::from_le_bytes(c.try_into().unwrap()),
        };
        *o = A::from_f64(v);
    }
}

#[test]
fn merge_folds_of_bf16_f16_and_f64_match_the_element_by_element_mean() {
    for n in LENGTHS {
        for ty in [FloatType::BF16, FloatType::F16] {
            let inputs: Vec<Vec<u8>> = (0..4)
                .map(|k| bytes16(&words16(n.max(25), 31 * k + n as u64)[..n]))
                .collect();
            for c in [1.0f32, 0.5, 1.0 / 3.0, 0.25] {
                let mut fast = vec![0f32; n];
                let mut plain = vec![0f32; n];
                f32::decode_into(&inputs[0], ty, &mut fast);
                decode_reference(&inputs[0], ty, &mut plain);
                for input in &inputs[1..] {
                    let mut x = vec![0f32; n];
                    f32::fold_encoded(&mut fast, input, ty, c, &mut x);
                    fold_reference(&mut plain, input, ty, c);
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&fast), bits(&plain), "{ty:?} x {n}, c = {c}");
            }
        }
        let inputs: Vec<Vec<u8>> = (0..3)
            .map(|k| {
                let mut rng = Rng(k + 99 + n as u64);
                let mut v: Vec<f64> = vec![0.0, -0.0, f64::NAN, f64::INFINITY, -f64::INFINITY];
                v.extend((0..n).map(|_| f64::from_bits(rng.next())));
                v[..n].iter().flat_map(|x| x.to_le_bytes()).collect()
            })
            .collect();
        let mut fast = vec![0f64; n];
        let mut plain = vec![0f64; n];
        f64::decode_into(&inputs[0], FloatType::F64, &mut fast);
        decode_reference(&inputs[0], FloatType::F64, &mut plain);
        for input in &inputs[1..] {
            let mut x = vec![0f64; n];
            f64::fold_encoded(&mut fast, input, FloatType::F64, 0.5, &mut x);
            fold_reference(&mut plain, input, FloatType::F64, 0.5);
        }
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fast), bits(&plain), "F64 x {n}");
    }
}

/// The mask as the generic path computes it: one element at a time.
fn mask_reference(bytes: &[u8], ty: FloatType) -> (Vec<u8>, u64) {
    let n = bytes.len() / ty.size();
    let mut plain = vec![0u8; n.div_ceil(8)];
    let mut count = 0;
    for_each_nonzero(bytes, ty, |i, v| {
        plain[i / 8] |= (v as u8) << (i % 8);
        count += v as u64;
    });
    (plain, count)
}

#[test]
fn bulk_masks_of_bf16_f16_and_f64_match_the_element_by_element_mask() {
    for n in LENGTHS.into_iter().chain([32, 64, 96, 1000]) {
        let words = words16(n.max(25), 5 + n as u64);
        // Rotated so that the specials fall in every lane of a vector.
        for rot in [0, 1, 13] {
            let mut w = words[..n.max(25)].to_vec();
            w.rotate_left(rot);
            let bytes = bytes16(&w[..n]);
            for ty in [FloatType::BF16, FloatType::F16] {
                let mut fast = Vec::new();
                let nz = pack_mask(&bytes, ty, &mut fast);
                assert_eq!((fast, nz), mask_reference(&bytes, ty), "{ty:?} x {n}");
            }
            // F64: the same specials widened, and bit patterns that are zero
            // only in the low or only in the high half.
            let mut rng = Rng(n as u64 + rot as u64 + 3);
            let bytes: Vec<u8> = w[..n]
                .iter()
                .flat_map(|&x| {
                    let v = match rng.next() % 4 {
                        0 => bf16::from_bits(x).to_f64().to_bits(),
                        1 => 1u64 << (rng.next() % 64),
                        2 => rng.next() & 0xffff_ffff,
                        _ => 0,
                    };
                    v.to_le_bytes()
                })
                .collect();
            let mut fast = Vec::new();
            let nz = pack_mask(&bytes, FloatType::F64, &mut fast);
            assert_eq!(
                (fast, nz),
                mask_reference(&bytes, FloatType::F64),
                "F64 x {n}"
            );
        }
    }
}
