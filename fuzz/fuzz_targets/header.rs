//! Fuzz target: the safetensors header parser (a whole file as bytes).
//! See `soup_fuzz::harness::header_parser` for what counts as a finding.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    soup_fuzz::harness::header_parser(data);
});
