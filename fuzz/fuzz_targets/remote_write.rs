//! Prometheus remote write (snappy + protobuf): decoding, the pre-scan and the conversion
//! never panic, and the scan agrees with prost.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weft_schemas::shape::check_remote_write_input(data);
});
