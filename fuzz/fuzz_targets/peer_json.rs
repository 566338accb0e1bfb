//! /raft/transfer bodies and /raft/health answers.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| keel_testkit::fuzz::peer_json(data));
