//! Parsing and validating a safetensors header before any tensor data is
//! touched.
//!
//! The file is `u64 n` (little endian), `n` bytes of JSON, then the data
//! section. We check every step ourselves so that each problem gets a precise
//! message naming the tensor. The checks are a strict superset of those of the
//! safetensors crate's `SafeTensors::read_metadata` (header length cap and
//! bounds, UTF-8, JSON, a string-to-string `__metadata__`, known dtypes,
//! shape overflow, whole bytes, byte length matching the shape, offsets
//! contiguous from 0 without overlap, data ending exactly at the end of the
//! file), and add refusals of duplicate keys and unknown fields. So the crate
//! is not asked a second time: its pass built a second copy of every tensor
//! name and entry, over half the memory of opening a header with a million
//! tensors.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::TensorInfo;
use safetensors::Dtype;

use crate::error::{Error, HeaderProblem as P, Result};

/// Largest header accepted (the safetensors crate's own limit).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// The header key that holds the metadata. No tensor can have this name:
/// a reader would take its entry for the metadata.
pub const METADATA_KEY: &str = "__metadata__";

/// Refuses `name` as the name of a tensor written to `path`: the reserved
/// [`METADATA_KEY`] would make a file that no reader can open.
pub(crate) fn check_output_name(path: &Path, name: &str) -> Result<()> {
    if name == METADATA_KEY {
        return Err(Error::tensor(
            path,
            name,
            "the name is reserved for the header's metadata",
        ));
    }
    Ok(())
}

/// One tensor as declared by a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTensor {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape (empty for scalars).
    pub shape: Vec<usize>,
    /// Byte range inside the data section.
    pub start: usize,
    /// End of the byte range inside the data section.
    pub end: usize,
}

/// A validated header.
#[derive(Debug, Clone)]
pub struct Header {
    /// Bytes before the data section (8 + JSON length).
    pub data_start: usize,
    /// Tensors, in data order.
    pub tensors: Vec<RawTensor>,
    /// The `__metadata__` map.
    pub metadata: BTreeMap<String, String>,
}

/// The fields a tensor entry may have; any other is refused, since a reader
/// that ignores it may see a different file than its writer meant.
const TENSOR_FIELDS: [&str; 3] = ["dtype", "shape", "data_offsets"];

/// A JSON value whose objects, at any depth, have no key twice. serde_json
/// keeps the last of duplicate keys; other readers may keep the first, so
/// two programs could disagree on what the header says.
struct Strict(serde_json::Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(serde_json::Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
            }
            let Strict(value) = map.next_value()?;
            out.insert(key, value);
        }
        Ok(serde_json::Value::Object(out))
    }
}

/// The top-level object of a header, filled entry by entry. The first
/// problem found is kept in `failure` (serde only carries text).
struct Entries<'p> {
    path: &'p Path,
    metadata: Option<BTreeMap<String, String>>,
    tensors: Vec<RawTensor>,
    failure: Option<Error>,
}

impl<'de> serde::de::Visitor<'de> for &mut Entries<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<(), A::Error> {
        let stop = |entries: &mut Entries, e: Error| {
            entries.failure = Some(e);
            serde::de::Error::custom("invalid entry")
        };
        while let Some(name) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if name == METADATA_KEY {
                if self.metadata.is_some() {
                    return Err(serde::de::Error::custom("duplicate key `__metadata__`"));
                }
                match serde_json::from_value(value) {
                    Ok(m) => self.metadata = Some(m),
                    Err(e) => {
                        let e = header_error(self.path, None, P::Metadata(e.to_string()));
                        return Err(stop(self, e));
                    }
                }
                continue;
            }
            match tensor_entry(self.path, name, value) {
                Ok(t) => self.tensors.push(t),
                Err(e) => return Err(stop(self, e)),
            }
        }
        Ok(())
    }
}

/// Validates one tensor entry of the header.
fn tensor_entry(path: &Path, name: String, value: serde_json::Value) -> Result<RawTensor> {
    let tensor_fail = |problem: P| header_error(path, Some(&name), problem);
    if let Some(field) = value
        .as_object()
        .and_then(|o| o.keys().find(|k| !TENSOR_FIELDS.contains(&k.as_str())))
    {
        return Err(tensor_fail(P::UnknownField(field.clone())));
    }
    if let Some(dtype) = value.get("dtype").and_then(|d| d.as_str()) {
        if serde_json::from_value::<Dtype>(dtype.into()).is_err() {
            return Err(tensor_fail(P::UnknownDtype(dtype.to_string())));
        }
    }
    let info: TensorInfo =
        serde_json::from_value(value).map_err(|e| tensor_fail(P::Entry(e.to_string())))?;
    let (start, end) = info.data_offsets;
    let count = element_count(&info.shape).ok_or_else(|| {
        tensor_fail(P::ShapeOverflow {
            shape: info.shape.clone(),
        })
    })?;
    let need = byte_len(info.dtype, count).ok_or_else(|| {
        tensor_fail(P::PartialBytes {
            shape: info.shape.clone(),
            dtype: format!("{:?}", info.dtype),
        })
    })?;
    if end < start {
        return Err(tensor_fail(P::OffsetsReversed { start, end }));
    }
    if end - start != need {
        return Err(tensor_fail(P::WrongLength {
            shape: info.shape.clone(),
            dtype: format!("{:?}", info.dtype),
            need,
            start,
            end,
        }));
    }
    Ok(RawTensor {
        name,
        dtype: info.dtype,
        shape: info.shape,
        start,
        end,
    })
}

fn header_error(path: &Path, tensor: Option<&str>, problem: P) -> Error {
    Error::Header {
        path: path.to_path_buf(),
        tensor: tensor.map(str::to_string),
        problem,
    }
}

/// Number of elements of `shape`, or `None` on overflow.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Bytes taken by `count` elements of `dtype`, or `None` on overflow or when
/// sub-byte elements do not fill whole bytes.
pub fn byte_len(dtype: Dtype, count: usize) -> Option<usize> {
    let bits = count.checked_mul(dtype.bitsize())?;
    (bits % 8 == 0).then_some(bits / 8)
}

/// Validates the header of the safetensors file whose whole contents are
/// `file` (usually a memory map: only the header pages are read).
pub fn parse(path: &Path, file: &[u8]) -> Result<Header> {
    let fail = |problem: P| header_error(path, None, problem);
    let file_len = file.len();
    let Some(len_bytes) = file.get(..8) else {
        return Err(fail(P::TooShort { len: file_len }));
    };
    let n = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
    if n > MAX_HEADER_LEN {
        return Err(fail(P::TooLarge {
            len: n,
            limit: MAX_HEADER_LEN,
        }));
    }
    let n = n as usize;
    let data_start = 8 + n;
    if data_start > file_len {
        return Err(fail(P::PastEnd { len: n, file_len }));
    }
    let json =
        std::str::from_utf8(&file[8..data_start]).map_err(|e| fail(P::NotUtf8(e.to_string())))?;
    // The top-level object is converted entry by entry, so that only one
    // entry's JSON tree exists at a time: bookkeeping stays compact (about
    // 100 bytes per tensor plus its name) however many tensors there are.
    let mut entries = Entries {
        path,
        metadata: None,
        tensors: Vec::new(),
        failure: None,
    };
    let mut de = serde_json::Deserializer::from_str(json.trim_end());
    let parsed =
        serde::Deserializer::deserialize_map(&mut de, &mut entries).and_then(|()| de.end());
    if let Some(e) = entries.failure.take() {
        return Err(e);
    }
    if let Err(e) = parsed {
        return Err(fail(P::NotJson(e.to_string())));
    }
    let metadata = entries.metadata.unwrap_or_default();
    let mut tensors = entries.tensors;
    // Two entries with one name (JSON keeps the last; other readers may
    // keep the first).
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| tensors[a].name.cmp(&tensors[b].name));
    if let Some(w) = order
        .windows(2)
        .find(|w| tensors[w[0]].name == tensors[w[1]].name)
    {
        return Err(fail(P::NotJson(format!(
            "duplicate key `{}`",
            tensors[w[0]].name
        ))));
    }
    drop(order);

    tensors.sort_by_key(|t| (t.start, t.end));
    let data_len = file_len - data_start;
    let mut expected = 0usize;
    let mut previous: Option<&RawTensor> = None;
    for t in &tensors {
        if t.end > data_len {
            return Err(header_error(
                path,
                Some(&t.name),
                P::DataPastEnd {
                    start: t.start,
                    end: t.end,
                    data_len,
                },
            ));
        }
        if t.start < expected {
            let other = previous.map(|p| p.name.clone()).unwrap_or_default();
            return Err(header_error(
                path,
                Some(&t.name),
                P::Overlap {
                    start: t.start,
                    end: t.end,
                    other,
                },
            ));
        }
        if t.start > expected {
            return Err(header_error(
                path,
                Some(&t.name),
                P::Hole {
                    start: t.start,
                    previous_end: expected,
                },
            ));
        }
        expected = t.end;
        previous = Some(t);
    }
    if expected != data_len {
        return Err(fail(P::TrailingBytes(data_len - expected)));
    }

    Ok(Header {
        data_start,
        tensors,
        metadata,
    })
}

/// Serialises a header for `tensors` (in data order, offsets relative to the
/// data section) and `metadata`, padded with spaces so that the data section
/// starts at a multiple of 8 bytes. Returns the full prefix: length + JSON.
///
/// No tensor may be called [`METADATA_KEY`]: soup's writers refuse that
/// name before they get here, and a debug build asserts it.
pub fn serialize(tensors: &[RawTensor], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    debug_assert!(
        tensors.iter().all(|t| t.name != METADATA_KEY),
        "a tensor named {METADATA_KEY}"
    );
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| tensors[a].name.cmp(&tensors[b].name));
    let entry = |k: usize| {
        let t = &tensors[order[k]];
        EntryRef {
            name: &t.name,
            dtype: t.dtype,
            shape: &t.shape,
            start: t.start,
            end: t.end,
        }
    };
    let mut json = Vec::new();
    write_json(&mut json, metadata, tensors.len(), entry).expect("writing to memory");
    while (8 + json.len()) % 8 != 0 {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out
}

/// One tensor entry of a header being written, borrowed from wherever the
/// writer keeps its layout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntryRef<'a> {
    /// Tensor name.
    pub(crate) name: &'a str,
    /// Element type.
    pub(crate) dtype: Dtype,
    /// Shape.
    pub(crate) shape: &'a [usize],
    /// Byte range inside the data section.
    pub(crate) start: usize,
    /// End of the byte range.
    pub(crate) end: usize,
}

/// Writes the JSON of a header (no length prefix, no padding) to `out`:
/// the `count` entries `entry(0..count)`, which must come in name order,
/// and `__metadata__` in its place among them (left out when empty).
///
/// The bytes are those of serialising a `serde_json::Map` of the same
/// entries (keys in byte order, each tensor's fields in key order), but
/// nothing is built per tensor: a header with a million tensors costs no
/// memory beyond `out`'s buffer. The JSON's length does not depend on the
/// order of the entries, so a writer that only needs the length can pass
/// them unsorted.
pub(crate) fn write_json<'a, W: std::io::Write>(
    out: W,
    metadata: &BTreeMap<String, String>,
    count: usize,
    entry: impl Fn(usize) -> EntryRef<'a>,
) -> std::io::Result<()> {
    use serde::ser::{SerializeMap, Serializer};

    struct Entry<'a>(EntryRef<'a>);
    impl serde::Serialize for Entry<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(Some(3))?;
            map.serialize_entry("data_offsets", &[self.0.start, self.0.end])?;
            map.serialize_entry("dtype", &crate::dtype::name(self.0.dtype))?;
            map.serialize_entry("shape", self.0.shape)?;
            map.end()
        }
    }

    struct Json<'m, F> {
        metadata: &'m BTreeMap<String, String>,
        count: usize,
        entry: F,
    }
    impl<'a, F: Fn(usize) -> EntryRef<'a>> serde::Serialize for Json<'_, F> {
        fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            // A tensor of that name would replace the metadata in a map.
            let mut pending = !self.metadata.is_empty()
                && !(0..self.count).any(|k| (self.entry)(k).name == METADATA_KEY);
            let mut map = s.serialize_map(Some(self.count + usize::from(pending)))?;
            for k in 0..self.count {
                let e = (self.entry)(k);
                if pending && METADATA_KEY < e.name {
                    map.serialize_entry(METADATA_KEY, self.metadata)?;
                    pending = false;
                }
                map.serialize_entry(e.name, &Entry(e))?;
            }
            if pending {
                map.serialize_entry(METADATA_KEY, self.metadata)?;
            }
            map.end()
        }
    }

    let json = Json {
        metadata,
        count,
        entry,
    };
    serde_json::to_writer(out, &json).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests;
