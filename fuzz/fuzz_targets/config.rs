//! Fuzz target `config`: see `mcp_reaper::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_reaper::fuzzing::config(data));
