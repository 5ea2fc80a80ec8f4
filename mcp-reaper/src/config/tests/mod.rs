//! Configuration tests that go through the whole parse, one file per part
//! of the configuration they exercise (unit tests of a single file's
//! helpers stay in that file).
//!
//! Owns: those tests and their helpers (`support`). Must never be imported
//! by the code, or reach past the public entry points except through two
//! seams: `load::parse` with a fake passwd, and `matcher::join_cmdline`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod load;
mod model;
mod presets;
mod protect;
mod raw;
mod sections;
mod support;
