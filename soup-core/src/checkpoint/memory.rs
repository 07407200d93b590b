//! Checkpoints held in memory: tensors a program holds (a state dict, a
//! model's arrays) seen as a [`Checkpoint`], so that the in-memory front
//! ends of merging and pruning run the very code of the file front ends.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{Backing, Checkpoint, Shard, TensorEntry};
use crate::error::{Error, Result};
use crate::header;
use crate::output::TensorBytes;

impl Checkpoint {
    /// A checkpoint holding a copy of `tensors`, in the order given (the
    /// storage order that pruning's tie-break follows). `label` stands for
    /// its path in errors and reports ("state dict 1"). Each tensor is
    /// placed at a multiple of 8 bytes, so [`Checkpoint::array`] views of
    /// it are never copied again. A name given twice, the reserved
    /// metadata name, or data whose length does not fit the shape is an
    /// error naming `label` and the tensor.
    pub fn from_tensors(label: &str, tensors: &[TensorBytes<'_>]) -> Result<Checkpoint> {
        let path = PathBuf::from(label);
        let mut entries = Vec::with_capacity(tensors.len());
        let mut offset = 0usize;
        for t in tensors {
            header::check_output_name(&path, t.name)?;
            let n = header::element_count(t.shape)
                .and_then(|n| header::byte_len(t.dtype, n))
                .ok_or_else(|| {
                    Error::tensor(&path, t.name, format!("shape {:?} overflows", t.shape))
                })?;
            if t.data.len() != n {
                return Err(Error::tensor(
                    &path,
                    t.name,
                    format!(
                        "{} bytes of data for shape {:?} of {}, which needs {n}",
                        t.data.len(),
                        t.shape,
                        crate::dtype::name(t.dtype)
                    ),
                ));
            }
            entries.push(TensorEntry {
                name: t.name.to_string(),
                dtype: t.dtype,
                shape: t.shape.to_vec(),
                shard: 0,
                range: offset..offset + n,
            });
            offset = (offset + n)
                .checked_next_multiple_of(8)
                .ok_or_else(|| Error::tensor(&path, t.name, "too large"))?;
        }
        let mut words = vec![0u64; offset / 8];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        for (t, e) in tensors.iter().zip(&entries) {
            bytes[e.range.clone()].copy_from_slice(t.data);
        }
        let mut ck = Checkpoint {
            path: path.clone(),
            shards: vec![Shard {
                path,
                backing: Backing::Memory(words, offset),
            }],
            index: None,
            tensors: entries,
            by_name: Vec::new(),
            metadata: BTreeMap::new(),
        };
        ck.index_names().map_err(|_| {
            let mut names: Vec<&str> = tensors.iter().map(|t| t.name).collect();
            names.sort_unstable();
            let twice = names.windows(2).find(|w| w[0] == w[1]).map_or("", |w| w[0]);
            Error::tensor(&ck.path, twice, "given twice")
        })?;
        Ok(ck)
    }

    /// Whether the checkpoint is held in memory
    /// ([`Checkpoint::from_tensors`]) rather than read from files.
    pub fn in_memory(&self) -> bool {
        self.shards
            .iter()
            .all(|s| matches!(s.backing, Backing::Memory(..)))
            && !self.shards.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::Dtype;

    fn bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn tensors_in_memory_keep_their_order_bytes_and_alignment() {
        let a = bytes(&[1.0, 0.0, 3.0]);
        let b = vec![7u8];
        let c = bytes(&[5.0, 6.0]);
        let ck = Checkpoint::from_tensors(
            "state dict 0",
            &[
                TensorBytes {
                    name: "z.weight",
                    dtype: Dtype::F32,
                    shape: &[3],
                    data: &a,
                },
                TensorBytes {
                    name: "flag",
                    dtype: Dtype::U8,
                    shape: &[],
                    data: &b,
                },
                TensorBytes {
                    name: "a.bias",
                    dtype: Dtype::F32,
                    shape: &[2],
                    data: &c,
                },
            ],
        )
        .unwrap();
        let names: Vec<&str> = ck.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["z.weight", "flag", "a.bias"]);
        assert_eq!(ck.data(ck.get("z.weight").unwrap()), &a[..]);
        assert_eq!(ck.data(ck.get("flag").unwrap()), &b[..]);
        assert_eq!(ck.data(ck.get("a.bias").unwrap()), &c[..]);
        assert!(ck.tensors().iter().all(|t| t.range.start % 8 == 0));
        assert!(ck.in_memory() && !ck.is_sharded());
        ck.check_unchanged().unwrap();
        let view = ck.array::<f32>("a.bias").unwrap();
        assert!(view.is_view(), "aligned data is not copied");
    }

    #[test]
    fn bad_tensors_in_memory_are_errors_naming_the_label_and_tensor() {
        let a = bytes(&[1.0, 2.0]);
        let twice = [
            TensorBytes {
                name: "w",
                dtype: Dtype::F32,
                shape: &[2],
                data: &a,
            },
            TensorBytes {
                name: "w",
                dtype: Dtype::F32,
                shape: &[2],
                data: &a,
            },
        ];
        let e = Checkpoint::from_tensors("state dict 1", &twice)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("state dict 1") && e.contains("`w`") && e.contains("twice"),
            "{e}"
        );
        let short = [TensorBytes {
            name: "w",
            dtype: Dtype::F32,
            shape: &[3],
            data: &a,
        }];
        let e = Checkpoint::from_tensors("state dict 1", &short)
            .unwrap_err()
            .to_string();
        assert!(e.contains("state dict 1") && e.contains("8 bytes"), "{e}");
    }
}
