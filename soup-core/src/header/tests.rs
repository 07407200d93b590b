//! Tests of header parsing and writing: each attack, duplicate keys, the
//! safetensors crate's refusals, and round trips.

use super::*;

fn file(json: &str, data: usize) -> Vec<u8> {
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out.extend(std::iter::repeat_n(0u8, data));
    out
}

/// The tensor named and the problem found in a refused file.
fn err(bytes: &[u8]) -> (Option<String>, P) {
    match parse(Path::new("x.safetensors"), bytes).unwrap_err() {
        Error::Header {
            path,
            tensor,
            problem,
        } => {
            assert_eq!(path, Path::new("x.safetensors"));
            (tensor, problem)
        }
        other => panic!("not a header error: {other}"),
    }
}

#[test]
fn valid_header_parses_in_data_order() {
    let f = file(
        r#"{"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"I64","shape":[],"data_offsets":[8,16]},"__metadata__":{"format":"pt"}}"#,
        16,
    );
    let h = parse(Path::new("x"), &f).unwrap();
    assert_eq!(h.tensors.len(), 2);
    assert_eq!(h.tensors[0].name, "b");
    assert_eq!(h.metadata["format"], "pt");
}

#[test]
fn each_attack_gets_its_own_variant() {
    let a = Some("a".to_string());
    assert_eq!(err(b"\x01\x00"), (None, P::TooShort { len: 2 }));
    assert_eq!(err(&file("{}", 0)[..5]), (None, P::TooShort { len: 5 }));
    let mut huge = 200_000_000u64.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    let limit = MAX_HEADER_LEN;
    assert_eq!(
        err(&huge),
        (
            None,
            P::TooLarge {
                len: 200_000_000,
                limit
            }
        )
    );
    let mut past = 50u64.to_le_bytes().to_vec();
    past.extend_from_slice(b"{}");
    assert_eq!(
        err(&past),
        (
            None,
            P::PastEnd {
                len: 50,
                file_len: 10
            }
        )
    );
    assert!(matches!(err(&file("{not json", 0)), (None, P::NotJson(_))));
    let mut latin1 = file("{}", 0);
    latin1[8] = 0xff;
    assert!(matches!(err(&latin1), (None, P::NotUtf8(_))));
    assert_eq!(
        err(&file(
            r#"{"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}}"#,
            1
        )),
        (a.clone(), P::UnknownDtype("Q7".into()))
    );
    assert!(matches!(
        err(&file(r#"{"a":[0,4]}"#, 0)),
        (Some(_), P::Entry(_))
    ));
    assert_eq!(
        err(&file(
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            8
        )),
        (
            a.clone(),
            P::WrongLength {
                shape: vec![3],
                dtype: "F32".into(),
                need: 12,
                start: 0,
                end: 8
            }
        )
    );
    assert_eq!(
        err(&file(
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#,
            4
        )),
        (a.clone(), P::OffsetsReversed { start: 4, end: 0 })
    );
    let huge_shape =
        r#"{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}"#;
    assert!(matches!(
        err(&file(huge_shape, 16)),
        (Some(_), P::ShapeOverflow { .. })
    ));
    let nibbles = r#"{"a":{"dtype":"F4","shape":[1],"data_offsets":[0,1]}}"#;
    assert!(matches!(
        err(&file(nibbles, 1)),
        (Some(_), P::PartialBytes { .. })
    ));
    let overlap = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    assert_eq!(
        err(&file(overlap, 12)),
        (
            Some("b".into()),
            P::Overlap {
                start: 4,
                end: 12,
                other: "a".into()
            }
        )
    );
    let hole = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
    assert_eq!(
        err(&file(hole, 12)),
        (
            Some("b".into()),
            P::Hole {
                start: 8,
                previous_end: 4
            }
        )
    );
    let past_end = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    assert_eq!(
        err(&file(past_end, 8)),
        (
            a.clone(),
            P::DataPastEnd {
                start: 0,
                end: 16,
                data_len: 8
            }
        )
    );
    assert_eq!(
        err(&file(
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            9
        )),
        (None, P::TrailingBytes(5))
    );
    assert!(matches!(
        err(&file(r#"{"__metadata__":{"a":1}}"#, 0)),
        (None, P::Metadata(_))
    ));
    // The texts stay what users read.
    let e = parse(Path::new("x.safetensors"), &file(hole, 12)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "x.safetensors: tensor `b`: data starts at 8 but the previous tensor ends at 4: a hole of 4 bytes"
    );
}

#[test]
fn duplicate_keys_and_unknown_fields_are_refused() {
    let twice = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    assert_eq!(
        err(&file(twice, 4)),
        (None, P::NotJson("duplicate key `a`".into()))
    );
    let meta = r#"{"__metadata__":{"k":"1","k":"2"}}"#;
    assert!(
        matches!(err(&file(meta, 0)), (None, P::NotJson(m)) if m.contains("duplicate key `k`"))
    );
    let extra = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"scale":"2"}}"#;
    assert_eq!(
        err(&file(extra, 4)),
        (Some("a".into()), P::UnknownField("scale".into()))
    );
}

/// Our parser replaces the safetensors crate's `read_metadata` pass, so
/// it must refuse every header the crate refuses. Mutates valid files
/// byte by byte (a fixed xorshift, so failures reproduce) and checks
/// the implication on each.
#[test]
fn every_header_the_crate_refuses_is_refused_here() {
    let seeds = [
        file(
            r#"{"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"I64","shape":[],"data_offsets":[8,16]},"__metadata__":{"format":"pt"}}"#,
            16,
        ),
        file(
            r#"{"x":{"dtype":"BF16","shape":[2,1],"data_offsets":[0,4]},"y":{"dtype":"U8","shape":[0],"data_offsets":[4,4]},"z":{"dtype":"BOOL","shape":[3],"data_offsets":[4,7]}}"#,
            7,
        ),
        file(r#"{"__metadata__":{"k":"v"}}"#, 0),
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut refused_by_crate, mut checked) = (0, 0);
    for seed in &seeds {
        for _ in 0..20_000 {
            let mut bytes = seed.clone();
            for _ in 0..1 + next() % 3 {
                let i = (next() as usize) % bytes.len();
                let printable = b"0123456789[]{},:\" \x00FUIBe-.";
                bytes[i] = match next() % 3 {
                    0 => printable[(next() as usize) % printable.len()],
                    1 => bytes[i].wrapping_add(1),
                    _ => next() as u8,
                };
            }
            match next() % 8 {
                0 => bytes.truncate((next() as usize) % bytes.len()),
                1 => bytes.resize(bytes.len() + 1 + (next() as usize) % 8, 0),
                _ => {}
            }
            checked += 1;
            if safetensors::SafeTensors::read_metadata(&bytes).is_err() {
                refused_by_crate += 1;
                assert!(
                    parse(Path::new("x"), &bytes).is_err(),
                    "the crate refuses but we accept: {:?}",
                    String::from_utf8_lossy(&bytes)
                );
            }
        }
    }
    // The mutations must exercise refusals, or the test proves nothing.
    assert!(
        refused_by_crate > checked / 2,
        "{refused_by_crate} of {checked}"
    );
}

#[test]
fn serialized_header_round_trips_and_aligns_data() {
    let tensors = vec![RawTensor {
        name: "w".into(),
        dtype: Dtype::F16,
        shape: vec![3],
        start: 0,
        end: 6,
    }];
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let mut bytes = serialize(&tensors, &meta);
    assert_eq!(bytes.len() % 8, 0);
    bytes.extend_from_slice(&[0; 6]);
    let h = parse(Path::new("x"), &bytes).unwrap();
    assert_eq!(h.tensors, tensors);
    assert_eq!(h.metadata, meta);
}

/// The header is written entry by entry; its bytes must stay those of
/// serialising the whole header as one `serde_json` map, with
/// `__metadata__` sorted among the names and escapes as serde_json makes
/// them.
#[test]
fn serialized_header_matches_a_serde_json_map() {
    let names = [
        "b",
        "A.weight",
        "a\"quote",
        "Z",
        "\u{e9}t\u{e9}",
        "_",
        "tab\t",
    ];
    let mut tensors = Vec::new();
    let mut offset = 0;
    for (i, name) in names.iter().enumerate() {
        tensors.push(RawTensor {
            name: name.to_string(),
            dtype: if i % 2 == 0 { Dtype::F32 } else { Dtype::BF16 },
            shape: vec![i + 1, 2],
            start: offset,
            end: offset + (i + 1) * 2 * if i % 2 == 0 { 4 } else { 2 },
        });
        offset = tensors.last().unwrap().end;
    }
    for metadata in [
        BTreeMap::new(),
        BTreeMap::from([
            ("format".to_string(), "pt".to_string()),
            ("k\n".to_string(), "{\"json\": 1}".to_string()),
        ]),
    ] {
        let mut map = serde_json::Map::new();
        if !metadata.is_empty() {
            map.insert(
                "__metadata__".into(),
                serde_json::to_value(&metadata).unwrap(),
            );
        }
        for t in &tensors {
            map.insert(
                t.name.clone(),
                serde_json::json!({
                    "dtype": crate::dtype::name(t.dtype),
                    "shape": t.shape,
                    "data_offsets": [t.start, t.end],
                }),
            );
        }
        let mut json = serde_json::to_vec(&map).unwrap();
        while (8 + json.len()) % 8 != 0 {
            json.push(b' ');
        }
        let mut expected = (json.len() as u64).to_le_bytes().to_vec();
        expected.extend_from_slice(&json);
        assert_eq!(
            String::from_utf8_lossy(&serialize(&tensors, &metadata)),
            String::from_utf8_lossy(&expected)
        );
    }
}
