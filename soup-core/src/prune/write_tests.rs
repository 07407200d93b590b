//! The 16-bit pruning paths against the element-by-element ones, bit for
//! bit: [`prune_16`] against [`prune_keys`] with [`Key32`], and the
//! selection of BF16 and F16 tensors against that of the same values in
//! F32.

use half::{bf16, f16};

use super::*;
use crate::prune::score::Key32;
use crate::prune::source::TensorView;
use crate::prune::{prune_tensors, PruneOptions, Scope};
use crate::stream::{Control, StreamOptions};

fn rng(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Words with few distinct magnitudes (ties), zeros of both signs, NaNs,
/// infinities and subnormals of both BF16 and F16.
fn words(n: usize, seed: u64) -> Vec<u16> {
    let specials = [
        0x0000u16, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0x7f81, 0x0001, 0x8003, 0x7c00, 0xfc00, 0x7e00,
        0x7c01, 0x03ff, 0x7bff, 0x3c00, 0xbc00,
    ];
    let mut state = seed | 1;
    (0..n)
        .map(|_| {
            let r = rng(&mut state);
            match r % 5 {
                0 => specials[(r >> 8) as usize % specials.len()],
                1 => 0,
                2 => (0x3c00 + (r >> 12) % 8) as u16 | (r >> 4) as u16 & 0x8000,
                _ => (r >> 24) as u16,
            }
        })
        .collect()
}

fn same_sum(a: f64, b: f64, what: &str) {
    if a.is_nan() || b.is_nan() {
        assert!(a.is_nan() && b.is_nan(), "{what}: {a} against {b}");
    } else {
        assert_eq!(a.to_bits(), b.to_bits(), "{what}");
    }
}

/// The element-by-element form of [`prune_16`]: the square of every
/// element is added in storage order (`+0.0` for a kept one).
fn prune_16_serial(bytes: &[u8], ty: FloatType, thr: u32, mut budget: u64) -> Counts {
    let table = f16_keys();
    let mut c = Counts::default();
    for w in bytes.chunks_exact(2) {
        let k = key16(u16::from_le_bytes([w[0], w[1]]), ty, table);
        let nonzero = k != 0;
        let tie = (k == thr) & (budget > 0);
        let gone = nonzero & ((k < thr) | tie);
        budget -= (gone & tie) as u64;
        c.zeros_before += (!nonzero) as u64;
        c.removed += gone as u64;
        let m = f32::from_bits(k) as f64;
        c.sum_squares += if gone { m * m } else { 0.0 };
    }
    c
}

#[test]
fn prune_16_matches_prune_keys_bit_for_bit() {
    let table = f16_keys();
    for ty in [FloatType::BF16, FloatType::F16] {
        for (n, seed) in [
            (0usize, 1u64),
            (1, 2),
            (17, 3),
            (300, 4),
            (4096, 5),
            (2000, 6),
        ] {
            let w = words(n, seed);
            let bytes: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
            // Thresholds: 0, keys found in the data (NaN ones included)
            // and one above every key.
            let mut thrs: Vec<u32> = vec![0, u32::MAX >> 1];
            thrs.extend(w.iter().step_by(7).map(|&x| key16(x, ty, table)));
            for thr in thrs {
                // 200 and 1000 ties run over several blocks of the fast path.
                for budget in [0, 1, 3, 200, 1000, u64::MAX] {
                    let mut fast = vec![0u8; bytes.len()];
                    let got = prune_16(&bytes, ty, thr, budget, &mut fast);
                    let mut plain = bytes.clone();
                    let want = prune_keys(
                        &Key32,
                        (0, 0),
                        &bytes,
                        ty,
                        thr as u64,
                        budget,
                        Some(&mut plain),
                    );
                    let what = format!("{ty:?} x {n}, thr {thr:#x}, budget {budget}");
                    assert_eq!(fast, plain, "{what}");
                    assert_eq!(got.zeros_before, want.zeros_before, "{what}");
                    assert_eq!(got.removed, want.removed, "{what}");
                    // The element-by-element loop that the blocks replace
                    // gives the same bits, NaN sums included.
                    let serial = prune_16_serial(&bytes, ty, thr, budget);
                    assert_eq!(
                        got.sum_squares.to_bits(),
                        serial.sum_squares.to_bits(),
                        "{what}"
                    );
                    assert_eq!(
                        (got.zeros_before, got.removed),
                        (serial.zeros_before, serial.removed),
                        "{what}"
                    );
                    // Against prune_keys: the same bits, except that a sum
                    // made NaN by a removed NaN may be another NaN (the F16
                    // widening of prune_keys and the key table give NaNs of
                    // other payloads).
                    same_sum(got.sum_squares, want.sum_squares, &what);
                    // Counting only gives the same counts.
                    let counted = prune_16(&bytes, ty, thr, budget, &mut []);
                    assert_eq!(counted.removed, want.removed, "{what}");
                    assert_eq!(
                        counted.sum_squares.to_bits(),
                        got.sum_squares.to_bits(),
                        "{what}"
                    );
                }
            }
        }
    }
}

/// BF16 and F16 values convert exactly to F32 and keep their keys there,
/// so pruning them must remove exactly the elements that pruning the same
/// values stored as F32 removes: the 16-bit histogram passes (and the
/// single pass of a BF16-only group) cut where the F32 ones cut.
#[test]
fn bf16_and_f16_tensors_are_cut_where_their_f32_values_are() {
    for ty in [FloatType::BF16, FloatType::F16] {
        for (n, seed) in [(40usize, 11u64), (1000, 12), (5000, 13)] {
            // Finite values only: NaN payloads do not survive the F32 trip
            // unchanged for F16.
            let w: Vec<u16> = words(n, seed)
                .into_iter()
                .map(|x| {
                    let inf = if ty == FloatType::BF16 {
                        0x7f80
                    } else {
                        0x7c00
                    };
                    if x & inf == inf {
                        x & 0x83ff
                    } else {
                        x
                    }
                })
                .collect();
            let halves: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
            let singles: Vec<f32> = w
                .iter()
                .map(|&x| match ty {
                    FloatType::BF16 => bf16::from_bits(x).to_f32(),
                    _ => f16::from_bits(x).to_f32(),
                })
                .collect();
            for sparsity in [0.1, 0.5, 0.8, 0.95] {
                for scope in [Scope::Global, Scope::Layer] {
                    let options = PruneOptions {
                        sparsity,
                        scope,
                        ..Default::default()
                    };
                    let control = Control {
                        options: StreamOptions {
                            budget_bytes: 256,
                            piece_elems: 64,
                        },
                        ..Control::default()
                    };
                    let shape = [2, n / 2];
                    let half_views = vec![
                        TensorView::from_bytes("a.weight", &shape, ty, halves.clone()).unwrap(),
                        TensorView::from_bytes("b.weight", &shape, ty, halves.clone()).unwrap(),
                    ];
                    let single_views = vec![
                        TensorView::f32("a.weight", &shape, &singles).unwrap(),
                        TensorView::f32("b.weight", &shape, &singles).unwrap(),
                    ];
                    let got = prune_tensors(&half_views, &options, &control).unwrap();
                    let want = prune_tensors(&single_views, &options, &control).unwrap();
                    assert_eq!(got.masks, want.masks, "{ty:?} x {n} at {sparsity}");
                }
            }
        }
    }
}

/// The count of elements equal to the cut, on the 16-bit words, is the
/// count of [`Key32`] keys equal to it.
#[test]
fn count_equal_16_matches_the_keys() {
    for ty in [FloatType::BF16, FloatType::F16] {
        let w = words(3000, 21);
        let bytes: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
        let table = f16_keys();
        let mut thrs: Vec<u32> = vec![0, u32::MAX >> 1];
        thrs.extend(w.iter().step_by(13).map(|&x| key16(x, ty, table)));
        for thr in thrs {
            let mut want = 0u64;
            Key32.each(0, 0, &bytes, ty, |_, k| want += (k == thr as u64) as u64);
            let got = crate::prune::select::count_equal_16(&bytes, ty, thr);
            assert_eq!(got, want, "{ty:?} thr {thr:#x}");
        }
    }
}
