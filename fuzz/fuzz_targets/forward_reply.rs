//! The leader's answer to a follower's forwarded batch.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| keel_testkit::fuzz::forward_reply(data));
