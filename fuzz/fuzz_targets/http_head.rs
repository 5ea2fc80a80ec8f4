//! Fuzz target `http_head`: see `mcp_reaper::fuzzing::http_head`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_reaper::fuzzing::http_head(data));
