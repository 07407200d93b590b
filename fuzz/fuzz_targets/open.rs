//! Fuzz target: opening a checkpoint: one file, or an index with shards written to a folder.
//! See `soup_fuzz::harness::open_checkpoint` for what counts as a finding.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    soup_fuzz::harness::open_checkpoint(data);
});
