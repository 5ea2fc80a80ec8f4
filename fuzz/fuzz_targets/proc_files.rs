//! Fuzz target `proc_files`: see `mcp_reaper::fuzzing::proc_files`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_reaper::fuzzing::proc_files(data));
