use proptest::prelude::*;

use super::*;

/// The groups of a tensor by its definition: the element indices of every
/// group, listed by (output position, group along the input dimension,
/// trailing position), each a list of M row-major indices.
fn reference_groups(shape: &[usize], transposed: bool, m: usize) -> Vec<Vec<u64>> {
    let strides: Vec<usize> = (0..shape.len())
        .map(|d| shape[d + 1..].iter().product())
        .collect();
    let mut groups = Vec::new();
    if transposed {
        let (rows, cols) = (shape[0], shape[1]);
        for g in 0..rows / m {
            for o in 0..cols {
                groups.push((0..m).map(|j| ((g * m + j) * cols + o) as u64).collect());
            }
        }
        return groups;
    }
    let trailing: usize = shape[2..].iter().product();
    for o in 0..shape[0] {
        for g in 0..shape[1] / m {
            for t in 0..trailing {
                groups.push(
                    (0..m)
                        .map(|j| (o * strides[0] + (g * m + j) * strides[1] + t) as u64)
                        .collect(),
                );
            }
        }
    }
    groups
}

fn geometry_groups(geometry: &NmGeometry) -> Vec<Vec<u64>> {
    (0..geometry.groups())
        .map(|g| (0..geometry.m()).map(|j| geometry.element(g, j)).collect())
        .collect()
}

fn sorted(mut groups: Vec<Vec<u64>>) -> Vec<Vec<u64>> {
    groups.sort();
    groups
}

#[test]
fn patterns_parse_and_print() {
    let p: NmPattern = "2:4".parse().unwrap();
    assert_eq!((p.n(), p.m()), (2, 4));
    assert_eq!(p.to_string(), "2:4");
    assert_eq!(
        " 1 : 8 ".parse::<NmPattern>().unwrap(),
        NmPattern::new(1, 8).unwrap()
    );
    for bad in ["0:4", "4:4", "5:4", "1:33", "2", "2:x", "", "2:4:8", "-1:4"] {
        let err = bad.parse::<NmPattern>().unwrap_err().to_string();
        assert!(
            err.contains("N:M") || err.contains("1 <= N < M"),
            "{bad}: {err}"
        );
    }
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(json, "\"2:4\"");
    assert_eq!(serde_json::from_str::<NmPattern>(&json).unwrap(), p);
}

#[test]
fn linear_groups_are_runs_of_a_row() {
    let g = NmGeometry::new(&[3, 8], false, 4).unwrap();
    assert_eq!((g.groups(), g.unit_len(), g.stride()), (6, 4, 1));
    assert_eq!(geometry_groups(&g)[1], vec![4, 5, 6, 7]);
}

#[test]
fn conv_groups_run_along_input_channels() {
    // [out 2, in 4, kh 3, kw 3]: group of (o=0, y=0, x=1) is channels 0..4 at
    // offsets 1, 10, 19, 28.
    let g = NmGeometry::new(&[2, 4, 3, 3], false, 4).unwrap();
    assert_eq!(g.stride(), 9);
    assert_eq!(geometry_groups(&g)[1], vec![1, 10, 19, 28]);
}

#[test]
fn transposed_groups_run_along_the_first_dimension() {
    let g = NmGeometry::new(&[8, 3], true, 4).unwrap();
    assert_eq!(geometry_groups(&g)[2], vec![2, 5, 8, 11]);
    assert_eq!(
        NmGeometry::new(&[8, 3, 1], true, 4),
        Err(NmShapeProblem::TransposedRank(3))
    );
}

#[test]
fn shapes_without_groups_are_named() {
    assert_eq!(
        NmGeometry::new(&[8], false, 4),
        Err(NmShapeProblem::Rank(1))
    );
    let ragged = NmGeometry::new(&[4, 6], false, 4).unwrap_err();
    assert_eq!(
        ragged,
        NmShapeProblem::Ragged {
            dim: 1,
            len: 6,
            m: 4
        }
    );
    assert_eq!(
        ragged.to_string(),
        "its input dimension (dimension 1, length 6) is not a multiple of 4"
    );
    assert!(NmGeometry::new(&[6, 4], true, 4).is_err());
    assert_eq!(NmGeometry::new(&[0, 8], false, 4).unwrap().groups(), 0);
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

proptest! {
    #[test]
    fn geometry_matches_the_definition(
        out in 1usize..5, groups in 1usize..4, m in 2u32..9,
        kernel in proptest::collection::vec(1usize..4, 0..3), transposed in any::<bool>(),
    ) {
        let len = groups * m as usize;
        let shape: Vec<usize> = if transposed {
            vec![len, out]
        } else {
            [vec![out, len], kernel].concat()
        };
        let g = NmGeometry::new(&shape, transposed, m).unwrap();
        let ours = geometry_groups(&g);
        // Every element lies in exactly one group.
        let mut all: Vec<u64> = ours.iter().flatten().copied().collect();
        all.sort();
        let numel: usize = shape.iter().product();
        prop_assert_eq!(all, (0..numel as u64).collect::<Vec<_>>());
        prop_assert_eq!(sorted(ours.clone()), sorted(reference_groups(&shape, transposed, m as usize)));
        // for_each_group lists the same groups, unit-relative.
        let mut listed = Vec::new();
        g.for_each_group(g.units() as usize, |group, offsets| {
            listed.push((group, offsets.iter().map(|&o| o as u64).collect::<Vec<_>>()));
        });
        for (group, offsets) in listed {
            prop_assert_eq!(&offsets, &ours[group as usize]);
        }
    }

    #[test]
    fn violations_are_counted_per_group(
        out in 1usize..5, groups in 1usize..4, m in 2u32..9, n_seed in 0u32..100,
        kernel in proptest::collection::vec(1usize..3, 0..2), transposed in any::<bool>(),
        density in 0.0f64..1.0, seed in any::<u64>(), split in 0usize..100,
    ) {
        let n = 1 + n_seed % (m - 1);
        let len = groups * m as usize;
        let shape: Vec<usize> = if transposed { vec![len, out] } else { [vec![out, len], kernel].concat() };
        let numel: usize = shape.iter().product();
        let mut state = seed | 1;
        let values: Vec<f32> = (0..numel).map(|i| {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            if (state % 1000) as f64 / 1000.0 < density { 1.0 + i as f32 } else if state % 2 == 0 { 0.0 } else { -0.0 }
        }).collect();
        let pattern = NmPattern::new(n, m).unwrap();
        let g = NmGeometry::new(&shape, transposed, m).unwrap();
        let reference = reference_groups(&shape, transposed, m as usize);
        let bad: Vec<u64> = reference.iter()
            .filter(|grp| grp.iter().filter(|&&i| values[i as usize] != 0.0).count() > n as usize)
            .map(|grp| grp[0]).collect();
        let whole = count_violations(&f32_bytes(&values), FloatType::F32, &g, pattern, 0);
        prop_assert_eq!(whole.groups, reference.len() as u64);
        prop_assert_eq!(whole.violating, bad.len() as u64);
        // The first violation in row-major group order of units.
        let first = (0..g.groups()).map(|gr| g.element(gr, 0))
            .find(|e| bad.contains(e));
        prop_assert_eq!(whole.first_violation, first);
        // Two ranges of whole units give the same count.
        let cut = (split as u64 % (g.units() + 1)) as usize * g.unit_len();
        let (a, b) = values.split_at(cut);
        let parts = count_violations(&f32_bytes(a), FloatType::F32, &g, pattern, 0)
            .then(count_violations(&f32_bytes(b), FloatType::F32, &g, pattern, (cut / g.unit_len()) as u64));
        prop_assert_eq!(parts, whole);
    }
}
