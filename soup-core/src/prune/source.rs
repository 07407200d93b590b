//! The two front ends of pruning: tensors of a checkpoint file, or tensors
//! in memory. Both are a [`Source`] of tensor bytes, so selection and
//! writing run the same code on either; only where the bytes come from and
//! where the pruned bytes go ([`Sink`]) differ.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Mutex;

use safetensors::Dtype;

use crate::checkpoint::Checkpoint;
use crate::dtype::FloatType;
use crate::error::{Error, Result};
use crate::output::Output;
use crate::stream::{drive, no_lag, CheckpointRows, Control, Piece, Rows, Units};

/// Where pruning reads tensors from. Tensors are numbered `0..count()`.
pub(crate) trait Source: Sync {
    /// Number of tensors.
    fn count(&self) -> usize;
    /// Name, dtype and shape of tensor `i`.
    fn describe(&self, i: usize) -> (&str, Dtype, &[usize]);
    /// The bytes of elements `elems` of tensor `i`.
    fn bytes(&self, i: usize, elems: &Range<usize>) -> &[u8];
    /// Streams over the tensors `members` with [`crate::stream::drive`]
    /// (pieces index `members`). With `hash` (which needs every tensor),
    /// returns the source's content hash.
    #[allow(clippy::too_many_arguments)]
    fn stream<P: Sync, R: Send + Sync>(
        &self,
        control: &Control,
        what: &str,
        members: &[usize],
        hash: bool,
        prepare: impl FnMut(&[Piece]) -> Result<P>,
        work: impl Fn(&Piece, &P, usize) -> Result<R> + Sync,
        collect: impl FnMut(&[Piece], &[R]) -> Result<()>,
    ) -> Result<Option<String>>;
    /// The float type of tensor `i`, if it has one.
    fn float_type(&self, i: usize) -> Option<FloatType> {
        FloatType::of(self.describe(i).1)
    }
    /// Elements of tensor `i`.
    fn numel(&self, i: usize) -> usize {
        self.describe(i).2.iter().product()
    }
}

impl Source for Checkpoint {
    fn count(&self) -> usize {
        self.tensors().len()
    }
    fn describe(&self, i: usize) -> (&str, Dtype, &[usize]) {
        let t = &self.tensors()[i];
        (&t.name, t.dtype, &t.shape)
    }
    fn bytes(&self, i: usize, elems: &Range<usize>) -> &[u8] {
        let t = &self.tensors()[i];
        Checkpoint::bytes(self, t, t.byte_range(elems))
    }
    fn stream<P: Sync, R: Send + Sync>(
        &self,
        control: &Control,
        what: &str,
        members: &[usize],
        hash: bool,
        prepare: impl FnMut(&[Piece]) -> Result<P>,
        work: impl Fn(&Piece, &P, usize) -> Result<R> + Sync,
        collect: impl FnMut(&[Piece], &[R]) -> Result<()>,
    ) -> Result<Option<String>> {
        let tensors = self.tensors();
        let entries = members.iter().map(|&i| vec![&tensors[i]]).collect();
        let rows = CheckpointRows::new(vec![self], entries, hash.then_some(control.digest));
        drive(
            &rows,
            control,
            what,
            Units::Pieces,
            prepare,
            work,
            no_lag(),
            collect,
        )?;
        Ok(rows.digests().map(|mut d| d.remove(0)))
    }
}

/// A float tensor held in memory, as the in-memory front end takes it:
/// a name and shape (which the prunable rule looks at) and little-endian
/// element bytes.
#[derive(Debug, Clone)]
pub struct TensorView<'a> {
    name: Cow<'a, str>,
    shape: Vec<usize>,
    dtype: FloatType,
    data: Cow<'a, [u8]>,
}

impl<'a> TensorView<'a> {
    /// A view of `data`, the little-endian bytes of a `dtype` tensor of
    /// `shape`; an error when the length does not fit the shape.
    pub fn from_bytes(
        name: impl Into<Cow<'a, str>>,
        shape: &[usize],
        dtype: FloatType,
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<TensorView<'a>> {
        let name = name.into();
        let data = data.into();
        let expected = shape
            .iter()
            .try_fold(dtype.size(), |a, &d| a.checked_mul(d));
        if expected != Some(data.len()) {
            return Err(Error::invalid(format!(
                "tensor `{name}`: {} bytes do not hold a {} tensor of shape {shape:?}",
                data.len(),
                crate::dtype::name(dtype.dtype()),
            )));
        }
        Ok(TensorView {
            name,
            shape: shape.to_vec(),
            dtype,
            data,
        })
    }

    /// A view of F32 values (borrowed on little-endian machines).
    pub fn f32(name: impl Into<Cow<'a, str>>, shape: &[usize], values: &'a [f32]) -> Result<Self> {
        let data: Cow<'a, [u8]> = if cfg!(target_endian = "little") {
            Cow::Borrowed(bytemuck::cast_slice(values))
        } else {
            Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect())
        };
        Self::from_bytes(name, shape, FloatType::F32, data)
    }

    /// A view of F64 values (borrowed on little-endian machines).
    pub fn f64(name: impl Into<Cow<'a, str>>, shape: &[usize], values: &'a [f64]) -> Result<Self> {
        let data: Cow<'a, [u8]> = if cfg!(target_endian = "little") {
            Cow::Borrowed(bytemuck::cast_slice(values))
        } else {
            Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect())
        };
        Self::from_bytes(name, shape, FloatType::F64, data)
    }

    /// The tensor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The element type.
    pub fn float_type(&self) -> FloatType {
        self.dtype
    }
}

/// Tensors in memory as a [`Source`].
pub(crate) struct Memory<'v, 'a>(pub(crate) &'v [TensorView<'a>]);

impl Source for Memory<'_, '_> {
    fn count(&self) -> usize {
        self.0.len()
    }
    fn describe(&self, i: usize) -> (&str, Dtype, &[usize]) {
        let t = &self.0[i];
        (&t.name, t.dtype.dtype(), &t.shape)
    }
    fn bytes(&self, i: usize, elems: &Range<usize>) -> &[u8] {
        let t = &self.0[i];
        let size = t.dtype.size();
        &t.data[elems.start * size..elems.end * size]
    }
    fn stream<P: Sync, R: Send + Sync>(
        &self,
        control: &Control,
        what: &str,
        members: &[usize],
        _hash: bool,
        prepare: impl FnMut(&[Piece]) -> Result<P>,
        work: impl Fn(&Piece, &P, usize) -> Result<R> + Sync,
        collect: impl FnMut(&[Piece], &[R]) -> Result<()>,
    ) -> Result<Option<String>> {
        let rows = MemoryRows {
            views: self.0,
            members,
        };
        drive(
            &rows,
            control,
            what,
            Units::Pieces,
            prepare,
            work,
            no_lag(),
            collect,
        )?;
        Ok(None)
    }
}

/// Some tensors in memory as rows of a stream.
struct MemoryRows<'v, 'a, 'm> {
    views: &'v [TensorView<'a>],
    members: &'m [usize],
}

impl Rows for MemoryRows<'_, '_, '_> {
    fn rows(&self) -> usize {
        self.members.len()
    }
    fn numel(&self, row: usize) -> usize {
        let t = &self.views[self.members[row]];
        t.data.len() / t.dtype.size()
    }
    fn elem_bytes(&self, row: usize) -> usize {
        self.views[self.members[row]].dtype.size()
    }
}

/// Where pruned bytes go.
pub(crate) trait Sink: Sync {
    /// Writes `bytes` at byte `offset` of tensor `tensor`.
    fn write(&self, tensor: usize, offset: usize, bytes: &[u8]) -> Result<()>;
}

impl Sink for Output {
    fn write(&self, tensor: usize, offset: usize, bytes: &[u8]) -> Result<()> {
        Output::write(self, tensor, offset, bytes)
    }
}

/// Pruned copies of the prunable tensors in memory (others are skipped).
pub(crate) struct MemorySink {
    pub(crate) tensors: Vec<Option<Mutex<Vec<u8>>>>,
}

impl Sink for MemorySink {
    fn write(&self, tensor: usize, offset: usize, bytes: &[u8]) -> Result<()> {
        if let Some(slot) = &self.tensors[tensor] {
            let mut buf = slot.lock().expect("not poisoned");
            buf[offset..offset + bytes.len()].copy_from_slice(bytes);
        }
        Ok(())
    }
}
