//! Typed views of tensors as `ndarray` arrays, for Rust programs that work
//! on checkpoints in memory.
//!
//! [`Checkpoint::array`] hands out a tensor as an [`ndarray::CowArray`] of
//! its element type: a zero-copy view of the memory-mapped bytes when they
//! are aligned for the type (safetensors stores little-endian data at
//! offsets chosen by the writer; files written by `soup` and by the
//! `safetensors` libraries align every tensor to 8 bytes when they can, but
//! nothing in the format requires it), and an owned copy otherwise or on a
//! big-endian machine. Either way the array has the tensor's shape in
//! row-major (C) order.
//!
//! ```no_run
//! use soup_core::Checkpoint;
//!
//! # fn main() -> soup_core::Result<()> {
//! let model = Checkpoint::open("model.safetensors")?;
//! let w = model.array::<f32>("fc.weight")?;
//! let sparsity = w.iter().filter(|v| **v == 0.0).count() as f64 / w.len() as f64;
//! println!("fc.weight {:?}: {:.1} % zeros", w.shape(), 100.0 * sparsity);
//! # Ok(())
//! # }
//! ```

use ndarray::{ArrayD, ArrayViewD, CowArray, IxDyn};
use safetensors::Dtype;

use crate::checkpoint::{Checkpoint, TensorEntry};
use crate::error::{Error, Result};

/// An element type a tensor can be viewed as: the Rust type of one
/// safetensors dtype.
pub trait Element: bytemuck::Pod + Copy + 'static {
    /// The safetensors dtype whose elements are this type.
    const DTYPE: Dtype;

    /// The value stored little-endian in `bytes` (exactly
    /// `size_of::<Self>()` long).
    fn from_le(bytes: &[u8]) -> Self;
}

macro_rules! element {
    ($($t:ty => $dtype:ident),* $(,)?) => {$(
        impl Element for $t {
            const DTYPE: Dtype = Dtype::$dtype;
            fn from_le(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("one element"))
            }
        }
    )*};
}

element!(
    f64 => F64, f32 => F32, half::f16 => F16, half::bf16 => BF16,
    i64 => I64, i32 => I32, i16 => I16, i8 => I8,
    u64 => U64, u32 => U32, u16 => U16, u8 => U8,
);

impl Checkpoint {
    /// The tensor `name` as an array of `T`: borrowed from the memory map
    /// when its bytes are aligned for `T` on a little-endian machine, copied
    /// otherwise. An error names the file and the tensor when there is no
    /// such tensor or its dtype is not `T`'s.
    pub fn array<T: Element>(&self, name: &str) -> Result<CowArray<'_, T, IxDyn>> {
        let tensor = self
            .get(name)
            .ok_or_else(|| Error::tensor(self.path(), name, "no such tensor in the checkpoint"))?;
        self.tensor_array(tensor)
    }

    /// [`Checkpoint::array`] for a tensor entry of this checkpoint.
    pub fn tensor_array<T: Element>(&self, tensor: &TensorEntry) -> Result<CowArray<'_, T, IxDyn>> {
        if tensor.dtype != T::DTYPE {
            return Err(Error::tensor(
                self.file_of(tensor),
                &tensor.name,
                format!("is {:?}, not {:?}", tensor.dtype, T::DTYPE),
            ));
        }
        let bytes = self.data(tensor);
        let shape = IxDyn(&tensor.shape);
        let borrowed = cfg!(target_endian = "little")
            .then(|| bytemuck::try_cast_slice::<u8, T>(bytes).ok())
            .flatten();
        let array = match borrowed {
            Some(values) => CowArray::from(
                ArrayViewD::from_shape(shape, values).expect("header checked: shape matches"),
            ),
            None => {
                let values = bytes
                    .chunks_exact(std::mem::size_of::<T>())
                    .map(T::from_le)
                    .collect();
                CowArray::from(
                    ArrayD::from_shape_vec(shape, values).expect("header checked: shape matches"),
                )
            }
        };
        Ok(array)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A safetensors file with the tensors `(name, dtype, shape, bytes)`
    /// after a U8 tensor of `pad` bytes (none for 0).
    fn write(path: &Path, tensors: &[(&str, &str, Vec<usize>, Vec<u8>)], pad: usize) {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        let padding = ("pad", "U8", vec![pad], vec![0u8; pad]);
        let first = (pad > 0).then_some(&padding);
        for (name, dtype, shape, bytes) in first.into_iter().chain(tensors) {
            let start = data.len();
            data.extend_from_slice(bytes);
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
            );
        }
        let mut text = serde_json::to_string(&header).unwrap();
        while !text.len().is_multiple_of(8) {
            text.push(' ');
        }
        let mut file = (text.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(text.as_bytes());
        file.extend_from_slice(&data);
        std::fs::write(path, file).unwrap();
    }

    fn le<T: Copy>(values: &[T], f: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
        values.iter().flat_map(|&v| f(v)).collect()
    }

    #[test]
    fn aligned_tensors_are_views_of_the_map_and_unaligned_ones_copies() {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<f32> = (0..6).map(|i| i as f32 - 2.5).collect();
        let bytes = le(&values, |v| v.to_le_bytes().to_vec());
        for (pad, borrowed) in [(0, true), (1, false)] {
            let path = dir.path().join(format!("m{pad}.safetensors"));
            write(&path, &[("w", "F32", vec![2, 3], bytes.clone())], pad);
            let model = Checkpoint::open(&path).unwrap();
            let w = model.array::<f32>("w").unwrap();
            assert_eq!(w.shape(), &[2, 3]);
            assert_eq!(w.is_view(), borrowed, "pad {pad}");
            assert_eq!(w[[1, 2]], 2.5);
            assert_eq!(w.iter().copied().collect::<Vec<_>>(), values);
        }
    }

    #[test]
    fn every_numeric_dtype_reads_its_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let halves = [half::f16::from_f32(-1.5), half::f16::from_f32(0.25)];
        let brains = [half::bf16::from_f32(3.0), half::bf16::from_f32(-0.0)];
        write(
            &path,
            &[
                (
                    "d",
                    "F64",
                    vec![2],
                    le(&[1.0f64, -2.0], |v| v.to_le_bytes().to_vec()),
                ),
                (
                    "h",
                    "F16",
                    vec![2],
                    le(&halves, |v| v.to_le_bytes().to_vec()),
                ),
                (
                    "b",
                    "BF16",
                    vec![1, 2],
                    le(&brains, |v| v.to_le_bytes().to_vec()),
                ),
                (
                    "i",
                    "I64",
                    vec![2],
                    le(&[-7i64, 9], |v| v.to_le_bytes().to_vec()),
                ),
                ("u", "U8", vec![3], vec![1, 2, 255]),
            ],
            0,
        );
        let model = Checkpoint::open(&path).unwrap();
        assert_eq!(
            model.array::<f64>("d").unwrap().as_slice().unwrap(),
            &[1.0, -2.0]
        );
        assert_eq!(
            model.array::<half::f16>("h").unwrap().as_slice().unwrap(),
            &halves
        );
        assert_eq!(model.array::<half::bf16>("b").unwrap().shape(), &[1, 2]);
        assert_eq!(
            model.array::<i64>("i").unwrap().as_slice().unwrap(),
            &[-7, 9]
        );
        assert_eq!(
            model.array::<u8>("u").unwrap().as_slice().unwrap(),
            &[1, 2, 255]
        );
    }

    #[test]
    fn a_wrong_type_or_name_names_the_file_and_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        write(
            &path,
            &[("w", "F32", vec![1], 1f32.to_le_bytes().to_vec())],
            0,
        );
        let model = Checkpoint::open(&path).unwrap();
        let err = model.array::<f64>("w").unwrap_err().to_string();
        assert!(
            err.contains("m.safetensors") && err.contains("`w`") && err.contains("not F64"),
            "{err}"
        );
        let err = model.array::<f32>("v").unwrap_err().to_string();
        assert!(
            err.contains("`v`") && err.contains("no such tensor"),
            "{err}"
        );
    }
}
