//! A Raft snapshot's data (the state image install_snapshot decodes).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| keel_testkit::fuzz::state_image(data));
