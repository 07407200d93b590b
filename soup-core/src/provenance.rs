//! Provenance: what every file soup writes records about how it was made.
//!
//! Safetensors metadata maps strings to strings, so structured values are
//! stored as JSON text under `soup.*` keys:
//! - `soup.operation`: `merge`, `prune`, `edit`...
//! - `soup.recipe`: the parameters, as a JSON object;
//! - `soup.inputs`: `[{"path": ..., "digest": ...}]`, the content digest of
//!   each input (the checkpoint digest of [`crate::hash`], `blake3:<hex>`
//!   or `sha256:<hex>`);
//! - `soup.version`: the tool that wrote it.

use std::collections::BTreeMap;

use crate::checkpoint::Checkpoint;

/// Prefix of the keys soup owns.
pub const PREFIX: &str = "soup.";

/// Metadata that all `inputs` share (same key, same value), minus soup's own
/// keys, which describe one file's history and are rewritten.
pub fn common_metadata(inputs: &[&Checkpoint]) -> BTreeMap<String, String> {
    let Some(first) = inputs.first() else {
        return BTreeMap::new();
    };
    first
        .metadata()
        .iter()
        .filter(|(k, _)| !k.starts_with(PREFIX))
        .filter(|(k, v)| inputs[1..].iter().all(|c| c.metadata().get(*k) == Some(v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Adds the provenance keys to `metadata`. `inputs` pairs each input path
/// with its content digest (a placeholder of the same length,
/// [`crate::hash::DigestKind::placeholder`], is fine while the digests are
/// being computed).
pub fn record(
    metadata: &mut BTreeMap<String, String>,
    operation: &str,
    recipe: serde_json::Value,
    inputs: &[(String, String)],
) {
    metadata.insert(format!("{PREFIX}operation"), operation.to_string());
    metadata.insert(format!("{PREFIX}recipe"), recipe.to_string());
    let inputs: Vec<_> = inputs
        .iter()
        .map(|(path, digest)| serde_json::json!({"path": path, "digest": digest}))
        .collect();
    metadata.insert(
        format!("{PREFIX}inputs"),
        serde_json::Value::Array(inputs).to_string(),
    );
    metadata.insert(
        format!("{PREFIX}version"),
        concat!("soup ", env!("CARGO_PKG_VERSION")).to_string(),
    );
}
