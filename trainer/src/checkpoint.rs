//! Reading and writing safetensors checkpoints of named tensors, through
//! soup-core: one reader (a validated header, then the memory-mapped file)
//! and one atomic writer in the workspace.
//!
//! The names are PyTorch `state_dict` names, the same files `soup` reads and
//! writes. Writes are atomic: a temporary file beside the target, fsync,
//! rename, so a reader never sees a half-written checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use soup_core::{Dtype, TensorBytes};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        _ => return None,
    })
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

/// Writes `tensors` to `path` as safetensors, with `metadata` in the header
/// ([`soup_core::write_tensors`]). Tensors may live on any device; they are
/// copied to the CPU.
///
/// The output depends only on the names, values and metadata: tensors are
/// laid out in name order and the header's keys are sorted, so equal models
/// give byte-identical files (and equal hashes).
pub fn save(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let mut held = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let dtype = dtype_of(t.kind()).ok_or_else(|| {
            Error::checkpoint(
                path,
                format!("tensor {name} has unsupported kind {:?}", t.kind()),
            )
        })?;
        let t = t.detach().to_device(Device::Cpu).contiguous();
        let numel = t.numel();
        let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, numel)?;
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        held.push((name, dtype, shape, data));
    }
    let views: Vec<TensorBytes<'_>> = held
        .iter()
        .map(|(name, dtype, shape, data)| TensorBytes {
            name,
            dtype: *dtype,
            shape,
            data,
        })
        .collect();
    let meta: BTreeMap<String, String> = metadata.into_iter().collect();
    Ok(soup_core::write_tensors(path, &views, &meta)?)
}

/// Writes `bytes` to `path` atomically ([`soup_core::write_file_atomic`]):
/// a temporary file beside it under soup's temporary naming, so that either
/// tool sweeps what the other left when it was killed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(soup_core::write_file_atomic(path, bytes)?)
}

/// A checkpoint read into memory: CPU tensors by name, and the header's
/// metadata.
#[derive(Debug)]
pub struct LoadedCheckpoint {
    /// Tensors in file order.
    pub tensors: Vec<(String, Tensor)>,
    /// The `__metadata__` map (empty when the file has none).
    pub metadata: HashMap<String, String>,
}

/// Reads every tensor of a checkpoint (a safetensors file or a sharded
/// folder) onto the CPU, through soup-core's validated reader: a bad file
/// is soup-core's error, naming the file and the problem.
pub fn load(path: &Path) -> Result<LoadedCheckpoint> {
    let ck = soup_core::Checkpoint::open(path)?;
    let mut tensors = Vec::with_capacity(ck.tensors().len());
    for entry in ck.tensors() {
        let kind = kind_of(entry.dtype).ok_or_else(|| {
            Error::checkpoint(
                path,
                format!(
                    "tensor {} has unsupported dtype {:?}",
                    entry.name, entry.dtype
                ),
            )
        })?;
        let shape: Vec<i64> = entry.shape.iter().map(|&d| d as i64).collect();
        // Copies out of the map: the tensor outlives the checkpoint.
        tensors.push((
            entry.name.clone(),
            Tensor::f_from_data_size(ck.data(entry), &shape, kind)?,
        ));
    }
    Ok(LoadedCheckpoint {
        tensors,
        metadata: ck.metadata().clone().into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn round_trip_keeps_names_kinds_shapes_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let tensors = vec![
            (
                "a.weight".to_string(),
                Tensor::from_slice(&[1.5f32, -0.0, 3.0, 4.0]).view([2, 2]),
            ),
            (
                "a.num_batches_tracked".to_string(),
                Tensor::from(7i64).view([]),
            ),
        ];
        let meta = HashMap::from([("arch".to_string(), "cnn".to_string())]);
        save(&path, &tensors, meta.clone()).unwrap();
        let again = dir.path().join("y.safetensors");
        let reversed: Vec<_> = tensors
            .iter()
            .rev()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect();
        save(&again, &reversed, meta.clone()).unwrap();
        assert_eq!(
            fs::read(&path).unwrap(),
            fs::read(&again).unwrap(),
            "output depends on input order"
        );
        fs::remove_file(&again).unwrap();
        let ck = load(&path).unwrap();
        assert_eq!(ck.metadata, meta);
        let got: HashMap<_, _> = ck.tensors.into_iter().collect();
        assert_eq!(got["a.weight"].size(), [2, 2]);
        assert!(got["a.weight"].equal(&tensors[0].1));
        assert_eq!(got["a.num_batches_tracked"].kind(), Kind::Int64);
        assert_eq!(got["a.num_batches_tracked"].size(), Vec::<i64>::new());
        assert_eq!(got["a.num_batches_tracked"].int64_value(&[]), 7);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn atomic_write_sweeps_temps_of_dead_writers_and_leaves_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        // This process's own prefix, `<kind>v2_<host>_<boot>_<ns>_<pid>_<start>_`,
        // and the same with a PID no process has (pid_max is at most 2^22).
        let own = soup_core::own_temp_prefix(soup_core::TEMP_PREFIX);
        let mut fields: Vec<&str> = own.split('_').collect();
        let n = fields.len();
        fields[n - 3] = "2147483632";
        let dead = dir
            .path()
            .join(format!("{}x.safetensors", fields.join("_")));
        let live = dir.path().join(format!("{own}y.safetensors"));
        fs::write(&dead, b"left by a killed run").unwrap();
        fs::write(&live, b"being written").unwrap();
        write_atomic(&dir.path().join("x.safetensors"), b"new").unwrap();
        assert!(!dead.exists(), "a dead writer's temporary file survived");
        assert!(live.exists(), "a live writer's temporary file was removed");
        assert_eq!(fs::read(dir.path().join("x.safetensors")).unwrap(), b"new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn garbage_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        fs::write(&path, b"not a checkpoint").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("bad.safetensors"), "{err}");
    }
}
