//! Fuzz target `kernel_record`: see `mcp_reaper::fuzzing::kernel_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_reaper::fuzzing::kernel_record(data));
