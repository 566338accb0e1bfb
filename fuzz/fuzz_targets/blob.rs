//! A blob of a blob batch transaction (keel's layout), and the data it carries.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| keel_testkit::fuzz::blob(data));
