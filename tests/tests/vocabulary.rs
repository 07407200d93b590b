//! The `soup` binary names every choice with soup-core's own names: each
//! list of valid values in `--help` and in a usage error is generated from
//! the core's enum, so these tests iterate the enums instead of listing
//! names, and a new variant needs no change in the front end.

use soup_core::{DigestKind, IntPolicy, MaskPolicy, Scope, SemiStructuredKernel, Vocabulary};
use soup_tests::{fixture, soup};

/// `soup ARGS... --help` mentions every name of `T`, and `soup ARGS...
/// FLAG bogus` fails with exit 2, naming every valid one.
fn lists_every_name<T: Vocabulary>(args: &[&str], flag: &str, more: &[&str]) {
    let mut help = args.to_vec();
    help.push("--help");
    let run = soup(&help);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut bad = args.to_vec();
    bad.extend_from_slice(more);
    bad.extend([flag, "bogus"]);
    let error = soup(&bad);
    assert_eq!(error.code, 2, "{}", error.stderr);
    assert!(error.stderr.contains("'bogus'"), "{}", error.stderr);
    for &v in T::ALL {
        assert!(
            run.stdout.contains(v.name()),
            "{args:?} --help lacks the {} `{}`:\n{}",
            T::WHAT,
            v.name(),
            run.stdout
        );
        assert!(
            error.stderr.contains(v.name()),
            "the error for {flag} lacks `{}`:\n{}",
            v.name(),
            error.stderr
        );
    }
}

#[test]
fn merge_lists_every_mask_and_integer_policy() {
    let m = fixture("parent.safetensors");
    let m = m.to_str().unwrap();
    let more = [m, m, "-o", "/nonexistent/out.safetensors"];
    lists_every_name::<MaskPolicy>(&["merge"], "--mask-policy", &more);
    lists_every_name::<IntPolicy>(&["merge"], "--int-policy", &more);
}

#[test]
fn prune_hash_and_check_mask_list_every_scope_digest_and_kernel() {
    let m = fixture("parent.safetensors");
    let m = m.to_str().unwrap();
    lists_every_name::<Scope>(&["prune"], "--scope", &[m, "--sparsity", "0.5"]);
    lists_every_name::<DigestKind>(&["hash"], "--digest", &[m]);
    lists_every_name::<SemiStructuredKernel>(&["check-mask"], "--kernel", &[m, "--nm", "2:4"]);
}

#[test]
fn a_bad_criterion_lists_every_form() {
    let m = fixture("parent.safetensors");
    let run = soup([
        "prune",
        m.to_str().unwrap(),
        "--sparsity",
        "0.5",
        "--dry-run",
        "--criterion",
        "bogus",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    for form in soup_core::Criterion::FORMS {
        assert!(run.stderr.contains(form), "{}", run.stderr);
    }
}
