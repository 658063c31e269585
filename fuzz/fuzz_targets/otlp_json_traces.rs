//! OTLP/JSON traces: the scanner and the decoder never panic; whatever the decoder accepts
//! the scanner accepts too, counting at least as many spans, events, links and attributes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weft_schemas::shape::check_json(data, true);
});
