//! OTLP/JSON metrics: the scanner, the decoder and the conversion never panic; whatever the
//! decoder accepts the scanner accepts too, counting at least as many data points.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weft_schemas::shape::check_json(data, false);
});
