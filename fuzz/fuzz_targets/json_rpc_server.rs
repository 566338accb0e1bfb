//! JSON-RPC bodies over HTTP, through keel's whole server: batches reach its batch middleware.
#![no_main]
static SERVER: std::sync::OnceLock<keel_testkit::fuzz::JsonRpcServer> =
    std::sync::OnceLock::new();
libfuzzer_sys::fuzz_target!(|data: &[u8]| SERVER.get_or_init(Default::default).call(data));
