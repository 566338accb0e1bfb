//! Force-inbox payloads: one signed L2 transaction each, from anyone on the L1.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| keel_testkit::fuzz::forced_payload(data));
