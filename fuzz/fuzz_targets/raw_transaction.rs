//! Raw transactions as `eth_sendRawTransaction` receives them.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| keel_testkit::fuzz::raw_transaction(data));
