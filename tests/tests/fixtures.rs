//! The committed fixtures are exactly what `make-fixtures` writes, so they
//! can always be regenerated and never drift from their generator.

use std::path::Path;

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn committed_fixtures_match_their_generator() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::make_all(dir.path()).unwrap();
    let fresh = files(dir.path());
    let committed = files(&soup_tests::fixtures());
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&fresh), names(&committed));
    for ((name, a), (_, b)) in fresh.iter().zip(&committed) {
        assert!(
            a == b,
            "{name} differs from what make-fixtures writes: rerun it"
        );
    }
}
