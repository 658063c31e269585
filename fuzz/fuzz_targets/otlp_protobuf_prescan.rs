//! The protobuf pre-scan (`weft_schemas::shape`) against prost, for traces, metrics and
//! remote-write bodies: never panics; when prost decodes, the scan succeeds with the same
//! counts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weft_schemas::shape::check_protobuf_prescan(data);
});
