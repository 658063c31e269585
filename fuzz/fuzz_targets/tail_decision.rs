//! Tail-sampling decision records read back from the WAL
//! (`weft_sampling::tail::decode_decision`, then the kept spans through
//! `spans::from_otlp`, as WAL replay in `Collector::open_with` does): never panics, whatever
//! the disk holds.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let payload = Bytes::copy_from_slice(data);
    if let Ok((_decided, kept)) = weft_sampling::tail::decode_decision(&payload) {
        let _ = weft_schemas::spans::from_otlp(&kept);
    }
});
