//! Fuzz target `sock_diag`: see `mcp_reaper::fuzzing::sock_diag`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_reaper::fuzzing::sock_diag(data));
