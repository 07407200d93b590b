//! The pruning methods the trainer runs, registered by name.
//!
//! Each method is one module: its name, a line saying what it is, the
//! command that runs it, its own settings (a struct with its flags) and a
//! constructor of its [`PruningMethod`]. The `registry!` line below
//! lists the modules; from it come the table [`REGISTRY`] that
//! `--method` is parsed from (clap and serde both read it), the settings
//! of every method ([`MethodSettings`], top-level keys of a run's
//! configuration) and their flags ([`MethodArgs`]). Adding a method is
//! adding its module and its name to that line.
//!
//! Report rows name runs through [`Method::run_name`], so every method's
//! runs read alike: `gmp`, `gmp+sms`, `gmp-long`.
//!
//! | name      | module        | command        |
//! |-----------|---------------|----------------|
//! | `imp`     | [`imp`]       | `trainer sms`  |
//! | `gmp`     | [`gmp`]       | `trainer pdt`  |
//! | `dpf`     | [`dpf`]       | `trainer pdt`  |
//! | `bimp`    | [`bimp`]      | `trainer pdt`  |
//! | `oneshot` | [`oneshot`]   | `trainer pdt`  |
//!
//! No method imports another, and the pipeline below imports none.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use clap::builder::PossibleValue;
use clap::ValueEnum;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Result;
use crate::pipeline::segments::PruningMethod;

/// Builds the registry from a list of method modules. Each module
/// provides `NAME`, `ABOUT`, `COMMAND`, `Settings` (serde, with
/// `validate`), `KEYS` (the keys of `Settings`), `Args` (clap, with
/// `apply`) and `build`.
macro_rules! registry {
    ($($m:ident),* $(,)?) => {
        $(pub mod $m;)*

        /// Every registered method, in the order reports list them.
        pub static REGISTRY: &[Method] = &[$(Method {
            name: $m::NAME,
            about: $m::ABOUT,
            command: $m::COMMAND,
            build: |s: &MethodSettings| $m::build(&s.$m),
        }),*];

        /// The settings of every registered method, each its module's own
        /// struct (top-level keys of a run's configuration).
        #[derive(Debug, Clone, Default, PartialEq, Serialize)]
        pub struct MethodSettings {
            $(
                #[doc = concat!("The settings of `", stringify!($m), "`.")]
                #[serde(flatten)]
                pub $m: $m::Settings,
            )*
        }

        /// Read as a struct whose fields are every method's keys, so that
        /// a configuration that flattens it (and refuses unknown keys)
        /// sees them claimed; each method's settings are then read from
        /// those keys.
        impl<'de> Deserialize<'de> for MethodSettings {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                static KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
                let keys = KEYS.get_or_init(|| [$($m::KEYS),*].concat());
                let table = d.deserialize_struct("MethodSettings", keys, TableVisitor)?;
                Ok(MethodSettings {
                    $($m: <$m::Settings as Deserialize>::deserialize(
                        toml::Value::Table(table.clone()),
                    )
                    .map_err(serde::de::Error::custom)?,)*
                })
            }
        }

        /// Every method's keys, in registry order.
        pub fn setting_keys() -> Vec<&'static str> {
            [$($m::KEYS),*].concat()
        }

        impl MethodSettings {
            /// Checks every method's settings.
            pub fn validate(&self) -> Result<()> {
                $(self.$m.validate()?;)*
                Ok(())
            }
        }

        /// The flags of every registered method's settings.
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct MethodArgs {
            $(
                #[doc = concat!("The flags of `", stringify!($m), "`.")]
                #[command(flatten)]
                pub $m: $m::Args,
            )*
        }

        impl MethodArgs {
            /// Writes the flags given over `settings`.
            pub fn apply(&self, settings: &mut MethodSettings) {
                $(self.$m.apply(&mut settings.$m);)*
            }
        }
    };
}

registry![imp, gmp, dpf, bimp, oneshot];

/// Collects the keys and values of a map.
struct TableVisitor;

impl<'de> Visitor<'de> for TableVisitor {
    type Value = toml::Table;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the settings of the methods")
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<toml::Table, A::Error> {
        let mut table = toml::Table::new();
        while let Some((k, v)) = map.next_entry::<String, toml::Value>()? {
            table.insert(k, v);
        }
        Ok(table)
    }
}

/// A registered pruning method: one row of [`REGISTRY`].
#[derive(Clone, Copy)]
pub struct Method {
    name: &'static str,
    about: &'static str,
    command: &'static str,
    build: fn(&MethodSettings) -> Option<Box<dyn PruningMethod>>,
}

/// How a method's run is made, for naming it in a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// The method alone (one candidate).
    Plain,
    /// The method with sparse model soups.
    Sms,
    /// The method with m times the epochs (the soups' compute, serially).
    Long,
}

impl Method {
    /// Every registered method, in the order reports list them.
    pub fn all() -> &'static [Method] {
        REGISTRY
    }

    /// The method registered as `name`.
    pub fn named(name: &str) -> Option<Method> {
        REGISTRY.iter().copied().find(|m| m.name == name)
    }

    /// The name in reports, configurations and on the command line.
    pub fn name(self) -> &'static str {
        self.name
    }

    /// A line saying what the method is.
    pub fn about(self) -> &'static str {
        self.about
    }

    /// The `trainer` subcommand that runs it.
    pub fn command(self) -> &'static str {
        self.command
    }

    /// The method with `settings`, for the segments of `trainer pdt`
    /// (`None` for a method whose runs are not segments of training from
    /// scratch, like `imp`).
    pub fn build(self, settings: &MethodSettings) -> Option<Box<dyn PruningMethod>> {
        (self.build)(settings)
    }

    /// Whether the mask changes while the model trains from scratch
    /// (pruning during training), rather than between retraining phases of
    /// a trained model.
    pub fn prunes_during_training(self) -> bool {
        self.build(&MethodSettings::default()).is_some()
    }

    /// The name of a run of this method in a report: `gmp`, `gmp+sms`,
    /// `gmp-long`.
    pub fn run_name(self, variant: Variant) -> String {
        match variant {
            Variant::Plain => self.name().to_string(),
            Variant::Sms => format!("{}+sms", self.name()),
            Variant::Long => format!("{}-long", self.name()),
        }
    }

    /// The names of the registered methods for which `keep` holds, as a
    /// list for messages.
    pub fn names(keep: impl Fn(Method) -> bool) -> String {
        let names: Vec<&str> = REGISTRY
            .iter()
            .copied()
            .filter(|&m| keep(m))
            .map(Method::name)
            .collect();
        names.join(", ")
    }
}

impl PartialEq for Method {
    fn eq(&self, other: &Method) -> bool {
        self.name == other.name
    }
}

impl Eq for Method {}

impl Hash for Method {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Method({})", self.name)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl ValueEnum for Method {
    fn value_variants<'a>() -> &'a [Method] {
        REGISTRY
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name).help(self.about))
    }
}

impl std::str::FromStr for Method {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Method> {
        Method::named(s).ok_or_else(|| {
            crate::Error::Config(format!(
                "unknown method {s:?}: expected {}",
                Method::names(|_| true)
            ))
        })
    }
}

impl Serialize for Method {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name)
    }
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Method, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_everywhere_and_runs_are_named_alike() {
        for &m in Method::all() {
            assert_eq!(m.name().parse::<Method>().unwrap(), m);
            assert_eq!(m.to_string(), m.name());
            let json = serde_json::to_value(m).unwrap();
            assert_eq!(json, serde_json::Value::String(m.name().into()));
            let back: Method = serde_json::from_value(json).unwrap();
            assert_eq!(back, m);
            assert_eq!(<Method as ValueEnum>::from_str(m.name(), false).unwrap(), m);
        }
        let gmp = Method::named("gmp").unwrap();
        assert_eq!(gmp.run_name(Variant::Sms), "gmp+sms");
        assert_eq!(
            Method::named("dpf").unwrap().run_name(Variant::Long),
            "dpf-long"
        );
        assert_eq!(
            Method::named("bimp").unwrap().run_name(Variant::Plain),
            "bimp"
        );
        let imp = Method::named("imp").unwrap();
        assert_eq!(imp.command(), "sms");
        assert!(gmp.prunes_during_training() && !imp.prunes_during_training());
        let err = "lth".parse::<Method>().unwrap_err().to_string();
        assert!(err.contains("imp, gmp, dpf, bimp"), "{err}");
        let err = serde_json::from_str::<Method>("\"lth\"").unwrap_err();
        assert!(err.to_string().contains("unknown method"), "{err}");
    }

    #[test]
    fn every_method_has_its_own_settings_with_flags() {
        let mut settings = MethodSettings::default();
        // Optional settings are written only when set.
        settings.gmp.nm = Some("2:4".parse().unwrap());
        settings.validate().unwrap();
        let toml = toml::to_string(&settings).unwrap();
        let back: MethodSettings = toml::from_str(&toml).unwrap();
        assert_eq!(back, settings);
        // Each module's KEYS are exactly the keys its settings write.
        let table: toml::Table = toml::from_str(&toml).unwrap();
        let mut written: Vec<&str> = table.keys().map(String::as_str).collect();
        let mut keys = setting_keys();
        written.sort_unstable();
        keys.sort_unstable();
        assert_eq!(written, keys);
        let args =
            <MethodArgs as clap::FromArgMatches>::from_arg_matches(
                &<MethodArgs as clap::Args>::augment_args(clap::Command::new("t"))
                    .get_matches_from(["t", "--phases", "5", "--dpf-interval", "4"]),
            )
            .unwrap();
        args.apply(&mut settings);
        assert_eq!((settings.bimp.phases, settings.dpf.interval), (5, 4));
    }
}
