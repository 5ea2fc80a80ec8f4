//! mcp-reaper's kernel programs.
//!
//! Owns: the tracepoint programs that report process lifecycle events and
//! keep fork lineage of watched processes in the kernel, a watched host's
//! closes, and the optional UNIX-socket release hook. Each program is in
//! its own module and stays thin; shared state (maps, globals, task field
//! reads) lives in `maps`, `task` and `files`.
//!
//! Must never: block, loop unbounded, trust a compiled-in kernel struct
//! offset (they come from userspace via `OFFSETS` and `FILE_OFFSETS`), or
//! send any signal.
#![no_std]
#![no_main]

mod close;
mod close_tp;
mod events;
mod exec;
mod exit;
mod files;
mod fork;
mod maps;
mod release;
mod task;
mod watch;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
