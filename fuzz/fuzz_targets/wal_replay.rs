//! Arbitrary bytes as a WAL segment: the scan replay relies on never panics, always ends,
//! tiles the input with good frames and damaged ranges, and a repaired segment scans clean
//! (`weft_storage::wal::check_replay_invariants`, also run by a proptest in CI).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weft_storage::wal::check_replay_invariants(data);
});
