//! Peer requests and Raft log entries in keel's peer codec.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| keel_testkit::fuzz::raft_message(data));
