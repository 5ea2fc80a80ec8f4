//! The command line and the one-shot commands: `scan`, `doctor`.
//!
//! Owns: the command line's definition (`args`, `run_args`), the shell
//! completions and manual pages made from it (`docs`), how `run`'s
//! options and the configuration combine (`run_options`), the check of
//! each value as it is read (`values`), printing that survives a reader
//! that went away (`output`), and answering an operator's question once,
//! from /proc and the kernel.
//! Must never: signal anything.

pub mod args;
pub mod docs;
pub mod doctor;
pub mod output;
pub mod run_args;
pub mod run_options;
pub mod scan;
pub mod scan_source;
pub mod values;
