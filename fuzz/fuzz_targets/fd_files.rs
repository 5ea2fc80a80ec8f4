//! Fuzz target `fd_files`: see `mcp_reaper::fuzzing::fd_files`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_reaper::fuzzing::fd_files(data));
