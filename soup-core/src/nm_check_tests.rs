use proptest::prelude::*;

use super::*;
use crate::output::write_test_checkpoint;
use crate::stream::StreamOptions;

fn f32_bytes(w: &[f32]) -> Vec<u8> {
    w.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The check by its definition: every group, listed by the element indices
/// of its members, counted directly.
fn reference(w: &[f32], shape: &[usize], transposed: bool, n: usize, m: usize) -> NmCount {
    let mut count = NmCount::default();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    if transposed {
        let (rows, cols) = (shape[0], shape[1]);
        for g in 0..rows / m {
            for o in 0..cols {
                groups.push((0..m).map(|j| (g * m + j) * cols + o).collect());
            }
        }
    } else {
        let trailing: usize = shape[2..].iter().product();
        for o in 0..shape[0] {
            for g in 0..shape[1] / m {
                for t in 0..trailing {
                    groups.push(
                        (0..m)
                            .map(|j| (o * shape[1] + g * m + j) * trailing + t)
                            .collect(),
                    );
                }
            }
        }
    }
    for g in &groups {
        count.groups += 1;
        if g.iter().filter(|&&i| w[i] != 0.0).count() > n {
            count.violating += 1;
            let first = g[0] as u64;
            count.first_violation = Some(count.first_violation.map_or(first, |f| f.min(first)));
        }
    }
    count
}

fn control(budget: usize, piece: usize) -> Control<'static> {
    Control {
        options: StreamOptions {
            budget_bytes: budget,
            piece_elems: piece,
        },
        ..Control::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Every group is counted once and the first violation is the first in
    /// row-major order, whatever the pieces and windows, for linear, conv
    /// and transposed layouts.
    #[test]
    fn counts_match_the_definition_in_any_stream_layout(
        out in 1usize..6,
        groups in 1usize..5,
        trailing in prop::sample::select(vec![vec![], vec![3], vec![2, 3]]),
        transposed in any::<bool>(),
        pattern in prop::sample::select(vec![(2u32, 4u32), (1, 4), (1, 2), (3, 8)]),
        density in 0.2f64..0.9,
        seed in any::<u64>(),
        layout in prop::sample::select(vec![(64usize << 20, 1usize << 18), (96, 8), (400, 16), (1000, 40)]),
    ) {
        let (n, m) = pattern;
        let transposed = transposed && trailing.is_empty();
        let mut shape = if transposed {
            vec![groups * m as usize, out]
        } else {
            vec![out, groups * m as usize]
        };
        shape.extend(&trailing);
        let numel: usize = shape.iter().product();
        let mut state = seed | 1;
        let w: Vec<f32> = (0..numel)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if (state % 1000) as f64 / 1000.0 < density { 1.0 + i as f32 } else if state % 2 == 0 { -0.0 } else { 0.0 }
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        write_test_checkpoint(
            &path,
            &[("l.weight".into(), safetensors::Dtype::F32, shape.clone(), f32_bytes(&w))],
        );
        let ck = Checkpoint::open(&path).unwrap();
        let pattern = NmPattern::new(n, m).unwrap();
        let transposed_names = if transposed { vec!["^l\\.".to_string()] } else { vec![] };
        let rule = NmRule::new(pattern, &[], &[], &transposed_names).unwrap();
        let report = check_nm(&ck, &rule, None, &control(layout.0, layout.1)).unwrap();
        let want = reference(&w, &shape, transposed, n as usize, m as usize);
        let t = &report.tensors[0];
        prop_assert_eq!(t.groups, want.groups);
        prop_assert_eq!(t.violating, want.violating);
        prop_assert_eq!(t.first_violation, want.first_violation);
        prop_assert_eq!(t.passed, want.violating == 0);
        prop_assert_eq!(report.passed, want.violating == 0);
        if let Some(f) = want.first_violation {
            let at = t.first_violation_at.clone().unwrap();
            let strides: Vec<usize> = (0..shape.len()).map(|d| shape[d + 1..].iter().product()).collect();
            prop_assert_eq!(at.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>() as u64, f);
        }
    }
}

/// Ragged and rank-1 tensors that the rule selects fail with the reason;
/// unselected ones are not listed; a kernel's verdict makes a tensor fail
/// too.
#[test]
fn shape_problems_and_kernels_fail_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let two_four: Vec<f32> = (0..32 * 32)
        .map(|i| if i % 4 < 2 { 1.0 } else { 0.0 })
        .collect();
    write_test_checkpoint(
        &path,
        &[
            (
                "a.weight".into(),
                safetensors::Dtype::F32,
                vec![32, 32],
                f32_bytes(&two_four),
            ),
            (
                "conv1.weight".into(),
                safetensors::Dtype::F32,
                vec![2, 3],
                f32_bytes(&[1.0; 6]),
            ),
            (
                "a.bias".into(),
                safetensors::Dtype::F32,
                vec![4],
                f32_bytes(&[1.0; 4]),
            ),
        ],
    );
    let ck = Checkpoint::open(&path).unwrap();
    let rule = NmRule::standard("2:4".parse().unwrap());
    let report = check_nm(&ck, &rule, None, &Control::default()).unwrap();
    let names: Vec<&str> = report.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a.weight", "conv1.weight"]);
    assert!(report.tensors[0].passed);
    assert_eq!(report.tensors[0].groups, 32 * 8);
    let ragged = &report.tensors[1];
    assert!(!ragged.passed);
    assert!(ragged
        .shape_problem
        .as_ref()
        .unwrap()
        .contains("not a multiple of 4"));
    assert_eq!(
        (report.checked, report.failing, report.passed),
        (2, 1, false)
    );
    // CUTLASS stores F32 as 1:2: rows 0 and 1 of each group of 4 are both
    // kept, so the tensor is 2:4 but not what CUTLASS takes.
    let only_a = NmRule::new("2:4".parse().unwrap(), &["^a\\.weight$".into()], &[], &[]).unwrap();
    let cutlass = check_nm(
        &ck,
        &only_a,
        Some(SemiStructuredKernel::Cutlass),
        &Control::default(),
    )
    .unwrap();
    assert!(!cutlass.passed);
    assert!(cutlass.tensors[0].kernel.as_ref().unwrap().problems[0].contains("1:2"));
    let cusparselt = check_nm(
        &ck,
        &only_a,
        Some(SemiStructuredKernel::Cusparselt),
        &Control::default(),
    )
    .unwrap();
    assert!(!cusparselt.passed, "cuSPARSELt takes no F32");
    assert_eq!(unravel(&[2, 3, 4], 23), vec![1, 2, 3]);
}
