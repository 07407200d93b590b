//! Fuzz target: check-mask plus merge of two mutated files.
//! See `soup_fuzz::harness::mask_and_merge` for what counts as a finding.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    soup_fuzz::harness::mask_and_merge(data);
});
