//! The names of the core's user-facing choices (mask policy, integer
//! policy, digest, scope, ...), defined once.
//!
//! Each such enum is declared with the `vocabulary!` macro, which writes
//! the enum with one name per variant and derives from that one list
//! everything a front end needs: the serde names, [`std::str::FromStr`]
//! and [`std::fmt::Display`], the [`Vocabulary`] trait (every variant and
//! its help line), and with the `clap` feature `clap::ValueEnum`. An
//! unknown name is an [`Error::UnknownName`](crate::Error::UnknownName)
//! that lists the valid names, so a new variant reaches the `soup` binary,
//! the trainer and the Python package without a change in any of them.

use crate::error::{Error, Result};

/// A closed set of named choices (see the module documentation).
pub trait Vocabulary: Sized + Copy + 'static {
    /// What a value is called in messages (`mask policy`).
    const WHAT: &'static str;
    /// Every variant, in declaration order.
    const ALL: &'static [Self];
    /// The variant's name: its serde name, what `FromStr` parses and
    /// `Display` prints.
    fn name(self) -> &'static str;
    /// One line of help: the variant's documentation.
    fn help(self) -> &'static str;
}

/// The valid names of `T`, as an error message lists them: `a, b or c`.
pub fn name_list<T: Vocabulary>() -> String {
    let names: Vec<&str> = T::ALL.iter().map(|v| v.name()).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.concat(),
    }
}

/// Parses a name of `T` (surrounding blanks ignored).
pub fn parse_name<T: Vocabulary>(text: &str) -> Result<T> {
    T::ALL
        .iter()
        .copied()
        .find(|v| v.name() == text.trim())
        .ok_or_else(|| Error::UnknownName {
            what: T::WHAT,
            given: text.to_string(),
            valid: name_list::<T>(),
        })
}

/// Declares a vocabulary enum: its attributes (derives must include
/// `Clone`, `Copy`, `serde::Serialize` and `serde::Deserialize`), what a
/// value is called, the default variant if any, and each variant with its doc
/// lines and its name.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident ($what:literal $(, default $default:ident)?) {
            $(
                $(#[doc = $doc:literal])+
                $variant:ident = $text:literal
            ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $(
                $(#[doc = $doc])+
                #[serde(rename = $text)]
                $variant,
            )+
        }

        $(
            #[allow(clippy::derivable_impls)]
            impl Default for $name {
                fn default() -> Self {
                    $name::$default
                }
            }
        )?

        impl $crate::vocab::Vocabulary for $name {
            const WHAT: &'static str = $what;
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
            fn help(self) -> &'static str {
                match self {
                    $($name::$variant => concat!($($doc, "\n"),+),)+
                }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::error::Error;
            fn from_str(s: &str) -> $crate::error::Result<Self> {
                $crate::vocab::parse_name(s)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str($crate::vocab::Vocabulary::name(*self))
            }
        }

        #[cfg(feature = "clap")]
        impl ::clap::ValueEnum for $name {
            fn value_variants<'a>() -> &'a [Self] {
                <Self as $crate::vocab::Vocabulary>::ALL
            }
            fn to_possible_value(&self) -> Option<::clap::builder::PossibleValue> {
                use $crate::vocab::Vocabulary;
                Some(
                    ::clap::builder::PossibleValue::new(self.name())
                        .help($crate::vocab::help_line(self.help())),
                )
            }
        }
    };
}

/// The doc lines of a variant as one line of help (its first paragraph).
#[cfg(any(test, feature = "clap"))]
pub fn help_line(doc: &str) -> String {
    doc.lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DigestKind, Grouping, IntPolicy, MaskPolicy, Scope, SemiStructuredKernel};

    /// Every name parses back to its variant, is the serde name, and is
    /// listed in the error for an unknown name.
    fn check<T>()
    where
        T: Vocabulary
            + std::str::FromStr<Err = Error>
            + std::fmt::Display
            + std::fmt::Debug
            + PartialEq
            + serde::Serialize
            + serde::de::DeserializeOwned,
    {
        for &v in T::ALL {
            assert_eq!(v.name().parse::<T>().unwrap(), v);
            assert_eq!(v.to_string(), v.name());
            assert_eq!(serde_json::to_value(v).unwrap(), v.name());
            let back: T = serde_json::from_value(v.name().into()).unwrap();
            assert_eq!(back, v);
            assert!(!help_line(v.help()).is_empty());
        }
        let error = "no-such-name".parse::<T>().unwrap_err().to_string();
        assert!(error.contains("`no-such-name`"), "{error}");
        assert!(error.contains(T::WHAT), "{error}");
        for &v in T::ALL {
            assert!(error.contains(v.name()), "{error} lacks {}", v.name());
        }
    }

    #[test]
    fn names_parse_print_and_serialise_alike() {
        check::<MaskPolicy>();
        check::<IntPolicy>();
        check::<DigestKind>();
        check::<Scope>();
        check::<Grouping>();
        check::<SemiStructuredKernel>();
    }

    #[test]
    fn name_lists_read_as_prose() {
        assert_eq!(name_list::<IntPolicy>(), "equal or first");
        assert_eq!(
            name_list::<MaskPolicy>(),
            "refuse, union, intersect, base or none"
        );
        assert_eq!(
            "None".parse::<MaskPolicy>().unwrap_err().to_string(),
            "`None` is not a mask policy (refuse, union, intersect, base or none)"
        );
    }

    #[test]
    fn criteria_print_as_they_parse_and_errors_list_every_form() {
        use crate::Criterion;
        let all = [
            Criterion::Magnitude,
            Criterion::Random { seed: 7 },
            Criterion::Wanda,
        ];
        for (c, form) in all.iter().zip(Criterion::FORMS) {
            assert_eq!(c.to_string().parse::<Criterion>().unwrap(), *c);
            assert_eq!(c.to_string().split(':').next(), form.split(':').next());
        }
        let error = "random:x".parse::<Criterion>().unwrap_err().to_string();
        for form in Criterion::FORMS {
            assert!(error.contains(form), "{error}");
        }
    }

    #[test]
    fn help_is_the_first_paragraph() {
        assert_eq!(help_line(" One\n two\n\n three\n"), "One two");
    }
}
