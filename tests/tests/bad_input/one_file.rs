//! A single broken file, rejected by every command that reads it.

use super::*;

#[test]
fn truncated_file_is_rejected() {
    let scratch = Scratch::new();
    let good = std::fs::read(scratch.good("whole.safetensors")).unwrap();
    let bad = scratch.raw("cut.safetensors", &good[..good.len() - 3]);
    rejected_everywhere(&scratch, &bad, "truncated?");
}

#[test]
fn file_shorter_than_the_length_prefix_is_rejected() {
    let scratch = Scratch::new();
    let bad = scratch.raw("tiny.safetensors", b"\x10\x00\x00");
    rejected_everywhere(&scratch, &bad, "too short to be a safetensors file");
}

#[test]
fn empty_file_is_rejected() {
    let scratch = Scratch::new();
    let bad = scratch.raw("empty.safetensors", b"");
    rejected_everywhere(&scratch, &bad, "0 bytes, too short");
}

#[test]
fn header_length_past_the_end_is_rejected() {
    let scratch = Scratch::new();
    let mut bytes = 4096u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    let bad = scratch.raw("long-header.safetensors", &bytes);
    rejected_everywhere(
        &scratch,
        &bad,
        "header length 4096 runs past the end of the file",
    );
}

#[test]
fn header_over_100_mb_is_rejected_without_reading_it() {
    let scratch = Scratch::new();
    let mut bytes = 100_000_001u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    let bad = scratch.raw("huge-header.safetensors", &bytes);
    rejected_everywhere(&scratch, &bad, "exceeds the 100000000-byte limit");
}

#[test]
fn invalid_json_header_is_rejected() {
    let scratch = Scratch::new();
    let bad = scratch.raw(
        "json.safetensors",
        &file(r#"{"a.weight": {"dtype": "F32",,}}"#, 0),
    );
    rejected_everywhere(&scratch, &bad, "header is not a valid JSON object");
}

#[test]
fn header_that_is_not_utf8_is_rejected() {
    let scratch = Scratch::new();
    let mut bytes = 4u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\xff}\n");
    let bad = scratch.raw("latin.safetensors", &bytes);
    rejected_everywhere(&scratch, &bad, "not valid UTF-8");
}

#[test]
fn overlapping_offsets_are_rejected() {
    let scratch = Scratch::new();
    let json = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let bad = scratch.raw("overlap.safetensors", &file(json, 12));
    rejected_everywhere(
        &scratch,
        &bad,
        "tensor `b`: data [4, 12) overlaps tensor `a`",
    );
}

#[test]
fn offsets_leaving_a_hole_are_rejected() {
    let scratch = Scratch::new();
    let json = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
    let bad = scratch.raw("hole.safetensors", &file(json, 12));
    rejected_everywhere(
        &scratch,
        &bad,
        "tensor `b`: data starts at 8 but the previous tensor ends at 4",
    );
}

#[test]
fn offsets_running_past_the_end_are_rejected() {
    let scratch = Scratch::new();
    let json = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    let bad = scratch.raw("past-end.safetensors", &file(json, 8));
    rejected_everywhere(
        &scratch,
        &bad,
        "tensor `a`: data [0, 16) runs past the end of the data section",
    );
}

#[test]
fn offsets_that_overflow_are_rejected() {
    let scratch = Scratch::new();
    let json = r#"{"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,16]}}"#;
    let bad = scratch.raw("overflow.safetensors", &file(json, 16));
    rejected_everywhere(&scratch, &bad, "tensor `a`");
}

#[test]
fn trailing_bytes_after_the_last_tensor_are_rejected() {
    let scratch = Scratch::new();
    let json = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let bad = scratch.raw("trailing.safetensors", &file(json, 12));
    rejected_everywhere(&scratch, &bad, "8 bytes after the last tensor's data");
}

#[test]
fn unknown_dtype_is_rejected() {
    let scratch = Scratch::new();
    let json = r#"{"a":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}}"#;
    let bad = scratch.raw("dtype.safetensors", &file(json, 4));
    rejected_everywhere(&scratch, &bad, "tensor `a`: unknown dtype `F12`");
}

#[test]
fn shape_disagreeing_with_byte_length_is_rejected() {
    let scratch = Scratch::new();
    let json = r#"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}"#;
    let bad = scratch.raw("shape.safetensors", &file(json, 20));
    rejected_everywhere(
        &scratch,
        &bad,
        "tensor `a`: shape [2, 3] of F32 needs 24 bytes but data_offsets [0, 20] span 20",
    );
}

#[test]
fn metadata_that_is_not_a_string_map_is_rejected() {
    let scratch = Scratch::new();
    let json =
        r#"{"__metadata__":{"epochs":3},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let bad = scratch.raw("meta.safetensors", &file(json, 4));
    rejected_everywhere(&scratch, &bad, "__metadata__ must map strings to strings");
}

#[test]
fn missing_input_file_is_rejected() {
    let scratch = Scratch::new();
    let missing = scratch.path("nowhere.safetensors");
    rejected_everywhere(&scratch, &missing, "cannot open");
}
