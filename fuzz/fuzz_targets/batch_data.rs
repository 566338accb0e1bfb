//! Batch-inbox transaction data as the L1 carries it (frames, channels, batches).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| keel_testkit::fuzz::batch_data(data));
