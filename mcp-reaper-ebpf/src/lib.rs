#![no_std]
// A stub library so the userspace build script can name this crate as a
// dependency; the programs are in the `mcp-reaper` bin target.
