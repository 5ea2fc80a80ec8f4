//! Fuzz target `control_request`: see `mcp_reaper::fuzzing::control_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_reaper::fuzzing::control_request(data));
