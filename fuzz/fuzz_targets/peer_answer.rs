//! A peer's answers to append, vote and snapshot requests, as the network decodes them.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| keel_testkit::fuzz::peer_answer(data));
