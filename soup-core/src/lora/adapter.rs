//! Reading a PEFT LoRA adapter folder: `adapter_config.json` and the
//! factors of `adapter_model.safetensors`, matched to the base's tensors.
//!
//! PEFT saves the factors of module `m` (its name in the base model) as
//! `base_model.model.m.lora_A.weight` (`r x in`) and `...lora_B.weight`
//! (`out x r`), an embedding's as `...lora_embedding_A` (`r x vocab`) and
//! `...lora_embedding_B` (`dim x r`); an adapter name (`lora_A.default.weight`)
//! may stand before `weight`, as in a live model's `state_dict`. The
//! adapted weight is `m.weight`. A module's rank and alpha are those of the
//! first `rank_pattern` / `alpha_pattern` key `k` (in file order) for which
//! `m` matches the regex `(.*\.)?(k)$`, as PEFT's `get_pattern_key` does,
//! else `r` and `lora_alpha`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::checkpoint::{Checkpoint, TensorEntry};
use crate::error::{Error, Result};

/// The adapter's weights file inside its folder.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// The adapter's configuration file inside its folder.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
const PREFIX: &str = "base_model.model.";

/// A JSON object read as its entries in file order.
#[derive(Debug, Clone, Default)]
struct Ordered<T>(Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
                Ok(Ordered(Vec::new()))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Ordered(entries))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// `target_modules`: names (a module matches one when it is that name or
/// ends with `.name`), or one regex the whole module name must match.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Targets {
    Names(Vec<String>),
    Regex(String),
}

/// The fields of `adapter_config.json` that folding needs.
#[derive(Debug, Clone, Deserialize)]
struct RawConfig {
    #[serde(default)]
    peft_type: Option<String>,
    r: usize,
    lora_alpha: f64,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    target_modules: Option<Targets>,
    #[serde(default)]
    rank_pattern: Ordered<usize>,
    #[serde(default)]
    alpha_pattern: Ordered<f64>,
}

/// One adapted weight: the base tensor and its two factors.
#[derive(Debug, Clone)]
pub(crate) struct Adapted<'a> {
    /// The base's weight (`module.weight`).
    pub(crate) base: &'a TensorEntry,
    /// `lora_A` (`r x in`) and `lora_B` (`out x r`).
    pub(crate) a: &'a TensorEntry,
    pub(crate) b: &'a TensorEntry,
    /// Whether the base stores the weight as `in x out` (GPT-2's
    /// `Conv1D` with `fan_in_fan_out`, and embeddings).
    pub(crate) transposed: bool,
    pub(crate) rank: usize,
    pub(crate) alpha: f64,
    pub(crate) scale: f64,
}

/// A PEFT LoRA adapter folder, opened and checked.
#[derive(Debug)]
pub struct LoraAdapter {
    folder: PathBuf,
    config_path: PathBuf,
    config: RawConfig,
    weights: Checkpoint,
}

/// Which factor a key holds.
struct Key<'n> {
    module: &'n str,
    b: bool,
    embedding: bool,
    adapter_name: Option<&'n str>,
}

/// Splits a PEFT key into module and factor; `None` for anything else.
fn parse_key(name: &str) -> Option<Key<'_>> {
    let name = name.strip_prefix(PREFIX).unwrap_or(name);
    for (marker, b, embedding) in [
        (".lora_A", false, false),
        (".lora_B", true, false),
        (".lora_embedding_A", false, true),
        (".lora_embedding_B", true, true),
    ] {
        let Some(at) = name.rfind(marker) else {
            continue;
        };
        let (module, rest) = (&name[..at], &name[at + marker.len()..]);
        let parts: Vec<&str> = rest.split('.').skip(1).collect();
        let adapter_name = match (embedding, rest.is_empty(), parts.as_slice()) {
            (false, _, ["weight"]) => None,
            (false, _, [n, "weight"]) => Some(*n),
            (true, true, _) => None,
            (true, false, [n]) => Some(*n),
            _ => return None,
        };
        if module.is_empty() {
            return None;
        }
        return Some(Key {
            module,
            b,
            embedding,
            adapter_name,
        });
    }
    None
}

/// The first pattern (in file order) that `module` matches, as PEFT's
/// `get_pattern_key` matches them.
fn pattern_value<T: Copy>(
    patterns: &[(String, T)],
    module: &str,
    file: &Path,
) -> Result<Option<T>> {
    for (key, value) in patterns {
        let re = Regex::new(&format!(r"^(?:.*\.)?(?:{key})$")).map_err(|e| {
            Error::format(
                file,
                format!("pattern `{key}` is not a regex this tool reads: {e}"),
            )
        })?;
        if re.is_match(module) {
            return Ok(Some(*value));
        }
    }
    Ok(None)
}

impl LoraAdapter {
    /// Opens a PEFT adapter folder (`adapter_config.json` and
    /// `adapter_model.safetensors`).
    pub fn open(folder: impl AsRef<Path>) -> Result<LoraAdapter> {
        let folder = folder.as_ref().to_path_buf();
        if !folder.is_dir() {
            return Err(Error::format(
                &folder,
                format!("not a PEFT adapter folder (with {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})"),
            ));
        }
        let config_path = folder.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| Error::io(&config_path, "cannot read", e))?;
        let config: RawConfig = serde_json::from_str(&text)
            .map_err(|e| Error::format(&config_path, format!("not a LoRA adapter config: {e}")))?;
        let bad = |reason: String| Err(Error::format(&config_path, reason));
        if let Some(t) = config.peft_type.as_deref().filter(|t| *t != "LORA") {
            return bad(format!("peft_type is `{t}`, not LORA"));
        }
        if config.use_dora {
            return bad("DoRA adapters (use_dora) are not folded by this version".into());
        }
        if config.r == 0 || !config.lora_alpha.is_finite() {
            return bad(format!(
                "r = {} and lora_alpha = {} do not give a scale",
                config.r, config.lora_alpha
            ));
        }
        let weights = Checkpoint::open(folder.join(ADAPTER_WEIGHTS))?;
        Ok(LoraAdapter {
            folder,
            config_path,
            config,
            weights,
        })
    }

    /// The folder.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// The factors' file.
    pub fn weights(&self) -> &Checkpoint {
        &self.weights
    }

    /// The default rank `r`, alpha and whether rsLoRA scaling applies, as
    /// recorded in the provenance.
    pub(crate) fn recipe(&self) -> serde_json::Value {
        let c = &self.config;
        serde_json::json!({
            "r": c.r,
            "lora_alpha": c.lora_alpha,
            "use_rslora": c.use_rslora,
            "fan_in_fan_out": c.fan_in_fan_out,
            "rank_pattern": c.rank_pattern.0.iter().cloned().collect::<BTreeMap<_, _>>(),
            "alpha_pattern": c.alpha_pattern.0.iter().cloned().collect::<BTreeMap<_, _>>(),
        })
    }

    fn targets(&self, module: &str) -> Result<bool> {
        Ok(match &self.config.target_modules {
            None => true,
            Some(Targets::Regex(r)) if r == "all-linear" => true,
            Some(Targets::Regex(r)) => Regex::new(&format!("^(?:{r})$"))
                .map_err(|e| Error::format(&self.config_path, format!("target_modules: {e}")))?
                .is_match(module),
            Some(Targets::Names(names)) => names
                .iter()
                .any(|n| module == n || module.ends_with(&format!(".{n}"))),
        })
    }

    /// Matches every factor with its partner and its base tensor, checks
    /// the shapes, and works out each module's rank, alpha and scale.
    pub(crate) fn match_base<'a>(&'a self, base: &'a Checkpoint) -> Result<Vec<Adapted<'a>>> {
        let path = self.weights.path();
        let mut modules: BTreeMap<&str, (Option<&TensorEntry>, Option<&TensorEntry>, bool)> =
            BTreeMap::new();
        let mut names: Option<Option<&str>> = None;
        for t in self.weights.tensors() {
            let key = parse_key(&t.name).ok_or_else(|| {
                Error::tensor(
                    path,
                    &t.name,
                    "not a LoRA factor (lora_A, lora_B, lora_embedding_A or lora_embedding_B); \
                     DoRA vectors, LoRA biases and modules_to_save are not folded",
                )
            })?;
            match names {
                Some(n) if n != key.adapter_name => {
                    return Err(Error::tensor(
                        path,
                        &t.name,
                        format!(
                            "adapter name {:?} differs from {n:?}: fold one adapter at a time",
                            key.adapter_name
                        ),
                    ))
                }
                _ => names = Some(key.adapter_name),
            }
            let slot = modules
                .entry(key.module)
                .or_insert((None, None, key.embedding));
            let side = if key.b { &mut slot.1 } else { &mut slot.0 };
            if side.replace(t).is_some() || slot.2 != key.embedding {
                return Err(Error::tensor(
                    path,
                    &t.name,
                    "a second factor for its module",
                ));
            }
        }
        if modules.is_empty() {
            return Err(Error::format(path, "no LoRA factors"));
        }
        let missing: Vec<String> = modules
            .keys()
            .map(|m| format!("{m}.weight"))
            .filter(|w| base.get(w).is_none())
            .collect();
        if !missing.is_empty() {
            let shown: Vec<&str> = missing.iter().take(5).map(String::as_str).collect();
            let more = missing.len() - shown.len();
            return Err(Error::Mismatch(format!(
                "{}: {} adapted weight(s) not in the base {}: {}{}",
                self.folder.display(),
                missing.len(),
                base.path().display(),
                shown.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            )));
        }
        let mut adapted = Vec::with_capacity(modules.len());
        for (module, (a, b, embedding)) in modules {
            let (Some(a), Some(b)) = (a, b) else {
                let have = a.or(b).expect("one factor");
                return Err(Error::tensor(
                    path,
                    &have.name,
                    "has no partner factor (A with B)",
                ));
            };
            let w = base.get(&format!("{module}.weight")).expect("checked");
            let transposed = embedding || self.config.fan_in_fan_out;
            let shape_error = |reason: String| Err(Error::tensor(path, &a.name, reason));
            if w.float_type().is_none() || a.float_type().is_none() || b.float_type().is_none() {
                return shape_error(format!("factors and `{}` must be float tensors", w.name));
            }
            if a.shape.len() != 2 || b.shape.len() != 2 || w.shape.len() != 2 {
                return shape_error(format!(
                    "factors {:?} and {:?} for `{}` {:?}: only 2-D (Linear, Conv1D, Embedding) \
                     LoRA layers are folded",
                    a.shape, b.shape, w.name, w.shape
                ));
            }
            let (r, fan_in) = (a.shape[0], a.shape[1]);
            let (fan_out, rb) = (b.shape[0], b.shape[1]);
            let want = if transposed {
                [fan_in, fan_out]
            } else {
                [fan_out, fan_in]
            };
            if rb != r || w.shape != want {
                return shape_error(format!(
                    "factors A {:?} and B {:?} do not fit `{}` of shape {:?}{}",
                    a.shape,
                    b.shape,
                    w.name,
                    w.shape,
                    if transposed { " (stored in x out)" } else { "" }
                ));
            }
            if !self.targets(module)? {
                return Err(Error::format(
                    &self.config_path,
                    format!("module `{module}` has factors but is not among target_modules"),
                ));
            }
            let rank = pattern_value(&self.config.rank_pattern.0, module, &self.config_path)?
                .unwrap_or(self.config.r);
            if rank != r {
                return shape_error(format!(
                    "has rank {r}, but the config gives `{module}` rank {rank}"
                ));
            }
            let alpha = pattern_value(&self.config.alpha_pattern.0, module, &self.config_path)?
                .unwrap_or(self.config.lora_alpha);
            let scale = if self.config.use_rslora {
                alpha / (rank as f64).sqrt()
            } else {
                alpha / rank as f64
            };
            adapted.push(Adapted {
                base: w,
                a,
                b,
                transposed,
                rank,
                alpha,
                scale,
            });
        }
        Ok(adapted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_with_and_without_adapter_names() {
        let k = parse_key("base_model.model.model.layers.0.q_proj.lora_A.weight").unwrap();
        assert_eq!(
            (k.module, k.b, k.embedding, k.adapter_name),
            ("model.layers.0.q_proj", false, false, None)
        );
        let k = parse_key("base_model.model.h.0.attn.c_attn.lora_B.default.weight").unwrap();
        assert_eq!(
            (k.module, k.b, k.adapter_name),
            ("h.0.attn.c_attn", true, Some("default"))
        );
        let k = parse_key("base_model.model.embed.lora_embedding_A").unwrap();
        assert!(k.embedding && !k.b && k.adapter_name.is_none());
        let k = parse_key("base_model.model.embed.lora_embedding_B.x").unwrap();
        assert!(k.embedding && k.b && k.adapter_name == Some("x"));
        for bad in [
            "base_model.model.q.lora_A.bias",
            "base_model.model.q.lora_magnitude_vector",
            "base_model.model.classifier.weight",
            "base_model.model.q.lora_A",
            "lora_A.weight",
        ] {
            assert!(parse_key(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn patterns_match_as_peft_does_first_in_file_order() {
        let p = vec![
            ("q_proj".to_string(), 1),
            ("layers.1.*".to_string(), 2),
            ("proj".to_string(), 3),
        ];
        let f = Path::new("c.json");
        assert_eq!(
            pattern_value(&p, "model.layers.0.q_proj", f).unwrap(),
            Some(1)
        );
        assert_eq!(
            pattern_value(&p, "model.layers.1.q_proj", f).unwrap(),
            Some(1)
        );
        assert_eq!(
            pattern_value(&p, "model.layers.1.k_proj", f).unwrap(),
            Some(2)
        );
        // A pattern matches whole dotted components at the start.
        assert_eq!(pattern_value(&p, "model.layers.0.xproj", f).unwrap(), None);
        assert_eq!(pattern_value(&p, "proj", f).unwrap(), Some(3));
        let json: Ordered<usize> = serde_json::from_str(r#"{"z": 1, "a": 2}"#).unwrap();
        assert_eq!(json.0, vec![("z".to_string(), 1), ("a".to_string(), 2)]);
    }
}
