//! JSON-RPC request bodies, through the real `eth_*` module of a dev node.
#![no_main]
static RPC: std::sync::OnceLock<keel_testkit::fuzz::JsonRpc> = std::sync::OnceLock::new();
libfuzzer_sys::fuzz_target!(|data: &[u8]| RPC.get_or_init(Default::default).call(data));
