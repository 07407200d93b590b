//! The shape and dtype rules of PyTorch's semi-structured (2:4) sparse
//! kernels, so that a checkpoint can be checked for them without a GPU.
//!
//! The table is PyTorch 2.13's, from `torch/sparse/semi_structured.py`:
//! the class attribute `_DTYPE_SHAPE_CONSTRAINTS` of
//! `SparseSemiStructuredTensorCUTLASS` and of
//! `SparseSemiStructuredTensorCUSPARSELT` (one
//! `_SEMI_STRUCTURED_SPARSE_CONFIG(sparse_min_rows, sparse_min_cols,
//! dense_min_rows, dense_min_cols)` per dtype). The rule is
//! `SparseSemiStructuredTensor._validate_device_dim_dtype_shape`: the
//! tensor is 2-D, its dtype is in the kernel's table, and with
//! `(min_rows, min_cols)` the table's `sparse_min_rows` and
//! `sparse_min_cols`, `rows >= min_rows`, `rows % min_rows == 0`,
//! `cols >= min_cols` and `cols % min_cols == 0`. (The device check, CUDA
//! only, and the contiguity check concern the tensor in memory, not the
//! checkpoint.)
//!
//! # The 2-D matrix of a stored weight
//! The kernels multiply by the weight as `[out, in]` with the groups along
//! `in`, the last dimension. A linear weight `[out, in]` is that matrix. A
//! convolution weight `[out, in, k...]` becomes it after moving the input
//! channels last and flattening the rest (`w.permute(0, 2, ..., 1)
//! .reshape(-1, in)`, the layout in which NVIDIA's ASP groups its weights):
//! `[out * prod(k), in]`. A linear weight stored `[in, out]` (GPT-2's
//! `Conv1D`) is transposed: `[out, in]`.
//!
//! # The pattern the kernel stores
//! CUTLASS stores F32 as 1:2 (`torch/sparse/_semi_structured_conversions.py`,
//! `sparse_semi_structured_from_dense_cutlass`, `ksparse = 2` for
//! `torch.float`), every other dtype as 2:4. A tensor meets a kernel's
//! pattern when the checked pattern implies it: `n:m` implies `n':m'` when
//! `m'` is a multiple of `m` and `n' >= n * m' / m` (1:2 implies 2:4, not
//! the reverse).

use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use crate::nm::NmPattern;

vocabulary! {
    /// A semi-structured sparse kernel of PyTorch.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub enum SemiStructuredKernel ("semi-structured kernel") {
        /// `SparseSemiStructuredTensorCUTLASS`.
        Cutlass = "cutlass",
        /// `SparseSemiStructuredTensorCUSPARSELT` (the default of
        /// `to_sparse_semi_structured`).
        Cusparselt = "cusparselt",
    }
}

/// One row of a kernel's `_DTYPE_SHAPE_CONSTRAINTS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapeConstraint {
    /// `sparse_min_rows`: rows of the sparse matrix are a positive multiple.
    pub sparse_min_rows: usize,
    /// `sparse_min_cols`: columns of the sparse matrix are a positive multiple.
    pub sparse_min_cols: usize,
    /// `dense_min_rows` (of the dense operand; not checked here).
    pub dense_min_rows: usize,
    /// `dense_min_cols` (of the dense operand; not checked here).
    pub dense_min_cols: usize,
}

const fn config(sr: usize, sc: usize, dr: usize, dc: usize) -> ShapeConstraint {
    ShapeConstraint {
        sparse_min_rows: sr,
        sparse_min_cols: sc,
        dense_min_rows: dr,
        dense_min_cols: dc,
    }
}

/// `SparseSemiStructuredTensorCUTLASS._DTYPE_SHAPE_CONSTRAINTS`.
const CUTLASS: [(Dtype, ShapeConstraint); 4] = [
    (Dtype::I8, config(16, 128, 16, 16)),
    (Dtype::F16, config(32, 64, 8, 8)),
    (Dtype::BF16, config(32, 64, 8, 8)),
    (Dtype::F32, config(32, 32, 4, 4)),
];

/// `SparseSemiStructuredTensorCUSPARSELT._DTYPE_SHAPE_CONSTRAINTS`.
const CUSPARSELT: [(Dtype, ShapeConstraint); 4] = [
    (Dtype::F8_E4M3, config(32, 32, 16, 16)),
    (Dtype::I8, config(32, 32, 16, 16)),
    (Dtype::F16, config(16, 16, 8, 8)),
    (Dtype::BF16, config(16, 16, 8, 8)),
];

impl SemiStructuredKernel {
    /// Every kernel.
    pub const ALL: [SemiStructuredKernel; 2] = [
        SemiStructuredKernel::Cutlass,
        SemiStructuredKernel::Cusparselt,
    ];

    /// The kernel's name as parsed and printed (`cutlass`, `cusparselt`).
    pub fn name(self) -> &'static str {
        crate::vocab::Vocabulary::name(self)
    }

    /// The kernel's table: the dtypes it takes and their shape minimums.
    pub fn table(self) -> &'static [(Dtype, ShapeConstraint)] {
        match self {
            SemiStructuredKernel::Cutlass => &CUTLASS,
            SemiStructuredKernel::Cusparselt => &CUSPARSELT,
        }
    }

    /// The shape minimums for `dtype`, or `None` when the kernel does not
    /// take it.
    pub fn constraint(self, dtype: Dtype) -> Option<ShapeConstraint> {
        self.table()
            .iter()
            .find(|(d, _)| *d == dtype)
            .map(|(_, c)| *c)
    }

    /// The pattern the kernel stores `dtype` in: 1:2 for F32 under CUTLASS,
    /// 2:4 otherwise.
    pub fn pattern(self, dtype: Dtype) -> NmPattern {
        let (n, m) = match (self, dtype) {
            (SemiStructuredKernel::Cutlass, Dtype::F32) => (1, 2),
            _ => (2, 4),
        };
        NmPattern::new(n, m).expect("a valid pattern")
    }
}

/// The 2-D `[rows, cols]` matrix a kernel sees for a weight of `shape`
/// (see the module documentation); `None` below rank 2, or for a
/// transposed tensor of another rank than 2.
pub fn kernel_matrix(shape: &[usize], transposed: bool) -> Option<[usize; 2]> {
    match (shape.len(), transposed) {
        (2, true) => Some([shape[1], shape[0]]),
        (r, false) if r >= 2 => {
            let cols = shape[1];
            let rows = shape[0] * shape[2..].iter().product::<usize>();
            Some([rows, cols])
        }
        _ => None,
    }
}

/// Whether every tensor with pattern `checked` also has pattern `needed`.
pub fn implies(checked: NmPattern, needed: NmPattern) -> bool {
    needed.m() % checked.m() == 0 && needed.n() >= checked.n() * (needed.m() / checked.m())
}

/// Whether one tensor meets a kernel's rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelCheck {
    /// The kernel.
    pub kernel: SemiStructuredKernel,
    /// The 2-D matrix the kernel would see, `[rows, cols]`.
    pub matrix: Option<[usize; 2]>,
    /// Why the kernel cannot take the tensor (empty when it can).
    pub problems: Vec<String>,
    /// Whether the kernel takes it.
    pub passed: bool,
}

/// Checks a tensor of `dtype` and `shape` (grouped along its first
/// dimension when `transposed`) against `kernel`'s rules, given that its
/// values were checked to follow `checked`.
pub fn check_kernel(
    kernel: SemiStructuredKernel,
    dtype: Dtype,
    shape: &[usize],
    transposed: bool,
    checked: NmPattern,
) -> KernelCheck {
    let matrix = kernel_matrix(shape, transposed);
    let mut problems = Vec::new();
    let dtype_name = crate::dtype::name(dtype);
    let constraint = kernel.constraint(dtype);
    if constraint.is_none() {
        let known: Vec<String> = kernel
            .table()
            .iter()
            .map(|(d, _)| crate::dtype::name(*d))
            .collect();
        problems.push(format!(
            "dtype {dtype_name} is not in the {kernel} table ({})",
            known.join(", ")
        ));
    }
    match (matrix, constraint) {
        (None, _) => problems.push(format!(
            "a rank-{} tensor{} has no 2-D matrix form",
            shape.len(),
            if transposed { " stored [in, out]" } else { "" }
        )),
        (Some([rows, cols]), Some(c)) => {
            let mut dim = |what: &str, len: usize, min: usize| {
                if len < min || len % min != 0 {
                    problems.push(format!(
                        "{what} {len} is not a positive multiple of {min} ({kernel}, {dtype_name})"
                    ));
                }
            };
            dim("rows", rows, c.sparse_min_rows);
            dim("columns", cols, c.sparse_min_cols);
        }
        (Some(_), None) => {}
    }
    let needed = kernel.pattern(dtype);
    if constraint.is_some() && !implies(checked, needed) {
        problems.push(format!(
            "{kernel} stores {dtype_name} as {needed}, which a {checked} check does not show"
        ));
    }
    KernelCheck {
        kernel,
        matrix,
        passed: problems.is_empty(),
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nm(s: &str) -> NmPattern {
        s.parse().unwrap()
    }

    #[test]
    fn kernels_parse_and_print() {
        for k in SemiStructuredKernel::ALL {
            assert_eq!(k.name().parse::<SemiStructuredKernel>().unwrap(), k);
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.name())
            );
        }
        assert!("cusparse".parse::<SemiStructuredKernel>().is_err());
    }

    #[test]
    fn matrices_put_the_grouped_dimension_last() {
        assert_eq!(kernel_matrix(&[64, 128], false), Some([64, 128]));
        assert_eq!(kernel_matrix(&[128, 64], true), Some([64, 128]));
        assert_eq!(kernel_matrix(&[64, 32, 3, 3], false), Some([576, 32]));
        assert_eq!(kernel_matrix(&[64], false), None);
        assert_eq!(kernel_matrix(&[4, 4, 4], true), None);
    }

    #[test]
    fn patterns_imply_coarser_ones() {
        assert!(implies(nm("2:4"), nm("2:4")));
        assert!(implies(nm("1:2"), nm("2:4")));
        assert!(implies(nm("1:4"), nm("2:4")));
        assert!(!implies(nm("2:4"), nm("1:2")));
        assert!(!implies(nm("2:8"), nm("2:4")));
        assert!(!implies(nm("3:4"), nm("2:4")));
    }

    #[test]
    fn the_rule_of_validate_device_dim_dtype_shape() {
        let cutlass = SemiStructuredKernel::Cutlass;
        let cusparselt = SemiStructuredKernel::Cusparselt;
        let ok = |k, d, s: &[usize], p| check_kernel(k, d, s, false, nm(p)).passed;
        assert!(ok(cutlass, Dtype::F16, &[32, 64], "2:4"));
        assert!(ok(cutlass, Dtype::F16, &[96, 192], "2:4"));
        assert!(!ok(cutlass, Dtype::F16, &[32, 32], "2:4"));
        assert!(!ok(cutlass, Dtype::F16, &[48, 64], "2:4"));
        assert!(ok(cusparselt, Dtype::BF16, &[16, 16], "2:4"));
        assert!(!ok(cusparselt, Dtype::F32, &[64, 64], "2:4"));
        assert!(!ok(cutlass, Dtype::F64, &[64, 64], "2:4"));
        // F32 under CUTLASS is stored 1:2.
        assert!(!ok(cutlass, Dtype::F32, &[64, 64], "2:4"));
        assert!(ok(cutlass, Dtype::F32, &[64, 64], "1:2"));
        // A conv weight after moving the input channels last.
        assert!(ok(cusparselt, Dtype::F16, &[16, 32, 3, 3], "2:4"));
        assert!(!ok(cusparselt, Dtype::F16, &[16, 8, 3, 3], "2:4"));
        let c = check_kernel(cutlass, Dtype::F64, &[8], false, nm("2:4"));
        assert_eq!(c.problems.len(), 2, "{:?}", c.problems);
        assert!(c.problems[0].contains("not in the cutlass table"));
    }
}
