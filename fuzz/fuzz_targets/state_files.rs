//! Fuzz target `state_files`: see `mcp_reaper::fuzzing::state_files`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_reaper::fuzzing::state_files(data));
